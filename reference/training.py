"""What training adds to the model, with nanoGPT's semantics: batch sampling, the learning-rate
schedule, gradient accumulation, global gradient-norm clipping and AdamW (decoupled weight decay, bias correction).
Every hyperparameter is an explicit argument; `lr_at` and `adamw_step` are the contract's wrappers
that read them from an `hparams` dict."""
import math

import numpy

from .layers import array_module


def get_batch(data, batch_size, block_size, rng):
    """Random windows of a 1-D token array: x = data[i:i+T], y = data[i+1:i+1+T] for
    i = rng.integers(0, len(data) - block_size, size=batch_size) (nanoGPT's torch.randint).
    Returns host int64 arrays (B, T); the caller moves them to its backend."""
    ix = rng.integers(0, len(data) - block_size, size=batch_size)                         # (B,)
    x = numpy.stack([numpy.asarray(data[i:i + block_size]) for i in ix]).astype(numpy.int64)      # (B, T)
    y = numpy.stack([numpy.asarray(data[i + 1:i + 1 + block_size]) for i in ix]).astype(numpy.int64)  # (B, T)
    return x, y


def get_lr(step, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's get_lr: linear warmup over warmup_iters steps, cosine decay to min_lr at
    lr_decay_iters, flat at min_lr after."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / (warmup_iters + 1)
    if step > lr_decay_iters:
        return min_lr
    decay_ratio = (step - warmup_iters) / (lr_decay_iters - warmup_iters)     # 0 .. 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))                     # 1 .. 0
    return min_lr + coeff * (learning_rate - min_lr)


def global_grad_norm(grads):
    """sqrt of the sum of squares of every gradient entry, as a Python float."""
    return math.sqrt(sum(float((g * g).sum()) for g in grads.values()))


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_: scale every gradient by min(1, max_norm / (norm + 1e-6)).
    Returns (clipped grads, norm before clipping); max_norm <= 0 disables clipping."""
    norm = global_grad_norm(grads)
    if max_norm <= 0.0:
        return grads, norm
    scale = min(1.0, max_norm / (norm + 1e-6))
    return {name: g * scale for name, g in grads.items()}, norm


def accumulate_grads(micro_grads):
    """nanoGPT's gradient accumulation over K equally sized micro-batches: each micro-batch's mean
    loss is scaled by 1/K before its backward and the gradients are summed, so the step follows the
    gradient of the mean loss over all K x B rows (the mean of K means of B rows each):
    grads = sum_k grads_k / K. micro_grads: K dicts of the same names."""
    K = len(micro_grads)
    return {name: sum(grads[name] / K for grads in micro_grads) for name in micro_grads[0]}


def adamw_update(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """One AdamW update of one tensor, in place. t counts updates from 1 (bias correction)."""
    param *= 1.0 - lr * weight_decay                     # decoupled weight decay, before the step
    m *= beta1
    m += (1.0 - beta1) * grad                            # first moment
    v *= beta2
    v += (1.0 - beta2) * grad * grad                     # second moment
    m_hat = m / (1.0 - beta1 ** t)                       # bias corrections
    v_hat = v / (1.0 - beta2 ** t)
    param -= lr * m_hat / (array_module(v).sqrt(v_hat) + eps)


# ----------------------------------------------------------------------------- the contract's wrappers

def lr_at(step, hparams):
    return get_lr(step, hparams["learning_rate"], hparams["warmup_iters"],
                  hparams["lr_decay_iters"], hparams["min_lr"])


def adamw_step(params, grads, state, step, lr, hparams):
    """Clip the gradients, then one AdamW update of every parameter, in place.
    `step` is the 0-based iteration (bias correction uses step + 1); `state` is a flat dict of
    arrays, empty before the first step. Returns the gradient norm before clipping."""
    grads, norm = clip_grad_norm(grads, hparams["grad_clip"])
    for name, p in params.items():
        if "m." + name not in state:
            state["m." + name] = array_module(p).zeros_like(p)
            state["v." + name] = array_module(p).zeros_like(p)
        # nanoGPT decays 2-D tensors (matmul weights, both embeddings), not biases or LayerNorm
        wd = hparams["weight_decay"] if p.ndim >= 2 else 0.0
        adamw_update(p, grads[name], state["m." + name], state["v." + name], step + 1, lr,
                     hparams["beta1"], hparams["beta2"], hparams["eps"], wd)
    return norm
