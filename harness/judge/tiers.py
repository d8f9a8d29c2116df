"""The four tiers of verification (DESIGN.md, "Proof in tiers"), each with its own verdict.

- exact: results bit-identical to a local snapshot taken before the edit (information, not a verdict);
- semantic (the main gate): float64 against the float64 golden: setup (init, sampler, lr schedule),
  every activation and the loss at step 0, every gradient, then the K-step trajectory step by step;
- backend: float32 (numpy, and cupy when present) against the float64 golden at step 0 and the first
  steps, each error bounded by k * (reference/'s own error, run live on this machine and backend on
  the same inputs) + floor (the recorded float32 groups are records of where they were made, not the
  bound: float32 results move with the CPU's BLAS kernel); every floating result, and the optimizer
  state, in the requested dtype (a float64 upcast is a FAIL named as such); init in float32 is the
  float64 init, cast;
- score: val loss of a short float32 run of the score case against its seed-ensemble band;
- the generate case (semantic and backend): generate's step logits and tokens, with and without the
  KV cache, against the float64 golden step by step (`generate` below).

The code under test runs in a worker process (harness/runner/worker.py) when given as a path; a worker that
exits, dies, prints or times out is a FAIL row "run: the code under test", never a pass.

Row order is the order in which a divergence is "first": setup, forward (step 0), loss, backward
(gradients in reverse of forward), then the trajectory step by step (params entering step s, lr,
loss, grad norm).
"""
import json
import math
import time
from pathlib import Path

import numpy as np

from nanoproof.spec import tolerances
from nanoproof.spec.cases import golden_path
from nanoproof.judge.compare import check_exact, check_rel, check_ulp, normwise
from nanoproof.judge.report import Row, TierResult, fail_row
from nanoproof.spec.contract import required_activation_names
from nanoproof.golden.files import read_golden
from nanoproof.runner.record import ALL_BACKENDS, ORACLE, backend_xp, part_of
from nanoproof.runner.worker import InProcess, Isolated, WorkerFailure

BACKENDS = tuple(b for b in ALL_BACKENDS if b != ORACLE)   # the backend tier's, besides the oracle

SECTIONS = {"setup": "setup", "step0/activations": "forward", "step0/loss": "loss",
            "step0/grads": "backward", "trajectory": "trajectory"}


def section_of(key):
    for prefix, sec in SECTIONS.items():
        if key.startswith(prefix):
            return sec
    return "?"


def load_case_golden(case, golden_dir=None):
    return read_golden(golden_path(case.name, golden_dir), case)


# ----------------------------------------------------------------------------- running the code under test

def subject(impl):
    """What runs the code under test: a runner (nanoproof.runner.worker.Isolated / InProcess) as it is, a file
    path in a worker process, a module object in this process (tests, reference/)."""
    if hasattr(impl, "run") and hasattr(impl, "label"):
        return impl
    if isinstance(impl, (str, Path)):
        return Isolated(impl)
    return InProcess(impl)


_REFERENCE_RUNS = {}


def reference_run(job, spec, inputs):
    """reference/ run live, in this process, on the same inputs and backend (cached: deterministic)."""
    from nanoproof.golden.files import dataset_sha256
    key = (job, json.dumps(spec, sort_keys=True), tuple((k, dataset_sha256(v)) for k, v in inputs.items()))
    if key not in _REFERENCE_RUNS:
        from nanoproof.spec.contract import load_reference
        _REFERENCE_RUNS[key] = InProcess(load_reference(), "reference/").run(job, spec, inputs)
    return _REFERENCE_RUNS[key]


def trajectory_spec(case, backend, setup):
    """The trajectory job of a case on one backend (nanoproof.runner.record.trajectory_job)."""
    dtype = backend.split("-")[1]
    steps = case.steps if dtype == "float64" else case.backend_steps
    spec = {"config": case.config, "hparams": case.hparams, "backend": backend, "steps": steps,
            "checkpoints": [k for k in case.checkpoints if k <= steps], "setup": {}}
    if setup:
        spec["setup"]["init_seed"] = case.init_seed
    if setup and dtype == "float64":
        spec["setup"].update(sampler_seed=case.sampler_seed, batch_size=case.batch_size,
                             calls=case.steps, lr_steps=case.lr_steps)
    return spec


