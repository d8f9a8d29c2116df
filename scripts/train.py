#!/usr/bin/env python
"""Train impl/gpt2.py (or reference/, or any contract file) on a prepared data folder, nanoGPT-style.

Thin command-line front end over nanoproof.tools.training.train; the flags are nanoGPT's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# this checkout's harness, even where another checkout is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoproof import env  # noqa: E402
from nanoproof.spec.contract import HPARAM_KEYS, TRAINING_CONTRACT, ContractError, load_impl, load_reference  # noqa: E402
from nanoproof.cli import DEVICES, DeviceError, array_module, nonnegative_int, positive_int  # noqa: E402
from nanoproof.tools.data import REPO_ROOT, DataError, find_tinyshakespeare, load_meta, prepare  # noqa: E402
from nanoproof.tools.training import (  # noqa: E402
    make_config, train,
)
from nanoproof.tools.checkpoints import (  # noqa: E402
    CKPT_NAME, LOG_NAME, PLOT_NAME, RESUME_DEFAULTS, TrainingError, load_checkpoint,
)
from nanoproof.tools.distributed import DistributedError, SingleProcess, get_world  # noqa: E402

DEFAULT_DATASET = REPO_ROOT / "data" / "shakespeare_char"
DEFAULT_OUT_DIR = REPO_ROOT / "out"

DESCRIPTION = f"""\
Train a GPT-2 through the contract (harness/spec/contract.py) on a prepared data folder
(scripts/prepare_data.py), the way nanoGPT's train.py does: linear warmup + cosine learning-rate
decay, AdamW with global gradient-norm clipping, train/val loss estimated every --eval_interval
steps and after the last one. The defaults are nanoGPT's "baby GPT on CPU" configuration
(config/train_shakespeare_char.py with the CPU overrides of its README): a 4-layer, 4-head,
128-channel model with 64-token context on character-level tiny Shakespeare.

Random numbers follow impl/gpt2.py's own train command (init from --seed, training batches from
PCG64([seed, 1]), evaluation batches from a fresh PCG64([seed, 2]) at each evaluation), so both
print the same val loss for the same settings.

Written to --out_dir (each file atomically):
  {LOG_NAME:<10} one JSON record per iteration (step, loss, lr, grad_norm, ms) and per evaluation
             (step, train_loss, val_loss)
  {CKPT_NAME:<10} params, AdamW state, training-RNG state and settings, at every evaluation;
             no pickle; `python impl/gpt2.py sample --ckpt {DEFAULT_OUT_DIR.name}/{CKPT_NAME}` samples from it
  {PLOT_NAME:<10} with --plot: loss against step

--resume continues from {CKPT_NAME} bit-identically to an uninterrupted run (same machine and backend):
settings not given on the command line are the checkpoint's, and only --max_iters may differ from
the run that wrote it, e.g. `train.py --max_iters 4000 --resume`.

--gradient_accumulation_steps K (nanoGPT's): a step is K micro-batches of --batch_size rows (K
successive draws of the training generator), each one's gradient scaled by 1/K and summed, then one
AdamW update: the same step as one batch of K x batch_size rows, up to rounding, in less memory.
Under `mpiexec -n R` (mpi4py and an MPI runtime: pip install -e '.[mpi]') the same K micro-batches
are split over R ranks (R must divide K; each rank computes K/R of them), the gradients summed by
one all-reduce (NCCL on GPUs where cupy has it, else MPI), so params, AdamW state and RNG stream stay
identical on every rank; rank 0 alone prints and writes --out_dir. A checkpoint resumes under any R
that divides K (bit-identical under the same R on the same machine). See harness/tools/training.py.

--init_from fine-tunes, as nanoGPT's init_from='gpt2': training starts from the weights of a Hugging
Face GPT-2 folder (config.json + model.safetensors) or of a checkpoint of ours (.npz) instead of a
random init, with a fresh AdamW state at step 0. The model's sizes come from the weights (an explicit
--n_layer/--n_head/--n_embd must agree); --block_size may crop the context (default: the model's);
the data must have the weights' vocabulary (GPT-2 BPE, prepare_data.py --mode gpt2, for GPT-2's).
"""

EPILOG = """\
The last line printed is `val_loss <value>` (the val loss after the last step).

examples:
  python scripts/train.py                                 # baby GPT, 2000 iters, on the CPU
  python scripts/train.py --max_iters 500 --plot
  python scripts/train.py --max_iters 4000 --resume      # continue out/ckpt.npz with its settings
  python scripts/train.py --batch_size 6 --gradient_accumulation_steps 2   # 12 rows a step, 2 passes
  mpiexec -n 2 python scripts/train.py --batch_size 6 --gradient_accumulation_steps 2   # 1 pass per rank
  python scripts/train.py --reference --dtype float64 --max_iters 50
  python scripts/train.py --init_from ~/gpt2 --dataset data/shakespeare --block_size 256 \
      --batch_size 4 --max_iters 20 --learning_rate 3e-5 --min_lr 3e-5 --warmup_iters 0 --eval_iters 5

