"""The four tiers of verification (DESIGN.md, "Proof in tiers"), each with its own verdict.

- exact: results bit-identical to a local snapshot taken before the edit (information, not a verdict);
- semantic (the main gate): float64 against the float64 golden: setup (init, sampler, lr schedule),
  every activation and the loss at step 0, every gradient, then the K-step trajectory step by step;
- backend: float32 (numpy, and cupy when present) against the float64 golden at step 0 and the first
  steps, each error bounded by k * (the reference's own numpy-float32 error) + floor;
- score: val loss of a short float32 run of the score case against its seed-ensemble band;
- the generate case (semantic and backend): generate's step logits and tokens, with and without the
  KV cache, against the float64 golden step by step (`generate` below).

Row order is the order in which a divergence is "first": setup, forward (step 0), loss, backward
(gradients in reverse of forward), then the trajectory step by step (params entering step s, lr,
loss, grad norm).
"""
import math
import time

import numpy as np

from harness import record, tolerances
from harness.cases import golden_path
from harness.compare import Row, TierResult, check_exact, check_rel, check_ulp, fail_row
from harness.contract import required_activation_names
from harness.golden import read_golden
from harness.regen import ORACLE, backend_module, flatten_record

SECTIONS = {"setup": "setup", "step0/activations": "forward", "step0/loss": "loss",
            "step0/grads": "backward", "trajectory": "trajectory"}


def section_of(key):
    for prefix, sec in SECTIONS.items():
        if key.startswith(prefix):
            return sec
    return "?"


def load_case_golden(case, golden_dir=None):
    return read_golden(golden_path(case.name, golden_dir), case)


# ----------------------------------------------------------------------------- running a module

def collect(module, case, golden, backend=ORACLE):
    """Run `module` on a trajectory case with the golden inputs. Returns (results, errors):
    results {key: host array} with the golden's keys (plus setup/... for the oracle backend);
    errors {part: StageError} for the parts that raised (setup parts, "step0", "trajectory")."""
    xp, dtype = backend_module(backend)
    cfg, hp = case.config, case.hparams
    params0 = golden.sub("params0")
    xs, ys = golden.data["inputs/x"], golden.data["inputs/y"]
    results, errors = {}, {}
    if backend == ORACLE:
        try:
            init = record.run_init(module, cfg, case.init_seed, np, "float64")
            results.update({f"setup/init/{k}": v for k, v in init.items()})
        except record.StageError as exc:
            errors["init"] = exc
        try:
            x, y = record.run_sampler(module, golden.data["inputs/tokens"], case.batch_size,
                                      cfg["block_size"], case.sampler_seed, case.steps)
            results["setup/get_batch/x"], results["setup/get_batch/y"] = x, y
        except record.StageError as exc:
            errors["get_batch"] = exc
        try:
            results["setup/lr_at"] = record.run_lr(module, hp, case.lr_steps)
        except record.StageError as exc:
            errors["lr_at"] = exc
    steps = case.steps if dtype == "float64" else case.backend_steps
    checkpoints = [k for k in case.checkpoints if k <= steps]
    rec = {"step0": None, "trajectory": None}
    try:
        rec["step0"] = record.run_step0(module, cfg, params0, xs[0], ys[0], xp, dtype)
    except record.StageError as exc:
        errors["step0"] = exc
    try:
        rec["trajectory"] = record.run_trajectory(module, cfg, hp, params0, xs, ys, steps,
                                                  checkpoints, xp, dtype)
    except record.StageError as exc:
        errors["trajectory"] = exc
        rec["trajectory"] = getattr(exc, "partial", None)
    if rec["step0"] is not None:
        results.update({k: v for k, v in flatten_record(
            {"step0": rec["step0"], "trajectory": _empty_traj()}).items() if k.startswith("step0/")})
        if rec["step0"]["extra_grads"]:
            results["step0/extra_grads"] = rec["step0"]["extra_grads"]
    if rec["trajectory"] is not None:
        results.update({k: v for k, v in flatten_record(
            {"step0": _empty_step0(), "trajectory": rec["trajectory"]}).items()
            if k.startswith("trajectory/")})
    return results, errors


