"""Text generation (the contract's `generate`, impl's `sample` command, scripts/sample.py): greedy decoding equals
transformers' `generate(do_sample=False)` token for token on a transformers-saved random checkpoint,
batched (left-padded) prompts equal each prompt alone, the KV cache equals recomputing the prefix,
impl equals reference/sampling.py, and the sampling rules (temperature, top-k, top-p, seed, stop at
block_size or a stop token) hold as properties."""
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanoproof.judge.compare import normwise

from nanoproof.paths import REPO_ROOT as REPO
TINY = {"vocab_size": 64, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
GPT2_VOCAB = {"vocab_size": 50257, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16}
PROMPTS = [[5, 6, 7, 8, 9], [10, 20], [30, 4, 5, 6]]
# Measured (numpy 2.4 + OpenBLAS, torch 2.13, transformers 5.23; init seeds 0-3 of TINY and GPT2_VOCAB,
# impl and reference, greedy and sampled), normwise: KV cache vs recomputing the prefix <= 4.6e-16 in
# float64 and <= 3.0e-7 in float32; a row of a batch vs the prompt alone <= 4.0e-16; impl vs reference
# <= 4.4e-16; step logits vs transformers' forward (checkpoint seeds 5-7) <= 5.0e-16 in float64 and
# <= 2.9e-7 in float32. Tolerances: float64 1e-12, float32 2e-6 (~7x the worst); impl vs reference the
# semantic tier's 1e-9.
CACHE_TOL = {"float64": 1e-12, "float32": 2e-6}
REF_TOL = 1e-9


@pytest.fixture(scope="module", params=["impl", "ref"])
def gen(request):
    return request.getfixturevalue(request.param)


def tiny_params(module, dtype="float64", seed=3):
    return module.init(TINY, seed, np, dtype)


def rng(seed):
    return np.random.Generator(np.random.PCG64(seed))


# ----------------------------------------------------------------------------- transformers' generate

@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A random GPT-2 with GPT-2's vocabulary, saved by transformers (save_pretrained, safetensors)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from nanoproof.measure.oracle import save_random_checkpoint
    folder = tmp_path_factory.mktemp("hf-random")
    model = save_random_checkpoint(folder, GPT2_VOCAB, seed=5)
    return folder, model


def hf_generate(model, prompts, n_tokens, dtype):
    """transformers' greedy generate on left-padded prompts with their attention mask."""
    import torch
    model = model.to(getattr(torch, dtype))
    L = max(map(len, prompts))
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n_tokens,
                         eos_token_id=None, pad_token_id=0)
    return out[:, L:].tolist()


def hf_logits(model, prompt, continuation, dtype):
    """transformers' forward logits (no generate, no padding) after each prompt + continuation prefix."""
    import torch
    with torch.no_grad():
        logits = model.to(getattr(torch, dtype))(input_ids=torch.tensor([prompt + continuation])).logits
    return logits[0, len(prompt) - 1:len(prompt) + len(continuation) - 1].double().numpy()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("prompts", [[[464, 3290, 318]], [[464, 3290, 318, 257, 1310], [50256], [40, 716]]],
                         ids=["one", "batch"])
def test_greedy_equals_transformers_generate(impl, hf_checkpoint, prompts, dtype):
    from nanoproof.measure.oracle import hf_params
    folder, model = hf_checkpoint
    params = {k: np.asarray(v, dtype=dtype) for k, v in hf_params(model).items() if k != "lm_head.weight"}
    want = hf_generate(model, prompts, 12, dtype)
    for kv_cache in (True, False):
        got, logits = impl.generate(params, prompts, 12, GPT2_VOCAB, kv_cache=kv_cache)
        assert got == want, f"kv_cache={kv_cache}"
        assert logits.shape == (len(prompts), 12, GPT2_VOCAB["vocab_size"]) and logits.dtype == dtype
        for b, p in enumerate(prompts):   # the step logits are transformers' forward logits
            assert normwise(logits[b], hf_logits(model, p, want[b], dtype))[1] <= CACHE_TOL[dtype]