user errors (missing data, bad checkpoint, impossible sizes) print one line to stderr and exit 2.
"""




def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model (defaults: baby GPT)")
    m.add_argument("--n_layer", type=positive_int, default=4, metavar="N",
                   help="transformer blocks (default: %(default)s)")
    m.add_argument("--n_head", type=positive_int, default=4, metavar="N",
                   help="attention heads per block; must divide n_embd (default: %(default)s)")
    m.add_argument("--n_embd", type=positive_int, default=128, metavar="N",
                   help="channels of the residual stream (default: %(default)s)")
    m.add_argument("--block_size", type=positive_int, default=64, metavar="N",
                   help="context length in tokens (default: %(default)s; with --init_from the model's)")
    m.add_argument("--init_from", metavar="DIR_OR_NPZ", default=None,
                   help="fine-tune: start from a Hugging Face GPT-2 folder or our .npz checkpoint "
                        "(sizes from the weights; see above)")

    t = p.add_argument_group("training (defaults: baby GPT)")
    t.add_argument("--batch_size", type=positive_int, default=12, metavar="N",
                   help="sequences per iteration (default: %(default)s)")
    t.add_argument("--gradient_accumulation_steps", type=positive_int, default=1, metavar="K",
                   help="micro-batches of --batch_size per optimizer step, over all MPI ranks; a "
                        "multiple of the number of ranks (default: %(default)s)")
    t.add_argument("--max_iters", type=nonnegative_int, default=2000, metavar="N",
                   help="optimizer steps in all, counting those of a resumed run (default: %(default)s)")
    t.add_argument("--learning_rate", type=float, default=1e-3, metavar="LR",
                   help="peak learning rate, reached after warmup (default: %(default)s)")
    t.add_argument("--min_lr", type=float, default=1e-4, metavar="LR",
                   help="learning rate at and after lr_decay_iters (default: %(default)s)")
    t.add_argument("--warmup_iters", type=nonnegative_int, default=100, metavar="N",
                   help="steps of linear warmup (default: %(default)s)")
    t.add_argument("--lr_decay_iters", type=positive_int, default=2000, metavar="N",
                   help="step where the cosine decay reaches min_lr; nanoGPT sets it to max_iters "
                        "(default: %(default)s)")
    t.add_argument("--weight_decay", type=float, default=0.1, metavar="WD",
                   help="AdamW's decoupled weight decay, on 2-D tensors only (default: %(default)s)")
    t.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 (default: %(default)s)")
    t.add_argument("--beta2", type=float, default=0.99,
                   help="AdamW beta2; 0.99 for this small model (default: %(default)s)")
    t.add_argument("--eps", type=float, default=1e-8, help="AdamW epsilon (default: %(default)s)")
    t.add_argument("--grad_clip", type=float, default=1.0, metavar="NORM",
                   help="clip the global gradient norm to this; 0 disables (default: %(default)s)")
    t.add_argument("--seed", type=nonnegative_int, default=1337,
                   help="seeds init, training batches and evaluation batches (default: %(default)s)")

    e = p.add_argument_group("evaluation and output")
    e.add_argument("--eval_interval", type=positive_int, default=250, metavar="N",
                   help="estimate train/val loss and checkpoint every N steps (default: %(default)s)")
    e.add_argument("--eval_iters", type=positive_int, default=20, metavar="N",
                   help="batches per loss estimate (default: %(default)s)")
    e.add_argument("--log_interval", type=nonnegative_int, default=10, metavar="N",
                   help="print an iteration line every N steps when there is no progress bar; "
                        "0 never (default: %(default)s)")
    e.add_argument("--dataset", metavar="DIR", default=None,
                   help="prepared data folder: ours (scripts/prepare_data.py) or nanoGPT's (train.bin, "
                        "val.bin, meta.pkl read as plain data) (default: <repo>/data/shakespeare_char, "
                        "prepared from tiny Shakespeare automatically when missing)")
    e.add_argument("--out_dir", metavar="DIR", default=None,
                   help=f"where {LOG_NAME}, {CKPT_NAME} and {PLOT_NAME} go (default: <repo>/out)")
    e.add_argument("--resume", action="store_true",
                   help=f"continue from out_dir/{CKPT_NAME} (same settings; max_iters may grow)")
    e.add_argument("--plot", nargs="?", const="linear", choices=("linear", "log"), default=None,
                   help=f"write out_dir/{PLOT_NAME}: loss and lr against step, titled with the run "
                        f"(impl, seed, config, final val loss); --plot log for a log loss axis")
    e.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")

    b = p.add_argument_group("implementation and backend")
    which = b.add_mutually_exclusive_group()
    which.add_argument("--reference", action="store_true",
                       help="train reference/ (the readable GPT-2) instead of impl/gpt2.py")
    which.add_argument("--impl", metavar="PATH", default=None,
                       help="train this contract file instead of impl/gpt2.py")
    b.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="parameter and activation dtype (default: %(default)s)")
    b.add_argument("--device", choices=DEVICES, default="cpu",
                   help="cpu: numpy; gpu (or cuda): cupy (must be installed) (default: %(default)s)")
    b.add_argument("--threads", type=positive_int, default=1, metavar="N",
                   help="BLAS threads (default: %(default)s; more only helps on a machine with N idle "
                        "cores: on a busy machine a BLAS spinning more threads than idle cores runs several times slower)")
    return p


def resolve_dataset(arg: str | None) -> Path:
    """The data folder; the default one is prepared from tiny Shakespeare when it is missing."""
    if arg is not None:
        return Path(arg)
    if not (DEFAULT_DATASET / "meta.json").is_file():
        print(f"{DEFAULT_DATASET} not found: preparing it from tiny Shakespeare (char mode)", flush=True)
        text_path, source = find_tinyshakespeare(log=print)
        meta = prepare(text_path, DEFAULT_DATASET, mode="char", source=source)
        print(f"prepared {DEFAULT_DATASET}: vocab_size {meta['vocab_size']}, "
              f"train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens", flush=True)
    return DEFAULT_DATASET


MODEL_FLAGS = ("n_layer", "n_head", "n_embd", "block_size")


def explicit_flags(argv: list[str] | None) -> set[str]:
    """The destinations the command line set itself (not by default): parsed again with no defaults."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


