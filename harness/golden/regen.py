"""Build golden files from reference/ only (scripts/regen_golden.py is the command line).

Backends: "numpy-float64" (the oracle), "numpy-float32", and "cupy-float32" / "cupy-float64" when
cupy and a GPU are usable. Trajectory cases record the full K steps in float64 and the first
backend_steps in float32; the score case records the seed ensemble's val losses in float32; the
generate case records reference/sampling.py's tokens and step logits (float64: the no-cache path;
other backends: both paths, and their errors against it).

Safety (`check_regen`, run before anything is computed): an existing file is overwritten only with
force; unknown backends are refused; a file is never written without a group every file of its case
holds (nanoproof.spec.cases.expected_datasets: numpy-float64 and numpy-float32), and a group the existing
file recorded is never dropped silently (a backend not requested, or a GPU recording that is stale
because the generating source changed) unless named in drop_groups (--drop-group). Temp files an
interrupted regeneration left are removed first.
"""
import json
import time

import numpy as np

from nanoproof import env
from nanoproof.spec.cases import expected_datasets, golden_path, make_tokens, shakespeare_splits
from nanoproof.spec.contract import load_reference
from nanoproof.golden.files import clean_stale_temps, provenance, read_golden, write_golden, GoldenError
from nanoproof.judge.compare import normwise, record_errors
from nanoproof.judge.score import score_run
from nanoproof.runner.record import (ALL_BACKENDS, ORACLE, backend_xp, record_trajectory_case, run_generate, run_init,
                                   run_lr, run_sampler)



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
        xp, dtype = backend_xp(backend)
        if xp is None:
            log(f"  {backend}: skipped ({dtype})")
            continue
        steps = case.steps if dtype == "float64" else case.backend_steps
        t0 = time.perf_counter()
        rec = record_trajectory_case(ref, case, tokens, params0, xs, ys, xp, dtype, steps)
        tr = rec["trajectory"]
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
        xp, dtype = backend_xp(backend)
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


GENERATE_PATHS = {"kv_cache": True, "no_cache": False}


def generate_params(case):
    """The generate case's checkpoint: reference init in float64, every matrix x weight_scale, every
    vector (LayerNorm gains, biases) + N(0, vector_std) drawn in state-dict order."""
    params = run_init(load_reference(), case.config, case.init_seed, np, "float64")
    rng = np.random.Generator(np.random.PCG64(case.vector_seed))
    return {k: v * case.weight_scale if v.ndim == 2 else v + rng.normal(0.0, case.vector_std, v.shape)
            for k, v in params.items()}


def generate_datasets(case, backends, log=print):
    ref = load_reference()
    params0 = generate_params(case)
    L = max(len(p) for p in case.prompts)
    data = {"inputs/prompts": np.array([[-1] * (L - len(p)) + list(p) for p in case.prompts], dtype=np.int64)}
    data.update({f"params0/{k}": v for k, v in params0.items()})
    groups, oracle = {}, None
    for backend in [ORACLE] + [b for b in backends if b != ORACLE]:
        xp, dtype = backend_xp(backend)
        if xp is None:
            log(f"  {backend}: skipped ({dtype})")
            continue
        t0 = time.perf_counter()
        rec = {path: run_generate(ref, case, params0, xp, dtype, kv) for path, kv in GENERATE_PATHS.items()}
        ga = {"backend": backend.split("-")[0], "dtype": dtype,
              "environment": json.dumps(env.describe(backend.split("-")[0]))}
        if backend == ORACLE:   # the plain definition: every step recomputes the prefix
            oracle = rec["no_cache"]
            data.update({f"{backend}/{run}/{q}": v for run, r in oracle.items() for q, v in r.items()})
            top2 = np.sort(oracle["greedy"]["logits"], -1)[..., -2:]
            ga["greedy_margin"] = float((top2[..., 1] - top2[..., 0]).min())
        else:
            errs = {}
            for path, runs in rec.items():
                for run, r in runs.items():
                    if not np.array_equal(r["tokens"], oracle[run]["tokens"]):
                        raise GoldenError(f"case {case.name}: reference/ in {backend} ({path}) picks other "
                                          f"{run} tokens than in float64: the case is too close to a tie "
                                          f"for the backend tier; change its seeds or weight_scale")
                    data.update({f"{backend}/{run}/{path}/{q}": v for q, v in r.items()})
                    errs.update({f"{run}/logits/{path}@{s}": normwise(r["logits"][:, s], oracle[run]["logits"][:, s])[1]
                                 for s in range(r["logits"].shape[1])})
            data[f"{backend}/errors/names"] = np.array([k.encode() for k in errs], dtype="S")
            data[f"{backend}/errors/values"] = np.array(list(errs.values()), dtype=np.float64)
            ga["max_logits_error"] = max(errs.values())
        groups[backend] = ga
        log(f"  {backend}: {len(case.runs)} runs x {len(GENERATE_PATHS)} paths in "
            f"{time.perf_counter() - t0:.1f} s; " + ", ".join(
                f"{run} {r['tokens'].shape[1]} steps, tokens[0] {r['tokens'][0].tolist()}"
                for run, r in rec["kv_cache"].items())
            + (f"; greedy top-1/top-2 logit gap >= {ga['greedy_margin']:.3g}" if "greedy_margin" in ga
               else f"; logits error vs float64 <= {ga['max_logits_error']:.2e}"))
    return data, groups


def build(case, backends, log=print):
    """(attrs, datasets, group_attrs) of a case's golden file."""
    if case.kind == "score":
        data, groups = score_datasets(case, backends, log)
    elif case.kind == "generate":
        data, groups = generate_datasets(case, backends, log)
    else:
        data, groups = trajectory_datasets(case, backends, log)
    attrs = {"case": case.as_dict(), **provenance()}
    return attrs, data, groups


