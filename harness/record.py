"""Drive any contract module (reference/, impl/gpt2.py, a user's file) on a golden case and collect
what the golden files hold: sampler output, lr schedule, initial params, activations and loss at
step 0, gradients, and a K-step trajectory (loss, lr, grad norm per step; params at checkpoints);
for the generate case, the tokens and step logits of `generate`.

Every stage takes its inputs from the golden file (params0, the recorded batches), not from the
module's earlier stages, so a slip is attributed to the stage that has it: a sampler bug fails the
sampler check and nothing else, an init bug fails init only.

A module that raises is reported as a StageError naming the stage (the user's file, not ours).
"""
import numpy as np

from harness.contract import activation_names

PARAM_ORDER_NOTE = "state-dict order (= the order init draws them)"


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
    except Exception as exc:
        raise StageError(stage, step, f"raised {type(exc).__name__}: {exc}") from exc


def param_order(params):
    return list(params)


def backward_order(param_names):
    """Gradients in backward order: the reverse of the forward (state-dict) order."""
    return list(reversed(list(param_names)))


def run_sampler(module, tokens, batch_size, block_size, seed, calls):
    """`calls` successive get_batch draws from one Generator(PCG64(seed)): (x, y) of shape (calls, B, T)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    xs, ys = [], []
    for s in range(calls):
        out = _call("get_batch", s, module.get_batch, tokens, batch_size, block_size, rng)
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
    out = _call("forward", 0, module.forward, params, xp.asarray(x), xp.asarray(y), config)
    try:
        loss, cache = out
        loss = float(loss)
    except Exception as exc:
        raise StageError("forward", 0, f"did not return (loss, cache): {exc}") from exc
    acts = {n: to_host(cache[n]) for n in activation_names(config["n_layer"]) if n in cache}
    grads = _call("backward", 0, module.backward, params, cache, config)
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
            "params": snaps}


def _trajectory_loop(module, config, hparams, params, state, xs, ys, steps, checkpoints, xp,
                     losses, lrs, norms, snaps):
    for s in range(steps):
        lr = _call("lr_at", s, module.lr_at, s, hparams)
        out = _call("forward", s, module.forward, params, xp.asarray(xs[s]), xp.asarray(ys[s]), config)
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


# ----------------------------------------------------------------------------- the score run

def score_run(module, case, train, val, seed, steps, xp, dtype="float32", eval_steps=None):
    """Train `steps` updates (init seed = seed, batches from Generator(PCG64([seed, 1])), the
    convention of impl/gpt2.py's train and harness/training.py) and return {step: val loss} at
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
            x, y = module.get_batch(val, B, T, erng)
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
              module.lr_at(s, hp), hp)
    return out



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
