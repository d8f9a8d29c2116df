"""Every reference gradient against float64 central finite differences (h = 1e-5).

Two levels, so a wrong gradient is localised to its layer:
- per layer: each `<layer>_backward` in reference/layers.py against finite differences of the scalar
  objective sum(dout * out) with a fixed random dout, over EVERY entry of every differentiable input
  and weight (the layers are tiny, so this is exhaustive);
- whole model: reference.model.backward against finite differences of the loss, on a few entries of
  EVERY parameter tensor chosen by a seeded rng (plus entries picked on purpose: unused wpe rows, the
  key part of c_attn.bias).
Then the comparison itself is shown to fail on a slightly wrong gradient and on a dropped term.
The differences and the error measure are tests/finite_differences.py's (shared with test_properties.py).

Error measure, per entry:   err = |fd - an| / max(|fd|, |an|, FLOOR)   must be < TOL = 1e-6 (the issue's
requirement). Measured (numpy 2.4, float64, this machine, CONFIG below, NOISE_STD 0.3, finite differences of
EVERY entry of every tensor, 1912 entries, for this file's params (SEED) and for seeds 0..3):
- truncation error (h^2 f'''/6) dominates for large gradients: max |fd - an| = 1.0e-9 on wte entries of
  size ~0.1 to 0.3, i.e. relative <= 8e-9;
- the rounding floor of a finite difference is k * ulp(L) / (2h) = k * 2.2e-11 (L ~ 2.5 to 3.7); the
  largest |fd - an| on entries with |an| < 1e-3 was 7.2e-11 (SEED) and 5.3e-11, 7.6e-11, 8.5e-11, 6.7e-11
  (seeds 0..3), i.e. k <= 3.8;
- so the worst err with FLOOR = 1e-5 / 1e-4 / 1e-3 was 1.6e-6 / 7.2e-7 / 7.2e-8 (SEED), and 8.5e-8 with
  FLOOR = 1e-3 over seeds 0..3: FLOOR = 1e-3 leaves a 12x margin under TOL, FLOOR = 1e-4 only 1.4x.
  Entries below FLOOR (5-17% of all entries) are then held to an absolute |fd - an| < TOL * FLOOR = 1e-9,
  still 1e-5 relative for a gradient of 1e-4;
- exactly-zero gradients need the floor: the key part of c_attn.bias has analytic gradient ~1e-18 (softmax
  is invariant to adding q.b_k to a whole row of scores), while its finite difference is rounding, ~1e-11.
What these tests see (sampled entries): worst err 6.5e-8 (h.1.ln_2.weight), max |fd - an| 1.2e-10.
Per layer the objective is summed with math.fsum, so its rounding comes only from the terms a perturbation
changes; over every entry of every case: worst err 6.6e-8 (gelu dx, 15x under TOL), max |fd - an| 4.2e-10
(linear dweight, on gradients of size up to 17, exact linear functions: pure rounding).

Why the N(0, 0.3) noise on top of GPT-2's init: at init (std 0.02, zero biases, unit LayerNorm gains) 10% of
the gradient entries are below 3e-6 (median 2e-3) and attention is nearly uniform, so c_attn.weight entries
(the q/k paths of the attention backward) go down to 1e-8 and would only be checked against the absolute floor; zero biases and
unit gains also hide any term multiplied by them. With the noise the 10% quantile is 1.1e-3, the median
1e-2, and every backward term contributes.
"""
import functools
import math

import numpy as np
import pytest

import finite_differences as fd_check
from nanoproof import reference
from nanoproof.reference import layers, model

H = fd_check.H     # the step, 1e-5
TOL = 1e-6         # the bound on the relative error
FLOOR = 1e-3       # absolute floor of the denominator (measured above)
NOISE_STD = 0.3    # extra noise on every parameter (why: above)
ENTRIES_PER_TENSOR = 4

CONFIG = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)
B, T = 2, 6        # T < block_size: wpe rows T.. are unused and must get an exactly zero gradient
SEED = 1234


# ----------------------------------------------------------------------------- the comparison
# tests/finite_differences.py's differences and error measure, with this file's TOL and FLOOR

assert_gradient_close = functools.partial(fd_check.assert_gradient_close, tol=TOL, floor=FLOOR)
central_differences = fd_check.central_differences
all_entries = fd_check.entries


def dot(dout, out):
    """The scalar objective sum(dout * out), summed exactly (math.fsum): entries that a perturbation does
    not change then contribute no rounding noise to the finite difference."""
    return math.fsum(np.ravel(dout * out).tolist())


