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
            steps; each error bounded by k x reference/'s own float32 error, run live on this
            machine and backend, + floor; every result in float32 (an upcast FAILs)
  score     val loss of a short float32 run of the baby GPT on tiny Shakespeare against the
            reference's 8-seed band (two-sided); not run where ../shared/data/tinyshakespeare.txt
            is absent (the summary says so; --require score makes that a failure)
  fresh     new small cases drawn from a printed seed (T < block_size, grad_clip 0, generation
            settings the golden cases never reach) against reference/ run live, float64 and float32
Per case, one table in check order (setup, forward, loss, backward in reverse of forward, then the
trajectory step by step); passing setup and trajectory rows are folded (--full shows them all).

The implementation runs in worker processes, never in verify's own: a worker that exits, crashes,
prints to stdout or passes --timeout is a FAIL, never a pass; its output is shown, never mixed into
--json -. Tolerances: golden/tolerances.json. Exit status 0 when every tier that ran passed (and
every --require'd tier or backend ran), 1 otherwise, 2 on a usage, contract, tolerance-table or
golden-file error. The environment is pinned (OPENBLAS_NUM_THREADS=1, ...) before numpy loads, so
the exact tier can compare bits.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402  (stdlib only)

env.pin()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from nanoproof.judge import report, verify  # noqa: E402
from nanoproof.spec.cases import CASES  # noqa: E402
from nanoproof.spec.contract import DEFAULT_IMPL, ContractError  # noqa: E402
from nanoproof.golden.files import GoldenError  # noqa: E402
from nanoproof.spec.tolerances import ToleranceError, load as load_tolerances  # noqa: E402
from nanoproof.runner.worker import DEFAULT_TIMEOUT  # noqa: E402


def print_full(results):
    """--full: every tier's whole table, every row."""
    shown = set()
    for r in results:
        label = f"{r.case} — {r.tier}" + (f" [{r.backend}]" if r.backend else "")
        head = r.info if r.tier == "exact" and r.info else r.verdict
        extra = f"; {r.info}" if r.info and r.tier != "exact" and not r.skipped \
            and (r.case, r.info) not in shown else ""
        shown.add((r.case, r.info))
        print(f"\n== {label}: {head}" + (f" ({r.seconds:.1f} s{extra})" if r.seconds else extra))
        if r.tier == "exact" and not r.skipped:
            for row in r.rows:
                print(f"  {row.name}: {row.note}")
            continue
        print("\n".join(report.table(r, full=True)))
        if r.first_failure() is not None:
            print(f"  first divergence: {report.describe_failure(r)}")
        if r.output and r.failed:
            print("  what the code under test printed:\n" + "\n".join(
                "    " + ln for ln in r.output.splitlines()[-20:]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="implementation file (default impl/gpt2.py)")
    ap.add_argument("--case", action="append", choices=list(CASES), help="only this case (repeatable)")
    ap.add_argument("--tier", action="append", choices=list(verify.TIERS), help="only this tier (repeatable)")
    ap.add_argument("--require", action="append", default=[], metavar="WHAT",
                    help="fail (exit 1) when WHAT did not run: a tier (score, fresh, backend, ...) or a "
                         "backend (cupy-float32, ...); for CI, where a skip must not pass silently")
    ap.add_argument("--fresh-seed", type=int, default=None, metavar="N",
                    help="the fresh tier's seed (default: a new one each run, printed; repeat a run "
                         "with the printed seed)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                    help="wall-clock limit of each worker process that runs the implementation "
                         "(default %(default)g s); a worker past it is killed and the run FAILs")
    ap.add_argument("--json", metavar="PATH", help="also write the full report as JSON ('-': stdout only)")
    ap.add_argument("--full", action="store_true",
                    help="print every row of every tier (default: one line per case and tier, and "
                         "around a failure its first divergence and the rows next to it)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the verdict line")
    ap.add_argument("--report", metavar="PATH.html",
                    help="also write a self-contained HTML report: every check's error / tolerance "
                         "per case and tier, the trajectory per step, and the model's code flow "
                         "coloured by each tensor's error")
    ap.add_argument("--fail-fast", action="store_true",
                    help="stop at the first case that fails (the tiers after it are not run)")
    ap.add_argument("--golden-dir", default=None, help="folder of the golden files (default golden/)")
    args = ap.parse_args(argv)
    known = set(verify.TIERS) | {"numpy-float32", "cupy-float32", "cupy-float64"}
    bad = [r for r in args.require if r not in known]
    if bad:
        ap.error(f"--require {bad[0]}: not a tier or backend (one of {', '.join(sorted(known))})")
    quiet = args.json == "-"
    t0 = time.perf_counter()
    if not Path(args.impl).is_file():
        print(f"verify: contract error: {args.impl}: no such implementation file", file=sys.stderr)
        return 2
    size = verify.impl_size(args.impl)
    try:
        tol = load_tolerances()
    except ToleranceError as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    from nanoproof.runner.worker import Isolated
    runner = Isolated(args.impl, timeout=args.timeout)
    try:
        failed_import = verify.preflight(runner)   # import it once in a worker: it may exit or hang
        if failed_import is not None:
            failed_import.rows[0].name = "importing the file"
            results = [failed_import]
        else:
            results = verify.run(runner, args.case, tuple(args.tier or verify.TIERS), args.golden_dir,
                                 fresh_seed=args.fresh_seed, tol=tol, fail_fast=args.fail_fast)
    except ContractError as exc:
        print(f"verify: contract error: {exc}", file=sys.stderr)
        return 2
    except GoldenError as exc:
        print(f"verify: golden file error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    verdict = report.verdict(results, args.require)
    if not quiet and not args.quiet:
        print(f"impl: {args.impl} ({size['non_blank_lines']} non-blank lines)")
        if args.full:
            print_full(results)
        else:
            print("\n".join(report.compact(results)))
    if args.report:
        from nanoproof.judge import html_report
        html_report.write(args.report, results, verdict.line, args.impl, seconds, CASES)
        if not quiet and not args.quiet:
            print(f"\nreport: {args.report}")
    if not quiet:
        print(f"\n{verdict.line} ({seconds:.1f} s)" if not args.quiet else f"{verdict.line} ({seconds:.1f} s)")
    if args.json:
        doc = {"schema_version": 1, "tool": "verify", "verdict": "OK" if verdict.ok else "FAIL", "summary": verdict.line,
               "not_run": verdict.not_run, "impl": size, "seconds": round(seconds, 2),
               "environment": env.describe(), "results": [r.as_dict() for r in results]}
        text = json.dumps(doc, indent=1, default=str)
        if quiet:
            print(text)
        else:
            from nanoproof.paths import atomic_write_bytes
            atomic_write_bytes(args.json, (text + "\n").encode())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:   # `verify | head`: the reader left; the verdict is in the exit status
        sys.stderr.close()
        sys.exit(1)
