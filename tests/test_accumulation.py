"""Gradient accumulation (--gradient_accumulation_steps K, harness/tools/training.py): K = 1 is
today's training bit for bit; K micro-batches of B rows compute the step of one batch of K x B rows
(loss, every gradient, a 10-step trajectory) within golden/tolerances.json's semantic.accumulation
in float64 and within the backend rule in float32; impl/gpt2.py's own train command accumulates the
same way; the flag's user errors are one line. (mpiexec -n 2: tests/test_mpi.py.)"""
import re
import subprocess
import sys

import numpy as np
import pytest

from nanoproof.cli import load_script
from nanoproof.paths import REPO_ROOT
from nanoproof.spec import tolerances
from nanoproof.tools.checkpoints import TrainingError
from nanoproof.tools.data import prepare
from nanoproof.tools.training import TRAIN_STREAM, accumulation_errors, train

CONFIG = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
HPARAMS = {"learning_rate": 1e-2, "min_lr": 1e-3, "warmup_iters": 3, "lr_decay_iters": 10,
           "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "grad_clip": 1.0}
STEPS, B, K, SEED = 10, 3, 2, 11


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "and", "of", "my", "lord", "thou", "art", "to", "be", "not"]
    root = tmp_path_factory.mktemp("acc")
    (root / "input.txt").write_text("\n".join(" ".join(rng.choice(words, size=8)) for _ in range(150)) + "\n")
    prepare(root / "input.txt", root / "data", mode="char", block_size=CONFIG["block_size"])
    return root / "data"


@pytest.fixture(scope="module")
def tol():
    return tolerances.load()


def bits(a):
    return np.asarray(a.get() if hasattr(a, "get") else a).tobytes()


@pytest.mark.parametrize("n,size", [(65, 1), (65, 3), (1000003, 4), (2 ** 20, 12), (2 ** 40, 5)])
def test_k_draws_are_one_draw_of_k_times_the_rows(n, size):
    """PCG64's integers: K successive draws of `size` are the K*size numbers of one draw, and leave
    the generator in the same state (what makes K micro-batches one batch of K x B rows)."""
    a, b = (np.random.Generator(np.random.PCG64([SEED, TRAIN_STREAM])) for _ in range(2))
    joined = np.concatenate([a.integers(0, n, size=size) for _ in range(3)])
    assert np.array_equal(joined, b.integers(0, n, size=3 * size))
    assert a.bit_generator.state == b.bit_generator.state


@pytest.mark.parametrize("which", ["impl", "ref"])
def test_k1_is_todays_training_bit_for_bit(request, data, which):
    """K = 1 (and no flag) is the loop the module docstring describes, written out here with the
    contract's functions: one get_batch of B rows per step from PCG64([seed, 1]), no scaling."""
    module = request.getfixturevalue(which)
    run = dict(max_iters=STEPS, batch_size=B, eval_interval=5, eval_iters=1, seed=SEED, dtype="float32",
               progress=False)
    flagless = train(module, data, CONFIG, HPARAMS, **run)
    k1 = train(module, data, CONFIG, HPARAMS, gradient_accumulation_steps=1, **run)
    from nanoproof.tools.data import load_meta, load_split
    config = {**CONFIG, "vocab_size": load_meta(data)["vocab_size"]}
    tokens, params, state = load_split(data, "train"), module.init(config, SEED, np, "float32"), {}
    rng = np.random.Generator(np.random.PCG64([SEED, TRAIN_STREAM]))
    losses = []
    for step in range(STEPS):
        x, y = module.get_batch(tokens, B, config["block_size"], rng)
        loss, cache = module.forward(params, x, y, config)
        module.adamw_step(params, module.backward(params, cache, config), state, step,
                          module.lr_at(step, HPARAMS), HPARAMS)
        losses.append(float(loss))
    for result in (flagless, k1):
        assert [r["loss"] for r in result.iters] == losses
        assert all(bits(result.params[k]) == bits(params[k]) for k in params)
        assert all(bits(result.state[k]) == bits(state[k]) for k in state)


