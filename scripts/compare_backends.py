#!/usr/bin/env python
"""One case on numpy and cupy side by side, both against the float64 oracle (numpy-float64 golden).

    python scripts/compare_backends.py --case tiny [--impl PATH] [--dtype float32]

Columns: per tensor (forward, loss, backward, first trajectory steps) the normwise relative error vs
the oracle of this machine's numpy run of the implementation, of the reference's numpy run recorded
in the golden file, and of cupy: run here when a GPU is usable, otherwise the reference's cupy
recording in the golden file when there is one (recorded on a lent GPU). Without either, it says so
in one line ("no GPU here ...") and compares numpy only.

By default it prints, per column, the worst error and its tensor; --full prints every tensor.
Exit status: 0 compared; 1 the implementation could not be run (the reason on stderr); 2 a usage or
golden-file error.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402

env.pin()

import argparse  # noqa: E402

from nanoproof.judge import tiers  # noqa: E402
from nanoproof.spec.cases import CASES, TRAJECTORY_CASES  # noqa: E402
from nanoproof.golden.files import GoldenError  # noqa: E402
from nanoproof.judge.compare import record_errors  # noqa: E402
from nanoproof.spec.contract import DEFAULT_IMPL, ContractError, load_reference  # noqa: E402
from nanoproof.runner.record import backend_xp  # noqa: E402
from nanoproof.runner.worker import InProcess, Isolated, WorkerFailure  # noqa: E402


def _errors(results, golden):
    oracle = {k[len("numpy-float64/"):]: v for k, v in golden.data.items() if k.startswith("numpy-float64/")}
    return record_errors({k: v for k, v in results.items() if not k.startswith("setup/")
                          and not isinstance(v, list)}, oracle)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="tiny", choices=list(TRAJECTORY_CASES))
    ap.add_argument("--impl", default=str(DEFAULT_IMPL))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--full", action="store_true", help="print every tensor's errors (default: the worst per column)")
    args = ap.parse_args(argv)
    case = CASES[args.case]
    try:
        golden = tiers.load_case_golden(case)
    except GoldenError as exc:
        print(f"compare_backends: {exc}", file=sys.stderr)
        return 2
    impl = Isolated(args.impl)   # the implementation runs in worker processes, as in verify
    np_name, cp_name = f"numpy-{args.dtype}", f"cupy-{args.dtype}"
    columns = {}
    try:
        res, _ = tiers.collect(impl, case, golden, np_name)
    except (WorkerFailure, ContractError) as exc:
        print(f"compare_backends: {args.impl}: {exc}", file=sys.stderr)
        return 1
    columns[f"{np_name} (impl, here)"] = _errors(res, golden)
    columns[f"{np_name} (reference, here)"] = _errors(tiers.collect(InProcess(load_reference()), case, golden,
                                                                    np_name)[0], golden)
    rec = tiers.recorded_errors(golden, np_name)
    if rec:
        columns[f"{np_name} (reference, recorded)"] = rec
    xp, why = backend_xp(cp_name)
    if xp is not None:
        res, _ = tiers.collect(impl, case, golden, cp_name)
        columns[f"{cp_name} (impl, here)"] = _errors(res, golden)
    else:
        rec_cp = tiers.recorded_errors(golden, cp_name)
        if rec_cp:
            env_desc = golden.group_attrs(cp_name).get("environment", {})
            gpu = env_desc.get("gpu", "?") if isinstance(env_desc, dict) else "?"
            print(f"no GPU here ({why}): comparing with the reference's {cp_name} recording in "
                  f"{golden.path} (made on {gpu})")
            columns[f"{cp_name} (reference, recorded)"] = rec_cp
        else:
            print(f"no GPU here ({why}) and no {cp_name} recording in {golden.path}: numpy only "
                  f"(record one on a GPU: scripts/regen_golden.py --case {case.name} --force)")
    keys = list(next(iter(columns.values())))
    names = list(columns)
    print(f"{case.name}: normwise relative error vs numpy-float64 (the oracle), "
          f"{'every tensor' if args.full else 'the worst tensor of each column (--full: every tensor)'}")
    if args.full:
        print(f"{'tensor':48s} " + " ".join(f"{n:>30s}" for n in names))
        for k in keys:
            print(f"{k[:48]:48s} " + " ".join(
                f"{columns[n].get(k, float('nan')):30.2e}" for n in names))
        return 0
    width = max(map(len, names))
    for n in names:
        worst = max(columns[n], key=lambda k: columns[n][k], default=None)
        print(f"  {n:{width}s}  {columns[n][worst]:.2e}  {worst}" if worst else f"  {n:{width}s}  -")
    return 0


if __name__ == "__main__":
    sys.exit(main())
