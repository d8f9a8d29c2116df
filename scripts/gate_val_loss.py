#!/usr/bin/env python
"""The CI gate on val loss (the score tier alone): exit 1, with a message naming the case, the step,
the expected band and the observed value, when the val loss is outside the reference's seed band.

    python scripts/gate_val_loss.py                          # short float32 run of impl/gpt2.py
    python scripts/gate_val_loss.py --impl other.py
    python scripts/gate_val_loss.py --value 2.61 --step 80   # a number measured elsewhere
    python scripts/gate_val_loss.py --log out/log.jsonl      # a training run's log (scripts/train.py)
    python scripts/gate_val_loss.py --json -                 # the verdict as JSON (schema_version 1)

Your own config: record its band once, then gate every run of it against the band:

    python scripts/gate_val_loss.py --record bands/baby.h5 --config out/ --seeds 5
    python scripts/gate_val_loss.py --band bands/baby.h5 --log out/log.jsonl

--record trains --seeds seeds (0, 1, ...; --first_seed) of the settings of --config (a run folder or
its ckpt.npz: the settings that run used; or a JSON object of train.py's flag names, e.g.
{"n_layer": 6, "max_iters": 1000}, the rest train.py's defaults) with reference/ (or --impl), in
--jobs processes, and writes their val loss at every evaluation step to BAND.h5 with provenance
(command, time, machine, BLAS kernel, the implementation's sha256, the data's identity). --band gates
a log or a --value against it; with --log, the run's ckpt.npz beside the log must have the band's
settings.

The band is two-sided: |val loss - ensemble mean| <= band_sigmas * sigma + band_floor (golden/
tolerances.json), sigma the spread of the ensemble at that step (the shipped case: the reference's
8-seed float32 ensemble in golden/shakespeare-char.h5, every 20 steps from 0 to 300 with the case's
config). The gate's own run also has to match the reference's run of the same seed within
score.same_seed (float32 rounding drift only). A number or a log from elsewhere is held to the band
alone, unless --same-run declares it the same run: the case's (its seed, numpy, float32, the case's
config and batches), or with --band a run of the band's own implementation file, seed, dtype and
backend (another implementation drifts from the recorded seed by rounding that grows with the steps).
--log takes the eval records of a log.jsonl and gates the one at --step (default: the last step
the band covers).

Exit status: 0 pass, 1 fail, 2 a usage, contract or golden-file error (a step the band does not
cover, a log without eval records, a run whose settings differ from the band's), 3 skipped (the
reason is printed).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402

env.pin()

import argparse  # noqa: E402
import json  # noqa: E402

from nanoproof.golden.files import GoldenError  # noqa: E402
from nanoproof.judge import score  # noqa: E402
from nanoproof.spec import tolerances  # noqa: E402
from nanoproof.spec.cases import CASES, SCORE_CASES  # noqa: E402
from nanoproof.spec.contract import DEFAULT_IMPL, ContractError  # noqa: E402
from nanoproof.cli import nonnegative_int, positive_int  # noqa: E402

SCHEMA_VERSION = 1


class GateError(Exception):
    """A usage error with a one-line message (exit status 2)."""


def from_log(path, step, steps):
    """(step, val loss) from a log.jsonl's eval records: at `step`, or the last step `steps` covers."""
    from nanoproof.tools.checkpoints import TrainingError, read_log   # the one reader of log.jsonl
    try:
        evals = {int(r["step"]): float(r["val_loss"]) for r in read_log(path) if r["kind"] == "eval"}
    except TrainingError as exc:
        raise GateError(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise GateError(f"{path}: an eval record without a numeric step and val_loss ({type(exc).__name__}: {exc})") from None
    if not evals:
        raise GateError(f"{path}: no eval records (kind \"eval\")")
    if step is None:
        covered = sorted(set(evals) & set(steps))
        if not covered:
            raise GateError(f"{path}: evaluated at steps {sorted(evals)[:8]}..., none of which the band "
                            f"covers ({steps[0]}..{steps[-1]} every {steps[1] - steps[0]}): pass --step")
        step = covered[-1]
    if step not in evals:
        raise GateError(f"{path}: no eval record at step {step} (evaluated at {sorted(evals)[:8]}...)")
    return step, evals[step]


def record_band(args):
    """--record: train the seeds, write the band file; exit status 0, or 2 with one line."""
    from nanoproof.golden import bands
    from nanoproof.scripts.train import resolve_dataset
    from nanoproof.tools.data import DataError
    if args.config is None:
        print("gate_val_loss: error: --record needs --config RUN_DIR|CKPT.npz|SETTINGS.json", file=sys.stderr)
        return 2
    try:
        settings = bands.settings_from(args.config)
        dataset = resolve_dataset(args.dataset or settings["dataset"])
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        bands.record(args.record, settings, dataset, seeds, impl=args.impl, jobs=args.jobs,
                     command=" ".join(["nanoproof gate"] + list(sys.argv[1:])))
    except (bands.BandError, DataError, GoldenError) as exc:
        print(f"gate_val_loss: error: {exc}", file=sys.stderr)
        return 2
    print(f"gate a run against it: nanoproof gate --band {args.record} --log RUN_DIR/log.jsonl")
    return 0


def band_source(args):
    """(golden, name, group, same_run) for --band; the run beside --log must have the band's settings,
    and --same-run the band's implementation, dtype and backend."""
    from nanoproof.golden import bands
    from nanoproof.tools.checkpoints import CKPT_NAME, TrainingError, load_checkpoint
    try:
        golden, band = bands.load(args.band)
    except bands.BandError as exc:
        raise GateError(str(exc)) from None
    ckpt = Path(args.log).parent / CKPT_NAME if args.log is not None else None
    meta = None
    if ckpt is not None and ckpt.is_file():
        try:
            meta = load_checkpoint(ckpt)[2]
        except TrainingError as exc:
            raise GateError(str(exc)) from None
        diff = bands.run_mismatch(band, meta)
        if diff:
            raise GateError(f"{ckpt}: this run's settings differ from the band's ({args.band}): "
                            f"{'; '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}; record a band for "
                            f"them with --record BAND.h5 --config {ckpt.parent}")
    if args.same_run:
        if meta is None:
            raise GateError("--same-run with --band needs --log beside its run's ckpt.npz (to check the "
                            "implementation, seed, dtype and backend)")
        module = Path(str(meta.get("module", "")))
        if band["impl_sha256"] is None:   # recorded with reference/: the run trained this package's reference/
            from nanoproof import reference
            same_impl = module.resolve() == Path(reference.__file__).resolve()
        else:
            same_impl = module.is_file() and bands.file_sha256(module) == band["impl_sha256"]
        if not same_impl or meta.get("backend") != "numpy" or meta["seed"] not in band["seeds"]:
            name = f"{module.parent.name}/" if module.name == "__init__.py" else module.name
            raise GateError(f"--same-run: {ckpt.parent} is not the same run as a recorded seed (implementation "
                            f"{name}, band's {Path(band['impl']).name}; backend {meta.get('backend')}, "
                            f"band's numpy; seed {meta['seed']}, band's {band['seeds']}): drop --same-run "
                            f"to hold it to the band alone")
    return golden, Path(args.band).name, band["group"], args.same_run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=None, help="implementation file to run (default impl/gpt2.py; "
                                                 "with --record: reference/)")
    ap.add_argument("--case", default=SCORE_CASES[0], choices=list(SCORE_CASES))
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--value", type=float, help="gate this observed val loss instead of running")
    source.add_argument("--log", metavar="PATH", help="gate the val loss a log.jsonl recorded")
    ap.add_argument("--step", type=int, help="the step of the value (default: the case's short_steps; "
                                             "with --log, the last step the band covers)")
    ap.add_argument("--seed", type=int, help="seed of the run (default: the case's verify_seed; with "
                                             "--band and --log, the run's)")
    ap.add_argument("--same-run", "--same_run", dest="same_run", action="store_true",
                    help="--value/--log come from the same run as a recorded seed (see above): also "
                         "check that seed's recorded val loss")
    ap.add_argument("--json", metavar="PATH", help="write the verdict as JSON ('-': to stdout only)")
    own = ap.add_argument_group("a band for your own config")
    own.add_argument("--band", metavar="BAND.h5", help="gate --log/--value against this recorded band "
                                                       "instead of the shipped score case")
    own.add_argument("--record", metavar="BAND.h5", help="record a band: train --seeds runs of --config")
    own.add_argument("--config", metavar="RUN_DIR|CKPT|JSON", help="the settings to record (see above)")
    own.add_argument("--seeds", type=positive_int, default=5, help="runs in the band (default 5, at least 2)")
    own.add_argument("--first_seed", type=nonnegative_int, default=0, help="seeds first_seed, first_seed+1, ...")
    own.add_argument("--dataset", metavar="DIR", help="the data folder (default: the JSON's dataset, else "
                                                      "train.py's default data/shakespeare_char)")
    own.add_argument("--jobs", type=positive_int, default=None, help="worker processes (default: cores)")
    args = ap.parse_args(argv)
    if args.record is not None:
        if args.band or args.value is not None or args.log is not None:
            ap.error("--record records a band; gate a run against it in a second call (--band)")
        return record_band(args)
    if args.band is not None and args.value is None and args.log is None:
        ap.error("--band gates a run's --log or a --value (a band's config is yours: the gate does not train it)")
    case = CASES[args.case]
    seed = args.seed if args.seed is not None else case.verify_seed
    group, where = "numpy-float32", case.name
    try:
        tol = tolerances.load()
        if args.band is not None:
            golden, where, group, _ = band_source(args)
        else:
            golden = score.load(case)
        steps = [int(s) for s in golden.data["val_loss/steps"]]
        if args.log is not None:
            step, value = from_log(args.log, args.step, steps)
        else:
            step, value = (args.step if args.step is not None else case.short_steps), args.value
        if args.band is not None and args.step is None and args.log is None:
            step = steps[-1]
        score.ensemble(golden, step, group)   # a step the band does not cover: a usage error
        if args.band is not None and args.same_run:
            from nanoproof.tools.checkpoints import CKPT_NAME, load_checkpoint
            seed = load_checkpoint(Path(args.log).parent / CKPT_NAME)[2]["seed"]
    except (tolerances.ToleranceError, GoldenError, GateError) as exc:
        print(f"gate_val_loss: error: {exc}", file=sys.stderr)
        return 2
    skipped = ""
    if value is not None:
        rows = score.check(case, golden, value, seed, step, tol, same_run=args.same_run, group=group)
    else:
        impl = args.impl or str(DEFAULT_IMPL)
        if not Path(impl).is_file():
            print(f"gate_val_loss: contract error: {impl}: no such implementation file", file=sys.stderr)
            return 2
        try:   # the implementation runs in a worker process, as in verify
            res = score.score_tier(impl, case, tol, steps=step, seed=seed)
        except ContractError as exc:
            print(f"gate_val_loss: contract error: {exc}", file=sys.stderr)
            return 2
        rows, skipped = res.rows, res.skipped
    failed = [r for r in rows if r.failed]
    verdict = "SKIP" if skipped else ("FAIL" if failed else "OK")
    lines = [f"gate_val_loss: SKIP: {where}: {skipped}"] if skipped else [
        f"gate_val_loss: {r.verdict}: {where}, step {r.step}: {r.name}: {r.note}"
        + (f" (|Δ| {r.err:.4g} > {r.tol:g}{' σ' if r.metric == 'sigma' else ''})" if r.failed and r.err is not None else "")
        for r in rows]
    if value is not None and not args.same_run:
        lines.append("gate_val_loss: the same-seed check was not applied (a number from another run; "
                     "--same-run declares it the same run as a recorded seed)")
    if args.json:
        observed = value if value is not None else (rows[0].value if rows else None)
        doc = {"schema_version": SCHEMA_VERSION, "tool": "gate_val_loss", "verdict": verdict,
               "case": where, "step": step, "observed": observed, "seed": seed, "same_run": bool(args.same_run or value is None),
               "skipped": skipped, "checks": [r.as_dict() for r in rows]}
        text = json.dumps(doc, indent=1, default=str)
        if args.json == "-":
            print(text)
        else:
            from nanoproof.paths import atomic_write_bytes
            atomic_write_bytes(args.json, (text + "\n").encode())
    if args.json != "-":
        print("\n".join(lines))
    return 3 if skipped else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
