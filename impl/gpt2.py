"""nanoproof's minimal GPT-2: forward, backward, AdamW, training, val loss and sampling in one file.

numpy on the CPU or cupy on the GPU (the array module `xp` is chosen once, at the edge), float32 by
default or float64. Shrink it, speed it up, then let `scripts/verify.py` say whether it still computes
the same function. Imports numpy, cupy (optional) and tiktoken (for GPT-2 BPE datasets) only.

    python impl/gpt2.py train --data data/shakespeare_char --max_iters 2000
    python impl/gpt2.py sample "ROMEO:" --ckpt out/ckpt.npz
    python impl/gpt2.py sample "Alan Turing theorized that" --weights DIR --n_tokens 40 --temperature 0

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


def param_shapes(cfg):
    V, T, C = cfg["vocab_size"], cfg["block_size"], cfg["n_embd"]
    shapes = {"wte": (V, C), "wpe": (T, C)}
    for i in range(cfg["n_layer"]):
        for name, shape in [("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                            ("attn.c_attn.weight", (C, 3 * C)), ("attn.c_attn.bias", (3 * C,)),
                            ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                            ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))]:
            shapes[f"h.{i}.{name}"] = shape
    return {**shapes, "ln_f.weight": (C,), "ln_f.bias": (C,)}


def init(cfg, seed, xp=np, dtype="float32"):
    """GPT-2 init, drawn on the host in state-dict order: N(0, 0.02), c_proj N(0, 0.02/sqrt(2L))."""
    rng = np.random.Generator(np.random.PCG64(seed))
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(".bias"):
            p = np.zeros(shape)
        elif len(shape) == 1:
            p = np.ones(shape)
        else:
            p = rng.normal(0.0, 0.02 / (math.sqrt(2 * cfg["n_layer"]) if "c_proj" in name else 1), shape)
        params[name] = xp.asarray(p.astype(dtype))
    return params


def linear(x, w, b):
    """x @ w + b over the last axis of x (..., in) -> (..., out): one matmul of all rows, bias in place."""
    out = x.reshape(-1, x.shape[-1]) @ w
    out += b
    return out.reshape(*x.shape[:-1], w.shape[1])


def linear_back(dout, x, w):
    """(dx, dw, db) of linear(x, w, b), given dout = dloss/dout."""
    d2 = dout.reshape(-1, dout.shape[-1])                                   # (rows, out)
    return (d2 @ w.T).reshape(x.shape), x.reshape(-1, x.shape[-1]).T @ d2, d2.sum(0)


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
    m2 = rowsum(dx, xhat) * (1.0 / C)
    dx -= rowsum(dx) * (1.0 / C)
    dx -= xhat * m2
    dx *= rstd
    dw = xp.einsum("nc,nc->c", dout.reshape(-1, C), xhat.reshape(-1, C))    # sum over rows of dout * xhat
    return dx, dw, dout.sum(rows)


def forward(params, idx, targets, cfg):
    """Returns (mean cross-entropy as a float, or None without targets; cache of named arrays).
    Large temporaries are updated in place (out=, +=): a fresh large array costs page faults."""
    xp = array_module(params["wte"])
    B, T = idx.shape
    C, NH = cfg["n_embd"], cfg["n_head"]
    HS = C // NH
    mask = xp.triu(xp.full((T, T), -xp.inf, dtype=params["wte"].dtype), 1)  # -inf on the future
    c = {"idx": idx, "targets": targets}
    x = c["emb"] = params["wte"][idx]                                       # (B, T, C)
    x += params["wpe"][:T]
    for i in range(cfg["n_layer"]):
        p = lambda n: params[f"h.{i}.{n}"]
        a, c[f"h.{i}.ln_1.xhat"], c[f"h.{i}.ln_1.rstd"] = layernorm(x, p("ln_1.weight"), p("ln_1.bias"))
        c[f"h.{i}.ln_1"] = a
        qkv = c[f"h.{i}.attn.qkv"] = linear(a, p("attn.c_attn.weight"), p("attn.c_attn.bias"))  # (B, T, 3C)
        q, k, v = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)     # 3 x (B, NH, T, HS) views
        att = q @ k.transpose(0, 1, 3, 2)                                   # (B, NH, T, T)
        att *= 1.0 / math.sqrt(HS)
        att += mask
        att -= att.max(-1, keepdims=True)                                   # softmax, in place
        xp.exp(att, out=att)
        att /= rowsum(att)
        c[f"h.{i}.attn.att"] = att
        y = c[f"h.{i}.attn.y"] = xp.empty_like(a)                           # (B, T, C): heads side by side
        xp.matmul(att, v, out=y.reshape(B, T, NH, HS).transpose(0, 2, 1, 3))
        ap = c[f"h.{i}.attn.proj"] = linear(y, p("attn.c_proj.weight"), p("attn.c_proj.bias"))
        x = c[f"h.{i}.res_1"] = x + ap
        m, c[f"h.{i}.ln_2.xhat"], c[f"h.{i}.ln_2.rstd"] = layernorm(x, p("ln_2.weight"), p("ln_2.bias"))
        c[f"h.{i}.ln_2"] = m
        f = c[f"h.{i}.mlp.fc"] = linear(m, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))  # (B, T, 4C)
        th = c[f"h.{i}.mlp.tanh"] = f * f                                   # tanh(GELU_C (f + 0.044715 f^3))
        th *= GELU_C * 0.044715
        th += GELU_C
        th *= f
        xp.tanh(th, out=th)
        g = c[f"h.{i}.mlp.gelu"] = th + 1.0                                 # 0.5 f (1 + th)
        g *= f
        g *= 0.5
        mp = c[f"h.{i}.mlp.proj"] = linear(g, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
        x = c[f"h.{i}.out"] = x + mp
    x, c["ln_f.xhat"], c["ln_f.rstd"] = layernorm(x, params["ln_f.weight"], params["ln_f.bias"])
    c["ln_f"] = x
    logits = c["logits"] = (x.reshape(B * T, C) @ params["wte"].T).reshape(B, T, -1)  # (B, T, V)
    if targets is None:
        return None, c
    e = logits - logits.max(-1, keepdims=True)                             # then exp: softmax = e / sum(e)
    picked = xp.take_along_axis(e, targets[..., None], -1)
    xp.exp(e, out=e)
    c["exp"], c["sumexp"] = e, rowsum(e)                                    # (B, T, V), (B, T, 1)
    return float((xp.log(c["sumexp"]) - picked).mean()), c


def backward(params, c, cfg):
    """Gradients of the mean loss, same keys as params: forward read backwards."""
    xp = array_module(params["wte"])
    idx, targets = c["idx"], c["targets"]
    B, T = idx.shape
    C, NH = cfg["n_embd"], cfg["n_head"]
    HS = C // NH
    g = {}
    dlogits = (c["exp"] * (1.0 / (B * T * c["sumexp"]))).reshape(B * T, -1)  # softmax / BT, (BT, V)
    dlogits[xp.arange(B * T), targets.reshape(-1)] -= 1.0 / (B * T)         # (softmax - onehot) / BT
    dwte = dlogits.T @ c["ln_f"].reshape(B * T, C)                          # lm_head's share of wte
    dx = (dlogits @ params["wte"]).reshape(B, T, C)
    dx, g["ln_f.weight"], g["ln_f.bias"] = layernorm_back(dx, c["ln_f.xhat"], c["ln_f.rstd"],
                                                          params["ln_f.weight"])
    for i in reversed(range(cfg["n_layer"])):
        p = lambda n: params[f"h.{i}.{n}"]
        # mlp
        dg, g[f"h.{i}.mlp.c_proj.weight"], g[f"h.{i}.mlp.c_proj.bias"] = linear_back(
            dx, c[f"h.{i}.mlp.gelu"], p("mlp.c_proj.weight"))
        f, th = c[f"h.{i}.mlp.fc"], c[f"h.{i}.mlp.tanh"]
        df = f * f               # d gelu/df = 0.5 (1 + th) (1 + f (1 - th) GELU_C (1 + 3 * 0.044715 f^2))
        df *= GELU_C * 3 * 0.044715
        df += GELU_C
        df *= f
        tmp = 1.0 - th
        df *= tmp
        df += 1.0
        df *= xp.add(th, 1.0, out=tmp)
        df *= 0.5
        df *= dg
        dm, g[f"h.{i}.mlp.c_fc.weight"], g[f"h.{i}.mlp.c_fc.bias"] = linear_back(
            df, c[f"h.{i}.ln_2"], p("mlp.c_fc.weight"))
        dm, g[f"h.{i}.ln_2.weight"], g[f"h.{i}.ln_2.bias"] = layernorm_back(
            dm, c[f"h.{i}.ln_2.xhat"], c[f"h.{i}.ln_2.rstd"], p("ln_2.weight"))
        dx += dm
        # attention
        dy, g[f"h.{i}.attn.c_proj.weight"], g[f"h.{i}.attn.c_proj.bias"] = linear_back(
            dx, c[f"h.{i}.attn.y"], p("attn.c_proj.weight"))
        dy = dy.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)                 # (B, NH, T, HS)
        q, k, v = c[f"h.{i}.attn.qkv"].reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)
        att = c[f"h.{i}.attn.att"]
        dqkv = xp.empty_like(c[f"h.{i}.attn.qkv"])                          # (B, T, 3C)
        dq, dk, dv = dqkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)  # views, written below
        xp.matmul(att.transpose(0, 1, 3, 2), dy, out=dv)
        ds = dy @ v.transpose(0, 1, 3, 2)                                   # datt, then the scores' grad
        ds -= rowsum(ds, att)                                               # softmax backward, in place
        ds *= att
        ds *= 1.0 / math.sqrt(HS)
        xp.matmul(ds, k, out=dq)
        xp.matmul(ds.transpose(0, 1, 3, 2), q, out=dk)
        da, g[f"h.{i}.attn.c_attn.weight"], g[f"h.{i}.attn.c_attn.bias"] = linear_back(
            dqkv, c[f"h.{i}.ln_1"], p("attn.c_attn.weight"))
        da, g[f"h.{i}.ln_1.weight"], g[f"h.{i}.ln_1.bias"] = layernorm_back(
            da, c[f"h.{i}.ln_1.xhat"], c[f"h.{i}.ln_1.rstd"], p("ln_1.weight"))
        dx += da
    g["wpe"] = xp.zeros_like(params["wpe"])
    g["wpe"][:T] = dx.sum(0)
    # token embedding: sum the rows of each distinct id with a one-hot matmul (deterministic on a GPU,
    # unlike a float scatter-add), then add them to the distinct rows (no repeated index)
    ids, inverse = xp.unique(idx.reshape(-1), return_inverse=True)
    onehot = (inverse.reshape(1, -1) == xp.arange(len(ids)).reshape(-1, 1)).astype(dx.dtype)
    dwte[ids] += onehot @ dx.reshape(B * T, C)
    g["wte"] = dwte
    return {name: g[name] for name in params}


# ----------------------------------------------------------------------------- optimizer

def lr_at(step, hp):
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr at lr_decay_iters, then flat."""
    if step < hp["warmup_iters"]:
        return hp["learning_rate"] * (step + 1) / (hp["warmup_iters"] + 1)
    if step > hp["lr_decay_iters"]:
        return hp["min_lr"]
    ratio = (step - hp["warmup_iters"]) / (hp["lr_decay_iters"] - hp["warmup_iters"])
    return hp["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (hp["learning_rate"] - hp["min_lr"])


def adamw_step(params, grads, state, step, lr, hp):
    """Clip the global grad norm to hp['grad_clip'] (as torch's clip_grad_norm_), then AdamW in place
    (decoupled weight decay on 2-D tensors only, bias correction with t = step + 1). Returns the norm.
    grads are left as they are: the clipping scale is folded into the moments' coefficients."""
    xp = array_module(next(iter(params.values())))
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    scale = min(1.0, hp["grad_clip"] / (norm + 1e-6)) if hp["grad_clip"] > 0 else 1.0
    # Python floats: a numpy float64 scalar would make the float32 temporaries float64
    b1, b2, eps, decay = (float(hp[k]) for k in ("beta1", "beta2", "eps", "weight_decay"))
    lr, scale, t = float(lr), float(scale), step + 1
    for name, p in params.items():
        g = grads[name]
        if "m." + name not in state:
            state["m." + name], state["v." + name] = xp.zeros_like(p), xp.zeros_like(p)
        m, v = state["m." + name], state["v." + name]
        tmp = g * ((1 - b1) * scale)                                        # the one temporary
        m *= b1
        m += tmp                                                            # m = b1 m + (1 - b1) g
        tmp = xp.multiply(g, g, out=tmp)
        tmp *= (1 - b2) * scale * scale
        v *= b2
        v += tmp                                                            # v = b2 v + (1 - b2) g^2
        if p.ndim >= 2:
            p *= 1 - lr * decay
        tmp = xp.sqrt(xp.multiply(v, 1 / (1 - b2 ** t), out=tmp), out=tmp)
        tmp += eps                                                          # sqrt(v / (1 - b2^t)) + eps
        tmp = xp.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - b1 ** t)
        p -= tmp
    return norm


