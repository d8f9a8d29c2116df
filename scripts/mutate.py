#!/usr/bin/env python
"""Measure the harness's power: apply each mutant of the catalog (harness/measure/catalog.py) to a temporary
copy of the frozen GPT-2 it is written against (tests/fixtures/gpt2_frozen.py, impl/gpt2.py as it was
shipped; --impl another file), run verify's tiers on it, and report which tier caught it, where.

    python scripts/mutate.py --report                 # all mutants, semantic + backend tiers, table
    python scripts/mutate.py --report --tier exact --tier semantic --tier backend --tier score
    python scripts/mutate.py --only ln_eps --only eq_gelu_split --report
    python scripts/mutate.py --subset ci --json out/mutants.json
    python scripts/mutate.py --list                   # the catalog, with stale entries marked
    python scripts/mutate.py --sensitivity            # smallest relative change of each constant caught
    python scripts/mutate.py --sensitivity --probe ln_eps --tier semantic

Semantic mutants change the math: the semantic tier should kill them, naming `expect` as the first
tensor. Equivalent rewrites change rounding only: every gating tier should pass them (a failure is a
false alarm). The catalog was written against impl/gpt2.py as shipped (frozen in
tests/fixtures/gpt2_frozen.py, the default); against --impl impl/gpt2.py once edited, or OTHER, entries whose `old` text
no longer occurs exactly once there are reported as information ("N of M catalog entries no longer
apply to FILE"), not run, and left out of the kill counts: never a failure.
--sensitivity scales one constant of the file at a time (harness/measure/catalog.py PROBES: LayerNorm eps, GELU
constants, attention scale, init std, warmup and decay lengths, clipping, AdamW betas, eps, weight
decay, learning rate, sampling temperature) by 1 + delta, delta going down 1e-1, 3e-2, 1e-2, ... until
each tier misses it, and reports per tier the smallest delta still detected and which tolerance
fired first; then, per tolerance, the smallest change it caught (about 2 minutes).

Exit status 0 when every semantic mutant that applied was killed by the semantic tier and no equivalent
rewrite that applied was flagged by a gating tier (entries that no longer apply do not count), 1
otherwise, 2 on a usage error.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402

env.pin()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from nanoproof.measure import catalog, mutate, sensitivity  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(catalog.FIXTURE),
                    help="the file the catalog edits (default: tests/fixtures/gpt2_frozen.py, the frozen copy "
                         "of impl/gpt2.py it is written against; on another file, entries that no longer "
                         "apply are listed, not run)")
    ap.add_argument("--only", action="append", metavar="NAME", help="only this mutant (repeatable)")
    ap.add_argument("--subset", choices=sorted(catalog.SUBSETS), help="a named subset of the catalog")
    ap.add_argument("--tier", action="append", choices=list(mutate.ALL_TIERS),
                    help="tier to run (repeatable; default semantic and backend; score takes ~10 s a mutant)")
    ap.add_argument("--score", action="store_true", help="add the score tier to the default tiers")
    ap.add_argument("--report", action="store_true", help="print the summary table")
    ap.add_argument("--json", metavar="PATH", help="write the full results as JSON ('-': stdout)")
    ap.add_argument("--list", action="store_true", help="list the catalog and exit")
    ap.add_argument("--quiet", action="store_true", help="no per-mutant progress lines")
    ap.add_argument("--sensitivity", action="store_true",
                    help="instead of the catalog: the smallest relative change of each constant each tier detects")
    ap.add_argument("--probe", action="append", metavar="NAME",
                    help="with --sensitivity: only this constant (repeatable; names: "
                         + ", ".join(p["name"] for p in catalog.PROBES) + ")")
    args = ap.parse_args(argv)
    source = Path(args.impl).read_text(encoding="utf-8")
    if args.list:
        for m in catalog.CATALOG:
            print(f"{m['name']:32} {m['kind']:10} {catalog.status_of(m, source):9} {m['description']}")
        print(catalog.not_applying_line([{"name": m["name"], "status": catalog.status_of(m, source)}
                                        for m in catalog.CATALOG], args.impl))
        return 0
    tiers = tuple(args.tier) if args.tier else mutate.FAST_TIERS + (("score",) if args.score else ())
    tiers = tuple(t for t in mutate.ALL_TIERS if t in tiers)
    log = None if (args.quiet or args.json == "-") else (lambda s: print(s, file=sys.stderr, flush=True))
    if args.sensitivity:
        known = {p["name"]: p for p in catalog.PROBES}
        unknown = [n for n in args.probe or [] if n not in known]
        if unknown:
            print(f"mutate: unknown probe(s): {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
            return 2
        probes = [known[n] for n in args.probe] if args.probe else catalog.PROBES
        doc = sensitivity.run_sensitivity(probes, tiers, args.impl, log=log)
        print("\n".join(sensitivity.format_sensitivity(doc)))
        if args.json:
            mutate.write_json(doc, args.json)
        return 0   # probes that no longer apply are information (printed above), never a failure
    try:
        entries = catalog.select(args.only, args.subset)
    except KeyError as exc:
        print(f"mutate: {exc.args[0]}", file=sys.stderr)
        return 2
    doc = mutate.run_catalog(entries, tiers, args.impl, log=log)
    doc["blas"] = env.blas_kernel()
    if args.report or not args.json:
        print("\n".join(mutate.format_report(doc)))
        print(f"BLAS: {doc['blas']}" + (f" (OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']})"
                                        if os.environ.get("OPENBLAS_CORETYPE") else ""))
    if args.json == "-":
        print(json.dumps(doc, indent=1, default=str))
    elif args.json:
        mutate.write_json(doc, args.json)
    s = doc["summary"]
    bad = s["survivors"].get("semantic") or any(s["false_alarms"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
