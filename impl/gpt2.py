"""nanoproof's minimal GPT-2: forward, backward, AdamW, training, val loss and sampling in one file.

numpy on the CPU or cupy on the GPU (the array module `xp` is chosen once, at the edge), float32 by
default or float64. Shrink it, speed it up, then let `scripts/verify.py` say whether it still computes
the same function. Imports numpy, cupy (optional) and tiktoken (for GPT-2 BPE datasets) only.

    python impl/gpt2.py train --data data/shakespeare_char --max_iters 2000
    python impl/gpt2.py sample --ckpt out/ckpt.npz --prompt "ROMEO:"

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


def layernorm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    rstd = (xc * xc).mean(-1, keepdims=True) + 1e-5
    rstd **= -0.5
    xhat = xc * rstd
    return xhat * w + b, xhat, rstd


def layernorm_back(dout, xhat, rstd, w):
    dxhat = dout * w
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, (dout * xhat).sum((0, 1)), dout.sum((0, 1))


def forward(params, idx, targets, cfg):
    """Returns (mean cross-entropy as a float, or None without targets; cache of named arrays)."""
    xp = array_module(params["wte"])
    B, T = idx.shape
    C, NH = cfg["n_embd"], cfg["n_head"]
    HS = C // NH
    mask = xp.triu(xp.full((T, T), -xp.inf, dtype=params["wte"].dtype), 1)
    c = {"idx": idx, "targets": targets}
    x = c["emb"] = params["wte"][idx] + params["wpe"][:T]
    for i in range(cfg["n_layer"]):
        p = lambda n: params[f"h.{i}.{n}"]
        a, c[f"h.{i}.ln_1.xhat"], c[f"h.{i}.ln_1.rstd"] = layernorm(x, p("ln_1.weight"), p("ln_1.bias"))
        c[f"h.{i}.ln_1"] = a
        qkv = c[f"h.{i}.attn.qkv"] = a @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        q, k, v = qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)     # 3 x (B, NH, T, HS)
        att = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(HS)) + mask
        att = xp.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        c[f"h.{i}.attn.att"] = att
        y = c[f"h.{i}.attn.y"] = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        ap = c[f"h.{i}.attn.proj"] = y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        x = c[f"h.{i}.res_1"] = x + ap
        m, c[f"h.{i}.ln_2.xhat"], c[f"h.{i}.ln_2.rstd"] = layernorm(x, p("ln_2.weight"), p("ln_2.bias"))
        c[f"h.{i}.ln_2"] = m
        f = c[f"h.{i}.mlp.fc"] = m @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias")
        th = c[f"h.{i}.mlp.tanh"] = xp.tanh(GELU_C * (f + 0.044715 * f * f * f))
        g = c[f"h.{i}.mlp.gelu"] = 0.5 * f * (1.0 + th)
        mp = c[f"h.{i}.mlp.proj"] = g @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
        x = c[f"h.{i}.out"] = x + mp
    x, c["ln_f.xhat"], c["ln_f.rstd"] = layernorm(x, params["ln_f.weight"], params["ln_f.bias"])
    c["ln_f"] = x
    logits = c["logits"] = x @ params["wte"].T
    if targets is None:
        return None, c
    mx = logits.max(-1, keepdims=True)
    lse = mx + xp.log(xp.exp(logits - mx).sum(-1, keepdims=True))              # log-sum-exp, (B, T, 1)
    c["probs"] = xp.exp(logits - lse)
    picked = xp.take_along_axis(logits - lse, targets[..., None], -1)
    return -float(picked.mean()), c


def backward(params, c, cfg):
    """Gradients of the mean loss, same keys as params: forward read backwards."""
    xp = array_module(params["wte"])
    idx, targets, probs = c["idx"], c["targets"], c["probs"]
    B, T = idx.shape
    C, NH = cfg["n_embd"], cfg["n_head"]
    HS = C // NH
    g = {}
    dlogits = probs.copy()                                                  # (B, T, V)
    dlogits.reshape(B * T, -1)[xp.arange(B * T), targets.reshape(-1)] -= 1.0  # softmax - onehot
    dlogits *= 1.0 / (B * T)
    dwte = dlogits.reshape(B * T, -1).T @ c["ln_f"].reshape(B * T, C)       # lm_head's share of wte
    dx = dlogits @ params["wte"]
    dx, g["ln_f.weight"], g["ln_f.bias"] = layernorm_back(dx, c["ln_f.xhat"], c["ln_f.rstd"],
                                                          params["ln_f.weight"])
    for i in reversed(range(cfg["n_layer"])):
        p = lambda n: params[f"h.{i}.{n}"]
        # mlp
        g[f"h.{i}.mlp.c_proj.weight"] = c[f"h.{i}.mlp.gelu"].reshape(B * T, -1).T @ dx.reshape(B * T, C)
        g[f"h.{i}.mlp.c_proj.bias"] = dx.sum((0, 1))
        dg = dx @ p("mlp.c_proj.weight").T
        f, th = c[f"h.{i}.mlp.fc"], c[f"h.{i}.mlp.tanh"]
        df = dg * (0.5 * (1.0 + th) + 0.5 * f * (1.0 - th * th) * GELU_C * (1.0 + 3 * 0.044715 * f * f))
        g[f"h.{i}.mlp.c_fc.weight"] = c[f"h.{i}.ln_2"].reshape(B * T, C).T @ df.reshape(B * T, -1)
        g[f"h.{i}.mlp.c_fc.bias"] = df.sum((0, 1))
        dm, g[f"h.{i}.ln_2.weight"], g[f"h.{i}.ln_2.bias"] = layernorm_back(
            df @ p("mlp.c_fc.weight").T, c[f"h.{i}.ln_2.xhat"], c[f"h.{i}.ln_2.rstd"], p("ln_2.weight"))
        dx = dx + dm
        # attention
        g[f"h.{i}.attn.c_proj.weight"] = c[f"h.{i}.attn.y"].reshape(B * T, C).T @ dx.reshape(B * T, C)
        g[f"h.{i}.attn.c_proj.bias"] = dx.sum((0, 1))
        dy = (dx @ p("attn.c_proj.weight").T).reshape(B, T, NH, HS).transpose(0, 2, 1, 3)
        q, k, v = c[f"h.{i}.attn.qkv"].reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)
        att = c[f"h.{i}.attn.att"]
        datt = dy @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ dy
        ds = att * (datt - (datt * att).sum(-1, keepdims=True)) * (1.0 / math.sqrt(HS))
        dqkv = xp.stack([ds @ k, ds.transpose(0, 1, 3, 2) @ q, dv])         # (3, B, NH, T, HS)
        dqkv = dqkv.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * C)
        g[f"h.{i}.attn.c_attn.weight"] = c[f"h.{i}.ln_1"].reshape(B * T, C).T @ dqkv.reshape(B * T, -1)
        g[f"h.{i}.attn.c_attn.bias"] = dqkv.sum((0, 1))
        da, g[f"h.{i}.ln_1.weight"], g[f"h.{i}.ln_1.bias"] = layernorm_back(
            dqkv @ p("attn.c_attn.weight").T, c[f"h.{i}.ln_1.xhat"], c[f"h.{i}.ln_1.rstd"], p("ln_1.weight"))
        dx = dx + da
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
    (decoupled weight decay on 2-D tensors only, bias correction with t = step + 1). Returns the norm."""
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    scale = min(1.0, hp["grad_clip"] / (norm + 1e-6)) if hp["grad_clip"] > 0 else 1.0
    b1, b2, t = hp["beta1"], hp["beta2"], step + 1
    for name, p in params.items():
        g = grads[name] * scale if scale != 1.0 else grads[name]
        if "m." + name not in state:
            state["m." + name], state["v." + name] = p * 0, p * 0
        m, v = state["m." + name], state["v." + name]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        if p.ndim >= 2:
            p *= 1 - lr * hp["weight_decay"]
        p -= (lr / (1 - b1 ** t)) * m / ((v * (1 / (1 - b2 ** t))) ** 0.5 + hp["eps"])
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
        adamw_step(params, backward(params, cache, cfg), state, step, lr_at(step, hp), hp)
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


