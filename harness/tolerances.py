"""The one tolerance table (golden/tolerances.json): every tolerance the tiers use, each with what it
applies to, its metric, the error it was set to cover (`measured`, with the command that measured it)
and why its value is what it is. scripts/calibrate.py re-measures every entry and prints its headroom.

Keys of a result (harness.tiers.collect) map to entries with `entry_for`.
"""
import json
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "golden" / "tolerances.json"
FIELDS = ("tier", "applies_to", "metric", "value", "measured", "measured_by", "why")


class ToleranceError(Exception):
    pass


def load(path=None):
    path = Path(path or PATH)
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ToleranceError(f"{path}: cannot read the tolerance table: {exc}") from None
    entries = table.get("entries") if isinstance(table, dict) else None
    if not isinstance(entries, dict):
        raise ToleranceError(f"{path}: no 'entries' object")
    for key, e in entries.items():
        missing = [f for f in FIELDS if f not in e]
        if missing:
            raise ToleranceError(f"{path}: entry {key} lacks {', '.join(missing)}")
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


def row_entry(tier, section, name):
    """The entry a row of the tiers (harness.compare.Row: tier, section, printed name) is checked
    against; None where no one entry governs it (a crash row, an unknown setup item)."""
    if section == "generate":
        if "tokens" in name:
            return "semantic.generate.tokens"
        if "logits" not in name:
            return None
        return "semantic.generate.logits" if tier == "semantic" else "backend.k"
    if tier == "backend":
        return "backend.k"
    if tier == "score":
        return "score.same_seed" if "reference seed" in name else "score.band_sigmas"
    if section == "setup":
        return {"init": "semantic.init", "get_batch": "semantic.get_batch",
                "lr_at": "semantic.lr_at"}.get(name.split(" ")[0])
    if section == "trajectory":
        if "(after" in name:
            return "semantic.trajectory.params"
        head = name.split(" ")[0]
        return f"semantic.trajectory.{head}" if head in ("lr", "loss", "grad_norm") else None
    return {"forward": "semantic.activations", "loss": "semantic.loss", "backward": "semantic.grads"}.get(section)
