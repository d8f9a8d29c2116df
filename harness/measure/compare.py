"""`nanoproof compare A.py B.py`: when the function changes on purpose, is B's score better, worse or
indistinguishable from A's, and how much faster is it? (scripts/compare_scores.py is the command line.)

A single run cannot say: the seed-to-seed sigma of the baby GPT's val loss is ~0.01, and float32
rounding alone moves a 1000-step run by ~0.025. So each side is trained for n seeds, and the final val
losses are compared with the statistics of harness/measure/stats.py.

- Each side is a contract file with the training subset of the contract (harness/spec/contract.py,
  TRAINING_CONTRACT: init, forward, backward, adamw_step, lr_at, get_batch) and its settings; both
  may be the same file with different settings (`--b-set learning_rate=1e-4`).
- Seed s of either side is a run of harness/tools/training.py's `train` with seed s: init from s and
  training batches from PCG64([s, 1]), so the two runs of a pair see the same batches when their
  block_size and batch_size agree (the comparison says when they do not), and the same evaluation
  batches (PCG64([s, 2])) always.
- Runs go to `<out_dir>/runs/<file stem>-<hash>/seed<s>/` (log.jsonl, ckpt.npz, run.json), where the
  hash covers the file's content and every setting but the seed: an interrupted comparison continues
  from each run's last checkpoint (bit-identically, training.py's resume), a finished run is read back,
  not retrained, and comparisons that share a side (GPT vs RNN, GPT vs a variant) share its runs. An
  edited file gets new runs.
- Runs go to a pool of `jobs` spawned worker processes, each on one BLAS thread, A and B interleaved
  (A0, B0, A1, B1, ...) so both sides meet the same contention.
- Speed is measured apart from the runs, by a timing run that alternates the two sides' training
  steps in one process (A, B, A, B, ...): both meet the same load, whatever else the machine runs,
  which runs made minutes apart (or shared with another comparison) do not. Its median ms per step
  gives the speed ratio, a paired t-test over the alternated steps its p-value; it is kept in
  `<out_dir>/timing/`, so a rerun finds the same numbers.
- Same step budget (default) or same wall-clock budget (`time_budget`): each side trains for
  budget / (its ms per step in the timing run) steps, its learning-rate decay ending there. The budget
  counts training steps, not evaluations.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nanoproof.measure import stats
from nanoproof.spec.contract import CONFIG_KEYS, HPARAM_KEYS, TRAINING_CONTRACT, ContractError, load_impl

SCHEMA_VERSION = 1
RUN_NAME = "run.json"

# nanoGPT's "baby GPT on CPU" (scripts/train.py's defaults); lr_decay_iters None: = the side's max_iters
BABY_CONFIG = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
BABY_HPARAMS = {"learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "lr_decay_iters": None,
                "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "grad_clip": 1.0}
RUN_KEYS = ("batch_size",)
SETTABLE = tuple(k for k in CONFIG_KEYS if k != "vocab_size") + HPARAM_KEYS + RUN_KEYS
INT_KEYS = {"n_layer", "n_head", "n_embd", "block_size", "warmup_iters", "lr_decay_iters", "batch_size"}
CALIBRATION_SKIP = 5     # the first steps of a run (allocation, caches) are not timed


class CompareError(Exception):
    """A comparison that cannot run: one line naming the file, flag or run, meant for the user."""


# ----------------------------------------------------------------------------- settings

def parse_sets(items, flag):
    """["learning_rate=1e-4", "n_layer=2"] -> {"learning_rate": 1e-4, "n_layer": 2}; CompareError
    naming the flag for an unknown key or a bad value."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise CompareError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} learning_rate=1e-4")
        if key not in SETTABLE:
            raise CompareError(f"{flag} {item!r}: unknown key {key!r} (expected one of {', '.join(SETTABLE)})")
        try:
            v = int(value) if key in INT_KEYS else float(value)
        except ValueError:
            kind = "an integer" if key in INT_KEYS else "a number"
            raise CompareError(f"{flag} {item!r}: {key} must be {kind}, got {value!r}") from None
        if (key in INT_KEYS and v < (0 if key == "warmup_iters" else 1)) or (key not in INT_KEYS and not math.isfinite(v)):
            raise CompareError(f"{flag} {item!r}: {key} must be {'a positive integer' if key in INT_KEYS else 'finite'}, got {value!r}")
        out[key] = v
    return out


