"""Comparing arrays against golden values: the metrics, and the check functions that turn one
comparison into a report row (harness/judge/report.py holds the row and result model).

Metrics (DESIGN.md, "Proof in tiers"):
- normwise relative error max|Δ| / max|ref| for matmuls, reductions, losses and gradients (a scalar's
  is |Δ| / |ref|): rounding spreads across a whole tensor, so an element-wise relative error would
  punish the tiny entries that carry no information;
- ULPs (units in the last place of the expected value's dtype) for element-wise functions evaluated on
  identical inputs: the initial params (std * a shared normal draw) and lr_at(step);
- exact equality for integers (the sampler's batches).
NaN never passes: a NaN or an infinity where the golden value is finite makes the error infinite.
"""
import math

import numpy as np

from nanoproof.judge.report import Row


def _float64(a):
    return np.asarray(a, dtype=np.float64)


def normwise(actual, expected):
    """(max |actual - expected|, max|Δ| / max|expected|). Infinite where NaN/inf do not match the
    expected (an infinity equal to the expected one counts as no error); shapes must agree."""
    a, e = _float64(actual), _float64(expected)
    if a.shape != e.shape:
        return math.inf, math.inf
    if a.size == 0:
        return 0.0, 0.0
    same_inf = np.isinf(e) & (a == e)
    with np.errstate(invalid="ignore"):
        d = np.where(same_inf, 0.0, np.abs(a - e))
    if np.isnan(d).any() or np.isinf(d).any():
        return math.nan if np.isnan(d).any() else math.inf, math.inf
    max_abs = float(d.max())
    finite = e[np.isfinite(e)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    if scale == 0.0:
        return max_abs, 0.0 if max_abs == 0.0 else math.inf
    return max_abs, max_abs / scale


def ulp_distance(actual, expected):
    """Max distance in ULPs of the expected dtype (float32 or float64) between the two arrays,
    counted along the float line (so +0 and -0 are 0 apart). Infinite for NaN."""
    e = np.asarray(expected)
    dt = np.float32 if e.dtype == np.float32 else np.float64
    a, e = np.asarray(actual, dtype=dt), e.astype(dt)
    if a.shape != e.shape:
        return math.inf
    if a.size == 0:
        return 0
    if np.isnan(a).any() or np.isnan(e).any() or (np.isinf(a) & (a != e)).any():
        return math.inf
    it = np.int32 if dt == np.float32 else np.int64

    def ordinal(x):  # a monotone integer image of the floats (-0 and +0 both map to 0)
        i = x.view(it).astype(np.int64)
        return np.where(i < 0, np.int64(np.iinfo(it).min) - i, i)
    oa, oe = ordinal(a), ordinal(e)
    opposite = (oa < 0) != (oe < 0)  # far apart; int64 subtraction could overflow there
    with np.errstate(over="ignore"):
        d = np.abs(oa - oe).astype(np.float64)
    d = np.where(opposite, np.abs(oa.astype(np.float64)) + np.abs(oe.astype(np.float64)), d)
    m = float(np.max(d))
    return int(m) if m < 2 ** 53 else m


def record_errors(rec, oracle):
    """{key: normwise error} of a flattened record (nanoproof.golden.regen.flatten_record) against the oracle;
    per-step trajectory scalars get one key per step: "trajectory/loss@3"."""
    out = {}
    for k, v in rec.items():
        if k not in oracle:
            continue
        if k.startswith("trajectory/") and np.ndim(v) == 1 and "/params_after_" not in k:
            for s in range(len(v)):
                out[f"{k}@{s}"] = normwise(v[s], oracle[k][s])[1]
        else:
            out[k] = normwise(v, oracle[k])[1]
    return out


def _where(a, e, tol_abs):
    """Count of offending elements and the worst one, as a note (pytest-regressions style)."""
    a, e = _float64(a), _float64(e)
    if a.ndim == 0:
        return f"got {a.item():.17g}, expected {e.item():.17g}"
    with np.errstate(invalid="ignore"):
        d = np.where(np.isnan(a) | np.isnan(e), np.inf, np.abs(a - e))
        d = np.where(np.isinf(e) & (a == e), 0.0, d)
    worst = np.unravel_index(int(np.argmax(d)), d.shape)
    n_bad = int(np.sum(d > tol_abs))
    nan = int(np.isnan(a).sum())
    return (f"{n_bad} of {d.size} elements off{f' ({nan} NaN)' if nan else ''}; worst at "
            f"{tuple(int(i) for i in worst)}: got {a[worst]:.10g}, expected {e[worst]:.10g}")


def _present_and_shaped(row, actual, e):
    """`actual` as an array, or None after marking `row` FAIL (missing, or a shape other than e's)."""
    if actual is None:
        row.verdict, row.note = "FAIL", "missing"
        return None
    a = np.asarray(actual)
    if a.shape != e.shape:
        row.verdict, row.err = "FAIL", math.inf
        row.note = f"shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        return None
    return a


def check_rel(tier, section, name, actual, expected, tol, step=None, backend=""):
    """Normwise relative check; FAIL on shape mismatch, NaN, or error > tol."""
    e = np.asarray(expected)
    row = Row(tier, section, name, step, tuple(e.shape), metric="rel", tol=tol, backend=backend)
    a = _present_and_shaped(row, actual, e)
    if a is None:
        return row
    row.max_abs, row.err = normwise(a, e)
    if not (row.err <= tol):  # NaN-safe: NaN never passes
        row.verdict = "FAIL"
        finite = np.abs(_float64(e)[np.isfinite(_float64(e))])
        scale = float(finite.max()) if finite.size else 0.0
        row.note = _where(a, e, tol * scale)
    return row


def check_ulp(tier, section, name, actual, expected, tol, step=None, backend=""):
    e = np.asarray(expected)
    row = Row(tier, section, name, step, tuple(e.shape), metric="ulp", tol=tol, backend=backend)
    a = _present_and_shaped(row, actual, e)
    if a is None:
        return row
    row.max_abs = normwise(a, e)[0]
    row.err = ulp_distance(a, e)
    if not (row.err <= tol):
        row.verdict = "FAIL"
        row.note = _where(a, e, 0.0)
    return row


def check_exact(tier, section, name, actual, expected, step=None):
    e = np.asarray(expected)
    row = Row(tier, section, name, step, tuple(e.shape), metric="exact", tol=0, backend="")
    a = np.asarray(actual)
    if a.shape != e.shape:
        row.verdict, row.err = "FAIL", math.inf
        row.note = f"shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        return row
    bad = a != e
    row.err = int(bad.sum())
    row.max_abs = float(np.abs(a.astype(np.float64) - e.astype(np.float64)).max()) if a.size else 0.0
    if row.err:
        row.verdict = "FAIL"
        first = np.unravel_index(int(np.argmax(bad)), bad.shape)
        row.note = (f"{row.err} of {bad.size} entries differ; first at {tuple(int(i) for i in first)}: "
                    f"got {a[first]}, expected {e[first]}")
    return row
