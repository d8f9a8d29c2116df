#!/usr/bin/env python
"""Make the README's pictures (.github/assets/*.png) from commands a user can run:

  gelu-ratio.png   verify's report for a GELU constant changed from 0.044715 to 0.0447 (the frozen
                   GPT-2 of tests/fixtures): every check's error / tolerance, the first divergence marked
  gelu-flow.png    the code flow of the same failure, drawn from the contract's activation taps
  ok-flow.png      the code flow of impl/gpt2.py passing (every box under its tolerance)
  loss.png         `train.py --plot` of a short baby-GPT run of impl/gpt2.py (loss, val loss, lr)

    python scripts/readme_pictures.py                 # about a minute on 2 cores
    python scripts/readme_pictures.py --out /tmp/pictures

The same pictures, for any file: `scripts/verify.py --impl FILE --report report.html`.
"""
import argparse
import base64
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanoproof import env  # noqa: E402

env.pin()

from nanoproof.paths import FIXTURES_DIR, IMPL_DIR, REPO_ROOT, atomic_write_bytes  # noqa: E402

OUT = REPO_ROOT / ".github" / "assets"
CASE = "tiny"


def save(path, b64):
    atomic_write_bytes(path, base64.b64decode(b64))
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT), help="folder for the PNGs (default: %(default)s)")
    ap.add_argument("--max_iters", type=int, default=500, help="the loss plot's run length (default 500)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from nanoproof.judge import html_report, verify
    from nanoproof.spec.cases import CASES
    n_layer = CASES[CASE].config["n_layer"]
    with tempfile.TemporaryDirectory() as tmp:
        source = (FIXTURES_DIR / "gpt2_frozen.py").read_text()
        if "0.044715" not in source:
            sys.exit("readme_pictures.py: the frozen GPT-2 has no GELU constant 0.044715 to change")
        gelu = Path(tmp) / "gelu.py"
        gelu.write_text(source.replace("0.044715", "0.0447"))
        failed = [r for r in verify.run(str(gelu), [CASE], ("semantic",)) if r.tier == "semantic"][0]
        passed = [r for r in verify.run(str(IMPL_DIR / "gpt2.py"), [CASE], ("semantic",)) if r.tier == "semantic"][0]
        if not failed.failed or passed.failed:
            sys.exit(f"readme_pictures.py: expected the GELU edit to fail and impl/gpt2.py to pass the "
                     f"{CASE} case, got {failed.verdict} and {passed.verdict}")
        save(out / "gelu-ratio.png", html_report.ratio_plot(failed))
        save(out / "gelu-flow.png", html_report.flow_plot(failed, n_layer))
        save(out / "ok-flow.png", html_report.flow_plot(passed, n_layer))

        from nanoproof.scripts import train
        run = Path(tmp) / "run"
        rc = train.main(["--max_iters", str(args.max_iters), "--lr_decay_iters", str(args.max_iters),
                         "--eval_interval", "50", "--out_dir", str(run), "--plot", "log", "--no-progress",
                         "--log_interval", "0"])
        if rc != 0:
            sys.exit(f"readme_pictures.py: the training run failed (exit {rc})")
        atomic_write_bytes(out / "loss.png", (run / "loss.png").read_bytes())
        print(f"wrote {out / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