@dataclass
class Side:
    """One side of a comparison: a contract file and its settings (max_iters None until a time budget
    is converted to steps)."""
    label: str                  # "A" / "B"
    impl: Path
    config: dict
    hparams: dict
    batch_size: int
    seeds: list
    max_iters: int | None = None
    sha256: str = ""
    eval_interval: int | None = None
    calibration: dict | None = None   # time-budget mode: the timing run's result

    @property
    def name(self):
        return str(self.impl)

    def settings(self):
        """Everything a run depends on but its seed (and the file's content)."""
        return {"config": self.config, "hparams": self.resolved_hparams(), "batch_size": self.batch_size,
                "max_iters": self.max_iters}

    def resolved_hparams(self):
        hp = dict(self.hparams)
        if hp.get("lr_decay_iters") is None:
            hp["lr_decay_iters"] = max(1, self.max_iters or 1)
        return hp


def settings_diff(a: Side, b: Side):
    """["learning_rate 0.001 -> 0.0001", ...]: the settings in which B differs from A."""
    sa, sb = {**a.config, **a.resolved_hparams(), "batch_size": a.batch_size}, \
        {**b.config, **b.resolved_hparams(), "batch_size": b.batch_size}
    return [f"{k} {sa.get(k)!r} -> {sb.get(k)!r}" for k in sa if sa.get(k) != sb.get(k)]


