"""GPT-2 in one page: the contract of harness/spec/contract.py, and train / sample commands:
    python impl/gpt2_nano.py train --data DIR --out ckpt.npz    # DIR from scripts/prepare_data.py
    python impl/gpt2_nano.py sample --ckpt ckpt.npz "ROMEO:"
Each layer is a forward/backward pair. A backward reads its forward's inputs back from the cache, returns
the gradient of its input and puts its parameters' gradients into `grads` under the layer's name.
B batch, T time (<= block_size), C n_embd, V vocab, NH heads, HS head size C // NH; `xp` is numpy or cupy.
"""
import argparse, json, math, os, sys

import numpy as np


def array_module(a):
    return sys.modules[type(a).__module__.split(".")[0]]                                 # numpy or cupy


def to_host(a):
    return a.get() if hasattr(a, "get") else a


def embedding_forward(idx, wte, wpe):
    return wte[idx] + wpe[:idx.shape[1]]                                                 # (B, T, C)


def embedding_backward(demb, idx, wte, wpe):
    # repeated ids summed by a one-hot matmul over the distinct ids: a fixed order on every backend
    xp, (B, T, C) = array_module(demb), demb.shape
    ids, slot = xp.unique(idx.reshape(-1), return_inverse=True)                         # distinct ids, (B*T,)
    onehot = (slot.reshape(-1, 1) == xp.arange(len(ids))).astype(demb.dtype)            # (B*T, n_ids)
    dwte, dwpe = xp.zeros_like(wte), xp.zeros_like(wpe)                                  # (V, C), (block_size, C)
    dwte[ids] = onehot.T @ demb.reshape(B * T, C)
    dwpe[:T] = demb.sum(0)
    return dwte, dwpe


def normalize(x):
    xc = x - x.mean(-1, keepdims=True)                                                   # (B, T, C)
    rstd = ((xc * xc).mean(-1, keepdims=True) + 1e-5) ** -0.5                            # (B, T, 1)
    return xc * rstd, rstd


def layernorm_forward(x, params, name):
    return normalize(x)[0] * params[name + ".weight"] + params[name + ".bias"]           # (B, T, C)


def layernorm_backward(dout, x, params, grads, name):
    xhat, rstd = normalize(x)
    grads[name + ".weight"], grads[name + ".bias"] = (dout * xhat).sum((0, 1)), dout.sum((0, 1))
    dxhat = dout * params[name + ".weight"]                                              # (B, T, C)
    # the direct path, through the mean, through the variance
    return rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))


def linear_forward(x, params, name):
    return x @ params[name + ".weight"] + params[name + ".bias"]                         # (B, T, out)


def linear_backward(dout, x, params, grads, name):
    w = params[name + ".weight"]                                                         # (in, out)
    grads[name + ".weight"] = x.reshape(-1, w.shape[0]).T @ dout.reshape(-1, w.shape[1])  # (in, out)
    grads[name + ".bias"] = dout.sum((0, 1))                                             # (out,)
    return dout @ w.T                                                                    # (B, T, in)


def softmax_forward(x):
    e = array_module(x).exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_backward(dout, out):
    return out * (dout - (dout * out).sum(-1, keepdims=True))


def split_heads(qkv, NH):
    B, T, C3 = qkv.shape
    return qkv.reshape(B, T, 3, NH, C3 // 3 // NH).transpose(2, 0, 3, 1, 4)              # 3 x (B, NH, T, HS)


def attention_forward(qkv, NH):
    """(y, att): causal self-attention of the fused q, k, v; y has the heads side by side."""
    xp, (B, T, C3) = array_module(qkv), qkv.shape
    q, k, v = split_heads(qkv, NH)
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))                   # (B, NH, T, T)
    att = softmax_forward(xp.where(xp.triu(xp.ones((T, T), bool), 1), -xp.inf, scores))  # the future masked
    return (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C3 // 3), att                   # (B, T, C), (B, NH, T, T)


def attention_backward(dy, qkv, att, NH):
    """dqkv. Masked entries have att == 0, so the mask needs no backward of its own."""
    xp, (B, T, C3) = array_module(dy), qkv.shape
    q, k, v = split_heads(qkv, NH)
    dy = dy.reshape(B, T, NH, -1).transpose(0, 2, 1, 3)                                  # (B, NH, T, HS)
    dv = att.swapaxes(-1, -2) @ dy                                                       # (B, NH, T, HS)
    dscores = softmax_backward(dy @ v.swapaxes(-1, -2), att) * (1.0 / math.sqrt(q.shape[-1]))  # (B, NH, T, T)
    dq, dk = dscores @ k, dscores.swapaxes(-1, -2) @ q                                   # (B, NH, T, HS)
    return xp.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, C3)             # (B, T, 3C)


GELU_C = math.sqrt(2.0 / math.pi)


