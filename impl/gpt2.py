"""nanoproof's minimal GPT-2: forward, backward, AdamW, training, val loss and sampling in one file.

numpy on the CPU or cupy on the GPU (the array module `xp` is chosen once, at the edge), float32 by
default or float64. Shrink it, speed it up, then let `scripts/verify.py` say whether it still computes
the same function. Imports numpy, cupy (optional) and tiktoken (for GPT-2 BPE checkpoints) only.

    python impl/gpt2.py train --dataset data/shakespeare_char --max_iters 2000 --out_dir out
    python impl/gpt2.py sample "ROMEO:" --ckpt out/ckpt.npz

(Hugging Face GPT-2 weights: scripts/sample.py, scripts/eval.py, scripts/train.py --init_from.)
B batch, T time, C n_embd, NH heads, HS head size, V vocab. Weights in GPT-2's Conv1D layout (in, out).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

GELU_C = math.sqrt(2.0 / math.pi)


# ----------------------------------------------------------------------------- model

def array_module(a):
    """numpy or cupy, whichever holds `a`."""
    return sys.modules[type(a).__module__.split(".")[0]]


def param_shapes(config):
    V, T, C = config["vocab_size"], config["block_size"], config["n_embd"]
    shapes = {"wte": (V, C), "wpe": (T, C)}
    for i in range(config["n_layer"]):
        for name, shape in [("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                            ("attn.c_attn.weight", (C, 3 * C)), ("attn.c_attn.bias", (3 * C,)),
                            ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                            ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))]:
            shapes[f"h.{i}.{name}"] = shape
    return {**shapes, "ln_f.weight": (C,), "ln_f.bias": (C,)}


def init(config, seed, xp=np, dtype="float32"):
    """GPT-2 init, drawn on the host in state-dict order: N(0, 0.02), c_proj N(0, 0.02/sqrt(2L))."""
    rng = np.random.Generator(np.random.PCG64(seed))
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".bias"):
            value = np.zeros(shape)
        elif len(shape) == 1:
            value = np.ones(shape)
        else:
            value = rng.normal(0.0, 0.02 / (math.sqrt(2 * config["n_layer"]) if "c_proj" in name else 1), shape)
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


def block(params, config, i, x, mask, cache, kv=None, start=0):
    """Transformer block i on x (B, T, C): x + attn(ln_1(x)), then + mlp(ln_2(that)); returns the result.
    The training forward and the KV-cache inference both run it. mask, (T, S) or (B, 1, T, S), is added
    to the attention scores: 0 where a query sees a key, -inf elsewhere, over S = start + T keys. cache
    (a dict) receives the block's activations, named h.{i}.*: the canonical taps and what backward
    reads. kv: [k, v] of (B, NH, block_size, HS), this block's KV cache: the T new keys and values go
    to slots start..S-1, and attention reads slots 0..S-1. Large temporaries are updated in place (out=,
    +=): a fresh large array costs page faults."""
    xp = array_module(x)
    B, T, C = x.shape
    NH = config["n_head"]
    HS = C // NH
    param = lambda name: params[f"h.{i}.{name}"]
    ln1, cache[f"h.{i}.ln_1.xhat"], cache[f"h.{i}.ln_1.rstd"] = layernorm(x, param("ln_1.weight"), param("ln_1.bias"))
    cache[f"h.{i}.ln_1"] = ln1
    qkv = cache[f"h.{i}.attn.qkv"] = linear(ln1, param("attn.c_attn.weight"), param("attn.c_attn.bias"))  # (B, T, 3C)
    q, k, v = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)         # 3 x (B, NH, T, HS) views
    if kv is not None:
        kv[0][:, :, start:start + T], kv[1][:, :, start:start + T] = k, v
        k, v = kv[0][:, :, :start + T], kv[1][:, :, :start + T]             # (B, NH, S, HS)
    att = q @ k.transpose(0, 1, 3, 2)                                       # (B, NH, T, S)
    att *= 1.0 / math.sqrt(HS)
    att += mask
    att -= att.max(-1, keepdims=True)                                       # softmax, in place
    xp.exp(att, out=att)
    att /= rowsum(att)
    cache[f"h.{i}.attn.att"] = att
    y = cache[f"h.{i}.attn.y"] = xp.empty_like(ln1, dtype=att.dtype)        # (B, T, C): heads side by side
    xp.matmul(att, v, out=y.reshape(B, T, NH, HS).transpose(0, 2, 1, 3))
    attn_out = cache[f"h.{i}.attn.proj"] = linear(y, param("attn.c_proj.weight"), param("attn.c_proj.bias"))
    x = cache[f"h.{i}.res_1"] = x + attn_out
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
    x += params["wpe"][:T]
    mask = xp.triu(xp.full((T, T), -xp.inf, dtype=x.dtype), 1)              # -inf on the future
    for i in range(config["n_layer"]):
        x = block(params, config, i, x, mask, cache)
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
    C, NH = config["n_embd"], config["n_head"]
    HS = C // NH
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
        # attention
        dy, grads[f"h.{i}.attn.c_proj.weight"], grads[f"h.{i}.attn.c_proj.bias"] = linear_back(
            dx, cache[f"h.{i}.attn.y"], param("attn.c_proj.weight"))
        dy = dy.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)                 # (B, NH, T, HS)
        q, k, v = cache[f"h.{i}.attn.qkv"].reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)
        att = cache[f"h.{i}.attn.att"]
        dqkv = xp.empty_like(cache[f"h.{i}.attn.qkv"])                      # (B, T, 3C)
        dq, dk, dv = dqkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)  # views, written below
        xp.matmul(att.transpose(0, 1, 3, 2), dy, out=dv)
        dscores = dy @ v.transpose(0, 1, 3, 2)                              # d att, then d scores in place:
        dscores -= rowsum(dscores, att)                                     # softmax backward
        dscores *= att
        dscores *= 1.0 / math.sqrt(HS)
        xp.matmul(dscores, k, out=dq)
        xp.matmul(dscores.transpose(0, 1, 3, 2), q, out=dk)
        dln1, grads[f"h.{i}.attn.c_attn.weight"], grads[f"h.{i}.attn.c_attn.bias"] = linear_back(
            dqkv, cache[f"h.{i}.ln_1"], param("attn.c_attn.weight"))
        dln1, grads[f"h.{i}.ln_1.weight"], grads[f"h.{i}.ln_1.bias"] = layernorm_back(
            dln1, cache[f"h.{i}.ln_1.xhat"], cache[f"h.{i}.ln_1.rstd"], param("ln_1.weight"))
        dx += dln1
    grads["wpe"] = xp.zeros_like(params["wpe"])
    grads["wpe"][:T] = dx.sum(0)
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


# ----------------------------------------------------------------------------- data, training

def get_batch(data, batch_size, block_size, rng):
    """x = data[i:i+T], y = data[i+1:i+1+T] for i = rng.integers(0, len(data) - T, batch_size)."""
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.asarray(data[ix[:, None] + np.arange(block_size + 1)], dtype=np.int64)
    return x[:, :-1], x[:, 1:]


def estimate_loss(params, data, config, batch_size, eval_iters, seed, xp):
    """Mean loss over eval_iters batches drawn by a fresh Generator(PCG64([seed, 2])): the same
    batches at every evaluation, so the curve shows the model, not the sampling."""
    rng = np.random.Generator(np.random.PCG64([seed, 2]))
    losses = []
    for _ in range(eval_iters):
        x, y = get_batch(data, batch_size, config["block_size"], rng)
        losses.append(forward(params, xp.asarray(x), xp.asarray(y), config)[0])
    return sum(losses) / len(losses)


def load_data(folder):
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    split = lambda name: np.memmap(os.path.join(folder, f"{name}.bin"), dtype=np.uint16, mode="r")
    return split("train"), split("val"), meta


def train(args, xp):
    train_data, val_data, meta = load_data(args.dataset)
    config = {"vocab_size": meta["vocab_size"], "block_size": args.block_size,
              "n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd}
    hparams = {k: getattr(args, k) for k in HPARAMS}
    params, state = init(config, args.seed, xp, args.dtype), {}
    rng = np.random.Generator(np.random.PCG64([args.seed, 1]))
    for step in range(args.max_iters + 1):
        if step % args.eval_interval == 0 or step == args.max_iters:
            val = estimate_loss(params, val_data, config, args.batch_size, args.eval_iters, args.seed, xp)
            print(f"step {step}: val loss {val:.4f}", flush=True)
        if step == args.max_iters:
            break
        t0, K, loss, grads = time.perf_counter(), args.gradient_accumulation_steps, 0.0, {}
        for _ in range(K):      # K micro-batches, one update: the mean loss's gradient, sum of grads / K
            x, y = get_batch(train_data, args.batch_size, args.block_size, rng)
            micro_loss, cache = forward(params, xp.asarray(x), xp.asarray(y), config)
            for name, grad in backward(params, cache, config).items():
                grad *= 1.0 / K
                grads[name] = grads[name] + grad if name in grads else grad
            loss, cache = loss + micro_loss / K, None                       # free the activations now
        adamw_step(params, grads, state, step, lr_at(step, hparams), hparams)
        if step % args.log_interval == 0:
            print(f"iter {step}: loss {loss:.4f}, {1000 * (time.perf_counter() - t0):.1f} ms", flush=True)
    if args.out_dir:
        out = args.out_dir if args.out_dir.endswith(".npz") else os.path.join(args.out_dir, "ckpt.npz")
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        arrays = {f"params/{k}": to_host(v) for k, v in params.items()}
        arrays["meta"] = np.array(json.dumps({"config": config, "data": meta, "step": args.max_iters}))
        np.savez(out + ".tmp.npz", **arrays)
        os.replace(out + ".tmp.npz", out)
        print(f"saved {out}")
    print(f"val_loss {val:.4f}")


# ----------------------------------------------------------------------------- sampling

def to_host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def infer(params, idx, pos, valid, config, kv=None, start=0):
    """Logits (B, V) after the last of the tokens idx (B, T) that sit at slots start..start+T-1 of a
    left-padded batch, at position ids pos (B, T); valid (B, start+T) marks the real (not padding) slots.
    kv: per block [k, v] of (B, NH, block_size, HS), filled in place (keys of slots < start are read
    from it); None recomputes everything from slot 0 (start must be 0)."""
    xp = array_module(params["wte"])
    T = idx.shape[1]
    keys, queries = xp.arange(start + T), xp.arange(start, start + T)[:, None]
    seen = (keys <= queries) & (valid[:, None, None, :] | (keys == queries))   # (B, 1, T, S); a pad sees itself
    mask = xp.where(seen, 0.0, -xp.inf).astype(params["wte"].dtype)
    x = params["wte"][idx] + params["wpe"][pos]
    for i in range(config["n_layer"]):
        x = block(params, config, i, x, mask, {}, None if kv is None else kv[i], start)
    return layernorm(x[:, -1], params["ln_f.weight"], params["ln_f.bias"])[0] @ params["wte"].T


def pick(logits, temperature, top_k, top_p, rng):
    """Next ids (B,) from host logits (B, V): greedy at temperature 0, else temperature, top-k, top-p
    (the smallest set of most probable tokens whose probability reaches top_p), inverse CDF of one
    rng.random(B)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.astype(np.float64) / temperature
    if top_k:
        logits[logits < np.sort(logits, -1)[:, [-min(top_k, logits.shape[-1])]]] = -np.inf
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, -1, kind="stable")
        ranked = np.take_along_axis(probs, order, -1)
        np.put_along_axis(probs, order, np.where(ranked.cumsum(-1) - ranked < top_p, ranked, 0.0), -1)
    cdf = probs.cumsum(-1)
    return (cdf <= rng.random((len(cdf), 1)) * cdf[:, -1:]).sum(-1)


