"""Property-based tests of the layer math: each layer's forward and backward, the optimizer and the
schedule, on reference/ and on the implementation under test (impl/) wherever it exposes the piece.

impl/ exposes whole-model functions only, plus its `layernorm`/`layernorm_back`; its other layers are
checked through the canonical activations of its forward cache (harness/spec/contract.py), through
whole-model identities, or layer by layer against reference/ in float64.

Conventions: a test asserts shape, then dtype, then values. Inputs are bounded and finite (no NaN,
inf or subnormals, tests/strategies.py); inputs on which a property is ill-conditioned (a LayerNorm row
of tiny variance, a gradient buried under a finite difference's rounding noise) are filtered with
assume(), never by loosening a tolerance. Every tolerance below is either derived (the comment says
how) or measured (the comment gives the measurement and the headroom).
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

import finite_differences as fd_check
from nanoproof.judge.compare import normwise as _normwise
from nanoproof.spec.contract import activation_names
from strategies import (dims, float_arrays, positive_floats, random_params, seeds, small_int_arrays,
                        token_ids)

EPS64 = float(np.finfo(np.float64).eps)   # 2.2e-16
LN_EPS = 1e-5                             # GPT-2's layer_norm_epsilon, as both implementations use it


def fewer_examples(divisor):
    """The loaded profile's max_examples divided (dev and ci keep their ratio) for the costlier tests."""
    return settings(max_examples=max(5, settings.default.max_examples // divisor))


@pytest.fixture(scope="session", params=["ref", "impl"])
def gpt(request):
    """Each contract module in turn: reference/ and the implementation under test."""
    return request.getfixturevalue(request.param)


def normwise(a, b):
    """max|a - b| / max|b| (nanoproof.judge.compare.normwise), with 0/0 = 0 and a nonzero difference
    against an all-zero expectation as the absolute difference."""
    max_abs, rel = _normwise(a, b)
    return max_abs if rel == float("inf") and np.isfinite(max_abs) else rel


# ============================================================================ finite differences
# Every backward is checked by tests/finite_differences.py against float64 central differences of the
# scalar <dout, f(inputs)>, on FD_SAMPLES sampled entries of every input tensor (all of them when the
# tensor is smaller), normwise: max|fd - analytic| / max(max|analytic|, max|fd|) < FD_RTOL (its error
# measure with the normwise floor).
#
# Error model: truncation ~ h^2 |f'''| / 6; rounding ("noise") ~ eps * size / h summed over the
# outputs that entry i moves, `size` being the magnitude at which f rounds each output (|f| by
# default; more where f cancels, as attention's att @ v does). The noise is computed per example; a
# tensor whose gradient is below RESOLVABLE x noise (a saturated softmax, a LayerNorm row at a
# stationary point) cannot be checked by differences to FD_RTOL, and such an example is filtered
# with assume().
#
# Measured (3000 hypothesis examples per test, 71-98% kept by the filter; numpy 2.4 + OpenBLAS):
# the worst normwise error over the kept examples was
#   layernorm dx 7.1e-9 (weight, bias 1.9e-10), impl's layernorm dx 2.0e-9, gelu 7.4e-10,
#   cross-entropy 5.9e-10, softmax 4.0e-10, linear 3.0e-10, embedding 2.0e-10, attention 7.3e-11,
#   residual 5.1e-11.
# FD_RTOL = 1e-7 leaves 14x headroom over the worst; a wrong backward term is off by O(1e-2..1).
# RESOLVABLE: noise up to FD_RTOL / 100 of the gradient's size.
FD_H = fd_check.H       # 1e-5
FD_SAMPLES = 6
FD_RTOL = 1e-7
RESOLVABLE = 100 / FD_RTOL


def assert_backward_matches_fd(f, inputs, grads, dout, seed, size=None):
    """f(**inputs) -> array; grads[name] the claimed d<dout, f>/d inputs[name]. Inputs are perturbed
    in place and restored. `size` (broadcastable to f's output, default |f|) is the magnitude at
    which f rounds each output, for the noise estimate. The differences, the entries and the error
    measure are tests/finite_differences.py's, its floor the normwise one."""
    out = np.asarray(f(**inputs), dtype=np.float64)
    size = np.abs(out) if size is None else np.broadcast_to(size, out.shape)
    rng = np.random.Generator(np.random.PCG64(seed))
    for name, x in inputs.items():
        g = grads[name]
        assert g.shape == x.shape, f"d{name}: shape {g.shape}, input {x.shape}"
        assert g.dtype == x.dtype, f"d{name}: dtype {g.dtype}, input {x.dtype}"
        at = fd_check.entries(x.shape, FD_SAMPLES, rng)
        fd, noise = fd_check.central_differences(lambda: f(**inputs), x, at, dout=dout, size=size,
                                                 h=FD_H)
        assert np.all(np.isfinite(g)) and np.all(np.isfinite(fd)), f"d{name}: not finite"
        # normwise over the whole analytic gradient; the differences count too, so that a backward
        # returning zeros is measured against what the differences found
        scale = fd_check.normwise_floor(g, fd)
        assume(scale > 0 and scale >= RESOLVABLE * noise.max())
        worst = float(np.abs(fd - np.array([g[i] for i in at])).max())
        note(f"d{name}: max|fd - analytic| / max|analytic| = {worst / scale:.3e}, "
             f"/ noise = {worst / noise.max() if noise.max() else 0.0:.3e}")
        fd_check.assert_gradient_close(f"d{name} (normwise)", fd, [g[i] for i in at], tol=FD_RTOL,
                                       floor=scale, at=at, h=FD_H)


@given(d=dims(), bound=st.sampled_from([0.1, 1.0, 3.0]), data=st.data(), seed=seeds)
def test_embedding_backward_matches_fd(ref, d, bound, data, seed):
    L = ref.layers
    idx = data.draw(token_ids((d.B, d.T), d.vocab_size))
    wte = data.draw(float_arrays((d.vocab_size, d.C), bound))
    wpe = data.draw(float_arrays((d.block_size, d.C), bound))
    out, cache = L.embedding_forward(idx, wte, wpe)
    assert out.shape == (d.B, d.T, d.C) and out.dtype == np.float64
    dout = data.draw(float_arrays(out.shape, 1.0))
    dwte, dwpe = L.embedding_backward(dout, cache, wte, wpe)
    assert_backward_matches_fd(lambda wte, wpe: L.embedding_forward(idx, wte, wpe)[0],
                               {"wte": wte, "wpe": wpe}, {"wte": dwte, "wpe": dwpe}, dout, seed)


def layernorm_inputs(data, max_rows=8, bound=10.0):
    rows = data.draw(st.integers(1, max_rows))
    C = data.draw(st.integers(3, 12))      # 2 features normalise to +-1: dx is ~0 identically
    x = data.draw(float_arrays((1, rows, C), bound))
    # ill-conditioned: LayerNorm's curvature grows as 1/std^3; rows of tiny spread are filtered
    assume(x.var(axis=-1).min() >= 1e-2)
    return x, C


@given(data=st.data(), seed=seeds)
def test_layernorm_backward_matches_fd(ref, data, seed):
    L = ref.layers
    x, C = layernorm_inputs(data)
    w = data.draw(float_arrays((C,), 3.0))
    b = data.draw(float_arrays((C,), 3.0))
    out, cache = L.layernorm_forward(x, w, b)
    assert out.shape == x.shape and out.dtype == x.dtype
    dout = data.draw(float_arrays(out.shape, 1.0))
    dx, dw, db = L.layernorm_backward(dout, cache, w)
    assert_backward_matches_fd(lambda x, w, b: L.layernorm_forward(x, w, b)[0],
                               {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, dout, seed)


@given(data=st.data(), seed=seeds)
def test_impl_layernorm_backward_matches_fd(impl_ln, data, seed):
    impl = impl_ln
    x, C = layernorm_inputs(data)
    w = data.draw(float_arrays((C,), 3.0))
    b = data.draw(float_arrays((C,), 3.0))
    out, xhat, rstd = impl.layernorm(x, w, b)
    assert out.shape == x.shape and out.dtype == x.dtype
    dout = data.draw(float_arrays(out.shape, 1.0))
    dx, dw, db = impl.layernorm_back(dout, xhat, rstd, w)
    assert_backward_matches_fd(lambda x, w, b: impl.layernorm(x, w, b)[0],
                               {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, dout, seed)


@given(d=dims(), c_out=st.integers(1, 8), bias=st.booleans(), data=st.data(), seed=seeds)
def test_linear_backward_matches_fd(ref, d, c_out, bias, data, seed):
    L = ref.layers
    x = data.draw(float_arrays((d.B, d.T, d.C), 3.0))
    W = data.draw(float_arrays((d.C, c_out), 3.0))
    b = data.draw(float_arrays((c_out,), 3.0)) if bias else None
    out, cache = L.linear_forward(x, W, b)
    assert out.shape == (d.B, d.T, c_out) and out.dtype == np.float64
    dout = data.draw(float_arrays(out.shape, 1.0))
    dx, dW, db = L.linear_backward(dout, cache, W)
    inputs, grads = {"x": x, "W": W}, {"x": dx, "W": dW}
    if bias:
        inputs["b"], grads["b"] = b, db
    assert_backward_matches_fd(lambda x, W, b=None: L.linear_forward(x, W, b)[0], inputs, grads,
                               dout, seed)


@given(d=dims(), data=st.data(), seed=seeds)
def test_attention_backward_matches_fd(ref, d, data, seed):
    L = ref.layers
    qkv = data.draw(float_arrays((d.B, d.T, 3 * d.C), 2.0))
    y, cache = L.attention_forward(qkv, d.n_head)
    assert y.shape == (d.B, d.T, d.C) and y.dtype == np.float64
    dout = data.draw(float_arrays(y.shape, 1.0))
    dqkv = L.attention_backward(dout, cache, d.n_head)
    # y = att @ v rounds at the size of v, and att at the size of the scores q.k/sqrt(HS)
    v = qkv[..., 2 * d.C:]
    scores = float(np.abs(qkv).max()) ** 2 * d.HS ** 0.5
    assert_backward_matches_fd(lambda qkv: L.attention_forward(qkv, d.n_head)[0],
                               {"qkv": qkv}, {"qkv": dqkv}, dout, seed,
                               size=float(np.abs(v).max()) * (1.0 + scores))


@given(rows=st.integers(1, 6), n=st.integers(1, 12), data=st.data(), seed=seeds)
def test_softmax_backward_matches_fd(ref, rows, n, data, seed):
    L = ref.layers
    x = data.draw(float_arrays((rows, n), 5.0))
    s = L.softmax_forward(x)
    dout = data.draw(float_arrays(s.shape, 1.0))
    dx = L.softmax_backward(dout, s)
    # probabilities round at the size of 1 (they are normalised by a sum of order 1)
    assert_backward_matches_fd(L.softmax_forward, {"x": x}, {"x": dx}, dout, seed, size=1.0)


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 16)), data=st.data(),
       seed=seeds)
def test_gelu_backward_matches_fd(ref, shape, data, seed):
    L = ref.layers
    x = data.draw(float_arrays(shape, 6.0))
    out, cache = L.gelu_forward(x)
    dout = data.draw(float_arrays(shape, 1.0))
    dx = L.gelu_backward(dout, cache)
    # 0.5 x (1 + tanh u) rounds at the size of x, even where the result is tiny
    assert_backward_matches_fd(lambda x: L.gelu_forward(x)[0], {"x": x}, {"x": dx}, dout, seed,
                               size=np.abs(x))


@given(d=dims(), data=st.data(), seed=seeds)
def test_crossentropy_backward_matches_fd(ref, d, data, seed):
    L = ref.layers
    logits = data.draw(float_arrays((d.B, d.T, d.vocab_size), 5.0))
    targets = data.draw(token_ids((d.B, d.T), d.vocab_size))
    loss, cache = L.crossentropy_forward(logits, targets)
    dlogits = L.crossentropy_backward(cache)
    # log-sum-exp rounds at the size of the logits, whatever the loss
    assert_backward_matches_fd(lambda logits: np.asarray(L.crossentropy_forward(logits, targets)[0]),
                               {"logits": logits}, {"logits": dlogits}, np.float64(1.0), seed,
                               size=float(np.abs(logits).max()) + math.log(d.vocab_size))


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 8)), data=st.data(),
       seed=seeds)
