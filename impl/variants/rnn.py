"""An Elman RNN language model: impl/gpt2.py with each block's attention replaced by a recurrent layer.

The rest of the GPT-2 block is kept (pre-LN residual blocks, GELU MLP, ln_f, lm_head tied to wte):
the issue asks for attention replaced, and comparing this file with impl/gpt2.py (`nanoproof compare`)
then measures recurrence against attention and nothing else. The recurrence carries position, so there
is no wpe. Block i on x (B, T, C), hidden size C:

    u = ln_1(x);  h_t = tanh(u_t w_x + h_{t-1} w_h + b), h_{-1} = 0;  x += linear(h, c_proj);  x += mlp(ln_2(x))

h leaves through c_proj as attention's output does, so the residual branch starts as small as in GPT-2
(c_proj std 0.02/sqrt(2L)) although tanh's outputs are O(1). Init, drawn like impl/gpt2.py's (state-dict
order, float64 from Generator(PCG64(seed)), then cast): w_x and w_h std 1/sqrt(C), so a unit-variance
u gives O(1) pre-activations and w_h's eigenvalues fill the unit disc (circular law): the linearised
recurrence neither explodes nor forgets at init; the rest as impl/gpt2.py.

Everything else is impl/gpt2.py's code, line for line (less wpe, the KV cache, sampling and command
line), so that a diff against it shows the change: LayerNorm, GELU MLP, loss, AdamW (decay on every
tensor of ndim >= 2, w_x and w_h included: the same rule, so weight decay is no difference between
the two files), lr_at and get_batch (paired seeds see the same batches).

The training part of the contract only (init, forward, backward, adamw_step, lr_at, get_batch);
numpy or cupy (the module of the params), float32 or float64. Imports numpy only.
B batch, T time, C n_embd (also the hidden size), V vocab. Weights in Conv1D layout (in, out).
"""
import math
import sys

import numpy as np

GELU_C = math.sqrt(2.0 / math.pi)


def array_module(a):
    """numpy or cupy, whichever holds `a`."""
    return sys.modules[type(a).__module__.split(".")[0]]


def param_shapes(config):
    V, C = config["vocab_size"], config["n_embd"]
    shapes = {"wte": (V, C)}
    for i in range(config["n_layer"]):
        for name, shape in [("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                            ("rnn.w_x", (C, C)), ("rnn.w_h", (C, C)), ("rnn.bias", (C,)),
                            ("rnn.c_proj.weight", (C, C)), ("rnn.c_proj.bias", (C,)),
                            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                            ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))]:
            shapes[f"h.{i}.{name}"] = shape
    return {**shapes, "ln_f.weight": (C,), "ln_f.bias": (C,)}


def init(config, seed, xp=np, dtype="float32"):
    """Biases 0, norm gains 1; std of w_x, w_h 1/sqrt(C), of c_proj 0.02/sqrt(2L), of the rest 0.02."""
    rng = np.random.Generator(np.random.PCG64(seed))
    stds = {"rnn.w_x": 1 / math.sqrt(config["n_embd"]), "rnn.w_h": 1 / math.sqrt(config["n_embd"]),
            "c_proj.weight": 0.02 / math.sqrt(2 * config["n_layer"])}
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".bias"):
            value = np.zeros(shape)
        elif len(shape) == 1:
            value = np.ones(shape)
        else:
            value = rng.normal(0.0, next((s for k, s in stds.items() if name.endswith(k)), 0.02), shape)
        params[name] = xp.asarray(value.astype(dtype))
    return params


def linear(x, w, b):
    """x @ w + b over the last axis of x (B, T, in) -> (B, T, out), bias in place: one matmul of all B*T
    rows; at T = 1 (a generation step) a matrix-vector product per row, which OpenBLAS runs faster than
    a matmul of 2 to 8 rows (measured: 4 rows of 768 x 3072, 0.57 ms against 1.2 ms)."""
    out = x @ w if x.shape[1] == 1 else (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[1])
    out += b
    return out


def linear_back(dout, x, w):
    """(dx, dw, db) of linear(x, w, b), given dout = dloss/dout."""
    dout_rows = dout.reshape(-1, dout.shape[-1])                            # (rows, out)
    return (dout_rows @ w.T).reshape(x.shape), x.reshape(-1, x.shape[-1]).T @ dout_rows, dout_rows.sum(0)


