"""Train any contract module (impl/gpt2.py, reference/, a user's file) the way nanoGPT's train.py does,
with a JSON-lines log, atomic checkpoints and a bit-identical resume.

One iteration ``step`` (0-based) is nanoGPT's::

    lr = lr_at(step); x, y = get_batch(train); loss, cache = forward(x, y)
    grads = backward(cache); grad_norm = adamw_step(params, grads, state, step, lr)

(with gradient accumulation, K batches and their scaled gradients summed before the one update: below).

Before the update of every ``step % eval_interval == 0`` and after the last update (``step ==
max_iters``), the model is evaluated (nanoGPT's ``estimate_loss``: the mean loss of ``eval_iters``
batches of each split) and a checkpoint is written. The random numbers follow impl/gpt2.py's own
``train`` command, so both report the same val loss for the same settings:

- init: ``module.init(config, seed, xp, dtype)``;
- training batches: one ``Generator(PCG64([seed, 1]))`` for the whole run (its state is checkpointed);
- evaluation batches: a fresh ``Generator(PCG64([seed, 2]))`` for each split at every evaluation, so
  every evaluation sees the same batches and the curve shows the model, not the sampling.

Gradient accumulation and data parallelism (nanoGPT's ``gradient_accumulation_steps`` and DDP):
one step's batch is ``K = gradient_accumulation_steps`` micro-batches of ``batch_size`` rows, drawn
by K successive ``get_batch(train, batch_size, block_size, rng)`` calls from the one training
generator (for K = 1 exactly today's single draw, so a K = 1 run is bit-identical to one before the
flag existed). The update uses the gradient of the step's mean loss: each micro-batch's gradient
(the contract's backward: of its own mean loss) times 1/K, summed, then one ``adamw_step``; the
logged ``loss`` is the mean of the K micro-batch losses. With R data-parallel ranks (``mpiexec -n R``,
harness/tools/distributed.py), K stays the global number of micro-batches (nanoGPT divides it by the
world size): R must divide K, every rank draws all K micro-batches from the same generator (so the
RNG stream never depends on R) and computes its own K/R consecutive ones (rank r: micro-batches
r·K/R .. (r+1)·K/R - 1); the scaled gradients are summed over the ranks by one all-reduce, so every
rank applies the same update to the same params and AdamW state. Hence R ranks, one process with the
same K, and (where the draws coincide, see tests/test_accumulation.py) one process with K = 1 and
K·batch_size rows compute the same step up to rounding; a checkpoint can be resumed with another R.
Rank 0 alone writes the files below and prints; at every evaluation the ranks check that their
params, AdamW state and RNG state are bit-identical (a TrainingError if not).

Files in ``out_dir`` (each written atomically: temp file in the same folder, then ``os.replace``):

- ``log.jsonl``: one JSON object a line, in order. Iteration records
  ``{"kind": "iter", "step", "loss", "lr", "grad_norm", "ms"}`` (``loss`` is the training batch's loss
  before the update; ``ms`` the wall time of the iteration) and evaluation records
  ``{"kind": "eval", "step", "train_loss", "val_loss"}`` (``step`` = number of updates done).
  Every field but ``ms`` is deterministic. The log is appended to as training goes; on resume it is
  rewritten from the checkpoint's history first, so records of an interrupted tail are dropped.
- ``ckpt.npz`` (``np.savez``, nothing pickled; the format impl/gpt2.py's ``sample`` reads):
  ``params/<name>`` and ``state/<key>`` arrays on the host, and ``meta``, a 0-d unicode array holding
  JSON: ``format``, ``config``, ``hparams``, ``data`` (the data folder's meta.json), ``step``, ``dtype``,
  ``seed``, ``batch_size``, ``gradient_accumulation_steps`` (absent from older checkpoints: 1),
  ``world_size`` (the ranks of the run that wrote it; any R dividing K may resume), ``eval_interval``,
  ``eval_iters``, ``max_iters``, ``rng_state`` (the training generator's ``bit_generator.state``),
  ``history`` (every log record so far), ``module``,
  ``backend``, ``init_from`` (the absolute path of the weights a fine-tuning run started from, or null),
  ``environment`` (what the caller passed: scripts/train.py records the BLAS kernel and threads).
- ``loss.png`` with ``plot``: training batch loss, evaluated train/val loss and the learning rate against
  step, titled with the file, seed, dtype, backend, config and the final val loss.

``resume=True`` continues from ``ckpt.npz`` so that params, optimizer state, losses and log records
(but ``ms``) are bit-identical to one uninterrupted run of ``max_iters`` on the same machine and
backend (and number of ranks). The checkpoint's config, dtype, seed, batch size,
gradient_accumulation_steps, hparams, evaluation settings and data must equal the requested ones
(only ``max_iters`` may change); anything else is a :class:`CheckpointError`.
A checkpoint written at the end of a shorter run (a step that is not a multiple of ``eval_interval``)
carries that run's final evaluation; resuming past it drops that record, as an uninterrupted run
never made it (evaluation draws no training random numbers, so the parameters are unaffected).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nanoproof.spec.contract import CONFIG_KEYS, HPARAM_KEYS
from nanoproof.tools.data import load_meta, load_split, one_line
from nanoproof.tools.checkpoints import (CKPT_NAME, CKPT_FORMAT, LOG_NAME, PLOT_NAME, CheckpointError, JsonlLog, TrainingError, check_resumable, load_checkpoint, plot_history, save_checkpoint)
from nanoproof.tools.evaluate import WeightsError, check_vocabulary, load_weights
from nanoproof.tools.distributed import SingleProcess, digest

DTYPES = ("float32", "float64")
TRAIN_STREAM, EVAL_STREAM = 1, 2  # PCG64([seed, stream]): impl/gpt2.py's train command's convention





@dataclass
class TrainResult:
    """What a run ends with. ``history`` holds every log record (see the module docstring)."""
    val_loss: float                 # evaluated after the last update
    train_loss: float               # evaluated after the last update (mean over eval_iters batches)
    step: int                       # updates done (= max_iters)
    history: list[dict] = field(repr=False)
    params: dict = field(repr=False)
    state: dict = field(repr=False)
    resumed_from: int | None = None  # the checkpoint's step when resumed

    @property
    def evals(self) -> list[dict]:
        return [r for r in self.history if r["kind"] == "eval"]

    @property
    def iters(self) -> list[dict]:
        return [r for r in self.history if r["kind"] == "iter"]


# ----------------------------------------------------------------------------- helpers

def _synchronize(xp) -> None:
    """Wait for queued GPU work (so ms/iter is the time of the iteration, not of its launch)."""
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        cuda.Stream.null.synchronize()


def make_config(meta: dict, *, n_layer: int, n_head: int, n_embd: int, block_size: int) -> dict:
    """A model config for a data folder's meta: vocab_size from the data, the rest as given."""
    return {"vocab_size": int(meta["vocab_size"]), "block_size": block_size, "n_layer": n_layer,
            "n_head": n_head, "n_embd": n_embd}


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TrainingError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_config(config: dict, meta: dict) -> dict:
    """Validate a model config against the data; return it as a plain dict of ints."""
    missing = [k for k in CONFIG_KEYS if k not in config and k != "vocab_size"]
    if missing:
        raise TrainingError(f"config lacks {', '.join(missing)} (needs {', '.join(CONFIG_KEYS)})")
    cfg = {k: _positive_int(k, config.get(k, meta["vocab_size"])) for k in CONFIG_KEYS}
    if cfg["n_embd"] % cfg["n_head"]:
        raise TrainingError(f"n_embd {cfg['n_embd']} is not divisible by n_head {cfg['n_head']} "
                            f"(each head gets n_embd / n_head channels)")
    if cfg["vocab_size"] < meta["vocab_size"]:
        raise TrainingError(f"vocab_size {cfg['vocab_size']} is smaller than the data's "
                            f"vocabulary of {meta['vocab_size']}")
    return cfg


