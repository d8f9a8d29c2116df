"""Seed bands for a user's own training config (`nanoproof gate --record`): the val loss of N seeds of
one run's settings, stored as a golden score file with its provenance, then gated like the shipped
score case (`nanoproof gate --band FILE --log run/log.jsonl`).

The settings come from a finished run (its folder or ckpt.npz: every setting the checkpoint holds) or
from a JSON file of scripts/train.py's flag names (unnamed flags take train.py's defaults). Each seed
s trains the same way train.py does (init from s, batches from PCG64([s, 1]), evaluation batches from
a fresh PCG64([s, 2])), in worker processes with one BLAS thread each, and its val loss is recorded
at every evaluation step.

A band file holds, in the layout of golden/shakespeare-char.h5 (golden/README.md):
  val_loss/steps, val_loss/seeds, <backend>-<dtype>/val_loss (seeds x steps)
and root attributes `kind` = "band", `band` (the settings, the implementation's path and sha256, the
data's identity, the seeds) and `provenance` (command, time, nanoproof version, machine and BLAS).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from nanoproof.golden.files import read_golden, write_golden

KIND = "band"
CONFIG_KEYS = ("n_layer", "n_head", "n_embd", "block_size")
RUN_KEYS = ("batch_size", "max_iters", "eval_interval", "eval_iters", "dtype")
# the data meta fields that decide the token streams (tools/checkpoints.DATA_KEYS)
DATA_KEYS = ("encoding", "vocab_size", "chars", "train_tokens", "val_tokens", "source_sha256")


class BandError(Exception):
    """Settings or a band file that cannot be used, with a one-line message naming the file."""


# ----------------------------------------------------------------------------- the settings

def train_defaults() -> dict:
    """scripts/train.py's defaults, by flag name."""
    from nanoproof.scripts.train import build_parser
    return vars(build_parser().parse_args([]))


