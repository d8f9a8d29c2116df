#!/usr/bin/env python
"""Re-measure every tolerance of golden/tolerances.json and print its headroom (value / measured).

    python scripts/calibrate.py                 # all tiers (the score tier runs ~8 short float32 runs)
    python scripts/calibrate.py --only semantic
    python scripts/calibrate.py --write         # store the new measurements in the table ("measured")

What is measured (rounding-only changes: each must stay within its tolerance):
  semantic  the largest error, per entry, of impl/gpt2.py, of reference/ itself re-run here, and of
            the rounding-only rewrites of impl/gpt2.py in harness/mutate.py's catalog (reassociated
            GELU, split qkv matmul, scale folded into q, 1/sqrt for rstd, fused AdamW, rewritten
            cosine schedule, per-head attention loop, ...), each against the float64 golden of every
            trajectory case and of the generate case;
  backend   k: the largest ratio err(impl float32) / err(reference float32) over every tensor;
            floor: the largest impl float32 error where the reference's own is below the floor;
  score     verify's short score run (float32, the score case's verify seed, short_steps updates:
            harness/score.py) of impl/gpt2.py, of reference/ re-run here and of each rounding-only
            rewrite above. band_sigmas: the largest distance to the ensemble mean in sigmas;
            same_seed: the largest |val loss - the reference's recorded val loss for that seed|
            (golden/shakespeare-char.h5), i.e. the float32 drift of rounding-only rewrites over
            the run, which score.same_seed must cover. Prints the ensemble's sigma at that step and
            every run's val loss; ~8 short runs (10-30 s each on this 2-core machine).
The values are never changed by this script: a tolerance is a decision (golden/README.md). The
rule for score.same_seed (its "why" in tolerances.json): 10x the measured same-seed drift, rounded
up to one significant digit, and at most sigma/1000 of the ensemble at that step, so that a
semantic change of the training run still fails it (the script prints both ratios).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import env  # noqa: E402

env.pin()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from harness import mutate, score, tiers, tolerances  # noqa: E402
from harness.cases import CASES, GENERATE_CASES, SCORE_CASES, TRAJECTORY_CASES, CaseDataError  # noqa: E402
from harness.contract import DEFAULT_IMPL, load_impl, load_reference  # noqa: E402
from harness.regen import ORACLE  # noqa: E402
from harness.data import atomic_write_bytes  # noqa: E402

def semantic_measure(modules, tol):
    worst = {}
    for label, module in modules:
        for name in TRAJECTORY_CASES + GENERATE_CASES:
            case = CASES[name]
            golden = tiers.load_case_golden(case)
            res, _ = (tiers.generate(module, case, golden, ORACLE, tol) if name in GENERATE_CASES
                      else tiers.semantic(module, case, golden, tol))
            for r in res.rows:
                if r.err is None or r.verdict == "skip":
                    continue
                key = tolerances.row_entry(r.tier, r.section, r.name)
                if key and (key not in worst or _worse(r.err, worst[key][0])):
                    worst[key] = (r.err, f"{label}, {name}: {r.name}" + ("" if r.step is None else f" @ step {r.step}"))
    return worst


def backend_measure(module, tol):
    ratio, floor_err = (0.0, ""), (0.0, "")
    fl = tol["backend.floor"]["value"]
    for name in TRAJECTORY_CASES:
        case = CASES[name]
        golden = tiers.load_case_golden(case)
        res, results = tiers.backend(module, case, golden, "numpy-float32", tol)
        for r in res.rows:
            if r.err is None or r.tol is None:
                continue
            k = tol["backend.k"]["value"]
            e_ref = (r.tol - fl) / k
            if e_ref > fl and r.err / e_ref > ratio[0]:  # the regime k governs
                ratio = (r.err / e_ref, f"{name}: {r.name} @ step {r.step}")
            need = r.err - k * e_ref  # the floor this row needs with the table's k
            if need > floor_err[0]:
                floor_err = (need, f"{name}: {r.name} @ step {r.step}")
    return {"backend.k": ratio, "backend.floor": floor_err}


def rewrite_modules(impl_path):
    """[(label, module)]: impl, reference/, and each rounding-only rewrite of impl (the "equivalent"
    entries of harness/mutate.py's catalog, the one list of them); a stale entry is reported."""
    modules = [("impl", load_impl(impl_path)), ("reference", load_reference())]
    src = Path(impl_path).read_text()
    tmp = Path(tempfile.mkdtemp(prefix="nanoproof-calibrate-"))
    for entry in (m for m in mutate.CATALOG if m["kind"] == "equivalent"):
        if mutate.status_of(entry, src) != "ok":
            print(f"rewrite '{entry['name']}': {mutate.status_of(entry, src)} in {impl_path}, skipped")
            continue
        p = tmp / f"rewrite_{entry['name']}.py"
        p.write_text(mutate.apply(entry, src))
        modules.append((f"rewrite '{entry['name']}'", load_impl(p)))
    return modules


def _worse(x, worst):
    """x is the new worst: larger, or NaN (a NaN, once worst, stays worst)."""
    return not math.isnan(worst) and (math.isnan(x) or x > worst)


def score_measure(modules, tol):
    """verify's score run (float32, verify_seed, short_steps) of every module: the largest distance
    to the ensemble mean (sigmas) and the largest |val - reference's recorded val, same seed|."""
    case = CASES[SCORE_CASES[0]]
    try:
        golden = score.load(case)
        train, val = score.data_for(case, golden)
    except CaseDataError as exc:
        print(f"score: skipped ({exc})")
        return {}
    from harness.record import score_run
    import numpy as np
    seeds, values = score.ensemble(golden, case.short_steps)
    mean, sigma, _ = score.band(values, tol)
    ref_seed = float(values[list(seeds).index(case.verify_seed)])
    run = f"seed {case.verify_seed}, {case.short_steps} steps, float32"
    print(f"score: ensemble at step {case.short_steps}: mean {mean:.5f}, sigma {sigma:.5f} over "
          f"{len(values)} seeds; reference's recorded seed {case.verify_seed}: {ref_seed:.6f}")
    band, drift = (-1.0, ""), (-1.0, "")
    for label, module in modules:
        t0 = time.perf_counter()
        out = score_run(module, case, train, val, case.verify_seed, case.short_steps, np, "float32",
                        [case.short_steps])[case.short_steps]
        d, z = abs(out - ref_seed), abs(out - mean) / sigma
        print(f"score: {label:34s} val {out:.6f}  |val - ref seed| {d:.3g}  "
              f"|val - mean| {z:.3f} sigma  ({time.perf_counter() - t0:.0f} s)", flush=True)
        if _worse(d, drift[0]):
            drift = (d, f"{label}, {run}")
        if _worse(z, band[0]):
            band = (z, f"{label}, {run}")
    print(f"score: largest same-seed drift {drift[0]:.3g} ({drift[1]}) = sigma / "
          f"{sigma / drift[0] if drift[0] else math.inf:.3g}; score.same_seed {tol['score.same_seed']['value']:.3g} "
          f"= sigma / {sigma / tol['score.same_seed']['value']:.3g}")
    return {"score.band_sigmas": band,
            "score.band_floor": (0.0, "no floor needed"),
            "score.same_seed": drift}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL))
    ap.add_argument("--only", choices=["semantic", "backend", "score"], action="append")
    ap.add_argument("--write", action="store_true", help="store the measurements in golden/tolerances.json")
    args = ap.parse_args(argv)
    only = set(args.only or ["semantic", "backend", "score"])
    try:
        tol = tolerances.load()
    except tolerances.ToleranceError as exc:
        print(f"calibrate.py: error: {exc}", file=sys.stderr)
        return 2
    modules = rewrite_modules(args.impl)  # [0] is impl itself
    measured = {}
    if "semantic" in only:
        measured.update(semantic_measure(modules, tol))
    if "backend" in only:
        measured.update(backend_measure(modules[0][1], tol))
    if "score" in only:
        measured.update(score_measure(modules, tol))
    print(f"\n{'entry':32s} {'metric':7s} {'value':>10s} {'measured':>10s} {'headroom':>9s}  worst case")
    for key, e in tol.items():
        if key not in measured:
            continue
        m, where = measured[key]
        head = (e["value"] / m) if m else math.inf
        print(f"{key:32s} {e['metric']:7s} {e['value']:10.3g} {m:10.3g} {head:9.3g}  {where}")
        if m > e["value"]:
            print(f"  !! {key}: measured {m:.3g} exceeds the tolerance {e['value']:.3g}: find out why")
    if args.write:
        table = json.loads(tolerances.PATH.read_text())
        for key, (m, where) in measured.items():
            if key in table["entries"]:
                table["entries"][key]["measured"] = float(f"{m:.3g}")
                table["entries"][key]["measured_on"] = where
        atomic_write_bytes(tolerances.PATH, (json.dumps(table, indent=1) + "\n").encode())
        print(f"measurements written to {tolerances.PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