def rowsum(a, b=None):
    """sum(a, -1, keepdims=True), or sum(a * b, -1, keepdims=True) without the temporary a * b: one
    einsum (numpy's own sum over a short last axis is several times slower)."""
    xp = array_module(a)
    return (xp.einsum("...i->...", a) if b is None else xp.einsum("...i,...i->...", a, b))[..., None]


def layernorm(x, w, b):
    """(out, xhat, rstd) over the last axis: xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + 1e-5)."""
    C = x.shape[-1]
    xhat = x - rowsum(x) * (1.0 / C)
    rstd = rowsum(xhat, xhat) * (1.0 / C)
    rstd += 1e-5
    rstd **= -0.5
    xhat *= rstd
    out = xhat * w
    out += b
    return out, xhat, rstd


def layernorm_back(dout, xhat, rstd, w):
    """(dx, dw, db): dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w."""
    xp, C, rows = array_module(dout), dout.shape[-1], tuple(range(dout.ndim - 1))
    dx = dout * w                                                           # dxhat, then dx in place
    mean_dxhat_xhat = rowsum(dx, xhat) * (1.0 / C)
    dx -= rowsum(dx) * (1.0 / C)
    dx -= xhat * mean_dxhat_xhat
    dx *= rstd
    dw = xp.einsum("nc,nc->c", dout.reshape(-1, C), xhat.reshape(-1, C))    # sum over rows of dout * xhat
    return dx, dw, dout.sum(rows)


def rnn(u, w_x, w_h, b):
    """Elman recurrence h (B, T, C): h_t = tanh(u_t w_x + h_{t-1} w_h + b), h_{-1} = 0."""
    xp = array_module(u)
    h = linear(u, w_x, b)                                                   # the input terms of every t at once
    for t in range(h.shape[1]):
        if t > 0:
            h[:, t] += h[:, t - 1] @ w_h
        xp.tanh(h[:, t], out=h[:, t])
    return h


def rnn_back(dh, u, h, w_x, w_h):
    """(du, dw_x, dw_h, db) of rnn, through time: da_t = (dh_t + da_{t+1} w_h^T) * (1 - h_t^2), da the
    gradient of the pre-activation; dw_h = sum_t h_{t-1}^T da_t."""
    xp = array_module(dh)
    da = dh.copy()                                                          # (B, T, C), in place below
    for t in reversed(range(dh.shape[1])):
        if t < dh.shape[1] - 1:
            da[:, t] += da[:, t + 1] @ w_h.T
        da[:, t] *= 1.0 - h[:, t] * h[:, t]
    dw_h = xp.tensordot(h[:, :-1], da[:, 1:], axes=([0, 1], [0, 1]))        # (C, C)
    du, dw_x, db = linear_back(da, u, w_x)
    return du, dw_x, dw_h, db


def block(params, config, i, x, cache):
    """Block i on x (B, T, C): x + rnn(ln_1(x)) c_proj, then + mlp(ln_2(that)); returns the result.
    cache (a dict) receives the block's activations, named h.{i}.*: the canonical taps and what backward
    reads. Large temporaries are updated in place (out=, +=): a fresh large array costs page faults."""
    xp = array_module(x)
    param = lambda name: params[f"h.{i}.{name}"]
    ln1, cache[f"h.{i}.ln_1.xhat"], cache[f"h.{i}.ln_1.rstd"] = layernorm(x, param("ln_1.weight"), param("ln_1.bias"))
    cache[f"h.{i}.ln_1"] = ln1
    h = cache[f"h.{i}.rnn.h"] = rnn(ln1, param("rnn.w_x"), param("rnn.w_h"), param("rnn.bias"))  # (B, T, C)
    rnn_out = cache[f"h.{i}.rnn.proj"] = linear(h, param("rnn.c_proj.weight"), param("rnn.c_proj.bias"))
    x = cache[f"h.{i}.res_1"] = x + rnn_out
    ln2, cache[f"h.{i}.ln_2.xhat"], cache[f"h.{i}.ln_2.rstd"] = layernorm(x, param("ln_2.weight"), param("ln_2.bias"))
    cache[f"h.{i}.ln_2"] = ln2
    fc = cache[f"h.{i}.mlp.fc"] = linear(ln2, param("mlp.c_fc.weight"), param("mlp.c_fc.bias"))  # (B, T, 4C)
    tanh = cache[f"h.{i}.mlp.tanh"] = fc * fc                               # tanh(GELU_C (fc + 0.044715 fc^3))
    tanh *= GELU_C * 0.044715
    tanh += GELU_C
    tanh *= fc
    xp.tanh(tanh, out=tanh)
    gelu = cache[f"h.{i}.mlp.gelu"] = tanh + 1.0                            # 0.5 fc (1 + tanh)
    gelu *= fc
    gelu *= 0.5
    mlp_out = cache[f"h.{i}.mlp.proj"] = linear(gelu, param("mlp.c_proj.weight"), param("mlp.c_proj.bias"))
    x = cache[f"h.{i}.out"] = x + mlp_out
    return x


