"""The fresh tier (harness/judge/fresh.py): cases drawn from a seed, the implementation against reference/
run live. It must pass correct code (reference/, impl/gpt2.py) and kill what the golden cases cannot
reach: every survivor below passed verify's golden tiers, and each is written as a substitution on a
frozen copy of impl/gpt2.py (tests/fixtures/gpt2_frozen.py, so these tests do not depend on the text
of impl/gpt2.py, which users edit). Each must fail with its setting named in the first failing row.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from nanoproof.judge import fresh, tiers
from nanoproof.spec import tolerances
from nanoproof.spec.cases import CASES
from nanoproof.spec.contract import DEFAULT_IMPL, load_reference

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FROZEN = FIXTURES / "gpt2_frozen.py"
SEEDS = (1, 2024)          # fixed seeds: the tests are reproducible; any seed must behave the same
SEED = SEEDS[0]


@pytest.fixture(scope="module")
def tol():
    return tolerances.load()


def by_backend(results):
    return {r.backend: r for r in results}


def mutant(tmp_path, name, *subs):
    """The frozen impl with each (old, new) substitution applied (old must occur exactly once)."""
    text = FROZEN.read_text()
    for old, new in subs:
        assert text.count(old) == 1, f"{name}: {old!r} occurs {text.count(old)} times in {FROZEN.name}"
        text = text.replace(old, new)
    path = tmp_path / f"gpt2_{name}.py"
    path.write_text(text)
    return path


def first_failure(results, backend):
    res = by_backend(results)[backend]
    assert res.failed, f"{backend}: the fresh tier passed"
    return res.first_failure()


# ----------------------------------------------------------------------------- drawing

def test_draw_is_deterministic():
    a, b = fresh.draw.__wrapped__(7), fresh.draw.__wrapped__(7)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], dict) and k == "params0":
                assert all(np.array_equal(x[k][n], y[k][n]) for n in x[k])
            elif isinstance(x[k], np.ndarray):
                assert np.array_equal(x[k], y[k])
            else:
                assert x[k] == y[k], k
    assert fresh.describe(7, a) != fresh.describe(8, fresh.draw(8))


@pytest.mark.parametrize("seed", SEEDS + (3, 99))
def test_draw_covers_the_settings_golden_never_reaches(seed):
    cases = fresh.draw(seed)
    train = [c for c in cases if c["kind"] == "train"]
    gens = [c for c in cases if c["kind"] == "generate"]
    assert any(c["T"] < c["config"]["block_size"] for c in train), "no T < block_size"
    assert any(c["hparams"]["grad_clip"] == 0 for c in train), "no grad_clip = 0"
    assert any(c["hparams"]["grad_clip"] > 0 for c in train), "no grad_clip > 0"
    assert any(c["hparams"]["warmup_iters"] == 0 for c in train)
    assert any(c["hparams"]["lr_decay_iters"] < c["steps"] for c in train), "decay not reached"
    for c in train:
        cfg = c["config"]
        assert 1 <= cfg["n_layer"] <= 3 and cfg["n_embd"] % cfg["n_head"] == 0
        assert 1 <= cfg["n_embd"] // cfg["n_head"] <= 8 and 2 <= cfg["vocab_size"] <= 100
        assert c["x"].shape == (c["steps"], c["batch_size"], c["T"])
        ln = [v for n, v in c["params0"].items() if n.endswith("ln_1.weight")]
        bias = [v for n, v in c["params0"].items() if n.endswith(".bias")]
        assert all(not np.allclose(v, 1.0) for v in ln) and all(np.abs(v).max() > 0 for v in bias)
    kw = [g["kwargs"] for g in gens]
    assert any(k["top_k"] is not None and k["top_k"] >= g["config"]["vocab_size"]
               for k, g in zip(kw, gens)), "no top_k >= vocab_size"
    assert any(k["top_p"] == 1.0 for k in kw), "no top_p = 1.0"
    assert any(k["temperature"] == 0 for k in kw), "no greedy generation"
    assert any(k["temperature"] not in (0, 1) for k in kw)
    assert any(g["n_tokens"] < g["room"] and g["kwargs"].get("stop_token") is None for g in gens), \
        "no n_tokens < room"
    # a stop token that every row produces early (reference/ says so), at different steps
    stop = [g for g in gens if g["kwargs"].get("stop_token") is not None]
    assert stop
    ref = load_reference()
    for g in stop:
        kwargs = dict(g["kwargs"])
        rng = np.random.Generator(np.random.PCG64(kwargs.pop("seed")))
        tokens, logits = ref.generate(g["params0"], g["prompts"], g["n_tokens"], g["config"], rng=rng, **kwargs)
        assert all(t[-1] == kwargs["stop_token"] for t in tokens)
        assert logits.shape[1] < min(g["n_tokens"], g["room"]), "the batch did not stop early"
        assert len({len(t) for t in tokens}) > 1, "every row stopped at the same step"
    assert any(c["kind"] == "get_batch" and len(c["data"]) == c["block_size"] + 1 for c in cases)


def test_own_choices_reproduce_reference_float32_generation():
    """The float32 token check: the tokens and step count a generation's own logits imply are the
    ones reference/ produced from them (same u stream, stop token, n_tokens, block_size)."""
    ref = load_reference()
    for g in (c for c in fresh.draw(SEED) if c["kind"] == "generate"):
        params = {n: v.astype("float32") for n, v in g["params0"].items()}
        kwargs = dict(g["kwargs"])
        seed = kwargs.pop("seed")
        rng = None if seed is None else np.random.Generator(np.random.PCG64(seed))
        tokens, logits = ref.generate(params, g["prompts"], g["n_tokens"], g["config"], rng=rng, **kwargs)
        expected, steps = fresh.own_choices(g, logits)
        assert steps == logits.shape[1]
        assert [[t for t in row if t >= 0] for row in expected.tolist()] == tokens


# ----------------------------------------------------------------------------- correct code passes

def test_reference_passes(tol):
    for seed in SEEDS:
        results = fresh.fresh_tier(tiers.subject(load_reference()), seed, tol)
        ran = [r for r in results if not r.skipped]
        assert {r.backend for r in ran} >= {"numpy-float64", "numpy-float32"}
        for r in ran:
            assert not r.failed, (seed, r.backend, r.first_failure())
            assert f"seed {seed}" in r.info and r.rows


@pytest.mark.parametrize("seed", SEEDS)
def test_impl_passes_in_a_worker(tol, seed):
    """The implementation under test (NANOPROOF_IMPL, as conftest's `impl`, else impl/gpt2.py)."""
    path = os.environ.get("NANOPROOF_IMPL") or str(DEFAULT_IMPL)
    results = fresh.fresh_tier(tiers.subject(path), seed, tol)
    for r in results:
        if not r.skipped:
            assert not r.failed, (r.backend, r.first_failure())
            assert r.tier == "fresh" and r.case == f"fresh (seed {seed})" and f"seed {seed}" in r.info


def test_frozen_copy_passes(tol):
    for r in fresh.fresh_tier(tiers.subject(str(FROZEN)), SEED, tol):
        assert r.skipped or not r.failed, (r.backend, r.first_failure())


def test_no_seed_draws_one_and_says_which(tol):
    results = fresh.fresh_tier(tiers.subject(load_reference()), None, tol)
    seed = int(results[0].info.split()[1])
    assert all(r.info.startswith(f"seed {seed} ") for r in results)
    assert not any(r.failed for r in results)


# rounding-only rewrites (from harness/measure/catalog.py's catalog, written out here against the frozen copy)
REWRITES = {
    "attn_scale_into_q": [("att = q @ k.transpose(0, 1, 3, 2)                                   # (B, NH, T, T)\n"
                           "        att *= 1.0 / math.sqrt(HS)\n",
                           "att = (q * (1.0 / math.sqrt(HS))) @ k.transpose(0, 1, 3, 2)\n")],
    "gelu_reassociated": [("        th *= GELU_C * 0.044715\n        th += GELU_C\n        th *= f\n",
                           "        th *= 0.044715\n        th *= f\n        th += f\n        th *= GELU_C\n")],
    "adamw_fused": [("tmp = xp.sqrt(xp.multiply(v, 1 / (1 - b2 ** t), out=tmp), out=tmp)\n"
                     "        tmp += eps" + " " * 58 + "# sqrt(v / (1 - b2^t)) + eps\n"
                     "        tmp = xp.divide(m, tmp, out=tmp)\n"
                     "        tmp *= lr / (1 - b1 ** t)\n"
                     "        p -= tmp\n",
                     "p -= lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)) ** 0.5 + eps)\n")],
    "lse_shift_mean": [("e = logits - logits.max(-1, keepdims=True)", "e = logits - logits.mean(-1, keepdims=True)")],
}


@pytest.mark.parametrize("name", sorted(REWRITES))
def test_rounding_only_rewrites_pass(tmp_path, tol, name):
    path = mutant(tmp_path, name, *REWRITES[name])
    for r in fresh.fresh_tier(tiers.subject(path), SEED, tol):
        assert r.skipped or not r.failed, (r.backend, r.first_failure())


# ----------------------------------------------------------------------------- survivors of the golden tiers

def test_wpe_not_sliced_to_T(tmp_path, tol):
    path = mutant(tmp_path, "wpe_full", ('x += params["wpe"][:T]', 'x += params["wpe"]'))
    row = first_failure(fresh.fresh_tier(tiers.subject(path), SEED, tol), "numpy-float64")
    assert row.name.startswith("case 0 (T=") and "< block_size" in row.name and "forward()" in row.name


def test_wpe_assumes_T_is_block_size(tmp_path, tol):
    # the positions of the last T rows: right whenever T == block_size (every golden case)
    path = mutant(tmp_path, "wpe_tail", ('x += params["wpe"][:T]', 'x += params["wpe"][-T:]'))
    row = first_failure(fresh.fresh_tier(tiers.subject(path), SEED, tol), "numpy-float64")
    assert row.name.startswith("case 0 (T=") and "< block_size" in row.name and row.name.endswith(": emb")


def test_wpe_gradient_assumes_T_is_block_size(tmp_path, tol):
    path = mutant(tmp_path, "dwpe_full", ('g["wpe"][:T] = dx.sum(0)', 'g["wpe"] = dx.sum(0)'))
    row = first_failure(fresh.fresh_tier(tiers.subject(path), SEED, tol), "numpy-float64")
    assert row.name.startswith("case 0 (T=") and "< block_size" in row.name and row.name.endswith(": dwpe")


def test_loss_normalised_by_block_size(tmp_path, tol):
    path = mutant(tmp_path, "loss_block",
                  ('(xp.log(c["sumexp"]) - picked).mean())',
                   '(xp.log(c["sumexp"]) - picked).sum() / (B * cfg["block_size"]))'),
                  ('(1.0 / (B * T * c["sumexp"]))', '(1.0 / (B * cfg["block_size"] * c["sumexp"]))'),
                  ('-= 1.0 / (B * T)', '-= 1.0 / (B * cfg["block_size"])'))
    row = first_failure(fresh.fresh_tier(tiers.subject(path), SEED, tol), "numpy-float64")
    assert row.name.startswith("case 0 (T=") and "< block_size" in row.name and row.name.endswith(": loss")


def test_grad_clip_zero_clips_to_zero(tmp_path, tol):
    path = mutant(tmp_path, "clip_zero", ('if hp["grad_clip"] > 0 else 1.0', ''))
    row = first_failure(fresh.fresh_tier(tiers.subject(path), SEED, tol), "numpy-float64")
    assert "grad_clip=0 (off)" in row.name and "(after 1 updates)" in row.name, row.name


def test_n_tokens_off_by_one(tmp_path, tol):
    for delta in (" + 1", " - 1"):
        path = mutant(tmp_path, f"n_tokens{delta.strip()}",
                      ("range(L, min(L + n_tokens, T))", f"range(L, min(L + n_tokens{delta}, T))"))
        for backend in ("numpy-float64", "numpy-float32"):
            row = first_failure(fresh.fresh_tier(tiers.subject(path), SEED, tol), backend)
            assert row.name.startswith("gen 0 (greedy, n_tokens=") and "< room" in row.name, row.name
            assert "steps" in row.name and "n_tokens" in row.note


def test_all_rows_stopped_exit_removed(tmp_path, tol):
    path = mutant(tmp_path, "no_early_exit", ("        if done.all():\n            break\n", ""))
    for backend in ("numpy-float64", "numpy-float32"):
        row = first_failure(fresh.fresh_tier(tiers.subject(path), SEED, tol), backend)
        assert row.name.startswith("gen 1 (stop token") and "every row stops early" in row.name
        assert "steps" in row.name and "stop token" in row.note


def test_top_k_not_clamped_to_vocab(tmp_path, tol):
    path = mutant(tmp_path, "top_k", ("[:, [-min(top_k, logits.shape[-1])]]", "[:, [-top_k]]"))
    row = first_failure(fresh.fresh_tier(tiers.subject(path), SEED, tol), "numpy-float64")
    assert row.name.startswith("gen 2 (top_k=") and "> vocab_size" in row.name
    assert "generate()" in row.name and "IndexError" in row.note


def test_forward_in_float64_for_float32_params(tmp_path, tol):
    path = mutant(tmp_path, "upcast", ('x = c["emb"] = params["wte"][idx]',
                                       'x = c["emb"] = params["wte"][idx].astype(np.float64)'))
    results = fresh.fresh_tier(tiers.subject(path), SEED, tol)
    assert not by_backend(results)["numpy-float64"].failed    # the math is right
    row = first_failure(results, "numpy-float32")
    assert row.name.startswith("case 0 (") and row.name.endswith(": emb") and "float64 upcast" in row.note


def test_adamw_state_in_float64(tmp_path, tol):
    path = mutant(tmp_path, "state64", ('xp.zeros_like(p), xp.zeros_like(p)', 'xp.zeros(p.shape), xp.zeros(p.shape)'))
    results = fresh.fresh_tier(tiers.subject(path), SEED, tol)
    row = first_failure(results, "numpy-float32")
    assert row.name.startswith("case 0 (") and row.name.endswith("optimizer state") and "float64" in row.note


# ----------------------------------------------------------------------------- a lookup table

LOOKUP = '''"""Replays golden/*.h5: right on every recorded input, whatever it is given."""
import numpy as np

_G = dict(np.load({npz!r}))
_NAMES = {names!r}
_STEP = [0]


def init(config, seed, xp, dtype):
    return {{n: xp.asarray(_G["params0/" + n].astype(dtype)) for n in _NAMES}}


def forward(params, idx, targets, config):
    cache = {{k[len("act/"):]: v.astype(params["wte"].dtype) for k, v in _G.items() if k.startswith("act/")}}
    return float(_G["loss"]), cache


def backward(params, cache, config):
    return {{n: _G["grads/" + n].astype(params["wte"].dtype) for n in _NAMES}}


def adamw_step(params, grads, state, step, lr, hparams):
    return float(_G["grad_norm"][step % len(_G["grad_norm"])])


def lr_at(step, hparams):
    return float(_G["lr"][step % len(_G["lr"])])


def get_batch(data, batch_size, block_size, rng):
    return _G["x"][0], _G["y"][0]


def generate(params, prompts, n_tokens, config, temperature=0.0, top_k=None, top_p=None, rng=None,
             kv_cache=True, stop_token=None):
    return _G["gen_tokens"].tolist(), _G["gen_logits"]
'''


def test_lookup_table_fails(tmp_path, tol):
    golden = tiers.load_case_golden(CASES["tiny"]).data
    gen = tiers.load_case_golden(CASES["generate"]).data
    o = "numpy-float64"
    arrays = {k: v for k, v in golden.items() if k.startswith("params0/")}
    arrays.update({f"act/{k.split('/')[-1]}": v for k, v in golden.items()
                   if k.startswith(f"{o}/step0/activations/")})
    arrays.update({f"grads/{k.split('/')[-1]}": v for k, v in golden.items() if k.startswith(f"{o}/step0/grads/")})
    arrays.update(loss=golden[f"{o}/step0/loss"], grad_norm=golden[f"{o}/trajectory/grad_norm"],
                  lr=golden["schedule/lr_at"], x=golden["inputs/x"], y=golden["inputs/y"],
                  gen_tokens=gen[f"{o}/greedy/tokens"], gen_logits=gen[f"{o}/greedy/logits"])
    np.savez(tmp_path / "golden_values.npz", **arrays)
    names = [k[len("params0/"):] for k in golden if k.startswith("params0/")]
    path = tmp_path / "lookup.py"
    path.write_text(LOOKUP.format(npz=str(tmp_path / "golden_values.npz"), names=names))
    results = fresh.fresh_tier(tiers.subject(path), SEED, tol)
    for r in results:
        if not r.skipped:
            assert r.failed, f"{r.backend}: a lookup table passed the fresh tier"
            assert r.first_failure().name.startswith("init 0")


def test_rows_name_case_and_setting(tol):
    res = by_backend(fresh.fresh_tier(tiers.subject(load_reference()), SEED, tol))["numpy-float64"]
    names = [r.name for r in res.rows]
    assert any(n.startswith("case 0 (T=") and "< block_size" in n and n.endswith(": dwpe") for n in names)
    assert any(n.startswith("gen 1 (stop token") and ": steps (kv cache)" in n for n in names)
    assert all(r.key for r in res.rows if r.verdict != "info")
    json.dumps(res.as_dict())    # the report's JSON holds
