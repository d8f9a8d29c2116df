"""Mutation testing: how much of a change in the math does verify catch?

`run_catalog` applies each entry of the catalog (harness/measure/catalog.py, kept as data) to a
temporary copy of the file, runs verify's tiers on it in-process (nanoproof.judge.verify.run) and
records per tier whether it was caught and where; the exact tier compares against a snapshot of the
unmodified file taken in a temporary folder first. scripts/mutate.py is the command line.

The catalog is matched against whatever file it is given (run_catalog's impl_path, default
impl/gpt2.py). Entries that no longer apply there ("stale" or "ambiguous", see catalog.py) get no
verdicts, are left out of the kill counts and false alarms, and the report says "N of M catalog
entries no longer apply to FILE" (never skipped silently, never a failure).
"""
import hashlib
import json
import tempfile
import time
import warnings
from pathlib import Path

from nanoproof.measure.catalog import apply, not_applying_line, status_of
from nanoproof.spec.contract import DEFAULT_IMPL, ContractError, load_impl

FAST_TIERS = ("semantic", "backend")
ALL_TIERS = ("exact", "semantic", "backend", "score")

# ----------------------------------------------------------------------------- running

def take_snapshot(module, path, impl_path):
    """The exact tier's baseline of the unmodified impl, written to `path` (a temporary file)."""
    from nanoproof.golden import snapshot
    from nanoproof.judge import tiers
    from nanoproof.spec import tolerances
    from nanoproof.spec.cases import CASES, TRAJECTORY_CASES
    tol = tolerances.load()
    per_case = {}
    for name in TRAJECTORY_CASES:
        case = CASES[name]
        golden = tiers.load_case_golden(case)
        _, sem = tiers.semantic(module, case, golden, tol)
        back = {b: tiers.backend(module, case, golden, b, tol)[1] for b in tiers.BACKENDS}
        per_case[name] = snapshot.hashes(sem, back)
    return snapshot.write(path, impl_path, per_case)


def _row_dict(result, row):
    return {"tier": result.tier, "case": result.case, "section": row.section, "name": row.name,
            "key": row.key, "entry": row.entry,
            "step": row.step, "backend": row.backend,
            "err": row.err if row.err is None or isinstance(row.err, (int, str)) else float(row.err),
            "tol": row.tol, "note": row.note[:200] if row.note else ""}


def tier_verdicts(results, tier_names):
    """Per tier: killed / survived / skip (every case skipped) / n/a (not run); exact: bits changed,
    bit-identical or n/a. Plus the first failing row per tier, in verify's check order."""
    verdicts, first = {}, {}
    for t in tier_names:
        rs = [r for r in results if r.tier == t]
        if t == "exact":
            if not rs or all(r.skipped for r in rs):
                verdicts[t] = "n/a"
            elif any(r.info.startswith("bits changed") for r in rs):
                verdicts[t] = "bits changed"
                r = next(r for r in rs if r.info.startswith("bits changed"))
                first[t] = {"tier": t, "case": r.case, "section": "exact", "name": r.rows[0].name,
                            "step": None, "backend": "", "err": None, "tol": None, "note": "bits changed"}
            else:
                verdicts[t] = "bit-identical"
            continue
        ran = [r for r in rs if not r.skipped]
        if not rs:
            verdicts[t] = "n/a"
        elif not ran:
            verdicts[t] = "skip"
        else:
            failed = [r for r in ran if r.failed]
            verdicts[t] = "killed" if failed else "survived"
            if failed:
                first[t] = _row_dict(failed[0], failed[0].first_failure())
    return verdicts, first


def expect_matches(expect, row):
    """Whether a first-divergence row is the expected one: `name` or `name@step`."""
    if not expect or row is None:
        return None
    name, _, step = expect.partition("@")
    return row["name"] == name and (not step or str(row["step"]) == step)