def forward(params, idx, targets, config):
    """Returns (mean cross-entropy as a float, or None without targets; cache of named arrays)."""
    xp = array_module(params["wte"])
    B, T = idx.shape
    C = config["n_embd"]
    cache = {"idx": idx, "targets": targets}
    x = cache["emb"] = params["wte"][idx]                                   # (B, T, C)
    for i in range(config["n_layer"]):
        x = block(params, config, i, x, cache)
    x, cache["ln_f.xhat"], cache["ln_f.rstd"] = layernorm(x, params["ln_f.weight"], params["ln_f.bias"])
    cache["ln_f"] = x
    logits = cache["logits"] = (x.reshape(B * T, C) @ params["wte"].T).reshape(B, T, -1)  # (B, T, V)
    if targets is None:
        return None, cache
    exp = logits - logits.max(-1, keepdims=True)                            # then exp: softmax = exp / sum(exp)
    picked = xp.take_along_axis(exp, targets[..., None], -1)
    xp.exp(exp, out=exp)
    cache["exp"], cache["sumexp"] = exp, rowsum(exp)                        # (B, T, V), (B, T, 1)
    return float((xp.log(cache["sumexp"]) - picked).mean()), cache


def backward(params, cache, config):
    """Gradients of the mean loss, same keys as params: forward (and block) read backwards."""
    xp = array_module(params["wte"])
    idx, targets = cache["idx"], cache["targets"]
    B, T = idx.shape
    C = config["n_embd"]
    grads = {}
    dlogits = (cache["exp"] * (1.0 / (B * T * cache["sumexp"]))).reshape(B * T, -1)  # softmax / BT, (BT, V)
    dlogits[xp.arange(B * T), targets.reshape(-1)] -= 1.0 / (B * T)         # (softmax - onehot) / BT
    dwte = dlogits.T @ cache["ln_f"].reshape(B * T, C)                      # lm_head's share of wte
    dx = (dlogits @ params["wte"]).reshape(B, T, C)
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = layernorm_back(dx, cache["ln_f.xhat"], cache["ln_f.rstd"],
                                                                  params["ln_f.weight"])
    for i in reversed(range(config["n_layer"])):
        param = lambda name: params[f"h.{i}.{name}"]
        # mlp
        dgelu, grads[f"h.{i}.mlp.c_proj.weight"], grads[f"h.{i}.mlp.c_proj.bias"] = linear_back(
            dx, cache[f"h.{i}.mlp.gelu"], param("mlp.c_proj.weight"))
        fc, tanh = cache[f"h.{i}.mlp.fc"], cache[f"h.{i}.mlp.tanh"]
        dfc = fc * fc           # d gelu/d fc = 0.5 (1 + tanh) (1 + fc (1 - tanh) GELU_C (1 + 3 * 0.044715 fc^2))
        dfc *= GELU_C * 3 * 0.044715
        dfc += GELU_C
        dfc *= fc
        tmp = 1.0 - tanh
        dfc *= tmp
        dfc += 1.0
        dfc *= xp.add(tanh, 1.0, out=tmp)
        dfc *= 0.5
        dfc *= dgelu
        dln2, grads[f"h.{i}.mlp.c_fc.weight"], grads[f"h.{i}.mlp.c_fc.bias"] = linear_back(
            dfc, cache[f"h.{i}.ln_2"], param("mlp.c_fc.weight"))
        dln2, grads[f"h.{i}.ln_2.weight"], grads[f"h.{i}.ln_2.bias"] = layernorm_back(
            dln2, cache[f"h.{i}.ln_2.xhat"], cache[f"h.{i}.ln_2.rstd"], param("ln_2.weight"))
        dx += dln2
        # recurrence
        dh, grads[f"h.{i}.rnn.c_proj.weight"], grads[f"h.{i}.rnn.c_proj.bias"] = linear_back(
            dx, cache[f"h.{i}.rnn.h"], param("rnn.c_proj.weight"))
        dln1, grads[f"h.{i}.rnn.w_x"], grads[f"h.{i}.rnn.w_h"], grads[f"h.{i}.rnn.bias"] = rnn_back(
            dh, cache[f"h.{i}.ln_1"], cache[f"h.{i}.rnn.h"], param("rnn.w_x"), param("rnn.w_h"))
        dln1, grads[f"h.{i}.ln_1.weight"], grads[f"h.{i}.ln_1.bias"] = layernorm_back(
            dln1, cache[f"h.{i}.ln_1.xhat"], cache[f"h.{i}.ln_1.rstd"], param("ln_1.weight"))
        dx += dln1
    # token embedding: sum the rows of each distinct id with a one-hot matmul (deterministic on a GPU,
    # unlike a float scatter-add), then add them to the distinct rows (no repeated index)
    ids, inverse = xp.unique(idx.reshape(-1), return_inverse=True)
    onehot = (inverse.reshape(1, -1) == xp.arange(len(ids)).reshape(-1, 1)).astype(dx.dtype)
    dwte[ids] += onehot @ dx.reshape(B * T, C)
    grads["wte"] = dwte
    return {name: grads[name] for name in params}


