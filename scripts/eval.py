#!/usr/bin/env python
"""Mean cross-entropy and perplexity of a GPT-2 on a prepared split (pretrained weights or ours).

Thin command-line front end over nanoproof.tools.evaluate.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# this checkout's harness, even where another checkout is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoproof.cli import DEVICES, DeviceError, positive_int  # noqa: E402
from nanoproof import env  # noqa: E402
from nanoproof.spec.contract import ContractError  # noqa: E402
from nanoproof.tools.data import DataError, load_meta, load_split  # noqa: E402
from nanoproof.tools.evaluate import WeightsError, check_vocabulary, evaluate, open_model, perplexity  # noqa: E402

DESCRIPTION = """\
Report the mean cross-entropy (nats per token, token-weighted) and the perplexity exp(loss) of a
GPT-2 on one split of a data folder prepared by scripts/prepare_data.py.

The model is either a Hugging Face GPT-2 folder (--weights: config.json + model.safetensors, as
`save_pretrained` writes it or as downloaded from the hub; pickle .bin files are refused) or a
checkpoint of ours (--ckpt: the .npz scripts/train.py writes), read by the harness
(harness/tools/pretrained.py: numpy alone) into the contract's layout. It runs through an
implementation file (default impl/gpt2.py; --impl reference for reference/).

Windows (deterministic, no sampling): with T = --block_size and the split's first N tokens d[0..N-1]
(N = --max_tokens, default the whole split), window k feeds d[kT : kT+T] and scores the next token of
each, d[kT+1 : kT+T+1]. So window k covers tokens [kT, kT+T], consecutive windows share their boundary
token (transformers' perplexity recipe with stride = max_length), and the trailing partial window
(fewer than T targets left) is evaluated too: every token but the first is scored exactly once,
N - 1 in all, each with the context since the start of its window.
"""

EPILOG = """\
The last line printed is `<split> loss <mean cross-entropy> perplexity <exp(loss)> tokens <count>`.

examples:
  python scripts/prepare_data.py --mode gpt2          # tiny Shakespeare in GPT-2 BPE -> data/shakespeare
  python scripts/eval.py --weights ~/gpt2 --data data/shakespeare --max_tokens 32769
  python scripts/eval.py --ckpt out/ckpt.npz --data data/shakespeare_char --split val
  python scripts/eval.py --weights ~/gpt2 --data data/shakespeare --impl reference --dtype float64

Cost: a forward pass keeps every activation; GPT-2 124M in float32 with T 1024 and batch_size 1
peaks at 4.3 GB and takes 6 s a window on one CPU thread (measured here), so on a CPU use
--max_tokens, or --device gpu.

user errors (missing or broken weights, vocabulary mismatch, missing data) print one line to stderr
and exit 2.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval.py", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--weights", metavar="DIR", help="Hugging Face GPT-2 folder (config.json, model.safetensors)")
    which.add_argument("--ckpt", metavar="FILE", help="our checkpoint (.npz written by scripts/train.py)")
    p.add_argument("--data", metavar="DIR", required=True, help="prepared data folder (scripts/prepare_data.py)")
    p.add_argument("--split", choices=("val", "train"), default="val", help="(default: %(default)s)")
    p.add_argument("--max_tokens", type=positive_int, metavar="N", default=None,
                   help="evaluate the split's first N tokens only (default: the whole split)")
    p.add_argument("--block_size", type=positive_int, metavar="T", default=None,
                   help="window length, at most the model's context (default: the model's block_size)")
    p.add_argument("--batch_size", type=positive_int, metavar="B", default=1,
                   help="full windows per forward pass (default: %(default)s)")
    p.add_argument("--impl", metavar="PATH", default=None,
                   help="implementation file to run (default: impl/gpt2.py); `reference` for reference/")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="(default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="cpu: numpy; gpu (or cuda): cupy (default: cpu)")
    p.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        module, xp, source, params, config, weights_data = open_model(args.impl, args.weights, args.ckpt,
                                                                      args.dtype, args.device)
        meta = load_meta(args.data)
        check_vocabulary(config, weights_data, meta, source, args.data)
        data = load_split(args.data, args.split)
        print(f"model {source}: {config}; {args.impl or 'impl/gpt2.py'}, {args.dtype}, {args.device}", flush=True)
        t0 = time.perf_counter()
        loss, count = evaluate(module, params, config, data, block_size=args.block_size,
                               batch_size=args.batch_size, max_tokens=args.max_tokens, xp=xp,
                               progress=args.progress)
    except (WeightsError, DataError, ContractError, DeviceError) as e:
        print(f"eval.py: error: {e}", file=sys.stderr)
        return 2
    T = args.block_size or config["block_size"]
    print(f"{count:,} tokens of {args.data} {args.split} ({len(data):,} in the split) in windows of {T}, "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"{args.split} loss {loss:.6f} perplexity {perplexity(loss):.4f} tokens {count}")
    return 0


if __name__ == "__main__":
    env.keep_freed_memory()   # numpy's per-step temporaries: no page faults (harness/env.py)
    sys.exit(main())
