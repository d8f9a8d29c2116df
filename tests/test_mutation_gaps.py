"""Tests that close the gaps mutmut found in the fast semantic tier: mutants of impl/gpt2.py the
tier lets through although they change what impl computes (harness/measure/mutmut_survivors.json names the
mutants each test kills; scripts/mutmut_report.py checks they stay killed).

The golden cases run float64 with O(1) scores and clip at grad_clip 1.4 and 1.58 only, so the tier
cannot see: a float32 run silently upcast to float64 (training or generation), a softmax not shifted
by its row's own max (the same numbers at O(1) scores, inf/NaN at large ones: forward, generate's
attention and its sampling), grad_clip <= 0 (off) or below 1, and get_batch on the uint16 tokens
prepare_data writes. In generate it cannot see the edges of the prompt lengths (empty, longer than
block_size, exactly block_size: no step), a generation that ends because every row has stopped, the
sampling rule at tied logits and at a draw exactly on a cdf value, nor a cupy array's copy to the host.
(Other generate gaps are closed by the generate golden case itself: drawn biases and LayerNorm gains,
temperatures other than 1, top-k and top-p alone, a stop token, generate's defaults.)

Like tests/test_semantic_tier.py, these run on impl imported as the package module `impl.gpt2`
(the `impl` fixture is overridden here): mutmut's trampolines only see a module of that name. When
NANOPROOF_IMPL names another implementation they run on that file instead (conftest's `impl`): they
test the user's implementation, whatever its text. Two
tests of tests/test_impl_vs_reference.py that already close gaps (float32 dtypes kept) are collected
here a second time for that reason, not copied.
"""
import os

import numpy as np
import pytest

from nanoproof.spec.contract import activation_names, load_impl

import test_impl_vs_reference as ivr
from test_impl_vs_reference import test_float32_end_to_end, test_init_bitwise_equal  # noqa: F401
from test_semantic_tier import import_impl


@pytest.fixture(scope="module")
def impl():
    """Overrides conftest's `impl` (loaded by path under a private name) in this module: impl/gpt2.py
    as `impl.gpt2` (for mutmut), or NANOPROOF_IMPL's file when that names one."""
    env_impl = os.environ.get("NANOPROOF_IMPL")
    return load_impl(env_impl) if env_impl else import_impl()


@pytest.fixture(scope="module", autouse=True)
def private_step0_cache():
    """test_impl_vs_reference caches step 0 per (case, kind), not per module: keep impl.gpt2's results
    out of the cache its own tests read (NANOPROOF_IMPL may name another file), and theirs out of ours."""
    saved = dict(ivr._step0)
    ivr._step0.clear()
    yield
    ivr._step0.clear()
    ivr._step0.update(saved)


@pytest.mark.parametrize("grad_clip", [0.0, 0.5], ids=["clipping_off", "clip_below_1"])
def test_adamw_grad_clip_regimes(impl, ref, grad_clip):
    """grad_clip <= 0 turns clipping off (nanoGPT, torch); 0 < grad_clip < 1 still clips. Two updates
    from the same gradients (norm 1.42): grad norm, params and AdamW state equal to the reference's
    to TOL = 1e-10 (measured <= 4.4e-16 relative)."""
    config, idx, targets = ivr.inputs("2layer_T<block")
    hp = dict(ivr.HPARAMS, grad_clip=grad_clip)
    params = ivr.start_params(ref, config, "perturbed")
    grads = ref.backward(params, ref.forward(params, idx, targets, config)[1], config)
    out = {}
    for side, module in (("impl", impl), ("ref", ref)):
        p, state = {k: v.copy() for k, v in params.items()}, {}
        norms = [module.adamw_step(p, {k: g.copy() for k, g in grads.items()}, state, s, hp["learning_rate"], hp)
                 for s in range(2)]
        out[side] = p, state, np.array(norms)
    assert out["ref"][2][0] > 0.5, "the gradients must be large enough for grad_clip 0.5 to clip"
    (p, state, norms), (rp, rstate, rnorms) = out["impl"], out["ref"]
    ivr.assert_close("grad norms", norms, rnorms)
    assert sorted(state) == sorted(rstate), "AdamW state keys differ"
    for k in rp:
        ivr.assert_close(f"{k} after 2 updates", p[k], rp[k])
    for k in rstate:
        ivr.assert_close(f"state {k}", state[k], rstate[k])


def test_softmaxes_stable_at_large_scores(impl, ref):
    """Both softmaxes (attention, the loss's log-sum-exp) subtract each row's own max. With ln_1's
    gain x40 (attention scores -560 .. 820) and ln_f's x3000 (row max logits 1700 .. 3300), shifting
    by anything else (+max, the global max) overflows or underflows to inf/NaN. impl vs reference,
    float64, to test_impl_vs_reference's TOL = 1e-10 (measured: loss <= 3.6e-16, activations
    <= 1.6e-14, gradients <= 6.8e-14 relative)."""
    config, idx, targets = ivr.inputs("2layer_T<block")
    params = ivr.start_params(ref, config, "perturbed")
    for i in range(config["n_layer"]):
        params[f"h.{i}.ln_1.weight"] *= 40
    params["ln_f.weight"] *= 3000
    loss, cache = impl.forward(params, idx, targets, config)
    rloss, rcache = ref.forward(params, idx, targets, config)
    ivr.assert_close("loss", np.array(loss), np.array(rloss))
    for name in activation_names(config["n_layer"]):
        if name in cache:
            ivr.assert_close(name, cache[name], rcache[name])
    grads, rgrads = impl.backward(params, cache, config), ref.backward(params, rcache, config)
    for name in rgrads:
        ivr.assert_close(f"d{name}", grads[name], rgrads[name])