@pytest.mark.parametrize("which", ["impl", "reference"])
def test_sample_script_greedy_with_weights_equals_transformers(hf_checkpoint, tiktoken_cache, which):
    """`python scripts/sample.py PROMPT... --weights DIR --temperature 0` prints each prompt and the
    continuation transformers' generate gives on the same checkpoint, through impl or reference/."""
    import tiktoken
    from conftest import impl_path
    enc = tiktoken.get_encoding("gpt2")
    folder, model = hf_checkpoint
    texts = ["Alan Turing theorized that", "Hello"]
    out = subprocess.run([sys.executable, "scripts/sample.py", *texts, "--weights", str(folder), "--n_tokens", "8",
                          "--temperature", "0", "--dtype", "float64",
                          "--impl", "reference" if which == "reference" else str(impl_path())],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    prompts = [enc.encode_ordinary(t) for t in texts]
    want = hf_generate(model, prompts, 8, "float64")
    expected = []
    for b, (t, p, w) in enumerate(zip(texts, prompts, want)):
        expected += [f"---------- sample {b + 1} of 2: {t!r}", enc.decode(p + w)]
    assert out.stdout.splitlines() == "\n".join(expected).splitlines()


# ----------------------------------------------------------------------------- cache, batching, reference

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", [TINY, GPT2_VOCAB], ids=["tiny", "gpt2-vocab"])
def test_kv_cache_equals_recomputing(gen, config, dtype):
    params = gen.init(config, 1, np, dtype)
    for kw in ({}, {"temperature": 1.0, "top_k": 40, "top_p": 0.95}):
        a = gen.generate(params, PROMPTS, 10, config, rng=rng(0), kv_cache=True, **kw)
        b = gen.generate(params, PROMPTS, 10, config, rng=rng(0), kv_cache=False, **kw)
        assert a[0] == b[0]
        assert normwise(a[1], b[1])[1] <= CACHE_TOL[dtype]


@pytest.mark.parametrize("kv_cache", [True, False])
def test_batched_rows_equal_each_prompt_alone(gen, kv_cache):
    params = tiny_params(gen)
    tokens, logits = gen.generate(params, PROMPTS, 8, TINY, kv_cache=kv_cache)
    for b, p in enumerate(PROMPTS):
        alone, alone_logits = gen.generate(params, [p], 8, TINY, kv_cache=kv_cache)
        assert alone[0] == tokens[b]
        assert normwise(logits[b], alone_logits[0])[1] <= CACHE_TOL["float64"]


@pytest.mark.parametrize("kw", [{}, {"temperature": 0.8, "top_k": 10, "top_p": 0.9}, {"temperature": 1.5},
                                {"temperature": 1.0, "stop_token": 7}], ids=["greedy", "top-k-p", "t1.5", "stop"])
def test_impl_equals_reference(impl, ref, kw):
    params = tiny_params(ref)
    want = ref.generate(params, PROMPTS, 12, TINY, rng=rng(11), kv_cache=False, **kw)
    for kv_cache in (True, False):
        got = impl.generate(params, PROMPTS, 12, TINY, rng=rng(11), kv_cache=kv_cache, **kw)
        assert got[0] == want[0]
        assert normwise(got[1], want[1])[1] <= REF_TOL


# ----------------------------------------------------------------------------- sampling rules

def test_top_k_1_and_tiny_top_p_are_greedy(gen):
    params = tiny_params(gen)
    greedy = gen.generate(params, PROMPTS, 10, TINY)[0]
    assert gen.generate(params, PROMPTS, 10, TINY, temperature=1.0, top_k=1, rng=rng(0))[0] == greedy
    assert gen.generate(params, PROMPTS, 10, TINY, temperature=1.0, top_p=1e-9, rng=rng(0))[0] == greedy
    # and sampling without them is not greedy here (else the two lines above would prove nothing)
    assert gen.generate(params, PROMPTS, 10, TINY, temperature=1.0, rng=rng(0))[0] != greedy


def kept_set(logits, temperature, top_k, top_p):
    """Token ids allowed at one step, written out here: top-k by rank, then the top-p prefix."""
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    if top_k:
        order = order[z[order] >= z[order][min(top_k, len(z)) - 1]]
    p = np.exp(z[order] - z[order].max())
    p /= p.sum()
    before = np.concatenate([[0.0], np.cumsum(p)[:-1]])
    return set(order[before < top_p].tolist()) if top_p is not None else set(order.tolist())


@given(seed=st.integers(0, 2 ** 32 - 1), temperature=st.floats(0.3, 3.0),
       top_k=st.one_of(st.none(), st.integers(1, 70)), top_p=st.one_of(st.none(), st.floats(0.01, 1.0)))
def test_sampled_tokens_stay_in_the_top_k_top_p_set(gen, seed, temperature, top_k, top_p):
    params = tiny_params(gen, seed=seed % 4)
    tokens, logits = gen.generate(params, PROMPTS, 4, TINY, temperature, top_k, top_p, rng(seed))
    for b, row in enumerate(tokens):
        for s, t in enumerate(row):
            allowed = kept_set(logits[b, s], temperature, top_k, top_p)
            assert t in allowed
            if top_k:
                assert len(allowed) <= top_k or len(set(logits[b, s].tolist())) < TINY["vocab_size"]


def test_top_p_reaches_p_with_the_fewest_tokens(gen):
    """The kept set's probability reaches top_p, and without its least likely token it would not."""
    params = tiny_params(gen)
    tokens, logits = gen.generate(params, PROMPTS, 6, TINY, 1.0, None, 0.5, rng(2))
    for b in range(len(PROMPTS)):
        for s in range(6):
            p = np.exp(logits[b, s] - logits[b, s].max())
            p /= p.sum()
            kept = sorted(kept_set(logits[b, s], 1.0, None, 0.5), key=lambda i: -p[i])
            assert tokens[b][s] in kept and p[kept].sum() >= 0.5 > p[kept[:-1]].sum()


def test_same_seed_same_tokens_other_seed_differs(gen):
    params = tiny_params(gen)
    kw = {"temperature": 1.0, "top_k": 20}
    a = gen.generate(params, PROMPTS, 10, TINY, rng=rng(1), **kw)[0]
    assert gen.generate(params, PROMPTS, 10, TINY, rng=rng(1), **kw)[0] == a
    assert gen.generate(params, PROMPTS, 10, TINY, rng=rng(2), **kw)[0] != a


def test_stops_at_block_size(gen):
    params = tiny_params(gen)
    tokens, logits = gen.generate(params, PROMPTS, 100, TINY)
    steps = TINY["block_size"] - max(map(len, PROMPTS))
    assert [len(t) for t in tokens] == [steps] * len(PROMPTS) and logits.shape[1] == steps
    with pytest.raises(ValueError, match="block_size=16"):
        gen.generate(params, [list(range(17))], 1, TINY)


def test_stops_at_stop_token(gen):
    """A row ends at its first stop token and takes no more; generation ends when every row has."""
    params = tiny_params(gen)
    for prompts in ([PROMPTS[0]], PROMPTS):
        free = gen.generate(params, prompts, 12, TINY, 1.0, rng=rng(4))[0]
        stop = free[0][2]                                         # row 0's third token
        tokens, logits = gen.generate(params, prompts, 12, TINY, 1.0, rng=rng(4), stop_token=stop)
        ends = [row.index(stop) + 1 if stop in row else None for row in free]
        assert tokens == [row[:end] for row, end in zip(free, ends)]
        limit = min(12, TINY["block_size"] - max(map(len, prompts)))
        assert logits.shape[1] == (limit if None in ends else max(ends))
        assert len(prompts) > 1 or logits.shape[1] == 3                  # one row: ended at its stop


# ----------------------------------------------------------------------------- the command line

def char_checkpoint(impl, path):
    """A .npz as impl's train writes it (params/..., meta), char-level over a small alphabet."""
    import json
    chars = sorted(set("abcdefgh \n"))
    cfg = {**TINY, "vocab_size": len(chars)}
    arrays = {f"params/{k}": v for k, v in impl.init(cfg, 0, np, "float32").items()}
    arrays["meta"] = np.array(json.dumps({"config": cfg, "data": {"encoding": "char", "chars": chars}}))
    np.savez(path, **arrays)
    return path


def run_sample(*args):
    return subprocess.run([sys.executable, "impl/gpt2.py", "sample", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_cli_char_checkpoint_batch_and_errors(impl, tmp_path):
    ckpt = str(char_checkpoint(impl, tmp_path / "ckpt.npz"))
    out = run_sample("abc", "h", "--ckpt", ckpt, "--n_tokens", "4")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "---------- sample 1 of 2: 'abc'" and lines[2] == "---------- sample 2 of 2: 'h'"
    assert len(lines) == 4 and lines[1].startswith("abc") and len(lines[1]) == 7 and len(lines[3]) == 5
    for args, message in [(["abz"], "characters outside its vocabulary: ['z']"),
                          (["a" * 17], "prompts must hold 1 to block_size=16 tokens"),
                          (["ab", "--stop_at_eot"], "no <|endoftext|> token"),
                          (["ab", "--top_p", "0"], "0 < --top_p <= 1")]:
        bad = run_sample(*args, "--ckpt", ckpt)
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr
    bad = run_sample("ab", "--ckpt", str(tmp_path / "none.npz"))
    assert bad.returncode == 1 and f"sample: cannot load {tmp_path / 'none.npz'}" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- scripts/sample.py

def sample_script(capsys, *args):
    """scripts/sample.py's main in this process: (exit status, stdout, stderr)."""
    from nanoproof.cli import load_script
    status = load_script("sample").main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_sample_script_equals_impls_sample_command(impl, tmp_path, capsys):
    """On a checkpoint of ours, scripts/sample.py (the contract's generate) prints what impl/gpt2.py's own
    sample command prints, sampled with the same defaults and seed, in one batch and alone."""
    ckpt = str(char_checkpoint(impl, tmp_path / "ckpt.npz"))
    for prompts in (["abc", "h"], ["gg"]):
        for extra in ([], ["--temperature", "1.3", "--top_k", "3", "--top_p", "0.9", "--seed", "5"]):
            own = run_sample(*prompts, "--ckpt", ckpt, "--n_tokens", "6", *extra)
            assert own.returncode == 0, own.stderr
            status, out, err = sample_script(capsys, *prompts, "--ckpt", ckpt, "--n_tokens", "6", *extra,
                                             "--impl", "impl/gpt2.py")
            assert (status, err) == (0, "") and out == own.stdout


def test_sample_script_samples_as_generate_does(impl, hf_checkpoint, tiktoken_cache, capsys):
    """--temperature/--top_k/--top_p/--seed/--stop_at_eot/--no_kv_cache reach generate as the contract
    names them: the output is generate's, called here on the harness's loading of the same folder."""
    import tiktoken
    from conftest import impl_path
    from nanoproof.tools.pretrained import load_pretrained
    enc = tiktoken.get_encoding("gpt2")
    folder, _ = hf_checkpoint
    params, config = load_pretrained(folder, "float32")
    texts = ["The meaning of life is", "Hi"]
    prompts = [enc.encode_ordinary(t) for t in texts]
    for kv_cache in (True, False):
        tokens, _ = impl.generate(params, prompts, 7, config, 0.9, 50, 0.8, rng(3), kv_cache, enc.eot_token)
        expected = []
        for b, (t, p, w) in enumerate(zip(texts, prompts, tokens)):
            expected += [f"---------- sample {b + 1} of 2: {t!r}", enc.decode(p + w)]
        status, out, err = sample_script(capsys, *texts, "--weights", str(folder), "--n_tokens", "7",
                                         "--temperature", "0.9", "--top_k", "50", "--top_p", "0.8", "--seed", "3",
                                         "--stop_at_eot", *([] if kv_cache else ["--no_kv_cache"]),
                                         "--impl", str(impl_path()))
        assert (status, err) == (0, "")
        assert out.splitlines() == "\n".join(expected).splitlines()


def small_vocab_folder(tmp_path_factory):
    pytest.importorskip("transformers")
    from nanoproof.measure.oracle import save_random_checkpoint
    folder = tmp_path_factory.mktemp("hf-small") / "small"
    save_random_checkpoint(folder, TINY, seed=1)
    return folder


@pytest.mark.parametrize("case", ["missing ckpt", "missing folder", "file as --weights", "unknown character",
                                  "prompt too long", "eot on char", "top_p 0", "negative temperature",
                                  "vocabulary too small for BPE", "null safetensors header"])
def test_sample_script_user_errors(impl, tmp_path, tmp_path_factory, capsys, case):
    """Each user error is one line on stderr naming what is wrong, exit status 2, no traceback."""
    ckpt = str(char_checkpoint(impl, tmp_path / "ckpt.npz"))
    args, message = {
        "missing ckpt": (["ab", "--ckpt", str(tmp_path / "none.npz")], "none.npz: no such checkpoint file"),
        "missing folder": (["ab", "--weights", str(tmp_path / "none")], "none: no such folder"),
        "file as --weights": (["ab", "--weights", ckpt], "--weights takes a Hugging Face folder"),
        "unknown character": (["abz", "--ckpt", ckpt], "character 'z' is not in the char vocabulary"),
        "prompt too long": (["a" * 17, "--ckpt", ckpt], "prompts must hold 1 to block_size=16 tokens"),
        "eot on char": (["ab", "--ckpt", ckpt, "--stop_at_eot"], "no <|endoftext|> token"),
        "top_p 0": (["ab", "--ckpt", ckpt, "--top_p", "0"], "--top_p: must be in (0, 1], got 0.0"),
        "negative temperature": (["ab", "--ckpt", ckpt, "--temperature", "-1"], "--temperature: must be >= 0"),
        "vocabulary too small for BPE": (["ab", "--weights", "SMALL"], "has vocab_size 64: prompts are encoded in "
                                                                       "GPT-2 BPE"),
        "null safetensors header": (["ab", "--weights", "NULL"], "header is null, expected a JSON object"),
    }[case]
    if "SMALL" in args or "NULL" in args:
        folder = small_vocab_folder(tmp_path_factory)
        if "NULL" in args:
            (folder / "model.safetensors").write_bytes(b"\x04" + b"\x00" * 7 + b"null")
        args = [str(folder) if a in ("SMALL", "NULL") else a for a in args]
        capsys.readouterr()                                   # transformers' progress bar while saving
    try:
        status, out, err = sample_script(capsys, *args, "--impl", "impl/gpt2.py")
        assert len(err.strip().splitlines()) == 1, err
    except SystemExit as e:                                   # argparse's own errors: usage, then the error
        status, err = e.code, capsys.readouterr().err
        assert case in ("top_p 0", "negative temperature")
    assert status == 2 and message in err.strip().splitlines()[-1], err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- past block_size

def greedy_by_hand(impl, params, config, prompt, n_tokens):
    """Greedy continuation, one forward per token over the last block_size - 1 tokens: the oracle of
    the sample commands' cropping (independent of generate and its KV cache)."""
    row = list(prompt)
    for _ in range(n_tokens):
        context = np.array([row[-(config["block_size"] - 1):]])
        logits = impl.forward(params, context, None, config)[1]["logits"]
        row.append(int(np.argmax(logits[0, -1])))
    return row[len(prompt):]


def test_sample_commands_go_past_block_size_by_cropping(impl, tmp_path, capsys):
    """impl/gpt2.py sample and scripts/sample.py both produce --n_tokens tokens beyond block_size (16):
    greedy, each token is the argmax of a forward over the last 15 tokens; sampled, both commands print
    the same text, each row prompt + n_tokens characters, with and without the KV cache."""
    import json
    ckpt = str(char_checkpoint(impl, tmp_path / "ckpt.npz"))
    with np.load(ckpt) as f:
        meta = json.loads(str(f["meta"]))
        params = {k[len("params/"):]: f[k].astype("float64") for k in f.files if k.startswith("params/")}
    chars, config, n = meta["data"]["chars"], meta["config"], 3 * TINY["block_size"] + 5
    expected = "".join(chars[i] for i in greedy_by_hand(impl, params, config, [chars.index(c) for c in "abc"], n))
    for extra in (["--temperature", "0", "--dtype", "float64"], ["--seed", "4"], ["--seed", "4", "--no_kv_cache"]):
        own = run_sample("abc", "h", "--ckpt", ckpt, "--n_tokens", str(n), *extra)
        assert own.returncode == 0, own.stderr
        texts = [t[:-1] for t in re.split(r"^---------- sample \d of 2: .*\n", own.stdout, flags=re.M)[1:]]
        assert [len(t) for t in texts] == [3 + n, 1 + n] and texts[0][:3] == "abc" and texts[1][0] == "h"
        if extra[1] == "0":
            assert texts[0] == "abc" + expected
        status, out, err = sample_script(capsys, "abc", "h", "--ckpt", ckpt, "--n_tokens", str(n), *extra,
                                         "--impl", "impl/gpt2.py")
        assert (status, err) == (0, "") and out == own.stdout
    full = "a" * TINY["block_size"]                       # a prompt that fills the block goes on too
    own = run_sample(full, "--ckpt", ckpt, "--n_tokens", "3")
    assert own.returncode == 0 and len(own.stdout.splitlines()[0]) == TINY["block_size"] + 3, own.stderr


def test_generate_beyond_block_stops_rows_at_the_stop_token(impl):
    """A row that produced stop_token leaves the batch (its tokens end there, past block_size); the
    others go on to n_tokens. Greedy in float64, so leaving the batch changes no other row's tokens."""
    from nanoproof.tools.evaluate import generate_beyond_block
    params = impl.init(TINY, 3, np, "float64")
    free = generate_beyond_block(impl, params, [[1, 2], [3]], 40, TINY)
    assert [len(row) for row in free] == [40, 40]
    stop = free[0][20]                                    # a token row 0 makes past the first block
    cut = lambda row: row[:row.index(stop) + 1] if stop in row else row
    got = generate_beyond_block(impl, params, [[1, 2], [3]], 40, TINY, stop_token=stop)
    assert got == [cut(row) for row in free] and len(got[0]) <= 21
