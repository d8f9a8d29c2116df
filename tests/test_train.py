"""harness/tools/training.py and scripts/train.py: resume is bit-identical, the checkpoint is impl's format,
the log and plot are written, the CLI's last line is the val loss, user errors are one clear line,
and training actually learns. Tiny models on small char datasets prepared in tmp_path."""
import importlib.util
import json
import math
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nanoproof.cli import load_script
from nanoproof.tools.data import prepare
from nanoproof.tools.training import (
    train,
)
from nanoproof.tools.checkpoints import CKPT_NAME, LOG_NAME, PLOT_NAME, CheckpointError, TrainingError, load_checkpoint

from nanoproof.paths import REPO_ROOT

CONFIG = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}  # vocab_size: the data's
HPARAMS = {"learning_rate": 1e-2, "min_lr": 1e-3, "warmup_iters": 5, "lr_decay_iters": 20,
           "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "grad_clip": 1.0}
RUN = {"max_iters": 20, "batch_size": 4, "eval_interval": 5, "eval_iters": 2, "seed": 7}
CLI_TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
            "--batch_size", "4", "--max_iters", "20", "--eval_interval", "5", "--eval_iters", "2",
            "--learning_rate", "1e-2", "--min_lr", "1e-3", "--warmup_iters", "5",
            "--lr_decay_iters", "20", "--seed", "7"]


cli = load_script("train")


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """~6k characters of random words over a small alphabet, with newlines (impl's sample prompts "\\n")."""
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "and", "of", "my", "lord", "thou", "art", "to", "be", "not"]
    lines = [" ".join(rng.choice(words, size=8)) + "." for _ in range(150)]
    root = tmp_path_factory.mktemp("toy")
    (root / "input.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare(root / "input.txt", root / "data", mode="char", block_size=CONFIG["block_size"])
    return root / "data"


def run(module, data, out_dir, dtype="float32", **kw):
    args = {**RUN, **kw}
    return train(module, data, CONFIG, HPARAMS, dtype=dtype, out_dir=out_dir, progress=False, **args)


def read_log(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / LOG_NAME).read_text().splitlines()]


def timeless(records):
    """Log records without their one nondeterministic field, the wall time."""
    return [{k: v for k, v in r.items() if k != "ms"} for r in records]


def assert_same_bits(a: dict, b: dict, what: str):
    assert sorted(a) == sorted(b), what
    for k in a:
        x, y = np.asarray(a[k] if not hasattr(a[k], "get") else a[k].get()), np.asarray(
            b[k] if not hasattr(b[k], "get") else b[k].get())
        assert (x.shape, x.dtype) == (y.shape, y.dtype), f"{what} {k}"
        assert x.tobytes() == y.tobytes(), f"{what} {k}: bits differ (max |d| {np.abs(x - y).max()})"


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("kind,dtype", [("impl", "float32"), ("impl", "float64"),
                                        ("ref", "float32"), ("ref", "float64")])
@pytest.mark.parametrize("k", [10, 8], ids=["at-eval", "between-evals"])
def test_resume_is_bit_identical(request, tmp_path, toy_data, kind, dtype, k):
    module = request.getfixturevalue(kind)
    full = run(module, toy_data, tmp_path / "full", dtype)
    first = run(module, toy_data, tmp_path / "split", dtype, max_iters=k)
    assert first.step == k and first.evals[-1]["step"] == k
    resumed = run(module, toy_data, tmp_path / "split", dtype, resume=True)

    assert resumed.resumed_from == k
    assert_same_bits(full.params, resumed.params, "params")
    assert_same_bits(full.state, resumed.state, "optimizer state")
    assert (resumed.val_loss, resumed.train_loss) == (full.val_loss, full.train_loss)
    assert timeless(resumed.history) == timeless(full.history)
    assert timeless(read_log(tmp_path / "split")) == timeless(read_log(tmp_path / "full"))
    p_full, s_full, m_full = load_checkpoint(tmp_path / "full" / CKPT_NAME)
    p_res, s_res, m_res = load_checkpoint(tmp_path / "split" / CKPT_NAME)
    assert_same_bits(p_full, p_res, "checkpoint params")
    assert_same_bits(s_full, s_res, "checkpoint state")
    assert m_res["rng_state"] == m_full["rng_state"]
    assert timeless(m_res.pop("history")) == timeless(m_full.pop("history"))
    assert m_res == m_full