def gelu_forward(x):
    """GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + array_module(x).tanh(GELU_C * (x + 0.044715 * x * x * x)))   # (B, T, 4C)


def gelu_backward(dout, x):
    th = array_module(x).tanh(GELU_C * (x + 0.044715 * x * x * x))                       # (B, T, 4C)
    return dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_C * (1.0 + 3 * 0.044715 * x * x))


def crossentropy_forward(logits, targets):
    xp, shifted = array_module(logits), logits - logits.max(-1, keepdims=True)           # (B, T, V)
    logprobs = shifted - xp.log(xp.exp(shifted).sum(-1, keepdims=True))                  # (B, T, V)
    return -xp.take_along_axis(logprobs, targets[..., None], -1).mean()


def crossentropy_backward(logits, targets):
    B, T, V = logits.shape
    onehot = targets[..., None] == array_module(logits).arange(V)                        # (B, T, V)
    return (softmax_forward(logits) - onehot) * (1.0 / (B * T))                          # (B, T, V)


def init(config, seed, xp=np, dtype="float32"):
    """Drawn on the host in state-dict order: N(0, 0.02), c_proj N(0, 0.02 / sqrt(2 n_layer)); LayerNorm 1, 0."""
    V, C, L = config["vocab_size"], config["n_embd"], config["n_layer"]
    shapes = {"wte": (V, C), "wpe": (config["block_size"], C)}
    for i in range(L):
        for name, shape in [("ln_1", (C,)), ("attn.c_attn", (C, 3 * C)), ("attn.c_proj", (C, C)),
                            ("ln_2", (C,)), ("mlp.c_fc", (C, 4 * C)), ("mlp.c_proj", (4 * C, C))]:
            shapes[f"h.{i}.{name}.weight"], shapes[f"h.{i}.{name}.bias"] = shape, shape[-1:]
    rng, params = np.random.Generator(np.random.PCG64(seed)), {}
    for name, shape in {**shapes, "ln_f.weight": (C,), "ln_f.bias": (C,)}.items():
        std = 0.02 / math.sqrt(2 * L) if "c_proj" in name else 0.02
        value = rng.normal(0.0, std, shape) if len(shape) == 2 else np.full(shape, 0.0 if "bias" in name else 1.0)
        params[name] = xp.asarray(value.astype(dtype))
    return params


def forward(params, idx, targets, config):
    """(mean cross-entropy as a float, or None without targets; cache of canonical activations)."""
    NH, cache = config["n_head"], {"idx": idx, "targets": targets}
    x = cache["emb"] = embedding_forward(idx, params["wte"], params["wpe"])              # (B, T, C)
    for i in range(config["n_layer"]):
        h = f"h.{i}."
        ln_1 = cache[h + "ln_1"] = layernorm_forward(x, params, h + "ln_1")                # (B, T, C)
        qkv = cache[h + "attn.qkv"] = linear_forward(ln_1, params, h + "attn.c_attn")      # (B, T, 3C)
        y, att = attention_forward(qkv, NH)                                                 # (B, T, C), (B, NH, T, T)
        cache[h + "attn.y"], cache[h + "attn.att"] = y, att
        attn_proj = cache[h + "attn.proj"] = linear_forward(y, params, h + "attn.c_proj")   # (B, T, C)
        x = cache[h + "res_1"] = x + attn_proj                                              # (B, T, C)
        ln_2 = cache[h + "ln_2"] = layernorm_forward(x, params, h + "ln_2")                # (B, T, C)
        fc = cache[h + "mlp.fc"] = linear_forward(ln_2, params, h + "mlp.c_fc")            # (B, T, 4C)
        gelu = cache[h + "mlp.gelu"] = gelu_forward(fc)                                     # (B, T, 4C)
        mlp_proj = cache[h + "mlp.proj"] = linear_forward(gelu, params, h + "mlp.c_proj")   # (B, T, C)
        x = cache[h + "out"] = x + mlp_proj                                                 # (B, T, C)
    ln_f = cache["ln_f"] = layernorm_forward(x, params, "ln_f")                             # (B, T, C)
    logits = cache["logits"] = ln_f @ params["wte"].T                                       # (B, T, V): lm_head
    return (None if targets is None else float(crossentropy_forward(logits, targets))), cache


def backward(params, cache, config):
    """Gradients of the mean loss, same keys as params. A residual x + f(x) passes dx to both branches."""
    NH, L, (V, C), grads = config["n_head"], config["n_layer"], params["wte"].shape, {}
    block_in = ["emb"] + [f"h.{i}.out" for i in range(L)]                # block i's input; [L] is ln_f's
    dlogits = crossentropy_backward(cache["logits"], cache["targets"])                   # (B, T, V)
    dln_f = dlogits @ params["wte"]                                                      # (B, T, C): lm_head
    dwte = dlogits.reshape(-1, V).T @ cache["ln_f"].reshape(-1, C)                       # (V, C): lm_head's share
    dx = layernorm_backward(dln_f, cache[block_in[L]], params, grads, "ln_f")            # (B, T, C)
    for i in reversed(range(L)):
        h = f"h.{i}."
        dgelu = linear_backward(dx, cache[h + "mlp.gelu"], params, grads, h + "mlp.c_proj")  # (B, T, 4C)
        dfc = gelu_backward(dgelu, cache[h + "mlp.fc"])                                  # (B, T, 4C)
        dln_2 = linear_backward(dfc, cache[h + "ln_2"], params, grads, h + "mlp.c_fc")   # (B, T, C)
        dres_1 = dx + layernorm_backward(dln_2, cache[h + "res_1"], params, grads, h + "ln_2")  # (B, T, C)
        dy = linear_backward(dres_1, cache[h + "attn.y"], params, grads, h + "attn.c_proj")  # (B, T, C)
        dqkv = attention_backward(dy, cache[h + "attn.qkv"], cache[h + "attn.att"], NH)  # (B, T, 3C)
        dln_1 = linear_backward(dqkv, cache[h + "ln_1"], params, grads, h + "attn.c_attn")  # (B, T, C)
        dx = dres_1 + layernorm_backward(dln_1, cache[block_in[i]], params, grads, h + "ln_1")  # (B, T, C)
    demb_wte, grads["wpe"] = embedding_backward(dx, cache["idx"], params["wte"], params["wpe"])
    grads["wte"] = dwte + demb_wte                                                       # wte is used twice
    return {name: grads[name] for name in params}


def lr_at(step, hparams):
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr at lr_decay_iters, then flat."""
    lr, min_lr, warmup, decay = (hparams[k] for k in ("learning_rate", "min_lr", "warmup_iters", "lr_decay_iters"))
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (decay - warmup))) * (lr - min_lr)


