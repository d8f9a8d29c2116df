#!/usr/bin/env python
"""How fast does impl/gpt2.py generate text, with and without its KV cache?

    python scripts/bench_generate.py                          # 200 tokens, batch 1, 3 repeats
    python scripts/bench_generate.py --batch 1 --batch 4      # also a batch of 4 prompts
    python scripts/bench_generate.py --n_tokens 50 --repeats 1 --json out/bench_generate.json

Model: impl's `init` with GPT-2 124M's config (12 layers, 12 heads, n_embd 768, vocab 50257,
block_size 1024), random weights, float32, numpy on the CPU. Prompts: --prompt_tokens random token
ids per row (Generator(PCG64(0))). Each repeat runs greedy `generate` for --n_tokens new tokens with
the KV cache (each token costs one position's work) and without it (every step recomputes the whole
prefix), one after the other; tokens/s = batch x new tokens / wall seconds (the prompt's own forward
included). The table gives min / median / max over the repeats and the speed-up: the median of each
repeat's cache / no-cache ratio. Both paths must give the same tokens (checked; exit status 1 if
not). numpy uses its default BLAS threads unless --threads N; on a shared machine compare the
ratio of one run, not absolute figures across runs.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nanoproof.cli import positive_int  # noqa: E402
from nanoproof.spec.contract import DEFAULT_IMPL, ContractError, load_impl  # noqa: E402

GPT2_124M = {"vocab_size": 50257, "block_size": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768}


def timed(impl, params, prompts, n_tokens, kv_cache):
    t0 = time.perf_counter()
    tokens, _ = impl.generate(params, prompts, n_tokens, GPT2_124M, kv_cache=kv_cache)
    seconds = time.perf_counter() - t0
    return tokens, len(prompts) * len(tokens[0]) / seconds


def bench(impl, batch, n_tokens, prompt_tokens, repeats, progress):
    rng = np.random.Generator(np.random.PCG64(0))
    prompts = rng.integers(0, GPT2_124M["vocab_size"], (batch, prompt_tokens)).tolist()
    params = impl.init(GPT2_124M, 0, np, "float32")
    speeds = {"kv_cache": [], "no_cache": []}
    same = True
    for _ in tqdm(range(repeats), desc=f"batch {batch}", disable=None if progress else True):
        cached, speed = timed(impl, params, prompts, n_tokens, True)
        speeds["kv_cache"].append(speed)
        recomputed, speed = timed(impl, params, prompts, n_tokens, False)
        speeds["no_cache"].append(speed)
        same &= cached == recomputed
    ratios = [a / b for a, b in zip(speeds["kv_cache"], speeds["no_cache"])]
    return {"batch": batch, "n_tokens": n_tokens, "prompt_tokens": prompt_tokens, "repeats": repeats,
            "tokens_per_s": {k: {"min": min(v), "median": statistics.median(v), "max": max(v), "all": v}
                             for k, v in speeds.items()},
            "speedup_median": statistics.median(ratios), "same_tokens": same}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="implementation file (default impl/gpt2.py)")
    ap.add_argument("--n_tokens", type=positive_int, default=200, help="new tokens per row (default 200)")
    ap.add_argument("--prompt_tokens", type=positive_int, default=8, help="prompt length (default 8)")
    ap.add_argument("--batch", type=positive_int, action="append", help="batch size, repeatable (default 1)")
    ap.add_argument("--repeats", type=positive_int, default=3, help="default 3")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--no-progress", "--no_progress", dest="no_progress", action="store_true",
                    help="no progress bar (there is none anyway when stderr is not a terminal)")
    ap.add_argument("--threads", type=positive_int, default=None, metavar="N",
                    help="BLAS threads (default: the library's own; on a busy machine, pin)")
    args = ap.parse_args(argv)
    if args.prompt_tokens + args.n_tokens > GPT2_124M["block_size"]:
        ap.error(f"--prompt_tokens + --n_tokens must be <= block_size {GPT2_124M['block_size']}")
    from nanoproof import env
    if args.threads:
        env.limit_blas_threads(args.threads)
    try:
        impl = load_impl(args.impl)
    except ContractError as exc:
        print(f"bench_generate: contract error: {exc}", file=sys.stderr)
        return 2
    results = [bench(impl, b, args.n_tokens, args.prompt_tokens, args.repeats, not args.no_progress)
               for b in args.batch or [1]]
    print(f"generate, GPT-2 124M shape (random weights), float32 numpy, {args.n_tokens} new tokens after "
          f"{args.prompt_tokens} prompt tokens, greedy, {args.repeats} repeats; tokens/s min / median / max")
    print(f"BLAS: {env.blas_kernel()}")
    for r in results:
        s = r["tokens_per_s"]
        cells = [f"{k}: {s[k]['min']:.1f} / {s[k]['median']:.1f} / {s[k]['max']:.1f}" for k in s]
        print(f"batch {r['batch']}: " + ", ".join(cells) + f"; KV cache speed-up x{r['speedup_median']:.1f}"
              + ("" if r["same_tokens"] else "; TOKENS DIFFER between the two paths"))
    if args.json:
        from nanoproof.paths import atomic_write_bytes
        atomic_write_bytes(args.json, (json.dumps({"config": GPT2_124M, "results": results}, indent=1) + "\n").encode())
    return 0 if all(r["same_tokens"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