# ----------------------------------------------------------------------------- data, training, sampling

def get_batch(data, batch_size, block_size, rng):
    """x = data[i:i+T], y = data[i+1:i+1+T] for i = rng.integers(0, len(data) - T, batch_size)."""
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.asarray(data[ix[:, None] + np.arange(block_size + 1)], dtype=np.int64)
    return x[:, :-1], x[:, 1:]


def estimate_loss(params, data, cfg, batch_size, eval_iters, seed, xp):
    """Mean loss over eval_iters batches drawn by a fresh Generator(PCG64([seed, 2])): the same
    batches at every evaluation, so the curve shows the model, not the sampling."""
    rng = np.random.Generator(np.random.PCG64([seed, 2]))
    losses = []
    for _ in range(eval_iters):
        x, y = get_batch(data, batch_size, cfg["block_size"], rng)
        losses.append(forward(params, xp.asarray(x), xp.asarray(y), cfg)[0])
    return sum(losses) / len(losses)


def load_data(folder):
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    split = lambda s: np.memmap(os.path.join(folder, f"{s}.bin"), dtype=np.uint16, mode="r")
    return split("train"), split("val"), meta


def train(args, xp):
    train_data, val_data, meta = load_data(args.data)
    cfg = {"vocab_size": meta["vocab_size"], "block_size": args.block_size,
           "n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd}
    hp = {k: getattr(args, k) for k in HPARAMS}
    params, state = init(cfg, args.seed, xp, args.dtype), {}
    rng = np.random.Generator(np.random.PCG64([args.seed, 1]))
    for step in range(args.max_iters + 1):
        if step % args.eval_interval == 0 or step == args.max_iters:
            val = estimate_loss(params, val_data, cfg, args.batch_size, args.eval_iters, args.seed, xp)
            print(f"step {step}: val loss {val:.4f}", flush=True)
        if step == args.max_iters:
            break
        t0 = time.perf_counter()
        x, y = get_batch(train_data, args.batch_size, args.block_size, rng)
        loss, cache = forward(params, xp.asarray(x), xp.asarray(y), cfg)
        grads, cache = backward(params, cache, cfg), None                   # free the activations now
        adamw_step(params, grads, state, step, lr_at(step, hp), hp)
        if step % args.log_interval == 0:
            print(f"iter {step}: loss {loss:.4f}, {1000 * (time.perf_counter() - t0):.1f} ms", flush=True)
    if args.out:
        arrays = {f"params/{k}": to_host(v) for k, v in params.items()}
        arrays["meta"] = np.array(json.dumps({"config": cfg, "data": meta, "step": args.max_iters}))
        tmp = args.out + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, args.out)
        print(f"saved {args.out}")
    print(f"val_loss {val:.4f}")


