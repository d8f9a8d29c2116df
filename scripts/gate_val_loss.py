#!/usr/bin/env python
"""The CI gate on val loss (the score tier alone): exit 1, with a message naming the case, the step,
the expected band and the observed value, when the val loss is outside the reference's seed band.

    python scripts/gate_val_loss.py                          # short float32 run of impl/gpt2.py
    python scripts/gate_val_loss.py --impl other.py
    python scripts/gate_val_loss.py --value 2.61 --step 80   # a number measured elsewhere
    python scripts/gate_val_loss.py --log out/log.jsonl      # a training run's log (scripts/train.py)
    python scripts/gate_val_loss.py --json -                 # the verdict as JSON (schema_version 1)

The band is two-sided: |val loss - ensemble mean| <= band_sigmas * sigma + band_floor (golden/
tolerances.json), sigma the spread of the reference's 8-seed float32 ensemble at that step
(golden/shakespeare-char.h5, recorded every 20 steps from 0 to 300 with the case's config).
The gate's own run also has to match the reference's run of the same seed within score.same_seed
(float32 rounding drift only). A number or a log from elsewhere is held to the band alone, unless
--same-run declares it the case's own run (its seed, numpy, float32, the case's config and batches).
--log takes the eval records of a log.jsonl and gates the one at --step (default: the last step
the band covers); the band only means something for a run of the case's config (tiny Shakespeare,
char-level, the case's model and hyperparameters: harness/spec/cases.py).

Exit status: 0 pass, 1 fail, 2 a usage, contract or golden-file error (a step the band does not
cover, a log without eval records), 3 skipped (the reason is printed).
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", default=str(DEFAULT_IMPL), help="implementation file (default impl/gpt2.py)")
    ap.add_argument("--case", default=SCORE_CASES[0], choices=list(SCORE_CASES))
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--value", type=float, help="gate this observed val loss instead of running")
    source.add_argument("--log", metavar="PATH", help="gate the val loss a log.jsonl recorded")
    ap.add_argument("--step", type=int, help="the step of the value (default: the case's short_steps; "
                                             "with --log, the last step the band covers)")
    ap.add_argument("--seed", type=int, help="seed of the run (default: the case's verify_seed)")
    ap.add_argument("--same-run", action="store_true",
                    help="--value/--log come from the case's own run (its seed, numpy float32, config "
                         "and batches): also check the reference's run of that seed")
    ap.add_argument("--json", metavar="PATH", help="write the verdict as JSON ('-': to stdout only)")
    args = ap.parse_args(argv)
    case = CASES[args.case]
    seed = args.seed if args.seed is not None else case.verify_seed
    try:
        tol = tolerances.load()
        golden = score.load(case)
        steps = [int(s) for s in golden.data["val_loss/steps"]]
        if args.log is not None:
            step, value = from_log(args.log, args.step, steps)
        else:
            step, value = (args.step if args.step is not None else case.short_steps), args.value
        score.ensemble(golden, step)   # a step the band does not cover: a usage error
    except (tolerances.ToleranceError, GoldenError, GateError) as exc:
        print(f"gate_val_loss: error: {exc}", file=sys.stderr)
        return 2
    skipped = ""
    if value is not None:
        rows = score.check(case, golden, value, seed, step, tol, same_run=args.same_run)
    else:
        if not Path(args.impl).is_file():
            print(f"gate_val_loss: contract error: {args.impl}: no such implementation file", file=sys.stderr)
            return 2
        try:   # the implementation runs in a worker process, as in verify
            res = score.score_tier(args.impl, case, tol, steps=step, seed=seed)
        except ContractError as exc:
            print(f"gate_val_loss: contract error: {exc}", file=sys.stderr)
            return 2
        rows, skipped = res.rows, res.skipped
    failed = [r for r in rows if r.failed]
    verdict = "SKIP" if skipped else ("FAIL" if failed else "OK")
    lines = [f"gate_val_loss: SKIP: {case.name}: {skipped}"] if skipped else [
        f"gate_val_loss: {r.verdict}: {case.name}, step {r.step}: {r.name}: {r.note}"
        + (f" (|Δ| {r.err:.4g} > {r.tol:g}{' σ' if r.metric == 'sigma' else ''})" if r.failed and r.err is not None else "")
        for r in rows]
    if value is not None and not args.same_run:
        lines.append("gate_val_loss: the same-seed check was not applied (a number from another run; "
                     "--same-run declares it the case's own run)")
    if args.json:
        observed = value if value is not None else (rows[0].value if rows else None)
        doc = {"schema_version": SCHEMA_VERSION, "tool": "gate_val_loss", "verdict": verdict,
               "case": case.name, "step": step, "observed": observed, "seed": seed, "same_run": bool(args.same_run or value is None),
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
