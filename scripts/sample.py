#!/usr/bin/env python
"""Continue prompts with a GPT-2: Hugging Face weights or a checkpoint of ours, through any contract file.

Thin command-line front end over the contract's `generate` (harness/spec/contract.py) and
nanoproof.tools.evaluate.load_weights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# this checkout's harness, even where another checkout is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from nanoproof import env  # noqa: E402
from nanoproof.cli import DEVICES, DeviceError, nonnegative_int, positive_int  # noqa: E402
from nanoproof.spec.contract import ContractError  # noqa: E402
from nanoproof.tools.data import GPT2_VOCAB_SIZE, DataError, encoder  # noqa: E402
from nanoproof.tools.evaluate import WeightsError, generate_beyond_block, open_model  # noqa: E402

GPT2_EOT = GPT2_VOCAB_SIZE - 1  # <|endoftext|>, tiktoken's gpt2 eot_token

DESCRIPTION = """\
Continue one or more prompts (one left-padded batch, with the KV cache unless --no_kv_cache) by
calling the contract's `generate`: greedy at --temperature 0, else temperature, then top-k, then
top-p sampling, seeded by --seed. Generation stops after --n_tokens new tokens or (--stop_at_eot)
when every row has produced <|endoftext|>; past the model's block_size each row goes on from its
last block_size - 1 tokens (nanoGPT crops its context likewise; a prompt must fit the block).

The model is a Hugging Face GPT-2 folder (--weights: config.json + model.safetensors as
`save_pretrained` writes it or as downloaded from the hub; read by harness/tools/pretrained.py, pickle
never loaded; prompts in GPT-2 BPE) or a checkpoint of ours (--ckpt: the .npz scripts/train.py or
`impl/gpt2.py train --out_dir` writes; prompts in its data's encoding). It runs through an
implementation file (default impl/gpt2.py; --impl reference for reference/).
"""

EPILOG = """\
Each prompt's text and continuation is printed; with several prompts, each after a line
`---------- sample I of N: 'PROMPT'`.

examples:
  python scripts/sample.py "Alan Turing theorized that" "The meaning of life is" --weights ~/gpt2 \\
      --n_tokens 40 --temperature 0
  python scripts/sample.py "Hello" --weights ~/gpt2 --temperature 0.8 --top_k 200 --top_p 0.95 --seed 1 --stop_at_eot
  python scripts/sample.py "ROMEO:" --ckpt out/ckpt.npz --impl reference --dtype float64

user errors (missing or broken weights, text the vocabulary cannot encode, a prompt longer than
block_size) print one line to stderr and exit 2.
"""


def probability(s: str) -> float:
    """An argparse `type` for --top_p: a float in (0, 1]."""
    try:
        p = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not 0 < p <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {p}")
    return p


def temperature(s: str) -> float:
    try:
        t = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not t >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {t}")
    return t


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sample.py", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="text to continue (several: one batch)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--weights", metavar="DIR", help="Hugging Face GPT-2 folder (config.json, model.safetensors)")
    which.add_argument("--ckpt", metavar="FILE", help="our checkpoint (.npz written by scripts/train.py)")
    p.add_argument("--n_tokens", type=positive_int, default=200, metavar="N",
                   help="new tokens per prompt; past block_size the context is cropped (default: %(default)s)")
    p.add_argument("--temperature", type=temperature, default=0.8, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top_k", type=nonnegative_int, default=200, metavar="K",
                   help="keep the K most likely tokens; 0 = all (default: %(default)s)")
    p.add_argument("--top_p", type=probability, default=None, metavar="P",
                   help="keep the fewest most likely tokens whose probability reaches P (default: all)")
    p.add_argument("--seed", type=int, default=1337, help="sampling seed: numpy PCG64(seed) (default: %(default)s)")
    p.add_argument("--stop_at_eot", action="store_true", help="end a row at <|endoftext|> (GPT-2 BPE only)")
    p.add_argument("--no_kv_cache", action="store_true", help="recompute the whole prefix for every token")
    p.add_argument("--impl", metavar="PATH", default=None,
                   help="implementation file to run (default: impl/gpt2.py); `reference` for reference/")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="(default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="cpu: numpy; gpu (or cuda): cupy (default: cpu)")
    return p


def text_codec(config: dict, weights_data: dict | None, source) -> tuple:
    """(encode, decode, end-of-text id or None) for the model's vocabulary: the checkpoint's data
    encoding, or GPT-2 BPE for a Hugging Face model."""
    if weights_data is not None:
        encode, decode = encoder(weights_data)
        return encode, decode, None if weights_data.get("encoding") == "char" else GPT2_EOT
    if config["vocab_size"] < GPT2_VOCAB_SIZE:
        raise WeightsError(f"{source} has vocab_size {config['vocab_size']}: prompts are encoded in GPT-2 BPE, "
                           f"which needs at least {GPT2_VOCAB_SIZE} token ids")
    encode, decode = encoder({"encoding": "gpt2"})
    return encode, decode, GPT2_EOT


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        module, xp, source, params, config, weights_data = open_model(args.impl, args.weights, args.ckpt,
                                                                      args.dtype, args.device)
        encode, decode, eot = text_codec(config, weights_data, source)
        if args.stop_at_eot and eot is None:
            raise WeightsError(f"{source} is a char-level model: it has no <|endoftext|> token for --stop_at_eot")
        prompts = [encode(text) for text in args.prompts]
        tokens = generate_beyond_block(module, params, prompts, args.n_tokens, config, temperature=args.temperature,
                                       top_k=args.top_k or None, top_p=args.top_p,
                                       rng=np.random.Generator(np.random.PCG64(args.seed)),
                                       kv_cache=not args.no_kv_cache, stop_token=eot if args.stop_at_eot else None)
    except (WeightsError, DataError, ContractError, DeviceError, ValueError) as e:
        print(f"sample.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for b, (prompt, new) in enumerate(zip(prompts, tokens)):
        if len(prompts) > 1:
            print(f"---------- sample {b + 1} of {len(prompts)}: {args.prompts[b]!r}")
        print(decode(prompt + new))
    return 0


if __name__ == "__main__":
    env.keep_freed_memory()   # numpy's per-step temporaries: no page faults (harness/env.py)
    sys.exit(main())