def test_residual_backward_matches_fd(ref, shape, data, seed):
    L = ref.layers
    x, fx = data.draw(float_arrays(shape, 3.0)), data.draw(float_arrays(shape, 3.0))
    dout = data.draw(float_arrays(shape, 1.0))
    dx, dfx = L.residual_backward(dout)
    assert_backward_matches_fd(L.residual_forward, {"x": x, "fx": fx}, {"x": dx, "fx": dfx}, dout,
                               seed)


# ============================================================================ softmax

@given(rows=st.integers(1, 8), n=st.integers(1, 16), data=st.data())
def test_softmax_rows_sum_to_one_and_ignore_a_constant_per_row(ref, rows, n, data):
    L = ref.layers
    x = data.draw(float_arrays((rows, n), 50.0))
    c = data.draw(float_arrays((rows, 1), 100.0))
    s = L.softmax_forward(x)
    assert s.shape == x.shape and s.dtype == x.dtype
    assert (s >= 0).all() and (s <= 1).all()
    # a sum of n terms in [0, 1] with relative rounding ~eps each
    assert np.abs(s.sum(axis=-1) - 1.0).max() <= 4 * n * EPS64
    # x + c rounds by eps/2 |x + c| per entry, which moves softmax by at most eps |x + c|
    # (|d s| <= 2 max|d x| * s(1 - s) <= max|d x|), plus a few eps from each evaluation
    tol = EPS64 * (float(np.abs(x + c).max()) + 8.0)
    assert np.abs(L.softmax_forward(x + c) - s).max() <= tol


