#!/usr/bin/env python
"""Is B's score better, worse or indistinguishable from A's, and how much faster is it?
(`nanoproof compare A.py B.py`; harness/measure/compare.py does the work.)"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402  (stdlib only)

env.pin()   # one BLAS thread per process, before numpy loads (the workers inherit it)

import argparse  # noqa: E402
import json  # noqa: E402

from nanoproof.cli import positive_int, nonnegative_int  # noqa: E402
from nanoproof.paths import WORK_DIR, atomic_write_bytes, command  # noqa: E402

DEFAULT_SEEDS, DEFAULT_MAX_ITERS = 5, 500

DESCRIPTION = """\
verify answers "same function?". compare answers the next question, for a function changed on
purpose (a faster architecture, an Elman RNN, one change from a paper): is B's final val loss better,
worse, or indistinguishable from A's, and how much faster is B per step?

One run per side cannot say: the baby GPT's val loss moves by ~0.01 from seed to seed, and float32
rounding alone moves a 1000-step run by ~0.025. So each side is trained for --seeds seeds (seed s: init
from s, training batches from PCG64([s, 1]): a pair of runs sees the same batches when block_size and
batch_size agree), and the final val losses are compared as speedrun records are: per side mean, std,
min, max; the paired differences B - A with their 95% confidence interval, the paired t-test and
Welch's t-test (scipy.stats), the effect size; ms per step, wall time and parameter counts. The verdict:
"B is better/worse by D ± h (95% CI; paired t-test p, n)" when the test's p < --alpha, else
"indistinguishable at n = N (...); would need about n = M pairs to resolve D" (80% power, from the
observed spread; --resolve D asks about another D). Lower loss is better; differences are B - A.

A and B are contract files that need only the training subset of the contract (init, forward,
backward, adamw_step, lr_at, get_batch: harness/spec/contract.py); both may be one file with two
settings (--b-set learning_rate=1e-4). Settings default to nanoGPT's baby GPT on tiny Shakespeare
(n_layer 4, n_head 4, n_embd 128, block_size 64, batch 12, lr 1e-3 warming up 100 steps and decaying
to 1e-4 at the last step).

Budget: the same number of steps (--max_iters, default {max_iters}), or the same wall-clock time
(--time_budget SECONDS: each side trains for budget / (its ms per step) steps, its learning-rate decay
ending there; evaluations not counted). Speed comes from a timing run that alternates the two sides'
steps in one process (--timing_iters each), so both meet the same load on a busy machine.

Resumable: every run is a checkpointed training run under --out_dir/runs/<file>-<hash of its content
and settings>/seed<s>/; run the same command again after an interruption and it continues where each
run stopped; finished runs are read back, never retrained (so more --seeds only adds runs, and
comparisons sharing a side share its runs). Runs go to --jobs worker processes, one BLAS thread each.
""".replace("{max_iters}", str(DEFAULT_MAX_ITERS))

EPILOG = """\
examples:
  nanoproof compare impl/gpt2.py impl/gpt2.py --seeds 4 --max_iters 300      # A vs A: indistinguishable
  nanoproof compare impl/gpt2.py impl/variants/rnn.py --plot out/gpt_vs_rnn.png
  nanoproof compare impl/gpt2.py impl/gpt2.py --b-set learning_rate=1e-4     # one file, two settings
  nanoproof compare impl/gpt2.py my_gpt2.py --time_budget 60 --json report.json

