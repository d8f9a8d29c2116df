"""scripts/eval.py and harness/tools/evaluate.py: the mean cross-entropy over non-overlapping windows equals
transformers' loss on the same windows (written out here from the --help text, independently of
nanoproof.tools.evaluate.windows), for pretrained weights (a folder transformers saved) and for a checkpoint of
ours; the windows score every token but the first exactly once; user errors are one clear line.

Needs the optional extra `oracle` for the transformers comparisons; skipped where it is absent."""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from nanoproof.tools.data import load_split, prepare  # noqa: E402
from nanoproof.cli import load_script  # noqa: E402
from nanoproof.tools.evaluate import windows  # noqa: E402
from nanoproof.measure.oracle import hf_loss, save_random_checkpoint, transformers_gpt2  # noqa: E402
from nanoproof.tools.checkpoints import CKPT_NAME, load_checkpoint  # noqa: E402
from nanoproof.tools.training import train  # noqa: E402

GPT2_CONFIG = {"vocab_size": 50257, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16}
CHAR_CONFIG = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}  # vocab_size: the data's
HPARAMS = {"learning_rate": 1e-2, "min_lr": 1e-3, "warmup_iters": 2, "lr_decay_iters": 10,
           "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "grad_clip": 1.0}
# the issue's bound for float32 against transformers' float32 loss; measured max 6.5e-8 relative (these 8 cases)
TOL = 1e-6


cli = load_script("eval")


@pytest.fixture(scope="module")
def gpt2_data(tmp_path_factory, tinyshakespeare, tiktoken_cache):
    root = tmp_path_factory.mktemp("gpt2data")
    (root / "input.txt").write_text(tinyshakespeare.read_text(encoding="utf-8")[:12000], encoding="utf-8")
    prepare(root / "input.txt", root / "data", mode="gpt2", block_size=GPT2_CONFIG["block_size"])
    return root / "data"


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "and", "of", "my", "lord", "thou", "art", "to", "be", "not"]
    root = tmp_path_factory.mktemp("chardata")
    (root / "input.txt").write_text("".join(" ".join(rng.choice(words, 8)) + ".\n" for _ in range(100)))
    prepare(root / "input.txt", root / "data", mode="char", block_size=CHAR_CONFIG["block_size"])
    return root / "data"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "gpt2-vocab"
    save_random_checkpoint(folder, GPT2_CONFIG, seed=5, prefix=False)
    return folder


@pytest.fixture(scope="module")
def our_ckpt(tmp_path_factory, impl, char_data):
    out = tmp_path_factory.mktemp("run")
    train(impl, char_data, CHAR_CONFIG, HPARAMS, max_iters=10, batch_size=4, eval_interval=10,
          eval_iters=1, seed=3, out_dir=out, progress=False)
    return out / CKPT_NAME