# ----------------------------------------------------------------------------- per layer
# each case returns (objective, {input name: (array perturbed in place, analytic gradient)}, extra checks)

C, V, NH = CONFIG["n_embd"], CONFIG["vocab_size"], CONFIG["n_head"]


def case_embedding(rng):
    idx = rng.integers(0, V, (B, T))
    idx[1, 3] = idx[0, 0]                                          # a repeated token must accumulate
    wte = rng.normal(0, 1, (V, C))
    wpe = rng.normal(0, 1, (CONFIG["block_size"], C))
    dout = rng.normal(0, 1, (B, T, C))
    _, cache = layers.embedding_forward(idx, wte, wpe)
    dwte, dwpe = layers.embedding_backward(dout, cache, wte, wpe)
    assert np.all(dwpe[T:] == 0), "embedding_backward: dwpe rows >= T must be exactly zero"
    return (lambda: dot(dout, layers.embedding_forward(idx, wte, wpe)[0]),
            {"dwte": (wte, dwte), "dwpe": (wpe, dwpe)})


def case_layernorm(rng):
    x = rng.normal(0, 1, (B, T, C)) * rng.uniform(0.5, 2, (B, T, 1)) + rng.normal(0, 1, (B, T, 1))
    weight = 1 + rng.normal(0, NOISE_STD, C)
    bias = rng.normal(0, NOISE_STD, C)
    dout = rng.normal(0, 1, (B, T, C))
    _, cache = layers.layernorm_forward(x, weight, bias)
    dx, dweight, dbias = layers.layernorm_backward(dout, cache, weight)
    return (lambda: dot(dout, layers.layernorm_forward(x, weight, bias)[0]),
            {"dx": (x, dx), "dweight": (weight, dweight), "dbias": (bias, dbias)})


def case_linear(rng):
    x = rng.normal(0, 1, (B, T, C))
    weight = rng.normal(0, 1, (C, 3 * C))
    bias = rng.normal(0, 1, 3 * C)
    dout = rng.normal(0, 1, (B, T, 3 * C))
    _, cache = layers.linear_forward(x, weight, bias)
    dx, dweight, dbias = layers.linear_backward(dout, cache, weight)
    return (lambda: dot(dout, layers.linear_forward(x, weight, bias)[0]),
            {"dx": (x, dx), "dweight": (weight, dweight), "dbias": (bias, dbias)})


def case_linear_no_bias(rng):                                      # lm_head: x @ wte.T, no bias
    x = rng.normal(0, 1, (B, T, C))
    wte = rng.normal(0, 1, (V, C))
    dout = rng.normal(0, 1, (B, T, V))
    _, cache = layers.linear_forward(x, wte.T)
    dx, dweight_T, _ = layers.linear_backward(dout, cache, wte.T)
    return (lambda: dot(dout, layers.linear_forward(x, wte.T)[0]),
            {"dx": (x, dx), "dwte (as wte.T)": (wte, dweight_T.T)})


def case_attention(rng):
    qkv = rng.normal(0, 1, (B, T, 3 * C))
    dout = rng.normal(0, 1, (B, T, C))
    _, cache = layers.attention_forward(qkv, NH)
    dqkv = layers.attention_backward(dout, cache, NH)
    return lambda: dot(dout, layers.attention_forward(qkv, NH)[0]), {"dqkv": (qkv, dqkv)}


def case_softmax(rng):
    x = rng.normal(0, 2, (B, NH, T, T))
    dout = rng.normal(0, 1, x.shape)
    dx = layers.softmax_backward(dout, layers.softmax_forward(x))
    return lambda: dot(dout, layers.softmax_forward(x)), {"dx": (x, dx)}


def case_softmax_masked(rng):
    """Causal scores as attention makes them: -inf above the diagonal; the masked entries must get an
    exactly zero gradient, and only the finite ones are differentiated."""
    x = rng.normal(0, 2, (B, NH, T, T))
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    x = np.where(future, -np.inf, x)
    dout = rng.normal(0, 1, x.shape)
    dx = layers.softmax_backward(dout, layers.softmax_forward(x))
    assert np.all(dx[..., future] == 0), "softmax_backward: masked (-inf) scores must get zero gradient"
    finite = [i for i in all_entries(x.shape) if not future[i[-2], i[-1]]]
    return lambda: dot(dout, layers.softmax_forward(x)), {"dx (unmasked)": (x, dx, finite)}


