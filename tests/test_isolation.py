"""The judge cannot be ended or rewritten by the code it judges (harness/runner/worker.py).

Each fake below is a contract file that tries to make verify say OK, or to end it with status 0,
without computing GPT-2: it exits inside forward, exits at import (sys.exit, os._exit), registers an
atexit hook that exits 0 after a FAIL, monkeypatches the harness's verdict, loops for ever, prints
into `--json -`. Each must make scripts/verify.py exit non-zero with a one-line reason. The fakes wrap
reference/ (not impl/gpt2.py, whose text users edit), so they are correct GPT-2s except for the trick.
"""
import ast
import json
import subprocess
import sys
import textwrap

import pytest

from nanoproof.judge import tiers
from nanoproof.spec import tolerances
from nanoproof.spec.cases import CASES
from conftest import REFERENCE_AS_CONTRACT, VERIFY, last_line, run_verify
from nanoproof.paths import REPO_ROOT as REPO
from nanoproof.runner.worker import Isolated

HEAD = REFERENCE_AS_CONTRACT

FAKES = {
    "exit in forward": (HEAD + """
def forward(params, idx, targets, config):
    exit()
""", "forward() — raised SystemExit"),
    "sys.exit(0) at import": (HEAD + "sys.exit(0)\n", "exited with status 0 before reporting any results"),
    "os._exit(0) at import": (HEAD + "import os\nos._exit(0)\n",
                              "exited with status 0 before reporting any results"),
    "atexit os._exit(0) after a changed loss": (HEAD + """
import atexit, os
atexit.register(lambda: os._exit(0))
def forward(params, idx, targets, config):
    loss, cache = _ref.forward(params, idx, targets, config)
    return (None if loss is None else loss * (1 + 1e-6)), cache
""", "tiny: semantic tier, loss, step 0: loss (rel err"),
    "monkeypatched verdict, every function raises": ("""\
import nanoproof.judge.report
nanoproof.judge.report.TierResult.failed = property(lambda self: False)
nanoproof.judge.report.verdict = lambda *a, **k: None
def _raise(*args, **kwargs):
    raise RuntimeError("no model here")
init = forward = backward = adamw_step = lr_at = get_batch = generate = _raise
""", "init() — raised RuntimeError: no model here"),
    "killed by a signal": (HEAD + """
import os, signal
def backward(params, cache, config):
    os.kill(os.getpid(), signal.SIGKILL)
""", "was killed by signal 9 before reporting any results"),
}


def verify(impl, *args):
    return run_verify(impl, *args, timeout=120)


@pytest.mark.parametrize("name", list(FAKES))
def test_fake_cannot_pass_or_end_verify(tmp_path, name):
    text, reason = FAKES[name]
    path = tmp_path / "fake.py"
    path.write_text(text)
    proc = verify(path, "--case", "tiny", "--tier", "semantic")
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr
    line = last_line(proc)
    assert line.startswith("verify: FAIL"), line
    assert reason in line, line


def test_endless_loop_times_out(tmp_path):
    path = tmp_path / "loop.py"
    path.write_text(HEAD + "\ndef forward(params, idx, targets, config):\n    while True:\n        pass\n")
    proc = verify(path, "--case", "tiny", "--tier", "semantic", "--timeout", "3")
    assert proc.returncode == 1
    assert "run: the code under test — timed out after 3 s" in last_line(proc), last_line(proc)


def test_printing_impl_fails_and_never_corrupts_json(tmp_path):
    """A file that prints (here: a lot, in forward) cannot corrupt `--json -`: stdout holds only the
    JSON document, which records the failure and what was printed."""
    path = tmp_path / "loud.py"
    path.write_text(HEAD + textwrap.dedent("""
        def forward(params, idx, targets, config):
            print("x" * 10000)
            return _ref.forward(params, idx, targets, config)
    """))
    proc = verify(path, "--case", "tiny", "--tier", "semantic", "--json", "-")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "FAIL" and doc["schema_version"] == 1 and doc["tool"] == "verify"
    assert "printed" in doc["summary"] and "to stdout" in doc["summary"]
    assert "xxxx" in doc["results"][0]["output"]


def test_writing_into_inputs_cannot_corrupt_the_golden_inputs(tmp_path):
    """A forward that writes into its idx, in this process (InProcess): the golden inputs are handed
    over as copies, so the sampler check still sees the recorded batches and passes."""
    from nanoproof.runner.worker import InProcess
    from nanoproof import reference
    import types
    mod = types.SimpleNamespace(**{n: getattr(reference, n) for n in
                                   ("init", "backward", "adamw_step", "lr_at", "get_batch", "generate")})

    def forward(params, idx, targets, config):
        out = reference.forward(params, idx.copy(), targets, config)
        idx[...] = 0
        return out
    mod.forward = forward
    case = CASES["tiny"]
    golden = tiers.load_case_golden(case)
    before = golden.data["inputs/x"].copy()
    res, _ = tiers.semantic(InProcess(mod), case, golden, tolerances.load())
    assert not res.failed, res.first_failure()
    assert (golden.data["inputs/x"] == before).all()


