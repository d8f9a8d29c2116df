"""GPT-2 in one page: the contract of harness/spec/contract.py, and train / sample commands:
    python impl/gpt2_nano.py train --data DIR --out ckpt.npz    # DIR from scripts/prepare_data.py
    python impl/gpt2_nano.py sample --ckpt ckpt.npz "ROMEO:"
Each layer is a forward/backward pair (the embedding lookup and the loss are inline): a backward reads its
forward's input from the cache, returns the input's gradient and puts the parameters' gradients into `grads`.
B batch, T time (<= block_size), C n_embd, V vocab, NH heads, HS head size C // NH; `xp` is numpy or cupy."""
import argparse, json, math, os, sys

import numpy as np


def array_module(a):
    return sys.modules[type(a).__module__.split(".")[0]]                                 # numpy or cupy


def to_host(a):
    return a.get() if hasattr(a, "get") else a


def embedding_backward(demb, idx, params, grads):
    xp, (B, T, C) = array_module(demb), demb.shape
    ids, slot = xp.unique(idx.reshape(-1), return_inverse=True)                         # distinct ids, (B*T,)
    onehot = (slot.reshape(-1, 1) == xp.arange(len(ids))).astype(demb.dtype)            # (B*T, n_ids): no scatter-add
    grads["wte"][ids] += onehot.T @ demb.reshape(B * T, C)                              # on top of lm_head's share
    grads["wpe"] = xp.pad(demb.sum(0), ((0, len(params["wpe"]) - T), (0, 0)))            # (block_size, C)


def normalize(x):
    xc = x - x.mean(-1, keepdims=True)                                                   # (B, T, C)
    rstd = ((xc * xc).mean(-1, keepdims=True) + 1e-5) ** -0.5                            # (B, T, 1)
    return xc * rstd, rstd


def layernorm_forward(x, params, name):
    return normalize(x)[0] * params[name + ".weight"] + params[name + ".bias"]           # (B, T, C)


def layernorm_backward(dout, x, params, grads, name):
    xhat, rstd = normalize(x)
    grads[name + ".weight"], grads[name + ".bias"] = (dout * xhat).sum((0, 1)), dout.sum((0, 1))
    dxhat = dout * params[name + ".weight"]                          # (B, T, C); dx: direct, via mean, via variance
    return rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))


def linear_forward(x, params, name):
    return x @ params[name + ".weight"] + params[name + ".bias"]                         # (B, T, out)


def linear_backward(dout, x, params, grads, name):
    grads[name + ".weight"] = x.reshape(-1, x.shape[-1]).T @ dout.reshape(-1, dout.shape[-1])  # (in, out)
    grads[name + ".bias"] = dout.sum((0, 1))                                             # (out,)
    return dout @ params[name + ".weight"].T                                             # (B, T, in)


def softmax(x):
    e = array_module(x).exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention_forward(qkv, NH):                       # causal self-attention of the fused q, k, v -> (y, att)
    xp, (B, T, C3) = array_module(qkv), qkv.shape
    q, k, v = qkv.reshape(B, T, 3, NH, -1).transpose(2, 0, 3, 1, 4)                      # 3 x (B, NH, T, HS)
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))                   # (B, NH, T, T)
    att = softmax(xp.where(xp.triu(xp.ones((T, T), bool), 1), -xp.inf, scores))          # the future masked
    return (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C3 // 3), att                   # (B, T, C): heads side by side


def attention_backward(dy, qkv, att, NH):             # masked entries have att == 0: the mask needs no backward
    xp, (B, T, C3) = array_module(dy), qkv.shape
    q, k, v = qkv.reshape(B, T, 3, NH, -1).transpose(2, 0, 3, 1, 4)                      # 3 x (B, NH, T, HS)
    dy = dy.reshape(B, T, NH, -1).transpose(0, 2, 1, 3)                                  # (B, NH, T, HS)
    dv, datt = att.swapaxes(-1, -2) @ dy, dy @ v.swapaxes(-1, -2)                        # (B, NH, T, HS), (.., T, T)
    dscores = att * (datt - (datt * att).sum(-1, keepdims=True)) * (1.0 / math.sqrt(q.shape[-1]))  # via softmax
    dq, dk = dscores @ k, dscores.swapaxes(-1, -2) @ q                                   # (B, NH, T, HS)
    return xp.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, C3)             # (B, T, 3C)


GELU_C = math.sqrt(2.0 / math.pi)                       # GPT-2's GELU: 0.5 x (1 + tanh(GELU_C (x + 0.044715 x^3)))


def gelu_forward(x):
    return 0.5 * x * (1.0 + array_module(x).tanh(GELU_C * (x + 0.044715 * x * x * x)))   # (B, T, 4C)


def gelu_backward(dout, x):
    th = array_module(x).tanh(GELU_C * (x + 0.044715 * x * x * x))                       # (B, T, 4C)
    return dout * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_C * (1.0 + 3 * 0.044715 * x * x))


