#!/usr/bin/env python
"""Measure the harness's power: apply each mutant of the catalog (harness/mutate.py) to a temporary
copy of impl/gpt2.py, run verify's tiers on it, and report which tier caught it, where.

    python scripts/mutate.py --report                 # all mutants, semantic + backend tiers, table
    python scripts/mutate.py --report --tier exact --tier semantic --tier backend --tier score
    python scripts/mutate.py --only ln_eps --only eq_gelu_split --report
    python scripts/mutate.py --subset ci --json out/mutants.json
    python scripts/mutate.py --list                   # the catalog, with stale entries marked

Semantic mutants change the math: the semantic tier should kill them, naming `expect` as the first
tensor. Equivalent rewrites change rounding only: every gating tier should pass them (a failure is a
false alarm). Entries whose `old` text no longer occurs exactly once in the impl are reported as stale.
Exit status 0 when every semantic mutant was killed by the semantic tier and no equivalent rewrite was
flagged by a gating tier, 1 otherwise, 2 on a usage error.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import env  # noqa: E402

env.pin()

import argparse  # noqa: E402
import json  # noqa: E402

from harness import mutate  # noqa: E402
from harness.contract import DEFAULT_IMPL  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="implementation the catalog edits (default impl/gpt2.py)")
    ap.add_argument("--only", action="append", metavar="NAME", help="only this mutant (repeatable)")
    ap.add_argument("--subset", choices=sorted(mutate.SUBSETS), help="a named subset of the catalog")
    ap.add_argument("--tier", action="append", choices=list(mutate.ALL_TIERS),
                    help="tier to run (repeatable; default semantic and backend; score takes ~10 s a mutant)")
    ap.add_argument("--score", action="store_true", help="add the score tier to the default tiers")
    ap.add_argument("--report", action="store_true", help="print the summary table")
    ap.add_argument("--json", metavar="PATH", help="write the full results as JSON ('-': stdout)")
    ap.add_argument("--list", action="store_true", help="list the catalog and exit")
    ap.add_argument("--quiet", action="store_true", help="no per-mutant progress lines")
    args = ap.parse_args(argv)
    source = Path(args.impl).read_text(encoding="utf-8")
    if args.list:
        for m in mutate.CATALOG:
            print(f"{m['name']:32} {m['kind']:10} {mutate.status_of(m, source):9} {m['description']}")
        return 0
    try:
        entries = mutate.select(args.only, args.subset)
    except KeyError as exc:
        print(f"mutate: {exc.args[0]}", file=sys.stderr)
        return 2
    tiers = tuple(args.tier) if args.tier else mutate.FAST_TIERS + (("score",) if args.score else ())
    tiers = tuple(t for t in mutate.ALL_TIERS if t in tiers)
    log = None if (args.quiet or args.json == "-") else (lambda s: print(s, file=sys.stderr, flush=True))
    doc = mutate.run_catalog(entries, tiers, args.impl, log=log)
    if args.report or not args.json:
        print("\n".join(mutate.format_report(doc)))
    if args.json == "-":
        print(json.dumps(doc, indent=1, default=str))
    elif args.json:
        mutate.write_json(doc, args.json)
    s = doc["summary"]
    bad = s["stale"] or s["survivors"].get("semantic") or any(s["false_alarms"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