def run_mutant(entry, source, tier_names, workdir, snapshot_path=None, golden_dir=None):
    """Apply one catalog entry to a copy of `source` in workdir and run the tiers on it."""
    from nanoproof.judge import verify
    t0 = time.perf_counter()
    out = {"name": entry["name"], "kind": entry["kind"], "area": entry.get("area", ""),
           "description": entry["description"], "expect": entry.get("expect"),
           "status": status_of(entry, source), "verdicts": {}, "first": {}, "first_divergence": None,
           "expect_matched": None, "error": ""}
    if out["status"] != "ok":   # information about the file, not a verdict: no tier ran
        return out
    digest = hashlib.sha256(entry["name"].encode()).hexdigest()[:8]
    path = Path(workdir) / f"gpt2_{entry['name']}_{digest}.py"
    path.write_text(apply(entry, source), encoding="utf-8")
    try:
        with warnings.catch_warnings():  # a mutant's NaNs and overflows are findings, not noise
            warnings.simplefilter("ignore", RuntimeWarning)
            module = load_impl(path)
            results = verify.run(module, None, tuple(tier_names), golden_dir, snapshot_path)
    except ContractError as exc:   # the mutant does not even import: every gating tier catches it
        out["error"] = str(exc)[:300]
        out["verdicts"] = {t: ("n/a" if t == "exact" else "killed") for t in tier_names}
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out
    except Exception as exc:  # noqa: BLE001 - a crash of the harness itself on a mutant is a finding
        out["error"] = f"harness crashed: {type(exc).__name__}: {exc}"[:300]
        out["verdicts"] = {t: "error" for t in tier_names}
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out
    out["verdicts"], out["first"] = tier_verdicts(results, tier_names)
    for t in ("semantic", "backend", "score"):
        if t in out["first"]:
            out["first_divergence"] = out["first"][t]
            break
    if entry["kind"] == "semantic" and entry.get("expect"):
        out["expect_matched"] = expect_matches(entry["expect"], out["first"].get("semantic"))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def run_catalog(entries, tier_names=FAST_TIERS, impl_path=None, golden_dir=None, log=None):
    """Run the entries; returns {"results": [...], "summary": {...}, "seconds": ...}."""
    impl_path = Path(impl_path or DEFAULT_IMPL)
    source = impl_path.read_text(encoding="utf-8")
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="nanoproof-mutate-") as work:
        snap = None
        if "exact" in tier_names:
            from nanoproof import env
            if env.PINNED_IN_TIME:
                snap = Path(work) / "snapshot.json"
                take_snapshot(load_impl(impl_path), snap, impl_path)
            else:  # bits are only comparable in the pinned environment
                snap = Path(work) / "no-snapshot.json"
        for i, entry in enumerate(entries):
            r = run_mutant(entry, source, tier_names, work, snap, golden_dir)
            results.append(r)
            if log:
                log(f"[{i + 1}/{len(entries)}] {r['name']}: "
                    + ", ".join(f"{t} {v}" for t, v in r["verdicts"].items()))
    return {"impl": str(impl_path), "tiers": list(tier_names), "results": results,
            "summary": summarize(results, tier_names), "seconds": round(time.perf_counter() - t0, 2)}


# ----------------------------------------------------------------------------- report