def trajectory_inputs(golden):
    g = golden.data
    inputs = {"tokens": g["inputs/tokens"], "x": g["inputs/x"], "y": g["inputs/y"]}
    inputs.update({f"params0/{k}": v for k, v in golden.sub("params0").items()})
    return inputs


def run_job(runner, job, spec, inputs, res, tier, backend=""):
    """runner.run(...) -> JobResult, or None after putting the worker's failure into res as a FAIL row."""
    try:
        return runner.run(job, spec, inputs)
    except WorkerFailure as exc:
        res.rows.append(fail_row(tier, "run", "the code under test", exc.what, backend=backend))
        res.output = exc.output
        return None


# ----------------------------------------------------------------------------- semantic

def expected_keys(golden, group=ORACLE, setup=("init", "get_batch", "lr_at"), max_steps=None):
    """The golden's keys in check order (see the module docstring); trajectory scalars per step, for
    the first max_steps steps (default: all the golden has)."""
    g = golden.data
    keys = []
    if "init" in setup:
        keys += [f"setup/init/{k}" for k in golden.sub("params0")]
    if "get_batch" in setup:
        keys += ["setup/get_batch/x", "setup/get_batch/y"]
    if "lr_at" in setup:
        keys += ["setup/lr_at"]
    keys += [f"step0/activations/{k}" for k in golden.sub(f"{group}/step0/activations")]
    keys += ["step0/loss"]
    keys += [f"step0/grads/{k}" for k in golden.sub(f"{group}/step0/grads")]
    steps = len(g[f"{group}/trajectory/loss"])
    steps = steps if max_steps is None else min(steps, max_steps)
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


# the section a crash belongs to, by the contract function that raised
STAGE_SECTIONS = {"init": "setup", "get_batch": "setup", "forward": "forward", "backward": "backward",
                  "adamw_step": "trajectory", "lr_at": "trajectory"}


def crash_row(tier, exc, part, step, backend=""):
    """One FAIL row for a contract function that raised (or returned something unusable), named by
    that function, in its own section: "backward(): raised ValueError: ..."."""
    section = "setup" if part in ("init", "get_batch", "lr_at") else STAGE_SECTIONS.get(exc.stage, part)
    return fail_row(tier, section, f"{exc.stage}()", exc.message,
                    step=exc.step if exc.step is not None else step, backend=backend)


def dtype_note(got, dtype):
    """A FAIL note when a floating result is not in the run's dtype (a float64 upcast in a float32
    run, or the reverse), else None."""
    a = np.asarray(got)
    if a.dtype.kind == "f" and a.dtype != np.dtype(dtype):
        what = "a float64 upcast: computed in float64 instead of float32" if a.dtype == np.float64 \
            and dtype == "float32" else f"computed in {a.dtype} instead of {dtype}"
        return f"dtype {a.dtype}, expected {dtype} ({what})"
    return None


DTYPE_CHECKED = ("setup/init/", "step0/activations/", "step0/grads/", "trajectory/params_after_")


# ----------------------------------------------------------------------------- a different function

def _listed(names, limit=4):
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def different_function(golden, results, n_layer):
    """How an implementation is not GPT-2 at all, or None: its init's params (names or shapes) differ
    from the golden's, or its forward ran but its cache holds none of the required taps. Such a file
    changed the function on purpose (an RNN, a variant); its rows would fail one by one for that
    alone. Returns one line: "params: missing wpe, h.0.attn.c_attn.weight, ...; extra h.0.rnn.w_x"."""
    got = {k[len("setup/init/"):]: tuple(np.shape(v)) for k, v in results.items() if k.startswith("setup/init/")}
    if not got:          # init raised or was not run: a crash row says so
        return None
    want = {k: tuple(np.shape(v)) for k, v in golden.sub("params0").items()}
    parts = []
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    shapes = [f"{k} {got[k]} (GPT-2: {want[k]})" for k in want if k in got and got[k] != want[k]]
    if missing:
        parts.append(f"missing {_listed(missing)}")
    if extra:
        parts.append(f"extra {_listed(extra)}")
    if shapes:
        parts.append(f"shapes {_listed(shapes, 2)}")
    if parts:
        return "params: " + "; ".join(parts)
    required = required_activation_names(n_layer)
    if "step0/loss" in results and not any(f"step0/activations/{n}" in results for n in required):
        return (f"taps: its forward cache holds none of GPT-2's required activations {_listed(required)}; "
                f"if it is meant to be GPT-2, name its cache as harness/spec/contract.py does")
    return None