def adamw_step(params, grads, state, step, lr, hparams):
    """torch's clip_grad_norm_ (scale by min(1, grad_clip / (norm + 1e-6)); grad_clip <= 0 is off), then
    AdamW in place: weight decay on 2-D tensors only, bias correction with t = step + 1. Returns the norm.
    Python floats only: a numpy float64 scalar would turn float32 arrays into float64."""
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    clip = float(hparams["grad_clip"])
    scale = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
    beta1, beta2, eps, decay = (float(hparams[k]) for k in ("beta1", "beta2", "eps", "weight_decay"))
    lr, t = float(lr), step + 1
    for name, p in params.items():
        g = grads[name] * scale
        m = state["m." + name] = beta1 * state.get("m." + name, 0.0) + (1.0 - beta1) * g
        v = state["v." + name] = beta2 * state.get("v." + name, 0.0) + (1.0 - beta2) * g * g
        p *= 1.0 - lr * decay * (p.ndim >= 2)
        p -= lr * (m / (1.0 - beta1 ** t)) / (array_module(p).sqrt(v / (1.0 - beta2 ** t)) + eps)
    return norm


def get_batch(data, batch_size, block_size, rng):
    """Host int64 (B, T): x = data[i:i+T], y = data[i+1:i+1+T], i = rng.integers(0, len(data) - T, B)."""
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    windows = np.asarray(data)[ix[:, None] + np.arange(block_size + 1)].astype(np.int64)  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def choose(logits, temperature, top_k, top_p, u):
    """Next ids (B,) from host logits (B, V), in float64: greedy at temperature 0, else logits / temperature,
    top-k, top-p (the fewest most probable tokens whose probability reaches top_p), inverse CDF at u."""
    if temperature == 0:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / temperature                                          # (B, V)
    if top_k:
        z[z < np.sort(z, -1)[:, [-min(top_k, z.shape[-1])]]] = -np.inf
    probs = softmax_forward(z)                                                           # (B, V)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, -1, kind="stable")                                    # most probable first
        ranked = np.take_along_axis(probs, order, -1)                                    # (B, V)
        np.put_along_axis(probs, order, np.where(ranked.cumsum(-1) - ranked < top_p, ranked, 0.0), -1)
    cdf = probs.cumsum(-1)                                                               # (B, V)
    return (cdf <= u[:, None] * cdf[:, -1:]).sum(-1)


