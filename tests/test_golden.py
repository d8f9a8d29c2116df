"""The golden tiers as tests: cases x backends x tiers, over the implementation under test
(NANOPROOF_IMPL or impl/gpt2.py). A failure prints the tier's divergence table."""
import pytest

from nanoproof.measure import catalog, mutate
from nanoproof.judge import report, score, tiers
from nanoproof.spec import tolerances
from nanoproof.spec.cases import CASES, GENERATE_CASES, SCORE_CASES, TRAJECTORY_CASES
from nanoproof.spec.contract import load_impl
from nanoproof.runner.record import ORACLE, backend_xp

BACKENDS = tiers.BACKENDS


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
    xp, why = backend_xp(backend)
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


# ----------------------------------------------------------------------------- the generate case

@pytest.mark.parametrize("backend", [ORACLE] + [pytest.param(b, marks=[pytest.mark.gpu] if b.startswith("cupy")
                                                             else []) for b in BACKENDS])
@pytest.mark.parametrize("case", GENERATE_CASES)
def test_generate(impl, case, backend, tol):
    """generate's tokens and step logits, with and without the KV cache (semantic tier: numpy-float64)."""
    xp, why = backend_xp(backend)
    if xp is None:
        pytest.skip(f"{backend}: {why}")
    c = CASES[case]
    res, _ = tiers.generate(impl, c, tiers.load_case_golden(c), backend, tol)
    assert not res.skipped, res.skipped
    assert res.rows and not res.failed, _explain(res)


@pytest.mark.parametrize("case", GENERATE_CASES)
def test_generate_golden_matches_reference(case, ref, tol):
    c = CASES[case]
    res, _ = tiers.generate(ref, c, tiers.load_case_golden(c), ORACLE, tol)
    assert not res.failed, _explain(res)


@pytest.mark.parametrize("name", [m["name"] for m in catalog.CATALOG if m["area"] == "generate"])
def test_generate_mutants_fail_at_the_expected_step(tmp_path, name, tol):
    """Each generation mutant of harness/measure/catalog.py's catalog fails the generate case's semantic tier at
    its expected row (an equivalent rewrite passes)."""
    entry = catalog.by_name()[name]
    path = tmp_path / f"{name}.py"
    path.write_text(catalog.apply(entry, catalog.FIXTURE.read_text()))
    c = CASES["generate"]
    res, _ = tiers.generate(load_impl(path), c, tiers.load_case_golden(c), ORACLE, tol)
    row = res.first_failure()
    if entry["kind"] == "equivalent":
        assert row is None, _explain(res)
    else:
        assert row is not None and mutate.expect_matches(entry["expect"], {"name": row.name, "step": row.step}), \
            _explain(res)


def test_generate_crash_and_early_stop_are_named(tmp_path, tol):
    src = catalog.FIXTURE.read_text()
    for old in ("    done, out = np.zeros(B, bool), []\n", "for t in range(L, min(L + n_tokens, T)):"):
        assert src.count(old) == 1, f"the frozen fixture's generate changed: update this test ({old!r})"
    crash = tmp_path / "crash.py"
    crash.write_text(src.replace("    done, out = np.zeros(B, bool), []\n",
                                 "    done, out = np.zeros(B, bool), []\n    assert not kv_cache, 'boom'\n"))
    short = tmp_path / "short.py"
    short.write_text(src.replace("for t in range(L, min(L + n_tokens, T)):",
                                 "for t in range(L, min(L + n_tokens, T - 1)):"))
    c = CASES["generate"]
    res, _ = tiers.generate(load_impl(crash), c, tiers.load_case_golden(c), ORACLE, tol)
    row = res.first_failure()
    assert row.name == "generate() (kv cache)" and "AssertionError: boom" in row.note
    assert not any(r.failed for r in res.rows if "no cache" in r.name)
    res, _ = tiers.generate(load_impl(short), c, tiers.load_case_golden(c), ORACLE, tol)
    row = res.first_failure()
    assert (row.name, row.step) == ("greedy (kv cache)", 10) and "ended after 10 of 11 steps" in row.note