def test_resume_after_a_crash_drops_the_unsaved_tail(impl, tmp_path, toy_data):
    """A run killed at step 13 (checkpoint at 10, log up to 12) resumes to the uninterrupted run."""
    def crash_at_13(params, grads, state, step, lr, hparams):
        if step == 13:
            raise KeyboardInterrupt
        return impl.adamw_step(params, grads, state, step, lr, hparams)

    crashing = types.SimpleNamespace(init=impl.init, forward=impl.forward, backward=impl.backward,
                                     lr_at=impl.lr_at, get_batch=impl.get_batch, adamw_step=crash_at_13)
    full = run(impl, toy_data, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(crashing, toy_data, tmp_path / "crash")
    assert [r["step"] for r in read_log(tmp_path / "crash")][-1] == 12  # the tail past the checkpoint
    assert load_checkpoint(tmp_path / "crash" / CKPT_NAME)[2]["step"] == 10
    resumed = run(impl, toy_data, tmp_path / "crash", resume=True)
    assert_same_bits(full.params, resumed.params, "params")
    assert_same_bits(full.state, resumed.state, "optimizer state")
    assert timeless(read_log(tmp_path / "crash")) == timeless(read_log(tmp_path / "full"))


def test_resume_at_max_iters_changes_nothing(impl, tmp_path, toy_data):
    done = run(impl, toy_data, tmp_path)
    again = run(impl, toy_data, tmp_path, resume=True)
    assert again.val_loss == done.val_loss
    assert_same_bits(done.params, again.params, "params")
    assert timeless(read_log(tmp_path)) == timeless(done.history)


# ----------------------------------------------------------------------------- checkpoint, log, plot


def test_checkpoint_format_and_impl_samples_from_it(impl, tmp_path, toy_data):
    result = run(impl, toy_data, tmp_path)
    ckpt = tmp_path / CKPT_NAME
    with np.load(ckpt, allow_pickle=False) as f:
        names = f.files
        meta = json.loads(str(f["meta"]))
        params = {k[len("params/"):]: f[k] for k in names if k.startswith("params/")}
        state = {k[len("state/"):]: f[k] for k in names if k.startswith("state/")}
    assert set(names) == {"meta"} | {f"params/{k}" for k in params} | {f"state/{k}" for k in state}
    assert_same_bits(params, result.params, "checkpoint params")
    assert_same_bits(state, result.state, "checkpoint state")
    assert meta["config"] == {**CONFIG, "vocab_size": meta["data"]["vocab_size"]}
    assert meta["hparams"] == HPARAMS
    assert (meta["step"], meta["dtype"], meta["seed"]) == (RUN["max_iters"], "float32", RUN["seed"])
    assert meta["data"] == json.loads((toy_data / "meta.json").read_text())
    assert meta["history"] == result.history
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = meta["rng_state"]  # JSON round trip gives back a usable state

    out = subprocess.run([sys.executable, "impl/gpt2.py", "sample", "\n", "--ckpt", str(ckpt), "--n_tokens", "5"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout[:-1]  # print's newline
    assert len(text) == 1 + 5 and text[0] == "\n" and set(text) <= set(meta["data"]["chars"])


def test_log_has_one_record_per_iteration_and_per_evaluation(impl, tmp_path, toy_data):
    result = run(impl, toy_data, tmp_path)
    log = read_log(tmp_path)
    assert log == result.history
    iters = [r for r in log if r["kind"] == "iter"]
    evals = [r for r in log if r["kind"] == "eval"]
    assert len(iters) + len(evals) == len(log)
    assert [r["step"] for r in iters] == list(range(RUN["max_iters"]))
    assert [r["step"] for r in evals] == [0, 5, 10, 15, 20]
    for r in iters:
        assert set(r) == {"kind", "step", "loss", "lr", "grad_norm", "ms"}
        assert r["lr"] == impl.lr_at(r["step"], HPARAMS)
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["ms"] > 0
    for r in evals:
        assert set(r) == {"kind", "step", "train_loss", "val_loss"}
    # evaluation at step s comes before the update of step s
    order = [(r["step"], r["kind"]) for r in log]
    assert order.index((5, "eval")) == order.index((5, "iter")) - 1
    assert (evals[-1]["val_loss"], evals[-1]["train_loss"]) == (result.val_loss, result.train_loss)


def test_plot_writes_a_png(impl, tmp_path, toy_data):
    run(impl, toy_data, tmp_path, max_iters=5, plot=True)
    assert (tmp_path / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_val_losses_as_impls_own_train_command(impl, tmp_path, toy_data):
    """nanoproof.tools.training mirrors impl/gpt2.py train's RNG conventions, so both print the same losses."""
    result = run(impl, toy_data, None)
    hp = [x for k, v in HPARAMS.items() for x in (f"--{k}", str(v))]
    out = subprocess.run([sys.executable, "impl/gpt2.py", "train", "--data", str(toy_data), *CLI_TINY, *hp],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed = re.findall(r"^step (\d+): val loss (\S+)$", out.stdout, re.M)
    assert printed == [(str(r["step"]), f"{r['val_loss']:.4f}") for r in result.evals]
    assert out.stdout.splitlines()[-1] == f"val_loss {result.val_loss:.4f}"


# ----------------------------------------------------------------------------- learning


def test_training_lowers_the_loss_on_a_learnable_text(impl, tmp_path):
    (tmp_path / "input.txt").write_text("hello world! " * 300, encoding="utf-8")
    prepare(tmp_path / "input.txt", tmp_path / "data", mode="char", block_size=CONFIG["block_size"])
    config = {**CONFIG, "n_embd": 32}
    result = train(impl, tmp_path / "data", config, {**HPARAMS, "lr_decay_iters": 80},
                   max_iters=80, batch_size=8, eval_interval=40, eval_iters=2, seed=0, progress=False)
    first, last = result.evals[0], result.evals[-1]
    assert first["val_loss"] > 2.0  # ~ln(9): nothing learned at init
    # the text is periodic: after a few characters of context the next one is certain
    assert last["val_loss"] < 0.3, [r["val_loss"] for r in result.evals]
    assert last["train_loss"] < 0.3


# ----------------------------------------------------------------------------- command line


def test_cli_last_line_is_the_val_loss_in_the_log(tmp_path, toy_data):
    out = subprocess.run([sys.executable, "scripts/train.py", "--dataset", str(toy_data),
                          "--out_dir", str(tmp_path), "--no-progress", "--plot", *CLI_TINY],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    match = re.fullmatch(r"val_loss (\d+\.\d{4,})", out.stdout.splitlines()[-1])
    assert match, out.stdout
    last_eval = [r for r in read_log(tmp_path) if r["kind"] == "eval"][-1]
    assert last_eval["step"] == 20
    assert abs(float(match.group(1)) - last_eval["val_loss"]) <= 5e-7
    assert (tmp_path / PLOT_NAME).is_file() and (tmp_path / CKPT_NAME).is_file()


@pytest.mark.parametrize("threads", [None, 2])
def test_cli_pins_blas_threads_and_records_the_kernel(tmp_path, toy_data, threads):
    """One BLAS thread unless --threads says otherwise; the kernel and threads are printed and kept
    in the checkpoint (float32 results depend on the kernel, speed on the threads)."""
    extra = [] if threads is None else ["--threads", str(threads)]
    out = subprocess.run([sys.executable, "scripts/train.py", "--dataset", str(toy_data), "--out_dir",
                          str(tmp_path), "--no-progress", *CLI_TINY, *extra],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    want = threads or 1
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BLAS: "))
    assert f", {want} thread" in line, line
    environment = load_checkpoint(tmp_path / CKPT_NAME)[2]["environment"]
    assert environment["threads"] == want and environment["blas"] == line[len("BLAS: "):]


def test_cli_help_names_the_baby_gpt_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "baby GPT" in text
    for flag in ["--n_layer", "--n_head", "--n_embd", "--block_size", "--batch_size", "--max_iters",
                 "--learning_rate", "--min_lr", "--warmup_iters", "--lr_decay_iters", "--weight_decay",
                 "--beta1", "--beta2", "--grad_clip", "--eval_interval", "--eval_iters", "--seed",
                 "--dtype", "--device", "--eps", "--dataset", "--out_dir", "--resume", "--plot",
                 "--reference", "--impl", "--no-progress"]:
        assert flag in text
    defaults = vars(cli.build_parser().parse_args([]))
    assert {k: defaults[k] for k in ["n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_iters",
                                     "lr_decay_iters", "warmup_iters", "eval_interval", "eval_iters",
                                     "seed"]} == {
        "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12, "max_iters": 2000,
        "lr_decay_iters": 2000, "warmup_iters": 100, "eval_interval": 250, "eval_iters": 20, "seed": 1337}


def cli_error(capsys, argv):
    """Run the CLI in-process; it must return 2 with exactly one line on stderr. Returns that line."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("train.py: error: ")
    return err


@pytest.mark.parametrize("extra,expected", [
    (["--block_size", "100000"], "block_size 100000 is too large for the train split"),
    (["--n_embd", "18", "--n_head", "4"], "n_embd 18 is not divisible by n_head 4"),
    (["--impl", "no/such/gpt2.py"], "no/such/gpt2.py: no such implementation file"),
])
def test_cli_rejects_impossible_settings(capsys, tmp_path, toy_data, extra, expected):
    err = cli_error(capsys, ["--dataset", str(toy_data), "--out_dir", str(tmp_path), "--no-progress",
                             *CLI_TINY, *extra])
    assert expected in err


def test_cli_missing_dataset(capsys, tmp_path):
    err = cli_error(capsys, ["--dataset", str(tmp_path / "nope"), "--out_dir", str(tmp_path)])
    assert f"data folder {tmp_path / 'nope'} does not exist" in err


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "no-meta"])
def test_cli_bad_checkpoint(capsys, tmp_path, toy_data, damage):
    argv = ["--dataset", str(toy_data), "--out_dir", str(tmp_path), "--no-progress", *CLI_TINY]
    ckpt = tmp_path / CKPT_NAME
    if damage != "missing":
        assert cli.main([*argv, "--max_iters", "5"]) == 0
        capsys.readouterr()
        raw = ckpt.read_bytes()
        if damage == "garbage":
            ckpt.write_bytes(b"not a zip file at all")
        elif damage == "truncated":
            ckpt.write_bytes(raw[: len(raw) // 2])
        else:
            with np.load(ckpt, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files if k != "meta"}
            np.savez(ckpt, **arrays)
    err = cli_error(capsys, [*argv, "--resume"])
    assert str(ckpt) in err
    assert ("no checkpoint" if damage == "missing" else "not a readable checkpoint") in err


@pytest.mark.parametrize("extra,expected", [
    (["--n_embd", "32"], "config.n_embd: checkpoint 16, requested 32"),
    (["--dtype", "float64"], "dtype: checkpoint 'float32', requested 'float64'"),
    (["--batch_size", "5"], "batch_size: checkpoint 4, requested 5"),
    (["--learning_rate", "0.02"], "hparams.learning_rate: checkpoint 0.01, requested 0.02"),
    (["--max_iters", "3"], "the checkpoint is already at step 5"),
])
def test_cli_resume_with_other_settings_is_refused(capsys, tmp_path, toy_data, extra, expected):
    argv = ["--dataset", str(toy_data), "--out_dir", str(tmp_path), "--no-progress", *CLI_TINY]
    assert cli.main([*argv, "--max_iters", "5"]) == 0
    capsys.readouterr()
    err = cli_error(capsys, [*argv, "--resume", *extra])
    assert str(tmp_path / CKPT_NAME) in err and expected in err


def test_cli_gpu_without_cupy_is_a_clear_error(capsys, tmp_path, toy_data):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed")
    err = cli_error(capsys, ["--dataset", str(toy_data), "--out_dir", str(tmp_path), "--device", "gpu"])
    assert "--device gpu needs cupy" in err


def test_cli_prepares_the_default_dataset_when_missing(capsys, monkeypatch, tmp_path, tinyshakespeare):
    monkeypatch.setattr(cli, "DEFAULT_DATASET", tmp_path / "shakespeare_char")
    assert cli.resolve_dataset(None) == tmp_path / "shakespeare_char"
    assert "preparing it from tiny Shakespeare" in capsys.readouterr().out
    assert json.loads((tmp_path / "shakespeare_char" / "meta.json").read_text())["vocab_size"] == 65


def test_library_errors(impl, tmp_path, toy_data):
    with pytest.raises(TrainingError, match="resume and plot need an out_dir"):
        run(impl, toy_data, None, resume=True)
    with pytest.raises(TrainingError, match="hparams lack grad_clip"):
        train(impl, toy_data, CONFIG, {k: v for k, v in HPARAMS.items() if k != "grad_clip"},
              progress=False, **RUN)
    with pytest.raises(TrainingError, match="must differ from warmup_iters"):
        train(impl, toy_data, CONFIG, {**HPARAMS, "lr_decay_iters": 5}, progress=False, **RUN)
    with pytest.raises(TrainingError, match="seed must be an integer >= 0"):
        run(impl, toy_data, None, seed=-1)
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        run(impl, toy_data, tmp_path, resume=True)
    zipfile.ZipFile(tmp_path / CKPT_NAME, "w").close()  # an empty zip: no meta
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        run(impl, toy_data, tmp_path, resume=True)


# ----------------------------------------------------------------------------- fine-tuning (--init_from)

GPT2_TINY = {"vocab_size": 50257, "block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 16}
FT_RUN = {"batch_size": 2, "eval_interval": 2, "eval_iters": 1, "seed": 11}


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    """A random GPT-2 with the real vocabulary, saved by transformers (save_pretrained, safetensors)."""
    pytest.importorskip("transformers")
    from nanoproof.measure.oracle import save_random_checkpoint
    folder = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    save_random_checkpoint(folder, GPT2_TINY, seed=2, prefix=True)
    return folder


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory, tinyshakespeare, tiktoken_cache):
    root = tmp_path_factory.mktemp("bpe")
    (root / "input.txt").write_text(tinyshakespeare.read_text(encoding="utf-8")[:12000], encoding="utf-8")
    prepare(root / "input.txt", root / "data", mode="gpt2", block_size=GPT2_TINY["block_size"])
    return root / "data"


def finetune(module, data, init_from, out_dir=None, config=None, max_iters=3, **kw):
    return train(module, data, config or {}, HPARAMS, init_from=init_from, max_iters=max_iters,
                 out_dir=out_dir, progress=False, **{**FT_RUN, **kw})


def by_hand(module, data_dir, params, config, max_iters, seed):
    """The training loop written out: max_iters steps from `params` with a fresh AdamW state."""
    from nanoproof.tools.data import load_split
    data, state = load_split(data_dir, "train"), {}
    rng = np.random.Generator(np.random.PCG64([seed, 1]))
    for step in range(max_iters):
        x, y = module.get_batch(data, FT_RUN["batch_size"], config["block_size"], rng)
        _, cache = module.forward(params, x, y, config)
        module.adamw_step(params, module.backward(params, cache, config), state, step,
                          module.lr_at(step, HPARAMS), HPARAMS)
    return params, state


def test_init_from_pretrained_weights_trains_from_them(impl, hf_gpt2, bpe_data):
    from nanoproof.tools.pretrained import load_pretrained   # the loader --init_from uses
    loaded, config = load_pretrained(hf_gpt2)
    assert config == GPT2_TINY
    start = finetune(impl, bpe_data, hf_gpt2, max_iters=0)
    assert_same_bits(start.params, loaded, "params at step 0")
    assert start.state == {}
    result = finetune(impl, bpe_data, hf_gpt2)
    params, state = by_hand(impl, bpe_data, loaded, config, 3, FT_RUN["seed"])
    assert_same_bits(result.params, params, "params after 3 steps")
    assert_same_bits(result.state, state, "optimizer state after 3 steps")


def test_init_from_crops_the_context_and_resumes(impl, tmp_path, hf_gpt2, bpe_data):
    from nanoproof.tools.pretrained import load_pretrained   # the loader --init_from uses
    loaded, config = load_pretrained(hf_gpt2)
    cropped = finetune(impl, bpe_data, hf_gpt2, config={"block_size": 16, "n_layer": 1}, max_iters=0)
    assert cropped.params["wpe"].shape == (16, GPT2_TINY["n_embd"])
    np.testing.assert_array_equal(cropped.params["wpe"], loaded["wpe"][:16])

    full = finetune(impl, bpe_data, hf_gpt2, tmp_path / "full", {"block_size": 16}, max_iters=4)
    finetune(impl, bpe_data, hf_gpt2, tmp_path / "split", {"block_size": 16}, max_iters=2)
    resumed = finetune(impl, bpe_data, hf_gpt2, tmp_path / "split", {"block_size": 16}, max_iters=4,
                       resume=True)
    assert resumed.resumed_from == 2
    assert_same_bits(full.params, resumed.params, "params")
    assert_same_bits(full.state, resumed.state, "optimizer state")
    meta = load_checkpoint(tmp_path / "split" / CKPT_NAME)[2]
    assert meta["init_from"] == str(hf_gpt2.resolve())
    assert meta["config"] == {**GPT2_TINY, "block_size": 16}
    with pytest.raises(CheckpointError, match="init_from: checkpoint"):  # resumed without it
        train(impl, bpe_data, meta["config"], HPARAMS, max_iters=4, out_dir=tmp_path / "split",
              resume=True, progress=False, **FT_RUN)


def test_init_from_our_checkpoint(impl, tmp_path, toy_data):
    run(impl, toy_data, tmp_path / "first", max_iters=5)
    ckpt = tmp_path / "first" / CKPT_NAME
    params, _, meta = load_checkpoint(ckpt)
    start = finetune(impl, toy_data, ckpt, max_iters=0)
    assert_same_bits(start.params, params, "params at step 0")
    result = finetune(impl, toy_data, ckpt)
    expected, _ = by_hand(impl, toy_data, {k: v.copy() for k, v in params.items()}, meta["config"], 3,
                          FT_RUN["seed"])
    assert_same_bits(result.params, expected, "params after 3 steps")


def test_init_from_refusals(impl, tmp_path, toy_data, hf_gpt2, bpe_data):
    cases = [
        (bpe_data, hf_gpt2, {"n_layer": 2}, "drop n_layer 2 (the weights have 1)"),
        (bpe_data, hf_gpt2, {"n_embd": 32, "n_head": 2}, "drop n_embd 32 (the weights have 16)"),
        (bpe_data, hf_gpt2, {"block_size": 64}, "block_size 64 exceeds the 32 positions"),
        (toy_data, hf_gpt2, {}, "'char'-encoded"),
        (bpe_data, tmp_path / "nope", {}, "no such folder"),
    ]
    for data, init_from, config, expected in cases:
        with pytest.raises(TrainingError) as e:
            finetune(impl, data, init_from, config=config)
        assert expected in str(e.value) and str(init_from) in str(e.value), str(e.value)
    run(impl, toy_data, tmp_path / "char", max_iters=1)
    with pytest.raises(TrainingError, match="trained on another vocabulary"):
        finetune(impl, bpe_data, tmp_path / "char" / CKPT_NAME)


def test_cli_init_from(capsys, tmp_path, hf_gpt2, bpe_data):
    argv = ["--init_from", str(hf_gpt2), "--dataset", str(bpe_data), "--out_dir", str(tmp_path),
            "--no-progress", "--max_iters", "2", "--batch_size", "2", "--eval_interval", "2",
            "--eval_iters", "1", "--warmup_iters", "1", "--lr_decay_iters", "2"]
    assert cli.main([*argv, "--block_size", "24"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("val_loss ")
    assert load_checkpoint(tmp_path / CKPT_NAME)[2]["config"] == {**GPT2_TINY, "block_size": 24}
    err = cli_error(capsys, [*argv, "--n_head", "4"])
    assert "drop n_head 4 (the weights have 2)" in err
    assert cli.main([*argv, "--max_iters", "4", "--block_size", "24", "--resume"]) == 0
    assert load_checkpoint(tmp_path / CKPT_NAME)[2]["step"] == 4


def test_cli_resume_takes_the_checkpoints_settings(tmp_path, toy_data):
    """`--max_iters N --resume` alone continues a run made with other settings (nanoGPT's resume
    reads them from its checkpoint); a setting given explicitly must still agree."""
    base = [sys.executable, "scripts/train.py", "--dataset", str(toy_data), "--out_dir", str(tmp_path), "--no_progress"]
    first = subprocess.run(base + CLI_TINY, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    more = subprocess.run(base + ["--max_iters", "30", "--resume"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert more.returncode == 0, more.stderr
    assert load_checkpoint(tmp_path / CKPT_NAME)[2]["step"] == 30
    clash = subprocess.run(base + ["--max_iters", "40", "--resume", "--batch_size", "3"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60)
    assert clash.returncode == 2 and "batch_size: checkpoint" in clash.stderr


def test_plot_overlays_runs_and_names_a_broken_log(tmp_path, toy_data):
    """scripts/plot.py: two runs' logs in one PNG (written, non-empty); a broken log is named with its line."""
    base = [sys.executable, "scripts/train.py", "--dataset", str(toy_data), "--no_progress", *CLI_TINY]
    for name, seed in (("a", "1"), ("b", "2")):
        proc = subprocess.run(base + ["--out_dir", str(tmp_path / name), "--seed", seed, "--plot", "log"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / name / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "both.png"
    proc = subprocess.run([sys.executable, "scripts/plot.py", str(tmp_path / "a" / LOG_NAME),
                           str(tmp_path / "b" / LOG_NAME), "--out", str(out), "--log"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert "a, b" in proc.stdout
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"kind": "iter", "step": 0, "loss": 1.0, "lr": 0.1}\nnot json\n')
    proc = subprocess.run([sys.executable, "scripts/plot.py", str(broken), "--out", str(tmp_path / "x.png")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{broken}, line 2: not JSON" in proc.stderr
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- nanoGPT habits on the command lines


def test_help_examples_of_resume_are_accepted(tmp_path, toy_data):
    """Every `--resume` example of scripts/train.py --help continues a run made with the defaults of
    its other flags (only --max_iters changed here, to keep it short)."""
    examples = [line.split("#")[0].split()[2:] for line in cli.EPILOG.splitlines()
                if "scripts/train.py" in line and "--resume" in line]
    assert examples
    base = ["--dataset", str(toy_data), "--out_dir", str(tmp_path), "--no-progress", "--n_layer", "1",
            "--n_embd", "16", "--n_head", "2", "--block_size", "16", "--eval_iters", "1"]
    assert cli.main([*base, "--max_iters", "2", "--eval_interval", "2"]) == 0
    for flags in examples:
        if "--max_iters" in flags:
            flags[flags.index("--max_iters") + 1] = "3"
        assert cli.main(["--dataset", str(toy_data), "--out_dir", str(tmp_path), "--no-progress", *flags]) == 0, flags
        assert load_checkpoint(tmp_path / CKPT_NAME)[2]["step"] == 3
        assert cli.main([*base, "--max_iters", "2", "--eval_interval", "2"]) == 0   # back to step 2


def test_impls_train_takes_nanogpts_dataset_and_out_dir(impl, tmp_path, toy_data):
    """impl/gpt2.py train: --dataset/--out_dir as scripts/train.py (out_dir/ckpt.npz), --data/--out
    as aliases (an --out ending in .npz is the file itself); sample reads either."""
    short = ["--max_iters", "2", "--eval_interval", "2", "--eval_iters", "1", "--n_layer", "1", "--n_embd", "16",
             "--n_head", "2", "--block_size", "16"]
    for flags, ckpt in [(["--dataset", str(toy_data), "--out_dir", str(tmp_path / "o")], tmp_path / "o" / "ckpt.npz"),
                        (["--data", str(toy_data), "--out", str(tmp_path / "p.npz")], tmp_path / "p.npz")]:
        out = subprocess.run([sys.executable, "impl/gpt2.py", "train", *flags, *short], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.splitlines()[-2] == f"saved {ckpt}", out.stderr
        sample = subprocess.run([sys.executable, "impl/gpt2.py", "sample", "\n", "--ckpt", str(ckpt),
                                 "--n_tokens", "3"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert sample.returncode == 0 and len(sample.stdout) == 1 + 3 + 1, sample.stderr


@pytest.mark.parametrize("script", ["impl", "scripts"])
def test_device_cuda_is_gpu(script, tmp_path, toy_data):
    """--device cuda (nanoGPT's spelling) is accepted as gpu by both commands: without cupy it is the
    one-line "needs cupy" error, not argparse's invalid choice."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed: --device cuda would run")
    cmd = (["impl/gpt2.py", "train", "--dataset", str(toy_data)] if script == "impl"
           else ["scripts/train.py", "--dataset", str(toy_data), "--out_dir", str(tmp_path)])
    out = subprocess.run([sys.executable, *cmd, "--device", "cuda"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr and "invalid choice" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "--device cuda needs cupy" in out.stderr