@pytest.mark.parametrize("which", ["impl", "ref"])
def test_k_micro_batches_equal_one_batch_float64(request, data, tol, which):
    """float64: K = 2 micro-batches of 3 rows against one batch of 6 rows, the same rows: the loss and
    every gradient of step 0, and each step's loss and every param of a 10-step trajectory through
    train(), within semantic.accumulation (measured: scripts/calibrate.py --only accumulation)."""
    module = request.getfixturevalue(which)
    errors = accumulation_errors(module, data, CONFIG, HPARAMS, batch_size=B, accumulate=K, steps=STEPS,
                                 seed=SEED, dtype="float64")
    limit = tol["semantic.accumulation"]["value"]
    assert set(errors) == {"loss", "grads", "trajectory.loss", "trajectory.params"}
    for what, (err, where) in errors.items():
        assert err <= limit, f"{what}: {where}: rel error {err:.3g} > semantic.accumulation {limit:g}"


def test_k_micro_batches_in_float32_within_the_backend_rule(impl, ref, data, tol):
    """float32: each error of impl with K = 2 against the float64 one-batch oracle (reference/) is at
    most backend.k x the reference's own float32 one-batch error + backend.floor (the backend rule)."""
    kw = dict(batch_size=B, accumulate=K, steps=STEPS, seed=SEED, dtype="float32")
    acc = accumulation_errors(impl, data, CONFIG, HPARAMS, against=(ref, "float64"), **kw)
    own = accumulation_errors(ref, data, CONFIG, HPARAMS, against=(ref, "float64"),
                              **{**kw, "accumulate": 1, "batch_size": B * K})
    k, floor = tol["backend.k"]["value"], tol["backend.floor"]["value"]
    for what, (err, where) in acc.items():
        bound = k * own[what][0] + floor
        assert err <= bound, f"{what}: {where}: {err:.3g} > {k:g} x {own[what][0]:.3g} + {floor:g}"
    assert acc["trajectory.params"][0] > 0    # float32 against float64: the comparison sees rounding


def test_the_comparison_can_fail(impl, data, tol):
    """K = 2 against a batch of other rows (B * K - 1 rows: other draws) is far outside
    semantic.accumulation: the equality above is not a tolerance that passes anything."""
    run = dict(max_iters=3, eval_interval=3, eval_iters=1, seed=SEED, progress=False, dtype="float64")
    acc = train(impl, data, CONFIG, HPARAMS, batch_size=B, gradient_accumulation_steps=K, **run)
    other = train(impl, data, CONFIG, HPARAMS, batch_size=B * K - 1, **run)
    worst = max(float(np.abs(acc.params[k] - other.params[k]).max() / np.abs(other.params[k]).max())
                for k in acc.params)
    assert worst > 1e3 * tol["semantic.accumulation"]["value"]


def test_checkpoint_records_k_and_resume_needs_the_same(impl, data, tmp_path):
    run = dict(batch_size=B, eval_interval=2, eval_iters=1, seed=SEED, progress=False, out_dir=tmp_path)
    train(impl, data, CONFIG, HPARAMS, max_iters=2, gradient_accumulation_steps=K, **run)
    from nanoproof.tools.checkpoints import load_checkpoint
    assert load_checkpoint(tmp_path / "ckpt.npz")[2]["gradient_accumulation_steps"] == K
    with pytest.raises(TrainingError, match="gradient_accumulation_steps: checkpoint 2, requested 1"):
        train(impl, data, CONFIG, HPARAMS, max_iters=4, resume=True, **run)
    whole = train(impl, data, CONFIG, HPARAMS, max_iters=4, gradient_accumulation_steps=K, **{**run, "out_dir": None})
    resumed = train(impl, data, CONFIG, HPARAMS, max_iters=4, resume=True, gradient_accumulation_steps=K, **run)
    assert all(bits(resumed.params[k]) == bits(whole.params[k]) for k in whole.params)


