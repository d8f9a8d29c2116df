"""The statistics of `nanoproof compare` (harness/measure/compare.py): is side B's final val loss
better, worse or indistinguishable from side A's, from n runs per side?

The bar is the one the speedrun community uses for records: several runs per side, their means, and a
t-test. Lower is better throughout (losses). Every function takes plain sequences of floats and
returns plain floats, so the numbers can go straight into JSON.

- `describe(xs)`: n, mean, sample std (ddof 1), min, max.
- `paired(a, b)`: the differences d = b - a of runs that share a seed (same init seed, same batches):
  mean, sd, 95% confidence interval of the mean (Student's t, n - 1 degrees of freedom), the paired
  t-test's p-value (scipy.stats.ttest_rel) and the effect size d_z = mean(d) / sd(d).
- `welch(a, b)`: Welch's unequal-variance t-test (scipy.stats.ttest_ind(equal_var=False)), the
  difference of means with its Welch-Satterthwaite 95% interval, and Cohen's d (pooled sd).
- `required_n(sd, delta)`: the smallest n at which a two-sided t-test at level alpha detects a true
  difference delta with the given power (default 80%), exactly, from the noncentral t distribution.
- `verdict(...)`: the words: "B is better by 0.031 ± 0.008 (p = 0.002, n = 8)" or
  "indistinguishable at n = 8 (p = 0.41); would need about n = 30 to resolve 0.005".

Degenerate samples are answered, never turned into NaN: all differences exactly zero (the two sides
computed the same numbers) is "identical", p = 1; a nonzero difference with zero spread (every pair
differs by the same amount) is a certain difference, p = 0.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05     # two-sided test level, and 1 - the confidence of the intervals
POWER = 0.80     # the power `required_n` asks for
MAX_N = 1_000_000


class StatsError(ValueError):
    """A sample the statistics cannot answer (too few runs, a NaN): a one-line message."""


def _sample(xs, what="sample") -> np.ndarray:
    x = np.asarray(list(xs), dtype=np.float64)
    if x.ndim != 1:
        raise StatsError(f"{what}: expected a list of numbers, got shape {x.shape}")
    if len(x) < 2:
        raise StatsError(f"{what}: needs at least 2 runs to estimate the noise, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise StatsError(f"{what}: holds a non-finite value ({x[~np.isfinite(x)][0]}): a run diverged")
    return x


@dataclass
class Summary:
    n: int
    mean: float
    std: float      # sample standard deviation (ddof 1)
    min: float
    max: float

    def as_dict(self):
        return asdict(self)


def describe(xs, what="sample") -> Summary:
    x = _sample(xs, what)
    return Summary(len(x), float(x.mean()), float(x.std(ddof=1)), float(x.min()), float(x.max()))


@dataclass
class Test:
    """One two-sided test of "B - A = 0": the estimate, its 95% interval and the p-value."""
    kind: str            # "paired" or "Welch"
    n: int               # pairs (paired) or runs per side (welch: the smaller side)
    diff: float          # mean(b - a) (paired) or mean(b) - mean(a) (welch)
    sd: float            # sd of the differences (paired) or pooled sd of the runs (welch)
    ci_low: float
    ci_high: float
    t: float             # the t statistic (inf when the spread is zero and diff is not)
    df: float
    p: float
    effect: float        # d_z = diff / sd (paired), Cohen's d = diff / pooled sd (welch); 0 when identical
    identical: bool = False   # every difference exactly zero

    @property
    def half_width(self):
        return (self.ci_high - self.ci_low) / 2

    def as_dict(self):
        d = asdict(self)
        d["half_width"] = self.half_width
        for k, v in d.items():   # JSON has no inf: the sign survives as a string
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = str(v)
        return d


def _t_quantile(df, alpha):
    from scipy import stats
    return float(stats.t.ppf(1 - alpha / 2, df))


def paired(a, b, alpha=ALPHA) -> Test:
    """The paired t-test of b - a (a[i] and b[i] from runs with the same seed)."""
    from scipy import stats
    a, b = _sample(a, "side A"), _sample(b, "side B")
    if len(a) != len(b):
        raise StatsError(f"paired test: side A has {len(a)} runs, side B {len(b)}; pairs need equal counts")
    d = b - a
    n, mean = len(d), float(d.mean())
    sd = 0.0 if np.all(d == d[0]) else float(d.std(ddof=1))   # exactly 0 for constant differences
    df = n - 1
    if sd == 0.0:   # scipy would answer NaN: every pair differs by exactly d[0]
        mean = float(d[0])
        if mean == 0.0:
            return Test("paired", n, 0.0, 0.0, 0.0, 0.0, 0.0, df, 1.0, 0.0, identical=bool(np.all(d == 0)))
        return Test("paired", n, mean, 0.0, mean, mean, math.copysign(math.inf, mean), df, 0.0,
                    math.copysign(math.inf, mean))
    with warnings.catch_warnings():   # near-constant differences: scipy warns, the answer (p ~ 0) holds
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(b, a)
    half = _t_quantile(df, alpha) * sd / math.sqrt(n)
    return Test("paired", n, mean, sd, mean - half, mean + half, float(res.statistic), df,
                float(res.pvalue), mean / sd)


def welch(a, b, alpha=ALPHA) -> Test:
    """Welch's t-test of mean(b) - mean(a) for independent runs (different seeds or batch streams)."""
    from scipy import stats
    a, b = _sample(a, "side A"), _sample(b, "side B")
    va = 0.0 if np.all(a == a[0]) else float(a.var(ddof=1))   # exactly 0 for a constant side
    vb = 0.0 if np.all(b == b[0]) else float(b.var(ddof=1))
    na, nb = len(a), len(b)
    diff = float(b.mean() - a.mean())
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    se2 = va / na + vb / nb
    if se2 == 0.0:
        n = min(na, nb)
        diff = float(b[0] - a[0])
        if diff == 0.0:
            return Test("Welch", n, 0.0, 0.0, 0.0, 0.0, 0.0, float(na + nb - 2), 1.0, 0.0,
                        identical=bool(np.all(a == a[0]) and np.all(b == a[0])))
        return Test("Welch", n, diff, 0.0, diff, diff, math.copysign(math.inf, diff), float(na + nb - 2),
                    0.0, math.copysign(math.inf, diff))
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))   # Welch-Satterthwaite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(b, a, equal_var=False)
    half = _t_quantile(df, alpha) * math.sqrt(se2)
    return Test("Welch", min(na, nb), diff, pooled, diff - half, diff + half, float(res.statistic),
                float(df), float(res.pvalue), diff / pooled if pooled > 0 else math.copysign(math.inf, diff))