def _same_source(old):
    """Whether `old` (a Golden) was generated by the generating source as it is now."""
    new_src = json.loads(provenance()["source_sha256"])["all"]
    return (old.attrs.get("source_sha256") or {}).get("all") == new_src


def carry_over_gpu(case, old, data, groups, log=print):
    """Keep the previous file's GPU recordings when this machine has no GPU and neither the case
    nor the generating source changed (they are still what reference/ computes there)."""
    if old is None:
        return
    same = _same_source(old)
    for g in old.groups():
        if g in groups or not g.startswith("cupy"):
            continue
        if not same:
            log(f"  {g}: dropped (the generating source changed since it was recorded on a GPU; "
                f"re-record it on a GPU)")
            continue
        data.update({k: v for k, v in old.data.items() if k.startswith(g + "/")})
        groups[g] = old.group_attrs(g)
        where = old.group_attrs(g).get("environment", "?")   # decoded from JSON: a dict
        where = where if isinstance(where, str) else json.dumps(where)
        log(f"  {g}: kept from the previous file (recorded on {where[:80]}...)")


def check_backends(backends, what="backend(s)"):
    """Refuse (GoldenError, kind "refused") names outside ALL_BACKENDS, e.g. numpy-float16."""
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        raise GoldenError(f"unknown {what} {', '.join(map(repr, unknown))}; known: "
                          f"{', '.join(ALL_BACKENDS)}", "refused")


def planned_groups(case, backends, old=None):
    """The backend groups a regeneration with `backends` would write on this machine: the oracle
    (not for the score case, which records float32 only), every requested backend usable here, and
    the previous file's GPU groups that carry_over_gpu keeps."""
    usable = [b for b in backends if backend_xp(b)[0] is not None]
    if case.kind == "score":
        new = [b for b in usable if b.endswith("float32")]
    else:
        new = [ORACLE] + [b for b in usable if b != ORACLE]
    if old is not None and _same_source(old):
        new += [g for g in old.groups() if g.startswith("cupy") and g not in new]
    return new


def required_groups(case):
    """The backend groups every golden file of `case` holds (from nanoproof.spec.cases.expected_datasets)."""
    tops = [n.split("/")[0] for n in expected_datasets(case)]
    return list(dict.fromkeys(g for g in tops if "-float" in g))


def check_regen(case, backends=None, force=False, golden_dir=None, drop_groups=(), log=print):
    """Every refusal of a regeneration, before anything is computed; returns the previous file (a
    Golden, or None when there is none or it is unreadable). Raises GoldenError (kind "refused"):
    unknown backends; an existing file without force; a group every file of the case holds that
    `backends` would not record; a group the existing file recorded that the new file would lack
    and that is not in drop_groups."""
    backends = list(ALL_BACKENDS if backends is None else backends)
    check_backends(backends or [""])
    check_backends(drop_groups, "group(s) to drop")
    path = golden_path(case.name, golden_dir)
    if path.exists() and not force:
        raise GoldenError(f"{path} exists; pass --force to overwrite it (regeneration replaces the "
                          f"expected values: do it only when reference/ or the case changed on purpose)",
                          "refused")
    old = None
    if path.exists():
        try:
            old = read_golden(path, None, regen="-")
        except GoldenError as exc:
            log(f"  previous file unreadable ({exc}); writing a fresh one")
    planned = planned_groups(case, backends, old)
    lacking = [g for g in required_groups(case) if g not in planned]
    if lacking:
        raise GoldenError(f"{path}: not regenerated: every {case.name} golden file holds group(s) "
                          f"{', '.join(lacking)}, which --backends {','.join(backends)} would not "
                          f"record; add them to --backends", "refused")
    dropped = [g for g in (old.groups() if old else []) if g not in planned and g not in drop_groups]
    if dropped:
        why = {g: ("the generating source changed since it was recorded on a GPU: re-record it there"
                   if g.startswith("cupy") and not _same_source(old) else "its backend is not requested")
               for g in dropped}
        raise GoldenError(f"{path}: not regenerated: the new file would drop group(s) the existing "
                          f"file recorded: " + "; ".join(f"{g} ({why[g]})" for g in dropped)
                          + f"; pass {' '.join(f'--drop-group {g}' for g in dropped)} to drop them",
                          "refused")
    return old


def regenerate(case, backends=None, force=False, golden_dir=None, log=print, drop_groups=()):
    """Regenerate one case's golden file; returns the list of change lines against the old file.
    Refuses (GoldenError, kind "refused") what check_regen refuses, before computing anything."""
    path = golden_path(case.name, golden_dir)
    backends = list(ALL_BACKENDS if backends is None else backends)
    old = check_regen(case, backends, force, golden_dir, drop_groups, log)
    clean_stale_temps(path, log)
    attrs, data, groups = build(case, backends, log)
    carry_over_gpu(case, old, data, groups, log)
    lacking = [n for n in expected_datasets(case) if n not in data]
    lacking += [f"group {g}" for g in (old.groups() if old else [])
                if g not in groups and g not in drop_groups]
    if lacking:   # check_regen's plan missed something: never write such a file
        raise GoldenError(f"{path}: not written: the new file would lack {', '.join(lacking[:4])}"
                          f"{' ...' if len(lacking) > 4 else ''}", "refused")
    write_golden(path, attrs, data, groups, log=log)
    from nanoproof.golden.files import diff_goldens
    return diff_goldens(old.data if old else {}, data)