def test_parent_never_imports_the_implementation(tmp_path):
    path = tmp_path / "marker_impl.py"
    path.write_text(HEAD + "import builtins\nbuiltins.NANOPROOF_MARKER_IMPORTED = True\n")
    case = CASES["tiny"]
    res, _ = tiers.semantic(Isolated(path), case, tiers.load_case_golden(case), tolerances.load())
    assert not res.failed, res.first_failure()
    import builtins
    assert not hasattr(builtins, "NANOPROOF_MARKER_IMPORTED")
    assert not [m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == str(path)]


def test_reference_wrapper_passes(tmp_path):
    """The fakes' base (reference/ re-exported as a contract file) passes in a worker: each fake
    above fails because of its trick, not because of the wrapper."""
    path = tmp_path / "ref.py"
    path.write_text(HEAD)
    proc = verify(path, "--case", "tiny", "--case", "generate", "--tier", "semantic", "--tier", "backend")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert last_line(proc).startswith("verify: OK — same function")


def test_replaying_the_recorded_cases_fails_the_fresh_tier(tmp_path):
    """A file that is right on every recorded case and computes nothing elsewhere (a lookup table
    of the golden files, in effect: here reference/ behind a check of the case's config) passes the
    golden tiers, and verify still FAILs it: the fresh tier draws cases no file can have recorded."""
    path = tmp_path / "lookup.py"
    path.write_text(HEAD + f"""
_RECORDED = {[dict(c.config) for c in CASES.values()]!r}

def _recorded(config):
    return dict(config) in _RECORDED

def forward(params, idx, targets, config):
    if _recorded(config):
        return _ref.forward(params, idx, targets, config)
    return 0.0, {{}}

def generate(params, prompts, n_tokens, config, **kwargs):
    if _recorded(config):
        return _ref.generate(params, prompts, n_tokens, config, **kwargs)
    return [[] for _ in prompts], _np.zeros((len(prompts), 0, config["vocab_size"]))
""")
    golden_only = verify(path, "--tier", "semantic", "--tier", "backend", "--case", "tiny",
                         "--case", "gpt2-vocab", "--case", "generate")
    assert golden_only.returncode == 0, golden_only.stdout[-3000:]
    proc = verify(path, "--tier", "semantic", "--tier", "backend", "--tier", "fresh", "--case", "tiny",
                  "--fresh-seed", "7")
    assert proc.returncode == 1
    line = last_line(proc)
    assert line.startswith("verify: FAIL — first divergence: fresh (seed 7): fresh tier"), line


# the judge's layers (README, "Layout"): what the judge and its workers may never load
NOT_IN_THE_JUDGE = ("nanoproof.golden.regen", "nanoproof.tools", "nanoproof.measure")


def _imports(module):
    """The harness/ and reference/ modules that `module`'s source imports anywhere (top level or
    inside functions), as dotted names of files that exist."""
    def exists(name):
        p = source_path(name)
        return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()
    p = source_path(module)
    src = p.with_suffix(".py") if p.with_suffix(".py").is_file() else p / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "nanoproof" and exists(m)}


def source_path(module):
    """Where a nanoproof module's source is in the checkout (pyproject's package-dir: nanoproof is
    harness/, nanoproof.reference is reference/), without the .py suffix."""
    parts = module.split(".")[1:]
    if parts[:1] == ["reference"]:
        return REPO.joinpath("reference", *parts[1:])
    return REPO.joinpath("harness", *parts)


@pytest.mark.parametrize("start", ["nanoproof.judge.verify", "nanoproof.runner.worker"])
def test_the_judge_never_imports_regeneration_or_data_preparation(start):
    """Data flows one way: everything verify and its worker processes can import, followed through
    every import statement of the source (not only those a run happens to reach), stays out of
    golden regeneration, the training/data/eval tools and the measurement tools."""
    via, todo = {start: None}, [start]
    while todo:
        module = todo.pop()
        for name in _imports(module):
            if name not in via:
                via[name] = module
                todo.append(name)
    bad = sorted(m for m in via if m.startswith(NOT_IN_THE_JUDGE))
    chains = []
    for m in bad:
        chain = [m]
        while via[chain[-1]] is not None:
            chain.append(via[chain[-1]])
        chains.append(" <- ".join(chain))
    assert "nanoproof.judge.tiers" in via and not bad, chains


def test_a_verify_run_loads_no_writer_or_data_tool():
    """The same, as a run: every tier on tiny, generate and the score case, in this process's modules."""
    code = f"""
import runpy, sys
sys.argv = ["verify", "--case", "tiny", "--case", "generate", "--case", "shakespeare-char",
            "--fresh-seed", "1"]
try:
    runpy.run_path({str(VERIFY)!r}, run_name="__main__")
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(sorted(m for m in sys.modules if m.startswith("nanoproof")))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    loaded = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    assert "nanoproof.judge.verify" in loaded and "nanoproof.judge.score" in loaded, loaded
    assert not [m for m in loaded if m.startswith(NOT_IN_THE_JUDGE)], loaded