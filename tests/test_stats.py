"""harness/measure/stats.py, the statistics of `nanoproof compare`, on synthetic samples whose answers
are known: closed forms (Student's and Welch's t from their textbook formulas, the t quantiles of
scipy.stats.t) and simulation (interval coverage, false-verdict rate, power), never typed-in numbers."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from nanoproof.measure import stats

RTOL = 1e-12   # the same formulas in another order: rounding only


def _binomial_band(n, p, q=1e-4):
    """The counts a Binomial(n, p) stays within with probability 1 - q (its central interval)."""
    lo, hi = sps.binom.interval(1 - q, n, p)
    return lo / n, hi / n


def test_paired_matches_the_closed_form():
    rng = np.random.default_rng(1)
    a = rng.normal(1.60, 0.010, 8)
    b = a + rng.normal(-0.01, 0.005, 8)
    t = stats.paired(a, b)
    d = b - a
    n, mean, sd = len(d), d.mean(), d.std(ddof=1)
    tstat = mean / (sd / math.sqrt(n))
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert t.kind == "paired" and t.n == n and t.df == n - 1
    assert t.diff == pytest.approx(mean, rel=RTOL) and t.sd == pytest.approx(sd, rel=RTOL)
    assert t.t == pytest.approx(tstat, rel=1e-10)
    assert t.p == pytest.approx(2 * sps.t.sf(abs(tstat), n - 1), rel=1e-9)
    assert (t.ci_low, t.ci_high) == (pytest.approx(mean - half, rel=RTOL), pytest.approx(mean + half, rel=RTOL))
    assert t.effect == pytest.approx(mean / sd, rel=RTOL)
    assert not t.identical


def test_welch_matches_the_closed_form():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.60, 0.010, 6), rng.normal(1.59, 0.025, 9)
    t = stats.welch(a, b)
    va, vb, na, nb = a.var(ddof=1), b.var(ddof=1), len(a), len(b)
    se = math.sqrt(va / na + vb / nb)
    df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    tstat = (b.mean() - a.mean()) / se
    half = sps.t.ppf(0.975, df) * se
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    assert t.kind == "Welch" and t.n == min(na, nb)
    assert t.df == pytest.approx(df, rel=RTOL) and t.t == pytest.approx(tstat, rel=1e-10)
    assert t.p == pytest.approx(2 * sps.t.sf(abs(tstat), df), rel=1e-9)
    assert t.ci_low == pytest.approx(b.mean() - a.mean() - half, rel=RTOL)
    assert t.ci_high == pytest.approx(b.mean() - a.mean() + half, rel=RTOL)
    assert t.effect == pytest.approx((b.mean() - a.mean()) / pooled, rel=RTOL)


@pytest.mark.parametrize("test", [stats.paired, stats.welch])
def test_interval_coverage_and_false_verdicts_under_the_null(test):
    """1000 experiments of n = 6 pairs: the 95% interval covers the true difference ~95% of the time,
    and with no true difference the test rejects (the verdict's "better"/"worse", see
    test_verdict_follows_the_test) ~5% of the time, within the binomial band of 1 - 1e-4."""
    rng = np.random.default_rng(3)
    trials, n, true = 1000, 6, -0.02
    covered = false = 0
    for _ in range(trials):
        a = rng.normal(1.6, 0.01, n)
        b = a + true + rng.normal(0, 0.01, n) if test is stats.paired else rng.normal(1.6 + true, 0.01, n)
        t = test(a, b)
        covered += t.ci_low <= true <= t.ci_high
        null_b = a + rng.normal(0, 0.01, n) if test is stats.paired else rng.normal(1.6, 0.01, n)
        false += test(a, null_b).p < stats.ALPHA
    lo, hi = _binomial_band(trials, 0.95)
    assert lo <= covered / trials <= hi
    lo, hi = _binomial_band(trials, stats.ALPHA)
    assert lo <= false / trials <= hi


@pytest.mark.parametrize("effect", [1.0, 0.5])
def test_required_n_reaches_the_power_and_no_fewer_does(effect):
    """required_n against a simulation of the paired t-test: at n the rejection rate reaches 80%, at
    n - 1 it does not (within 4 binomial sds of 20 000 simulated experiments)."""
    sd, delta = 0.01, 0.01 * effect
    n = stats.required_n(sd, delta)
    assert stats.power(n, sd, delta) >= stats.POWER > stats.power(n - 1, sd, delta)
    rng = np.random.default_rng(4)
    sims = 20000
    tol = 4 * math.sqrt(stats.POWER * (1 - stats.POWER) / sims)
    for m, above in ((n, True), (n - 1, False)):
        d = rng.normal(delta, sd, (sims, m))
        t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(m))
        rate = np.mean(np.abs(t) > sps.t.ppf(1 - stats.ALPHA / 2, m - 1))
        if above:
            assert rate >= stats.POWER - tol, (m, rate)
        else:
            assert rate <= stats.POWER + tol, (m, rate)
        assert rate == pytest.approx(stats.power(m, sd, delta), abs=tol)


def test_welch_power_against_simulation():
    n, sd, delta = 8, 0.01, 0.012
    rng = np.random.default_rng(5)
    sims = 20000
    a, b = rng.normal(0, sd, (sims, n)), rng.normal(delta, sd, (sims, n))
    se = np.sqrt(a.var(axis=1, ddof=1) / n + b.var(axis=1, ddof=1) / n)
    t = (b.mean(axis=1) - a.mean(axis=1)) / se
    rate = np.mean(np.abs(t) > sps.t.ppf(1 - stats.ALPHA / 2, 2 * n - 2))
    assert rate == pytest.approx(stats.power(n, sd, delta, kind="Welch"), abs=4 * math.sqrt(0.25 / sims))


def test_identical_sides_are_identical_not_nan():
    a = [1.61, 1.62, 1.60, 1.63]
    t = stats.paired(a, list(a))
    assert t.identical and t.p == 1.0 and t.diff == 0.0 and t.ci_low == t.ci_high == 0.0
    v = stats.verdict(t)
    assert v.outcome == "identical" and "indistinguishable" in v.line and "nan" not in v.line.lower()
    w = stats.welch([1.6] * 3, [1.6] * 3)
    assert w.identical and w.p == 1.0


def test_a_constant_nonzero_difference_is_certain():
    a = np.array([1.61, 1.62, 1.60, 1.63])
    t = stats.paired(a, a - 0.25)   # exact in binary: every difference is -0.25
    assert t.p == 0.0 and t.diff == -0.25 and t.sd == 0.0 and not t.identical
    v = stats.verdict(t)
    assert v.outcome == "better" and "every pair differs by exactly" in v.line
    assert stats.required_n(0.0, 0.01) is None and stats.required_n(0.01, 0.0) is None


def test_verdict_words_and_direction():
    rng = np.random.default_rng(6)
    a = rng.normal(1.6, 0.01, 8)
    better = stats.verdict(stats.paired(a, a - 0.03 + rng.normal(0, 0.005, 8)))
    worse = stats.verdict(stats.paired(a, a + 0.03 + rng.normal(0, 0.005, 8)))
    assert better.outcome == "better" and better.line.startswith("B is better by 0.0")
    assert worse.outcome == "worse" and worse.line.startswith("B is worse by 0.0")
    assert "paired t-test p" in better.line and "n = 8" in better.line
    t = stats.paired(a, a + rng.normal(0.001, 0.01, 8))
    v = stats.verdict(t, resolve=0.005)
    assert t.p >= stats.ALPHA and v.outcome == "indistinguishable"
    assert v.needed_n == stats.required_n(t.sd, 0.005) and v.resolve == 0.005
    assert f"would need about n = {v.needed_n} pairs to resolve 0.005" in v.line


@pytest.mark.parametrize("test", [stats.paired, stats.welch])
def test_verdict_follows_the_test(test):
    """better / worse exactly when p < alpha, in the direction of the difference (lower is better)."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        a, b = rng.normal(1.6, 0.01, 5), rng.normal(1.6 + rng.normal(0, 0.01), 0.01, 5)
        t = test(a, b)
        want = ("better" if t.diff < 0 else "worse") if t.p < stats.ALPHA else "indistinguishable"
        assert stats.verdict(t).outcome == want


@pytest.mark.parametrize("bad, message", [
    (([1.0], [1.0]), "needs at least 2 runs"),
    (([1.0, float("nan")], [1.0, 2.0]), "non-finite"),
    (([1.0, 2.0], [1.0, 2.0, 3.0]), "pairs need equal counts"),
])
def test_unanswerable_samples_raise_one_line(bad, message):
    with pytest.raises(stats.StatsError, match=message):
        stats.paired(*bad)