def finetune_start(init_from, config: dict, meta: dict, data_dir, module, dtype: str, xp) -> tuple[dict, dict]:
    """(params, config) to start a run from weights (nanoGPT's init_from='gpt2'): a Hugging Face GPT-2
    folder or an .npz of ours. The model's shape comes from the weights: a size given in ``config``
    must equal theirs, except block_size, which may crop the context (wpe's first rows, as nanoGPT's
    crop_block_size). The data must use the weights' vocabulary."""
    try:
        params, weights_config, weights_data = load_weights(init_from, module, dtype, xp)
        check_vocabulary(weights_config, weights_data, meta, f"init_from {init_from}", data_dir)
    except WeightsError as e:
        raise TrainingError(str(e)) from None
    conflicts = [f"{k} {config[k]} (the weights have {weights_config[k]})" for k in CONFIG_KEYS
                 if k != "block_size" and config.get(k, weights_config[k]) != weights_config[k]]
    if conflicts:
        raise TrainingError(f"init_from {init_from} fixes the model's shape; drop {', '.join(conflicts)}")
    block_size = config.get("block_size", weights_config["block_size"])
    if block_size > weights_config["block_size"]:
        raise TrainingError(f"block_size {block_size} exceeds the {weights_config['block_size']} positions "
                            f"of init_from {init_from} (it can only be cropped)")
    if block_size < weights_config["block_size"]:
        params["wpe"] = params["wpe"][:block_size].copy()
    return params, {**weights_config, "block_size": block_size}


