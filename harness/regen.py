"""Build golden files from reference/ only (scripts/regen_golden.py is the command line).

Backends: "numpy-float64" (the oracle), "numpy-float32", and "cupy-float32" / "cupy-float64" when
cupy and a GPU are usable. Trajectory cases record the full K steps in float64 and the first
backend_steps in float32; the score case records the seed ensemble's val losses in float32.
"""
import json
import time

import numpy as np

from harness import env
from harness.cases import golden_path, make_tokens, shakespeare_splits
from harness.contract import load_reference
from harness.golden import provenance, read_golden, write_golden, GoldenError
from harness.compare import record_errors
from harness.record import record_trajectory_case, run_init, run_lr, run_sampler, score_run

ORACLE = "numpy-float64"
ALL_BACKENDS = ("numpy-float64", "numpy-float32", "cupy-float32", "cupy-float64")


def backend_module(backend):
    """(xp, dtype) for "numpy-float64" etc.; xp None (and dtype the reason) when unavailable."""
    name, dtype = backend.split("-")
    if name == "numpy":
        return np, dtype
    cupy, why = env.gpu()
    return (cupy, dtype) if cupy is not None else (None, why)


def available_backends():
    return [b for b in ALL_BACKENDS if backend_module(b)[0] is not None]


MAX_STORED = 65536  # non-oracle groups store tensors up to this many elements (errors for all)


def flatten_record(rec):
    """{"step0/activations/<name>": array, ...} of record_trajectory_case's result, in order:
    forward activations, loss, gradients (backward order), trajectory scalars, params."""
    s0, tr = rec["step0"], rec["trajectory"]
    out = {f"step0/activations/{k}": v for k, v in s0["activations"].items()}
    out["step0/loss"] = np.float64(s0["loss"])
    out.update({f"step0/grads/{k}": v for k, v in s0["grads"].items()})
    for q in ("loss", "lr", "grad_norm"):
        out[f"trajectory/{q}"] = tr[q]
    for k, ps in tr["params"].items():
        out.update({f"trajectory/params_after_{k}/{n}": v for n, v in ps.items()})
    return out


def trajectory_datasets(case, backends, log=print):
    ref = load_reference()
    cfg, hp = case.config, case.hparams
    tokens = make_tokens(case)
    xs, ys = run_sampler(ref, tokens, case.batch_size, cfg["block_size"], case.sampler_seed, case.steps)
    lr = run_lr(ref, hp, case.lr_steps)
    params0 = run_init(ref, cfg, case.init_seed, np, "float64")
    data = {"inputs/tokens": tokens, "inputs/x": xs, "inputs/y": ys, "schedule/lr_at": lr}
    data.update({f"params0/{k}": v for k, v in params0.items()})
    groups, oracle = {}, None
    backends = [ORACLE] + [b for b in backends if b != ORACLE]  # the others' errors need it
    for backend in backends:
        xp, dtype = backend_module(backend)
        if xp is None:
            log(f"  {backend}: skipped ({dtype})")
            continue
        steps = case.steps if dtype == "float64" else case.backend_steps
        t0 = time.perf_counter()
        rec = record_trajectory_case(ref, case, tokens, params0, xs, ys, xp, dtype, steps)
        s0, tr = rec["step0"], rec["trajectory"]
        g = backend
        rec_data = flatten_record(rec)
        if backend == ORACLE:
            data.update({f"{g}/{k}": v for k, v in rec_data.items()})
            oracle = rec_data
        else:
            # every other backend: its error against the oracle for every tensor, and the tensors
            # themselves up to MAX_STORED elements (the (V, C) ones of gpt2-vocab would not fit)
            errs = record_errors(rec_data, oracle)
            data[f"{g}/errors/names"] = np.array([k.encode() for k in errs], dtype="S")
            data[f"{g}/errors/values"] = np.array(list(errs.values()), dtype=np.float64)
            data.update({f"{g}/{k}": v for k, v in rec_data.items() if np.size(v) <= MAX_STORED})
        groups[g] = {"backend": backend.split("-")[0], "dtype": dtype, "steps": steps,
                     "checkpoints": sorted(tr["params"]),
                     "environment": json.dumps(env.describe(backend.split("-")[0]))}
        clipped = int(np.sum(tr["grad_norm"] > hp["grad_clip"])) if hp["grad_clip"] > 0 else 0
        log(f"  {backend}: {steps} steps in {time.perf_counter() - t0:.1f} s; loss "
            f"{tr['loss'][0]:.4f} -> {tr['loss'][-1]:.4f}; grad norm clipped on {clipped} of {steps} "
            f"steps (norms {tr['grad_norm'].min():.3g} .. {tr['grad_norm'].max():.3g}, "
            f"grad_clip {hp['grad_clip']})")
    return data, groups


