#!/usr/bin/env python
"""Summarise a mutmut 3 run over impl/gpt2.py and check every surviving mutant against the
classification kept as data in harness/measure/mutmut_survivors.json.

    python scripts/mutmut_report.py --run          # mutmut in a temporary copy of the repo, then the report
    python scripts/mutmut_report.py                # the report of a finished `mutmut run` (./mutants/)
    python scripts/mutmut_report.py --root DIR     # ... of a run kept in DIR (DIR/mutants/)

mutmut's test command is the fast semantic tier (tests/test_semantic_tier.py: float64 against the
golden files of the small cases and the generate case) plus the tests that close its gaps (tests/test_mutation_gaps.py);
pyproject.toml's [tool.mutmut] configures it. The report prints, per function of impl, how many
mutants were killed, survived, timed out or had no tests. Functions outside the semantic tier's reach
by design (the command line, data loading, training loop, pretrained-weight loading:
"out_of_scope" in the classification file) are counted apart; their mutants must have no tests. Every survivor must be
classified, keyed by its function and diff (not mutmut's numbering, which moves as the file changes):
"equivalent" (with the reason), or "gap" (with the test that closes it, or the fix proposed where
the closing change belongs to the harness or the golden files).

Exit status 0 when every survivor is classified, every gap said to be closed is killed, and no
in-scope function is without tests; 1 otherwise; 2 on a usage error (no mutmut results, mutmut not
installed, a malformed classification file).
"""
import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from nanoproof.cli import positive_int  # noqa: E402

SOURCE = Path("impl/gpt2.py")
SURVIVORS = REPO_ROOT / "harness" / "measure" / "mutmut_survivors.json"
# what `--run` copies: what mutmut needs to generate mutants and run the semantic tier
COPY = ("impl", "harness", "reference", "golden", "tests", "pyproject.toml")
CLASSES = ("equivalent", "gap")
DETECTED = ("killed", "timeout", "segfault", "caught by type check")


class UsageError(Exception):
    pass


def need_mutmut():
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.stats import status_by_exit_code
    except ImportError as exc:
        raise UsageError(f"mutmut is not installed ({exc}): pip install -e '.[mutation]'") from None
    return get_diff_for_mutant, status_by_exit_code


# ----------------------------------------------------------------------------- reading mutmut's results

def function_of(mutant):
    """'impl.gpt2.x_forward__mutmut_12' -> 'forward'."""
    return mutant.rpartition(".")[2].partition("__mutmut_")[0][len("x_"):]


def diff_key(diff):
    """The stable key of a mutant: its removed and added lines, whitespace-trimmed (no line numbers,
    no file names, no mutmut numbering)."""
    lines = [ln for ln in diff.splitlines() if ln[:1] in "-+" and not ln.startswith(("---", "+++"))]
    return "\n".join(ln[0] + " " + ln[1:].strip() for ln in lines)


def read_results(root):
    """[{name, function, status, key}] of the run under root/mutants, in mutmut's order."""
    get_diff, status_by_exit_code = need_mutmut()
    meta = root / "mutants" / (str(SOURCE) + ".meta")
    if not meta.is_file():
        raise UsageError(f"{meta}: no mutmut results (run `mutmut run` in {root}, or pass --run)")
    try:
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise UsageError(f"{meta}: not a mutmut 3 meta file: {type(exc).__name__}: {exc}") from None
    out = []
    with contextlib.chdir(root):  # mutmut's readers take paths relative to the project root
        for name, code in codes.items():
            status = status_by_exit_code[code]
            key = diff_key(get_diff(name, path=SOURCE)) if status != "no tests" else None
            out.append({"name": name, "function": function_of(name), "status": status, "key": key})
    return out


# ----------------------------------------------------------------------------- the classification

def entry_key(s):
    """A classification entry's key: (function, its diff lines joined), as diff_key makes them."""
    return s["function"], "\n".join(s["diff"])