def run_cli(capsys, argv):
    """eval.py in-process: (loss, tokens) from its last line."""
    assert cli.main([*argv, "--no-progress"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    m = re.fullmatch(r"(val|train) loss (\S+) perplexity (\S+) tokens (\d+)", last)
    assert m, last
    loss, ppl = float(m.group(2)), float(m.group(3))
    assert abs(ppl - np.exp(loss)) <= 1e-4 * np.exp(loss)
    return loss, int(m.group(4))


def transformers_window_loss(model, data, n_tokens, T):
    """Token-weighted mean of transformers' cross-entropy over the windows --help describes: window k
    feeds d[kT : kT+T] and predicts d[kT+1 : kT+T+1]; the last one is whatever targets remain."""
    total, count, start = 0.0, 0, 0
    while start < n_tokens - 1:
        L = min(T, n_tokens - 1 - start)
        chunk = np.asarray(data[start:start + L + 1], dtype=np.int64)
        with torch.no_grad():
            _, loss = hf_loss(model, chunk[None, :-1], chunk[None, 1:])
        total, count, start = total + loss.item() * L, count + L, start + L
    return total / count, count


@pytest.mark.parametrize("impl_arg", [None, "reference"])
@pytest.mark.parametrize("max_tokens,block_size,batch_size", [(None, None, 1), (300, 32, 3), (97, 8, 4)])
def test_eval_of_pretrained_weights_equals_transformers(capsys, hf_folder, gpt2_data, impl_arg,
                                                        max_tokens, block_size, batch_size):
    from transformers import GPT2LMHeadModel
    argv = ["--weights", str(hf_folder), "--data", str(gpt2_data), "--batch_size", str(batch_size)]
    argv += ["--impl", impl_arg] if impl_arg else []
    argv += ["--max_tokens", str(max_tokens)] if max_tokens else []
    argv += ["--block_size", str(block_size)] if block_size else []
    loss, count = run_cli(capsys, argv)

    model = GPT2LMHeadModel.from_pretrained(hf_folder, attn_implementation="eager").eval()
    data = load_split(gpt2_data, "val")
    expected, expected_count = transformers_window_loss(model, data, max_tokens or len(data),
                                                        block_size or GPT2_CONFIG["block_size"])
    assert count == expected_count
    assert abs(loss - expected) <= TOL * expected, (loss, expected)


def test_eval_of_our_checkpoint_equals_transformers(capsys, our_ckpt, char_data):
    params, _, meta = load_checkpoint(our_ckpt)
    for split in ("val", "train"):
        loss, count = run_cli(capsys, ["--ckpt", str(our_ckpt), "--data", str(char_data), "--split", split,
                                       "--batch_size", "5"])
        model = transformers_gpt2(meta["config"], params, torch.float32)
        data = load_split(char_data, split)
        expected, expected_count = transformers_window_loss(model, data, len(data), meta["config"]["block_size"])
        assert count == expected_count == len(data) - 1
        assert abs(loss - expected) <= TOL * expected, (split, loss, expected)


@pytest.mark.parametrize("n_tokens,block_size", [(2, 1), (2, 5), (33, 8), (34, 8), (100, 7), (1000, 1000)])
def test_windows_score_every_token_but_the_first_once(n_tokens, block_size):
    spans = windows(n_tokens, block_size)
    targets = np.concatenate([np.arange(s + 1, s + L + 1) for s, L in spans])
    assert targets.tolist() == list(range(1, n_tokens))
    assert all(s == k * block_size and L == block_size for k, (s, L) in enumerate(spans[:-1]))
    assert 1 <= spans[-1][1] <= block_size


def test_help_says_which_windows(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ["window k feeds d[kT : kT+T]", "covers tokens [kT, kT+T]", "trailing partial window",
                   "N - 1 in all", "--max_tokens", "--weights", "--ckpt", "--impl", "--dtype", "--split"]:
        assert phrase in text, phrase


def cli_error(capsys, argv):
    assert cli.main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("eval.py: error: "), err
    return err


def test_cli_errors(capsys, tmp_path, hf_folder, gpt2_data, char_data, our_ckpt):
    small = tmp_path / "small"
    save_random_checkpoint(small, {**GPT2_CONFIG, "vocab_size": 40}, seed=0)
    capsys.readouterr()  # transformers' progress bar
    cases = [
        (["--weights", str(tmp_path / "nope"), "--data", str(gpt2_data)], [str(tmp_path / "nope"), "no such folder"]),
        (["--weights", str(small), "--data", str(gpt2_data)], ["vocab_size 40", "'gpt2'-encoded"]),
        (["--weights", str(hf_folder), "--data", str(char_data)], ["vocab_size 50257", "'char'-encoded"]),
        (["--ckpt", str(our_ckpt), "--data", str(gpt2_data)], ["trained on another vocabulary",
                                                              "encoding: weights 'char', data 'gpt2'"]),
        (["--ckpt", str(tmp_path / "none.npz"), "--data", str(char_data)], ["none.npz: no such checkpoint file"]),
        (["--weights", str(our_ckpt), "--data", str(char_data)], ["--weights takes a Hugging Face folder"]),
        (["--weights", str(hf_folder), "--data", str(gpt2_data), "--block_size", "33"],
         ["block_size 33 must be between 1 and the model's 32"]),
        (["--weights", str(hf_folder), "--data", str(tmp_path / "nodata")], ["does not exist"]),
    ]
    for argv, fragments in cases:
        err = cli_error(capsys, argv)
        for fragment in fragments:
            assert fragment in err, (fragment, err)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    assert "not a readable nanoproof checkpoint" in cli_error(
        capsys, ["--ckpt", str(tmp_path / "garbage.npz"), "--data", str(char_data)])


def test_cli_refuses_a_pickle_folder(capsys, tmp_path, gpt2_data):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04N.")  # pickle of None: never opened anyway
    err = cli_error(capsys, ["--weights", str(tmp_path), "--data", str(gpt2_data)])
    assert "pytorch_model.bin" in err and "pickle files are never loaded" in err
