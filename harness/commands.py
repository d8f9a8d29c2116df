"""`nanoproof COMMAND [ARGS]`: one entry point for the commands of scripts/ (installed as the package
nanoproof.scripts), so an installed nanoproof works from any folder:

    nanoproof verify --impl my_gpt2.py      nanoproof train --max_iters 500 --plot
    nanoproof gate --log out/log.jsonl      nanoproof sample --ckpt out/ckpt.npz "ROMEO:"

Standard library only before the command's module loads: each command pins the BLAS before numpy."""
import importlib
import sys

COMMANDS = {   # command -> (module in nanoproof.scripts, what it does)
    "verify": ("verify", "same function as the golden files and reference/? (the main job)"),
    "compare": ("compare_scores", "is B's val loss better, worse or indistinguishable from A's, and faster? (n seeds, t-tests)"),
    "gate": ("gate_val_loss", "the val-loss gate: a run, a number or a training log against the seed band"),
    "train": ("train", "train a contract file nanoGPT-style (log, checkpoints, resume, plot)"),
    "sample": ("sample", "generate text from a checkpoint or Hugging Face GPT-2 weights"),
    "eval": ("eval", "mean cross-entropy and perplexity of weights on a data split"),
    "plot": ("plot", "overlay training runs' logs in one picture"),
    "prepare": ("prepare_data", "tokenize a text into train.bin / val.bin / meta.json"),
    "regen": ("regen_golden", "regenerate golden files from reference/ (on purpose)"),
    "snapshot": ("snapshot", "a bitwise baseline for the exact tier, before an edit"),
    "calibrate": ("calibrate", "re-measure the tolerances and print their headroom"),
    "bench": ("bench", "training speed against PyTorch eager"),
    "bench-generate": ("bench_generate", "generation speed with and without the KV cache"),
    "compare-backends": ("compare_backends", "numpy and cupy errors side by side"),
    "mutate": ("mutate", "the mutation catalog and sensitivity report"),
}


def usage():
    width = max(map(len, COMMANDS))
    return ("usage: nanoproof COMMAND [ARGS]   (nanoproof COMMAND --help for its options)\n\ncommands:\n"
            + "\n".join(f"  {name:{width}}  {what}" for name, (_, what) in COMMANDS.items()))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nanoproof: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [f"nanoproof {name}", *rest]          # argparse's prog in usage lines
    module = importlib.import_module(f"nanoproof.scripts.{COMMANDS[name][0]}")
    if name in ("train", "eval", "bench", "compare"):
        from nanoproof import env
        env.keep_freed_memory()                       # as the scripts do when run directly
    try:
        return module.main(rest)
    except BrokenPipeError:   # `nanoproof verify | head`: the reader left; the verdict is in the exit status
        sys.stderr.close()
        return 1
