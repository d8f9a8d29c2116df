"""GPT-2 (OpenAI's architecture, as transformers' GPT2LMHeadModel) from the layers in layers.py.

    emb    = wte[idx] + wpe[:T]
    for each block i:
        x = x + c_proj(attention(c_attn(ln_1(x))))
        x = x + c_proj(gelu(c_fc(ln_2(x))))
    logits = ln_f(x) @ wte.T                         (lm_head tied to wte, no bias)

`forward` records every activation in a dict under its canonical name (the same names the harness
and the golden files use); `backward` is `forward` read in reverse, call for call.
"""
import numpy

from .layers import (
    attention_backward, attention_forward,
    crossentropy_backward, crossentropy_forward,
    embedding_backward, embedding_forward,
    gelu_backward, gelu_forward,
    layernorm_backward, layernorm_forward,
    linear_backward, linear_forward,
    residual_backward, residual_forward,
)

INIT_STD = 0.02  # GPT-2's initializer_range


def param_shapes(config):
    """Parameter names (GPT-2's state-dict names without `transformer.`) and shapes, in state-dict
    order. This order is also the order in which `init` draws random numbers."""
    V, T, C, L = config["vocab_size"], config["block_size"], config["n_embd"], config["n_layer"]
    shapes = {"wte": (V, C), "wpe": (T, C)}
    for i in range(L):
        h = f"h.{i}."
        shapes.update({
            h + "ln_1.weight": (C,), h + "ln_1.bias": (C,),
            h + "attn.c_attn.weight": (C, 3 * C), h + "attn.c_attn.bias": (3 * C,),
            h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
            h + "ln_2.weight": (C,), h + "ln_2.bias": (C,),
            h + "mlp.c_fc.weight": (C, 4 * C), h + "mlp.c_fc.bias": (4 * C,),
            h + "mlp.c_proj.weight": (4 * C, C), h + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return shapes


def init(config, seed, xp=numpy, dtype="float32"):
    """GPT-2's initialisation. Weights and both embeddings ~ N(0, 0.02); the two c_proj weights of
    each block ~ N(0, 0.02/sqrt(2*n_layer)) (the residual-path scaling of GPT-2's paper); biases 0;
    LayerNorm weight 1, bias 0. Every weight is drawn on the host, in state-dict order, as
    `rng.normal(0, std, shape)` in float64 from Generator(PCG64(seed)), then cast and moved to `xp`,
    so numpy and cupy, float32 and float64 runs all start from the same numbers."""
    rng = numpy.random.Generator(numpy.random.PCG64(seed))
    proj_std = INIT_STD / (2 * config["n_layer"]) ** 0.5
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("c_proj.weight"):
            value = rng.normal(0.0, proj_std, shape)
        elif name.endswith(".weight") and len(shape) == 1:    # LayerNorm gain
            value = numpy.ones(shape)
        elif name.endswith(".bias"):
            value = numpy.zeros(shape)
        else:                                                  # wte, wpe, c_attn, c_fc weights
            value = rng.normal(0.0, INIT_STD, shape)
        params[name] = xp.asarray(value.astype(dtype))
    return params


def forward(params, idx, targets, config):
    """idx, targets: (B, T) integer arrays on the params' backend (targets may be None).
    Returns (loss, cache): loss a Python float (None without targets); cache maps canonical
    activation names (and the layers' own saved tensors, under `<name>.<key>`) to arrays."""
    n_head = config["n_head"]
    cache = {}

    def keep(name, out, layer_cache):
        cache[name] = out
        for key, value in layer_cache.items():
            cache[f"{name}.{key}"] = value
        return out

    x = keep("emb", *embedding_forward(idx, params["wte"], params["wpe"]))              # (B, T, C)
    for i in range(config["n_layer"]):
        h = f"h.{i}."
        a = keep(h + "ln_1", *layernorm_forward(x, params[h + "ln_1.weight"],
                                                params[h + "ln_1.bias"]))              # (B, T, C)
        a = keep(h + "attn.qkv", *linear_forward(a, params[h + "attn.c_attn.weight"],
                                                 params[h + "attn.c_attn.bias"]))      # (B, T, 3C)
        a = keep(h + "attn.y", *attention_forward(a, n_head))                          # (B, T, C)
        cache[h + "attn.att"] = cache[h + "attn.y.att"]                                # (B, NH, T, T)
        a = keep(h + "attn.proj", *linear_forward(a, params[h + "attn.c_proj.weight"],
                                                  params[h + "attn.c_proj.bias"]))     # (B, T, C)
        x = cache[h + "res_1"] = residual_forward(x, a)                                 # (B, T, C)
        m = keep(h + "ln_2", *layernorm_forward(x, params[h + "ln_2.weight"],
                                                params[h + "ln_2.bias"]))              # (B, T, C)
        m = keep(h + "mlp.fc", *linear_forward(m, params[h + "mlp.c_fc.weight"],
                                               params[h + "mlp.c_fc.bias"]))           # (B, T, 4C)
        m = keep(h + "mlp.gelu", *gelu_forward(m))                                     # (B, T, 4C)
        m = keep(h + "mlp.proj", *linear_forward(m, params[h + "mlp.c_proj.weight"],
                                                 params[h + "mlp.c_proj.bias"]))       # (B, T, C)
        x = cache[h + "out"] = residual_forward(x, m)                                   # (B, T, C)
    x = keep("ln_f", *layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"]))  # (B, T, C)
    logits = keep("logits", *linear_forward(x, params["wte"].T))                        # (B, T, V)
    if targets is None:
        return None, cache
    loss, ce_cache = crossentropy_forward(logits, targets)
    keep("loss", loss, ce_cache)
    return float(loss), cache


def backward(params, cache, config):
    """Gradients of the mean loss w.r.t. every parameter (same keys as params): forward in reverse."""
    n_head = config["n_head"]
    grads = {}

    def layer(name):  # the saved tensors of one layer, as its forward returned them
        prefix = name + "."
        return {k[len(prefix):]: v for k, v in cache.items() if k.startswith(prefix)}

    dlogits = crossentropy_backward(layer("loss"))                                       # (B, T, V)
    dx, dwte_T, _ = linear_backward(dlogits, layer("logits"), params["wte"].T)           # (B, T, C)
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = layernorm_backward(
        dx, layer("ln_f"), params["ln_f.weight"])                                       # (B, T, C)
    for i in reversed(range(config["n_layer"])):
        h = f"h.{i}."
        dx, dm = residual_backward(dx)                                                  # (B, T, C)
        dm, grads[h + "mlp.c_proj.weight"], grads[h + "mlp.c_proj.bias"] = linear_backward(
            dm, layer(h + "mlp.proj"), params[h + "mlp.c_proj.weight"])                 # (B, T, 4C)
        dm = gelu_backward(dm, layer(h + "mlp.gelu"))                                   # (B, T, 4C)
        dm, grads[h + "mlp.c_fc.weight"], grads[h + "mlp.c_fc.bias"] = linear_backward(
            dm, layer(h + "mlp.fc"), params[h + "mlp.c_fc.weight"])                     # (B, T, C)
        dm, grads[h + "ln_2.weight"], grads[h + "ln_2.bias"] = layernorm_backward(
            dm, layer(h + "ln_2"), params[h + "ln_2.weight"])                           # (B, T, C)
        dx = dx + dm                                                                    # (B, T, C)
        dx, da = residual_backward(dx)                                                  # (B, T, C)
        da, grads[h + "attn.c_proj.weight"], grads[h + "attn.c_proj.bias"] = linear_backward(
            da, layer(h + "attn.proj"), params[h + "attn.c_proj.weight"])               # (B, T, C)
        da = attention_backward(da, layer(h + "attn.y"), n_head)                        # (B, T, 3C)
        da, grads[h + "attn.c_attn.weight"], grads[h + "attn.c_attn.bias"] = linear_backward(
            da, layer(h + "attn.qkv"), params[h + "attn.c_attn.weight"])                # (B, T, C)
        da, grads[h + "ln_1.weight"], grads[h + "ln_1.bias"] = layernorm_backward(
            da, layer(h + "ln_1"), params[h + "ln_1.weight"])                           # (B, T, C)
        dx = dx + da                                                                    # (B, T, C)
    dwte, grads["wpe"] = embedding_backward(dx, layer("emb"), params["wte"], params["wpe"])
    # wte is used twice: as the token embedding and (transposed) as lm_head
    grads["wte"] = dwte + dwte_T.T                                                      # (V, C)
    return {name: grads[name] for name in params}
