"""nanoproof as an installed tool: a plain (non-editable) install of this checkout holds the package
nanoproof with its golden files, impl/, reference/ and the commands, and `python -m nanoproof verify
--impl FILE` works from any folder, writing nothing but .nanoproof/ there."""
import os
import shutil
import subprocess
import sys

import pytest

from nanoproof.paths import REPO_ROOT

SKIP = shutil.ignore_patterns(".venv", ".git", "mutants", "build", "__pycache__", "data", "out", ".nanoproof",
                              "*.egg-info", ".hypothesis", ".pytest_cache")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install --no-deps --target DIR` of a copy of this checkout; the dependencies are this venv's."""
    root = tmp_path_factory.mktemp("install")
    source, target = root / "source", root / "site"
    shutil.copytree(REPO_ROOT, source, ignore=SKIP)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    SOURCE["path"] = source
    return target


SOURCE = {}


def test_installing_leaves_nothing_in_the_clone(installed):
    """harness/build_backend.py builds the wheel from a temporary copy: no build/, no egg-info."""
    left = sorted(p.name for p in SOURCE["path"].iterdir() if p.name == "build" or p.name.endswith(".egg-info"))
    assert not left, f"pip install . left {left} in the source folder"


def run(installed, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, "-m", "nanoproof", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


def test_the_package_holds_its_data(installed):
    pkg = installed / "nanoproof"
    for rel in ("goldens/tolerances.json", "goldens/tiny.h5", "goldens/shakespeare-char.h5",
                "goldens/tinyshakespeare.txt.xz", "impl/gpt2.py", "reference/model.py", "scripts/verify.py",
                "fixtures/gpt2_frozen.py", "measure/mutmut_survivors.json", "runner/worker.py",
                "judge/schemas/verify.schema.json", "goldens/tiktoken_gpt2/6d1cbeee0f20b3d9449abfede4726ed8212e3aee.xz"):
        assert (pkg / rel).is_file(), rel
    assert not (installed / "harness").exists() and not (installed / "reference").exists()


def test_verify_from_any_folder(installed, tmp_path):
    (tmp_path / "my_gpt2.py").write_text((REPO_ROOT / "impl" / "gpt2.py").read_text())
    proc = run(installed, tmp_path, "verify", "--impl", "my_gpt2.py", "--case", "tiny", "--case",
               "shakespeare-char", "--tier", "semantic", "--tier", "score")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("verify: OK — same function; semantic 1/1 ok, score 1/1 ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_gpt2.py"]
    hint = run(installed, tmp_path, "verify", "--impl", "my_gpt2.py", "--case", "tiny", "--tier", "exact",
               "--tier", "semantic", "-q")
    assert hint.returncode == 0 and "exact: no snapshot (nanoproof snapshot before an edit)" in hint.stdout, hint.stdout


def test_the_command_lists_its_commands(installed, tmp_path):
    proc = run(installed, tmp_path)
    assert proc.returncode == 0 and "verify" in proc.stdout and "gate" in proc.stdout and "train" in proc.stdout
    bad = run(installed, tmp_path, "nonsense")
    assert bad.returncode == 2 and "unknown command 'nonsense'" in bad.stderr
    helped = run(installed, tmp_path, "gate", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: nanoproof gate")
