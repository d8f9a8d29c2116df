"""The one tolerance table (golden/tolerances.json): every tolerance the tiers use, each with what it
applies to, its metric, the error it was set to cover (`measured`, with the command that measured it)
and why its value is what it is. scripts/calibrate.py re-measures every entry and prints its headroom.

Keys of a result (nanoproof.judge.tiers.collect) map to entries with `entry_for`.
"""
import json
import math
from pathlib import Path

from nanoproof.paths import GOLDEN_DIR

PATH = GOLDEN_DIR / "tolerances.json"
FIELDS = ("tier", "applies_to", "metric", "value", "measured", "measured_by", "why")
# the metrics of harness/judge/compare.py's rows: ulp (element-wise functions), exact (integers), rel
# (normwise relative error), factor (backend.k: a multiple of the reference's own float32 error),
# sigma (score band: standard deviations of the seed ensemble), abs (absolute val-loss difference)
METRICS = ("ulp", "exact", "rel", "factor", "sigma", "abs")
# Every entry the code reads (tol["..."] in harness/ and scripts/, the keys semantic_key returns, and
# the entries the tiers name on their rows): load() refuses a table without one of them, so a renamed or deleted entry fails
# on load, not as a KeyError in the middle of a tier. Others may extend it (REQUIRED_ENTRIES += ...).
REQUIRED_ENTRIES = (
    "semantic.init", "semantic.get_batch", "semantic.lr_at", "semantic.activations", "semantic.loss",
    "semantic.grads", "semantic.trajectory.lr", "semantic.trajectory.loss",
    "semantic.trajectory.grad_norm", "semantic.trajectory.params", "semantic.generate.logits",
    "semantic.generate.tokens", "backend.k", "backend.floor", "backend.float64",
    "score.band_sigmas", "score.band_floor", "score.same_seed",
    "semantic.accumulation",    # tests/test_accumulation.py, tests/test_mpi.py; calibrate --only accumulation
)
# A value must be > 0, except: metric "exact" (integers compared for equality: the check takes no
# tolerance, so its value must be 0, never a number that looks like a slack it does not get), and
# the entries below, where 0 means "nothing added": score.band_floor is added to the band's
# half-width (band_sigmas x sigma + floor), and 0 is its calibrated value ("no floor needed").
# A 0 anywhere else (a rel, ulp, factor or sigma tolerance, backend.floor, score.same_seed) would
# fail every rounding difference, so it is refused as a typo.
ZERO_ALLOWED = ("score.band_floor",)


class ToleranceError(Exception):
    """A tolerance table that cannot be used; one line naming the file, the entry, the field, what
    was expected and what is there."""


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_entry(path, key, e):
    def bad(field, expected, actual):
        raise ToleranceError(f"{path}: entry {key}, field {field}: expected {expected}, got {actual!r}")

    if not isinstance(e, dict):
        raise ToleranceError(f"{path}: entry {key}: expected an object with fields "
                             f"{', '.join(FIELDS)}, got {type(e).__name__}")
    missing = [f for f in FIELDS if f not in e]
    if missing:
        nor = f" (nor {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ToleranceError(f"{path}: entry {key}, field {missing[0]}: expected one (every entry "
                             f"has {', '.join(FIELDS)}), got none{nor}")
    for f in ("tier", "applies_to", "measured_by", "why"):
        if not (isinstance(e[f], str) and e[f].strip()):
            bad(f, "a non-empty string", e[f])
    if not isinstance(e.get("measured_on", ""), str):   # optional (calibrate.py --write sets it)
        bad("measured_on", "a string", e["measured_on"])
    if e["metric"] not in METRICS:
        bad("metric", f"one of {', '.join(METRICS)}", e["metric"])
    v = e["value"]
    if not _number(v) or v < 0:
        bad("value", "a finite number >= 0", v)
    if e["metric"] == "exact" and v != 0:
        bad("value", "0 (metric exact compares for equality)", v)
    if e["metric"] != "exact" and v == 0 and key not in ZERO_ALLOWED:
        bad("value", f"a finite number > 0 (a {e['metric']} tolerance of 0 fails every rounding "
                     f"difference)", v)
    m = e["measured"]
    if m is not None and (not _number(m) or m < 0):
        bad("measured", "a finite number >= 0 or null", m)


def load(path=None, required=None):
    """The table's entries {key: entry}, validated: schema, types, metric, value, measured, and
    every entry of `required` (default REQUIRED_ENTRIES) present. Raises ToleranceError (one line)."""
    path = Path(path or PATH)
    try:
        table = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ToleranceError(f"{path}: cannot read the tolerance table: "
                             f"{' '.join(str(exc).split())}") from None
    entries = table.get("entries") if isinstance(table, dict) else None
    if not isinstance(entries, dict):
        raise ToleranceError(f"{path}: expected an object with an 'entries' object, got "
                             f"{type(entries if isinstance(table, dict) else table).__name__}")
    for key, e in entries.items():
        _check_entry(path, key, e)
    for key in (REQUIRED_ENTRIES if required is None else required):
        if key not in entries:
            raise ToleranceError(f"{path}: entry {key}: expected (harness/spec/tolerances.py "
                                 f"REQUIRED_ENTRIES: the tiers read it), got no such entry")
    return entries


def semantic_key(result_key):
    """The tolerance entry for a result key of the semantic tier."""
    if result_key.startswith("setup/init/"):
        return "semantic.init"
    if result_key.startswith("setup/get_batch/"):
        return "semantic.get_batch"
    if result_key == "setup/lr_at":
        return "semantic.lr_at"
    if result_key.startswith("step0/activations/"):
        return "semantic.activations"
    if result_key == "step0/loss":
        return "semantic.loss"
    if result_key.startswith("step0/grads/"):
        return "semantic.grads"
    if result_key.startswith("trajectory/params_after_"):
        return "semantic.trajectory.params"
    for q in ("lr", "loss", "grad_norm"):
        if result_key.startswith(f"trajectory/{q}"):
            return f"semantic.trajectory.{q}"
    raise KeyError(result_key)
