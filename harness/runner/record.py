"""Drive any contract module (reference/, impl/gpt2.py, a user's file) on a golden case and collect
what the golden files hold: sampler output, lr schedule, initial params, activations and loss at
step 0, gradients, and a K-step trajectory (loss, lr, grad norm per step; params at checkpoints);
for the generate case, the tokens and step logits of `generate`.

Every stage takes its inputs from the golden file (params0, the recorded batches), not from the
module's earlier stages, so a slip is attributed to the stage that has it: a sampler bug fails the
sampler check and nothing else, an init bug fails init only.

A module that raises is reported as a StageError naming the stage (the user's file, not ours).
"""
from types import SimpleNamespace

import numpy as np

from nanoproof.spec.contract import activation_names

class StageError(Exception):
    """The module raised (or returned something unusable) in one stage of a run."""

    def __init__(self, stage, step, message):
        super().__init__(f"{stage}{'' if step is None else f' (step {step})'}: {message}")
        self.stage, self.step, self.message = stage, step, message


def to_host(a):
    """numpy copy of an array from any backend (cupy arrays have .get())."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        a = a.get()
    return np.array(a, copy=True)


def _call(stage, step, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (Exception, SystemExit) as exc:   # SystemExit: a leftover exit() in the code under test
        hint = " (an exit() or sys.exit() in the code under test?)" if isinstance(exc, SystemExit) else ""
        raise StageError(stage, step, f"raised {type(exc).__name__}: {exc}{hint}") from exc


def _dev(xp, a):
    """A fresh device copy of a host input: the code under test may write into what it is given."""
    return xp.asarray(np.array(a, copy=True))


def backward_order(param_names):
    """Gradients in backward order: the reverse of the forward (state-dict) order."""
    return list(reversed(list(param_names)))


def run_sampler(module, tokens, batch_size, block_size, seed, calls):
    """`calls` successive get_batch draws from one Generator(PCG64(seed)): (x, y) of shape (calls, B, T)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    xs, ys = [], []
    for s in range(calls):
        out = _call("get_batch", s, module.get_batch, np.array(tokens, copy=True), batch_size, block_size, rng)
        try:
            x, y = out
            xs.append(np.asarray(to_host(x)))
            ys.append(np.asarray(to_host(y)))
        except Exception as exc:
            raise StageError("get_batch", s, f"did not return (x, y) arrays: {exc}") from exc
    try:
        return np.stack(xs), np.stack(ys)
    except ValueError as exc:
        raise StageError("get_batch", None, f"batches of different shapes: {exc}") from exc


def run_lr(module, hparams, n):
    out = []
    for s in range(n):
        lr = _call("lr_at", s, module.lr_at, s, hparams)
        try:
            out.append(float(lr))
        except (TypeError, ValueError) as exc:
            raise StageError("lr_at", s, f"returned {lr!r}, not a number") from exc
    return np.array(out, dtype=np.float64)


def run_init(module, config, seed, xp, dtype):
    params = _call("init", None, module.init, config, seed, xp, dtype)
    if not isinstance(params, dict):
        raise StageError("init", None, f"returned {type(params).__name__}, not a dict of arrays")
    return {k: to_host(v) for k, v in params.items()}


def device_params(params0, xp, dtype):
    return {k: xp.asarray(np.asarray(v).astype(dtype)) for k, v in params0.items()}


def run_step0(module, config, params0, x, y, xp, dtype):
    """Forward and backward on one batch from the given params. Returns
    {"activations": {canonical name: host array} (forward order, those the module provides),
     "loss": float, "grads": {name: host array} (backward order), "extra_grads": [...]}."""
    params = device_params(params0, xp, dtype)
    out = _call("forward", 0, module.forward, params, _dev(xp, x), _dev(xp, y), config)
    try:
        loss, cache = out
        loss = float(loss)
    except Exception as exc:
        raise StageError("forward", 0, f"did not return (loss, cache): {exc}") from exc
    acts = {n: to_host(cache[n]) for n in activation_names(config["n_layer"]) if n in cache}
    try:
        grads = _call("backward", 0, module.backward, params, cache, config)
    except StageError as exc:   # forward's results still count
        exc.partial = {"activations": acts, "loss": loss}
        raise
    if not isinstance(grads, dict):
        raise StageError("backward", 0, f"returned {type(grads).__name__}, not a dict of arrays")
    order = backward_order(params0)
    host_grads = {k: to_host(grads[k]) for k in order if k in grads}
    return {"activations": acts, "loss": loss, "grads": host_grads,
            "extra_grads": sorted(set(grads) - set(params0))}


