#!/usr/bin/env python
"""Overlay training runs: the loss (training batches and evaluated val loss) and the learning rate of
each log.jsonl against step, in one PNG. Before and after an edit, CPU against GPU, two seeds:

    python scripts/plot.py out/log.jsonl out_edit/log.jsonl --out compare.png
    python scripts/plot.py run1/log.jsonl run2/log.jsonl --labels before,after --log --title "GELU rewrite"

A run's label defaults to the name of the folder its log is in; each run's last val loss is in the
legend. Exit status 0 written, 2 a log that cannot be read (the file and line are named).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoproof.tools.checkpoints import TrainingError, plot_runs, read_log  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", metavar="LOG", help="log.jsonl files written by scripts/train.py")
    ap.add_argument("--out", default="runs.png", help="the PNG to write (default: %(default)s)")
    ap.add_argument("--labels", help="comma-separated labels, one per log (default: each log's folder name)")
    ap.add_argument("--title", default="", help="a title above the plot")
    ap.add_argument("--log", action="store_true", help="a log loss axis")
    args = ap.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [Path(p).resolve().parent.name for p in args.logs]
    if len(labels) != len(args.logs):
        ap.error(f"--labels has {len(labels)} labels for {len(args.logs)} logs")
    try:
        runs = [(label, read_log(path)) for label, path in zip(labels, args.logs)]
    except TrainingError as exc:
        print(f"plot.py: error: {exc}", file=sys.stderr)
        return 2
    empty = [label for label, records in runs if not records]
    if empty:
        print(f"plot.py: error: no records in the log of {', '.join(empty)}", file=sys.stderr)
        return 2
    plot_runs(runs, args.out, title=args.title, log_y=args.log)
    print(f"wrote {args.out}: {', '.join(labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
