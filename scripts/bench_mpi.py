#!/usr/bin/env python
"""Data-parallel training speed: tokens/s of scripts/train.py with R = 1 and R = 2 MPI ranks, and the
all-reduce's volume and time per step.

    python scripts/bench_mpi.py                          # baby and gpt2-layer, R = 1 and 2 (~3 min)
    python scripts/bench_mpi.py --configs baby --iters 40 --ranks 1,2

Each run is one `[mpiexec -n R] python scripts/train.py` on random tokens of the config's vocabulary
(harness/measure/bench.py's configs: baby, small, gpt2-layer), float32 on the CPU, one BLAS thread per
rank, with the same global batch whatever R: a step is K = 2 micro-batches of the config's batch size
(--gradient_accumulation_steps 2; one process computes both, two ranks one each, then one
all-reduce). ms/step is the median of rank 0's logged iteration times (log.jsonl `ms`: the micro-batches,
the all-reduce and AdamW) after --warmup steps; tokens/s = 2 x batch_size x block_size / step time.
The all-reduce volume is the gradient buffer, 4 bytes x parameters in float32 (what each rank sends
into MPI_Allreduce; a ring moves 2 (R - 1) / R of it per rank); its time is the median of 10
`world.allreduce_sum` calls of that size under mpiexec -n 2 (harness/tools/distributed.py).
On a 2-core machine two ranks compete with everything else running there: read the figures with
the load average printed beside them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402

env.pin()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

from nanoproof.measure.bench import CONFIGS, n_params  # noqa: E402
from nanoproof.tools.checkpoints import read_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
ALLREDUCE = """
import sys, time, statistics, numpy as np
sys.path.insert(0, {root!r})
from nanoproof.tools.distributed import get_world
w = get_world()
grads = {{"g": np.ones({n}, dtype=np.float32)}}
times = []
for _ in range(11):
    t0 = time.perf_counter(); w.allreduce_sum(grads); times.append(time.perf_counter() - t0)
if w.rank == 0:
    print(statistics.median(times[1:]))
"""


def find_mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() else shutil.which("mpiexec")


def random_data(folder: Path, vocab_size: int, tokens: int = 200_000) -> Path:
    """A data folder of uniformly random tokens (ours: train.bin, val.bin, meta.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        rng.integers(0, vocab_size, tokens, dtype=np.uint16).tofile(folder / f"{split}.bin")
    meta = {"format": "nanoproof-data-1", "encoding": "gpt2" if vocab_size == 50257 else "random",
            "vocab_size": vocab_size, "train_tokens": tokens, "val_tokens": tokens, "dtype": "uint16",
            "source": "random tokens (scripts/bench_mpi.py)"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def run(mpiexec, ranks, cfg, data, out_dir, iters):
    flags = [f"--{k}={cfg[k]}" for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size")]
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), f"--dataset={data}", f"--out_dir={out_dir}",
           *flags, "--gradient_accumulation_steps=2", f"--max_iters={iters}", f"--eval_interval={iters}",
           "--eval_iters=1", "--no-progress", "--threads=1", "--dtype=float32"]
    cmd = [mpiexec, "-n", str(ranks), *cmd] if ranks > 1 else cmd
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if p.returncode:
        sys.exit(f"bench_mpi.py: error: {' '.join(cmd[:4])} ... exited {p.returncode}: "
                 f"{(p.stderr.strip().splitlines() or ['?'])[-1]}")
    return [r["ms"] for r in read_log(Path(out_dir) / "log.jsonl") if r["kind"] == "iter"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="baby,gpt2-layer", help="comma-separated, of " + ", ".join(CONFIGS))
    ap.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default: 1,2)")
    ap.add_argument("--iters", type=int, default=None, help="steps per run (default: 30 baby, 6 others)")
    ap.add_argument("--warmup", type=int, default=1, help="first steps not timed (default: 1)")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in names if c not in CONFIGS]
    if bad:
        ap.error(f"--configs: unknown {', '.join(bad)} (known: {', '.join(CONFIGS)})")
    ranks = [int(r) for r in args.ranks.split(",")]
    mpiexec = find_mpiexec()
    if mpiexec is None and any(r > 1 for r in ranks):
        sys.exit("bench_mpi.py: error: no mpiexec beside python or on PATH (pip install -e '.[mpi]')")
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"{'config':11s} {'params':>11s} {'allreduce':>10s} {'R':>2s} {'ms/step':>9s} {'tokens/s':>9s}"
          f" {'speed-up':>8s}")
    with tempfile.TemporaryDirectory(prefix="nanoproof-bench-mpi-") as tmp:
        for name in names:
            cfg = CONFIGS[name]
            data = random_data(Path(tmp) / name, cfg["vocab_size"])
            iters = args.iters or (30 if name == "baby" else 6)
            n = n_params(cfg)
            base = None
            for r in ranks:
                ms = statistics.median(run(mpiexec, r, cfg, data, Path(tmp) / f"{name}-{r}", iters)[args.warmup:])
                tokens = 2 * cfg["batch_size"] * cfg["block_size"] / (ms / 1000)
                base = base or tokens
                print(f"{name:11s} {n:11,d} {4 * n / 1e6:8.1f}MB {r:2d} {ms:9.1f} {tokens:9.0f} "
                      f"{tokens / base:7.2f}x", flush=True)
            if mpiexec is not None:
                p = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", ALLREDUCE.format(root=str(ROOT), n=n)],
                                   capture_output=True, text=True, env=ENV)
                if p.returncode == 0:
                    print(f"{name:11s} all-reduce of {4 * n / 1e6:.1f} MB (float32) on 2 ranks: "
                          f"{1000 * float(p.stdout.split()[-1]):.1f} ms (median of 10)", flush=True)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