def generate(params, prompts, n_tokens, config, temperature=0.0, top_k=None, top_p=None, rng=None,
             kv_cache=True, stop_token=None):
    """(new ids per prompt, ending at stop_token if any; host logits (B, steps, V)). Each step runs forward
    on each row's whole prefix, so rows of any length need no padding; kv_cache is accepted and ignored
    (a cache would change the speed, not the tokens or the logits)."""
    xp, B, T, V = array_module(params["wte"]), len(prompts), config["block_size"], config["vocab_size"]
    if not all(1 <= len(p) <= T for p in prompts):
        raise ValueError(f"generate: prompts must hold 1 to block_size={T} tokens, got {[len(p) for p in prompts]}")
    rows, new, steps = [list(p) for p in prompts], [[] for _ in prompts], []
    for _ in range(min(n_tokens, T - max(map(len, rows)))):
        steps.append(np.stack([to_host(forward(params, xp.asarray([row]), None, config)[1]["logits"][0, -1])
                               for row in rows]))                                        # (B, V)
        u = rng.random(B) if temperature != 0 else None                                  # every row, finished or not
        picked = choose(steps[-1], temperature, top_k, top_p, u)
        for b in range(B):
            if not (new[b] and new[b][-1] == stop_token):                                # a finished row takes no more
                new[b].append(int(picked[b]))
            rows[b].append(new[b][-1])
        if stop_token is not None and all(r[-1] == stop_token for r in new):
            break
    return new, np.stack(steps, 1) if steps else np.zeros((B, 0, V), params["wte"].dtype)


COMMON = {"device": "cpu", "dtype": "float32", "seed": 1337}
TRAIN = {"data": "", "out": "", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12,
         "max_iters": 2000, "eval_interval": 250, "eval_iters": 20, "learning_rate": 1e-3, "min_lr": 1e-4,
         "warmup_iters": 100, "lr_decay_iters": 2000, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99,
         "eps": 1e-8, "grad_clip": 1.0}                                                  # nanoGPT's baby GPT
SAMPLE = {"ckpt": "", "n_tokens": 200, "temperature": 0.8, "top_k": 200, "top_p": 1.0}


def train(args, xp):
    """Train from init(seed); print the val loss of the same eval_iters batches every eval_interval steps."""
    meta = json.load(open(os.path.join(args.data, "meta.json")))
    data = {s: np.memmap(os.path.join(args.data, s + ".bin"), dtype=np.uint16, mode="r") for s in ("train", "val")}
    config = dict(vocab_size=meta["vocab_size"], block_size=args.block_size, n_layer=args.n_layer,
                  n_head=args.n_head, n_embd=args.n_embd)
    params, state = init(config, args.seed, xp, args.dtype), {}
    rng = np.random.Generator(np.random.PCG64([args.seed, 1]))                           # the training batches

    def run(split, rng):
        x, y = get_batch(data[split], args.batch_size, args.block_size, rng)
        return forward(params, xp.asarray(x), xp.asarray(y), config)

    for step in range(args.max_iters + 1):
        if step % args.eval_interval == 0 or step == args.max_iters:
            val_rng = np.random.Generator(np.random.PCG64([args.seed, 2]))
            val = sum(run("val", val_rng)[0] for _ in range(args.eval_iters)) / args.eval_iters
            print(f"step {step}: val loss {val:.4f}", flush=True)
        if step < args.max_iters:
            _, cache = run("train", rng)
            adamw_step(params, backward(params, cache, config), state, step, lr_at(step, vars(args)), vars(args))
    if args.out:
        np.savez(args.out, meta=json.dumps({"config": config, "data": meta}),
                 **{"params/" + k: to_host(v) for k, v in params.items()})
    print(f"val_loss {val:.4f}")


def sample(args, xp):
    with np.load(args.ckpt) as f:
        meta = json.loads(str(f["meta"]))
        params = {k[len("params/"):]: xp.asarray(f[k].astype(args.dtype)) for k in f if k.startswith("params/")}
    if meta["data"]["encoding"] == "char":
        chars = meta["data"]["chars"]
        encode, decode = (lambda s: [chars.index(ch) for ch in s]), (lambda ids: "".join(chars[i] for i in ids))
    else:
        import tiktoken
        encoding = tiktoken.get_encoding("gpt2")
        encode, decode = encoding.encode_ordinary, encoding.decode
    prompts = [encode(p) for p in args.prompts]
    tokens, _ = generate(params, prompts, args.n_tokens, meta["config"], args.temperature, args.top_k, args.top_p,
                         np.random.Generator(np.random.PCG64(args.seed)))
    for prompt, new in zip(prompts, tokens):
        print(decode(prompt + new), end="\n\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, defaults in (("train", TRAIN), ("sample", SAMPLE)):
        sub = commands.add_parser(command)
        for name, default in {**COMMON, **defaults}.items():
            sub.add_argument("--" + name, type=type(default), default=default, required=name in ("data", "ckpt"))
    commands.choices["sample"].add_argument("prompts", nargs="+")
    args = parser.parse_args(argv)
    xp = __import__("cupy") if args.device == "gpu" else np
    {"train": train, "sample": sample}[args.command](args, xp)


if __name__ == "__main__":
    main()