def init(config, seed, xp=np, dtype="float32"):  # host draws, state-dict order; c_proj std 0.02 / sqrt(2 n_layer)
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
    xp, NH, cache = array_module(params["wte"]), config["n_head"], {"idx": idx, "targets": targets}
    x = cache["emb"] = params["wte"][idx] + params["wpe"][:idx.shape[1]]                  # (B, T, C): embedding
    for h in [f"h.{i}." for i in range(config["n_layer"])]:
        ln_1 = cache[h + "ln_1"] = layernorm_forward(x, params, h + "ln_1")                # (B, T, C)
        qkv = cache[h + "attn.qkv"] = linear_forward(ln_1, params, h + "attn.c_attn")      # (B, T, 3C)
        y, att = cache[h + "attn.y"], cache[h + "attn.att"] = attention_forward(qkv, NH)   # (B, T, C), (B, NH, T, T)
        attn_proj = cache[h + "attn.proj"] = linear_forward(y, params, h + "attn.c_proj")   # (B, T, C)
        x = cache[h + "res_1"] = x + attn_proj                                              # (B, T, C)
        ln_2 = cache[h + "ln_2"] = layernorm_forward(x, params, h + "ln_2")                # (B, T, C)
        fc = cache[h + "mlp.fc"] = linear_forward(ln_2, params, h + "mlp.c_fc")            # (B, T, 4C)
        gelu = cache[h + "mlp.gelu"] = gelu_forward(fc)                                     # (B, T, 4C)
        mlp_proj = cache[h + "mlp.proj"] = linear_forward(gelu, params, h + "mlp.c_proj")   # (B, T, C)
        x = cache[h + "out"] = x + mlp_proj                                                 # (B, T, C)
    ln_f = cache["ln_f"] = layernorm_forward(x, params, "ln_f")                             # (B, T, C)
    logits = cache["logits"] = ln_f @ params["wte"].T                                       # (B, T, V): lm_head
    if targets is None:
        return None, cache
    shifted = logits - logits.max(-1, keepdims=True)                                        # (B, T, V)
    logprobs = shifted - xp.log(xp.exp(shifted).sum(-1, keepdims=True))                     # (B, T, V)
    return float(-xp.take_along_axis(logprobs, targets[..., None], -1).mean()), cache        # mean cross-entropy


def backward(params, cache, config):                # forward read in reverse; a residual passes dx to both branches
    NH, L, (V, C), grads = config["n_head"], config["n_layer"], params["wte"].shape, {}
    block_in = ["emb"] + [f"h.{i}.out" for i in range(L)]                # block i's input; [L] is ln_f's
    onehot = cache["targets"][..., None] == array_module(cache["logits"]).arange(V)        # (B, T, V)
    dlogits = (softmax(cache["logits"]) - onehot) * (1.0 / cache["targets"].size)         # (B, T, V): cross-entropy's
    grads["wte"] = dlogits.reshape(-1, V).T @ cache["ln_f"].reshape(-1, C)               # (V, C): lm_head's share
    dx = layernorm_backward(dlogits @ params["wte"], cache[block_in[L]], params, grads, "ln_f")  # (B, T, C)
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
    embedding_backward(dx, cache["idx"], params, grads)
    return {name: grads[name] for name in params}


def lr_at(step, hparams):                            # nanoGPT's get_lr: warmup, cosine decay to min_lr, then flat
    lr, min_lr, warmup, decay = (hparams[k] for k in ("learning_rate", "min_lr", "warmup_iters", "lr_decay_iters"))
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (decay - warmup))) if step <= decay else 0.0
    return min_lr + cosine * (lr - min_lr)


def adamw_step(params, grads, state, step, lr, hparams):   # torch's clip_grad_norm_, then AdamW, in place
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    beta1, beta2, eps, decay, clip = (float(hparams[k]) for k in ("beta1", "beta2", "eps", "weight_decay", "grad_clip"))
    scale = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0                          # grad_clip <= 0: off
    lr, t = float(lr), step + 1                              # Python floats: numpy's float64 would upcast float32
    for name, p in params.items():
        g = grads[name] * scale
        m = state["m." + name] = beta1 * state.get("m." + name, 0.0) + (1.0 - beta1) * g
        v = state["v." + name] = beta2 * state.get("v." + name, 0.0) + (1.0 - beta2) * g * g
        p *= 1.0 - lr * decay * (p.ndim >= 2)                                            # decay 2-D tensors only
        p -= lr * (m / (1.0 - beta1 ** t)) / (array_module(p).sqrt(v / (1.0 - beta2 ** t)) + eps)
    return norm


