#!/usr/bin/env python
"""Record the exact tier's local bitwise baseline BEFORE an edit:

    python scripts/snapshot.py            # then edit impl/gpt2.py, then python scripts/verify.py

Runs the implementation (--impl, default impl/gpt2.py) on every trajectory case in float64 and
numpy-float32 in the pinned environment (OPENBLAS_NUM_THREADS=1 and the other variables in
harness/env.py, set before numpy loads) and stores the sha256 of every result, with the environment,
in .nanoproof/snapshot.json (git-ignored: it is a property of this machine, never committed).
verify then reports "bit-identical" or "bits changed" — information only; the semantic tier decides.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402

env.pin()

import argparse  # noqa: E402

from nanoproof.golden import snapshot
from nanoproof.judge import tiers
from nanoproof.spec import tolerances  # noqa: E402
from nanoproof.spec.cases import CASES, TRAJECTORY_CASES  # noqa: E402
from nanoproof.spec.contract import DEFAULT_IMPL, ContractError  # noqa: E402
from nanoproof.golden.files import GoldenError  # noqa: E402
from nanoproof.judge.tiers import BACKENDS  # noqa: E402
from nanoproof.runner.worker import Isolated  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="implementation file (default impl/gpt2.py)")
    ap.add_argument("--out", default=str(snapshot.SNAPSHOT_PATH), help="snapshot file (default %(default)s)")
    args = ap.parse_args(argv)
    if not Path(args.impl).is_file():
        print(f"snapshot: contract error: {args.impl}: no such implementation file", file=sys.stderr)
        return 2
    module = Isolated(args.impl)   # the implementation runs in worker processes, as in verify
    try:
        tol = tolerances.load()
    except tolerances.ToleranceError as exc:
        print(f"snapshot: {exc}", file=sys.stderr)
        return 2
    per_case = {}
    for name in TRAJECTORY_CASES:
        case = CASES[name]
        try:
            golden = tiers.load_case_golden(case)
        except GoldenError as exc:
            print(f"snapshot: {exc}", file=sys.stderr)
            return 1
        try:
            res, sem = tiers.semantic(module, case, golden, tol)
            back = {b: tiers.backend(module, case, golden, b, tol)[1] for b in BACKENDS}
        except ContractError as exc:
            print(f"snapshot: contract error: {exc}", file=sys.stderr)
            return 2
        if res.output and not sem:
            print(f"snapshot: {name}: the implementation's worker failed: {res.first_failure().note}",
                  file=sys.stderr)
            return 1
        per_case[name] = snapshot.hashes(sem, back)
        print(f"{name}: {len(per_case[name])} results hashed")
    data = snapshot.write(args.out, args.impl, per_case)
    print(f"snapshot written to {args.out} (environment: {data['environment']['blas']}, "
          f"{data['environment']['cpu']}, pinned: {data['environment']['pinned_in_time']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
