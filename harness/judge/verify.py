"""Run every tier this machine supports (scripts/verify.py is the command line; tests drive the same
functions). The implementation runs in worker processes (harness/runner/worker.py): this process only
reads the golden files, runs reference/ where a bound needs it, and computes the verdicts."""
from pathlib import Path

from nanoproof.judge import tiers
from nanoproof.spec import tolerances
from nanoproof.spec.cases import CASES
from nanoproof.judge.report import TierResult, fail_row
from nanoproof.spec.contract import ContractError
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
    the worker's failure (it exited, printed, hung at import) or saying that the file is a different
    function from GPT-2 (a variant with the training subset only: see training_variant); raises
    ContractError for a file that lacks the contract or raises at import."""
    runner = tiers.subject(impl)
    res = TierResult("semantic", "import")
    try:
        job = tiers.run_job(runner, "check", {}, {}, res, "semantic")
    except ContractError:
        other = training_variant(runner)
        if other is None:
            raise
        return other
    return None if job is not None else res


# a file with the training subset of the contract, seen through verify's whole contract: its
# functions, and a generate that says what it is (the trajectory job never calls it)
TRAINING_WRAPPER = """\
import importlib.util as _util
import sys as _sys
_spec = _util.spec_from_file_location("nanoproof_training_variant", {path!r})
_module = _util.module_from_spec(_spec)
_sys.modules[_spec.name] = _module
_spec.loader.exec_module(_module)
init, forward, backward, adamw_step, lr_at, get_batch = (
    _module.init, _module.forward, _module.backward, _module.adamw_step, _module.lr_at, _module.get_batch)


def generate(*args, **kwargs):
    raise NotImplementedError("a training-only file has no generate")
"""


def training_variant(runner):
    """For a file verify cannot load (a ContractError): when it has the training subset of the
    contract (harness/spec/contract.py, TRAINING_CONTRACT: what `nanoproof compare` needs) and its
    params or taps are not GPT-2's, the TierResult saying it is a different function; else None (the
    contract error stands). Its init and forward run in a worker as always, through a wrapper file
    that adds a generate stub (this process still never imports it)."""
    import tempfile
    from nanoproof.runner.worker import Isolated
    if not isinstance(runner, Isolated):
        return None
    case = next(c for c in CASES.values() if c.kind == "trajectory")
    golden = tiers.load_case_golden(case)
    with tempfile.TemporaryDirectory(prefix="nanoproof-variant-") as d:
        wrapper = Path(d) / "training_variant.py"
        wrapper.write_text(TRAINING_WRAPPER.format(path=runner.path))
        probe = Isolated(wrapper, timeout=runner.timeout, label=runner.label)
        res = TierResult("semantic", case.name)
        try:
            job = tiers.run_job(probe, "trajectory", tiers.trajectory_spec(case, tiers.ORACLE, setup=True),
                                tiers.trajectory_inputs(golden), res, "semantic")
        except ContractError:   # it lacks a training function too, or fails at import
            return None
    if job is None:
        return None
    other = tiers.different_function(golden, job.results, case.config["n_layer"])
    return None if other is None else tiers.different_function_result(res, other, runner.label)


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
        if any(r.different for r in ordered):   # not GPT-2: the other cases and tiers would say so again
            return [r for r in out if r.different][:1]
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