def summarize(results, tier_names):
    sem = [r for r in results if r["kind"] == "semantic" and r["status"] == "ok"]
    eq = [r for r in results if r["kind"] == "equivalent" and r["status"] == "ok"]
    s = {"semantic_mutants": len(sem), "equivalent_rewrites": len(eq),
         "entries": len(results), "applied": sum(r["status"] == "ok" for r in results),
         "stale": [r["name"] for r in results if r["status"] != "ok"],
         "kill_rate": {}, "survivors": {}, "false_alarms": {}, "bits_changed": {},
         "expect_mismatched": [], "expect_unknown": []}
    for t in tier_names:
        if t == "exact":
            s["bits_changed"] = {"semantic": sum(r["verdicts"].get(t) == "bits changed" for r in sem),
                                 "equivalent": sum(r["verdicts"].get(t) == "bits changed" for r in eq),
                                 "n/a": sum(r["verdicts"].get(t) == "n/a" for r in sem + eq)}
            continue
        ran = [r for r in sem if r["verdicts"].get(t) in ("killed", "survived", "error")]
        killed = [r for r in ran if r["verdicts"][t] == "killed"]
        s["kill_rate"][t] = {"killed": len(killed), "of": len(ran),
                             "rate": round(len(killed) / len(ran), 4) if ran else None}
        s["survivors"][t] = [r["name"] for r in ran if r["verdicts"][t] != "killed"]
        s["false_alarms"][t] = [r["name"] for r in eq if r["verdicts"].get(t) in ("killed", "error")]
    for r in sem:
        if r["expect_matched"] is False:
            got = (r["first"].get("semantic") or {})
            s["expect_mismatched"].append({"name": r["name"], "expect": r["expect"],
                                           "got": f"{got.get('name')}@{got.get('step')}" if got else None})
        elif r["expect_matched"] is None:
            s["expect_unknown"].append(r["name"])
    return s


def _first_text(r):
    f = r.get("first_divergence")
    if not f:
        return r["error"] or "-"
    step = "" if f["step"] is None else f" step {f['step']}"
    backend = f" [{f['backend']}]" if f.get("backend") else ""
    return f"{f['tier']}{backend} {f['case']}: {f['section']}{step}: {f['name']}"


def format_report(doc):
    """The summary table and totals as text lines."""
    tier_names = doc["tiers"]
    results = doc["results"]
    head = ["mutant", "kind"] + list(tier_names) + ["first divergence", "expect"]
    rows = []
    for r in (r for r in results if r["status"] == "ok"):
        exp = {True: "ok", False: f"MISMATCH ({r['expect']})", None: "-"}[r["expect_matched"]]
        if r["kind"] == "semantic" and r["expect_matched"] is None and r["status"] == "ok":
            exp = "(none given)" if not r["expect"] else "-"
        if r["status"] != "ok":
            exp = r["status"].upper()
        rows.append([r["name"], r["kind"][:5]] + [r["verdicts"].get(t, "-") for t in tier_names]
                    + [_first_text(r), exp])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    widths = [min(w, 70) for w in widths]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    s = doc["summary"]
    lines.append("")
    lines.append(f"semantic mutants: {s['semantic_mutants']}, equivalent rewrites: {s['equivalent_rewrites']}")
    lines.append(not_applying_line(results, doc.get("impl", "the implementation")))
    for t, k in s["kill_rate"].items():
        rate = "n/a" if k["rate"] is None else f"{100 * k['rate']:.1f}%"
        surv = s["survivors"][t]
        lines.append(f"kill rate, {t} tier: {k['killed']}/{k['of']} = {rate}"
                     + (f"; survivors: {', '.join(surv)}" if surv else ""))
    for t, fa in s["false_alarms"].items():
        lines.append(f"false alarms on equivalent rewrites, {t} tier: {len(fa)}/{s['equivalent_rewrites']}"
                     + (f" ({', '.join(fa)})" if fa else ""))
    if s["bits_changed"]:
        b = s["bits_changed"]
        lines.append(f"exact tier: bits changed in {b['semantic']} semantic and {b['equivalent']} equivalent "
                     f"mutants (n/a: {b['n/a']})")
    mm = s["expect_mismatched"]
    lines.append(f"first tensor vs expect: {sum(r['expect_matched'] is True for r in results)} matched, "
                 f"{len(mm)} mismatched, {len(s['expect_unknown'])} without expectation")
    for m in mm:
        lines.append(f"  mismatch: {m['name']}: expected {m['expect']}, got {m['got']}")
    lines.append(f"total runtime: {doc['seconds']:.1f} s")
    return lines


def write_json(doc, path):
    from nanoproof.paths import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(doc, indent=1, default=str) + "\n").encode())