def load_classification(path):
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such classification file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON: {exc}") from None
    for k in ("out_of_scope", "survivors"):
        if k not in doc:
            raise UsageError(f"{path}: missing key {k!r}")
    seen = set()
    for i, s in enumerate(doc["survivors"]):
        where = f"{path}: survivors[{i}]"
        missing = [k for k in ("function", "diff", "class", "reason") if not s.get(k)]
        if missing:
            raise UsageError(f"{where}: missing {', '.join(missing)}")
        if not (isinstance(s["diff"], list) and all(isinstance(ln, str) for ln in s["diff"])):
            raise UsageError(f"{where}: diff must be a list of lines ('- old', '+ new'), got {s['diff']!r}")
        if s["class"] not in CLASSES:
            raise UsageError(f"{where}: class must be one of {CLASSES}, got {s['class']!r}")
        if s["class"] == "gap" and bool(s.get("closed_by")) == bool(s.get("proposed")):
            raise UsageError(f"{where}: a gap needs exactly one of closed_by (the test) or proposed (the fix)")
        key = entry_key(s)
        if key in seen:
            raise UsageError(f"{where}: duplicate entry for {s['function']}: {s['diff']!r}")
        seen.add(key)
    return doc



def check(results, doc):
    """Everything the report prints and the exit status depends on."""
    out_of_scope = doc["out_of_scope"]
    by_key = {entry_key(s): s for s in doc["survivors"]}
    per_func = defaultdict(Counter)
    for r in results:
        per_func[r["function"]][r["status"]] += 1
    survived = [r for r in results if r["status"] == "survived"]
    unclassified = [r for r in survived if (r["function"], r["key"]) not in by_key]
    matched = {(r["function"], r["key"]): r for r in survived if (r["function"], r["key"]) in by_key}
    present = {r["function"] for r in results}
    detected = {(r["function"], r["key"]) for r in results if r["status"] in DETECTED}
    # a gap said to be closed must not survive any more
    still_open = [r for k, r in matched.items() if by_key[k].get("closed_by")]
    return {
        "per_func": per_func,
        "out_of_scope": out_of_scope,
        "survived": survived,
        "unclassified": unclassified,
        "equivalent": [r for k, r in matched.items() if by_key[k]["class"] == "equivalent"],
        "open_gaps": [(r, by_key[k]) for k, r in matched.items() if by_key[k].get("proposed")],
        "closed_gaps": [s for k, s in by_key.items() if s.get("closed_by") and k in detected],
        # entries that match no mutant of this run (impl changed): harmless, but worth pruning
        "stale": [s for k, s in by_key.items() if k not in matched and k not in detected],
        "closed_but_surviving": [(r, by_key[(r["function"], r["key"])]) for r in still_open],
        # model functions the fast tier never reaches: a hole, unless out of scope on purpose
        "untested_in_scope": sorted(f for f, c in per_func.items() if c["no tests"] and f not in out_of_scope),
        # out-of-scope functions the tier does reach: the scope list is out of date
        "reached_out_of_scope": sorted(f for f in out_of_scope if f in per_func
                                       and sum(per_func[f].values()) != per_func[f]["no tests"]),
        "unknown_out_of_scope": sorted(f for f in out_of_scope if f not in present),
        # an interrupted run leaves mutants unchecked: its counts prove nothing about them
        "not_checked": [r for r in results if r["status"] == "not checked"],
    }