def check_hparams(hparams: dict) -> dict:
    missing = [k for k in HPARAM_KEYS if k not in hparams]
    if missing:
        raise TrainingError(f"hparams lack {', '.join(missing)} (needs {', '.join(HPARAM_KEYS)})")
    return {k: hparams[k] for k in HPARAM_KEYS}


def estimate_loss(module, params, data, config, batch_size, eval_iters, seed, xp) -> float:
    """nanoGPT's estimate_loss for one split: the mean loss of eval_iters batches drawn by a fresh
    Generator(PCG64([seed, 2])), summed in order as impl/gpt2.py's estimate_loss does."""
    rng = np.random.Generator(np.random.PCG64([seed, EVAL_STREAM]))
    losses = []
    for _ in range(eval_iters):
        x, y = module.get_batch(data, batch_size, config["block_size"], rng)
        losses.append(float(module.forward(params, xp.asarray(x), xp.asarray(y), config)[0]))
    return sum(losses) / len(losses)


def _restore(module, path, ck_params, ck_state, config, seed, xp, dtype):
    """Move a checkpoint's arrays to xp after checking them against a fresh init's names/shapes."""
    fresh = module.init(config, seed, xp, dtype)
    for name, p in fresh.items():
        a = ck_params.get(name)
        if a is None or a.shape != tuple(p.shape) or a.dtype != np.dtype(dtype):
            got = "missing" if a is None else f"{a.dtype} {a.shape}"
            raise CheckpointError(f"{path}: parameter {name} is {got}, expected {dtype} "
                                  f"{tuple(p.shape)}; the checkpoint does not fit this model")
    extra = sorted(set(ck_params) - set(fresh))
    if extra:
        raise CheckpointError(f"{path}: unexpected parameter(s) {', '.join(extra[:5])}")
    # fresh copies: the run goes on in newly allocated arrays, as an uninterrupted one does
    params = {name: xp.array(ck_params[name], copy=True) for name in fresh}
    state = {k: xp.array(v, copy=True) for k, v in ck_state.items()}
    return params, state


# ----------------------------------------------------------------------------- training

def accumulate_grads(module, params, config, batches, accumulate: int, xp=np) -> tuple[float, dict]:
    """The sum over ``batches`` (host (x, y) pairs, this rank's micro-batches of a step) of each one's
    loss / K and gradient / K, K = ``accumulate`` (all micro-batches of the step, over every rank):
    (loss, grads). With K = 1 the one batch's loss and grads, unscaled (bit-identical to no flag)."""
    loss_sum, grads = 0.0, None
    for x, y in batches:
        loss, cache = module.forward(params, xp.asarray(x), xp.asarray(y), config)
        micro = module.backward(params, cache, config)
        del cache
        if accumulate == 1:
            return float(loss), micro
        loss_sum += float(loss) / accumulate
        if grads is None:
            grads = {k: g * (1.0 / accumulate) for k, g in micro.items()}
        else:
            for k, g in micro.items():
                grads[k] += g * (1.0 / accumulate)
    return loss_sum, grads