def test_impls_own_train_command_accumulates_the_same_way(impl, data):
    """impl/gpt2.py train --gradient_accumulation_steps 2 prints the val losses of train() with K = 2."""
    result = train(impl, data, CONFIG, HPARAMS, max_iters=STEPS, batch_size=B, eval_interval=5, eval_iters=2,
                   seed=SEED, progress=False, gradient_accumulation_steps=K)
    flags = [x for k, v in {**CONFIG, **HPARAMS, "max_iters": STEPS, "batch_size": B, "eval_interval": 5,
                            "eval_iters": 2, "seed": SEED, "gradient_accumulation_steps": K}.items()
             for x in (f"--{k}", str(v))]
    out = subprocess.run([sys.executable, "impl/gpt2.py", "train", "--dataset", str(data), *flags],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = re.findall(r"^step (\d+): val loss (\S+)$", out.stdout, re.M)
    assert printed == [(str(r["step"]), f"{r['val_loss']:.4f}") for r in result.evals]
    bad = subprocess.run([sys.executable, "impl/gpt2.py", "train", "--dataset", str(data),
                          "--gradient_accumulation_steps", "0"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "need --gradient_accumulation_steps >= 1, got 0" in bad.stderr.splitlines()[-1]


@pytest.mark.parametrize("value,expected", [("0", "argument --gradient_accumulation_steps: must be >= 1, got 0"),
                                            ("x", "argument --gradient_accumulation_steps: not an integer: 'x'")])
def test_cli_flag_user_errors(capsys, data, tmp_path, value, expected):
    with pytest.raises(SystemExit) as e:
        load_script("train").main(["--dataset", str(data), "--out_dir", str(tmp_path),
                                   "--gradient_accumulation_steps", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err.splitlines()[-1] and "Traceback" not in err


def test_library_refuses_k_not_a_multiple_of_the_ranks(impl, data):
    class TwoRanks:
        size, rank, started = 2, 0, False
    with pytest.raises(TrainingError, match="gradient_accumulation_steps 3 is not a multiple of the 2 ranks"):
        train(impl, data, CONFIG, HPARAMS, max_iters=1, batch_size=B, eval_interval=1, eval_iters=1,
              progress=False, gradient_accumulation_steps=3, world=TwoRanks())
    with pytest.raises(TrainingError, match="gradient_accumulation_steps must be an integer >= 1, got 0"):
        train(impl, data, CONFIG, HPARAMS, max_iters=1, batch_size=B, eval_interval=1, eval_iters=1,
              progress=False, gradient_accumulation_steps=0)


def test_harness_accumulation_is_the_references_formula(impl, data, tol):
    """nanoproof.tools.training.accumulate_grads (the loop's) against reference/training.py's
    accumulate_grads (sum_k grads_k / K) on the same K = 3 micro-batches' gradients, and its loss is
    the mean of the micro-batch losses."""
    from nanoproof.reference.training import accumulate_grads as reference_formula
    from nanoproof.tools.data import load_meta, load_split
    from nanoproof.tools.training import accumulate_grads
    config = {**CONFIG, "vocab_size": load_meta(data)["vocab_size"]}
    params, tokens = impl.init(config, SEED, np, "float64"), load_split(data, "train")
    rng = np.random.Generator(np.random.PCG64([SEED, TRAIN_STREAM]))
    batches = [impl.get_batch(tokens, B, config["block_size"], rng) for _ in range(3)]
    loss, grads = accumulate_grads(impl, params, config, batches, 3)
    micro = [impl.forward(params, x, y, config) for x, y in batches]
    expected = reference_formula([impl.backward(params, cache, config) for _, cache in micro])
    assert abs(loss - sum(l for l, _ in micro) / 3) <= tol["semantic.accumulation"]["value"] * abs(loss)
    for k in expected:
        err = np.abs(grads[k] - expected[k]).max() / np.abs(expected[k]).max()
        assert err <= tol["semantic.accumulation"]["value"], k
