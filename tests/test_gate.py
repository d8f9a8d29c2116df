"""scripts/gate_val_loss.py as users drive it: a number or a training log from elsewhere is held to
the seed band (the same-seed check only for a declared same run), a step the band does not cover is a
usage error naming the steps it does, and --json carries a schema_version."""
import json
import subprocess
import sys

import numpy as np
import pytest

from nanoproof.judge import score
from nanoproof.paths import REPO_ROOT
from nanoproof.spec.cases import CASES, SCORE_CASES

GATE = REPO_ROOT / "scripts" / "gate_val_loss.py"
CASE = CASES[SCORE_CASES[0]]


def gate(*args):
    return subprocess.run([sys.executable, str(GATE), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def band_at():
    golden = score.load(CASE)

    def at(step):
        _, values = score.ensemble(golden, step)
        return float(np.mean(values)), float(np.std(values, ddof=1))
    return at


def test_a_number_from_elsewhere_is_held_to_the_band(band_at):
    mean, sigma = band_at(80)
    inside = gate("--value", f"{mean + sigma:.6f}", "--step", "80")
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert "same-seed check was not applied" in inside.stdout
    declared = gate("--value", f"{mean + sigma:.6f}", "--step", "80", "--same-run")
    assert declared.returncode == 1 and "vs reference seed" in declared.stdout
    outside = gate("--value", f"{mean + 10 * sigma:.6f}", "--step", "80")
    assert outside.returncode == 1 and "FAIL" in outside.stdout and "σ" in outside.stdout


def test_a_step_the_band_does_not_cover_names_the_ones_it_does():
    proc = gate("--value", "2.0", "--step", "2000")
    assert proc.returncode == 2
    assert "no val loss recorded at step 2000" in proc.stderr and "every 20 from 0 to 300" in proc.stderr
    assert "np.int64" not in proc.stderr


def test_a_training_log_is_gated_at_the_last_step_the_band_covers(tmp_path, band_at):
    mean40, _ = band_at(40)
    log = tmp_path / "log.jsonl"
    records = [{"kind": "iter", "step": 0, "loss": 4.2, "lr": 1e-3, "grad_norm": 1.0, "ms": 1.0}]
    records += [{"kind": "eval", "step": s, "train_loss": 3.0, "val_loss": v}
                for s, v in ((0, 4.2), (20, 3.5), (30, 9.9), (40, mean40))]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = gate("--log", str(log), "--json", "-")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] == 1 and doc["step"] == 40 and doc["observed"] == mean40
    assert doc["verdict"] == "OK" and doc["same_run"] is False
    assert gate("--log", str(log), "--step", "20").returncode == 1          # 3.5 is far outside
    assert gate("--log", str(log), "--step", "30").returncode == 2          # no band at 30
    log.write_text(json.dumps(records[0]) + "\n")
    empty = gate("--log", str(log))
    assert empty.returncode == 2 and "no eval records" in empty.stderr
