"""Weights from elsewhere, and the mean cross-entropy of a model on a prepared split.

``load_weights`` reads either a Hugging Face GPT-2 folder (config.json + model.safetensors, through
harness/tools/pretrained.py, the one loader for every implementation) or a checkpoint of ours (.npz
written by scripts/train.py / nanoproof.tools.training or by impl/gpt2.py's train command).
``check_vocabulary`` refuses data whose token ids mean something else to the model. ``evaluate`` is
scripts/eval.py's measurement; scripts/train.py's ``--init_from`` uses the first two.

Windows (``windows``): with T the block size and N tokens d[0..N-1], window k feeds d[kT : kT+T] and
scores the next token of each, d[kT+1 : kT+T+1]: it covers tokens [kT, kT+T], so consecutive windows
share their boundary token (the target of one is the first input of the next), as transformers'
perplexity recipe with stride = max_length. The trailing partial window (fewer than T targets left)
is evaluated too, so every token but the first is scored exactly once: N - 1 tokens. The mean is
token-weighted; each token sees the context since the start of its window (0 to T-1 tokens).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from nanoproof.tools.data import GPT2_VOCAB_SIZE, one_line
from nanoproof.tools.pretrained import load_pretrained

DTYPES = ("float32", "float64")


class WeightsError(Exception):
    """Weights that cannot be loaded or do not fit the data, with a one-line message for the user."""


def read_npz_checkpoint(path) -> tuple[dict, dict, dict | None]:
    """(params as host arrays, config, the training data's meta.json or None) of an .npz of ours."""
    from nanoproof.reference.model import param_shapes
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"][()]))
            params = {k[len("params/"):]: np.array(f[k]) for k in f.files if k.startswith("params/")}
        config = {k: int(meta["config"][k]) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")}
    except Exception as e:  # zip, npy, JSON, missing entries: all mean "not one of our checkpoints"
        raise WeightsError(f"{path}: not a readable nanoproof checkpoint ({type(e).__name__}: "
                           f"{one_line(e)}); expected an .npz written by scripts/train.py") from None
    shapes = param_shapes(config)
    problems = [f"{k}: missing" for k in shapes if k not in params]
    problems += [f"{k}: unexpected" for k in params if k not in shapes]
    problems += [f"{k}: expected {s}, actual {params[k].shape}" for k, s in shapes.items()
                 if k in params and params[k].shape != s]
    if problems:
        raise WeightsError(f"{path}: parameters do not fit its config {config}: {'; '.join(problems[:5])}")
    return params, config, meta.get("data")


def generate_beyond_block(module, params, prompts, n_tokens, config, *, temperature=0.0, top_k=None,
                          top_p=None, rng=None, kv_cache=True, stop_token=None) -> list[list[int]]:
    """n_tokens new ids per prompt (fewer only after stop_token) through the contract's ``generate``,
    which itself stops when the batch reaches block_size: from there on, each row goes on from its last
    block_size - 1 tokens (nanoGPT's sample crops its context to the block likewise), one ``generate``
    call per stretch, with the same ``rng``. A prompt must still fit the block (generate's ValueError).
    Rows that produced stop_token leave the batch; the others stay one left-padded batch. impl/gpt2.py's
    ``sample`` command does the same, so both print the same text."""
    T = config["block_size"]
    tokens, active = [[] for _ in prompts], list(range(len(prompts)))
    while active:
        context = [(list(prompts[b]) + tokens[b])[-(T - 1):] if tokens[b] or len(prompts[b]) == T
                   else list(prompts[b]) for b in active]
        new, _ = module.generate(params, context, n_tokens - len(tokens[active[0]]), config,
                                 temperature=temperature, top_k=top_k, top_p=top_p, rng=rng,
                                 kv_cache=kv_cache, stop_token=stop_token)
        for b, row in zip(active, new):
            tokens[b] += list(row)
        active = [b for b, row in zip(active, new)
                  if len(row) and len(tokens[b]) < n_tokens and stop_token not in row[-1:]]
    return tokens


def open_model(impl, weights, ckpt, dtype, device):
    """What sample and eval start from: (module, xp, source, params, config, data meta or None) for an
    implementation file (or "reference"), a Hugging Face folder (weights) or our checkpoint (ckpt), a
    dtype and a --device. Raises WeightsError, ContractError or DeviceError with a one-line message."""
    from nanoproof.cli import array_module
    from nanoproof.spec.contract import load_impl, load_reference
    xp = array_module(device)
    module = load_reference() if impl == "reference" else load_impl(impl)
    source = weights or ckpt
    if ckpt is not None and not Path(ckpt).is_file():
        raise WeightsError(f"{ckpt}: no such checkpoint file")
    if weights is not None and Path(weights).is_file():
        raise WeightsError(f"{weights}: --weights takes a Hugging Face folder (--ckpt takes our .npz)")
    params, config, weights_data = load_weights(source, module, dtype, xp)
    return module, xp, source, params, config, weights_data


def load_weights(source, module, dtype="float32", xp=np) -> tuple[dict, dict, dict | None]:
    """(params on xp in dtype, config, training data meta or None) from a Hugging Face GPT-2 folder or
    an .npz checkpoint of ours, in the contract's layout whatever `module` is (it no longer chooses
    the loader; kept for the callers). Raises WeightsError with the loader's message."""
    if dtype not in DTYPES:
        raise WeightsError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    source = Path(source)
    if source.suffix == ".npz" and not source.is_file():
        raise WeightsError(f"{source}: no such checkpoint file")
    if source.is_file():
        params, config, data = read_npz_checkpoint(source)
        return {k: xp.asarray(v.astype(dtype)) for k, v in params.items()}, config, data
    try:
        params, config = load_pretrained(source, dtype, xp)
    except (ValueError, OSError) as e:
        raise WeightsError(one_line(e)) from None
    return params, config, None


def check_vocabulary(config: dict, weights_data: dict | None, meta: dict, where: str, data_dir) -> None:
    """Refuse data whose token ids the model reads differently. With our checkpoint (weights_data =
    the meta.json it was trained on): same encoding and, for char, the same characters. With a Hugging
    Face model: GPT-2 BPE data exactly when the model has GPT-2's 50257-token vocabulary."""
    data = f"{Path(data_dir) / 'meta.json'}"
    if weights_data is not None:
        diffs = [f"{k}: weights {weights_data.get(k)!r}, data {meta.get(k)!r}"
                 for k in ("encoding", "vocab_size", "chars") if weights_data.get(k) != meta.get(k)]
        if diffs:
            raise WeightsError(f"{where} was trained on another vocabulary than {data}: "
                               + "; ".join(d if len(d) < 200 else d[:200] + "..." for d in diffs))
    elif (meta["encoding"] == "gpt2") != (config["vocab_size"] == GPT2_VOCAB_SIZE):
        raise WeightsError(f"{where} has vocab_size {config['vocab_size']} but {data} is "
                           f"{meta['encoding']!r}-encoded with vocab_size {meta['vocab_size']}: GPT-2 BPE "
                           f"data ({GPT2_VOCAB_SIZE} ids, prepare_data.py --mode gpt2) goes with a "
                           f"{GPT2_VOCAB_SIZE}-token model and only with one")
    if meta["vocab_size"] > config["vocab_size"]:
        raise WeightsError(f"{data} has vocab_size {meta['vocab_size']}, more than the "
                           f"{config['vocab_size']} of {where}")


def windows(n_tokens: int, block_size: int) -> list[tuple[int, int]]:
    """(start, length) of each window over n_tokens tokens (see the module docstring): inputs
    d[start : start+length], targets d[start+1 : start+length+1]; full windows, then the partial one."""
    n_targets = n_tokens - 1
    out = [(start, block_size) for start in range(0, n_targets - block_size + 1, block_size)]
    done = len(out) * block_size
    return out + [(done, n_targets - done)] if n_targets > done else out


def evaluate(module, params, config, data, *, block_size=None, batch_size=1, max_tokens=None, xp=np,
             progress=True) -> tuple[float, int]:
    """(token-weighted mean cross-entropy in nats, tokens scored) of the model on ``data`` (a 1-D
    token array), over the windows of ``windows`` of its first max_tokens tokens (all by default).
    Full windows go batch_size at a time; each batch's mean loss is weighted by its token count
    and summed in float64."""
    from tqdm import tqdm

    T = block_size or config["block_size"]
    if not 1 <= T <= config["block_size"]:
        raise WeightsError(f"block_size {T} must be between 1 and the model's {config['block_size']}")
    n = len(data) if max_tokens is None else min(int(max_tokens), len(data))
    if n < 2:
        raise WeightsError(f"need at least 2 tokens to score one, got {n}")
    spans = windows(n, T)
    full = [s for s in spans if s[1] == T]
    batches = [full[i:i + batch_size] for i in range(0, len(full), batch_size)] + [[s] for s in spans if s[1] < T]
    total, count = 0.0, 0
    with tqdm(total=n - 1, desc="eval", unit="tok", unit_scale=True, file=sys.stderr,
              disable=None if progress else True, dynamic_ncols=True) as bar:
        for batch in batches:
            rows = np.stack([np.asarray(data[s:s + L + 1], dtype=np.int64) for s, L in batch])  # (B, L+1)
            loss, _ = module.forward(params, xp.asarray(rows[:, :-1]), xp.asarray(rows[:, 1:]), config)
            total += float(loss) * rows[:, 1:].size
            count += rows[:, 1:].size
            bar.update(rows[:, 1:].size)
            bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    assert count == n - 1
    return total / count, count


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
