#!/usr/bin/env python
"""How fast does impl/gpt2.py train? Times full float32 training iterations on numpy (get_batch,
forward, backward, clipping + AdamW, lr_at: the step of impl's own `train`) against PyTorch eager
(transformers' GPT-2 + torch AdamW, the oracle tests' step) and the readable reference/, in one run.

    python scripts/bench.py                                  # all configs, 3 repeats of 20 iterations
    python scripts/bench.py --configs baby --no-torch        # one config, ours (and reference) only
    python scripts/bench.py --configs baby --profile         # + where impl's time goes
    python scripts/bench.py --json bench.json                # also write every figure as JSON

Configs: baby (nanoGPT's shakespeare_char: 4 layers, 4 heads, C 128, T 64, B 12, V 65), small (6, 6,
384, 256, 8, 65), gpt2-layer (GPT-2 124M's widths with 2 layers: 12 heads, C 768, T 256, B 4,
V 50257). Data: random tokens of the config's vocabulary, so no dataset is needed.

Method: each implementation runs in its own worker process, warmed up (--warmup iterations), then
timed in blocks of --iters iterations (per-iteration median of a block); the blocks are interleaved
(ours, PyTorch, ours, PyTorch, ...) --repeats times, and each repeat first measures the machine's
float32 matmul ceiling (best of 5 numpy matmuls of 2048^3, default OpenBLAS threads). The table gives
min/median/max over the repeats of the block medians; tokens/s, the analytic FLOPs per iteration
(every matmul of forward and backward, 2*M*K*N each, full attention), achieved GFLOP/s and its
fraction of the ceiling; each worker's peak RSS and its RSS after imports (before the model), next
to the analytic size of params + grads + AdamW m, v + cached activations (the canonical activations
and the softmax of the loss), and growth/analytic = (peak - start) / analytic; the ratio ours/PyTorch is
the median over repeats of each repeat's paired ratio. The reference is timed in the first repeat only
(it is the slow readable one). numpy and torch use their default threads unless --threads N pins
every worker (and the sgemm ceiling) to N: on a busy machine, pin.

--profile splits impl's step, phase by phase (get_batch, forward, backward, adamw_step, each the
median over --iters iterations), into matmul (every matmul of the phase timed alone on contiguous
operands of its shape, best of 5 calls, summed; also given by layer type), python (the same phase on a tiny model with
the same layers and heads, head size 1, T 2, B 1, V 2: the cost of dispatching the calls without the
work) and element-wise (the rest: element-wise ops, reductions, copies, and any matmul slowdown inside
the step).

Memory: by default (--malloc keep) every worker first asks glibc to keep freed memory
(harness/env.py keep_freed_memory, which scripts/train.py also does); --malloc system leaves glibc's
defaults, under which the step's large temporaries come back as fresh pages every iteration.
Exit status 0, 1 when a worker failed, 2 on a usage error.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from nanoproof.measure import bench  # noqa: E402
from nanoproof.cli import nonnegative_int, positive_int  # noqa: E402
from nanoproof.spec.contract import DEFAULT_IMPL  # noqa: E402


def table(results):
    head = ["config", "impl", "ms/iter min", "median", "max", "tokens/s", "GFLOP/iter", "GFLOP/s",
            "sgemm GFLOP/s", "of sgemm", "peak RSS MiB", "(at start)", "analytic MiB", "growth/analytic",
            "ours/torch"]
    rows = [head]
    for name, r in results.items():
        for impl, d in r["impls"].items():
            ms = d["ms_per_iter"]
            ratio = r.get("ratio_impl_over_torch", {}).get("median") if impl == "impl" else None
            rows.append([name, impl, f"{ms['min']:.1f}", f"{ms['median']:.1f}", f"{ms['max']:.1f}",
                         f"{d['tokens_per_s']:.0f}", f"{r['flops_per_iter'] / 1e9:.2f}", f"{d['gflops']:.1f}",
                         f"{r['sgemm_gflops']['median']:.0f}", f"{100 * d['fraction_of_sgemm']:.0f}%",
                         f"{d['peak_rss_mb']:.0f}", f"{d['base_rss_mb']:.0f}", f"{r['analytic_mb']:.0f}",
                         f"{(d['peak_rss_mb'] - d['base_rss_mb']) / r['analytic_mb']:.2f}",
                         "" if ratio is None else f"{ratio:.2f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def profile_table(name, prof):
    lines = [f"\nprofile of impl on {name} (ms per iteration; method: --help)",
             f"  {'phase':<11}{'total':>9}{'matmul':>9}{'element-wise':>14}{'python':>9}"]
    for phase, d in prof["phases"].items():
        lines.append(f"  {phase:<11}{d['total_ms']:9.2f}{d['matmul_ms']:9.2f}{d['elementwise_ms']:14.2f}"
                     f"{d['python_ms']:9.2f}")
    total = {k: sum(d[k] for d in prof["phases"].values()) for k in ("total_ms", "matmul_ms", "elementwise_ms",
                                                                      "python_ms")}
    lines.append(f"  {'step':<11}{total['total_ms']:9.2f}{total['matmul_ms']:9.2f}{total['elementwise_ms']:14.2f}"
                 f"{total['python_ms']:9.2f}")
    lines.append("  matmul by layer type (forward + backward): " + ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(prof["matmul_by_layer_ms"].items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", choices=list(bench.CONFIGS), default=list(bench.CONFIGS),
                    help="configs to time (default: all)")
    ap.add_argument("--repeats", type=positive_int, default=3, help="interleaved repeats (default 3)")
    ap.add_argument("--iters", type=positive_int, default=20, help="timed iterations per block (default 20)")
    ap.add_argument("--warmup", type=nonnegative_int, default=3, help="untimed iterations first (default 3)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch (also skipped when not installed)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference")
    ap.add_argument("--profile", action="store_true", help="also profile impl's step (see above)")
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="implementation file (default impl/gpt2.py)")
    ap.add_argument("--malloc", choices=["keep", "system"], default="keep",
                    help="keep: every worker (ours, PyTorch, reference) asks glibc to keep freed memory "
                         "(harness/env.py keep_freed_memory, as scripts/train.py does); system: glibc's "
                         "defaults, under which each step's fresh temporaries cost page faults (default keep)")
    ap.add_argument("--threads", type=positive_int, default=None, metavar="N",
                    help="BLAS and torch threads in every worker and for the ceiling (default: the libraries' own)")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT (atomically)")
    ap.add_argument("--worker", choices=bench.WORKERS, help=argparse.SUPPRESS)   # internal: one worker process
    ap.add_argument("--one", choices=list(bench.CONFIGS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if not args.one:
            ap.error("--worker needs --one CONFIG")
        bench.worker(args.worker, args.one, args.impl, args.warmup, args.malloc, args.threads)
        return 0
    if not Path(args.impl).is_file():
        ap.error(f"--impl {args.impl}: no such file")
    names = ["impl"]
    if not args.no_torch:
        missing = [m for m in ("torch", "transformers", "safetensors") if importlib.util.find_spec(m) is None]
        if missing:
            print(f"bench: PyTorch skipped: {', '.join(missing)} not installed (the `oracle` extra)",
                  file=sys.stderr)
        else:
            names.append("torch")
    if not args.no_reference:
        names.append("reference")
    from tqdm import tqdm
    per_config = args.repeats * len([n for n in names if n != "reference"]) + ("reference" in names)
    results = {}
    if args.threads:
        from nanoproof import env
        env.limit_blas_threads(args.threads)
    with tqdm(total=per_config * len(args.configs), desc="bench", unit="block", file=sys.stderr,
              disable=None) as bar:        # no frames in a log that is not a terminal
        for name in args.configs:
            bar.set_postfix_str(name)
            try:
                results[name] = bench.run_config(Path(__file__), name, names, args.repeats, args.iters,
                                                 args.warmup, args.impl, args.iters if args.profile else 0,
                                                 tick=bar.update, malloc=args.malloc, threads=args.threads)
            except RuntimeError as exc:
                print(f"bench: {exc}", file=sys.stderr)
                return 1
    print(table(results))
    from nanoproof import env
    print(f"BLAS: {env.blas_kernel()}")
    for name, r in results.items():
        if "profile" in r:
            print(profile_table(name, r["profile"]))
    print(f"\n(python scripts/bench.py {' '.join(argv if argv is not None else sys.argv[1:])})")
    if args.json:
        from nanoproof.paths import atomic_write_bytes
        doc = {"command": ["scripts/bench.py", *(argv if argv is not None else sys.argv[1:])],
               "environment": environment(), "malloc": args.malloc, "results": results}
        atomic_write_bytes(args.json, (json.dumps(doc, indent=1) + "\n").encode())
    return 0


def environment():
    from nanoproof import env
    info = {"cpu": env.cpu_name(), "cpu_count": os.cpu_count(), "blas": env.blas_kernel()}
    if importlib.util.find_spec("torch"):
        import torch
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


if __name__ == "__main__":
    sys.exit(main())