def test_get_batch_from_uint16_memmap(impl, ref, tmp_path):
    """scripts/prepare_data.py writes train.bin as uint16, read through np.memmap; the golden cases
    feed int64 tokens. get_batch must still return int64 (B, T) arrays: the reference's windows."""
    tokens = np.random.default_rng(0).integers(0, 2 ** 16, 500).astype(np.uint16)
    tokens.tofile(tmp_path / "train.bin")
    data = np.memmap(tmp_path / "train.bin", dtype=np.uint16, mode="r")
    got = impl.get_batch(data, 4, 8, np.random.Generator(np.random.PCG64(3)))
    want = ref.get_batch(data, 4, 8, np.random.Generator(np.random.PCG64(3)))
    for name, g, w in zip("xy", got, want):
        assert isinstance(g, np.ndarray) and g.dtype == np.int64, f"get_batch {name}: {type(g).__name__} {g.dtype}"
        assert g.shape == w.shape == (4, 8) and np.array_equal(g, w), f"get_batch {name} differs from the reference"


# ----------------------------------------------------------------------------- generate

def generate_both(impl, ref, params, prompts, n_tokens, config, rng_factory, **kw):
    """The reference's generate (no cache: the plain definition) and impl's, with and without its KV
    cache, each from a fresh rng: {"ref" | "kv cache" | "no cache": (tokens, logits)}."""
    out = {"ref": ref.generate(params, prompts, n_tokens, config, rng=rng_factory(), kv_cache=False, **kw)}
    for path, kv_cache in (("kv cache", True), ("no cache", False)):
        out[path] = impl.generate(params, prompts, n_tokens, config, rng=rng_factory(), kv_cache=kv_cache, **kw)
    return out


def assert_generate_equal(runs, what):
    """impl's tokens equal the reference's, and its step logits to ivr.TOL (shape and dtype first)."""
    want_tokens, want_logits = runs["ref"]
    for path in ("kv cache", "no cache"):
        tokens, logits = runs[path]
        assert tokens == want_tokens, f"{what} ({path}): tokens {tokens} != the reference's {want_tokens}"
        ivr.assert_close(f"{what} logits ({path})", logits, want_logits)


def pcg(seed):
    return lambda: np.random.Generator(np.random.PCG64(seed))


@pytest.fixture(scope="module")
def generate_case():
    """The generate golden case's checkpoint (float64), config and prompts (harness/spec/cases.py)."""
    from nanoproof.spec.cases import GENERATE
    from nanoproof.golden.regen import generate_params
    return generate_params(GENERATE), GENERATE.config, [list(p) for p in GENERATE.prompts]


def test_generate_softmaxes_stable_at_large_scores(impl, ref, generate_case):
    """generate's two softmaxes (attention, sampling) subtract each row's own max, as forward's do.
    With ln_1's gain x40 and ln_f's x3000 (the generate case's checkpoint), attention rows peak
    between -1356 and 3572 and the rows of a step's logits differ in their max by 665 .. >745:
    shifting by anything else (+max, the global max) gives inf/NaN. Sampled (temperature 1), both
    paths against reference/sampling.py; measured: logits <= 2.0e-14 relative (ivr.TOL = 1e-10)."""
    params, config, prompts = generate_case
    params = dict(params)
    for i in range(config["n_layer"]):
        params[f"h.{i}.ln_1.weight"] = params[f"h.{i}.ln_1.weight"] * 40
    params["ln_f.weight"] = params["ln_f.weight"] * 3000
    runs = generate_both(impl, ref, params, prompts, 20, config, pcg(0), temperature=1.0)
    assert np.abs(runs["ref"][1]).max() > 1000, "the logits must be large for this test to mean anything"
    assert_generate_equal(runs, "large scores")


def test_generate_float32_stays_float32(impl, ref, generate_case):
    """A float32 checkpoint generates in float32, with and without the KV cache: float32 logits (as
    reference/sampling.py's), and the reference's float32 tokens (greedy). The float64 golden tier
    cannot see a float32 run upcast to float64 (a float64 cache: more accurate, slower)."""
    params, config, prompts = generate_case
    params = {k: v.astype(np.float32) for k, v in params.items()}
    want_tokens, want_logits = ref.generate(params, prompts, 20, config, kv_cache=False)
    assert want_logits.dtype == np.float32
    for kv_cache in (True, False):
        tokens, logits = impl.generate(params, prompts, 20, config, kv_cache=kv_cache)
        assert logits.dtype == np.float32, f"kv_cache={kv_cache}: float32 params gave {logits.dtype} logits"
        assert tokens == want_tokens, f"kv_cache={kv_cache}: {tokens} != the reference's {want_tokens}"


