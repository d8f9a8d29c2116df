"""The GitHub Actions recipe (.github/workflows/verify.yml) runs commands that exist here: each
`run:` line's script and flags are accepted (checked with --help and a dry parse), and it installs
what the README's test command installs."""
import re
import shlex
import subprocess
import sys

from nanoproof.paths import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "verify.yml"


def run_lines():
    return [m.group(1).strip() for m in re.finditer(r"^\s+run: (.+)$", WORKFLOW.read_text(), re.M)]


def test_the_recipe_installs_what_the_readme_installs():
    readme = (REPO_ROOT / "README.md").read_text()
    install = run_lines()[0]
    assert "pip install -q -e '.[test,oracle]'" in install and "pip install -q -e '.[test,oracle]'" in readme


def test_every_script_the_recipe_runs_accepts_its_flags():
    scripts = [line for line in run_lines() if "scripts/" in line]
    assert len(scripts) >= 2
    for line in scripts:
        argv = shlex.split(line)
        script = next(a for a in argv if a.startswith("scripts/"))
        flags = [a for a in argv[argv.index(script) + 1:] if a.startswith("--")]
        help_text = subprocess.run([sys.executable, str(REPO_ROOT / script), "--help"], capture_output=True,
                                   text=True, timeout=60, cwd=REPO_ROOT).stdout
        missing = [f for f in flags if f not in help_text]
        assert not missing, f"{WORKFLOW.name}: {script} has no {missing}"
    pytest_line = next(line for line in run_lines() if "-m pytest" in line)
    assert "--junitxml=" in pytest_line
