"""The golden tiers as tests: cases x backends x tiers, over the implementation under test
(NANOPROOF_IMPL or impl/gpt2.py). A failure prints the tier's divergence table."""
import pytest

from harness import report, score, tiers, tolerances
from harness.cases import CASES, SCORE_CASES, TRAJECTORY_CASES
from harness.regen import backend_module

BACKENDS = ("numpy-float32", "cupy-float32", "cupy-float64")


@pytest.fixture(scope="module")
def tol():
    return tolerances.load()


def _explain(res):
    return "\n" + "\n".join(report.table(res, full=False)) + "\n" + (report.describe_failure(res) or "")


@pytest.mark.parametrize("case", TRAJECTORY_CASES)
def test_semantic(impl, case, tol):
    c = CASES[case]
    res, _ = tiers.semantic(impl, c, tiers.load_case_golden(c), tol)
    assert not res.failed, _explain(res)


@pytest.mark.parametrize("backend", [pytest.param(b, marks=[pytest.mark.gpu] if b.startswith("cupy") else [])
                                     for b in BACKENDS])
@pytest.mark.parametrize("case", TRAJECTORY_CASES)
def test_backend(impl, case, backend, tol):
    xp, why = backend_module(backend)
    if xp is None:
        pytest.skip(f"{backend}: {why}")
    c = CASES[case]
    res, _ = tiers.backend(impl, c, tiers.load_case_golden(c), backend, tol)
    assert not res.skipped, res.skipped
    assert not res.failed, _explain(res)


@pytest.mark.parametrize("case", SCORE_CASES)
def test_score_gate(impl, case, tol, tinyshakespeare):
    """The val-loss gate (what scripts/gate_val_loss.py runs): a short float32 run of the impl against
    the reference's seed band, two-sided."""
    res = score.score_tier(impl, CASES[case], tol)
    if res.skipped:
        pytest.skip(res.skipped)
    assert not res.failed, _explain(res)


@pytest.mark.parametrize("case", TRAJECTORY_CASES)
def test_golden_matches_reference(case, ref):
    """The shipped golden float64 group is what reference/ computes here, to rounding (the golden
    files are regenerated only by scripts/regen_golden.py; this catches a stale file)."""
    c = CASES[case]
    golden = tiers.load_case_golden(c)
    res, _ = tiers.semantic(ref, c, golden, tolerances.load())
    assert not res.failed, _explain(res)