def test_generate_prompt_lengths(impl, ref, generate_case):
    """A prompt of exactly block_size tokens leaves no room: no new tokens and (B, 0, V) logits, as the
    reference; an empty prompt, or one longer than block_size, is a ValueError naming block_size."""
    params, config, _ = generate_case
    T, V = config["block_size"], config["vocab_size"]
    full = [list(range(T)), list(range(3))]
    want_tokens, want_logits = ref.generate(params, full, 5, config, kv_cache=False)
    assert want_tokens == [[], []] and want_logits.shape == (2, 0, V)
    for kv_cache in (True, False):
        tokens, logits = impl.generate(params, full, 5, config, kv_cache=kv_cache)
        assert tokens == want_tokens and np.shape(logits) == (2, 0, V), (kv_cache, tokens, np.shape(logits))
    for bad in ([[], [1, 2]], [list(range(T + 1))]):
        for module in (ref, impl):
            with pytest.raises(ValueError, match=f"block_size={T}"):
                module.generate(params, bad, 5, config)


def test_generate_ends_when_every_row_has_stopped(impl, ref, generate_case):
    """Stop token 4 at temperature 1, seed 11: the rows end after 8, 3 and 5 tokens, so generation
    ends after 8 steps, before block_size (the golden case's stop run keeps one row going to
    block_size). Tokens cut after each row's stop token, the finished rows' later logits (fed their
    stop token) and the number of steps equal the reference's."""
    params, config, prompts = generate_case
    runs = generate_both(impl, ref, params, prompts, 20, config, pcg(11), temperature=1.0, stop_token=4)
    want_tokens, want_logits = runs["ref"]
    lengths = [len(row) for row in want_tokens]
    assert all(row[-1] == 4 for row in want_tokens) and len(set(lengths)) == len(lengths), want_tokens
    assert want_logits.shape[1] == max(lengths) < config["block_size"] - max(map(len, prompts))
    assert_generate_equal(runs, "stop token")


class FixedDraws:
    """An rng whose every draw is u: the contract's sampler reads one rng.random(B) per step."""

    def __init__(self, u):
        self.u = u

    def random(self, size=None):
        return np.full(size, self.u)


def test_generate_sampling_rule_at_ties_and_boundaries(impl, ref, generate_case):
    """The sampling rule where it has edges, against reference/sampling.py. ln_f's gain 0 and its bias
    the unit vector e0 make every logit exactly wte[:, 0] (a dot product with a one-hot: no rounding),
    set here to 0 .. 1 with tokens 5 and 6 tied on top at 2. With top-k 2 each has probability 0.5:
    - u = 0 picks token 5, the first of positive probability (never a zero-probability token);
    - u = 0.5 lands exactly on token 5's cdf: the inverse CDF takes the first cdf > u, token 6;
    - top-p 0.5 keeps token 5 alone: the mass before token 6 is 0.5, not below top_p; of tied tokens
      the first in vocabulary order comes first (a stable sort).
    The golden case's random logits never tie and its draws never sit on a cdf value exactly."""
    params, config, prompts = generate_case
    C, V = config["n_embd"], config["vocab_size"]
    params = dict(params, **{"ln_f.weight": np.zeros(C), "ln_f.bias": np.eye(C)[0]})
    wte = params["wte"].copy()
    wte[:, 0] = np.linspace(0.0, 1.0, V)
    wte[[5, 6], 0] = 2.0
    params["wte"] = wte
    for u, top_p, want in ((0.0, None, 5), (0.5, None, 6), (0.5, 0.5, 5)):
        runs = generate_both(impl, ref, params, prompts, 3, config, lambda: FixedDraws(u),
                             temperature=1.0, top_k=2, top_p=top_p)
        assert runs["ref"][0] == [[want] * 3] * len(prompts), (u, top_p, runs["ref"][0])
        assert_generate_equal(runs, f"u = {u}, top_p = {top_p}")


def test_to_host_copies_device_arrays(impl):
    """impl's to_host (generate's device-to-host copy of the logits; not part of the contract) copies
    a device array by its .get(), as cupy's arrays need: they refuse np.asarray. Without a GPU the
    tiers never pass it one; this stand-in behaves as a cupy array does there."""
    to_host = getattr(impl, "to_host", None)
    if to_host is None:
        pytest.skip("impl has no to_host helper (not part of the contract)")

    class DeviceArray:
        def __init__(self, a):
            self.a = a

        def get(self):
            return self.a.copy()

        def __array__(self, *args, **kwargs):
            raise TypeError("Implicit conversion to a NumPy array is not allowed (as cupy)")

    a = np.arange(6.0).reshape(2, 3)
    got = to_host(DeviceArray(a))
    assert isinstance(got, np.ndarray) and np.array_equal(got, a)
    assert np.array_equal(to_host(a), a)
