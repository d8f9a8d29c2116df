"""`nanoproof compare` (scripts/compare_scores.py, harness/measure/compare.py) end to end on a tiny
model, and verify's "a different function" verdict for files that change GPT-2 on purpose.

The comparisons train real runs (1 layer, 16 channels, 16-token context: ~1 ms a step), in worker
processes as a user's do. A against itself on the same seeds is identical bit for bit; A against
itself on other seeds is a real null (run-to-run noise only) and must not be called better or worse;
learning rate x 0.1 must be found worse at the default number of seeds. Expected losses come from
the runs themselves (an uninterrupted run against a resumed one), never typed in."""
import json
import textwrap

import jsonschema
import pytest

from conftest import REFERENCE_AS_CONTRACT, last_line, run_verify
from nanoproof.cli import load_script
from nanoproof.paths import PACKAGE_DIR, REPO_ROOT

GPT2 = REPO_ROOT / "impl" / "gpt2.py"
DATA = REPO_ROOT / "data" / "shakespeare_char"
TINY = ["--set", "n_layer=1", "--set", "n_head=2", "--set", "n_embd=16", "--set", "block_size=16",
        "--set", "batch_size=8", "--set", "warmup_iters=0", "--eval_iters", "4", "--jobs", "2", "--no-progress"]
SCHEMA = json.loads((PACKAGE_DIR / "judge" / "schemas" / "compare.schema.json").read_text())


@pytest.fixture(scope="module")
def cli():
    return load_script("compare_scores")


@pytest.fixture(scope="module")
def dataset():
    if not (DATA / "meta.json").is_file():
        load_script("compare_scores").default_dataset(print)
    return DATA


def run(cli, capsys, tmp, *args, json_name="c.json"):
    """compare A B ARGS in-process: (exit status, stdout, stderr, the --json document)."""
    code = cli.main([*map(str, args), *TINY, "--dataset", str(DATA), "--out_dir", str(tmp / "cmp"),
                     "--json", str(tmp / json_name)])
    out, err = capsys.readouterr()
    doc = json.loads((tmp / json_name).read_text()) if code == 0 else None
    if doc is not None:
        jsonschema.validate(doc, SCHEMA)
    return code, out, err, doc


def test_a_against_itself_is_indistinguishable(cli, capsys, tmp_path, dataset):
    code, out, err, doc = run(cli, capsys, tmp_path, GPT2, GPT2, "--seeds", 3, "--max_iters", 30)
    assert code == 0, err
    assert doc["verdict"] == "identical" and doc["tests"]["paired"]["p"] == 1.0
    assert doc["sides"]["A"]["runs"][0]["val_loss"] == doc["sides"]["B"]["runs"][0]["val_loss"]
    verdict = next(ln for ln in out.splitlines() if ln.startswith("verdict: "))
    assert "indistinguishable" in verdict and "nan" not in out.lower()
    assert "each run was made once and serves both sides" in out   # not two workers on one folder


def test_a_against_itself_on_other_seeds_is_no_false_verdict(cli, capsys, tmp_path, dataset):
    """Independent seeds: the difference is run-to-run noise; Welch's test decides and says so."""
    code, out, err, doc = run(cli, capsys, tmp_path, GPT2, GPT2, "--seeds", 4, "--max_iters", 30,
                              "--b-seed-offset", 100)
    assert code == 0, err
    assert doc["primary_test"] == "Welch" and doc["tests"]["paired"] is None and not doc["paired_batches"]
    assert doc["verdict"] == "indistinguishable", doc["summary"]
    assert doc["needed_n"] is None or doc["needed_n"] > 4
    assert "not paired" in out


def test_learning_rate_a_tenth_is_worse_at_the_default_n(cli, capsys, tmp_path, dataset):
    code, out, err, doc = run(cli, capsys, tmp_path, GPT2, "--b-set", "learning_rate=1e-4", "--max_iters", 40,
                              "--plot", tmp_path / "c.png")
    assert code == 0, err
    assert len(doc["sides"]["B"]["runs"]) == cli.DEFAULT_SEEDS
    assert doc["verdict"] == "worse" and doc["tests"]["paired"]["p"] < doc["alpha"]
    assert doc["tests"]["paired"]["ci_low"] > 0           # B - A: higher loss on every reading
    assert "learning_rate 0.001 -> 0.0001" in out and "verdict: B is worse by" in out
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_comparison_continues_bit_identically(cli, capsys, tmp_path, dataset):
    """One run stopped halfway (its checkpoint at step 20 of 40) is resumed, and the comparison ends
    with the val losses of an uninterrupted one; a finished comparison is read back, not retrained."""
    args = (GPT2, GPT2, "--seeds", 2, "--max_iters", 40, "--eval_interval", 10, "--b-set", "learning_rate=3e-3")
    code, _, err, whole = run(cli, capsys, tmp_path, *args, json_name="whole.json")
    assert code == 0, err
    first = whole["sides"]["A"]["runs"][1]
    ckpt = tmp_path / "cmp" / first["out_dir"].split("/cmp/", 1)[1] / "ckpt.npz"
    before = ckpt.stat().st_mtime_ns
    code, out, _, again = run(cli, capsys, tmp_path, *args, json_name="again.json")
    assert "4 of 4 runs already finished" in out and ckpt.stat().st_mtime_ns == before
    assert [r["val_loss"] for r in again["sides"]["A"]["runs"]] == [r["val_loss"] for r in whole["sides"]["A"]["runs"]]
    assert not any(r["trained"] for s in again["sides"].values() for r in s["runs"])

    # the same comparison elsewhere, with side A's second seed stopped at step 20
    from nanoproof.tools.training import train
    from nanoproof.spec.contract import load_impl
    half = tmp_path / "half"
    target = half / "cmp" / first["out_dir"].split("/cmp/", 1)[1]
    settings = whole["sides"]["A"]
    train(load_impl(GPT2), DATA, settings["config"], settings["hparams"], max_iters=20,
          batch_size=settings["batch_size"], eval_interval=10, eval_iters=4, seed=first["seed"],
          out_dir=target, progress=False)
    code, out, err, resumed = run(cli, capsys, half, *args, json_name="resumed.json")
    assert code == 0, err
    run_a = resumed["sides"]["A"]["runs"][1]
    assert run_a["resumed_from"] == 20 and run_a["trained"]
    for side in ("A", "B"):
        assert [r["val_loss"] for r in resumed["sides"][side]["runs"]] == \
            [r["val_loss"] for r in whole["sides"][side]["runs"]]