def train(module, data_dir, config: dict, hparams: dict, *, max_iters: int, batch_size: int,
          eval_interval: int, eval_iters: int, seed: int = 1337, xp=np, dtype: str = "float32",
          out_dir=None, resume: bool = False, progress: bool = True, plot: bool = False,
          log_interval: int = 0, echo: Callable[[str], None] | None = None, init_from=None,
          environment: dict | None = None, gradient_accumulation_steps: int = 1,
          world=None) -> TrainResult:
    """Train ``module`` (anything with the contract's functions) on a prepared data folder.

    ``config``: CONFIG_KEYS (vocab_size may be left out: the data's); ``hparams``: HPARAM_KEYS.
    ``init_from``: start from these weights instead of ``module.init`` (a Hugging Face GPT-2 folder or
    an .npz of ours; see finetune_start: ``config`` then needs no sizes) with a fresh optimizer state
    at step 0; the path is recorded in the checkpoint, and resuming needs the same one.
    ``out_dir``: where log.jsonl, ckpt.npz (and loss.png with ``plot``: True, or "log" for a log loss
    axis) go; None writes nothing.
    ``progress``: a tqdm bar on stderr (only when stderr is a TTY). ``echo``: called with one line per
    evaluation, checkpoint and (every ``log_interval`` steps, when no bar is shown) iteration.
    ``gradient_accumulation_steps``: micro-batches per step (K, see the module docstring); ``world``:
    nanoproof.tools.distributed's world (default: this process alone), whose size must divide K.
    Raises TrainingError / CheckpointError, and nanoproof.tools.data.DataError for a bad data folder.
    """
    from tqdm import tqdm

    meta = load_meta(data_dir)
    splits = {s: load_split(data_dir, s) for s in ("train", "val")}
    if dtype not in DTYPES:
        raise TrainingError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    init_params = None
    if init_from is not None:
        init_params, config = finetune_start(init_from, config, meta, data_dir, module, dtype, xp)
    config = check_config(config, meta)
    hparams = check_hparams(hparams)
    max_iters = _positive_int("max_iters", max_iters, 0)
    batch_size = _positive_int("batch_size", batch_size)
    eval_interval = _positive_int("eval_interval", eval_interval)
    eval_iters = _positive_int("eval_iters", eval_iters)
    log_interval = _positive_int("log_interval", log_interval, 0)
    seed = _positive_int("seed", seed, 0)
    world = world or SingleProcess()
    accumulate = _positive_int("gradient_accumulation_steps", gradient_accumulation_steps)
    if accumulate % world.size:
        raise TrainingError(f"gradient_accumulation_steps {accumulate} is not a multiple of the {world.size} "
                            f"ranks (it counts the micro-batches of a step over all ranks, as nanoGPT's)")
    mine = range(world.rank * accumulate // world.size, (world.rank + 1) * accumulate // world.size)
    writer = world.rank == 0    # rank 0 alone writes files and prints
    if hparams["warmup_iters"] == hparams["lr_decay_iters"] < max_iters:
        raise TrainingError(f"lr_decay_iters ({hparams['lr_decay_iters']}) must differ from warmup_iters: "
                            f"the cosine decay between them would have zero length")
    for name, data in splits.items():
        if len(data) < config["block_size"] + 1:
            raise TrainingError(f"block_size {config['block_size']} is too large for the {name} split "
                                f"of {data_dir} ({len(data)} tokens; a batch needs at least "
                                f"block_size + 1 = {config['block_size'] + 1})")
    if (resume or plot) and out_dir is None:
        raise TrainingError("resume and plot need an out_dir")
    say = (echo if writer else None) or (lambda msg: None)

    run = {"config": config, "dtype": dtype, "seed": seed, "batch_size": batch_size,
           "gradient_accumulation_steps": accumulate,
           "hparams": hparams, "eval_interval": eval_interval, "eval_iters": eval_iters,
           "init_from": None if init_from is None else str(Path(init_from).resolve())}
    out_dir = Path(out_dir) if out_dir is not None else None
    ckpt_path = out_dir / CKPT_NAME if out_dir is not None else None
    rng = np.random.Generator(np.random.PCG64([seed, TRAIN_STREAM]))
    if resume:
        ck_params, ck_state, ck_meta = load_checkpoint(ckpt_path)
        check_resumable(ckpt_path, ck_meta, run, meta, max_iters)
        params, state = _restore(module, ckpt_path, ck_params, ck_state, config, seed, xp, dtype)
        try:
            rng.bit_generator.state = ck_meta["rng_state"]
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{ckpt_path}: bad rng_state ({one_line(e)})") from None
        start, history = ck_meta["step"], list(ck_meta["history"])
        if start % eval_interval and start < max_iters and history and history[-1]["kind"] == "eval":
            history.pop()  # the final evaluation of a shorter run: an uninterrupted run has none here
        say(f"resuming from {ckpt_path} at step {start}")
    else:
        params = init_params if init_params is not None else module.init(config, seed, xp, dtype)
        state, start, history = {}, 0, []

    log = None
    if out_dir is not None and writer:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            log = JsonlLog(out_dir / LOG_NAME, history)
        except OSError as e:
            raise TrainingError(f"cannot write to out_dir {out_dir}: {one_line(e.strerror or e)}") from None

    def record(rec: dict) -> None:
        history.append(rec)
        if log is not None:
            log.write(rec)

    def checkpoint(step: int) -> None:
        if writer:
            save_checkpoint(ckpt_path, params, state, {
                "format": CKPT_FORMAT, **run, "data": meta, "step": step, "max_iters": max_iters,
                "rng_state": rng.bit_generator.state, "history": history,
                "module": str(getattr(module, "__file__", None) or getattr(module, "__name__", "?")),
                "backend": xp.__name__, "environment": environment or {}, "world_size": world.size})

    def check_ranks_agree(step: int) -> None:
        if world.size > 1 and not world.same_everywhere(digest(params, state, repr(rng.bit_generator.state))):
            raise TrainingError(f"step {step}: the {world.size} ranks' params, AdamW state or RNG state differ "
                                f"(an all-reduce that did not give every rank the same sum)")

    bar = tqdm(total=max_iters, initial=start, desc="train", unit="it", file=sys.stderr,
               disable=None if progress and writer else True, dynamic_ncols=True)
    if not bar.disable:
        say = (lambda msg: tqdm.write(msg, file=sys.stdout)) if echo else say
    train_loss = val_loss = None
    try:
        for step in range(start, max_iters + 1):
            is_eval = step % eval_interval == 0 or step == max_iters
            if is_eval and not (resume and step == start):
                train_loss, val_loss = (estimate_loss(module, params, splits[s], config, batch_size,
                                                      eval_iters, seed, xp) for s in ("train", "val"))
                record({"kind": "eval", "step": step, "train_loss": train_loss, "val_loss": val_loss})
                say(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
                bar.set_postfix(val_loss=f"{val_loss:.4f}", refresh=False)
                check_ranks_agree(step)
                if ckpt_path is not None:
                    checkpoint(step)
            if step == max_iters:
                break
            t0 = time.perf_counter()
            lr = float(module.lr_at(step, hparams))
            # every rank draws all K micro-batches (the same RNG stream whatever R), computes its own
            batches = [module.get_batch(splits["train"], batch_size, config["block_size"], rng)
                       for _ in range(accumulate)]
            loss, grads = accumulate_grads(module, params, config, [batches[j] for j in mine], accumulate, xp)
            del batches
            if world.size > 1:
                grads = world.allreduce_sum(grads, xp)
                loss = world.allreduce_scalar(loss)
            grad_norm = float(module.adamw_step(params, grads, state, step, lr, hparams))
            del grads
            _synchronize(xp)
            ms = 1000.0 * (time.perf_counter() - t0)
            record({"kind": "iter", "step": step, "loss": float(loss), "lr": lr,
                    "grad_norm": grad_norm, "ms": ms})
            if log_interval and bar.disable and step % log_interval == 0:
                say(f"iter {step}: loss {float(loss):.4f}, lr {lr:.3e}, grad norm {grad_norm:.4f}, "
                    f"{ms:.1f} ms")
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.4f}", val_loss="-" if val_loss is None else f"{val_loss:.4f}",
                            refresh=False)
    finally:
        bar.close()
        if log is not None:
            log.close()
    if ckpt_path is not None:
        say(f"saved checkpoint {ckpt_path} (step {max_iters})")
    if resume and start == max_iters:
        check_ranks_agree(start)
    if train_loss is None:  # resumed at max_iters: nothing left to do, the last evaluation stands
        last = [r for r in history if r["kind"] == "eval"][-1]
        train_loss, val_loss = last["train_loss"], last["val_loss"]
    if plot and writer:
        name = Path(str(getattr(module, "__file__", None) or getattr(module, "__name__", "?"))).name
        title = (f"{name}, seed {seed}, {dtype} on {xp.__name__}: val loss {val_loss:.4f} at step {max_iters}\n"
                 + ", ".join(f"{k} {v}" for k, v in config.items()) + f", batch {batch_size}, lr {hparams['learning_rate']:g}")
        plot_history(history, out_dir / PLOT_NAME, title=title, log_y=plot == "log")
        say(f"saved plot {out_dir / PLOT_NAME}")
    if math.isnan(val_loss):
        say("warning: val loss is NaN")
    return TrainResult(val_loss=val_loss, train_loss=train_loss, step=max_iters, history=history,
                       params=params, state=state, resumed_from=start if resume else None)