def _empty_traj():
    return {"loss": np.zeros(0), "lr": np.zeros(0), "grad_norm": np.zeros(0), "params": {}}


def _empty_step0():
    return {"activations": {}, "loss": 0.0, "grads": {}}


def _part_of(key):
    if key.startswith("setup/"):
        return key.split("/")[1]
    return key.split("/")[0]


# ----------------------------------------------------------------------------- semantic

def expected_keys(golden, group=ORACLE, with_setup=True):
    """The golden's keys in check order (see the module docstring); trajectory scalars per step."""
    g = golden.data
    keys = []
    if with_setup:
        keys += [f"setup/init/{k}" for k in golden.sub("params0")]
        keys += ["setup/get_batch/x", "setup/get_batch/y", "setup/lr_at"]
    keys += [f"step0/activations/{k}" for k in golden.sub(f"{group}/step0/activations")]
    keys += ["step0/loss"]
    keys += [f"step0/grads/{k}" for k in golden.sub(f"{group}/step0/grads")]
    steps = len(g[f"{group}/trajectory/loss"])
    checkpoints = sorted(int(k.split("params_after_")[1].split("/")[0]) for k in g
                         if k.startswith(f"{group}/trajectory/params_after_") and k.count("/") == 3)
    names = list(golden.sub("params0"))
    for s in range(steps + 1):
        if s in checkpoints:
            keys += [f"trajectory/params_after_{s}/{n}" for n in names]
        if s < steps:
            keys += [f"trajectory/lr@{s}", f"trajectory/loss@{s}", f"trajectory/grad_norm@{s}"]
    return list(dict.fromkeys(keys))


def golden_value(golden, key, group=ORACLE):
    g = golden.data
    if key.startswith("setup/init/"):
        return g["params0/" + key[len("setup/init/"):]]
    if key.startswith("setup/get_batch/"):
        return g["inputs/" + key.rsplit("/", 1)[1]]
    if key == "setup/lr_at":
        return g["schedule/lr_at"]
    if "@" in key:
        base, s = key.split("@")
        return g[f"{group}/{base}"][int(s)]
    return g[f"{group}/{key}"]


def result_value(results, key):
    if "@" in key:
        base, s = key.split("@")
        arr = results.get(base)
        return None if arr is None or int(s) >= len(arr) else arr[int(s)]
    return results.get(key)


def display_name(key):
    """How a key is printed: the tensor's own name, with its step for trajectory rows."""
    if key.startswith("setup/"):
        rest = key[len("setup/"):]
        return rest.replace("init/", "init ").replace("get_batch/", "get_batch ")
    if key.startswith("step0/activations/"):
        return key[len("step0/activations/"):]
    if key.startswith("step0/grads/"):
        return "d" + key[len("step0/grads/"):]
    if key == "step0/loss":
        return "loss"
    if key.startswith("trajectory/params_after_"):
        s, name = key[len("trajectory/params_after_"):].split("/", 1)
        return f"{name} (after {s} updates)"
    if "@" in key:
        base, s = key.split("@")
        return base.split("/")[-1]
    return key


def step_of(key):
    if key.startswith("step0/"):
        return 0
    if key.startswith("trajectory/params_after_"):
        return int(key[len("trajectory/params_after_"):].split("/")[0])
    if "@" in key:
        return int(key.split("@")[1])
    return None


def semantic(module, case, golden, tol):
    """The semantic tier on one trajectory case. Returns (TierResult, results)."""
    t0 = time.perf_counter()
    res = TierResult("semantic", case.name)
    results, errors = collect(module, case, golden, ORACLE)
    res.rows = compare_rows("semantic", case, golden, results, errors, ORACLE,
                            lambda key, ref: _semantic_check(key, tol))
    res.seconds = time.perf_counter() - t0
    return res, results


def _semantic_check(key, tol):
    entry = tol[tolerances.semantic_key(key.split("@")[0])]
    return entry["metric"], entry["value"]


