"""The score tier: val loss of a short float32 run of the score case (shakespeare-char) against the
reference's seed ensemble recorded in its golden file.

Two checks, both two-sided (an edit that lowers val loss also changed the model):
- band: |x - mean| <= band_sigmas * sigma + band_floor over the ensemble's val losses at the same
  step (sigma: sample standard deviation over the seeds);
- same seed: |x - the reference's val loss for verify's own seed| <= same_seed (float32 rounding drift
  between two implementations of the same function over the short run).
Skips, with the reason, where tiny Shakespeare is absent.
"""
import math
import time
from types import SimpleNamespace

import numpy as np

from nanoproof.runner.record import StageError, _call, backend_xp
from nanoproof.spec.cases import CaseDataError, golden_path, shakespeare_splits
from nanoproof.judge.report import Row, TierResult, fail_row
from nanoproof.golden.files import GoldenError, read_golden


def ensemble(golden, step, group="numpy-float32"):
    """(seeds, val losses at `step`) recorded in the score golden file."""
    steps = [int(s) for s in golden.data["val_loss/steps"]]
    if step not in steps:
        every = sorted({b - a for a, b in zip(steps, steps[1:])})
        spaced = f"every {every[0]} from {steps[0]} to {steps[-1]}" if len(every) == 1 else ", ".join(map(str, steps))
        raise GoldenError(f"{golden.path}: no val loss recorded at step {step}: the reference's seed band "
                          f"exists at steps {spaced}")
    return golden.data["val_loss/seeds"], golden.data[f"{group}/val_loss"][:, steps.index(step)]


def band(values, tol):
    mean, sigma = float(np.mean(values)), float(np.std(values, ddof=1))
    half = tol["score.band_sigmas"]["value"] * sigma + tol["score.band_floor"]["value"]
    return mean, sigma, half


def check(case, golden, observed, seed, step, tol, tier="score", same_run=True, group="numpy-float32"):
    """Rows for one observed val loss (used by verify and gate_val_loss). same_run: the number comes
    from the case's own run (its seed, float32 numpy): then it must also match the reference's run of
    that seed within score.same_seed; a number from any other run is held to the band alone.
    group: the recording to compare with (a band file of `gate --record` holds numpy-<its dtype>)."""
    seeds, values = ensemble(golden, step, group)
    mean, sigma, half = band(values, tol)
    rows = []
    r = Row(tier, "score", f"val loss vs {len(values)}-seed band", step, (), metric="sigma",
            max_abs=abs(observed - mean), err=abs(observed - mean) / sigma if sigma > 0 else math.inf,
            tol=tol["score.band_sigmas"]["value"], entry="score.band_sigmas", value=observed)
    lo, hi = mean - half, mean + half
    r.note = f"observed {observed:.4f}, expected band [{lo:.4f}, {hi:.4f}] (mean {mean:.4f}, sigma {sigma:.4f})"
    if not (lo <= observed <= hi):  # NaN fails
        r.verdict = "FAIL"
    rows.append(r)
    if same_run and seed in list(seeds):
        ref = float(values[list(seeds).index(seed)])
        d = abs(observed - ref)
        r2 = Row(tier, "score", f"val loss vs reference seed {seed}", step, (), metric="abs",
                 max_abs=d, err=d, tol=tol["score.same_seed"]["value"], entry="score.same_seed", value=observed)
        r2.note = f"observed {observed:.5f}, reference {ref:.5f}"
        if not (d <= r2.tol):
            r2.verdict = "FAIL"
        rows.append(r2)
    return rows


def load(case, golden_dir=None):
    return read_golden(golden_path(case.name, golden_dir), case)


def data_for(case, golden):
    """(train, val) or raises CaseDataError (absent file) / GoldenError (different data)."""
    train, val, sha = shakespeare_splits()
    want = golden.group_attrs("val_loss").get("data_sha256")
    if want != sha:
        raise GoldenError(f"{golden.path}: recorded on a different tiny Shakespeare (sha256 "
                          f"{str(want)[:12]}..., this one {sha[:12]}...); regenerate it with: "
                          f"python scripts/regen_golden.py --case {case.name} --force")
    return train, val


