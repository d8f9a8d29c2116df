"""impl/gpt2_nano.py, the short twin of impl/gpt2.py written for reading, is the same function:
CI runs verify on it, every tier this machine supports (the workflow the project exists for)."""
from conftest import run_verify
from nanoproof.paths import REPO_ROOT

NANO = REPO_ROOT / "impl" / "gpt2_nano.py"


def test_nano_twin_passes_verify():
    proc = run_verify(NANO, "--require", "semantic", "--require", "numpy-float32", "--require", "fresh")
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    assert last.startswith("verify: OK — same function"), last
