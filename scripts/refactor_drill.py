#!/usr/bin/env python3
"""Does the test suite survive the refactors it exists for? Each drill copies this checkout into a
temporary folder, makes one function-preserving edit there, and runs the whole test suite in the copy:

  rename   every local variable of every function of impl/gpt2.py renamed (NAME -> NAME_renamed),
           edited in place
  reorder  impl/gpt2.py's top-level functions put in reverse order, edited in place
  nano     impl/gpt2.py replaced by impl/gpt2_nano.py (NANOPROOF_IMPL=impl/gpt2_nano.py): another
           file with the same function; tests of what gpt2.py offers beyond the contract skip

Each drill prints one line: what was edited, and pytest's summary in the copy. Exit status 0 when
pytest passed in every drill, 1 when one failed (its output is shown), 2 for a usage error.
The copy gets a link to ../shared when this checkout has one, so the same tests run there as here.
Takes about three pytest runs (~8 min on 2 cores).

  python scripts/refactor_drill.py                    # all three
  python scripts/refactor_drill.py --drill rename -- -x -q tests/test_golden.py
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoproof.measure.refactors import rename_locals, reorder_functions  # noqa: E402
from nanoproof.paths import REPO_ROOT  # noqa: E402

DRILLS = ("rename", "reorder", "nano")
SKIP = {".git", ".venv", "mutants", ".nanoproof", "__pycache__", ".hypothesis", ".pytest_cache", "build"}


def copy_checkout(dest):
    """The working tree as it is (tracked and untracked files, not what git ignores) into dest."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO_ROOT, capture_output=True, check=True)
        files = [f for f in out.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):   # not a git checkout: everything but SKIP
        files = [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob("*")
                 if p.is_file() and not SKIP & set(p.relative_to(REPO_ROOT).parts)]
    for f in files:
        src = REPO_ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def edit(drill, repo):
    """Make the drill's edit in the copy `repo`; return (a one-line description, extra environment)."""
    impl = repo / "impl" / "gpt2.py"
    source = impl.read_text(encoding="utf-8")
    if drill == "rename":
        new, n_names, n_functions = rename_locals(source)
        impl.write_text(new, encoding="utf-8")
        return f"{n_names} local variables in {n_functions} functions of impl/gpt2.py renamed", {}
    if drill == "reorder":
        new, order = reorder_functions(source)
        impl.write_text(new, encoding="utf-8")
        return f"impl/gpt2.py's {len(order)} functions in reverse order ({order[0]} first)", {}
    return "impl/gpt2.py replaced by impl/gpt2_nano.py", {"NANOPROOF_IMPL": "impl/gpt2_nano.py"}


def summary(output):
    lines = [ln.strip("= ") for ln in output.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--drill", action="append", choices=DRILLS,
                    help="run this drill (repeatable; default: all three)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies (their paths are printed)")
    ap.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest (default: -q)")
    args = ap.parse_args(argv)
    shared = REPO_ROOT.parent / "shared"
    failed = []
    for drill in args.drill or DRILLS:
        base = Path(tempfile.mkdtemp(prefix=f"nanoproof-drill-{drill}-"))
        repo = base / REPO_ROOT.name
        try:
            copy_checkout(repo)
            if shared.is_dir():
                (base / "shared").symlink_to(shared)
            what, env = edit(drill, repo)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                   *(args.pytest_args or ["-q"])],
                                  cwd=repo, env={**os.environ, **env}, capture_output=True, text=True)
            verdict = "ok" if proc.returncode == 0 else "FAIL"
            print(f"{drill:8s} {verdict:4s} {what}: pytest {summary(proc.stdout)} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            if proc.returncode != 0:
                failed.append(drill)
                print(proc.stdout[-6000:] + proc.stderr[-2000:], flush=True)
            if args.keep:
                print(f"         kept: {repo}")
        finally:
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
    print(f"refactor drill: {'FAIL in ' + ', '.join(failed) if failed else 'the suite survived every drill'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