def settings_from(path) -> dict:
    """{"config", "hparams", batch_size, max_iters, eval_interval, eval_iters, dtype, "data" (meta
    subset, or None), "dataset" (folder or None), "source"} from a run folder / ckpt.npz, or a JSON
    file of train.py's flag names."""
    from nanoproof.spec.contract import HPARAM_KEYS
    from nanoproof.tools.checkpoints import CKPT_NAME, TrainingError, load_checkpoint
    path = Path(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.exists():
        raise BandError(f"{path}: no such file (--config takes a run folder, its {CKPT_NAME}, or a JSON "
                        f"file of train.py flags)")
    if path.suffix == ".npz":
        try:
            meta = load_checkpoint(path)[2]
        except TrainingError as exc:
            raise BandError(str(exc)) from None
        if meta.get("init_from"):
            raise BandError(f"{path}: a fine-tuning run (init_from {meta['init_from']}): a seed band "
                            f"needs runs from a random init")
        return {"config": {k: meta["config"][k] for k in CONFIG_KEYS}, "hparams": dict(meta["hparams"]),
                **{k: meta[k] for k in RUN_KEYS if k != "max_iters"}, "max_iters": meta["max_iters"],
                "data": {k: meta["data"].get(k) for k in DATA_KEYS}, "dataset": None,
                "source": str(path)}
    try:
        given = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BandError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    if not isinstance(given, dict):
        raise BandError(f"{path}: expected a JSON object of train.py flags, got {type(given).__name__}")
    flags = train_defaults()
    known = set(CONFIG_KEYS) | set(RUN_KEYS) | set(HPARAM_KEYS) | {"dataset"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise BandError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    flags.update(given)
    for k in set(CONFIG_KEYS) | set(RUN_KEYS) - {"dtype"}:
        if not isinstance(flags[k], int) or isinstance(flags[k], bool) or flags[k] < (0 if k == "max_iters" else 1):
            raise BandError(f"{path}: {k} must be a {'non-negative' if k == 'max_iters' else 'positive'} "
                            f"integer, got {flags[k]!r}")
    if flags["dtype"] not in ("float32", "float64"):
        raise BandError(f"{path}: dtype must be float32 or float64, got {flags['dtype']!r}")
    return {"config": {k: flags[k] for k in CONFIG_KEYS}, "hparams": {k: flags[k] for k in HPARAM_KEYS},
            **{k: flags[k] for k in RUN_KEYS}, "data": None, "dataset": flags.get("dataset"),
            "source": str(path)}


def eval_steps(settings) -> list[int]:
    """The steps a run of these settings evaluates at (training.train: every eval_interval, and the last)."""
    n, every = settings["max_iters"], settings["eval_interval"]
    return sorted(set(range(0, n + 1, every)) | {n})


# ----------------------------------------------------------------------------- recording

def _one_seed(impl, dataset, settings, seed):
    """Worker: train one seed, return {step: val loss} and the wall time."""
    from nanoproof import env
    env.limit_blas_threads(1)
    from nanoproof.spec.contract import load_impl, load_reference
    from nanoproof.tools.data import load_meta
    from nanoproof.tools.training import make_config, train
    module = load_reference() if impl is None else load_impl(impl)
    meta = load_meta(dataset)
    config = make_config(meta, **settings["config"])
    t0 = time.perf_counter()
    res = train(module, dataset, config, settings["hparams"], max_iters=settings["max_iters"],
                batch_size=settings["batch_size"], eval_interval=settings["eval_interval"],
                eval_iters=settings["eval_iters"], seed=seed, dtype=settings["dtype"], progress=False)
    vals = {int(r["step"]): float(r["val_loss"]) for r in res.history if r["kind"] == "eval"}
    return vals, time.perf_counter() - t0


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(out, settings, dataset, seeds, impl=None, jobs=None, command="", log=print) -> dict:
    """Train every seed (in `jobs` processes), write the band file `out` atomically, return its attrs.
    impl: a contract file, or None for reference/ (the readable GPT-2, the shipped bands' source)."""
    from importlib.metadata import PackageNotFoundError, version
    from tqdm import tqdm
    from nanoproof import env
    from nanoproof.tools.data import DataError, load_meta
    try:
        meta = load_meta(dataset)
    except DataError as exc:
        raise BandError(str(exc)) from None
    data = {k: meta.get(k) for k in DATA_KEYS}
    if settings["data"] is not None and settings["data"] != data:
        diff = [k for k in DATA_KEYS if settings["data"].get(k) != data.get(k)]
        raise BandError(f"{dataset}: not the data the run in {settings['source']} trained on (differs in "
                        f"{', '.join(diff)}); pass its folder with --dataset")
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise BandError(f"a band needs at least 2 distinct seeds, got {seeds}")
    if impl is not None and not Path(impl).is_file():
        raise BandError(f"{impl}: no such implementation file")
    steps = eval_steps(settings)
    jobs = max(1, min(jobs or len(os.sched_getaffinity(0)), len(seeds)))
    log(f"recording a {len(seeds)}-seed band of {impl or 'reference/'} on {dataset}: "
        f"{settings['config']}, {settings['max_iters']} steps, {settings['dtype']}, {jobs} process(es)")
    rows, times = {}, {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool, \
            tqdm(total=len(seeds), desc="seeds", unit="run", file=sys.stderr, disable=None) as bar:
        futures = {pool.submit(_one_seed, impl, str(dataset), settings, s): s for s in seeds}
        for fut in futures:
            s = futures[fut]
            try:
                vals, times[s] = fut.result()
            except Exception as exc:   # the run's own one-line errors (TrainingError, ContractError ...)
                raise BandError(f"seed {s}: {type(exc).__name__}: {exc}") from None
            rows[s] = [vals[k] for k in steps]
            bar.update(1)
    wall = time.perf_counter() - t0
    group = f"numpy-{settings['dtype']}"
    values = np.array([rows[s] for s in seeds], dtype=np.float64)
    band = {"settings": {k: settings[k] for k in ("config", "hparams") + RUN_KEYS}, "data": data,
            "dataset": str(Path(dataset).resolve()), "seeds": seeds, "group": group,
            "impl": str(Path(impl).resolve()) if impl else "reference/",
            "impl_sha256": file_sha256(impl) if impl else None, "settings_from": settings["source"]}
    try:
        nanoproof_version = version("nanoproof")
    except PackageNotFoundError:
        nanoproof_version = "not installed"
    provenance = {"command": command, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "nanoproof": nanoproof_version, "wall_s": round(wall, 1),
                  "run_s": {str(s): round(t, 1) for s, t in times.items()},
                  "blas_kernel": env.blas_kernel(), "environment": env.describe("numpy")}
    attrs = {"kind": KIND, "band": band, "provenance": provenance}
    write_golden(out, attrs, {"val_loss/steps": np.array(steps, dtype=np.int64),
                              "val_loss/seeds": np.array(seeds, dtype=np.int64),
                              f"{group}/val_loss": values})
    last = values[:, -1]
    log(f"wrote {out}: val loss at step {steps[-1]}: mean {last.mean():.4f}, sigma {last.std(ddof=1):.4f} "
        f"over seeds {seeds} ({wall:.0f} s)")
    return attrs


# ----------------------------------------------------------------------------- reading

def load(path):
    """(Golden, band attrs) of a band file; BandError/GoldenError naming the file otherwise."""
    golden = read_golden(path, None, regen="-")
    band = golden.attrs.get("band")
    if golden.attrs.get("kind") != KIND or not isinstance(band, dict):
        raise BandError(f"{path}: not a band file (written by `nanoproof gate --record`); "
                        f"kind {golden.attrs.get('kind')!r}")
    group = band.get("group")
    if f"{group}/val_loss" not in golden.data:
        raise BandError(f"{path}: lacks {group}/val_loss")
    return golden, band


def run_mismatch(band, ckpt_meta) -> list[str]:
    """How a run's checkpoint settings differ from the band's ([] when they agree; max_iters may be
    longer: the band covers the steps it recorded)."""
    want = band["settings"]
    out = []
    for k in CONFIG_KEYS:
        if ckpt_meta["config"].get(k) != want["config"][k]:
            out.append(f"{k} {ckpt_meta['config'].get(k)} (band {want['config'][k]})")
    for k, v in want["hparams"].items():
        if ckpt_meta["hparams"].get(k) != v:
            out.append(f"{k} {ckpt_meta['hparams'].get(k)} (band {v})")
    for k in ("batch_size", "eval_interval", "eval_iters", "dtype"):
        if ckpt_meta.get(k) != want[k]:
            out.append(f"{k} {ckpt_meta.get(k)} (band {want[k]})")
    data = {k: ckpt_meta.get("data", {}).get(k) for k in DATA_KEYS}
    if data != band["data"]:
        out.append("the data (" + ", ".join(k for k in DATA_KEYS if data.get(k) != band["data"].get(k)) + ")")
    return out