@given(rows=st.integers(1, 8), n=st.integers(1, 16), data=st.data())
def test_softmax_backward_rows_sum_to_zero(ref, rows, n, data):
    """sum_j dx_j = sum_j s_j (dout_j - <dout, s>) = <dout, s> (1 - sum s) = 0."""
    L = ref.layers
    x = data.draw(float_arrays((rows, n), 10.0))
    dout = data.draw(float_arrays((rows, n), 10.0))
    s = L.softmax_forward(x)
    dx = L.softmax_backward(dout, s)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    assert np.abs(dx.sum(axis=-1)).max() <= 8 * n * EPS64 * float(np.abs(dout).max())


# ============================================================================ attention, causality

@given(d=dims(), data=st.data())
def test_attention_is_causal(ref, d, data):
    """y[:, :t+1] ignores qkv[:, t+1:]; and with dy zero after t, dqkv is exactly zero after t."""
    assume(d.T >= 2)
    L = ref.layers
    t = data.draw(st.integers(0, d.T - 2))
    qkv = data.draw(float_arrays((d.B, d.T, 3 * d.C), 3.0))
    changed = qkv.copy()
    changed[:, t + 1:] = data.draw(float_arrays((d.B, d.T - t - 1, 3 * d.C), 3.0))
    y, cache = L.attention_forward(qkv, d.n_head)
    y2, _ = L.attention_forward(changed, d.n_head)
    assert y.shape == (d.B, d.T, d.C)
    # masked weights are exact zeros: the past sees the future's values times 0 (measured: bit-identical;
    # 1e-14 only guards against a BLAS kernel's choices)
    assert normwise(y2[:, :t + 1], y[:, :t + 1]) <= 1e-14
    att = cache["att"]
    assert (att[..., np.triu_indices(d.T, 1)[0], np.triu_indices(d.T, 1)[1]] == 0).all()
    assert np.abs(att.sum(axis=-1) - 1).max() <= 4 * d.T * EPS64
    dy = data.draw(float_arrays((d.B, d.T, d.C), 1.0))
    dy[:, t + 1:] = 0.0
    dqkv = L.attention_backward(dy, cache, d.n_head)
    assert dqkv.shape == qkv.shape
    assert (dqkv[:, t + 1:] == 0).all(), "the gradient of the past leaks into future positions"


def per_position_loss(logits, targets):
    """-log softmax(logits)[target] at each (b, t), computed here independently of both models."""
    m = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=-1)) + m[..., 0]
    return lse - np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


def time_slice(name, a, t):
    """Positions <= t of a cached activation (B, T, ...) or of attention weights (B, NH, T, T)."""
    return a[:, :, :t + 1, :t + 1] if name.endswith("attn.att") else a[:, :t + 1]


@fewer_examples(2)
@given(d=dims(max_block=8, max_vocab=16), n_layer=st.integers(1, 2), seed=seeds, data=st.data())
def test_model_is_causal(gpt, d, n_layer, seed, data):
    """Every activation, the logits and the per-position loss at positions <= t are unchanged when
    the tokens (and targets) after t change; the loss of the prefix alone is their mean."""
    assume(d.T >= 2)
    config = d.config(n_layer)
    params = random_params(gpt, config, seed, weight_std=0.3)
    t = data.draw(st.integers(0, d.T - 2))
    idx = data.draw(token_ids((d.B, d.T), d.vocab_size))
    targets = data.draw(token_ids((d.B, d.T), d.vocab_size))
    idx2, targets2 = idx.copy(), targets.copy()
    idx2[:, t + 1:] = data.draw(token_ids((d.B, d.T - t - 1), d.vocab_size))
    targets2[:, t + 1:] = data.draw(token_ids((d.B, d.T - t - 1), d.vocab_size))
    assume((idx2 != idx).any())
    _, cache = gpt.forward(params, idx, targets, config)
    _, cache2 = gpt.forward(params, idx2, targets2, config)
    # Same shapes, and the future enters the past only times an exact 0: measured bit-identical for
    # both modules over 1500 draws. 1e-14 is a guard for BLAS kernels only; a leak moves things by
    # ~1e-3 (weights ~0.3).
    for name in activation_names(n_layer):
        if name in cache:
            a, b = time_slice(name, cache[name], t), time_slice(name, cache2[name], t)
            assert normwise(b, a) <= 1e-14, f"{name} at positions <= {t} depends on later tokens"
    losses = per_position_loss(cache["logits"], targets)
    losses2 = per_position_loss(cache2["logits"], targets2)
    assert normwise(losses2[:, :t + 1], losses[:, :t + 1]) <= 1e-14
    # The prefix alone runs matmuls of other shapes, which round differently: measured worst 9.3e-15
    # (logits, normwise) and 1.1e-15 (loss, relative) over 1500 draws; ~100x headroom.
    prefix_loss, prefix_cache = gpt.forward(params, idx[:, :t + 1], targets[:, :t + 1], config)
    assert normwise(prefix_cache["logits"], cache["logits"][:, :t + 1]) <= 1e-12
    assert abs(prefix_loss - losses[:, :t + 1].mean()) <= 1e-13 * max(1.0, abs(prefix_loss))