exit status: 0 when the comparison ran (whatever its verdict); 2 on a user error (a missing file, a
file without the training contract, a bad KEY=VALUE, a run that failed or diverged): one line on
stderr. Ctrl-C stops it; the same command continues.
"""


def build_parser():
    p = argparse.ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A.py", help="side A: a contract file (the baseline)")
    p.add_argument("b", metavar="B.py", nargs="?", default=None,
                   help="side B: a contract file (default: A again, with --b-set settings)")
    r = p.add_argument_group("runs")
    r.add_argument("--seeds", type=positive_int, default=DEFAULT_SEEDS, metavar="N",
                   help="runs per side, seeds --seed0 .. --seed0+N-1 (default: %(default)s)")
    r.add_argument("--seed0", type=nonnegative_int, default=1337, metavar="S", help="first seed (default: %(default)s)")
    r.add_argument("--b-seed-offset", "--b_seed_offset", dest="b_seed_offset", type=nonnegative_int, default=0,
                   metavar="K", help="side B uses seeds seed0+K ...: independent runs instead of pairs "
                                     "(a real null for A vs A; Welch's test decides) (default: 0)")
    budget = r.add_mutually_exclusive_group()
    budget.add_argument("--max_iters", type=positive_int, default=None, metavar="N",
                        help=f"same step budget: N steps per run (default: {DEFAULT_MAX_ITERS})")
    budget.add_argument("--time_budget", type=float, default=None, metavar="SECONDS",
                        help="same wall-clock budget: each side trains for SECONDS of its measured step time")
    r.add_argument("--timing_iters", type=positive_int, default=40, metavar="N",
                   help="timed steps per side of the timing run (speed, and --time_budget's steps) "
                        "(default: %(default)s)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for both sides: n_layer, n_head, n_embd, block_size, batch_size or a "
                        "hyperparameter (learning_rate, min_lr, warmup_iters, lr_decay_iters, ...); repeatable")
    r.add_argument("--a-set", "--a_set", dest="a_sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for side A only (repeatable)")
    r.add_argument("--b-set", "--b_set", dest="b_sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for side B only (repeatable)")
    r.add_argument("--eval_interval", type=positive_int, default=None, metavar="N",
                   help="evaluate (a point of the plotted curve) every N steps (default: a tenth of the run)")
    r.add_argument("--eval_iters", type=positive_int, default=20, metavar="N",
                   help="batches per val-loss estimate; the same batches for both sides (default: %(default)s)")
    r.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="(default: %(default)s)")
    r.add_argument("--dataset", metavar="DIR", default=None,
                   help="prepared data folder (default: <repo>/data/shakespeare_char, prepared from the "
                        "shipped tiny Shakespeare when missing)")
    r.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="worker processes (default: the cores this process may use)")
    r.add_argument("--out_dir", metavar="DIR", default=None,
                   help="where the runs and timings go (default: <repo>/out/compare)")
    s = p.add_argument_group("statistics and output")
    s.add_argument("--alpha", type=float, default=0.05, help="test level (default: %(default)s)")
    s.add_argument("--resolve", type=float, default=None, metavar="D",
                   help="when indistinguishable, the n needed to resolve a difference D (default: the observed one)")
    s.add_argument("--json", metavar="PATH", help="also write the comparison as JSON ('-': to stdout only)")
    s.add_argument("--plot", metavar="PATH.png", help="write val-loss curves (mean and band) and the per-seed "
                                                      "differences to this PNG")
    s.add_argument("--no-progress", "--no_progress", dest="progress", action="store_false",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")
    return p


def default_dataset(log):
    """<repo>/data/shakespeare_char, prepared from tiny Shakespeare when missing (as train does)."""
    from nanoproof.tools.data import find_tinyshakespeare, prepare
    folder = WORK_DIR / "data" / "shakespeare_char"
    if not (folder / "meta.json").is_file():
        log(f"{folder} not found: preparing it from tiny Shakespeare (char mode)")
        text_path, source = find_tinyshakespeare(log=log)
        prepare(text_path, folder, mode="char", source=source)
    return folder


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet = args.json == "-"
    out = sys.stderr if quiet else sys.stdout

    def say(msg):
        print(msg, file=out, flush=True)

    if not 0 < args.alpha < 1:
        print(f"compare: error: --alpha must be between 0 and 1, got {args.alpha}", file=sys.stderr)
        return 2
    if args.time_budget is not None and not args.time_budget > 0:
        print(f"compare: error: --time_budget must be > 0 seconds, got {args.time_budget}", file=sys.stderr)
        return 2
    if args.seeds < 2:
        print(f"compare: error: --seeds {args.seeds}: a comparison needs at least 2 runs per side to "
              f"estimate the noise (5 or more to resolve ~0.01)", file=sys.stderr)
        return 2
    from nanoproof.measure import compare, stats
    from nanoproof.spec.contract import ContractError
    from nanoproof.tools.data import DataError
    try:
        sides = compare.make_sides(args.a, args.b or args.a, sets=args.sets, a_sets=args.a_sets,
                                   b_sets=args.b_sets, seeds=args.seeds, seed0=args.seed0,
                                   b_seed_offset=args.b_seed_offset)
        data_dir = Path(args.dataset) if args.dataset else default_dataset(say)
        out_dir = Path(args.out_dir) if args.out_dir else WORK_DIR / "out" / "compare"
        max_iters = None if args.time_budget is not None else (args.max_iters or DEFAULT_MAX_ITERS)
        budget = f"{args.time_budget:g} s of training each" if args.time_budget else f"{max_iters} steps each"
        say(f"compare: A = {sides[0].name}, B = {sides[1].name}: {args.seeds} seeds per side, {budget}, "
            f"{args.jobs or compare.available_cores()} worker processes")
        c = compare.compare(sides, data_dir, out_dir, max_iters=max_iters, time_budget=args.time_budget,
                            eval_interval=args.eval_interval, eval_iters=args.eval_iters, dtype=args.dtype,
                            jobs=args.jobs, alpha=args.alpha, resolve=args.resolve,
                            timing_iters=args.timing_iters, progress=args.progress, echo=say)
    except (compare.CompareError, ContractError, DataError, stats.StatsError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("compare: interrupted; run the same command again to continue (finished runs and "
              "checkpoints are kept)", file=sys.stderr)
        return 130
    if not quiet:
        print()
        print("\n".join(compare.report_lines(c)))
    if args.plot:
        compare.plot(c, args.plot)
        say(f"plot: {args.plot}")
    if args.json:
        text = json.dumps(c.as_dict(), indent=1)
        if quiet:
            print(text)
        else:
            atomic_write_bytes(args.json, (text + "\n").encode())
            say(f"json: {args.json}")
    if not quiet:
        say(next_step(c, args))
    return 0


def next_step(c, args):
    """One line: what to do next."""
    v = c.verdict
    if v.outcome == "indistinguishable" and v.needed_n and v.needed_n > args.seeds:
        return (f"next: rerun with --seeds {v.needed_n} to resolve {v.resolve:.2g} (the {args.seeds} finished "
                f"runs per side are kept), or accept that the difference is below what matters")
    if v.outcome == "identical":
        return ("next: the two sides computed the same numbers; to measure noise instead, add "
                "--b-seed-offset 100 (independent seeds)")
    if c.mode == "steps" and v.outcome in ("better", "worse"):
        return ("next: compare at the same wall-clock budget too (--time_budget SECONDS): a faster side may "
                "win there even when it loses per step")
    if c.mode == "time" and v.outcome in ("better", "worse"):
        return ("next: compare at the same step budget too (--max_iters N): it says whether B is better per step, "
                "or only because it takes more steps in the time")
    return f"next: {command('verify', 'verify')} --impl FILE checks a file still is GPT-2; compare measures one that is not"


if __name__ == "__main__":
    sys.exit(main())