def compare_rows(tier, case, golden, results, errors, group, check_for, with_setup=True,
                 backend=""):
    """Rows for every expected key, in order. check_for(key, ref) -> (metric, tolerance)."""
    rows, reported = [], set()
    required = {f"step0/activations/{n}" for n in required_activation_names(case.config["n_layer"])}
    keys = expected_keys(golden, ORACLE if group == ORACLE else group, with_setup)
    for key in keys:
        sec, name, step = section_of(key), display_name(key), step_of(key)
        part = _part_of(key)
        ref = golden_value(golden, key, ORACLE)
        got = result_value(results, key)
        if got is None:
            exc = errors.get(part)
            if exc is not None:
                if part not in reported:
                    reported.add(part)
                    rows.append(fail_row(tier, sec, name, f"{exc}", step=exc.step if exc.step
                                         is not None else step, backend=backend))
                continue
            if key.startswith("step0/activations/") and key not in required:
                rows.append(Row(tier, sec, name, step, tuple(np.shape(ref)), verdict="skip",
                                note="optional tap not in the cache", backend=backend))
            else:
                what = "required activation missing from the cache" if key in required else \
                    "missing from the module's output"
                rows.append(fail_row(tier, sec, name, what, step=step, backend=backend))
            continue
        metric, tolv = check_for(key, ref)
        if metric == "exact":
            row = check_exact(tier, sec, name, got, ref, step=step)
        elif metric == "ulp":
            row = check_ulp(tier, sec, name, got, ref, tolv, step=step, backend=backend)
        else:
            row = check_rel(tier, sec, name, got, ref, tolv, step=step, backend=backend)
        if key == "setup/lr_at" and row.failed and np.shape(got) == np.shape(ref):
            bad = [s for s in range(len(ref)) if got[s] != ref[s]]
            row.note = (f"first differing step {bad[0]}: got {got[bad[0]]!r}, expected "
                        f"{ref[bad[0]]!r}; {len(bad)} of {len(ref)} steps differ") if bad else row.note
        if key.startswith("setup/get_batch/") and row.failed and np.ndim(ref) == 3:
            a, e = np.asarray(got), np.asarray(ref)
            if a.shape == e.shape:
                draw = int(np.argmax((a != e).reshape(len(e), -1).any(axis=1)))
                row.note = f"draw {draw} differs first; " + row.note
        rows.append(row)
    extra = results.get("step0/extra_grads")
    if extra:
        rows.append(fail_row(tier, "backward", "grads", f"unexpected gradient keys: {extra}",
                             step=0, backend=backend))
    return rows


# ----------------------------------------------------------------------------- backend

def recorded_errors(golden, group):
    """{key: error vs the oracle} recorded for a backend group at regeneration."""
    names = golden.data.get(f"{group}/errors/names")
    values = golden.data.get(f"{group}/errors/values")
    if names is None or values is None:
        return None
    return {n.decode() if isinstance(n, bytes) else str(n): float(v) for n, v in zip(names, values)}


def _backend_setup(res, golden, backend_name):
    """(xp, dtype, the reference's recorded float32 errors) for a backend; xp None, with res.skipped
    saying why, when the backend is missing here or a float32 backend has no recording to scale by."""
    xp, dtype = backend_module(backend_name)
    if xp is None:
        res.skipped = f"{backend_name}: {dtype}"
        return None, dtype, None
    ref32 = recorded_errors(golden, "numpy-float32")
    if ref32 is None and dtype == "float32":
        res.skipped = f"{golden.path} has no numpy-float32 recording (regenerate it)"
        return None, dtype, None
    return xp, dtype, ref32