def different_function_result(res, what, label):
    """Replace a tier's rows by the one FAIL row of a different function."""
    import os
    from nanoproof.paths import command
    from nanoproof.spec.contract import DEFAULT_IMPL
    try:
        baseline = os.path.relpath(DEFAULT_IMPL)
    except ValueError:   # another drive (Windows)
        baseline = str(DEFAULT_IMPL)
    res.different = (f"{label} is a different function from GPT-2 ({what}) — to compare its scores with "
                     f"GPT-2's, use `{command('compare_scores', 'compare')} {baseline} {label}`")
    res.rows = [fail_row(res.tier, "setup", "different function", res.different, backend=res.backend)]
    return res


def semantic(impl, case, golden, tol):
    """The semantic tier on one trajectory case. Returns (TierResult, results)."""
    t0 = time.perf_counter()
    res = TierResult("semantic", case.name)
    runner = subject(impl)
    job = run_job(runner, "trajectory", trajectory_spec(case, ORACLE, setup=True),
                  trajectory_inputs(golden), res, "semantic")
    if job is None:
        return res, {}
    other = different_function(golden, job.results, case.config["n_layer"])
    if other:
        res.seconds = time.perf_counter() - t0
        return different_function_result(res, other, runner.label), {}
    res.rows = compare_rows("semantic", case, golden, job, "float64",
                            lambda key, ref: _semantic_check(key, tol))
    res.seconds = time.perf_counter() - t0
    return res, job.results


def _semantic_check(key, tol):
    name = tolerances.semantic_key(key.split("@")[0])
    return tol[name]["metric"], tol[name]["value"], name


def compare_rows(tier, case, golden, job, dtype, check_for, setup=("init", "get_batch", "lr_at"),
                 backend="", max_steps=None):
    """Rows for every expected key, in order. check_for(key, ref) -> (metric, tolerance, the
    tolerance table entry it comes from)."""
    results, errors = job.results, job.errors
    rows, reported = [], set()
    required = {f"step0/activations/{n}" for n in required_activation_names(case.config["n_layer"])}
    for key in expected_keys(golden, ORACLE, setup, max_steps):
        sec, name, step = section_of(key), display_name(key), step_of(key)
        part = part_of(key)
        ref = golden_value(golden, key, ORACLE)
        if key.startswith("setup/init/") and dtype != "float64":
            ref = np.asarray(ref).astype(dtype)   # init in float32 is the float64 init, cast
        got = result_value(results, key)
        if got is None:
            exc = errors.get(part)
            if exc is not None:
                if part not in reported:
                    reported.add(part)
                    rows.append(crash_row(tier, exc, part, step, backend))
                continue
            if key.startswith("step0/activations/") and key not in required:
                rows.append(Row(tier, sec, name, step, tuple(np.shape(ref)), verdict="skip",
                                note="optional tap not in the cache", backend=backend, key=key))
            else:
                what = "required activation missing from the cache" if key in required else \
                    "missing from the module's output"
                rows.append(fail_row(tier, sec, name, what, step=step, backend=backend))
                rows[-1].key = key
            continue
        metric, tolv, entry = check_for(key, ref)
        if metric == "exact":
            row = check_exact(tier, sec, name, got, ref, step=step)
        elif metric == "ulp":
            row = check_ulp(tier, sec, name, got, ref, tolv, step=step, backend=backend)
        else:
            row = check_rel(tier, sec, name, got, ref, tolv, step=step, backend=backend)
        row.key, row.backend, row.entry = key, backend, entry
        bad_dtype = dtype_note(got, dtype) if key.startswith(DTYPE_CHECKED) else None
        if bad_dtype:
            row.verdict, row.note = "FAIL", bad_dtype
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
    for part, exc in errors.items():   # a failing stage whose keys are all absent from the golden
        if part not in reported:
            rows.append(crash_row(tier, exc, part, None, backend))
    extra = job.meta.get("extra_grads")
    if extra:
        rows.append(fail_row(tier, "backward", "grads", f"unexpected gradient keys: {extra}",
                             step=0, backend=backend))
    wrong = {k: v for k, v in job.meta.get("state_dtypes", {}).items()
             if str(v).startswith("float") and v != dtype}
    if wrong:
        k, v = next(iter(wrong.items()))
        rows.append(fail_row(tier, "trajectory", "optimizer state",
                             f"{len(wrong)} of {len(job.meta['state_dtypes'])} state arrays are not "
                             f"{dtype} (first: {k} is {v}{': a float64 upcast' if v == 'float64' else ''})",
                             backend=backend))
    return rows


