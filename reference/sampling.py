"""Text generation with the reference GPT-2: the plain definition a batched, cached implementation
is checked against (the contract's `generate`, harness/spec/contract.py).

    generate(params, prompts, n_tokens, config, temperature=0.0, top_k=None, top_p=None, rng=None,
             kv_cache=True, stop_token=None) -> (tokens, logits)

A batch here is only a loop over its rows: each prompt is continued on its own, unpadded, so an
implementation's left padding, key mask and per-row position ids are checked against a definition
that has none. Without kv_cache every step runs model.forward on the whole prefix and keeps the last
position's logits; with kv_cache, `step_cached` runs the blocks on one new token, its query attending
to the keys and values kept from the earlier tokens of the row.

Choosing the next token (`choose`, the order of transformers' logits processors): temperature 0 is
greedy (argmax, first of ties); otherwise logits / temperature, then top-k (keep the k largest), then
top-p (keep the most probable tokens, in order, while the probability before each is below top_p:
the smallest set whose probability reaches top_p, at least one token), then the inverse CDF at
u * total of the kept probabilities, where u is row b's entry of one rng.random(B) drawn per step
(for every row, finished or not).
"""
import math

import numpy

from .layers import array_module, gelu_forward, layernorm_forward, linear_forward, softmax_forward
from .model import forward


def choose(logits, temperature, top_k, top_p, u):
    """The next token id from one row's logits (V,) and a uniform draw u in [0, 1)."""
    if temperature == 0:
        return int(numpy.argmax(logits))
    z = numpy.asarray(logits, dtype=numpy.float64) / temperature            # (V,)
    if top_k:
        kth = numpy.sort(z)[-min(top_k, len(z))]                             # k-th largest
        z = numpy.where(z < kth, -numpy.inf, z)                              # (V,)
    probs = softmax_forward(z)                                               # (V,)
    if top_p is not None and top_p < 1:
        order = numpy.argsort(-probs, kind="stable")                        # most probable first
        mass_before = numpy.cumsum(probs[order]) - probs[order]              # (V,)
        probs[order[mass_before >= top_p]] = 0.0                             # the set reached top_p
    cdf = numpy.cumsum(probs)                                                # (V,)
    return int(numpy.searchsorted(cdf, u * cdf[-1], side="right"))          # first cdf > u * total


def step_cached(params, token, position, cache, config):
    """Logits (V,) after one new token at `position`; cache[i] holds the lists of keys and values
    (NH, HS) of block i for the row's earlier tokens, and gets this token's appended."""
    xp = array_module(params["wte"])
    NH = config["n_head"]
    C = params["wte"].shape[1]
    HS = C // NH
    x = params["wte"][token] + params["wpe"][position]                       # (C,)
    for i in range(config["n_layer"]):
        h = f"h.{i}."
        a, _ = layernorm_forward(x, params[h + "ln_1.weight"], params[h + "ln_1.bias"])      # (C,)
        qkv, _ = linear_forward(a, params[h + "attn.c_attn.weight"], params[h + "attn.c_attn.bias"])
        q, k, v = (qkv[j * C:(j + 1) * C].reshape(NH, HS) for j in range(3))  # (NH, HS) each
        cache[i][0].append(k)
        cache[i][1].append(v)
        keys = xp.stack(cache[i][0], axis=1)                                 # (NH, S, HS)
        values = xp.stack(cache[i][1], axis=1)                               # (NH, S, HS)
        scores = (keys @ q[:, :, None])[:, :, 0] * (1.0 / math.sqrt(HS))     # (NH, S): all earlier
        att = softmax_forward(scores)                                        # (NH, S)
        y = (att[:, None, :] @ values).reshape(C)                            # (C,)
        a, _ = linear_forward(y, params[h + "attn.c_proj.weight"], params[h + "attn.c_proj.bias"])
        x = x + a                                                            # (C,)
        m, _ = layernorm_forward(x, params[h + "ln_2.weight"], params[h + "ln_2.bias"])      # (C,)
        m, _ = linear_forward(m, params[h + "mlp.c_fc.weight"], params[h + "mlp.c_fc.bias"])  # (4C,)
        m, _ = gelu_forward(m)                                               # (4C,)
        m, _ = linear_forward(m, params[h + "mlp.c_proj.weight"], params[h + "mlp.c_proj.bias"])
        x = x + m                                                            # (C,)
    x, _ = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])  # (C,)
    return linear_forward(x, params["wte"].T)[0]                             # (V,)


def generate(params, prompts, n_tokens, config, temperature=0.0, top_k=None, top_p=None, rng=None,
             kv_cache=True, stop_token=None):
    """Continue each prompt (a list of token-id lists) by up to n_tokens: fewer when the longest
    row reaches block_size, or when every row has produced stop_token (a finished row takes no more
    tokens). Returns (tokens: one list of new ids per prompt, ending at its stop_token if any;
    logits: (B, steps, V) host array of each step's logits, in the params' dtype)."""
    xp = array_module(params["wte"])
    T = config["block_size"]
    lengths = [len(p) for p in prompts]
    if min(lengths) < 1 or max(lengths) > T:
        raise ValueError(f"generate: prompts must hold 1 to block_size={T} tokens, got lengths {lengths}")
    rows = [list(p) for p in prompts]
    caches = [[([], []) for _ in range(config["n_layer"])] for _ in prompts]
    new = [[] for _ in prompts]
    steps = []
    for step in range(min(n_tokens, T - max(lengths))):
        u = rng.random(len(rows)) if temperature != 0 else [None] * len(rows)
        step_logits = []
        for b, row in enumerate(rows):
            if not kv_cache:
                _, cache = forward(params, xp.asarray([row]), None, config)
                logits = cache["logits"][0, -1]                               # (V,)
            else:
                todo = row if step == 0 else row[-1:]                         # the prompt, then one token
                for t, token in enumerate(todo, len(row) - len(todo)):
                    logits = step_cached(params, token, t, caches[b], config)   # (V,)
            step_logits.append(numpy.asarray(logits.get() if hasattr(logits, "get") else logits))
            if not (new[b] and new[b][-1] == stop_token):
                new[b].append(choose(step_logits[-1], temperature, top_k, top_p, u[b]))
            row.append(new[b][-1])
        steps.append(numpy.stack(step_logits))                               # (B, V)
        if stop_token is not None and all(r and r[-1] == stop_token for r in new):
            break
    V = params["wte"].shape[0]
    return new, numpy.stack(steps, axis=1) if steps else numpy.zeros((len(prompts), 0, V))