@fewer_examples(2)
@given(d=dims(max_vocab=16, min_embd=3), n_layer=st.integers(1, 2), seed=seeds, data=st.data())
def test_model_key_bias_gradient_is_zero(gpt, d, n_layer, seed, data):
    """Softmax ignores a constant per row, and the key bias adds q_t . b_k to every score of row t:
    the gradient of c_attn.bias[C:2C] is 0 in exact arithmetic (the rows of the softmax backward sum
    to 0). What is left is rounding, against the size of the query and value bias gradients."""
    config = d.config(n_layer)
    params = random_params(gpt, config, seed, weight_std=0.3)
    idx = data.draw(token_ids((d.B, d.T), d.vocab_size))
    targets = data.draw(token_ids((d.B, d.T), d.vocab_size))
    _, cache = gpt.forward(params, idx, targets, config)
    grads = gpt.backward(params, cache, config)
    C = d.C
    for i in range(n_layer):
        g = grads[f"h.{i}.attn.c_attn.bias"]
        scale = max(np.abs(g[:C]).max(), np.abs(g[2 * C:]).max())
        # measured worst 7.1e-16 x scale over 3000 draws x 2 modules; 1e-13 leaves 140x headroom
        assert np.abs(g[C:2 * C]).max() <= 1e-13 * scale, f"h.{i}: key bias gradient is not ~0"


@fewer_examples(2)
@given(d=dims(max_block=8), n_layer=st.integers(1, 2), seed=seeds, data=st.data())
def test_model_attention_weights_are_causal_distributions(gpt, d, n_layer, seed, data):
    """Each row of every head's attention in the forward cache is a probability distribution over
    positions <= t: non-negative, exactly 0 after t, summing to 1 (impl's softmax, seen in its cache)."""
    config = d.config(n_layer)
    params = random_params(gpt, config, seed, weight_std=1.0)
    idx = data.draw(token_ids((d.B, d.T), d.vocab_size))
    _, cache = gpt.forward(params, idx, None, config)
    future = np.triu(np.ones((d.T, d.T), dtype=bool), k=1)
    for i in range(n_layer):
        if f"h.{i}.attn.att" not in cache:
            pytest.skip("the implementation records no attn.att tap")
        att = cache[f"h.{i}.attn.att"]
        assert att.shape == (d.B, d.n_head, d.T, d.T) and att.dtype == np.float64
        assert (att >= 0).all() and (att[..., future] == 0).all()
        assert np.abs(att.sum(axis=-1) - 1.0).max() <= 4 * d.T * EPS64


# ============================================================================ layernorm

def layernorm_of(module):
    """(x, w, b) -> out for either module: reference's layer, or impl's own helper (skipped for an
    implementation that has shrunk it away)."""
    if hasattr(module, "layers"):
        return lambda x, w, b: module.layers.layernorm_forward(x, w, b)[0]
    if not callable(getattr(module, "layernorm", None)):
        pytest.skip("the implementation exposes no layernorm(x, w, b)")
    return lambda x, w, b: module.layernorm(x, w, b)[0]


@pytest.fixture(scope="session")
def impl_ln(impl):
    """impl, where it still has its own layernorm(x, w, b) and layernorm_back(dout, xhat, rstd, w)."""
    if not (callable(getattr(impl, "layernorm", None)) and callable(getattr(impl, "layernorm_back", None))):
        pytest.skip("the implementation exposes no layernorm / layernorm_back")
    return impl


@given(rows=st.integers(1, 8), C=st.integers(2, 16), data=st.data())
def test_layernorm_normalises_rows(gpt, rows, C, data):
    """Unit weight, zero bias: each row has mean 0 and variance var/(var + eps) = 1 - eps/(var + eps)."""
    x = data.draw(float_arrays((2, rows, C), 10.0))
    var = x.var(axis=-1)
    assume(var.min() >= 1.0)           # then 1 - var_out = eps/(var + eps) < 1e-5: the eps, no more
    out = layernorm_of(gpt)(x, np.ones(C), np.zeros(C))
    assert out.shape == x.shape and out.dtype == x.dtype
    # |mean| of C numbers of size <= sqrt(C), each off by a few eps
    assert np.abs(out.mean(axis=-1)).max() <= 8 * C * EPS64
    assert np.abs(out.var(axis=-1) - var / (var + LN_EPS)).max() <= 16 * C * EPS64
    assert np.abs(out.var(axis=-1) - 1.0).max() <= LN_EPS / var.min() + 16 * C * EPS64


@given(rows=st.integers(1, 8), C=st.integers(2, 16), data=st.data())
def test_layernorm_ignores_row_shift_and_positive_row_scale(gpt, rows, C, data):
    x = data.draw(float_arrays((1, rows, C), 10.0))
    shift = data.draw(float_arrays((1, rows, 1), 10.0))
    scale = data.draw(st.lists(positive_floats(0.5, 2.0), min_size=rows, max_size=rows))
    scale = np.array(scale).reshape(1, rows, 1)
    w, b = data.draw(float_arrays((C,), 3.0)), data.draw(float_arrays((C,), 3.0))
    var = x.var(axis=-1, keepdims=True)
    assume(var.min() >= 1.0)
    ln = layernorm_of(gpt)
    out, out2 = ln(x, w, b), ln(x * scale + shift, w, b)
    # With eps, (out - b) scales by sqrt((var + eps)/(var + eps/s^2)), off by <= eps |1 - 1/s^2|/(2 var).
    # Rounding: x*s + c loses eps (|c| + s|x|) absolutely before the mean is subtracted, i.e.
    # eps (|c| + s|x|)/(s std) relative to xhat; a few such roundings, times |w|, plus |b|'s.
    eps_bound = LN_EPS * np.abs(1 - 1 / scale**2) / (2 * var) * np.abs(out - b)
    rounding = 16 * EPS64 * ((np.abs(shift) + scale * np.abs(x).max(-1, keepdims=True))
                             / (scale * np.sqrt(var)) * np.abs(w) * np.sqrt(C) + np.abs(b))
    assert (np.abs(out2 - out) <= eps_bound + rounding).all()


