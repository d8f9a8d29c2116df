#!/usr/bin/env python
"""The CI gate on val loss (the score tier alone): exit 1, with a message naming the case, the step,
the expected band and the observed value, when the val loss is outside the reference's seed band.

    python scripts/gate_val_loss.py                         # short float32 run of impl/gpt2.py
    python scripts/gate_val_loss.py --impl other.py
    python scripts/gate_val_loss.py --value 2.61 --step 80  # gate a number measured elsewhere
                                                            # (same case config, seed, steps)

The band is two-sided: |val loss - ensemble mean| <= band_sigmas * sigma + band_floor (golden/
tolerances.json), sigma the spread of the reference's 8-seed float32 ensemble at that step
(golden/shakespeare-char.h5). A run also has to match the reference's run of the same seed within
score.same_seed. Exit 0 pass, 1 fail, 2 usage/contract error, 3 skipped (no tiny Shakespeare here;
the reason is printed). pytest runs it (tests/test_golden.py), so the README's test command gates it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import env  # noqa: E402

env.pin()

import argparse  # noqa: E402

from harness.judge import score
from harness.spec import tolerances  # noqa: E402
from harness.spec.cases import CASES, SCORE_CASES  # noqa: E402
from harness.spec.contract import DEFAULT_IMPL, ContractError  # noqa: E402
from harness.golden.files import GoldenError  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="implementation file (default impl/gpt2.py)")
    ap.add_argument("--case", default=SCORE_CASES[0], choices=list(SCORE_CASES))
    ap.add_argument("--value", type=float, help="gate this observed val loss instead of running")
    ap.add_argument("--step", type=int, help="the step of --value / the length of the run "
                                             "(default: the case's short_steps)")
    ap.add_argument("--seed", type=int, help="seed of the run (default: the case's verify_seed)")
    args = ap.parse_args(argv)
    try:
        tol = tolerances.load()
    except tolerances.ToleranceError as exc:
        print(f"gate_val_loss: {exc}", file=sys.stderr)
        return 2
    case = CASES[args.case]
    step = args.step if args.step is not None else case.short_steps
    seed = args.seed if args.seed is not None else case.verify_seed
    if args.value is not None:
        try:
            golden = score.load(case)
            rows = score.check(case, golden, args.value, seed, step, tol)
        except GoldenError as exc:
            print(f"gate_val_loss: FAIL: {exc}", file=sys.stderr)
            return 1
        skipped = ""
    else:
        if not Path(args.impl).is_file():
            print(f"gate_val_loss: contract error: {args.impl}: no such implementation file", file=sys.stderr)
            return 2
        try:   # the implementation runs in a worker process, as in verify
            res = score.score_tier(args.impl, case, tol, steps=step, seed=seed)
        except ContractError as exc:
            print(f"gate_val_loss: contract error: {exc}", file=sys.stderr)
            return 2
        rows, skipped = res.rows, res.skipped
    if skipped:
        print(f"gate_val_loss: SKIP: {case.name}: {skipped}")
        return 3
    failed = [r for r in rows if r.failed]
    for r in rows:
        print(f"gate_val_loss: {r.verdict}: {case.name}, step {r.step}: {r.name}: {r.note}"
              + (f" (|Δ| {r.err:.4g} > {r.tol:g}{' sigma' if r.metric == 'sigma' else ''})" if r.failed and r.err is not None else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