def generate(params, prompts, n_tokens, config, temperature=0.0, top_k=None, top_p=None, rng=None,
             kv_cache=True, stop_token=None):
    """Continue each prompt (a list of token-id lists, left-padded into one batch) by up to n_tokens,
    ending when the batch reaches block_size or every row has produced stop_token. Returns (tokens:
    one list of new ids per prompt, cut after its stop_token; logits (B, steps, V) on the host)."""
    xp = array_module(params["wte"])
    B, L, T = len(prompts), max(map(len, prompts)), config["block_size"]
    if not all(prompts) or L > T:
        raise ValueError(f"generate: prompts must hold 1 to block_size={T} tokens, got lengths "
                         f"{[len(prompt) for prompt in prompts]}")
    pad = np.array([L - len(prompt) for prompt in prompts])
    idx = np.zeros((B, T), np.int64)
    for b, prompt in enumerate(prompts):
        idx[b, pad[b]:L] = prompt
    valid = xp.asarray(np.arange(T) >= pad[:, None])                        # (B, T)
    pos = xp.asarray(np.maximum(np.arange(T) - pad[:, None], 0))            # (B, T)
    C, NH = config["n_embd"], config["n_head"]
    kv = [[xp.zeros((B, NH, T, C // NH), params["wte"].dtype) for _ in "kv"]
          for _ in range(config["n_layer"])] if kv_cache else None
    done, logits = np.zeros(B, bool), []
    for t in range(L, min(L + n_tokens, T)):
        first = t - 1 if kv_cache and t > L else 0                          # first slot computed this step
        logits.append(to_host(infer(params, xp.asarray(idx[:, first:t]), pos[:, first:t], valid[:, :t],
                                    config, kv, first)))
        next_ids = pick(logits[-1], temperature, top_k, top_p, rng)
        idx[:, t] = np.where(done, idx[:, t - 1], next_ids)
        done |= next_ids == stop_token
        if done.all():
            break
    new = idx[:, L:L + len(logits)].tolist()
    cut = lambda row: row[:row.index(stop_token) + 1] if stop_token in row else row
    return [cut(row) for row in new], np.stack(logits, 1) if logits else np.zeros((B, 0, config["vocab_size"]))


def sample(args, xp):
    try:
        with np.load(args.ckpt, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            params = {k[len("params/"):]: xp.asarray(f[k].astype(args.dtype)) for k in f if k.startswith("params/")}
        config, data = meta["config"], meta["data"]
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"sample: cannot load {args.ckpt}: {type(exc).__name__}: {exc}")
    eot = None
    if data["encoding"] == "char":
        stoi = {ch: i for i, ch in enumerate(data["chars"])}
        unknown = sorted(set("".join(args.prompts)) - set(stoi))
        if unknown or args.stop_at_eot:
            sys.exit(f"sample: {args.ckpt} is a char-level checkpoint: " + (
                f"the prompts have characters outside its vocabulary: {unknown!r}" if unknown
                else "it has no <|endoftext|> token for --stop_at_eot"))
        encode, decode = (lambda s: [stoi[ch] for ch in s]), (lambda ids: "".join(data["chars"][i] for i in ids))
    else:
        import tiktoken
        enc = tiktoken.get_encoding("gpt2")
        encode, decode, eot = enc.encode_ordinary, enc.decode, enc.eot_token
    prompts, stop, T = [encode(text) for text in args.prompts], eot if args.stop_at_eot else None, config["block_size"]
    tokens, active = [[] for _ in prompts], list(range(len(prompts)))
    rng = np.random.Generator(np.random.PCG64(args.seed))
    while active:       # at block_size, go on from the last block_size - 1 tokens (nanoGPT crops the context too)
        context = [(prompts[b] + tokens[b])[-(T - 1):] if tokens[b] or len(prompts[b]) == T else prompts[b]
                   for b in active]
        try:
            new, _ = generate(params, context, args.n_tokens - len(tokens[active[0]]), config, args.temperature,
                              args.top_k, args.top_p, rng, not args.no_kv_cache, stop)
        except ValueError as exc:
            sys.exit(f"sample: {exc}")
        for b, row in zip(active, new):
            tokens[b] += row
        active = [b for b, row in zip(active, new) if row and len(tokens[b]) < args.n_tokens and stop not in row[-1:]]
    for b, (prompt, new) in enumerate(zip(prompts, tokens)):
        if len(prompts) > 1:
            print(f"---------- sample {b + 1} of {len(prompts)}: {args.prompts[b]!r}")
        print(decode(prompt + new))


# ----------------------------------------------------------------------------- command line

HPARAMS = ["learning_rate", "min_lr", "warmup_iters", "lr_decay_iters", "weight_decay",
           "beta1", "beta2", "eps", "grad_clip"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train on a prepared folder (scripts/prepare_data.py), print val_loss",
                        description="Train with AdamW; defaults are nanoGPT's baby-GPT shakespeare_char config.")
    tr.add_argument("--dataset", "--data", required=True, help="folder with train.bin, val.bin, meta.json")
    tr.add_argument("--out_dir", "--out", help="write the trained params to OUT_DIR/ckpt.npz (as scripts/train.py; "
                    "params only, not resumable), or to OUT_DIR itself if it ends in .npz")
    for name, default in [("n_layer", 4), ("n_head", 4), ("n_embd", 128), ("block_size", 64), ("batch_size", 12),
                          ("gradient_accumulation_steps", 1),
                          ("max_iters", 2000), ("warmup_iters", 100), ("lr_decay_iters", 2000), ("eval_interval", 250),
                          ("eval_iters", 20), ("log_interval", 100), ("seed", 1337)]:
        tr.add_argument("--" + name, type=int, default=default, help=f"default {default}")
    for name, default in [("learning_rate", 1e-3), ("min_lr", 1e-4), ("weight_decay", 0.1), ("beta1", 0.9),
                          ("beta2", 0.99), ("eps", 1e-8), ("grad_clip", 1.0)]:
        tr.add_argument("--" + name, type=float, default=default, help=f"default {default}")
    sa = sub.add_parser("sample", help="continue prompts with a checkpoint written by train",
                        description="Continue one or more prompts (batched, left-padded) with a KV cache: greedy "
                                    "at --temperature 0, else temperature, then top-k, then top-p sampling (--seed). "
                                    "Hugging Face GPT-2 weights: scripts/sample.py --weights DIR.")
    sa.add_argument("prompts", nargs="+", metavar="PROMPT", help="GPT-2 BPE text, or chars of a char checkpoint")
    sa.add_argument("--ckpt", metavar="FILE", required=True, help="a .npz written by train (or scripts/train.py)")
    sa.add_argument("--n_tokens", type=int, default=200, help="new tokens per row; past block_size the context "
                    "is cropped to the last block_size - 1 tokens (default 200)")
    sa.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    sa.add_argument("--top_k", type=int, default=200, help="keep the k most likely tokens; 0 = all (default 200)")
    sa.add_argument("--top_p", type=float, default=None, help="keep the fewest tokens whose probability reaches p")
    sa.add_argument("--seed", type=int, default=1337)
    sa.add_argument("--stop_at_eot", action="store_true", help="end a row at <|endoftext|> (GPT-2 BPE only)")
    sa.add_argument("--no_kv_cache", action="store_true", help="recompute the whole prefix every token")
    for parser in (tr, sa):
        parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
        parser.add_argument("--device", choices=["cpu", "gpu", "cuda"], default="cpu")
    args = ap.parse_args(argv)
    if args.command == "train" and args.gradient_accumulation_steps < 1:
        tr.error(f"need --gradient_accumulation_steps >= 1, got {args.gradient_accumulation_steps}")
    if args.command == "sample" and not (args.n_tokens >= 1 and args.temperature >= 0 and args.top_k >= 0
                                         and (args.top_p is None or 0 < args.top_p <= 1)):
        sa.error("need --n_tokens >= 1, --temperature >= 0, --top_k >= 0, 0 < --top_p <= 1")
    try:
        xp = np if args.device == "cpu" else __import__("cupy")
    except ImportError as exc:
        sys.exit(f"--device {args.device} needs cupy: {exc}")
    {"train": train, "sample": sample}[args.command](args, xp)


if __name__ == "__main__":
    main()