def run_trajectory(module, config, hparams, params0, xs, ys, steps, checkpoints, xp, dtype):
    """`steps` training steps from params0 on the given batches (xs[s], ys[s] at step s), with the
    module's own lr_at and adamw_step. Returns {"loss", "lr", "grad_norm": float64 (steps,),
    "params": {k: {name: host array}} for k in checkpoints (params after k updates)}."""
    params = device_params(params0, xp, dtype)
    state = {}
    losses, lrs, norms, snaps = [], [], [], {}
    try:
        _trajectory_loop(module, config, hparams, params, state, xs, ys, steps, checkpoints, xp,
                         losses, lrs, norms, snaps)
    except StageError as exc:  # keep what was done before the failing step
        exc.partial = {"loss": np.array(losses), "lr": np.array(lrs[:len(losses)]),
                       "grad_norm": np.array(norms), "params": snaps}
        raise
    return {"loss": np.array(losses), "lr": np.array(lrs), "grad_norm": np.array(norms),
            "params": snaps, "state_dtypes": {k: str(getattr(v, "dtype", type(v).__name__))
                                              for k, v in state.items()}}


def _trajectory_loop(module, config, hparams, params, state, xs, ys, steps, checkpoints, xp,
                     losses, lrs, norms, snaps):
    for s in range(steps):
        lr = _call("lr_at", s, module.lr_at, s, hparams)
        out = _call("forward", s, module.forward, params, _dev(xp, xs[s]), _dev(xp, ys[s]), config)
        try:
            loss, cache = out
            loss = float(loss)
        except Exception as exc:
            raise StageError("forward", s, f"did not return (loss, cache): {exc}") from exc
        grads = _call("backward", s, module.backward, params, cache, config)
        norm = _call("adamw_step", s, module.adamw_step, params, grads, state, s, lr, hparams)
        try:
            norm = float(norm)
        except (TypeError, ValueError) as exc:
            raise StageError("adamw_step", s, f"returned {norm!r}, not the gradient norm") from exc
        losses.append(loss), lrs.append(float(lr)), norms.append(norm)
        if s + 1 in checkpoints:
            snaps[s + 1] = {k: to_host(v) for k, v in params.items()}


def record_trajectory_case(module, case, tokens, params0, xs, ys, xp, dtype, steps=None):
    """Everything a backend/dtype group of a trajectory golden file holds (see golden/README.md)."""
    steps = case.steps if steps is None else steps
    checkpoints = [k for k in case.checkpoints if k <= steps]
    step0 = run_step0(module, case.config, params0, xs[0], ys[0], xp, dtype)
    traj = run_trajectory(module, case.config, case.hparams, params0, xs, ys, steps, checkpoints,
                          xp, dtype)
    return {"step0": step0, "trajectory": traj}


# ----------------------------------------------------------------------------- generation

def run_generate(module, case, params0, xp, dtype, kv_cache):
    """The module's generate on a generate case, from the given params, once per run of the case:
    {run: {"tokens": int64 (B, steps), "logits": host (B, steps, V)}}, a row that ended at its stop
    token padded with -1. A run's `seed` becomes its rng = Generator(PCG64(seed)); its other entries
    are generate's keyword arguments."""
    params = device_params(params0, xp, dtype)
    prompts = [list(p) for p in case.prompts]
    out = {}
    for run, kwargs in case.runs.items():
        kwargs = dict(kwargs)
        seed = kwargs.pop("seed", None)
        rng = None if seed is None else np.random.Generator(np.random.PCG64(seed))
        stage = f"generate {run} ({'kv cache' if kv_cache else 'no cache'})"
        result = _call(stage, None, module.generate, params, prompts, case.n_tokens, case.config,
                       rng=rng, kv_cache=kv_cache, **kwargs)
        try:
            tokens, logits = result
            width = max(map(len, tokens), default=0)
            out[run] = {"tokens": np.array([list(t) + [-1] * (width - len(t)) for t in tokens], dtype=np.int64),
                        "logits": to_host(logits)}
        except Exception as exc:
            raise StageError(stage, None, f"did not return (tokens, logits) with one token list per "
                                          f"prompt: {exc}") from exc
    return out


# ----------------------------------------------------------------------------- jobs
# What a worker process (harness/runner/worker.py) runs: job(module, spec, inputs) -> (results, errors, meta)
# with results {key: host numpy array}, errors {part: StageError}, meta plain JSON. The spec is plain
# JSON (config, hparams, seeds, which backend); inputs are host arrays (copies, owned by the job).

ORACLE = "numpy-float64"   # the float64 numpy run every other backend is compared against
ALL_BACKENDS = (ORACLE, "numpy-float32", "cupy-float32", "cupy-float64")


def backend_xp(backend):
    """(xp, dtype) for "numpy-float64", "cupy-float32", ...; xp None (dtype: the reason) when the
    backend cannot run here."""
    name, dtype = backend.split("-")
    if name == "numpy":
        return np, dtype
    from nanoproof import env
    cupy, why = env.gpu()
    return (cupy, dtype) if cupy is not None else (None, why)