# ----------------------------------------------------------------------------- backend

def collect(impl, case, golden, backend):
    """(results, errors) of the implementation's trajectory run on one backend (no setup checks);
    raises WorkerFailure when its worker fails (scripts/compare_backends.py)."""
    job = subject(impl).run("trajectory", trajectory_spec(case, backend, setup=False), trajectory_inputs(golden))
    return job.results, job.errors


def recorded_errors(golden, group):
    """{key: error vs the oracle} recorded for a backend group at regeneration (a record of the
    machine it was made on), or None."""
    names = golden.data.get(f"{group}/errors/names")
    values = golden.data.get(f"{group}/errors/values")
    if names is None or values is None:
        return None
    return {n.decode() if isinstance(n, bytes) else str(n): float(v) for n, v in zip(names, values)}


def backend_skip(backend_name):
    """Why a backend cannot run here, or ""."""
    xp, why = backend_xp(backend_name)
    return "" if xp is not None else f"{backend_name}: {why}"


def reference_errors(golden, ref_job, max_steps):
    """{key: normwise error of reference/'s live run (same machine, same backend) against the
    float64 golden}, for every expected key the run produced: the scale of the backend bound."""
    out = {}
    for key in expected_keys(golden, ORACLE, ("init",), max_steps):
        got = result_value(ref_job.results, key)
        if got is not None:
            ref = golden_value(golden, key, ORACLE)
            out[key] = normwise(got, ref)[1]
    return out


def backend(impl, case, golden, backend_name, tol):
    """The backend tier for one backend ("numpy-float32", "cupy-float32", "cupy-float64"): the
    implementation in that backend and dtype against the float64 golden, each tensor's error
    bounded by k * (reference/'s own error, run live here on the same backend and inputs) + floor
    (float64 backends: backend.float64)."""
    t0 = time.perf_counter()
    res = TierResult("backend", case.name, backend=backend_name)
    res.skipped = backend_skip(backend_name)
    if res.skipped:
        return res, {}
    dtype = backend_name.split("-")[1]
    spec, inputs = trajectory_spec(case, backend_name, setup=True), trajectory_inputs(golden)
    runner = subject(impl)
    job = run_job(runner, "trajectory", spec, inputs, res, "backend", backend_name)
    if job is None:
        return res, {}
    other = different_function(golden, job.results, case.config["n_layer"])
    if other:
        res.seconds = time.perf_counter() - t0
        return different_function_result(res, other, runner.label), {}
    ref_err = reference_errors(golden, reference_run("trajectory", spec, inputs), case.backend_steps) \
        if dtype != "float64" else {}
    k, floor = tol["backend.k"]["value"], tol["backend.floor"]["value"]
    f64 = tol["backend.float64"]["value"]

    def check_for(key, ref):
        if key.startswith("setup/init/"):   # element-wise: the float64 init, cast
            return "ulp", tol["semantic.init"]["value"], "semantic.init"
        if dtype == "float64":
            return "rel", f64, "backend.float64"
        e = ref_err.get(key)
        if e is None or not math.isfinite(e):
            return "rel", floor, "backend.floor"
        return "rel", k * e + floor, "backend.k"

    rows = compare_rows("backend", case, golden, job, dtype, check_for, setup=("init",),
                        backend=backend_name, max_steps=case.backend_steps)
    # no passing lr rows: lr_at is host-side, exactly as in float64, checked by the semantic tier
    res.rows = [r for r in rows if r.failed or not r.key.startswith("trajectory/lr@")]
    res.seconds = time.perf_counter() - t0
    return res, job.results


# ----------------------------------------------------------------------------- the generate case

GENERATE_PATHS = ("kv_cache", "no_cache")


