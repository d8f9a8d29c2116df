"""Run every tier this machine supports against the shipped golden files (scripts/verify.py is the
command line; tests/test_golden.py drives the same functions)."""
from pathlib import Path

from harness import tiers, tolerances
from harness.cases import CASES
from harness.compare import TierResult
from harness.golden import GoldenError
from harness.regen import ALL_BACKENDS, ORACLE

TIERS = ("exact", "semantic", "backend", "score")
BACKEND_BACKENDS = tuple(b for b in ALL_BACKENDS if b != ORACLE)


def impl_size(path):
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    return {"path": str(path), "lines": len(lines), "non_blank_lines": sum(1 for ln in lines if ln.strip()),
            "characters": len(text)}


def run(module, cases=None, tier_names=TIERS, golden_dir=None, snapshot_path=None, log=None):
    """Returns a list of TierResult in report order (per case: exact, semantic, backend..., score)."""
    tol = tolerances.load()
    cases = list(cases or CASES)
    out = []
    for name in cases:
        case = CASES[name]
        if case.kind == "score":
            if "score" in tier_names:
                from harness import score
                out.append(score.score_tier(module, case, tol, golden_dir))
            continue
        try:
            golden = tiers.load_case_golden(case, golden_dir)
        except GoldenError as exc:
            for t in tier_names:
                if t in ("semantic", "backend"):
                    r = TierResult(t, name)
                    from harness.compare import fail_row
                    r.rows = [fail_row(t, "golden", "golden file", str(exc))]
                    out.append(r)
            continue
        if case.kind == "generate":   # semantic and backend tiers; no exact-tier snapshot
            for b in (ORACLE,) + BACKEND_BACKENDS:
                if ("semantic" if b == ORACLE else "backend") in tier_names:
                    res = tiers.generate(module, case, golden, b, tol)[0]
                    res.info = "" if b == ORACLE else b
                    out.append(res)
            continue
        sem_results, backend_results, ordered = {}, {}, []
        if "semantic" in tier_names or "exact" in tier_names:
            res, sem_results = tiers.semantic(module, case, golden, tol)
            if "semantic" in tier_names:
                ordered.append(res)
        if "backend" in tier_names or "exact" in tier_names:
            for b in BACKEND_BACKENDS:
                res, backend_results[b] = tiers.backend(module, case, golden, b, tol)
                res.info = b
                if "backend" in tier_names:
                    ordered.append(res)
        if "exact" in tier_names:
            from harness import snapshot
            ordered.insert(0, snapshot.exact_tier(case, sem_results, backend_results, snapshot_path))
        out += ordered
    return out