def _numeric(results, errors, part_of):
    """Drop results that are not plain numeric arrays, as a StageError of their part."""
    for key in list(results):
        v = results[key]
        if isinstance(v, np.generic):
            v = results[key] = np.asarray(v)
        if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf":
            del results[key]
            part = part_of(key)
            errors.setdefault(part, StageError(part, None, f"returned {key.split('/')[-1]} as "
                                               f"{type(v).__name__} of dtype {getattr(v, 'dtype', '?')}, "
                                               f"not a numeric array"))
    return results


def part_of(key):
    """The stage a result key comes from: init / get_batch / lr_at / step0 / trajectory."""
    if key.startswith("setup/"):
        return key.split("/")[1]
    return key.split("/")[0]


def trajectory_job(module, spec, inputs):
    """One backend's run of a trajectory case: setup checks (spec["setup"]: init in the backend's
    dtype; in float64 also get_batch and lr_at), step 0 (activations, loss, grads), and spec["steps"]
    training steps on the given batches with params after spec["checkpoints"]."""
    xp, dtype = backend_xp(spec["backend"])
    cfg, hp, setup = spec["config"], spec["hparams"], spec.get("setup") or {}
    params0 = {k[len("params0/"):]: v for k, v in inputs.items() if k.startswith("params0/")}
    xs, ys = inputs["x"], inputs["y"]
    results, errors, meta = {}, {}, {}
    if "init_seed" in setup:
        try:
            init = run_init(module, cfg, setup["init_seed"], xp, dtype)
            results.update({f"setup/init/{k}": v for k, v in init.items()})
        except StageError as exc:
            errors["init"] = exc
    if "sampler_seed" in setup:
        try:
            x, y = run_sampler(module, inputs["tokens"], setup["batch_size"], cfg["block_size"],
                               setup["sampler_seed"], setup["calls"])
            results["setup/get_batch/x"], results["setup/get_batch/y"] = x, y
        except StageError as exc:
            errors["get_batch"] = exc
    if "lr_steps" in setup:
        try:
            results["setup/lr_at"] = run_lr(module, hp, setup["lr_steps"])
        except StageError as exc:
            errors["lr_at"] = exc
    try:
        s0 = run_step0(module, cfg, params0, xs[0], ys[0], xp, dtype)
        results.update({f"step0/activations/{k}": v for k, v in s0["activations"].items()})
        results["step0/loss"] = np.float64(s0["loss"])
        results.update({f"step0/grads/{k}": v for k, v in s0["grads"].items()})
        meta["extra_grads"] = s0["extra_grads"]
    except StageError as exc:
        errors["step0"] = exc
        partial = getattr(exc, "partial", None)
        if partial is not None:
            results.update({f"step0/activations/{k}": v for k, v in partial["activations"].items()})
            results["step0/loss"] = np.float64(partial["loss"])
    checkpoints = [k for k in spec["checkpoints"] if k <= spec["steps"]]
    try:
        tr = run_trajectory(module, cfg, hp, params0, xs, ys, spec["steps"], checkpoints, xp, dtype)
    except StageError as exc:
        errors["trajectory"] = exc
        tr = getattr(exc, "partial", None)
    if tr is not None:
        for q in ("loss", "lr", "grad_norm"):
            results[f"trajectory/{q}"] = np.asarray(tr[q], dtype=np.float64)
        for k, ps in tr["params"].items():
            results.update({f"trajectory/params_after_{k}/{n}": v for n, v in ps.items()})
        meta["state_dtypes"] = tr.get("state_dtypes", {})
    return _numeric(results, errors, part_of), errors, meta


def generate_job(module, spec, inputs):
    """A generate case on one backend: every run, with and without the KV cache:
    {run}/{tokens,logits}/{kv_cache,no_cache}."""
    xp, dtype = backend_xp(spec["backend"])
    params0 = {k[len("params0/"):]: v for k, v in inputs.items() if k.startswith("params0/")}
    results, errors = {}, {}
    for path, kv_cache in (("kv_cache", True), ("no_cache", False)):
        try:
            got = run_generate(module, SimpleNamespace(**spec), params0, xp, dtype, kv_cache)
        except StageError as exc:
            errors[path] = exc
            continue
        results.update({f"{run}/{q}/{path}": v for run, r in got.items() for q, v in r.items()})
    return _numeric(results, errors, lambda key: key.rsplit("/", 1)[1]), errors, {}


def score_job(module, spec, inputs):
    from nanoproof.judge import score    # the score run lives with the score tier
    return score.score_job(module, spec, inputs)


def check_job(module, spec, inputs):
    """Import only: the contract was found (load_impl checked it)."""
    return {}, {}, {}


def fresh_job(module, spec, inputs):
    from nanoproof.judge import fresh
    return fresh.execute(module, spec, inputs)


JOBS = {"check": check_job, "trajectory": trajectory_job, "generate": generate_job,
        "score": score_job, "fresh": fresh_job}