@given(rows=st.integers(1, 8), C=st.integers(2, 16), data=st.data())
def test_reference_layernorm_without_eps_is_exactly_invariant(ref, rows, C, data):
    """With eps = 0 the invariance is exact up to rounding: a row's shift and positive scale vanish."""
    x = data.draw(float_arrays((1, rows, C), 10.0))
    shift = data.draw(float_arrays((1, rows, 1), 10.0))
    scale = np.array(data.draw(st.lists(positive_floats(0.5, 2.0), min_size=rows, max_size=rows)))
    assume(x.var(axis=-1).min() >= 1.0)
    f = lambda x: ref.layers.layernorm_forward(x, np.ones(C), np.zeros(C), eps=0.0)[0]
    out, out2 = f(x), f(x * scale.reshape(1, rows, 1) + shift)
    # measured worst 4.3e-15 over 6000 draws (x in [-10, 10], shift in [-10, 10], scale in [0.5, 2]);
    # 5e-14 leaves ~10x headroom
    assert np.abs(out2 - out).max() <= 5e-14


# ============================================================================ gelu

def gelu_closed_form(x):
    """GPT-2's tanh GELU, one Python float at a time (math.tanh, not numpy)."""
    c = math.sqrt(2.0 / math.pi)
    return np.vectorize(lambda v: 0.5 * v * (1.0 + math.tanh(c * (v + 0.044715 * v ** 3))))(x)


# 1 + tanh(u) cancels for negative x: both sides carry an absolute error ~eps |x| there, hence the
# tolerance in units of eps |x| rather than ULPs of the (tiny) result. Measured worst 1.7 eps |x|
# (closed form, reference and impl's cache) and 1.0 eps |x| (mirror), 300k values; 4 eps |x|.
GELU_ATOL_EPS = 4.0


