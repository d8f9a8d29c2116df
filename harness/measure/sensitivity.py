"""How small a change can each tier (and the tolerance that fires) still see? run_sensitivity applies
each probe of harness/measure/catalog.py (one constant scaled by 1 + delta) and walks delta down a grid
of half-decades from 1e-1, recording per tier the smallest delta still detected (the one above the
first miss), with the tensor and the tolerance that caught it there. `scripts/mutate.py --sensitivity`
is the command line."""
import tempfile
import time
from pathlib import Path

from nanoproof.measure.catalog import not_applying_line, status_of
from nanoproof.measure.mutate import FAST_TIERS, run_mutant
from nanoproof.spec.contract import DEFAULT_IMPL

DELTAS = tuple(m * 10.0 ** -e for e in range(1, 14) for m in (1.0, 0.3))[:-1]   # 1e-1, 3e-2, ..., 1e-13


def tolerance_key(row):
    """The tolerance-table entry of a first-failure row dict (_row_dict): the entry the tier recorded
    on the row when it chose the tolerance; a row that took none (a crash) by tier and section."""
    return row.get("entry") or f"{row['tier']} ({row['section']})"


def probe_entry(probe, delta):
    factor = repr(1.0 + delta)
    return {"name": f"{probe['name']}_{delta:.0e}", "kind": "semantic", "old": probe["old"],
            "new": probe["new"].replace("{f}", factor), "description": f"{probe['description']} x {factor}"}


def run_sensitivity(probes, tier_names=FAST_TIERS, impl_path=None, golden_dir=None, deltas=DELTAS, log=None):
    """Per probe and tier: the smallest delta of the grid detected before the first miss
    ('detected'), the missed delta below it ('missed'), and where the detection fired."""
    impl_path = Path(impl_path or DEFAULT_IMPL)
    source = impl_path.read_text(encoding="utf-8")
    t0, out = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="nanoproof-sensitivity-") as work:
        for probe in probes:
            res = {"name": probe["name"], "description": probe["description"],
                   "status": status_of(probe, source), "tiers": {}}
            out.append(res)
            if res["status"] != "ok":
                continue
            open_tiers = [t for t in tier_names if t != "exact"]
            per = {t: {"detected": None, "missed": None, "first": None} for t in open_tiers}
            for delta in deltas:
                r = run_mutant(probe_entry(probe, delta), source, open_tiers, work, None, golden_dir)
                for t in list(open_tiers):
                    if r["verdicts"].get(t) == "killed":
                        first = r["first"].get(t)
                        per[t].update(detected=delta, first=first and {**first, "tolerance": tolerance_key(first)})
                    else:
                        per[t]["missed"] = delta
                        open_tiers.remove(t)
                if log:
                    log(f"{probe['name']} delta {delta:.0e}: " + ", ".join(f"{t} {v}" for t, v in r["verdicts"].items()))
                if not open_tiers:
                    break
            res["tiers"] = per
    return {"impl": str(impl_path), "tiers": [t for t in tier_names if t != "exact"], "deltas": list(deltas),
            "probes": out, "seconds": round(time.perf_counter() - t0, 2)}


def format_sensitivity(doc):
    """Per probe and tier: 'detects >= d (misses d'), caught by TOLERANCE at TENSOR'; then per tolerance
    the smallest relative change it caught first."""
    lines = [f"{'constant':15} {'tier':9} {'smallest detected':>17} {'missed':>8}  caught by (tolerance: first tensor)"]
    lines_after = [not_applying_line(doc["probes"], doc.get("impl", "the implementation")).replace(
        "catalog entries", "probes")]
    best = {}
    for p in doc["probes"]:
        if p["status"] != "ok":   # information: the probe's text is not (once) in this file
            continue
        for t, v in p["tiers"].items():
            det = "none" if v["detected"] is None else f"{v['detected']:.0e}"
            miss = "-" if v["missed"] is None else f"{v['missed']:.0e}"
            f = v["first"]
            where = f"{f['tolerance']}: {f['case']} {f['name']}" + ("" if f["step"] is None else f" @ {f['step']}") if f else "-"
            lines.append(f"{p['name']:15} {t:9} {det:>17} {miss:>8}  {where}")
            if f and (f["tolerance"] not in best or v["detected"] < best[f["tolerance"]][0]):
                best[f["tolerance"]] = (v["detected"], p["name"])
    lines.append("")
    lines.append("per tolerance, the smallest relative change of a constant it caught (first to fire):")
    for k, (d, name) in sorted(best.items(), key=lambda kv: kv[1][0]):
        lines.append(f"  {k:30} {d:.0e}  ({name})")
    lines.append(f"grid: 1e-1, 3e-2, ..., 1e-13 (stops at each tier's first miss); total runtime {doc['seconds']:.1f} s")
    return lines + lines_after