def score_spec(case, seed, steps, backend="numpy-float32"):
    return {"config": case.config, "hparams": case.hparams, "batch_size": case.batch_size,
            "eval_interval": case.eval_interval, "eval_iters": case.eval_iters, "seed": seed,
            "steps": steps, "eval_steps": [steps], "backend": backend}


def score_tier(impl, case, tol, golden_dir=None, steps=None, seed=None):
    """impl: a file path (run in a worker process), or a module / runner (nanoproof.judge.tiers.subject)."""
    from nanoproof.judge.tiers import run_job, subject
    t0 = time.perf_counter()
    res = TierResult("score", case.name)
    steps = case.short_steps if steps is None else steps
    seed = case.verify_seed if seed is None else seed
    try:
        golden = load(case, golden_dir)
        train, val = data_for(case, golden)
        ensemble(golden, steps)
    except CaseDataError as exc:
        res.skipped = str(exc)
        return res
    except GoldenError as exc:
        res.rows = [fail_row("score", "golden", "golden file", str(exc))]
        return res
    job = run_job(subject(impl), "score", score_spec(case, seed, steps), {"train": train, "val": val},
                  res, "score")
    if job is None:
        return res
    if "score" in job.errors:
        exc = job.errors["score"]
        res.rows = [fail_row("score", "score", f"{exc.stage}()", exc.message, step=exc.step)]
        return res
    value = job.results.get(f"val_loss@{steps}")
    if value is None or np.ndim(value) != 0:
        res.rows = [fail_row("score", "score", "short run", "no val loss came back", step=steps)]
        return res
    res.rows = check(case, golden, float(value), seed, steps, tol)
    res.info = f"float32, seed {seed}, {steps} steps"
    res.seconds = time.perf_counter() - t0
    return res


# ----------------------------------------------------------------------------- the run (in a worker)

def score_run(module, case, train, val, seed, steps, xp, dtype="float32", eval_steps=None):
    """Train `steps` updates (init seed = seed, batches from Generator(PCG64([seed, 1])), the
    convention of impl/gpt2.py's train and harness/tools/training.py) and return {step: val loss} at
    every step in eval_steps (default: multiples of eval_interval and the last). Val loss: the mean
    loss of eval_iters batches drawn from a fresh Generator(PCG64([seed, 2])) at every evaluation."""
    cfg, hp, B, T = case.config, case.hparams, case.batch_size, case.config["block_size"]
    if eval_steps is None:
        eval_steps = sorted(set(range(0, steps + 1, case.eval_interval)) | {steps})
    params = {k: xp.asarray(v) for k, v in
              _call("init", None, module.init, cfg, seed, xp, dtype).items()}
    state, rng, out = {}, np.random.Generator(np.random.PCG64([seed, 1])), {}

    def evaluate(step):
        erng = np.random.Generator(np.random.PCG64([seed, 2]))
        losses = []
        for _ in range(case.eval_iters):
            x, y = _call("get_batch", step, module.get_batch, val, B, T, erng)
            losses.append(float(_call("forward", step, module.forward, params, xp.asarray(x),
                                      xp.asarray(y), cfg)[0]))
        return sum(losses) / len(losses)

    for s in range(steps + 1):
        if s in eval_steps:
            out[s] = evaluate(s)
        if s == steps:
            break
        x, y = _call("get_batch", s, module.get_batch, train, B, T, rng)
        loss, cache = _call("forward", s, module.forward, params, xp.asarray(x), xp.asarray(y), cfg)
        grads = _call("backward", s, module.backward, params, cache, cfg)
        _call("adamw_step", s, module.adamw_step, params, grads, state, s,
              _call("lr_at", s, module.lr_at, s, hp), hp)
    return out


def score_job(module, spec, inputs):
    """The score case's short run: {"val_loss@<step>": float64} at spec["eval_steps"]."""
    xp, dtype = backend_xp(spec["backend"])
    try:
        out = score_run(module, SimpleNamespace(**spec), inputs["train"], inputs["val"], spec["seed"], spec["steps"], xp,
                        dtype, spec["eval_steps"])
    except StageError as exc:
        return {}, {"score": exc}, {}
    return {f"val_loss@{s}": np.float64(v) for s, v in out.items()}, {}, {}