@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 16)), data=st.data())
def test_gelu_matches_closed_form_and_is_x_minus_its_mirror(ref, shape, data):
    L = ref.layers
    x = data.draw(float_arrays(shape, 20.0))
    out, _ = L.gelu_forward(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    tol = GELU_ATOL_EPS * EPS64 * np.abs(x) + 1e-300
    assert (np.abs(out - gelu_closed_form(x)) <= tol).all()
    # gelu(x) - gelu(-x) = 0.5 x (1 + tanh u) + 0.5 x (1 - tanh u) = x, tanh being odd
    mirrored, _ = L.gelu_forward(-x)
    assert (np.abs(out - mirrored - x) <= tol).all()


@fewer_examples(2)
@given(d=dims(), n_layer=st.integers(1, 2), seed=seeds, data=st.data())
def test_model_gelu_matches_closed_form(gpt, d, n_layer, seed, data):
    """The MLP's activation in the forward cache is the closed form of its input (impl has no gelu
    of its own to call)."""
    config = d.config(n_layer)
    params = random_params(gpt, config, seed, weight_std=1.0)
    idx = data.draw(token_ids((d.B, d.T), d.vocab_size))
    _, cache = gpt.forward(params, idx, None, config)
    for i in range(n_layer):
        if f"h.{i}.mlp.fc" not in cache or f"h.{i}.mlp.gelu" not in cache:
            pytest.skip("the implementation records no mlp.fc / mlp.gelu taps")
        fc, act = cache[f"h.{i}.mlp.fc"], cache[f"h.{i}.mlp.gelu"]
        assert act.shape == fc.shape == (d.B, d.T, 4 * d.C)
        assert (np.abs(act - gelu_closed_form(fc)) <= GELU_ATOL_EPS * EPS64 * np.abs(fc) + 1e-300).all()


# ============================================================================ cross-entropy

@given(d=dims(max_vocab=64), data=st.data())
def test_crossentropy_properties(ref, d, data):
    """loss >= 0; uniform logits give log V; each row of the gradient sums to 0."""
    L = ref.layers
    V = d.vocab_size
    logits = data.draw(float_arrays((d.B, d.T, V), 30.0))
    targets = data.draw(token_ids((d.B, d.T), V))
    loss, cache = L.crossentropy_forward(logits, targets)
    assert np.ndim(loss) == 0 and float(loss) >= 0.0
    # against the per-position losses computed here: the mean of B*T terms of size <= 60 + log V
    assert abs(float(loss) - per_position_loss(logits, targets).mean()) <= 1e-13 * (60 + math.log(V))
    dlogits = L.crossentropy_backward(cache)
    assert dlogits.shape == logits.shape and dlogits.dtype == logits.dtype
    # (softmax - onehot)/(B T): V probabilities summing to 1 within V eps, minus exactly 1
    assert np.abs(dlogits.sum(axis=-1)).max() <= 4 * V * EPS64 / (d.B * d.T)
    row = data.draw(float_arrays((d.B, d.T, 1), 1e3))
    uniform, _ = L.crossentropy_forward(np.broadcast_to(row, logits.shape).copy(), targets)
    assert abs(float(uniform) - math.log(V)) <= 4 * EPS64 * math.log(V)


@fewer_examples(2)
@given(d=dims(max_vocab=64), n_layer=st.integers(1, 2), seed=seeds, data=st.data())
def test_model_loss_is_nonnegative_and_log_v_for_uniform_logits(gpt, d, n_layer, seed, data):
    config = d.config(n_layer)
    params = random_params(gpt, config, seed, weight_std=1.0)
    idx = data.draw(token_ids((d.B, d.T), d.vocab_size))
    targets = data.draw(token_ids((d.B, d.T), d.vocab_size))
    loss, cache = gpt.forward(params, idx, targets, config)
    assert isinstance(loss, float) and loss >= 0.0
    assert abs(loss - per_position_loss(cache["logits"], targets).mean()) <= 1e-12 * max(1.0, loss)
    # wte = 0 (lm_head is tied to it) makes every logit 0: the loss is exactly log V
    params["wte"] = np.zeros_like(params["wte"])
    loss, _ = gpt.forward(params, idx, targets, config)
    assert abs(loss - math.log(d.vocab_size)) <= 4 * EPS64 * math.log(d.vocab_size)


# ============================================================================ embedding

@given(d=dims(), n_ids=st.integers(1, 3), data=st.data())
def test_embedding_backward_accumulates_repeated_ids_exactly(ref, d, n_ids, data):
    """dwte[v] is the sum of dout over every position holding v. Small-integer douts make every sum
    exact in any order, so the comparison is bit for bit."""
    assume(d.B * d.T >= 2)
    L = ref.layers
    idx = data.draw(token_ids((d.B, d.T), min(n_ids, d.vocab_size)))    # few ids: repeats
    assume(len(np.unique(idx)) < idx.size)
    wte = data.draw(float_arrays((d.vocab_size, d.C), 1.0))
    wpe = data.draw(float_arrays((d.block_size, d.C), 1.0))
    out, cache = L.embedding_forward(idx, wte, wpe)
    assert out.shape == (d.B, d.T, d.C)
    np.testing.assert_array_equal(out, wte[idx] + wpe[:d.T])
    dout = data.draw(small_int_arrays(out.shape))
    dwte, dwpe = L.embedding_backward(dout, cache, wte, wpe)
    assert dwte.shape == wte.shape and dwpe.shape == wpe.shape
    expected_dwte, expected_dwpe = np.zeros_like(wte), np.zeros_like(wpe)
    for b in range(d.B):
        for t in range(d.T):
            expected_dwte[idx[b, t]] += dout[b, t]
            expected_dwpe[t] += dout[b, t]
    np.testing.assert_array_equal(dwte, expected_dwte)
    np.testing.assert_array_equal(dwpe, expected_dwpe)


@fewer_examples(2)
@given(d=dims(max_vocab=16, min_embd=3), n_layer=st.integers(1, 2), seed=seeds, data=st.data())
def test_model_wte_gradient_accumulates_repeated_ids(gpt, d, n_layer, seed, data):
    """Whole-model identity: sum_v dwte[v] = sum_t dwpe[t]. The embedding adds dx[b, t] to both
    dwte[idx[b, t]] and dwpe[t]; the tied lm_head adds sum_v dlogits[., v] = 0 times ln_f. A backward
    that drops repeated ids (a fancy-index `+=`) loses terms on the left only."""
    assume(d.B * d.T >= 2)
    config = d.config(n_layer)
    params = random_params(gpt, config, seed, weight_std=0.3)
    n_ids = data.draw(st.integers(1, min(3, d.vocab_size)))
    idx = data.draw(token_ids((d.B, d.T), n_ids))
    assume(len(np.unique(idx)) < idx.size)
    targets = data.draw(token_ids((d.B, d.T), d.vocab_size))
    _, cache = gpt.forward(params, idx, targets, config)
    grads = gpt.backward(params, cache, config)
    lhs, rhs = grads["wte"].sum(axis=0), grads["wpe"].sum(axis=0)
    # measured worst 1.9e-15 relative to the sizes summed, over 600 draws x 2 modules; 50x headroom.
    # A dropped repeat loses a whole dx[b, t] (~1e-3 of that scale or more)
    scale = np.abs(grads["wte"]).sum(axis=0).max() + np.abs(grads["wpe"]).sum(axis=0).max()
    assert np.abs(lhs - rhs).max() <= 1e-13 * scale


# ============================================================================ linear

@given(d=dims(), c_out=st.integers(1, 8), bias=st.booleans(), data=st.data())
def test_linear_backward_satisfies_matmul_identities(ref, d, c_out, bias, data):
    """dx = dout W^T, dW = x^T dout (over all positions), db = sum dout, and the adjoint identity
    <dout, dx' W + x dW' + db'> = <dx, dx'> + <dW, dW'> + <db, db'> for any directions.
    Small-integer inputs make every product and sum exact: equality is bit for bit."""
    L = ref.layers
    x = data.draw(small_int_arrays((d.B, d.T, d.C)))
    W = data.draw(small_int_arrays((d.C, c_out)))
    b = data.draw(small_int_arrays((c_out,))) if bias else None
    out, cache = L.linear_forward(x, W, b)
    assert out.shape == (d.B, d.T, c_out) and out.dtype == np.float64
    np.testing.assert_array_equal(out, np.einsum("btc,cd->btd", x, W) + (b if bias else 0.0))
    dout = data.draw(small_int_arrays(out.shape))
    dx, dW, db = L.linear_backward(dout, cache, W)
    assert dx.shape == x.shape and dW.shape == W.shape and db.shape == (c_out,)
    np.testing.assert_array_equal(dx, np.einsum("btd,cd->btc", dout, W))
    np.testing.assert_array_equal(dW, np.einsum("btc,btd->cd", x, dout))
    np.testing.assert_array_equal(db, dout.sum(axis=(0, 1)))
    ex, eW, eb = (data.draw(small_int_arrays(s)) for s in (x.shape, W.shape, (c_out,)))
    eb = eb if bias else np.zeros(c_out)
    lhs = (dout * (np.einsum("btc,cd->btd", ex, W) + np.einsum("btc,cd->btd", x, eW) + eb)).sum()
    assert lhs == (dx * ex).sum() + (dW * eW).sum() + (db * eb).sum()


# ============================================================================ AdamW, clipping, schedule

@st.composite
def adamw_hparams(draw):
    lr = draw(positive_floats(1e-5, 1.0))
    return {"learning_rate": lr, "min_lr": lr / 10, "warmup_iters": 10, "lr_decay_iters": 100,
            "weight_decay": draw(st.sampled_from([0.0, 0.1]) | positive_floats(1e-3, 0.5)),
            "beta1": draw(positive_floats(0.5, 0.99)), "beta2": draw(positive_floats(0.9, 0.9999)),
            "eps": draw(st.sampled_from([1e-8]) | positive_floats(1e-8, 1.0)),
            "grad_clip": draw(st.sampled_from([0.0, 1.0]) | positive_floats(1e-2, 10.0))}


ADAMW_SHAPES = {"h.0.attn.c_attn.weight": (3, 4), "h.0.attn.c_attn.bias": (4,),
                "h.0.ln_1.weight": (3,), "h.0.ln_1.bias": (3,), "wte": (5, 3)}


def adamw_closed_form(params, grads_per_step, first_step, lr, hp):
    """nanoGPT/torch semantics written out: clip by the global norm (coef = clip/(norm + 1e-6), at
    most 1), moments, bias correction with t = step + 1, decoupled decay on ndim >= 2 only."""
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    norms, moved = [], 0.0
    for n, grads in enumerate(grads_per_step):
        t = first_step + n + 1
        norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
        norms.append(norm)
        coef = min(1.0, hp["grad_clip"] / (norm + 1e-6)) if hp["grad_clip"] > 0 else 1.0
        for k in p:
            g = grads[k] * coef
            m[k] = hp["beta1"] * m[k] + (1 - hp["beta1"]) * g
            v2[k] = hp["beta2"] * v2[k] + (1 - hp["beta2"]) * g * g
            decay = hp["weight_decay"] if p[k].ndim >= 2 else 0.0
            update = lr * (m[k] / (1 - hp["beta1"] ** t)) / (
                np.sqrt(v2[k] / (1 - hp["beta2"] ** t)) + hp["eps"])
            p[k] = p[k] * (1 - lr * decay) - update
            moved = max(moved, float(np.abs(update).max()))
    return p, norms, moved


@given(hp=adamw_hparams(), first_step=st.integers(0, 1000), n_steps=st.integers(1, 2),
       grad_bound=st.sampled_from([1e-3, 1.0, 100.0]), data=st.data())
def test_adamw_steps_equal_closed_form(gpt, hp, first_step, n_steps, grad_bound, data):
    params = {k: data.draw(float_arrays(s, 1.0)) for k, s in ADAMW_SHAPES.items()}
    steps = [{k: data.draw(float_arrays(s, grad_bound)) for k, s in ADAMW_SHAPES.items()}
             for _ in range(n_steps)]
    lr = data.draw(positive_floats(1e-5, 1.0))
    expected, norms, moved = adamw_closed_form(params, steps, first_step, lr, hp)
    state = {}
    for n, grads in enumerate(steps):
        norm = gpt.adamw_step(params, {k: g.copy() for k, g in grads.items()}, state,
                              first_step + n, lr, hp)
        assert abs(norm - norms[n]) <= 1e-14 * norms[n]          # the norm before clipping
    for k in params:
        assert params[k].shape == ADAMW_SHAPES[k] and params[k].dtype == np.float64
        # a few roundings of |p| and of the largest update (the moments, square root and bias
        # corrections each round by ~eps relative); measured worst 1.01 eps (|p| + n update) over 3000
        # draws (impl; the reference computes the closed form's very operations: 0); 16x headroom
        tol = 16 * EPS64 * (np.abs(expected[k]).max() + n_steps * moved)
        assert np.abs(params[k] - expected[k]).max() <= tol, k


@given(seed=seeds, step=st.integers(0, 100), hp=adamw_hparams())
def test_adamw_decays_only_matrices(gpt, seed, step, hp):
    """With zero gradients an AdamW step is pure decay: every 2-D tensor (matmul weights and both
    embeddings) is multiplied by 1 - lr wd; biases and LayerNorm parameters stay bit-identical."""
    config = {"vocab_size": 7, "block_size": 4, "n_layer": 2, "n_head": 2, "n_embd": 4}
    params = random_params(gpt, config, seed)
    before = {k: v.copy() for k, v in params.items()}
    hp = {**hp, "weight_decay": max(hp["weight_decay"], 0.1)}
    lr = hp["learning_rate"]
    gpt.adamw_step(params, {k: np.zeros_like(v) for k, v in params.items()}, {}, step, lr, hp)
    decayed = [k for k in params if params[k].ndim >= 2]
    assert set(decayed) == {"wte", "wpe"} | {f"h.{i}.{n}.weight" for i in range(2)
                                             for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                       "mlp.c_proj")}
    for k in params:
        if k in decayed:
            np.testing.assert_allclose(params[k], before[k] * (1 - lr * hp["weight_decay"]),
                                       rtol=4 * EPS64, atol=0, err_msg=k)
        else:
            assert k.endswith(".bias") or ".ln_" in k or k.startswith("ln_f"), k
            np.testing.assert_array_equal(params[k], before[k], err_msg=f"{k} was decayed")


