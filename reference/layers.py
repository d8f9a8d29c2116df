"""GPT-2's layers, one forward/backward pair per layer, side by side.

Dimensions, named once for the whole reference:
    B  batch size           T  sequence length (<= block_size)
    C  n_embd               V  vocab_size
    NH n_head               HS head size = C // NH

Conventions (llm.c's, read as Python):
- `<layer>_forward(inputs..., params...) -> (out, cache)` where `cache` is a dict of named arrays;
- `<layer>_backward(dout, cache, params...) -> gradients`, each named `d` + the forward name;
- every function works on numpy or cupy arrays alike: the array module is taken from the input
  (`array_module`), never chosen here, so float32 stays float32 and float64 stays float64
  (constants are Python floats, which never promote an array's dtype).
"""
import math
import sys

import numpy


def array_module(a):
    """numpy for numpy arrays, cupy for cupy arrays (cupy is imported only if it is already in use)."""
    if type(a).__module__.split(".")[0] == "cupy":
        return sys.modules["cupy"]
    return numpy


# ----------------------------------------------------------------------------- embedding
# emb[b, t] = wte[idx[b, t]] + wpe[t]

def embedding_forward(idx, wte, wpe):
    B, T = idx.shape
    out = wte[idx] + wpe[:T]                                      # (B, T, C)
    return out, {"idx": idx}


def embedding_backward(dout, cache, wte, wpe):
    """Returns (dwte, dwpe). Repeated token ids accumulate; done as a one-hot matmul, which sums
    in a fixed order on every backend (no scatter-add with float atomics on the GPU)."""
    xp = array_module(dout)
    idx = cache["idx"]
    B, T, C = dout.shape
    V = wte.shape[0]
    onehot = (idx.reshape(B * T, 1) == xp.arange(V)).astype(dout.dtype)   # (B*T, V)
    dwte = onehot.T @ dout.reshape(B * T, C)                              # (V, C)
    dwpe = xp.zeros_like(wpe)                                             # (block_size, C)
    dwpe[:T] = dout.sum(axis=0)                                           # positions >= T unused
    return dwte, dwpe


# ----------------------------------------------------------------------------- layernorm
# y = (x - mean) / sqrt(var + eps) * weight + bias, over the last axis, var biased (÷C)

LN_EPS = 1e-5  # GPT-2's layer_norm_epsilon


def layernorm_forward(x, weight, bias, eps=LN_EPS):
    mean = x.mean(axis=-1, keepdims=True)                         # (B, T, 1)
    xc = x - mean                                                 # (B, T, C)
    var = (xc * xc).mean(axis=-1, keepdims=True)                  # (B, T, 1)
    rstd = 1.0 / array_module(x).sqrt(var + eps)                  # (B, T, 1)
    xhat = xc * rstd                                              # (B, T, C)
    out = xhat * weight + bias                                    # (B, T, C)
    return out, {"xhat": xhat, "rstd": rstd}


def layernorm_backward(dout, cache, weight):
    """Returns (dx, dweight, dbias)."""
    xhat, rstd = cache["xhat"], cache["rstd"]
    dweight = (dout * xhat).sum(axis=(0, 1))                      # (C,)
    dbias = dout.sum(axis=(0, 1))                                 # (C,)
    dxhat = dout * weight                                         # (B, T, C)
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)):
    #      term 1 the direct path, term 2 through the mean, term 3 through the variance
    dx = rstd * (dxhat
                 - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))   # (B, T, C)
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- linear
# out = x @ weight + bias, weight in GPT-2's Conv1D layout (in, out); bias None for lm_head

def linear_forward(x, weight, bias=None):
    out = x @ weight                                              # (B, T, out)
    if bias is not None:
        out = out + bias                                          # (B, T, out)
    return out, {"x": x}


def linear_backward(dout, cache, weight):
    """Returns (dx, dweight, dbias)."""
    x = cache["x"]
    C_in, C_out = weight.shape
    dx = dout @ weight.T                                          # (B, T, in)
    dweight = x.reshape(-1, C_in).T @ dout.reshape(-1, C_out)     # (in, out)
    dbias = dout.reshape(-1, C_out).sum(axis=0)                   # (out,)
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- attention
# causal multi-head self-attention on the fused qkv projection (before c_proj):
# att = softmax(q k^T / sqrt(HS) masked to t' <= t);  y = att v, heads concatenated

