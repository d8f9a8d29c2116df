"""The backend tier and crash labels on slips the golden values alone could not see.

Each file below is reference/ re-exported as a contract file with one slip (not a text edit of
impl/gpt2.py, which users edit): float32 silently computed in float64 (init, forward, the AdamW
state), a crash only in float32, a crash in backward. verify itself must FAIL each, naming the stage
or the dtype, and the first divergence must say where.
"""

import pytest

from nanoproof.judge import tiers
from nanoproof.spec import tolerances
from nanoproof.spec.cases import CASES
from conftest import REFERENCE_AS_CONTRACT, run_verify
from nanoproof.runner.worker import Isolated

HEAD = REFERENCE_AS_CONTRACT

SLIPS = {
    "init returns float64 for float32": ("""
def init(config, seed, xp=_np, dtype="float32"):
    return _ref.init(config, seed, xp, "float64")
""", "tiny: backend tier [numpy-float32], setup: init wte", "dtype float64, expected float32 (a float64 upcast"),
    "forward upcasts to float64": ("""
def forward(params, idx, targets, config):
    return _ref.forward({k: v.astype(_np.float64) for k, v in params.items()}, idx, targets, config)
""", "tiny: backend tier [numpy-float32], forward, step 0: emb", "a float64 upcast"),
    "AdamW state kept in float64": ("""
def adamw_step(params, grads, state, step, lr, hparams):
    for k, p in params.items():
        if "m." + k not in state:
            state["m." + k] = _np.zeros(p.shape)
            state["v." + k] = _np.zeros(p.shape)
    return _ref.adamw_step(params, grads, state, step, lr, hparams)
""", "tiny: backend tier [numpy-float32], trajectory: optimizer state", "first: m.wte is float64: a float64 upcast"),
    "adamw_step raises in float32 only": ("""
def adamw_step(params, grads, state, step, lr, hparams):
    if params["wte"].dtype == _np.float32:
        raise TypeError("float32 not supported")
    return _ref.adamw_step(params, grads, state, step, lr, hparams)
""", "tiny: backend tier [numpy-float32], trajectory, step 0: adamw_step()", "TypeError: float32 not supported"),
    "backward raises": ("""
def backward(params, cache, config):
    raise ValueError("no gradients today")
""", "tiny: semantic tier, backward, step 0: backward()", "ValueError: no gradients today"),
}


def verify(path, *args):
    return run_verify(path, "--case", "tiny", "--tier", "semantic", "--tier", "backend", *args, timeout=300)


@pytest.mark.parametrize("name", list(SLIPS))
def test_verify_names_the_slip(tmp_path, name):
    body, where, what = SLIPS[name]
    path = tmp_path / "slip.py"
    path.write_text(HEAD + body)
    proc = verify(path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert f"first divergence: {where}" in line, line
    assert what in proc.stdout, proc.stdout[-3000:]


def test_forward_results_still_count_when_backward_raises(tmp_path):
    """A backward crash keeps forward's rows: every activation is checked (and passes), then one
    backward() row fails; the crash is not reported as the first activation."""
    path = tmp_path / "slip.py"
    path.write_text(HEAD + SLIPS["backward raises"][0])
    case = CASES["tiny"]
    res, _ = tiers.semantic(Isolated(path), case, tiers.load_case_golden(case), tolerances.load())
    forward_rows = [r for r in res.rows if r.section == "forward"]
    assert forward_rows and all(r.verdict in ("ok", "skip") for r in forward_rows)
    first = res.first_failure()
    assert (first.section, first.name) == ("backward", "backward()")


def test_reference_passes_backend_tier_with_live_bound(tmp_path):
    """reference/ itself passes the backend tier on this machine's kernel: the bound is its own live
    float32 error (the recorded one came from another CPU and failed reference/ here)."""
    path = tmp_path / "ref.py"
    path.write_text(HEAD)
    proc = verify(path, "--case", "gpt2-vocab", "--case", "generate")
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_compare_backends_says_in_a_line_what_it_could_not_compare():
    """scripts/compare_backends.py: the worst error of each column by default (every tensor with
    --full), and where no GPU is usable one line that says cupy was not compared, exit 0."""
    import subprocess
    import sys
    from nanoproof.paths import REPO_ROOT
    from nanoproof.runner.record import backend_xp
    script = REPO_ROOT / "scripts" / "compare_backends.py"
    proc = subprocess.run([sys.executable, str(script), "--case", "tiny"], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) <= 6, proc.stdout
    assert any("numpy-float32 (impl, here)" in ln and "e-" in ln for ln in lines), proc.stdout
    if backend_xp("cupy-float32")[0] is None:
        assert lines[0].startswith("no GPU here (") and "numpy only" in lines[0], lines[0]
    full = subprocess.run([sys.executable, str(script), "--case", "tiny", "--full"], capture_output=True,
                          text=True, timeout=300, cwd=REPO_ROOT)
    assert full.returncode == 0 and len(full.stdout.splitlines()) > 50