@given(clip=positive_floats(1e-2, 10.0), grad_bound=st.sampled_from([1e-2, 1.0, 100.0]),
       data=st.data())
def test_clip_grad_norm_rescales_to_the_threshold(ref, clip, grad_bound, data):
    grads = {k: data.draw(float_arrays(s, grad_bound)) for k, s in ADAMW_SHAPES.items()}
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    assume(norm > 0)
    clipped, reported = ref.training.clip_grad_norm(grads, clip)
    assert reported == pytest.approx(norm, rel=1e-15)
    new_norm = math.sqrt(sum(float((g ** 2).sum()) for g in clipped.values()))
    if norm <= clip:            # coef = clip/(norm + 1e-6) may still be < 1 by <= 1e-6/norm: torch's
        assert new_norm == pytest.approx(norm * min(1.0, clip / (norm + 1e-6)), rel=1e-14)
    else:
        coef = clip / (norm + 1e-6)
        assert new_norm == pytest.approx(clip * norm / (norm + 1e-6), rel=1e-14)
        assert abs(new_norm - clip) <= clip * 1e-6 / norm * (1 + 1e-9) + 1e-14 * clip
        for k in grads:       # one factor for every tensor: the direction is kept
            np.testing.assert_allclose(clipped[k], grads[k] * coef, rtol=4 * EPS64, atol=0)
    same, _ = ref.training.clip_grad_norm(grads, 0.0)          # max_norm <= 0 disables clipping
    for k in grads:
        np.testing.assert_array_equal(same[k], grads[k])


@given(clip=positive_floats(1e-2, 5.0), grad_bound=st.sampled_from([1e-2, 1.0, 100.0]),
       data=st.data())