def make_sides(impl_a, impl_b, *, sets=(), a_sets=(), b_sets=(), seeds=5, seed0=1337, b_seed_offset=0,
               batch_size=12, max_iters=None):
    """The two sides from the command line; CompareError for a missing or contract-breaking file, a
    bad KEY=VALUE."""
    common = parse_sets(sets, "--set")
    per = {"A": parse_sets(a_sets, "--a-set"), "B": parse_sets(b_sets, "--b-set")}
    out = []
    for label, impl in (("A", impl_a), ("B", impl_b)):
        path = Path(impl)
        if not path.is_file():
            raise CompareError(f"side {label}: {path}: no such contract file")
        load_impl(path, required=TRAINING_CONTRACT)   # fails early, with the contract's message
        s = {**BABY_CONFIG, **BABY_HPARAMS, "batch_size": batch_size, **common, **per[label]}
        config = {k: s[k] for k in CONFIG_KEYS if k in s}
        if config["n_embd"] % config["n_head"]:
            raise CompareError(f"side {label}: n_embd {config['n_embd']} is not divisible by n_head "
                               f"{config['n_head']} (set both with --set/--{label.lower()}-set)")
        offset = b_seed_offset if label == "B" else 0
        out.append(Side(label, path, config, {k: s[k] for k in HPARAM_KEYS}, int(s["batch_size"]),
                        [seed0 + offset + i for i in range(seeds)], max_iters,
                        sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    return out


def batches_paired(a: Side, b: Side):
    """Whether seed i of A and seed i of B draw the same training batches: same seeds, block_size and
    batch_size (the batch stream is PCG64([seed, 1]) through the contract's get_batch)."""
    return a.seeds == b.seeds and a.config["block_size"] == b.config["block_size"] \
        and a.batch_size == b.batch_size


def default_eval_interval(max_iters):
    return max(1, max_iters // 10)


def run_dir(out_dir, side: Side, data_sha, dtype, eval_interval, eval_iters):
    """<out_dir>/runs/<stem>-<hash>: the hash covers the file's content and every setting but the seed."""
    key = json.dumps({"impl_sha256": side.sha256, **side.settings(), "dtype": dtype, "data": data_sha,
                      "eval_interval": eval_interval, "eval_iters": eval_iters}, sort_keys=True)
    return Path(out_dir) / "runs" / f"{side.impl.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


# ----------------------------------------------------------------------------- one run (in a worker)

def _pin_worker():
    from nanoproof import env
    env.pin()                  # for what the worker starts; numpy already saw the parent's pinned env
    env.limit_blas_threads(1)
    env.keep_freed_memory()    # no page fault per freed temporary (as `nanoproof train` does)


def run_one(spec):
    """Train (or resume, or read back) one seed of one side. Runs in a worker process; returns a plain
    dict: the run's summary, or {"error": one line}."""
    _pin_worker()
    from nanoproof.tools.checkpoints import CKPT_NAME, TrainingError
    from nanoproof.tools.data import DataError
    from nanoproof.tools.training import train
    import numpy as np
    out_dir = Path(spec["out_dir"]) if spec.get("out_dir") else None
    where = f"side {spec['label']} ({spec['impl']}), seed {spec['seed']}"
    t0 = time.perf_counter()
    try:
        module = load_impl(spec["impl"], required=TRAINING_CONTRACT)
        resume = out_dir is not None and (out_dir / CKPT_NAME).is_file()
        result = train(module, spec["data_dir"], spec["config"], spec["hparams"], max_iters=spec["max_iters"],
                       batch_size=spec["batch_size"], eval_interval=spec["eval_interval"],
                       eval_iters=spec["eval_iters"], seed=spec["seed"], xp=np, dtype=spec["dtype"],
                       out_dir=out_dir, resume=resume, progress=False)
    except (ContractError, TrainingError, DataError) as e:
        return {"error": f"{where}: {e}"}
    except Exception as e:   # the code under comparison raised: its message, one line
        msg = " ".join(str(e).split())
        return {"error": f"{where}: training raised {type(e).__name__}: {msg}"[:500]}
    wall = time.perf_counter() - t0
    iters = [r for r in result.history if r["kind"] == "iter"]
    trained = result.resumed_from is None or result.resumed_from < result.step
    prev = {}
    if out_dir is not None and (out_dir / RUN_NAME).is_file():
        try:
            prev = json.loads((out_dir / RUN_NAME).read_text())
        except (OSError, ValueError):
            prev = {}
    wall_s = (prev.get("wall_s", 0.0) if result.resumed_from is not None else 0.0) + (wall if trained else 0.0)
    made = [time.time() - wall, time.time()] if trained else prev.get("made")
    summary = {"label": spec["label"], "seed": spec["seed"], "val_loss": float(result.val_loss),
               "train_loss": float(result.train_loss), "steps": result.step,
               "ms_per_iter": statistics.median(r["ms"] for r in iters[CALIBRATION_SKIP:] or iters) if iters else None,
               "train_s": sum(r["ms"] for r in iters) / 1000.0, "wall_s": wall_s,
               "params": int(sum(int(np.prod(np.shape(p))) for p in result.params.values())),
               "curve": [[r["step"], r["val_loss"]] for r in result.history if r["kind"] == "eval"],
               "resumed_from": result.resumed_from, "trained": trained, "made": made,
               "out_dir": None if out_dir is None else str(out_dir)}
    if out_dir is not None and trained:
        from nanoproof.paths import atomic_write_bytes
        atomic_write_bytes(out_dir / RUN_NAME, (json.dumps(
            {"wall_s": wall_s, "made": made,
             "note": "wall_s: time of the segments that finished (an interrupted one is lost); made: the "
                     "last segment's start and end (Unix time)"})
            + "\n").encode())
    return summary


def run_all(specs, jobs, progress=True, desc="runs", fn=None):
    """Run the specs on `jobs` spawned worker processes (in this process when jobs is 1); returns the
    summaries in the specs' order. A tqdm bar on stderr, only on a TTY."""
    from tqdm import tqdm
    bar = tqdm(total=len(specs), desc=desc, unit="run", file=sys.stderr, disable=None if progress else True,
               dynamic_ncols=True)
    fn = fn or run_one
    results = [None] * len(specs)
    try:
        if jobs <= 1 or len(specs) == 1:   # one job: no pool to wait for, but still its own process
            if len(specs) == 1 and jobs > 1:
                return [_in_worker(fn, specs[0])]
            for i, spec in enumerate(specs):
                results[i] = fn(spec)
                bar.update(1)
            return results
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from nanoproof import env
        os.environ.update(env.PINNED)   # the workers' numpy sees one BLAS thread from its start
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(fn, spec): i for i, spec in enumerate(specs)}
            try:
                for f in as_completed(futures):
                    results[futures[f]] = f.result()
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return results
    finally:
        bar.close()


def _in_worker(fn, spec):
    """fn(spec) in one spawned worker process (its BLAS pinned from the start)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from nanoproof import env
    os.environ.update(env.PINNED)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, spec).result()


# ----------------------------------------------------------------------------- a comparison

@dataclass
class Comparison:
    sides: list
    runs: dict                       # label -> list of run summaries, in seed order
    paired_batches: bool
    mode: str                        # "steps" or "time"
    time_budget: float | None
    alpha: float
    resolve: float | None
    seconds: float = 0.0
    dtype: str = "float32"
    timing: dict = field(default_factory=dict)   # measure_speed's result: the speed verdict
    notes: list = field(default_factory=list)

    def finals(self, label):
        return [r["val_loss"] for r in self.runs[label]]

    def analyse(self):
        a, b = self.finals("A"), self.finals("B")
        self.summary = {lab: stats.describe(self.finals(lab), f"side {lab}") for lab in ("A", "B")}
        same_seeds = self.sides[0].seeds == self.sides[1].seeds
        self.paired = stats.paired(a, b, self.alpha) if same_seeds else None
        self.welch = stats.welch(a, b, self.alpha)
        self.primary = self.paired if self.paired is not None else self.welch
        self.verdict = stats.verdict(self.primary, self.alpha, self.resolve)
        ms = {lab: [r["ms_per_iter"] for r in self.runs[lab]] for lab in ("A", "B")}
        self.ms = {lab: statistics.mean(v) for lab, v in ms.items()}
        self.wall = {lab: statistics.mean(r["wall_s"] for r in self.runs[lab]) for lab in ("A", "B")}
        self.params = {lab: self.runs[lab][0]["params"] for lab in ("A", "B")}
        self.speedup = self.timing["ratio"]          # > 1: B takes fewer ms per step
        return self

    def speed_words(self):
        """"1.42x faster per step (p = 0.001)", or the same speed within the noise of the timing run."""
        r, p = self.speedup, self.timing["p"]
        if p >= self.alpha:
            return f"the same speed per step within the timing noise ({r:.2f}x A's steps per second, {stats.p_text(p)})"
        return (f"{r:.2f}x faster" if r > 1 else f"{1 / r:.2f}x slower") + f" per step ({stats.p_text(p)})"

    def line(self):
        """The verdict in words, speed included."""
        v = self.verdict.line
        if self.verdict.outcome == "identical":
            return v
        joint = " and " if self.verdict.outcome in ("better", "worse") and self.timing["p"] < self.alpha else "; B is "
        return f"{v}{joint}{self.speed_words()}"

    def as_dict(self):
        def side(s):
            return {"label": s.label, "impl": s.name, "sha256": s.sha256, "config": s.config,
                    "hparams": s.resolved_hparams(), "batch_size": s.batch_size, "max_iters": s.max_iters,
                    "seeds": s.seeds, "params": self.params[s.label], "calibration": s.calibration,
                    "val_loss": self.summary[s.label].as_dict(), "ms_per_iter": self.ms[s.label],
                    "wall_s": self.wall[s.label], "runs": self.runs[s.label]}
        return {"schema_version": SCHEMA_VERSION, "tool": "compare", "verdict": self.verdict.outcome,
                "summary": self.line(), "mode": self.mode, "time_budget_s": self.time_budget,
                "dtype": self.dtype, "alpha": self.alpha, "paired_batches": self.paired_batches,
                "primary_test": self.primary.kind,
                "tests": {"paired": None if self.paired is None else self.paired.as_dict(),
                          "welch": self.welch.as_dict()},
                "resolve": self.verdict.resolve, "needed_n": self.verdict.needed_n,
                "speed": {"ratio_a_over_b": self.speedup, "p": self.timing["p"],
                          "ms_per_iter": self.timing["ms"], "timing_iters": self.timing["iters"],
                          "wall_ratio_a_over_b": self.wall["A"] / self.wall["B"] if self.wall["B"] else None},
                "notes": self.notes, "seconds": round(self.seconds, 2),
                "sides": {s.label: side(s) for s in self.sides}}


def timing_job(spec):
    """Both sides' training steps alternated in one process (A, B, A, B, ...: the same load for both,
    whatever else the machine runs), from each side's init with the first seed; after `skip` untimed
    steps each, `iters` timed ones. Runs in a worker; returns {"A": [ms...], "B": [ms...]} or
    {"error": one line}."""
    _pin_worker()
    import numpy as np
    from nanoproof.tools.data import load_meta, load_split
    data = load_split(spec["data_dir"], "train")
    vocab = int(load_meta(spec["data_dir"])["vocab_size"])
    runs = []
    try:
        for s in spec["sides"]:
            where = f"side {s['label']} ({s['impl']}), timing run"
            module = load_impl(s["impl"], required=TRAINING_CONTRACT)
            config = {**s["config"], "vocab_size": vocab}
            params = module.init(config, spec["seed"], np, spec["dtype"])
            rng = np.random.Generator(np.random.PCG64([spec["seed"], 1]))
            runs.append((s, module, config, params, {}, rng, []))
        for step in range(spec["skip"] + spec["iters"]):
            for s, module, config, params, state, rng, ms in runs:
                where = f"side {s['label']} ({s['impl']}), timing run"
                t0 = time.perf_counter()
                lr = float(module.lr_at(step, s["hparams"]))
                x, y = module.get_batch(data, s["batch_size"], config["block_size"], rng)
                loss, cache = module.forward(params, x, y, config)
                grads = module.backward(params, cache, config)
                del cache
                module.adamw_step(params, grads, state, step, lr, s["hparams"])
                del grads
                if step >= spec["skip"]:
                    ms.append(1000.0 * (time.perf_counter() - t0))
    except ContractError as e:
        return {"error": str(e)}
    except Exception as e:   # the code under comparison raised
        return {"error": f"{where}: raised {type(e).__name__}: {' '.join(str(e).split())}"[:500]}
    return {r[0]["label"]: r[6] for r in runs}


def measure_speed(sides, data_dir, out_dir, *, dtype, iters, progress):
    """The two sides' ms per step, measured together (timing_job), kept in <out_dir>/timing/ for
    reruns: {"ms": {"A": median, "B": median}, "ratio": A/B, "p": paired t-test of log(A/B) over the
    alternated steps, "iters", "measured"}."""
    from nanoproof.paths import atomic_write_bytes
    key = json.dumps([{"impl_sha256": s.sha256, "config": s.config, "hparams": s.hparams,
                       "batch_size": s.batch_size} for s in sides] + [dtype, iters, sides[0].seeds[0]], sort_keys=True)
    path = Path(out_dir) / "timing" / f"{sides[0].impl.stem}-vs-{sides[1].impl.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if path.is_file():
        try:
            return {**json.loads(path.read_text()), "file": str(path)}
        except (OSError, ValueError):
            pass
    spec = {"data_dir": str(data_dir), "seed": sides[0].seeds[0], "dtype": dtype, "iters": iters,
            "skip": CALIBRATION_SKIP,
            "sides": [{"label": s.label, "impl": str(s.impl.resolve()), "config": s.config,
                       "hparams": {**s.resolved_hparams(), "lr_decay_iters": s.hparams["lr_decay_iters"]
                                   or CALIBRATION_SKIP + iters + 1},
                       "batch_size": s.batch_size} for s in sides]}
    r = run_all([spec], 2, progress, "timing", fn=timing_job)[0]
    if "error" in r:
        raise CompareError(r["error"])
    import numpy as np
    a, b = np.array(r["A"]), np.array(r["B"])
    logs = np.log(a / b)
    p = 1.0 if np.all(logs == logs[0]) and logs[0] == 0 else stats.paired(np.log(b), np.log(a)).p
    timing = {"ms": {"A": float(np.median(a)), "B": float(np.median(b))},
              "ratio": float(np.median(a) / np.median(b)), "p": p, "iters": iters,
              "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    atomic_write_bytes(path, (json.dumps(timing) + "\n").encode())
    return {**timing, "file": str(path)}


def compare(sides, data_dir, out_dir, *, max_iters=None, time_budget=None, eval_interval=None, eval_iters=20,
            dtype="float32", jobs=None, alpha=stats.ALPHA, resolve=None, timing_iters=40, progress=True,
            echo=None):
    """Train both sides for their seeds (resuming or reading back what out_dir holds), then analyse.
    Exactly one of max_iters and time_budget. Returns a Comparison; raises CompareError."""
    from nanoproof.tools.data import load_meta
    say = echo or (lambda msg: None)
    jobs = jobs or available_cores()
    t0 = time.perf_counter()
    data_sha = load_meta(data_dir).get("source_sha256")
    say(f"timing both sides together ({timing_iters} steps each, alternated in one process) ...")
    speed = measure_speed(sides, data_dir, out_dir, dtype=dtype, iters=timing_iters, progress=progress)
    say(f"  A {speed['ms']['A']:.1f} ms/step, B {speed['ms']['B']:.1f} ms/step ({speed['file']})")
    for s in sides:
        if time_budget is not None:
            s.calibration = {"ms_per_iter": speed["ms"][s.label], "iters": timing_iters, "file": speed["file"]}
            s.max_iters = max(1, int(time_budget * 1000.0 / speed["ms"][s.label]))
            say(f"  side {s.label}: {time_budget:g} s / {speed['ms'][s.label]:.1f} ms/step -> {s.max_iters} steps")
        else:
            s.max_iters = max_iters
    specs, folders = [], {}
    for s in sides:
        ei = eval_interval or default_eval_interval(s.max_iters)
        folders[s.label] = run_dir(out_dir, s, data_sha, dtype, ei, eval_iters)
        s.eval_interval = ei
    for i in range(len(sides[0].seeds)):   # A0, B0, A1, B1, ...: both sides meet the same contention
        for s in sides:
            seed = s.seeds[i]
            specs.append({"label": s.label, "impl": str(s.impl.resolve()), "data_dir": str(data_dir),
                          "config": s.config, "hparams": s.resolved_hparams(), "max_iters": s.max_iters,
                          "batch_size": s.batch_size, "eval_interval": s.eval_interval, "eval_iters": eval_iters,
                          "seed": seed, "dtype": dtype, "out_dir": str(folders[s.label] / f"seed{seed}")})
    done = sum(1 for sp in {sp["out_dir"]: sp for sp in specs}.values()
               if _finished(Path(sp["out_dir"]), sp["max_iters"]))
    for s in sides:
        say(f"side {s.label}: {folders[s.label]}")
    if done:
        say(f"{done} of {len({sp['out_dir'] for sp in specs})} runs already finished there (read back, not retrained)")
    unique = list({sp["out_dir"]: sp for sp in specs}.values())   # A = B: one run serves both sides
    by_dir = dict(zip((sp["out_dir"] for sp in unique), run_all(unique, jobs, progress)))
    results = [{**by_dir[sp["out_dir"]], "label": sp["label"]} for sp in specs]
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise CompareError(errors[0] + (f" (and {len(errors) - 1} more failing runs)" if len(errors) > 1 else ""))
    for r in results:
        if not math.isfinite(r["val_loss"]):
            raise CompareError(f"side {r['label']}, seed {r['seed']}: val loss is {r['val_loss']} "
                               f"(training diverged; lower its learning rate with --{r['label'].lower()}-set "
                               f"learning_rate=...); run log in {r['out_dir']}")
    runs = {lab: [r for r in results if r["label"] == lab] for lab in ("A", "B")}
    paired = batches_paired(*sides)
    c = Comparison(sides, runs, paired, "time" if time_budget is not None else "steps", time_budget, alpha,
                   resolve, dtype=dtype, timing=speed)
    a, b = sides
    if len(unique) < len(specs):
        c.notes.append("A and B are the same file with the same settings and seeds: each run was made once "
                       "and serves both sides")
    if a.seeds != b.seeds:
        c.notes.append("the sides use different seeds: runs are not paired, Welch's t-test decides")
    elif not paired:
        c.notes.append(f"block_size or batch_size differ (A: {a.config['block_size']}, {a.batch_size}; "
                       f"B: {b.config['block_size']}, {b.batch_size}): pairs share init seeds but not "
                       f"batches")
    if a.max_iters != b.max_iters and paired:
        c.notes.append(f"step counts differ (A {a.max_iters}, B {b.max_iters}): same batches up to the "
                       f"shorter run")
    c.analyse()
    made = {lab: [r["made"] for r in runs[lab] if r.get("made")] for lab in ("A", "B")}
    if made["A"] and made["B"] and (max(m[0] for m in made["A"]) > max(m[1] for m in made["B"])
                                    or max(m[0] for m in made["B"]) > max(m[1] for m in made["A"])):
        c.notes.append("the runs of A and B were made at different times (shared with another comparison, or "
                       "resumed): their ms/step and wall s are not comparable; the speed verdict is the timing "
                       "run's, which alternates both sides in one process")
    for s in sides if time_budget is not None else ():
        ran, timed = c.ms[s.label], s.calibration["ms_per_iter"]
        if abs(ran / timed - 1) > 0.25:
            c.notes.append(f"side {s.label} ran at {ran:.1f} ms/step, the timing run said {timed:.1f}: "
                           f"the machine's load changed; the budgets in steps follow the timing run's ratio")
    c.seconds = time.perf_counter() - t0
    return c


def _finished(out_dir: Path, max_iters):
    """Whether a run's checkpoint is at max_iters already (a cheap look at the meta only)."""
    path = out_dir / "ckpt.npz"
    if not path.is_file():
        return False
    try:
        from nanoproof.tools.checkpoints import load_checkpoint
        return load_checkpoint(path)[2]["step"] == max_iters
    except Exception:
        return False


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- printing and the plot

def _fmt(x, d=4):
    return "-" if x is None else f"{x:.{d}f}"


def _params(n):
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def report_lines(c: Comparison):
    """The table, the differences, speed and the verdict, in few lines."""
    names = {s.label: s.name for s in c.sides}
    w = max(len(n) for n in names.values())
    head = (f"{'side':4}  {'file':{w}}  {'steps':>5}  {'runs':>4}  {'val mean':>8}  {'std':>6}  {'min':>6}  "
            f"{'max':>6}  {'ms/step':>7}  {'wall s':>6}  {'params':>7}")
    lines = [head]
    for s in c.sides:
        m = c.summary[s.label]
        lines.append(f"{s.label:4}  {s.name:{w}}  {s.max_iters:>5}  {m.n:>4}  {m.mean:>8.4f}  {m.std:>6.4f}  "
                     f"{m.min:>6.4f}  {m.max:>6.4f}  {c.ms[s.label]:>7.1f}  {c.wall[s.label]:>6.1f}  "
                     f"{_params(c.params[s.label]):>7}")
    t = c.primary
    how = "paired by seed" if t.kind == "paired" else "unpaired"
    lines.append(f"B - A ({how}, n = {t.n}): {t.diff:+.4f}, 95% CI [{t.ci_low:+.4f}, {t.ci_high:+.4f}], "
                 f"sd {t.sd:.4f}, effect size {'d_z' if t.kind == 'paired' else 'd'} "
                 f"{_effect(t.effect)}; " + "; ".join(
                     f"{x.kind} t-test {stats.p_text(x.p)}" for x in (c.paired, c.welch) if x is not None))
    t = c.timing
    lines.append(f"speed (timing run, {t['iters']} steps each, alternated): A {t['ms']['A']:.1f} ms/step, "
                 f"B {t['ms']['B']:.1f} ms/step: B is {c.speed_words()}; wall per run A {c.wall['A']:.1f} s, "
                 f"B {c.wall['B']:.1f} s")
    diff = settings_diff(*c.sides)
    if diff:
        lines.append("settings: B differs from A in " + ", ".join(diff))
    lines += [f"note: {n}" for n in c.notes]
    lines.append(f"verdict: {c.line()}")
    return lines


def _effect(e):
    return str(e) if not math.isfinite(e) else f"{e:+.2f}"


def plot(c: Comparison, path):
    """A PNG: left, each side's val loss against step (mean over seeds, band ± 1 sd, thin line per
    seed); right, the final val loss per seed of both sides joined per pair, or (unpaired) each
    side's runs, with the means; titled with the verdict."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from nanoproof.paths import atomic_write_bytes
    import io

    fig = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax_d = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for i, s in enumerate(c.sides):
        color = f"C{i}"
        curves = [np.array(r["curve"], dtype=float) for r in c.runs[s.label]]
        if c.mode == "time":   # same wall-clock budget: against training time, steps x ms/step
            for cv in curves:
                cv[:, 0] *= c.timing["ms"][s.label] / 1000.0
        steps = curves[0][:, 0]
        vals = np.array([cv[:, 1] for cv in curves if len(cv) == len(steps)])
        for cv in curves:
            ax.plot(cv[:, 0], cv[:, 1], color=color, lw=0.6, alpha=0.25)
        mean, sd = vals.mean(axis=0), vals.std(axis=0, ddof=1) if len(vals) > 1 else 0 * vals[0]
        extra = ", ".join(settings_diff(*c.sides)) if s.label == "B" else ""
        ax.plot(steps, mean, color=color, lw=2, label=f"{s.label}: {s.name}{' (' + extra + ')' if extra else ''}, "
                                                      f"final {c.summary[s.label].mean:.4f}")
        ax.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.2)
    ax.set_xlabel("training time, s (steps x the side's ms/step in the timing run)" if c.mode == "time" else "step")
    ax.set_ylabel("val loss (mean over seeds, band ± 1 sd)")
    lo = min(c.summary[lab].min for lab in ("A", "B"))
    # the y range of the curves after their first fifth: the drop from ln(vocab) would flatten the rest
    hi = max(max(cv[1] for cv in r["curve"][max(1, len(r["curve"]) // 5):] or r["curve"])
             for lab in ("A", "B") for r in c.runs[lab])
    ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    a, b = c.finals("A"), c.finals("B")
    if c.paired is not None:
        d = np.array(b) - np.array(a)
        seeds = [str(s) for s in c.sides[0].seeds]
        ax_d.axhline(0, color="k", lw=0.8)
        ax_d.axhspan(c.paired.ci_low, c.paired.ci_high, color="C2", alpha=0.2, label="95% CI of the mean")
        ax_d.axhline(c.paired.diff, color="C2", lw=1.5, label=f"mean {c.paired.diff:+.4f}")
        ax_d.plot(range(len(d)), d, "o", color="C3", label="B - A per seed")
        ax_d.set_xticks(range(len(d)), seeds, rotation=45, fontsize=8)
        ax_d.set_xlabel("seed")
        ax_d.set_ylabel("final val loss, B - A (< 0: B better)")
    else:
        for i, (lab, xs) in enumerate((("A", a), ("B", b))):
            ax_d.plot([i] * len(xs), xs, "o", color=f"C{i}", alpha=0.7)
            ax_d.hlines(np.mean(xs), i - 0.2, i + 0.2, color=f"C{i}", lw=2)
        ax_d.set_xticks([0, 1], ["A", "B"])
        ax_d.set_ylabel("final val loss per run (bar: mean)")
    ax_d.grid(alpha=0.3)
    if ax_d.get_legend_handles_labels()[0]:
        ax_d.legend(fontsize=8)
    words = c.line()
    fig.suptitle(f"{c.sides[0].name} (A) vs {c.sides[1].name} (B)\n{_wrap(words, 130)}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _wrap(text, width):
    import textwrap
    return "\n".join(textwrap.wrap(text, width))