def case_gelu(rng):
    x = rng.normal(0, 2, (B, T, 4 * C))                           # both tails and the bend
    dout = rng.normal(0, 1, x.shape)
    _, cache = layers.gelu_forward(x)
    dx = layers.gelu_backward(dout, cache)
    return lambda: dot(dout, layers.gelu_forward(x)[0]), {"dx": (x, dx)}


def case_residual(rng):
    x = rng.normal(0, 1, (B, T, C))
    fx = rng.normal(0, 1, (B, T, C))
    dout = rng.normal(0, 1, (B, T, C))
    dx, dfx = layers.residual_backward(dout)
    return (lambda: dot(dout, layers.residual_forward(x, fx)),
            {"dx": (x, dx), "dfx": (fx, dfx)})


def case_crossentropy(rng):
    """The objective is the loss itself (a scalar already): crossentropy_backward takes no dout."""
    logits = rng.normal(0, 2, (B, T, V))
    targets = rng.integers(0, V, (B, T))
    _, cache = layers.crossentropy_forward(logits, targets)
    dlogits = layers.crossentropy_backward(cache)
    return (lambda: float(layers.crossentropy_forward(logits, targets)[0]),
            {"dlogits": (logits, dlogits)})


LAYER_CASES = {
    "embedding": case_embedding,
    "layernorm": case_layernorm,
    "linear": case_linear,
    "linear_no_bias": case_linear_no_bias,
    "attention": case_attention,
    "softmax": case_softmax,
    "softmax_masked": case_softmax_masked,
    "gelu": case_gelu,
    "residual": case_residual,
    "crossentropy": case_crossentropy,
}


def check_layer(case_name, case=None):
    """Every entry of every input of one layer; returns {input: max error}."""
    rng = np.random.Generator(np.random.PCG64([SEED, list(LAYER_CASES).index(case_name)]))
    objective, inputs = (case or LAYER_CASES[case_name])(rng)
    errors = {}
    for grad_name, (x, an, *entries) in inputs.items():
        entries = entries[0] if entries else all_entries(x.shape)
        assert an.shape == x.shape, f"{case_name}_backward: {grad_name} has shape {an.shape}, input {x.shape}"
        assert an.dtype == np.float64, f"{case_name}_backward: {grad_name} is {an.dtype}, not float64"
        fd = central_differences(objective, x, entries)
        errors[grad_name] = assert_gradient_close(f"{case_name}_backward: {grad_name}", fd,
                                                  [an[i] for i in entries], at=entries)
    return errors


@pytest.mark.parametrize("case_name", list(LAYER_CASES))
def test_layer_gradient(case_name):
    check_layer(case_name)


# ----------------------------------------------------------------------------- whole model

def perturbed_params(seed=SEED):
    """GPT-2's init in float64 plus N(0, NOISE_STD) on every entry of every parameter."""
    rng = np.random.Generator(np.random.PCG64([seed, 99]))
    params = reference.init(CONFIG, seed, np, "float64")
    return {k: p + rng.normal(0.0, NOISE_STD, p.shape) for k, p in params.items()}, rng


@pytest.fixture(scope="module")
def model_case():
    params, rng = perturbed_params()
    idx = rng.integers(0, V, (B, T))
    targets = rng.integers(0, V, (B, T))
    loss, cache = reference.forward(params, idx, targets, CONFIG)
    grads = reference.backward(params, cache, CONFIG)
    return params, idx, targets, grads, rng


def sampled_entries(name, shape, rng):
    """ENTRIES_PER_TENSOR distinct entries drawn by the seeded rng, plus the ones picked on purpose."""
    entries = fd_check.entries(shape, ENTRIES_PER_TENSOR, rng)
    if name == "wpe":                                   # unused positions: both gradients exactly 0
        entries += [(T, 0), (CONFIG["block_size"] - 1, C - 1)]
    if name.endswith("attn.c_attn.bias"):               # key part: exactly 0 in exact arithmetic
        entries += [(C,), (2 * C - 1,)]
    return entries


def model_loss(params, idx, targets):
    return lambda: reference.forward(params, idx, targets, CONFIG)[0]


PARAM_NAMES = list(model.param_shapes(CONFIG))


def test_model_grads_structure(model_case):
    params, _, _, grads, _ = model_case
    assert list(grads) == list(params), "backward must return the params' keys, in the params' order"
    for name in params:
        assert grads[name].shape == params[name].shape, f"{name}: grad shape {grads[name].shape}"
        assert grads[name].dtype == np.float64, f"{name}: grad dtype {grads[name].dtype}"
        assert np.all(np.isfinite(grads[name])), f"{name}: non-finite gradient"