def to_host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def infer(params, idx, pos, valid, cfg, kv=None, start=0):
    """Logits (B, V) after the last of the tokens idx (B, T) that sit at slots start..start+T-1 of a
    left-padded batch, at position ids pos (B, T); valid (B, start+T) marks the real (not padding) slots.
    kv: per block [k, v] of (B, NH, block_size, HS), filled in place (keys of slots < start are read
    from it); None recomputes everything from slot 0 (start must be 0)."""
    xp = array_module(params["wte"])
    B, T = idx.shape
    C, NH, S = cfg["n_embd"], cfg["n_head"], start + T
    HS = C // NH
    keys, queries = xp.arange(S), xp.arange(start, S)[:, None]
    seen = (keys <= queries) & (valid[:, None, None, :] | (keys == queries))   # (B, 1, T, S); a pad sees itself
    x = params["wte"][idx] + params["wpe"][pos]
    for i in range(cfg["n_layer"]):
        p = lambda n: params[f"h.{i}.{n}"]
        qkv = layernorm(x, p("ln_1.weight"), p("ln_1.bias"))[0] @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        q, k, v = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)         # 3 x (B, NH, T, HS)
        if kv is not None:
            kv[i][0][:, :, start:S], kv[i][1][:, :, start:S] = k, v
            k, v = kv[i][0][:, :, :S], kv[i][1][:, :, :S]                       # (B, NH, S, HS)
        scores = xp.where(seen, (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(HS)), -xp.inf)  # (B, NH, T, S)
        probs = xp.exp(scores - scores.max(-1, keepdims=True))
        y = (probs / probs.sum(-1, keepdims=True)) @ v                         # (B, NH, T, HS)
        x = x + y.transpose(0, 2, 1, 3).reshape(B, T, C) @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        f = layernorm(x, p("ln_2.weight"), p("ln_2.bias"))[0] @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias")
        g = 0.5 * f * (1.0 + xp.tanh(GELU_C * f * (1.0 + 0.044715 * f * f)))  # (B, T, 4C)
        x = x + g @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
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