def format_report(c):
    lines = []
    cols = ("killed", "survived", "timeout", "no tests", "other")

    def row(name, cnt):
        other = sum(cnt.values()) - sum(cnt[k] for k in cols[:-1])
        return f"  {name:22} " + " ".join(f"{(cnt[k] if k != 'other' else other):>9}" for k in cols)

    header = f"  {'function':22} " + " ".join(f"{k:>9}" for k in cols)
    for title, scope in (("in scope (the model math the semantic tier checks)", False),
                         ("out of scope by design (command line, I/O, training loop, weight loading)", True)):
        funcs = [f for f in c["per_func"] if (f in c["out_of_scope"]) == scope]
        total = sum((c["per_func"][f] for f in funcs), Counter())
        lines += [f"{title}: {sum(total.values())} mutants", header]
        lines += [row(f, c["per_func"][f]) for f in funcs] + [row("total", total), ""]
        if not scope:
            detected = sum(total[k] for k in DETECTED)
            ran = detected + total["survived"]
            if ran:
                lines.append(f"  in-scope kill rate: {detected}/{ran} = {detected / ran:.1%} "
                             f"(equivalent survivors: {len(c['equivalent'])})")
                if ran - len(c["equivalent"]):
                    lines.append(f"  kill rate over non-equivalent mutants: {detected}/"
                                 f"{ran - len(c['equivalent'])} = {detected / (ran - len(c['equivalent'])):.1%}")
                lines.append("")
    lines.append(f"survivors: {len(c['survived'])} — equivalent {len(c['equivalent'])}, open gaps "
                 f"{len(c['open_gaps'])}, unclassified {len(c['unclassified'])}; gaps closed by a test "
                 f"(now killed): {len(c['closed_gaps'])}")
    for r, s in c["open_gaps"]:
        lines.append(f"  open gap {r['name']}: {s['reason']}\n    proposed: {s['proposed']}")
    for test, n in Counter(s["closed_by"] for s in c["closed_gaps"]).items():
        funcs = sorted({s["function"] for s in c["closed_gaps"] if s["closed_by"] == test})
        lines.append(f"  closed by {test}: {n} gap mutant(s) of {', '.join(funcs)}, all killed")
    for s in c["stale"]:
        lines.append(f"  note: stale entry ({s['function']}, {s['class']}) matches no mutant of this run: "
                     + " / ".join(s["diff"]))
    problems = []
    for r in c["unclassified"]:  # printed as an entry to complete and paste into the classification
        entry = {"function": r["function"], "diff": r["key"].splitlines(), "class": "equivalent | gap",
                 "reason": "...", "mutmut_name": r["name"]}
        problems.append("unclassified survivor: " + json.dumps(entry, ensure_ascii=False))
    for r, s in c["closed_but_surviving"]:
        problems.append(f"{r['name']} survives although {s['closed_by']} is said to close it")
    for f in c["untested_in_scope"]:
        problems.append(f"{f}: {c['per_func'][f]['no tests']} mutants with no tests, and {f} is not out of "
                        f"scope (harness/measure/mutmut_survivors.json): the semantic tier never calls it")
    for f in c["reached_out_of_scope"]:
        problems.append(f"{f} is listed out of scope but the tests reach it: classify its mutants instead")
    if c["not_checked"]:
        problems.append(f"{len(c['not_checked'])} mutants not checked (an interrupted run?): run mutmut again")
    for f in c["unknown_out_of_scope"]:
        lines.append(f"  note: out-of-scope function {f} is not in impl (any more)")
    if problems:
        lines += ["", f"PROBLEMS ({len(problems)}):"] + ["  " + p for p in problems]
    lines += ["", "mutmut report: " + ("FAIL" if problems else "OK")]
    return lines, bool(problems)


# ----------------------------------------------------------------------------- --run

def run_mutmut(workdir, max_children):
    """A fresh copy of what mutmut needs in workdir, then `mutmut run` there. Returns seconds."""
    for name in COPY:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, workdir / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, workdir / name)
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if mutmut is None:
        raise UsageError("the mutmut command is not installed: pip install -e '.[mutation]'")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    # mutmut's own progress line goes to stderr, the report to stdout
    proc = subprocess.run([mutmut, "run", "--max-children", str(max_children)], cwd=workdir, env=env,
                          stdout=sys.stderr, stderr=sys.stderr)
    print(file=sys.stderr)
    if proc.returncode != 0:
        raise UsageError(f"`mutmut run` in {workdir} failed with exit status {proc.returncode} (its output above)")
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path.cwd(),
                    help="folder holding mutmut's mutants/ (default the current folder)")
    ap.add_argument("--run", action="store_true",
                    help="first run mutmut in a fresh temporary copy of the repo (~7 min on one core)")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="with --run: run in DIR (created; must not exist) and keep it, for `mutmut show`")
    ap.add_argument("--max-children", type=positive_int, default=1, help="mutmut's worker processes (default 1)")
    ap.add_argument("--classification", type=Path, default=SURVIVORS,
                    help="the survivors' classification (default harness/measure/mutmut_survivors.json)")
    args = ap.parse_args(argv)
    try:
        doc = load_classification(args.classification)
        root = args.root
        with contextlib.ExitStack() as stack:
            if args.run:
                if args.keep:
                    if args.keep.exists():
                        raise UsageError(f"--keep {args.keep}: already exists")
                    args.keep.mkdir(parents=True)
                    root = args.keep
                else:
                    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nanoproof-mutmut-")))
                print(f"mutmut run in {root} (about 6 minutes on one core) ...", flush=True)
                print(f"mutmut run: {run_mutmut(root, args.max_children):.0f} s", flush=True)
            results = read_results(root.resolve())
    except UsageError as exc:
        print(f"mutmut_report: {exc}", file=sys.stderr)
        return 2
    lines, failed = format_report(check(results, doc))
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
