"""The fresh tier's false alarms, measured: `python -m nanoproof.measure.fresh_alarms --seeds 200` runs the
fresh tier (harness/judge/fresh.py) over many seeds on impl/gpt2.py, reference/ and every rounding-only
rewrite of the mutation catalog, and prints the failing runs and the worst error / tolerance per
tolerance entry (README, "Why an OK can be trusted")."""
if __name__ == "__main__":   # pin BLAS threads etc. before numpy loads
    from nanoproof import env
    env.pin()

import math
import time

from nanoproof.judge.fresh import entry_of, fresh_tier
from nanoproof.measure import catalog
from nanoproof.runner.worker import InProcess
from nanoproof.spec import tolerances
from nanoproof.spec.contract import load_reference


def measure(subjects, seeds, tol=None, log=print):
    """Run the fresh tier on every (label, runner) of `subjects` for every seed. Returns
    {"failed": {label: [(seed, backend, first failing row's name)]}, "worst": {entry: (ratio, label,
    seed, row name, step, error, tolerance)}} where ratio = error / tolerance, the largest over all
    rows governed by the entry (tolerances.json); and under "k" the largest float32 error /
    reference/'s own (max of ROUNDING_SAMPLES runs), over rows where k times it is at least the floor."""
    tol = tol or tolerances.load()
    floor, k = tol["backend.floor"]["value"], tol["backend.k"]["value"]
    failed, worst = {label: [] for label, _ in subjects}, {}
    for seed in seeds:                      # seeds outer: reference/'s runs are cached per seed
        for label, runner in subjects:
            for res in fresh_tier(runner, seed, tol):
                if res.skipped:
                    continue
                if res.failed:
                    failed[label].append((seed, res.backend, res.first_failure().name))
                    log(f"  FAIL {label} seed {seed} [{res.backend}]: {res.first_failure().name}: "
                        f"{res.first_failure().note[:160]}")
                for row in res.rows:
                    entry = entry_of(row)
                    if entry is None or row.err is None or row.tol is None:
                        continue
                    ratio = row.err / row.tol if row.tol else (0.0 if row.err == 0 else math.inf)
                    if ratio > worst.get(entry, (-1.0,))[0]:
                        worst[entry] = (ratio, label, seed, row.name, row.step, row.err, row.tol)
                    if entry == "backend.k" and row.tol >= 2 * floor:   # k * err_ref dominates
                        f = row.err / ((row.tol - floor) / k)
                        if f > worst.get("k", (-1.0,))[0]:
                            worst["k"] = (f, label, seed, row.name, row.step, row.err, row.tol)
    return {"failed": failed, "worst": worst}


def main(argv=None):
    """python -m nanoproof.measure.fresh_alarms --seeds 200: the fresh tier's false alarms over many seeds on
    impl/gpt2.py, reference/ and every rounding-only rewrite of harness/measure/catalog.py's catalog (of
    the frozen copy tests/fixtures/gpt2_frozen.py; each run
    in this process: the verdicts are those of verify's worker runs), with the worst error /
    tolerance per tolerance entry."""
    import argparse
    import tempfile
    import warnings
    from nanoproof.spec.contract import DEFAULT_IMPL, load_impl
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--seeds", type=int, default=200, help="how many seeds (default 200)")
    ap.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="the file (default impl/gpt2.py)")
    ap.add_argument("--no-rewrites", action="store_true", help="only the file and reference/")
    args = ap.parse_args(argv)
    subjects = [(str(args.impl), load_impl(args.impl)), ("reference/", load_reference())]
    if not args.no_rewrites:
        with tempfile.TemporaryDirectory(prefix="nanoproof-fresh-") as folder:   # imported, then gone
            subjects += [(f"rewrite {name}", load_impl(path)) for name, path in catalog.write_rewrites(folder)]
    subjects = [(label, InProcess(m, label)) for label, m in subjects]
    t0 = time.perf_counter()
    seeds = range(args.first, args.first + args.seeds)
    print(f"fresh tier: {len(subjects)} subjects x seeds {seeds.start}..{seeds.stop - 1}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = measure(subjects, seeds)
    n_fail = sum(len(v) for v in out["failed"].values())
    print(f"\nfalse alarms: {n_fail} failing runs over {len(subjects)} subjects x {len(seeds)} seeds "
          f"({time.perf_counter() - t0:.0f} s)")
    for label, fails in out["failed"].items():
        if fails:
            print(f"  {label}: {len(fails)} (seeds {sorted({s for s, _, _ in fails})[:10]})")
    print("worst error / tolerance per entry (k: float32 error / reference/'s own where k x that >= floor):")
    for entry, (ratio, label, seed, name, step, err, tolv) in sorted(out["worst"].items()):
        print(f"  {entry:32s} {ratio:9.3g}  {label}, seed {seed}: {name}"
              f"{'' if step is None else f' @ step {step}'} (err {err:.3g}, tolerance {tolv:.3g})")
    return 1 if n_fail else 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