def test_unused_positions_and_key_bias(model_case):
    params, _, _, grads, _ = model_case
    assert np.all(grads["wpe"][T:] == 0), f"wpe rows {T}.. (positions never used) must have zero gradient"
    assert np.all(grads["wpe"][:T] != 0), "wpe rows < T (positions used) must have a gradient"
    for i in range(CONFIG["n_layer"]):
        g = grads[f"h.{i}.attn.c_attn.bias"]
        key, rest = np.abs(g[C:2 * C]).max(), np.abs(np.r_[g[:C], g[2 * C:]]).max()
        # measured: ~1e-19 against ~1e-1 (softmax is shift-invariant; only rounding remains)
        assert key <= 1e-13 * rest, f"h.{i}.attn.c_attn.bias: key part {key:.3e} should be ~0 (rest {rest:.3e})"


@pytest.mark.parametrize("name", PARAM_NAMES)
def test_model_gradient(model_case, name):
    params, idx, targets, grads, _ = model_case
    rng = np.random.Generator(np.random.PCG64([SEED, PARAM_NAMES.index(name)]))
    entries = sampled_entries(name, params[name].shape, rng)
    fd = central_differences(model_loss(params, idx, targets), params[name], entries)
    assert_gradient_close(name, fd, [grads[name][e] for e in entries], at=entries)


# ----------------------------------------------------------------------------- the check can fail

def test_comparison_fails_on_scaled_gradient():
    rng = np.random.Generator(np.random.PCG64([SEED, 1]))
    objective, inputs = case_layernorm(rng)
    x, dx = inputs["dx"]
    entries = all_entries(x.shape)
    fd = central_differences(objective, x, entries)
    an = np.array([dx[i] for i in entries])
    assert_gradient_close("layernorm dx", fd, an, at=entries)                 # passes as is
    assert fd_check.gradient_errors(fd, an * (1 + 1e-4), FLOOR).max() == pytest.approx(1e-4, rel=1e-2)
    with pytest.raises(AssertionError, match=r"^layernorm dx \* \(1\+1e-4\): gradient error"):
        assert_gradient_close("layernorm dx * (1+1e-4)", fd, an * (1 + 1e-4), at=entries)


def test_comparison_fails_on_dropped_layer_term():
    """layernorm_backward without its third term (the path through the variance)."""
    def layernorm_without_variance_term(rng):
        x = rng.normal(0, 1, (B, T, C))
        weight, bias = 1 + rng.normal(0, NOISE_STD, C), rng.normal(0, NOISE_STD, C)
        dout = rng.normal(0, 1, (B, T, C))
        _, cache = layers.layernorm_forward(x, weight, bias)
        dxhat = dout * weight
        wrong = cache["rstd"] * (dxhat - dxhat.mean(axis=-1, keepdims=True))   # term 3 dropped
        return lambda: dot(dout, layers.layernorm_forward(x, weight, bias)[0]), {"dx": (x, wrong)}
    with pytest.raises(AssertionError, match=r"^layernorm_backward: dx: gradient error"):
        check_layer("layernorm", layernorm_without_variance_term)


def test_comparison_fails_on_dropped_model_term(model_case, monkeypatch):
    """model.backward with the token-embedding half of the tied wte's gradient dropped (only lm_head's)."""
    params, idx, targets, _, _ = model_case
    embedding_backward = layers.embedding_backward

    def lm_head_only(dout, cache, wte, wpe):
        dwte, dwpe = embedding_backward(dout, cache, wte, wpe)
        return np.zeros_like(dwte), dwpe
    monkeypatch.setattr(model, "embedding_backward", lm_head_only)
    _, cache = reference.forward(params, idx, targets, CONFIG)
    wrong = reference.backward(params, cache, CONFIG)["wte"]
    entries = [(int(idx[0, 0]), 0), (int(idx[1, 2]), C - 1)]              # rows of tokens in the input
    fd = central_differences(model_loss(params, idx, targets), params["wte"], entries)
    with pytest.raises(AssertionError, match=r"^wte: gradient error"):
        assert_gradient_close("wte", fd, [wrong[e] for e in entries], at=entries)


def test_comparison_floor_and_nan():
    # below the floor an absolute difference < TOL * FLOOR passes, above it fails; NaN never passes
    assert_gradient_close("tiny", [0.0, 3e-11], [1e-19, 0.0])
    with pytest.raises(AssertionError, match="tiny"):
        assert_gradient_close("tiny", [0.0], [2 * TOL * FLOOR])
    with pytest.raises(AssertionError, match="nan"):
        assert_gradient_close("nan", [1.0, 1.0], [1.0, np.nan])
