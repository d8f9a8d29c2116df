"""Run every tier this machine supports (scripts/verify.py is the command line; tests drive the same
functions). The implementation runs in worker processes (harness/runner/worker.py): this process only
reads the golden files, runs reference/ where a bound needs it, and computes the verdicts."""
from pathlib import Path

from nanoproof.judge import tiers
from nanoproof.spec import tolerances
from nanoproof.spec.cases import CASES
from nanoproof.judge.report import TierResult, fail_row
from nanoproof.golden.files import GoldenError
from nanoproof.judge.tiers import BACKENDS, ORACLE

TIERS = ("exact", "semantic", "backend", "score", "fresh")


def impl_size(path):
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    return {"path": str(path), "lines": len(lines), "non_blank_lines": sum(1 for ln in lines if ln.strip()),
            "characters": len(text)}


def preflight(impl):
    """Import the file in a worker and check the contract there. Returns None, or a TierResult with
    the worker's failure (it exited, printed, hung at import); raises ContractError for a file that
    lacks the contract or raises at import."""
    res = TierResult("semantic", "import")
    job = tiers.run_job(tiers.subject(impl), "check", {}, {}, res, "semantic")
    return None if job is not None else res


def run(impl, cases=None, tier_names=TIERS, golden_dir=None, snapshot_path=None, fresh_seed=None,
        tol=None, fail_fast=False):
    """Returns a list of TierResult in report order (per case: exact, semantic, backend..., score;
    then the fresh tier). impl: a file path (each job in a worker process) or a runner/module.
    fail_fast: stop after the first case whose results hold a failure."""
    tol = tol or tolerances.load()
    runner = tiers.subject(impl)
    cases = list(cases or CASES)
    out = []
    for name in cases:
        case = CASES[name]
        if case.kind == "score":
            if "score" in tier_names:
                from nanoproof.judge import score
                out.append(score.score_tier(runner, case, tol, golden_dir))
            if fail_fast and any(r.failed for r in out):
                return out
            continue
        try:
            golden = tiers.load_case_golden(case, golden_dir)
        except GoldenError as exc:
            if exc_is_fatal(exc):
                raise
            for t in tier_names:
                if t in ("semantic", "backend"):
                    r = TierResult(t, name)
                    r.rows = [fail_row(t, "golden", "golden file", str(exc))]
                    out.append(r)
            if fail_fast and out:
                return out
            continue
        if case.kind == "generate":   # semantic and backend tiers; no exact-tier snapshot
            for b in (ORACLE,) + BACKENDS:
                if ("semantic" if b == ORACLE else "backend") in tier_names:
                    out.append(tiers.generate(runner, case, golden, b, tol)[0])
            if fail_fast and any(r.failed for r in out):
                return out
            continue
        sem_results, backend_results, ordered = {}, {}, []
        if "semantic" in tier_names or "exact" in tier_names:
            res, sem_results = tiers.semantic(runner, case, golden, tol)
            if "semantic" in tier_names:
                ordered.append(res)
        if "backend" in tier_names or "exact" in tier_names:
            for b in BACKENDS:
                res, backend_results[b] = tiers.backend(runner, case, golden, b, tol)
                if "backend" in tier_names:
                    ordered.append(res)
        if "exact" in tier_names:
            from nanoproof.golden import snapshot
            ordered.insert(0, snapshot.exact_tier(case, sem_results, backend_results, snapshot_path))
        out += ordered
        if fail_fast and any(r.failed for r in out):
            return out
    if "fresh" in tier_names:
        from nanoproof.judge import fresh
        out += fresh.fresh_tier(runner, fresh_seed, tol)
    return out


def exc_is_fatal(exc):
    """A golden file that is corrupt or missing stops verify (exit 2: restore it), rather than being
    one more failing row."""
    return getattr(exc, "kind", None) in ("corrupt", "missing", "incomplete", "format")