def attention_forward(qkv, n_head):
    xp = array_module(qkv)
    B, T, C3 = qkv.shape
    C = C3 // 3
    HS = C // n_head
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]            # (B, T, C) each
    q = q.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)                  # (B, NH, T, HS)
    k = k.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)                  # (B, NH, T, HS)
    v = v.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)                  # (B, NH, T, HS)
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(HS))        # (B, NH, T, T)
    future = xp.triu(xp.ones((T, T), dtype=bool), k=1)                     # (T, T) True where t' > t
    scores = xp.where(future, -xp.inf, scores)                             # (B, NH, T, T)
    att = softmax_forward(scores)                                          # (B, NH, T, T)
    y = att @ v                                                            # (B, NH, T, HS)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)                           # (B, T, C)
    return y, {"q": q, "k": k, "v": v, "att": att}


def attention_backward(dy, cache, n_head):
    """Returns dqkv (B, T, 3C)."""
    xp = array_module(dy)
    q, k, v, att = cache["q"], cache["k"], cache["v"], cache["att"]
    B, NH, T, HS = q.shape
    C = NH * HS
    dy = dy.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)                    # (B, NH, T, HS)
    datt = dy @ v.transpose(0, 1, 3, 2)                                    # (B, NH, T, T)
    dv = att.transpose(0, 1, 3, 2) @ dy                                    # (B, NH, T, HS)
    dscores = softmax_backward(datt, att)                                  # (B, NH, T, T)
    # masked entries have att == 0, hence dscores == 0 there: the mask needs no backward of its own
    dscores = dscores * (1.0 / math.sqrt(HS))                              # (B, NH, T, T)
    dq = dscores @ k                                                       # (B, NH, T, HS)
    dk = dscores.transpose(0, 1, 3, 2) @ q                                 # (B, NH, T, HS)
    dqkv = xp.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, C)        # (B, T, 3C)
                           for d in (dq, dk, dv)], axis=-1)
    return dqkv


# softmax over the last axis, stabilised by the row maximum (a constant per row does not change it)

def softmax_forward(x):
    xp = array_module(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(dout, out):
    # d/dx_j softmax_i = s_i (δ_ij - s_j)  =>  dx = s * (dout - sum(dout * s))
    return out * (dout - (dout * out).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- gelu
# GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBE = 0.044715


def gelu_forward(x):
    xp = array_module(x)
    u = GELU_SCALE * (x + GELU_CUBE * x ** 3)                    # (B, T, 4C)
    out = 0.5 * x * (1.0 + xp.tanh(u))                           # (B, T, 4C)
    return out, {"x": x}


def gelu_backward(dout, cache):
    xp = array_module(dout)
    x = cache["x"]
    th = xp.tanh(GELU_SCALE * (x + GELU_CUBE * x ** 3))          # (B, T, 4C)
    du_dx = GELU_SCALE * (1.0 + 3.0 * GELU_CUBE * x ** 2)        # (B, T, 4C)
    # product rule on 0.5 x (1 + tanh u): the x factor, then tanh' = 1 - tanh^2
    dx = dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du_dx)
    return dx


# ----------------------------------------------------------------------------- residual
# out = x + f(x): the gradient flows unchanged into both branches

def residual_forward(x, fx):
    return x + fx


def residual_backward(dout):
    """Returns (dx, dfx)."""
    return dout, dout


# ----------------------------------------------------------------------------- cross-entropy
# loss = mean over (b, t) of -log softmax(logits[b, t])[targets[b, t]]

def crossentropy_forward(logits, targets):
    xp = array_module(logits)
    B, T, V = logits.shape
    shifted = logits - logits.max(axis=-1, keepdims=True)                 # (B, T, V)
    logsumexp = xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))      # (B, T, 1)
    logprobs = shifted - logsumexp                                        # (B, T, V)
    picked = xp.take_along_axis(logprobs, targets[..., None], axis=-1)    # (B, T, 1)
    loss = -picked.mean()
    return loss, {"logprobs": logprobs, "targets": targets}


def crossentropy_backward(cache):
    """Gradient of the mean loss w.r.t. the logits: (softmax - onehot(targets)) / (B*T)."""
    xp = array_module(cache["logprobs"])
    logprobs, targets = cache["logprobs"], cache["targets"]
    B, T, V = logprobs.shape
    probs = xp.exp(logprobs)                                              # (B, T, V)
    onehot = (targets[..., None] == xp.arange(V)).astype(probs.dtype)     # (B, T, V)
    dlogits = (probs - onehot) * (1.0 / (B * T))                          # (B, T, V)
    return dlogits