def score_datasets(case, backends, log=print):
    ref = load_reference()
    train, val, sha = shakespeare_splits()
    steps = sorted(set(range(0, case.long_steps + 1, case.eval_interval)) | {case.long_steps})
    data = {"val_loss/steps": np.array(steps, dtype=np.int64),
            "val_loss/seeds": np.array(case.seeds, dtype=np.int64)}
    groups = {"val_loss": {"data_sha256": sha, "train_tokens": int(len(train)),
                           "val_tokens": int(len(val))}}
    for backend in backends:
        xp, dtype = backend_module(backend)
        if xp is None or dtype != "float32":
            continue
        rows, t0 = [], time.perf_counter()
        for seed in case.seeds:
            t1 = time.perf_counter()
            out = score_run(ref, case, train, val, seed, case.long_steps, xp, dtype, steps)
            rows.append([out[s] for s in steps])
            log(f"  {backend} seed {seed}: val loss at {case.short_steps} = "
                f"{out[case.short_steps]:.4f}, at {case.long_steps} = {out[case.long_steps]:.4f} "
                f"({time.perf_counter() - t1:.0f} s)")
        data[f"{backend}/val_loss"] = np.array(rows, dtype=np.float64)
        groups[backend] = {"backend": backend.split("-")[0], "dtype": dtype,
                           "runtime_s": round(time.perf_counter() - t0, 1),
                           "environment": json.dumps(env.describe(backend.split("-")[0]))}
    return data, groups


def build(case, backends, log=print):
    """(attrs, datasets, group_attrs) of a case's golden file."""
    if case.kind == "score":
        data, groups = score_datasets(case, backends, log)
    else:
        data, groups = trajectory_datasets(case, backends, log)
    attrs = {"case": case.as_dict(), **provenance()}
    return attrs, data, groups


def carry_over_gpu(case, old, data, groups, log=print):
    """Keep the previous file's GPU recordings when this machine has no GPU and neither the case
    nor the generating source changed (they are still what reference/ computes there)."""
    if old is None:
        return
    new_src = json.loads(provenance()["source_sha256"])["all"]
    old_src = (old.attrs.get("source_sha256") or {}).get("all")
    for g in old.groups():
        if g in groups or not g.startswith("cupy"):
            continue
        if old_src != new_src:
            log(f"  {g}: dropped (the generating source changed since it was recorded on a GPU; "
                f"re-record it on a GPU)")
            continue
        data.update({k: v for k, v in old.data.items() if k.startswith(g + "/")})
        groups[g] = old.group_attrs(g)
        log(f"  {g}: kept from the previous file (recorded on {old.group_attrs(g).get('environment', '?')[:80]}...)")


def regenerate(case, backends=None, force=False, golden_dir=None, log=print):
    """Regenerate one case's golden file; returns the list of change lines against the old file.
    Refuses (GoldenError) to overwrite an existing file without force."""
    path = golden_path(case.name, golden_dir)
    if path.exists() and not force:
        raise GoldenError(f"{path} exists; pass --force to overwrite it (regeneration replaces the "
                          f"expected values: do it only when reference/ or the case changed on purpose)")
    old = None
    if path.exists():
        try:
            old = read_golden(path, None, regen="-")
        except GoldenError as exc:
            log(f"  previous file unreadable ({exc}); writing a fresh one")
    backends = list(backends or ALL_BACKENDS)
    attrs, data, groups = build(case, backends, log)
    carry_over_gpu(case, old, data, groups, log)
    write_golden(path, attrs, data, groups)
    from harness.golden import diff_goldens
    return diff_goldens(old.data if old else {}, data)