def backend(module, case, golden, backend_name, tol):
    """The backend tier for one backend ("numpy-float32", "cupy-float32", "cupy-float64")."""
    t0 = time.perf_counter()
    res = TierResult("backend", case.name)
    xp, dtype, ref32 = _backend_setup(res, golden, backend_name)
    if xp is None:
        return res, {}
    results, errors = collect(module, case, golden, backend_name)
    k, floor = tol["backend.k"]["value"], tol["backend.floor"]["value"]
    f64 = tol["backend.float64"]["value"]
    steps = case.backend_steps

    def check_for(key, ref):
        if dtype == "float64":
            return "rel", f64
        base = key
        if "@" in key and key.startswith("trajectory/"):
            base = key  # per-step keys are recorded per step
        e = ref32.get(base)
        if e is None or not math.isfinite(e):
            return "rel", floor
        return "rel", k * e + floor

    rows = compare_rows("backend", case, golden, results, errors, ORACLE, check_for,
                        with_setup=False, backend=backend_name)
    # only the first backend_steps of the trajectory, and no lr rows (host-side, same as float64)
    keep = []
    for r in rows:
        if r.section == "trajectory" and (r.step is not None and r.step > steps):
            continue
        if r.section == "trajectory" and r.name == "lr":
            continue
        if r.section == "trajectory" and r.step == steps and "(after" not in r.name:
            continue
        keep.append(r)
    res.rows = keep
    res.seconds = time.perf_counter() - t0
    return res, results


# ----------------------------------------------------------------------------- the generate case

GENERATE_PATHS = {"kv cache": True, "no cache": False}


def generate(module, case, golden, backend_name, tol):
    """The semantic (numpy-float64) or backend tier of a generate case: the module's generate from the
    golden params, with and without its KV cache, against the float64 golden run by run. Rows go step
    by step (at each step, per run and path: the logits, then the picked tokens), so the first failing
    row is the first step where the module's generation left the golden one."""
    t0 = time.perf_counter()
    tier = "semantic" if backend_name == ORACLE else "backend"
    res = TierResult(tier, case.name)
    xp, dtype, ref32 = _backend_setup(res, golden, backend_name)
    if xp is None:
        return res, {}
    k, floor = tol["backend.k"]["value"], tol["backend.floor"]["value"]
    label = "" if tier == "semantic" else backend_name
    results, rows, crashed = {}, [], []
    for path, kv_cache in GENERATE_PATHS.items():
        try:
            got = record.run_generate(module, case, golden.sub("params0"), xp, dtype, kv_cache)
        except record.StageError as exc:   # reported after the other path's steps
            crashed.append(fail_row(tier, "generate", f"generate ({path})", str(exc), backend=label))
            continue
        results.update({f"{run}/{q}/{path}": v for run, r in got.items() for q, v in r.items()})

    def logits_tol(run, path, s):
        if dtype == "float64":
            return tol["semantic.generate.logits" if tier == "semantic" else "backend.float64"]["value"]
        e = ref32.get(f"{run}/logits/{path.replace(' ', '_')}@{s}")
        return floor if e is None or not math.isfinite(e) else k * e + floor

    steps = golden.data[f"{ORACLE}/{next(iter(case.runs))}/tokens"].shape[1]
    short = set()
    for s in range(steps):
        for run in case.runs:
            for path in GENERATE_PATHS:
                if f"{run}/tokens/{path}" not in results or (run, path) in short:
                    continue
                logits, tokens = results[f"{run}/logits/{path}"], results[f"{run}/tokens/{path}"]
                if tokens.ndim != 2 or tokens.shape[1] <= s or logits.ndim != 3 or logits.shape[1] <= s:
                    short.add((run, path))
                    rows.append(fail_row(tier, "generate", f"{run} ({path})", f"generation ended after "
                                         f"{tokens.shape[-1]} of {steps} steps", step=s, backend=label))
                    continue
                ref = golden.data[f"{ORACLE}/{run}/logits"][:, s]
                rows.append(check_rel(tier, "generate", f"{run} logits ({path})", logits[:, s], ref,
                                      logits_tol(run, path, s), step=s, backend=label))
                rows.append(check_exact(tier, "generate", f"{run} tokens ({path})", tokens[:, s],
                                        golden.data[f"{ORACLE}/{run}/tokens"][:, s], step=s))  # exact
    for path in GENERATE_PATHS:
        for run in case.runs:
            n = results[f"{run}/tokens/{path}"].shape[-1] if f"{run}/tokens/{path}" in results else 0
            if n > steps:
                rows.append(fail_row(tier, "generate", f"{run} ({path})", f"{n} steps, expected {steps} "
                                     f"(the batch stops at block_size)", step=steps, backend=label))
    res.rows = rows + crashed
    res.seconds = time.perf_counter() - t0
    return res, results