def get_batch(data, batch_size, block_size, rng):
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    windows = np.asarray(data)[ix[:, None] + np.arange(block_size + 1)].astype(np.int64)  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def choose(logits, temperature, top_k, top_p, u):     # one row's next id, as reference/sampling.py chooses it
    if temperature == 0:
        return int(logits.argmax())
    z = logits.astype(np.float64) / temperature                                          # (V,)
    if top_k:
        z[z < np.sort(z)[-min(top_k, len(z))]] = -np.inf                                  # below the k-th largest
    probs = softmax(z)                                                                   # (V,)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, kind="stable")                                        # most probable first
        probs[order[np.cumsum(probs[order]) - probs[order] >= top_p]] = 0.0              # the set reached top_p
    cdf = np.cumsum(probs)                                                               # (V,)
    return int((cdf <= u * cdf[-1]).sum())                                               # inverse CDF at u * total


def generate(params, prompts, n_tokens, config, temperature=0.0, top_k=None, top_p=None, rng=None,
             kv_cache=True, stop_token=None):  # no KV cache (kv_cache is ignored): forward on each whole prefix
    xp, T = array_module(params["wte"]), config["block_size"]
    if not all(1 <= len(p) <= T for p in prompts):
        raise ValueError(f"generate: prompts must hold 1 to block_size={T} tokens, got {list(map(len, prompts))}")
    rows, new, steps = [list(p) for p in prompts], [[] for _ in prompts], []
    for _ in range(min(n_tokens, T - max(map(len, rows)))):
        u = rng.random(len(rows)) if temperature != 0 else [None] * len(rows)            # every row, finished or not
        steps.append([to_host(forward(params, xp.asarray([row]), None, config)[1]["logits"][0, -1]) for row in rows])
        for b, row in enumerate(rows):
            if not (new[b] and new[b][-1] == stop_token):                                # a finished row takes no more
                new[b].append(choose(steps[-1][b], temperature, top_k, top_p, u[b]))
            row.append(new[b][-1])
        if stop_token is not None and all(r[-1] == stop_token for r in new):
            break
    return new, np.array(steps).swapaxes(0, 1) if steps else np.zeros((len(prompts), 0, config["vocab_size"]))


OPTIONS = dict(device="cpu", dtype="float32", seed=1337, data="", out="ckpt.npz", ckpt="ckpt.npz", n_layer=4,
               n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000, eval_interval=250, eval_iters=20,
               learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000, weight_decay=0.1, beta1=0.9,
               beta2=0.99, eps=1e-8, grad_clip=1.0, n_tokens=200, temperature=0.8, top_k=200, top_p=1.0)


def train(args, xp):
    meta = json.load(open(os.path.join(args.data, "meta.json")))
    data = {s: np.memmap(os.path.join(args.data, s + ".bin"), dtype=np.uint16, mode="r") for s in ("train", "val")}
    config = vars(args) | {"vocab_size": meta["vocab_size"]}                            # the model's and the run's
    params, state = init(config, args.seed, xp, args.dtype), {}
    rngs = {s: np.random.Generator(np.random.PCG64([args.seed, i])) for i, s in enumerate(data, 1)}  # one per split

    def run(split):
        x, y = get_batch(data[split], args.batch_size, args.block_size, rngs[split])
        return forward(params, xp.asarray(x), xp.asarray(y), config)

    for step in range(args.max_iters):
        loss, cache = run("train")
        adamw_step(params, backward(params, cache, config), state, step, lr_at(step, config), config)
        if step % args.eval_interval == 0:
            print(f"step {step}: train loss {loss:.4f}", flush=True)
    print(f"val_loss {sum(run('val')[0] for _ in range(args.eval_iters)) / args.eval_iters:.4f}")
    np.savez(args.out, meta=json.dumps({"config": config, "data": meta}), **{k: to_host(v) for k, v in params.items()})


def sample(args, xp):
    with np.load(args.ckpt) as f:
        meta = json.loads(str(f["meta"]))
        params = {k: xp.asarray(f[k].astype(args.dtype)) for k in f if k != "meta"}
    chars = meta["data"].get("chars")                                                    # char-level data, or:
    bpe = None if chars else __import__("tiktoken").get_encoding("gpt2")                 # GPT-2's BPE
    prompts = [[chars.index(ch) for ch in p] if chars else bpe.encode_ordinary(p) for p in args.prompts]
    tokens, _ = generate(params, prompts, args.n_tokens, meta["config"], args.temperature, args.top_k, args.top_p,
                         np.random.Generator(np.random.PCG64(args.seed)))
    for ids in (prompt + new for prompt, new in zip(prompts, tokens)):
        print("".join(chars[i] for i in ids) if chars else bpe.decode(ids), end="\n\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("train", "sample"))
    parser.add_argument("prompts", nargs="*", help="sample: the texts to continue")
    for name, default in OPTIONS.items():
        parser.add_argument("--" + name, type=type(default), default=default)
    args = parser.parse_intermixed_args()
    (train if args.command == "train" else sample)(args, __import__("cupy") if args.device == "gpu" else np)