# ----------------------------------------------------------------------------- optimizer

def lr_at(step, hparams):
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr at lr_decay_iters, then flat."""
    if step < hparams["warmup_iters"]:
        return hparams["learning_rate"] * (step + 1) / (hparams["warmup_iters"] + 1)
    if step > hparams["lr_decay_iters"]:
        return hparams["min_lr"]
    ratio = (step - hparams["warmup_iters"]) / (hparams["lr_decay_iters"] - hparams["warmup_iters"])
    return hparams["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (hparams["learning_rate"] - hparams["min_lr"])


def adamw_step(params, grads, state, step, lr, hparams):
    """Clip the global grad norm to hparams['grad_clip'] (as torch's clip_grad_norm_), then AdamW in place
    (decoupled weight decay on 2-D tensors only, bias correction with t = step + 1). Returns the norm.
    grads are left as they are: the clipping scale is folded into the moments' coefficients."""
    xp = array_module(next(iter(params.values())))
    norm = math.sqrt(sum(float((grad * grad).sum()) for grad in grads.values()))
    scale = min(1.0, hparams["grad_clip"] / (norm + 1e-6)) if hparams["grad_clip"] > 0 else 1.0
    # Python floats: a numpy float64 scalar would make the float32 temporaries float64
    b1, b2, eps, decay = (float(hparams[k]) for k in ("beta1", "beta2", "eps", "weight_decay"))
    lr, scale, t = float(lr), float(scale), step + 1
    for name, param in params.items():
        grad = grads[name]
        if "m." + name not in state:
            state["m." + name], state["v." + name] = xp.zeros_like(param), xp.zeros_like(param)
        m, v = state["m." + name], state["v." + name]
        tmp = grad * ((1 - b1) * scale)                                     # the one temporary
        m *= b1
        m += tmp                                                            # m = b1 m + (1 - b1) grad
        tmp = xp.multiply(grad, grad, out=tmp)
        tmp *= (1 - b2) * scale * scale
        v *= b2
        v += tmp                                                            # v = b2 v + (1 - b2) grad^2
        if param.ndim >= 2:
            param *= 1 - lr * decay
        tmp = xp.sqrt(xp.multiply(v, 1 / (1 - b2 ** t), out=tmp), out=tmp)
        tmp += eps                                                          # sqrt(v / (1 - b2^t)) + eps
        tmp = xp.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1 ** t)
        param -= tmp
    return norm


# ----------------------------------------------------------------------------- data

def get_batch(data, batch_size, block_size, rng):
    """x = data[i:i+T], y = data[i+1:i+1+T] for i = rng.integers(0, len(data) - T, batch_size)."""
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.asarray(data[ix[:, None] + np.arange(block_size + 1)], dtype=np.int64)
    return x[:, :-1], x[:, 1:]