def generate_spec(case, backend):
    return {"config": case.config, "prompts": [list(p) for p in case.prompts], "n_tokens": case.n_tokens,
            "runs": case.runs, "backend": backend}


def generate(impl, case, golden, backend_name, tol):
    """The semantic (numpy-float64) or backend tier of a generate case: the implementation's generate
    from the golden params, with and without its KV cache, against the float64 golden run by run. Rows
    go step by step (at each step, per run and path: the logits, then the picked tokens), so the first
    failing row is the first step where the implementation's generation left the golden one. In
    float32 each step's logits error is bounded by k * (reference/'s own error here) + floor."""
    t0 = time.perf_counter()
    tier = "semantic" if backend_name == ORACLE else "backend"
    label = "" if tier == "semantic" else backend_name
    res = TierResult(tier, case.name, backend=label)
    res.skipped = backend_skip(backend_name)
    if res.skipped:
        return res, {}
    dtype = backend_name.split("-")[1]
    spec = generate_spec(case, backend_name)
    inputs = {f"params0/{k}": v for k, v in golden.sub("params0").items()}
    job = run_job(subject(impl), "generate", spec, inputs, res, tier, label)
    if job is None:
        return res, {}
    results, rows = job.results, []
    crashed = [fail_row(tier, "generate", f"generate() ({path.replace('_', ' ')})", exc.message,
                        backend=label) for path, exc in job.errors.items()]
    k, floor = tol["backend.k"]["value"], tol["backend.floor"]["value"]
    ref = reference_run("generate", spec, inputs).results if dtype != "float64" else {}

    def logits_tol(run, path, s):
        if dtype == "float64":
            return tol["semantic.generate.logits" if tier == "semantic" else "backend.float64"]["value"]
        r = ref.get(f"{run}/logits/{path}")
        if r is None or r.ndim != 3 or r.shape[1] <= s:
            return floor
        e = normwise(r[:, s], golden.data[f"{ORACLE}/{run}/logits"][:, s])[1]
        return floor if not math.isfinite(e) else k * e + floor

    steps = golden.data[f"{ORACLE}/{next(iter(case.runs))}/tokens"].shape[1]
    short = set()
    for s in range(steps):
        for run in case.runs:
            for path in GENERATE_PATHS:
                shown = path.replace("_", " ")
                if f"{run}/tokens/{path}" not in results or (run, path) in short:
                    continue
                logits, tokens = results[f"{run}/logits/{path}"], results[f"{run}/tokens/{path}"]
                if tokens.ndim != 2 or tokens.shape[1] <= s or logits.ndim != 3 or logits.shape[1] <= s:
                    short.add((run, path))
                    rows.append(fail_row(tier, "generate", f"{run} ({shown})", f"generation ended after "
                                         f"{tokens.shape[-1]} of {steps} steps", step=s, backend=label))
                    continue
                expected = golden.data[f"{ORACLE}/{run}/logits"][:, s]
                row = check_rel(tier, "generate", f"{run} logits ({shown})", logits[:, s], expected,
                                logits_tol(run, path, s), step=s, backend=label)
                row.key = f"{run}/logits/{path}@{s}"
                row.entry = ("semantic.generate.logits" if tier == "semantic" else "backend.float64") \
                    if dtype == "float64" else "backend.k"
                bad_dtype = dtype_note(logits, dtype)
                if bad_dtype:
                    row.verdict, row.note = "FAIL", bad_dtype
                rows.append(row)
                row = check_exact(tier, "generate", f"{run} tokens ({shown})", tokens[:, s],
                                  golden.data[f"{ORACLE}/{run}/tokens"][:, s], step=s)
                row.key, row.backend = f"{run}/tokens/{path}@{s}", label
                row.entry = "semantic.generate.tokens"
                rows.append(row)
    for path in GENERATE_PATHS:
        for run in case.runs:
            n = results[f"{run}/tokens/{path}"].shape[-1] if f"{run}/tokens/{path}" in results else 0
            if n > steps:
                rows.append(fail_row(tier, "generate", f"{run} ({path.replace('_', ' ')})",
                                     f"{n} steps, expected {steps} (the batch stops at block_size)",
                                     step=steps, backend=label))
    res.rows = rows + crashed
    res.seconds = time.perf_counter() - t0
    return res, results