# ----------------------------------------------------------------------------- accumulation = one batch

def _rel(a, b) -> float:
    """Normwise relative error max|a - b| / max|b| (harness/judge/compare.py's metric), on the host."""
    a, b = (np.asarray(v.get() if hasattr(v, "get") else v, dtype=np.float64) for v in (a, b))
    scale = float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(a - b).max()) / scale if scale else float(np.abs(a - b).max())


def accumulation_errors(module, data_dir, config: dict, hparams: dict, *, batch_size: int, accumulate: int,
                        steps: int, seed: int, dtype: str = "float64", xp=np,
                        against: tuple | None = None) -> dict:
    """How far K = ``accumulate`` micro-batches of ``batch_size`` rows are from one batch of
    K x batch_size rows (the same rows: K draws of B coincide with one of K·B, checked here): the
    normwise relative error {"loss": step 0's loss, "grads": the worst of step 0's gradients,
    "trajectory.loss": the worst per-step loss over ``steps`` updates of train(),
    "trajectory.params": the worst param after them} (each with the tensor's name under "where").
    ``against``: (module, dtype) of the one-batch side, default the same module and dtype (float32
    against a float64 oracle is the backend rule's measurement)."""
    other, other_dtype = against or (module, dtype)
    train_tokens = load_split(data_dir, "train")
    config = check_config(config, load_meta(data_dir))
    params = module.init(config, seed, xp, dtype)
    rng = np.random.Generator(np.random.PCG64([seed, TRAIN_STREAM]))
    micro = [module.get_batch(train_tokens, batch_size, config["block_size"], rng) for _ in range(accumulate)]
    whole_rng = np.random.Generator(np.random.PCG64([seed, TRAIN_STREAM]))
    x, y = other.get_batch(train_tokens, batch_size * accumulate, config["block_size"], whole_rng)
    if not (np.array_equal(np.concatenate([m[0] for m in micro]), x) and
            whole_rng.bit_generator.state == rng.bit_generator.state):
        raise TrainingError("K draws of batch_size rows differ from one draw of K x batch_size rows")
    loss, grads = accumulate_grads(module, params, config, micro, accumulate, xp)
    other_params = other.init(config, seed, xp, other_dtype)
    whole_loss, cache = other.forward(other_params, xp.asarray(x), xp.asarray(y), config)
    whole_grads = other.backward(other_params, cache, config)
    errors = {"loss": (_rel(np.array(loss), np.array(float(whole_loss))), "loss @ step 0")}
    errors["grads"] = max((_rel(grads[k], whole_grads[k]), f"grad {k} @ step 0") for k in grads)
    run = dict(max_iters=steps, eval_interval=steps, eval_iters=1, seed=seed, xp=xp, progress=False)
    acc = train(module, data_dir, config, hparams, batch_size=batch_size, dtype=dtype,
                gradient_accumulation_steps=accumulate, **run)
    one = train(other, data_dir, config, hparams, batch_size=batch_size * accumulate, dtype=other_dtype, **run)
    errors["trajectory.loss"] = max((_rel(np.array(a["loss"]), np.array(b["loss"])), f"loss @ step {a['step']}")
                                    for a, b in zip(acc.iters, one.iters))
    errors["trajectory.params"] = max((_rel(acc.params[k], one.params[k]), f"param {k} after {steps} steps")
                                      for k in acc.params)
    return errors
