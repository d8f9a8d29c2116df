#!/usr/bin/env python
"""Regenerate golden files from reference/ only (never from impl/).

    python scripts/regen_golden.py --case tiny --force
    python scripts/regen_golden.py --case all --force          # tiny, gpt2-vocab, shakespeare-char, generate

An existing file is never overwritten without --force; with --force the command prints what changed
against the previous file, tensor by tensor (identical / changed with max|Δ| and relative error /
new / removed). Files are written atomically (temp file + rename); temp files an interrupted run
left beside the target are removed on the next run (it says so).

Backends recorded: numpy-float64 (the oracle) and numpy-float32 always; cupy-float32 and
cupy-float64 when cupy and a CUDA GPU are usable. On a machine without a GPU the previous file's
cupy recordings are kept when neither the case nor the generating source changed.

Refused before anything is computed, with one line each and exit status 2: an unknown case or
backend, an existing file without --force, a --backends list without a group every file of the case
holds (numpy-float64, numpy-float32), and dropping a group the existing file recorded (a backend not
requested, or a GPU recording made stale by a changed source) unless --drop-group GROUP names it.
Exit status: 0 written; 2 refused, or any other golden-file error; 1 a case's data is unavailable.

The trajectory cases (tiny, gpt2-vocab) and the generate case (reference/sampling.py's greedy and sampled
runs; refuses to write a case where float32 would pick other tokens than float64) take seconds. shakespeare-char trains the baby GPT in
float32 for every seed of its ensemble (8 seeds x 300 steps) and takes several minutes on 2 cores:
it is a slow, explicit operation, never part of verify.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402  (stdlib only: pins the BLAS threads before numpy loads)

env.pin()
env.tiktoken_cache()

import argparse  # noqa: E402
import time  # noqa: E402

from nanoproof.spec.cases import CASES, CaseDataError  # noqa: E402
from nanoproof.golden.files import GoldenError  # noqa: E402
from nanoproof.golden.regen import ALL_BACKENDS, check_backends, check_regen, regenerate  # noqa: E402


SHOWN = 20   # changed datasets printed per case without --full


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", required=True,
                    help=f"case to regenerate, repeatable: {', '.join(CASES)}, or 'all'")
    ap.add_argument("--force", action="store_true", help="overwrite an existing golden file")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS),
                    help="comma-separated backends to record (unavailable ones are skipped; "
                         "default: %(default)s)")
    ap.add_argument("--drop-group", action="append", default=[], metavar="GROUP",
                    help="let the new file lack GROUP (e.g. cupy-float32) although the existing "
                         "file recorded it; repeatable")
    ap.add_argument("--golden-dir", default=None, help="folder of the golden files (default golden/)")
    ap.add_argument("--full", action="store_true",
                    help="print every dataset, identical ones too (default: the changed, new and "
                         "removed ones, at most 20, then a count)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only each case's summary line")
    args = ap.parse_args(argv)
    names = list(CASES) if "all" in args.case else args.case
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    backends = [b.strip() for b in args.backends.split(",")]
    try:
        check_backends(backends)
        check_backends(args.drop_group, "group(s) to drop")
    except GoldenError as exc:
        print(f"regen_golden.py: error: {exc}", file=sys.stderr)
        return 2
    refusals = []
    for name in names:   # every refusal before any case is regenerated
        try:
            check_regen(CASES[name], backends, args.force, args.golden_dir, args.drop_group,
                        log=lambda m: None)
        except GoldenError as exc:
            refusals.append(f"{name}: error: {exc}")
    if refusals:
        print("\n".join(refusals), file=sys.stderr)
        return 2
    status = 0
    for name in names:
        if not args.quiet:
            print(f"{name}: regenerating from reference/")
        t0 = time.perf_counter()
        try:
            lines = regenerate(CASES[name], backends, args.force, args.golden_dir,
                               drop_groups=args.drop_group, log=(lambda m: None) if args.quiet else print)
        except (GoldenError, CaseDataError) as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            status = max(status, 2 if isinstance(exc, GoldenError) else 1)
            continue
        changed = [ln for ln in lines if not ln.lstrip().startswith("identical")]
        shown = [] if args.quiet else lines if args.full else changed[:SHOWN]
        for ln in shown:
            print(ln)
        if not args.quiet and not args.full and len(changed) > SHOWN:
            print(f"  ... {len(changed) - SHOWN} more new/changed/removed (--full prints every dataset)")
        print(f"{name}: written in {time.perf_counter() - t0:.1f} s; {len(lines) - len(changed)} "
              f"datasets identical, {len(changed)} new/changed/removed")
    return status


if __name__ == "__main__":
    sys.exit(main())