def power(n, sd, delta, alpha=ALPHA, kind="paired"):
    """The probability that a two-sided t-test at level alpha rejects when the true difference is
    delta: paired, n pairs with differences of sd `sd`; welch, n runs per side each of sd `sd`
    (equal variances, df 2n - 2). Exact, from the noncentral t distribution."""
    from scipy import stats
    if kind.lower() == "paired":
        df, nc = n - 1, delta / sd * math.sqrt(n)
    else:
        df, nc = 2 * n - 2, delta / sd * math.sqrt(n / 2)
    crit = _t_quantile(df, alpha)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def required_n(sd, delta, alpha=ALPHA, target=POWER, kind="paired"):
    """The smallest n >= 2 (pairs, or runs per side for welch) whose t-test at level alpha has at
    least `target` power against a true difference `delta` with the given sd; None when delta is 0
    or sd is 0 (nothing to resolve, or no noise), or when even MAX_N is not enough."""
    delta, sd = abs(float(delta)), float(sd)
    if delta == 0.0 or sd == 0.0 or not math.isfinite(delta) or not math.isfinite(sd):
        return None
    from scipy import stats
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target)
    scale = 1.0 if kind.lower() == "paired" else 2.0      # welch: n per side, twice the variance
    n = max(2, math.ceil(scale * (z * sd / delta) ** 2))   # the normal approximation: a lower bound
    if n > MAX_N:
        return None
    while n > 2 and power(n - 1, sd, delta, alpha, kind) >= target:   # the smallest n, exactly
        n -= 1
    while power(n, sd, delta, alpha, kind) < target:
        n += 1
        if n > MAX_N:
            return None
    return n


def _decimals(width):
    """Decimals that show a 95% half-width with 2 significant figures (at least 3)."""
    if not width or not math.isfinite(width):
        return 3
    return max(3, 1 - int(math.floor(math.log10(abs(width)))))


def p_text(p):
    """p with the digits that matter: near a test level (0.01 to 0.1) three, so 0.0503 is not "0.05"."""
    if p < 1e-6:
        return "p < 1e-6"
    return f"p = {p:.2g}" if p < 0.01 else (f"p = {p:.3g}" if p < 0.1 else f"p = {p:.2f}")


@dataclass
class Verdict:
    outcome: str          # "better", "worse", "indistinguishable", "identical"
    line: str             # the words
    resolve: float | None = None      # the difference the "would need n" estimate is for
    needed_n: int | None = None

    def as_dict(self):
        return asdict(self)


def verdict(test: Test, alpha=ALPHA, resolve=None, label_b="B") -> Verdict:
    """Better / worse (lower loss is better) when the test's p < alpha, else indistinguishable at
    this n, with the n that would resolve `resolve` (default: the observed |difference|) at 80%
    power given the observed spread."""
    n = test.n
    if test.identical:
        return Verdict("identical", f"indistinguishable: identical val losses on all {n} seeds "
                                    f"(bit for bit: the two sides computed the same numbers)")
    if test.p < alpha:
        how = "better" if test.diff < 0 else "worse"
        dec = _decimals(test.half_width) if test.sd else _decimals(abs(test.diff) / 10)
        spread = f" ± {test.half_width:.{dec}f} (95% CI; " if test.sd else " (every pair differs by exactly that; "
        return Verdict(how, f"{label_b} is {how} by {abs(test.diff):.{dec}f}{spread}{test.kind} t-test "
                            f"{p_text(test.p)}, n = {n})")
    target = abs(float(resolve)) if resolve is not None else abs(test.diff)
    need = required_n(test.sd, target, alpha, kind=test.kind)
    dec = _decimals(test.half_width)
    line = (f"indistinguishable at n = {n} (difference {test.diff:+.{dec}f} ± {test.half_width:.{dec}f}, 95% CI; "
            f"{test.kind} t-test {p_text(test.p)})")
    if need is not None:
        per = "pairs" if test.kind == "paired" else "runs per side"
        line += f"; would need about n = {need} {per} to resolve {target:.2g} (80% power)"
    return Verdict("indistinguishable", line, target, need)