def test_time_budget_turns_seconds_into_steps(cli, capsys, tmp_path, dataset):
    code, out, err, doc = run(cli, capsys, tmp_path, GPT2, GPT2, "--seeds", 2, "--time_budget", 0.05,
                              "--timing_iters", 8, "--b-set", "n_embd=32")
    assert code == 0, err
    for label, side in doc["sides"].items():
        ms = doc["speed"]["ms_per_iter"][label]
        assert side["calibration"]["ms_per_iter"] == ms
        assert side["max_iters"] == max(1, int(0.05 * 1000 / ms))
        assert side["hparams"]["lr_decay_iters"] == side["max_iters"]
        assert all(r["steps"] == side["max_iters"] for r in side["runs"])
    assert doc["mode"] == "time" and "ms/step -> " in out
    ms = doc["speed"]["ms_per_iter"]
    assert doc["speed"]["ratio_a_over_b"] == pytest.approx(ms["A"] / ms["B"], rel=1e-12)


@pytest.mark.parametrize("args, message", [
    (["nowhere.py"], "side A: nowhere.py: no such contract file"),
    ([GPT2, "--b-set", "learning_rate"], "--b-set 'learning_rate': expected KEY=VALUE"),
    ([GPT2, "--set", "n_layers=2"], "--set 'n_layers=2': unknown key 'n_layers'"),
    ([GPT2, "--a-set", "n_layer=two"], "--a-set 'n_layer=two': n_layer must be an integer, got 'two'"),
    ([GPT2, "--seeds", "1"], "--seeds 1: a comparison needs at least 2 runs per side"),
])
def test_user_errors_are_one_line(cli, capsys, tmp_path, args, message):
    code = cli.main([*map(str, args), "--out_dir", str(tmp_path), "--dataset", str(DATA)])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("compare: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


def test_a_file_without_the_training_contract_or_that_crashes(cli, capsys, tmp_path, dataset):
    partial = tmp_path / "partial.py"
    partial.write_text(REFERENCE_AS_CONTRACT + "del backward\n")
    code = cli.main([str(GPT2), str(partial), "--out_dir", str(tmp_path), "--dataset", str(DATA)])
    err = capsys.readouterr().err
    assert code == 2 and "missing contract function(s): backward" in err and "generate" not in err
    crash = tmp_path / "crash.py"
    crash.write_text(REFERENCE_AS_CONTRACT + textwrap.dedent("""
        def forward(params, idx, targets, config):
            raise RuntimeError("no model here")
        """))
    code, out, err, _ = run(cli, capsys, tmp_path, GPT2, crash, "--seeds", 2, "--max_iters", 5)
    assert code == 2 and "side B" in err and "raised RuntimeError: no model here" in err, err
    assert len(err.strip().splitlines()) == 1


def test_the_command_is_registered(capsys):
    from nanoproof import commands
    assert "compare" in commands.COMMANDS
    with pytest.raises(SystemExit) as e:
        commands.main(["compare", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nanoproof compare") and "--time_budget" in out and "--b-set" in out


# ----------------------------------------------------------------------------- verify: a different function

VARIANT = REFERENCE_AS_CONTRACT + textwrap.dedent("""
    def init(config, seed, xp=_np, dtype="float32"):
        p = _ref.init(config, seed, xp, dtype)
        del p["wpe"]
        p["rnn.w_h"] = xp.zeros((config["n_embd"], config["n_embd"]), dtype=dtype)
        return p
    """)


@pytest.mark.parametrize("training_only", [False, True])
def test_verify_says_a_variant_is_a_different_function(tmp_path, training_only):
    """Other params than GPT-2's: one line saying so and pointing at compare, exit 1 (not the same
    function), whether the file has the whole contract or only its training subset (no generate)."""
    path = tmp_path / "variant.py"
    path.write_text(VARIANT + ("del generate\n" if training_only else ""))
    proc = run_verify(path, "--json", str(tmp_path / "v.json"))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    line = last_line(proc)
    assert line.startswith(f"verify: FAIL — {path} is a different function from GPT-2 "
                           f"(params: missing wpe; extra rnn.w_h)"), line
    assert "compare" in line and "first divergence" not in proc.stdout
    doc = json.loads((tmp_path / "v.json").read_text())
    assert len(doc["results"]) == 1 and doc["results"][0]["different_function"] in line


def test_verify_still_says_contract_error_for_gpt2_without_generate(tmp_path):
    """GPT-2's params but no generate: not a variant, a file that lacks part of the contract (exit 2)."""
    path = tmp_path / "no_generate.py"
    path.write_text(REFERENCE_AS_CONTRACT + "del generate\n")
    proc = run_verify(path, "--case", "tiny", "--tier", "semantic")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr
    assert "missing contract function(s): generate" in proc.stderr and "training subset" in proc.stderr