def test_adamw_step_clips_to_the_threshold(gpt, clip, grad_bound, data):
    """Seen through the contract: at step 0 with eps = 1, lr = 1 and no decay, a parameter moves by
    u = g_c / (|g_c| + 1), so |g_c| = |u| / (1 - |u|) recovers the clipped gradient."""
    hp = {"learning_rate": 1.0, "min_lr": 0.1, "warmup_iters": 0, "lr_decay_iters": 10,
          "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.95, "eps": 1.0, "grad_clip": clip}
    params = {k: np.zeros(s) for k, s in ADAMW_SHAPES.items()}
    grads = {k: data.draw(float_arrays(s, grad_bound)) for k, s in ADAMW_SHAPES.items()}
    norm = gpt.adamw_step(params, grads, {}, 0, 1.0, hp)
    u = np.concatenate([-params[k].ravel() for k in ADAMW_SHAPES])
    g_c = u / (1 - np.abs(u))
    expected = norm * min(1.0, clip / (norm + 1e-6))
    # recovering |g_c| amplifies a rounding of u by (1 + |g_c|)^2 <= (1 + clip)^2 = 36
    assert np.linalg.norm(g_c) == pytest.approx(expected, rel=64 * 36 * EPS64, abs=1e-300)
    if norm > clip:
        assert abs(np.linalg.norm(g_c) - clip) <= clip * (1e-6 / norm + 64 * 36 * EPS64)


@given(lr=positive_floats(1e-5, 1.0), min_frac=st.sampled_from([0.0, 0.1]) | positive_floats(0, 1),
       warmup=st.integers(0, 50), decay=st.integers(1, 200), tail=st.integers(1, 1000))
def test_lr_schedule(gpt, lr, min_frac, warmup, decay, tail):
    """Linear warmup up to learning_rate, cosine decay that reaches min_lr at lr_decay_iters exactly,
    then min_lr for ever."""
    min_lr = lr * min_frac
    hp = {"learning_rate": lr, "min_lr": min_lr, "warmup_iters": warmup,
          "lr_decay_iters": warmup + decay}
    end = warmup + decay
    lrs = [gpt.lr_at(s, hp) for s in range(end + 1)]
    assert all(isinstance(x, float) for x in lrs)
    for s in range(warmup):                                    # rises linearly: lr (s+1)/(w+1)
        assert lrs[s] == pytest.approx(lr * (s + 1) / (warmup + 1), rel=4 * EPS64)
        assert lrs[s + 1] > lrs[s]
        if s + 1 < warmup:
            assert lrs[s + 1] - lrs[s] == pytest.approx(lr / (warmup + 1), rel=1e-9)
    assert lrs[warmup] == pytest.approx(lr, rel=4 * EPS64)     # the top of the warmup
    for s in range(warmup, end + 1):                           # cosine, never rising
        cos = 0.5 * (1 + math.cos(math.pi * (s - warmup) / decay))
        assert lrs[s] == pytest.approx(min_lr + cos * (lr - min_lr), rel=8 * EPS64, abs=8 * EPS64 * lr)
        assert min_lr - 4 * EPS64 * lr <= lrs[s] <= lr * (1 + 4 * EPS64)
        if s > warmup:
            assert lrs[s] <= lrs[s - 1] + 4 * EPS64 * lr
    assert lrs[end] == pytest.approx(min_lr, abs=4 * EPS64 * lr)   # reaches min_lr at lr_decay_iters
    for s in (end + 1, end + tail, end + 10 * tail):                # and stays there
        assert gpt.lr_at(s, hp) == min_lr


# ============================================================================ impl == reference, layer by layer

@given(data=st.data())
def test_impl_layernorm_equals_reference(impl_ln, ref, data):
    impl = impl_ln
    rows, C = data.draw(st.integers(1, 8)), data.draw(st.integers(2, 16))
    x = data.draw(float_arrays((2, rows, C), 10.0))
    assume(x.var(axis=-1).min() >= 1e-2)
    w, b = data.draw(float_arrays((C,), 3.0)), data.draw(float_arrays((C,), 3.0))
    dout = data.draw(float_arrays(x.shape, 1.0))
    out, xhat, rstd = impl.layernorm(x, w, b)
    ref_out, cache = ref.layers.layernorm_forward(x, w, b)
    got = impl.layernorm_back(dout, xhat, rstd, w)
    want = ref.layers.layernorm_backward(dout, cache, w)
    # ill-conditioned: each result is a sum of terms that may cancel to ~0 (xhat w = -b; all of dout on
    # a row's largest xhat; rows of opposite sign in dweight), and agreement relative to a cancelled
    # result measures nothing but the cancellation: keep examples where no result lost 3 digits
    xhat_r = cache["xhat"]
    terms = {"out": np.abs(xhat_r * w) + np.abs(b), "dx": cache["rstd"] * np.abs(dout * w),
             "dweight": np.abs(dout * xhat_r).sum(axis=(0, 1)), "dbias": np.abs(dout).sum(axis=(0, 1))}
    for name, result in zip(terms, (ref_out, *want)):
        assume(np.abs(result).max() >= 1e-3 * terms[name].max())
    # a few roundings apart (impl takes (var + eps)**-0.5, the reference 1/sqrt(var + eps)), magnified
    # by a cancellation of up to 1e3: <= ~4 eps 1e3 = 1e-12. Measured worst 3.0e-14 over 4 x 3000
    # draws; 1e-12 leaves 30x headroom
    assert normwise(out, ref_out) <= 1e-12
    for name, g, r in zip(("dx", "dweight", "dbias"), got, want):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        assert normwise(g, r) <= 1e-12, name


@fewer_examples(3)
@given(d=dims(max_vocab=16, min_embd=3), n_layer=st.integers(1, 3), seed=seeds, data=st.data())
def test_impl_equals_reference_layer_by_layer(impl, ref, d, n_layer, seed, data):
    """On hypothesis-drawn shapes: every canonical activation impl records, the loss and every
    gradient agree with reference/ in float64; the first tensor that differs is named."""
    config = d.config(n_layer)
    params = random_params(ref, config, seed, weight_std=0.3)
    idx = data.draw(token_ids((d.B, d.T), d.vocab_size))
    targets = data.draw(token_ids((d.B, d.T), d.vocab_size))
    loss_i, cache_i = impl.forward({k: v.copy() for k, v in params.items()}, idx, targets, config)
    loss_r, cache_r = ref.forward(params, idx, targets, config)
    # measured worst 2.2e-14 (activations) and 1.6e-13 (gradients) normwise over 3000 draws: 45x and
    # 60x headroom. (n_embd >= 3: see dims.)
    for name in activation_names(n_layer):
        if name in cache_i:
            assert cache_i[name].shape == cache_r[name].shape, name
            assert normwise(cache_i[name], cache_r[name]) <= 1e-12, f"first difference: {name}"
    assert abs(loss_i - loss_r) <= 1e-12 * abs(loss_r)
    grads_i = impl.backward(params, cache_i, config)
    grads_r = ref.backward(params, cache_r, config)
    assert set(grads_i) == set(params)
    for name in params:
        assert normwise(grads_i[name], grads_r[name]) <= 1e-11, f"gradient {name}"