def generate(params, prompts, n_tokens, cfg, temperature=0.0, top_k=None, top_p=None, rng=None,
             kv_cache=True, stop_token=None):
    """Continue each prompt (a list of token-id lists, left-padded into one batch) by up to n_tokens,
    ending when the batch reaches block_size or every row has produced stop_token. Returns (tokens:
    one list of new ids per prompt, cut after its stop_token; logits (B, steps, V) on the host)."""
    xp = array_module(params["wte"])
    B, L, T = len(prompts), max(map(len, prompts)), cfg["block_size"]
    if not all(prompts) or L > T:
        raise ValueError(f"generate: prompts must hold 1 to block_size={T} tokens, got lengths "
                         f"{[len(p) for p in prompts]}")
    pad = np.array([L - len(p) for p in prompts])
    idx = np.zeros((B, T), np.int64)
    for b, p in enumerate(prompts):
        idx[b, pad[b]:L] = p
    valid = xp.asarray(np.arange(T) >= pad[:, None])                        # (B, T)
    pos = xp.asarray(np.maximum(np.arange(T) - pad[:, None], 0))            # (B, T)
    C, NH = cfg["n_embd"], cfg["n_head"]
    kv = [[xp.zeros((B, NH, T, C // NH), params["wte"].dtype) for _ in "kv"]
          for _ in range(cfg["n_layer"])] if kv_cache else None
    done, out = np.zeros(B, bool), []
    for t in range(L, min(L + n_tokens, T)):
        lo = t - 1 if kv_cache and t > L else 0                             # slots computed this step
        out.append(to_host(infer(params, xp.asarray(idx[:, lo:t]), pos[:, lo:t], valid[:, :t], cfg, kv, lo)))
        nxt = pick(out[-1], temperature, top_k, top_p, rng)
        idx[:, t] = np.where(done, idx[:, t - 1], nxt)
        done |= nxt == stop_token
        if done.all():
            break
    new = idx[:, L:L + len(out)].tolist()
    cut = lambda row: row[:row.index(stop_token) + 1] if stop_token in row else row
    return [cut(r) for r in new], np.stack(out, 1) if out else np.zeros((B, 0, cfg["vocab_size"]))


def sample(args, xp):
    try:
        if args.weights:
            (params, cfg), data = load_pretrained(args.weights, args.dtype, xp), {"encoding": "gpt2"}
        else:
            with np.load(args.ckpt, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                params = {k[len("params/"):]: xp.asarray(f[k].astype(args.dtype)) for k in f if k.startswith("params/")}
            cfg, data = meta["config"], meta["data"]
    except (OSError, ValueError, KeyError) as exc:
        sys.exit(f"sample: cannot load {args.weights or args.ckpt}: {type(exc).__name__}: {exc}")
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
    prompts = [encode(p) for p in args.prompts]
    try:
        tokens, _ = generate(params, prompts, args.n_tokens, cfg, args.temperature, args.top_k, args.top_p,
                             np.random.Generator(np.random.PCG64(args.seed)), not args.no_kv_cache,
                             eot if args.stop_at_eot else None)
    except ValueError as exc:
        sys.exit(f"sample: {exc}")
    for b, (p, t) in enumerate(zip(prompts, tokens)):
        if len(prompts) > 1:
            print(f"---------- sample {b + 1} of {len(prompts)}: {args.prompts[b]!r}")
        print(decode(p + t))


# ----------------------------------------------------------------------------- pretrained weights

PRESETS = {name: {"vocab_size": 50257, "block_size": 1024, "n_layer": L, "n_head": NH, "n_embd": C}
           for name, (L, NH, C) in {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024),
                                    "gpt2-large": (36, 20, 1280), "gpt2-xl": (48, 25, 1600)}.items()}
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
# config.json entries that change the math, and the value this GPT-2 implements (transformers' default)
HF_ARCH = {"model_type": "gpt2", "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "n_inner": None,
           "tie_word_embeddings": True, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
           "add_cross_attention": False}


def read_safetensors(path):
    """{name: host array} of a .safetensors file: 8-byte little-endian header length, JSON header
    {name: {dtype, shape, data_offsets}}, raw little-endian data. BF16 widens exactly to float32."""
    try:
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        n = int(raw[:8].view("<u8")[0])
        header = json.loads(bytes(raw[8:8 + n]))
        header.pop("__metadata__", None)
        out = {}
        for name, t in header.items():
            if t["dtype"] not in SAFETENSORS_DTYPES:
                raise ValueError(f"tensor {name} has dtype {t['dtype']} (readable: {', '.join(SAFETENSORS_DTYPES)})")
            a, b = t["data_offsets"]
            x = np.asarray(raw[8 + n + a:8 + n + b]).view(SAFETENSORS_DTYPES[t["dtype"]]).reshape(t["shape"])
            out[name] = (x.astype(np.uint32) << 16).view(np.float32) if t["dtype"] == "BF16" else x
        return out
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: not a readable safetensors file: {e}") from None


def load_pretrained(folder, dtype="float32", xp=np):
    """GPT-2 weights in Hugging Face's layout (folder/config.json + folder/model.safetensors, names with
    or without `transformer.`) -> (params in our names, config). Refuses what this GPT-2 does not compute."""
    cfg_path, st_path = os.path.join(folder, "config.json"), os.path.join(folder, "model.safetensors")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder (expected config.json and model.safetensors)")
    if not os.path.isfile(st_path):
        pickles = sorted(f for f in os.listdir(folder) if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")))
        if pickles:
            raise ValueError(f"{folder}: has {', '.join(pickles)} but no model.safetensors; pickle files are never "
                             f"loaded (unpickling can run any code). Convert once where torch is installed: "
                             f"GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)")
        raise FileNotFoundError(f"{st_path}: not found")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: not found")
    try:
        with open(cfg_path) as f:
            hf = json.load(f)
        cfg = {ours: hf[k] for ours, k in [("vocab_size", "vocab_size"), ("block_size", "n_positions"),
                                           ("n_layer", "n_layer"), ("n_head", "n_head"), ("n_embd", "n_embd")]}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_path}: unreadable or lacks a GPT-2 size ({type(e).__name__}: {e})") from None
    if not all(type(v) is int and v > 0 for v in cfg.values()):
        raise ValueError(f"{cfg_path}: the GPT-2 sizes must be positive integers, got {cfg}")
    for key, want in HF_ARCH.items():
        have = hf.get(key, want)
        if have != want and not (key == "n_inner" and have == 4 * cfg["n_embd"]):
            raise ValueError(f"{cfg_path}: {key} is {have!r}, expected {want!r}: this GPT-2 does not implement it")
    if cfg["n_embd"] % cfg["n_head"]:
        raise ValueError(f"{cfg_path}: n_embd {cfg['n_embd']} is not divisible by n_head {cfg['n_head']}")
    hf_name = lambda k: k + ".weight" if k in ("wte", "wpe") else k
    raw = read_safetensors(st_path)
    tensors = {k.removeprefix("transformer."): v for k, v in raw.items()}
    if len(tensors) < len(raw):
        raise ValueError(f"{st_path}: some names appear both with and without `transformer.`")
    shapes = {hf_name(k): s for k, s in param_shapes(cfg).items()}
    missing = [k for k in shapes if k not in tensors]
    unexpected = [k for k in tensors if k not in shapes and k != "lm_head.weight"
                  and not k.endswith((".attn.bias", ".attn.masked_bias"))]  # the causal-mask buffers
    wrong = [f"{k}: expected {s}, actual {tuple(tensors[k].shape)}" for k, s in shapes.items()
             if k in tensors and tuple(tensors[k].shape) != s]
    for what, keys in [("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)]:
        if keys:
            raise ValueError(f"{st_path}: {what} (names without `transformer.`): {'; '.join(keys)}")
    head = tensors.get("lm_head.weight")
    if head is not None and not (head.shape == tensors["wte.weight"].shape and (head == tensors["wte.weight"]).all()):
        raise ValueError(f"{st_path}: lm_head.weight differs from wte.weight; this GPT-2 ties lm_head to wte")
    return {k: xp.asarray(np.array(tensors[hf_name(k)], dtype=dtype)) for k in param_shapes(cfg)}, cfg


# ----------------------------------------------------------------------------- command line

HPARAMS = ["learning_rate", "min_lr", "warmup_iters", "lr_decay_iters", "weight_decay",
           "beta1", "beta2", "eps", "grad_clip"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train on a prepared folder (scripts/prepare_data.py), print val_loss",
                        description="Train with AdamW; defaults are nanoGPT's baby-GPT shakespeare_char config.")
    tr.add_argument("--data", required=True, help="folder with train.bin, val.bin, meta.json")
    tr.add_argument("--out", help="write the trained params to this .npz")
    for name, default in [("n_layer", 4), ("n_head", 4), ("n_embd", 128), ("block_size", 64), ("batch_size", 12),
                          ("max_iters", 2000), ("warmup_iters", 100), ("lr_decay_iters", 2000), ("eval_interval", 250),
                          ("eval_iters", 20), ("log_interval", 100), ("seed", 1337)]:
        tr.add_argument("--" + name, type=int, default=default, help=f"default {default}")
    for name, default in [("learning_rate", 1e-3), ("min_lr", 1e-4), ("weight_decay", 0.1), ("beta1", 0.9),
                          ("beta2", 0.99), ("eps", 1e-8), ("grad_clip", 1.0)]:
        tr.add_argument("--" + name, type=float, default=default, help=f"default {default}")
    sa = sub.add_parser("sample", help="continue prompts with GPT-2 weights or a checkpoint written by train",
                        description="Continue one or more prompts (batched, left-padded) with a KV cache: greedy "
                                    "at --temperature 0, else temperature, then top-k, then top-p sampling (--seed).")
    sa.add_argument("prompts", nargs="+", metavar="PROMPT", help="GPT-2 BPE text, or chars of a char checkpoint")
    src = sa.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", metavar="DIR", help="a transformers GPT-2 folder (config.json, model.safetensors)")
    src.add_argument("--ckpt", metavar="FILE", help="a .npz written by train")
    sa.add_argument("--n_tokens", type=int, default=200, help="new tokens per row, fewer at block_size (default 200)")
    sa.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    sa.add_argument("--top_k", type=int, default=200, help="keep the k most likely tokens; 0 = all (default 200)")
    sa.add_argument("--top_p", type=float, default=None, help="keep the fewest tokens whose probability reaches p")
    sa.add_argument("--seed", type=int, default=1337)
    sa.add_argument("--stop_at_eot", action="store_true", help="end a row at <|endoftext|> (GPT-2 BPE only)")
    sa.add_argument("--no_kv_cache", action="store_true", help="recompute the whole prefix every token")
    for p in (tr, sa):
        p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
        p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = ap.parse_args(argv)
    if args.command == "sample" and not (args.n_tokens >= 1 and args.temperature >= 0 and args.top_k >= 0
                                         and (args.top_p is None or 0 < args.top_p <= 1)):
        sa.error("need --n_tokens >= 1, --temperature >= 0, --top_k >= 0, 0 < --top_p <= 1")
    if args.device == "gpu":
        import cupy as xp
    else:
        xp = np
    {"train": train, "sample": sample}[args.command](args, xp)


if __name__ == "__main__":
    main()
