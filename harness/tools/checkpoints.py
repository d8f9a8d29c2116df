"""Checkpoint and log I/O of a training run (harness/tools/training.py holds the loop; its docstring
describes the files): ckpt.npz written atomically with np.savez and read back with
allow_pickle=False, the JSON-lines log, the loss plot, and the check that a checkpoint belongs to
the run asked to resume."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from nanoproof.paths import atomic_file, atomic_write_bytes
from nanoproof.runner.record import to_host
from nanoproof.tools.data import one_line

CKPT_FORMAT = "nanoproof-ckpt-1"
CKPT_NAME = "ckpt.npz"
LOG_NAME = "log.jsonl"
PLOT_NAME = "loss.png"
# the settings that must be equal to resume a run (max_iters may change)
RESUME_KEYS = ("config", "dtype", "seed", "batch_size", "hparams", "eval_interval", "eval_iters")
# settings a checkpoint may lack because it predates them, with the value such a run had
RESUME_DEFAULTS = {"gradient_accumulation_steps": 1}
# the data meta fields that decide the token streams (not `source`: the same text may have moved)
DATA_KEYS = ("encoding", "vocab_size", "chars", "train_tokens", "val_tokens", "source_sha256")


class TrainingError(Exception):
    """A training run that cannot start or continue, with a one-line message meant for the user."""


class CheckpointError(TrainingError):
    """A checkpoint that is missing, unreadable, not ours, or of a different run than requested."""


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path, params: dict, state: dict, meta: dict) -> None:
    """Write params, optimizer state and JSON meta to ``path`` (.npz, no pickle) atomically."""
    path = Path(path)
    arrays = {f"params/{k}": to_host(v) for k, v in params.items()}
    arrays.update({f"state/{k}": to_host(v) for k, v in state.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, allow_pickle=False)


def load_checkpoint(path) -> tuple[dict, dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(params, state, meta)`` as host arrays
    and a dict. Raises CheckpointError naming the file when it is missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from (train without --resume first)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                raise ValueError("it has no 'meta' entry")
            meta = json.loads(str(f["meta"][()]))
            params = {k[len("params/"):]: np.array(f[k]) for k in f.files if k.startswith("params/")}
            state = {k[len("state/"):]: np.array(f[k]) for k in f.files if k.startswith("state/")}
    except Exception as e:  # zip, npy, JSON and I/O errors all mean "not a readable checkpoint"
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                              f"{one_line(e)}); delete it or train without --resume") from None
    if not isinstance(meta, dict) or meta.get("format") != CKPT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: not a {CKPT_FORMAT} checkpoint (format: {found!r}); "
                              f"impl/gpt2.py's own train command writes params only and cannot be resumed")
    missing = [k for k in RESUME_KEYS + ("data", "step", "rng_state", "history") if k not in meta]
    if missing or not params:
        what = ", ".join(missing) or "params"
        raise CheckpointError(f"{path}: checkpoint lacks {what}; delete it or train without --resume")
    kinds = {"data": dict, "config": dict, "hparams": dict, "rng_state": dict, "history": list, "step": int}
    bad = [k for k, kind in kinds.items() if not isinstance(meta[k], kind)]
    if bad:
        raise CheckpointError(f"{path}: checkpoint meta has malformed {', '.join(bad)}; "
                              f"delete it or train without --resume")
    return params, state, meta


def check_resumable(path, meta: dict, requested: dict, data_meta: dict, max_iters: int) -> None:
    diffs = []
    for key, want in requested.items():
        have = meta.get(key, RESUME_DEFAULTS.get(key))
        if isinstance(want, dict) and isinstance(have, dict):
            diffs += [f"{key}.{k}: checkpoint {have.get(k)!r}, requested {want.get(k)!r}"
                      for k in sorted(set(want) | set(have)) if have.get(k) != want.get(k)]
        elif have != want:
            diffs.append(f"{key}: checkpoint {have!r}, requested {want!r}")
    diffs += [f"data.{k}: checkpoint {meta['data'].get(k)!r}, data folder {data_meta.get(k)!r}"
              for k in DATA_KEYS if meta["data"].get(k) != data_meta.get(k)]
    if diffs:
        raise CheckpointError(f"{path}: cannot resume, the checkpoint is of a different run ("
                              + "; ".join(diffs) + "); use its settings or another out_dir")
    if meta["step"] > max_iters:
        raise CheckpointError(f"{path}: cannot resume to max_iters {max_iters}: the checkpoint is "
                              f"already at step {meta['step']}")


# ----------------------------------------------------------------------------- log and plot

class JsonlLog:
    """log.jsonl: (re)written with the records so far, then appended to one flushed line at a time."""

    def __init__(self, path: Path, records: list[dict]):
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())
        self.f = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def read_log(path) -> list[dict]:
    """The records of a log.jsonl (raises TrainingError naming the file and line when unreadable)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TrainingError(f"{path}: cannot read it ({one_line(e.strerror or e)})") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise TrainingError(f"{path}, line {n}: not JSON ({e.msg})") from None
        if not isinstance(r, dict) or r.get("kind") not in ("iter", "eval"):
            raise TrainingError(f"{path}, line {n}: not a log record (kind iter or eval)")
        records.append(r)
    return records


def plot_runs(runs: list[tuple[str, list[dict]]], path, title: str = "", log_y: bool = False) -> None:
    """A PNG of one or more runs' histories (label, records), overlaid: the training batch loss (thin)
    and the evaluated val loss (markers, its last value in the legend) against step, with the
    learning rate below on the same steps. log_y: a log loss axis, so the first steps do not squeeze
    the rest. Uses matplotlib's Agg canvas directly (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, (label, history) in enumerate(runs):
        color = f"C{i}"
        iters = [r for r in history if r["kind"] == "iter"]
        evals = [r for r in history if r["kind"] == "eval"]
        prefix = f"{label}: " if len(runs) > 1 else ""
        if iters:
            ax.plot([r["step"] for r in iters], [r["loss"] for r in iters], color=color, alpha=0.3, lw=0.8,
                    label=f"{prefix}train (batch)")
            ax_lr.plot([r["step"] for r in iters], [r["lr"] for r in iters], color=color, lw=1.2)
        if evals:
            if len(runs) == 1:
                ax.plot([r["step"] for r in evals], [r["train_loss"] for r in evals], "o-", color="C1",
                        ms=3, label="train (eval)")
            last = evals[-1]
            ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "s-", color=color, ms=3,
                    label=f"{prefix}val (eval), {last['val_loss']:.4f} at step {last['step']}")
    ax.set_ylabel("cross-entropy loss" + (" (log)" if log_y else ""))
    if log_y:
        from matplotlib.ticker import FuncFormatter
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def plot_history(history: list[dict], path, title: str = "", log_y: bool = False) -> None:
    """One run's loss.png (plot_runs with a single run)."""
    plot_runs([("run", history)], path, title=title, log_y=log_y)