def generate(params, idx, n_tokens, cfg, temperature, top_k, rng, xp):
    """Append n_tokens to idx (B, T) one at a time; temperature 0 is greedy."""
    for _ in range(n_tokens):
        _, c = forward(params, xp.asarray(idx[:, -cfg["block_size"]:]), None, cfg)
        logits = to_host(c["logits"][:, -1, :]).astype(np.float64)
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            logits = logits / temperature
            if top_k:
                logits[logits < np.sort(logits, -1)[:, [-min(top_k, logits.shape[-1])]]] = -np.inf
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            nxt = (probs.cumsum(-1) < rng.random((len(idx), 1))).sum(-1).clip(max=probs.shape[-1] - 1)
        idx = np.concatenate([idx, nxt[:, None]], 1)
    return idx


def sample(args, xp):
    with np.load(args.ckpt, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        params = {k[len("params/"):]: xp.asarray(f[k].astype(args.dtype)) for k in f if k.startswith("params/")}
    data = meta["data"]
    if data["encoding"] == "char":
        stoi = {ch: i for i, ch in enumerate(data["chars"])}
        unknown = sorted(set(args.prompt) - set(stoi))
        if unknown:
            sys.exit(f"sample: the prompt has characters outside the vocabulary: {unknown!r}")
        encode, decode = (lambda s: [stoi[ch] for ch in s]), (lambda ids: "".join(data["chars"][i] for i in ids))
    else:
        import tiktoken
        enc = tiktoken.get_encoding("gpt2")
        encode, decode = enc.encode_ordinary, enc.decode
    idx = np.array([encode(args.prompt or "\n")], dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(args.seed))
    out = generate(params, idx, args.n_tokens, meta["config"], args.temperature, args.top_k, rng, xp)
    print(decode(out[0].tolist()))


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
    sa = sub.add_parser("sample", help="continue a prompt with a checkpoint written by train")
    sa.add_argument("--ckpt", required=True)
    sa.add_argument("--prompt", default="")
    sa.add_argument("--n_tokens", type=int, default=200)
    sa.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    sa.add_argument("--top_k", type=int, default=200)
    sa.add_argument("--seed", type=int, default=1337)
    for p in (tr, sa):
        p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
        p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = ap.parse_args(argv)
    if args.device == "gpu":
        import cupy as xp
    else:
        xp = np
    {"train": train, "sample": sample}[args.command](args, xp)


if __name__ == "__main__":
    main()
