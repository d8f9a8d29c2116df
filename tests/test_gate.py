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


# ----------------------------------------------------------------------------- a band for your own config

TINY_RUN = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16", "--batch_size", "4",
            "--max_iters", "40", "--eval_interval", "20", "--eval_iters", "4", "--lr_decay_iters", "40",
            "--warmup_iters", "5", "--threads", "1", "--no-progress"]
TRAIN = REPO_ROOT / "scripts" / "train.py"


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A tiny char dataset, one reference run of a tiny config, and a 4-seed band recorded from it."""
    from nanoproof.tools.data import prepare
    root = tmp_path_factory.mktemp("band")
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "and", "of", "my", "lord", "thou", "art", "to", "be", "not"]
    (root / "input.txt").write_text("\n".join(" ".join(rng.choice(words, 8)) + "." for _ in range(300)) + "\n")
    prepare(root / "input.txt", root / "data", mode="char", block_size=16)

    def train(out, *extra):
        proc = subprocess.run([sys.executable, str(TRAIN), *TINY_RUN, "--dataset", str(root / "data"),
                               "--out_dir", str(root / out), *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return root / out
    run = train("run", "--reference")
    record = gate("--record", str(root / "band.h5"), "--config", str(run), "--seeds", "4",
                  "--dataset", str(root / "data"), "--jobs", "2")
    assert record.returncode == 0, record.stdout + record.stderr
    return root, run, train


def test_a_recorded_band_holds_its_settings_provenance_and_every_seed(own):
    from nanoproof.golden import bands
    from nanoproof.tools.checkpoints import load_checkpoint
    root, run, _ = own
    golden, band = bands.load(root / "band.h5")
    meta = load_checkpoint(run / "ckpt.npz")[2]
    assert band["settings"]["config"] == {k: meta["config"][k] for k in bands.CONFIG_KEYS}
    assert band["settings"]["hparams"] == meta["hparams"] and band["seeds"] == [0, 1, 2, 3]
    assert band["impl"] == "reference/" and band["data"]["train_tokens"] == meta["data"]["train_tokens"]
    prov = golden.attrs["provenance"]
    assert "--record" in prov["command"] and prov["blas_kernel"] and prov["created"].startswith("20")
    assert list(golden.data["val_loss/steps"]) == [0, 20, 40]
    values = golden.data["numpy-float32/val_loss"]
    assert values.shape == (4, 3) and len(set(values[:, -1])) == 4      # four different runs


def test_a_run_of_the_same_config_passes_and_the_same_seed_reproduces_its_recording(own):
    root, run, train = own
    ok = gate("--band", str(root / "band.h5"), "--log", str(run / "log.jsonl"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "4-seed band" in ok.stdout and "same-seed check was not applied" in ok.stdout
    same = train("seed2", "--reference", "--seed", "2")
    proc = gate("--band", str(root / "band.h5"), "--log", str(same / "log.jsonl"), "--same-run")
    assert proc.returncode == 0 and "vs reference seed 2" in proc.stdout, proc.stdout + proc.stderr
    # --same-run for a run that is not one of the band's (seed 1337 is not recorded): a usage error
    proc = gate("--band", str(root / "band.h5"), "--log", str(run / "log.jsonl"), "--same-run")
    assert proc.returncode == 2 and "not the same run as a recorded seed" in proc.stderr


def test_a_broken_implementation_with_the_same_settings_fails_the_band(own, tmp_path):
    root, _, train = own
    slow = tmp_path / "slow_lr.py"      # the frozen GPT-2 at a tenth of the learning rate: trains, but worse
    slow.write_text(f"""import importlib.util
_spec = importlib.util.spec_from_file_location("frozen", {str(REPO_ROOT / "tests" / "fixtures" / "gpt2_frozen.py")!r})
_gpt2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gpt2)
init, forward, backward, adamw_step, get_batch, generate = (_gpt2.init, _gpt2.forward, _gpt2.backward,
                                                            _gpt2.adamw_step, _gpt2.get_batch, _gpt2.generate)


def lr_at(step, hparams):
    return 0.1 * _gpt2.lr_at(step, hparams)
""")
    out = train("slow", "--impl", str(slow))
    proc = gate("--band", str(root / "band.h5"), "--log", str(out / "log.jsonl"), "--json", "-")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "FAIL" and doc["case"] == "band.h5" and doc["step"] == 40
    jsonschema = pytest.importorskip("jsonschema")
    from nanoproof.paths import PACKAGE_DIR
    jsonschema.validate(doc, json.loads((PACKAGE_DIR / "judge" / "schemas" / "gate.schema.json").read_text()))


def test_a_run_of_other_settings_is_refused_with_the_difference_named(own):
    root, _, train = own
    other = train("lr3", "--learning_rate", "3e-3")
    proc = gate("--band", str(root / "band.h5"), "--log", str(other / "log.jsonl"))
    assert proc.returncode == 2
    assert "learning_rate 0.003 (band 0.001)" in proc.stderr and "--record" in proc.stderr


def test_band_usage_errors_are_one_line(own, tmp_path):
    root, _, _ = own
    bad = tmp_path / "settings.json"
    bad.write_text(json.dumps({"n_layer": 1, "nlayer": 2}))
    proc = gate("--record", str(tmp_path / "b.h5"), "--config", str(bad), "--seeds", "2")
    assert proc.returncode == 2 and "unknown setting(s) nlayer" in proc.stderr
    bad.write_text(json.dumps({"n_layer": 0}))
    proc = gate("--record", str(tmp_path / "b.h5"), "--config", str(bad), "--seeds", "2")
    assert proc.returncode == 2 and "n_layer must be a positive integer, got 0" in proc.stderr
    proc = gate("--record", str(tmp_path / "b.h5"), "--config", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    shipped = gate("--band", str(REPO_ROOT / "golden" / "tiny.h5"), "--value", "2.0")
    assert shipped.returncode == 2 and "not a band file" in shipped.stderr
    assert shipped.returncode == 2 and "Traceback" not in shipped.stderr
    nothing = gate("--band", str(root / "band.h5"))                      # nothing to gate
    assert nothing.returncode == 2 and "--band gates a run's --log or a --value" in nothing.stderr


def test_a_band_recorded_from_json_settings_matches_one_from_the_run(own, tmp_path):
    """The same settings given as train.py flags in JSON record the same val losses (same seeds)."""
    from nanoproof.golden import bands
    root, run, _ = own
    flags = dict(zip(TINY_RUN[:20:2], TINY_RUN[1:20:2]))
    settings = {k.lstrip("-"): int(v) for k, v in flags.items()}
    (tmp_path / "s.json").write_text(json.dumps({**settings, "dataset": str(root / "data")}))
    proc = gate("--record", str(tmp_path / "b.h5"), "--config", str(tmp_path / "s.json"), "--seeds", "2",
                "--first_seed", "2", "--jobs", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from_json, _ = bands.load(tmp_path / "b.h5")
    from_run, _ = bands.load(root / "band.h5")
    a, b = from_json.data["numpy-float32/val_loss"], from_run.data["numpy-float32/val_loss"][2:]
    assert a.tobytes() == b.tobytes()
