#!/usr/bin/env python
"""Did my edit of impl/gpt2.py change the model? Runs every tier this machine supports against the
shipped golden files (golden/*.h5) and names the first tensor that diverged, its tier and step.

    python scripts/verify.py                       # impl/gpt2.py, all tiers, all cases
    python scripts/verify.py --impl my_gpt2.py     # any file that provides the contract
    python scripts/verify.py --json report.json    # machine-readable report for CI ('-' = stdout)

Tiers (golden/README.md has the details):
  exact     bit-identical to the local snapshot taken before the edit (python scripts/snapshot.py);
            "bits changed" is information, not a failure
  semantic  the main gate: float64 against the float64 golden: init, get_batch, lr_at, every
            activation and the loss at step 0, every gradient, the K-step trajectory (~1e-9)
  backend   float32 on numpy (and cupy on a GPU) against the float64 golden, step 0 and the first
            steps; each error bounded by k x the reference's own numpy-float32 error + floor
  score     val loss of a short float32 run of the baby GPT on tiny Shakespeare against the
            reference's 8-seed band (two-sided); skipped where ../shared/data/tinyshakespeare.txt
            is absent
Per case, one table in check order (setup, forward, loss, backward in reverse of forward, then the
trajectory step by step); passing setup and trajectory rows are folded (--full shows them all).
Tolerances: golden/tolerances.json. Exit status 0 when every tier that ran passed, 1 otherwise,
2 on a usage or contract error. The environment is pinned (OPENBLAS_NUM_THREADS=1, ...) before
numpy loads, so the exact tier can compare bits.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import env  # noqa: E402  (stdlib only)

env.pin()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from harness import report, verify  # noqa: E402
from harness.cases import CASES  # noqa: E402
from harness.contract import DEFAULT_IMPL, ContractError, load_impl  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="implementation file (default impl/gpt2.py)")
    ap.add_argument("--case", action="append", choices=list(CASES), help="only this case (repeatable)")
    ap.add_argument("--tier", action="append", choices=list(verify.TIERS), help="only this tier (repeatable)")
    ap.add_argument("--json", metavar="PATH", help="also write the full report as JSON ('-': stdout only)")
    ap.add_argument("--full", action="store_true", help="print every row (no folding of passing rows)")
    ap.add_argument("--golden-dir", default=None, help="folder of the golden files (default golden/)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    size = verify.impl_size(args.impl) if Path(args.impl).is_file() else None
    try:
        module = load_impl(args.impl)
    except ContractError as exc:
        print(f"verify: contract error: {exc}", file=sys.stderr)
        return 2
    results = verify.run(module, args.case, tuple(args.tier or verify.TIERS), args.golden_dir)
    seconds = time.perf_counter() - t0
    line = report.summary(results)
    if args.json != "-":
        print(f"impl: {args.impl}: {size['lines']} lines, {size['non_blank_lines']} non-blank, "
              f"{size['characters']} characters")
        for r in results:
            label = f"{r.case} — {r.tier}" + (f" [{r.info}]" if r.info and r.tier == "backend" else "")
            head = r.info if r.tier == "exact" and r.info else r.verdict
            print(f"\n== {label}: {head}" + (f" ({r.seconds:.1f} s)" if r.seconds else ""))
            if r.tier == "exact" and not r.skipped:
                for row in r.rows[:10]:
                    print(f"  {row.name}: {row.note}")
                if len(r.rows) > 10:
                    print(f"  ... {len(r.rows) - 10} more")
                continue
            print("\n".join(report.table(r, full=args.full)))
            first = r.first_failure()
            if first is not None:
                print(f"  first divergence: {report.describe_failure(r)}")
        print(f"\n{line} ({seconds:.1f} s)")
    if args.json:
        doc = {"verdict": "FAIL" if line.startswith("verify: FAIL") else "OK", "summary": line,
               "impl": size, "seconds": round(seconds, 2), "environment": env.describe(),
               "results": [r.as_dict() for r in results]}
        text = json.dumps(doc, indent=1, default=str)
        if args.json == "-":
            print(text)
        else:
            from harness.data import atomic_write_bytes
            atomic_write_bytes(args.json, (text + "\n").encode())
    return 1 if line.startswith("verify: FAIL") else 0


if __name__ == "__main__":
    sys.exit(main())