RUN_FLAGS = ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "seed", "dtype")


def settings_from_checkpoint(args, argv, out_dir: Path) -> None:
    """--resume: every run setting the command line did not give is the checkpoint's (nanoGPT's
    resume reads the model from its checkpoint too); one it gave must equal the checkpoint's, which
    train() checks. --max_iters may always change."""
    path = out_dir / CKPT_NAME
    if not path.is_file():
        return   # train() says there is nothing to resume from
    meta = load_checkpoint(path)[2]
    given = explicit_flags(argv)
    for k in MODEL_FLAGS:
        if k not in given and k in meta["config"]:
            setattr(args, k, meta["config"][k])
    for k in HPARAM_KEYS:
        if k not in given and k in meta["hparams"]:
            setattr(args, k, meta["hparams"][k])
    for k in RUN_FLAGS:
        if k not in given:
            setattr(args, k, meta.get(k, RESUME_DEFAULTS.get(k)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    world = SingleProcess()
    try:
        world = get_world()
        if world.rank != 0:   # rank 0 alone prints (errors too, unless the run had started: see below)
            sys.stdout = open(os.devnull, "w")
        if args.resume:
            settings_from_checkpoint(args, argv, Path(args.out_dir) if args.out_dir is not None else DEFAULT_OUT_DIR)
        xp = array_module(args.device)
        if xp.__name__ == "cupy":
            world.use_gpu()
        module = load_reference() if args.reference else load_impl(args.impl, required=TRAINING_CONTRACT)
        dataset = resolve_dataset(args.dataset)
        meta = load_meta(dataset)
        if args.init_from is None:
            config = make_config(meta, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                                 block_size=args.block_size)
        else:  # the sizes come from the weights; explicit ones must agree (checked in train)
            config = {k: getattr(args, k) for k in sorted(explicit_flags(argv) & set(MODEL_FLAGS))}
        hparams = {k: getattr(args, k) for k in HPARAM_KEYS}
        out_dir = Path(args.out_dir) if args.out_dir is not None else DEFAULT_OUT_DIR
        which = "reference/" if args.reference else (args.impl or "impl/gpt2.py")
        start = f"from {args.init_from}" if args.init_from else "from scratch"
        env.limit_blas_threads(args.threads)
        print(f"training {which} {start} on {dataset} ({args.device}, {args.dtype}, {world.describe()}): "
              f"{config}", flush=True)
        print(f"BLAS: {env.blas_kernel()}", flush=True)
        t0 = time.perf_counter()
        result = train(module, dataset, config, hparams, max_iters=args.max_iters,
                       batch_size=args.batch_size, eval_interval=args.eval_interval,
                       eval_iters=args.eval_iters, seed=args.seed, xp=xp, dtype=args.dtype,
                       out_dir=out_dir, resume=args.resume, progress=args.progress, plot={"linear": True, "log": "log"}.get(args.plot, False),
                       log_interval=args.log_interval, echo=lambda s: print(s, flush=True),
                       init_from=args.init_from, environment={"blas": env.blas_kernel(), "threads": args.threads},
                       gradient_accumulation_steps=args.gradient_accumulation_steps, world=world)
    except (TrainingError, DataError, ContractError, DeviceError, DistributedError) as e:
        if world.rank == 0 or world.started:
            rank = f" (rank {world.rank} of {world.size})" if world.size > 1 else ""
            print(f"train.py: error{rank}: {e}", file=sys.stderr, flush=True)
        if world.started:   # the other ranks wait in a collective for this one: end them all
            world.abort(2)
        return 2
    wall = time.perf_counter() - t0
    new = [r["ms"] for r in result.iters if result.resumed_from is None or r["step"] >= result.resumed_from]
    if new:
        print(f"{len(new)} iterations in {wall:.1f} s, {sum(new) / len(new):.1f} ms/iter "
              f"(train loss {result.train_loss:.4f})")
    print(f"val_loss {result.val_loss:.6f}")
    return 0


if __name__ == "__main__":
    env.keep_freed_memory()   # numpy's per-step temporaries: no page faults (harness/env.py)
    sys.exit(main())
