"""Tests for harness/tools/data.py and scripts/prepare_data.py (token data preparation).

Expected numbers are derived from the input texts themselves, never typed in.
No test touches the network: downloads go to a monkeypatched urlopen or to a refused local port.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from nanoproof.paths import REPO_ROOT as ROOT
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nanoproof import paths  # noqa: E402
from nanoproof.tools import data  # noqa: E402
from nanoproof.tools.data import DataError, encoder, load_meta, load_split, prepare  # noqa: E402

SCRIPT = ROOT / "scripts" / "prepare_data.py"
UNREACHABLE_URL = "http://127.0.0.1:9/input.txt"  # discard port: connection refused, no network

@pytest.fixture(autouse=True)
def _offline_tiktoken(monkeypatch, tiktoken_cache):
    """gpt2 mode never downloads here: tiktoken reads ../shared's or the shipped GPT-2 files."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache))


def sample_text(n_lines: int = 60) -> str:
    rng = np.random.default_rng(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "Whether", "'tis", "nobler",
             "ROMEO:", "JULIET:", "thou", "art", "café", "naïve", "—", "¿qué?", "日本"]
    return "".join(" ".join(rng.choice(words, size=8)) + ".\n" for _ in range(n_lines))


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))  # exact bytes, no newline translation
    return path


def run_cli(*args: str, cwd: Path = ROOT, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=60)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


# ----------------------------------------------------------------------------- round trips


def test_char_round_trip(tmp_path):
    text = sample_text()
    src = write(tmp_path / "in.txt", text)
    out = tmp_path / "out"
    meta = prepare(src, out, mode="char", block_size=16)

    assert meta == load_meta(out)
    assert meta["format"] == "nanoproof-data-1" and meta["encoding"] == "char" and meta["dtype"] == "uint16"
    assert meta["chars"] == sorted(set(text))
    assert meta["vocab_size"] == len(set(text))
    assert meta["source"] == str(src)
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()

    train, val = load_split(out, "train"), load_split(out, "val")
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    assert (out / "train.bin").stat().st_size == 2 * meta["train_tokens"] == 2 * len(train)
    assert (out / "val.bin").stat().st_size == 2 * meta["val_tokens"] == 2 * len(val)
    cut = int(len(text) * 0.9)
    assert (meta["train_tokens"], meta["val_tokens"]) == (cut, len(text) - cut)

    encode, decode = encoder(meta)
    assert decode(train) == text[:cut] and decode(val) == text[cut:]
    assert decode(train) + decode(val) == text
    assert encode(text[:cut]) == train.tolist()
    # nanoGPT layout: raw native uint16, readable without our loader
    assert np.array_equal(np.fromfile(out / "train.bin", dtype=np.uint16), train)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]


def test_char_encode_rejects_unknown_character(tmp_path):
    meta = prepare(write(tmp_path / "in.txt", sample_text()), tmp_path / "out", block_size=8)
    encode, _ = encoder(meta)
    with pytest.raises(DataError, match="'Z'"):
        encode("Zebra")


def test_gpt2_round_trip(tmp_path):
    import tiktoken

    text = sample_text(40)
    src = write(tmp_path / "in.txt", text)
    out = tmp_path / "out"
    meta = prepare(src, out, mode="gpt2", block_size=16)

    enc = tiktoken.get_encoding("gpt2")
    cut = int(len(text) * 0.9)
    assert meta["encoding"] == "gpt2" and meta["chars"] is None
    assert meta["vocab_size"] == enc.n_vocab
    train, val = load_split(out, "train"), load_split(out, "val")
    assert train.tolist() == enc.encode_ordinary(text[:cut])  # each split encoded separately
    assert val.tolist() == enc.encode_ordinary(text[cut:])
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train), len(val))
    assert enc.decode(train.tolist()) + enc.decode(val.tolist()) == text
    encode, decode = encoder(meta)
    assert decode(train) + decode(val) == text
    assert encode(text[cut:]) == val.tolist()


def test_char_tinyshakespeare(tmp_path, tinyshakespeare):
    text = tinyshakespeare.read_bytes().decode("utf-8")
    meta = prepare(tinyshakespeare, tmp_path / "out", mode="char", block_size=256)
    assert meta["vocab_size"] == len(set(text))  # 65 for the canonical file
    assert meta["train_tokens"] + meta["val_tokens"] == len(text)  # 1,115,394
    assert meta["train_tokens"] == int(len(text) * 0.9)
    _, decode = encoder(meta)
    assert decode(load_split(tmp_path / "out", "val")) == text[int(len(text) * 0.9):]


def test_vocab_boundary_fits_uint16(tmp_path):
    """65,536 distinct characters is the most uint16 ids can hold (0..65535): accepted."""
    chars = [chr(c) for c in range(0xD800)] + [chr(c) for c in range(0xE000, 0xE000 + 65536 - 0xD800)]
    assert len(chars) == 65536
    src = write(tmp_path / "in.txt", "".join(chars))
    meta = prepare(src, tmp_path / "out", block_size=8)
    assert meta["vocab_size"] == 65536
    assert int(load_split(tmp_path / "out", "val").max()) == 65535


# ----------------------------------------------------------------------------- input errors


def test_missing_file(tmp_path):
    src = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="does not exist") as e:
        prepare(src, tmp_path / "out")
    assert str(src) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_empty_file(tmp_path):
    src = write(tmp_path / "empty.txt", "")
    with pytest.raises(DataError, match="is empty") as e:
        prepare(src, tmp_path / "out")
    assert str(src) in str(e.value)


def test_non_utf8_file(tmp_path):
    src = tmp_path / "latin1.txt"
    src.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    with pytest.raises(DataError, match="not valid UTF-8") as e:
        prepare(src, tmp_path / "out")
    assert str(src) in str(e.value) and "offset 3" in str(e.value)


def test_too_short(tmp_path):
    text = "abcdefghij" * 30  # 300 chars: train 270, val 30 tokens
    src = write(tmp_path / "short.txt", text)
    cut = int(len(text) * 0.9)
    with pytest.raises(DataError) as e:
        prepare(src, tmp_path / "out", block_size=64)
    msg = str(e.value)
    assert str(src) in msg and "too short" in msg
    assert f"train split has {cut} tokens" in msg and f"val split has {len(text) - cut}" in msg
    assert "at least 65" in msg
    # one token fewer than needed fails, exactly block_size + 1 in the smaller split passes
    prepare(src, tmp_path / "out", block_size=len(text) - cut - 1)
    with pytest.raises(DataError, match="too short"):
        prepare(src, tmp_path / "out2", block_size=len(text) - cut)


def test_vocab_too_large(tmp_path):
    chars = [chr(c) for c in range(0xD800)] + [chr(c) for c in range(0xE000, 0xE000 + 65537 - 0xD800)]
    src = write(tmp_path / "huge_vocab.txt", "".join(chars))
    with pytest.raises(DataError) as e:
        prepare(src, tmp_path / "out")
    msg = str(e.value)
    assert str(src) in msg and "65537" in msg and "uint16" in msg
    assert not (tmp_path / "out").exists()


def test_bad_mode_and_block_size(tmp_path):
    src = write(tmp_path / "in.txt", sample_text())
    with pytest.raises(DataError, match="unknown mode"):
        prepare(src, tmp_path / "out", mode="bpe")
    with pytest.raises(DataError, match="block_size"):
        prepare(src, tmp_path / "out", block_size=0)


# ----------------------------------------------------------------------------- loading errors


def test_load_split_errors(tmp_path):
    with pytest.raises(DataError, match="run scripts/prepare_data.py first") as e:
        load_split(tmp_path / "missing", "train")
    assert str(tmp_path / "missing") in str(e.value)

    (tmp_path / "nometa").mkdir()
    with pytest.raises(DataError, match="meta.json does not exist: run scripts/prepare_data.py first"):
        load_split(tmp_path / "nometa", "train")

    out = tmp_path / "out"
    prepare(write(tmp_path / "in.txt", sample_text()), out, block_size=8)
    with pytest.raises(DataError, match="unknown split"):
        load_split(out, "test")
    (out / "val.bin").unlink()
    with pytest.raises(DataError, match=r"val\.bin does not exist: run scripts/prepare_data.py first"):
        load_split(out, "val")
    (out / "train.bin").write_bytes(b"\0" * 6)
    with pytest.raises(DataError, match="inconsistent"):
        load_split(out, "train")
    (out / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="not a nanoproof-data-1 meta file"):
        load_meta(out)


# ----------------------------------------------------------------------------- atomic writes


def _fail_midway_on_val(monkeypatch):
    real = paths._write_bytes

    def failing(f, payload):
        if Path(f.name).name.startswith(".val.bin."):
            real(f, payload[: len(payload) // 2])
            raise OSError(28, "No space left on device")
        real(f, payload)

    monkeypatch.setattr(paths, "_write_bytes", failing)


def test_atomic_write_preserves_previous_contents(tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare(write(tmp_path / "old.txt", sample_text(30)), out, block_size=8)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    _fail_midway_on_val(monkeypatch)
    with pytest.raises(DataError, match="No space left on device") as e:
        prepare(write(tmp_path / "new.txt", sample_text(90)), out, block_size=8)
    assert str(out) in str(e.value)

    after = {p.name: p.read_bytes() for p in out.iterdir()}  # also lists any leftover temp file
    assert after == before
    monkeypatch.undo()
    assert len(load_split(out, "val")) == load_meta(out)["val_tokens"]


def test_atomic_write_leaves_nothing_when_new(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _fail_midway_on_val(monkeypatch)
    with pytest.raises(DataError):
        prepare(write(tmp_path / "in.txt", sample_text()), out, block_size=8)
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------- tiny Shakespeare lookup


class _FakeResponse:
    def __init__(self, payload: bytes):
        self.payload = payload

    def read(self):
        return self.payload

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_lookup_order(tmp_path):
    root = tmp_path / "repo"
    shared = write_parent(tmp_path / "shared" / "data" / "tinyshakespeare.txt", "shared copy\n")
    logs = []
    assert data.find_tinyshakespeare(root, url=UNREACHABLE_URL, log=logs.append) == (shared, str(shared))
    assert str(shared) in logs[-1]
    cache = write_parent(root / "data" / "tinyshakespeare.txt", "cached copy\n")
    assert data.find_tinyshakespeare(root, url=UNREACHABLE_URL, log=logs.append) == (cache, str(cache))
    assert str(cache) in logs[-1]


def test_shipped_copy_before_any_download(tmp_path):
    """A clone without ../shared and without network: the copy shipped in golden/ is used (its
    sha256 checked); a damaged one is refused with the command that restores it."""
    from nanoproof.spec import corpus
    root = tmp_path / "repo"
    (root / "golden").mkdir(parents=True)
    shutil.copy(corpus.TINYSHAKESPEARE_XZ, root / "golden")
    logs = []
    path, source = data.find_tinyshakespeare(root, url=UNREACHABLE_URL, log=logs.append)
    assert path == root / "data" / "tinyshakespeare.txt" and source == str(root / "golden" / "tinyshakespeare.txt.xz")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == corpus.TINYSHAKESPEARE_SHA256
    assert len(path.read_bytes()) == 1_115_394 and "shipped" in logs[-1]
    damaged = tmp_path / "damaged.txt.xz"
    damaged.write_bytes((root / "golden" / "tinyshakespeare.txt.xz").read_bytes()[:-100])
    with pytest.raises(DataError, match="restore it with git checkout golden/damaged.txt.xz"):
        corpus.tinyshakespeare_bytes(damaged)
    import lzma
    damaged.write_bytes(lzma.compress(b"not shakespeare"))
    with pytest.raises(DataError, match="sha256 .* expected 86c4e6aa9db7"):
        corpus.tinyshakespeare_bytes(damaged)


def write_parent(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write(path, text)


def test_download_into_cache(tmp_path, monkeypatch):
    payload = sample_text().encode("utf-8")
    seen = {}

    def fake_urlopen(url, timeout=None):
        seen.update(url=url, timeout=timeout)
        return _FakeResponse(payload)

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "repo"
    path, source = data.find_tinyshakespeare(root, url="https://example.invalid/input.txt")
    assert path == root / "data" / "tinyshakespeare.txt" and path.read_bytes() == payload
    assert source == "https://example.invalid/input.txt" and seen["timeout"] == 30.0
    assert sorted(p.name for p in path.parent.iterdir()) == ["tinyshakespeare.txt"]  # no temp left


@pytest.mark.parametrize(
    "error, reason",
    [
        (urllib.error.URLError("[Errno -3] Temporary failure in name resolution"), "name resolution"),
        (urllib.error.HTTPError(data.TINYSHAKESPEARE_URL, 404, "Not Found", {}, None), "HTTP 404 Not Found"),
        (TimeoutError("timed out"), "timed out"),
    ],
)
def test_download_failure_monkeypatched(tmp_path, monkeypatch, error, reason):
    def fake_urlopen(url, timeout=None):
        raise error

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DataError) as e:
        data.find_tinyshakespeare(tmp_path / "repo")
    msg = str(e.value)
    assert data.TINYSHAKESPEARE_URL in msg and reason in msg and "--input" in msg
    assert "\n" not in msg
    assert not (tmp_path / "repo" / "data" / "tinyshakespeare.txt").exists()


def test_download_failure_unreachable(tmp_path):
    with pytest.raises(DataError) as e:
        data.find_tinyshakespeare(tmp_path / "repo", url=UNREACHABLE_URL, timeout=5)
    msg = str(e.value)
    assert UNREACHABLE_URL in msg and "refused" in msg.lower() and "--input" in msg


# ----------------------------------------------------------------------------- command line


def test_cli_success_and_help(tmp_path):
    text = sample_text()
    src = write(tmp_path / "in.txt", text)
    proc = run_cli("--input", str(src), "--out", str(tmp_path / "out"), "--block_size", "8")
    assert proc.returncode == 0, proc.stderr
    meta = load_meta(tmp_path / "out")
    assert f"vocab_size {meta['vocab_size']}" in proc.stdout and str(tmp_path / "out") in proc.stdout
    assert f"{meta['train_tokens']:,}" in proc.stdout and f"{meta['val_tokens']:,}" in proc.stdout

    help_text = run_cli("--help").stdout
    for fragment in ("char", "gpt2", "data/shakespeare_char", "data/tinyshakespeare.txt",
                     "../shared/data/tinyshakespeare.txt", "--block_size"):
        assert fragment in help_text


@pytest.mark.parametrize("case", ["missing", "empty", "short", "latin1"])
def test_cli_errors(tmp_path, case):
    src = tmp_path / f"{case}.txt"
    expected = {"missing": "does not exist", "empty": "is empty", "short": "too short",
                "latin1": "not valid UTF-8"}[case]
    if case == "empty":
        src.write_bytes(b"")
    elif case == "short":
        write(src, "x" * 100)
    elif case == "latin1":
        src.write_bytes(b"caf\xe9\n" * 100)
    proc = run_cli("--input", str(src), "--out", str(tmp_path / "out"))
    assert_clean_error(proc, str(src), expected)


def test_cli_download_failure(tmp_path, monkeypatch, capsys):
    """The command where no tiny Shakespeare is anywhere (no cache, no ../shared, no shipped copy) and
    the download fails: one clean line naming the URL and the way out, nothing written."""
    from nanoproof.cli import load_script
    cli = load_script("prepare_data")
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(data, "WORK_DIR", repo)
    monkeypatch.setattr(data, "GOLDEN_DIR", repo / "golden")
    monkeypatch.setattr(cli, "REPO_ROOT", repo)
    assert cli.main(["--url", UNREACHABLE_URL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert UNREACHABLE_URL in err and "could not download" in err and "--input" in err
    assert not (repo / "data" / "shakespeare_char").exists()


# ----------------------------------------------------------------------------- nanoGPT data folders


def nanogpt_folder(tmp_path, text):
    """A folder as nanoGPT's data/shakespeare_char/prepare.py leaves it: train.bin, val.bin, meta.pkl."""
    import pickle
    ours = tmp_path / "ours"
    meta = prepare(write(tmp_path / "input.txt", text), ours, block_size=8)
    folder = tmp_path / "nanogpt"
    folder.mkdir()
    for split in ("train", "val"):
        shutil.copy(ours / f"{split}.bin", folder)
    itos = dict(enumerate(meta["chars"]))
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": meta["vocab_size"], "itos": itos, "stoi": {c: i for i, c in itos.items()}}, f)
    return folder, meta


def test_nanogpt_char_folder_reads_like_ours(tmp_path):
    folder, ours = nanogpt_folder(tmp_path, sample_text(30))
    meta = load_meta(folder)
    for k in ("encoding", "vocab_size", "chars", "train_tokens", "val_tokens"):
        assert meta[k] == ours[k], k
    assert np.array_equal(load_split(folder, "val"), load_split(tmp_path / "ours", "val"))
    encode, decode = encoder(meta)
    assert decode(encode("to be")) == "to be"


def test_nanogpt_folder_without_meta_pkl_is_gpt2_bpe(tmp_path):
    folder, _ = nanogpt_folder(tmp_path, sample_text(30))
    (folder / "meta.pkl").unlink()
    meta = load_meta(folder)
    assert meta["encoding"] == "gpt2" and meta["vocab_size"] == 50257


def test_meta_pkl_is_read_as_plain_data_only(tmp_path):
    """A meta.pkl that names a class or function is refused before anything runs."""
    import pickle
    folder, _ = nanogpt_folder(tmp_path, sample_text(30))
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 3, "itos": Evil()}, f)
    with pytest.raises(DataError, match=r"meta.pkl as plain data: UnpicklingError: refused to load pathlib"):
        load_meta(folder)
    assert not marker.exists()
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 2, "itos": {0: "a"}}, f)
    with pytest.raises(DataError, match="expected nanoGPT's char meta"):
        load_meta(folder)


def test_shipped_gpt2_bpe_files_work_offline(tmp_path, monkeypatch):
    """Without ../shared, tiktoken's GPT-2 files come from the copy shipped in golden/tiktoken_gpt2/,
    unpacked once under .nanoproof/: the encoding loads with no network and encodes as GPT-2 does."""
    from nanoproof import env, paths
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "clone")        # nothing beside it
    monkeypatch.setattr(paths, "WORK_DIR", tmp_path / "work")
    folder = Path(env.tiktoken_cache())
    assert folder == tmp_path / "work" / ".nanoproof" / "tiktoken_cache"
    shipped = sorted(p.stem for p in (paths.GOLDEN_DIR / "tiktoken_gpt2").glob("*.xz"))
    assert sorted(p.name for p in folder.iterdir()) == shipped and len(shipped) == 2
    text = "ROMEO: But, soft! what light through yonder window breaks?"
    code = ("import tiktoken, sys; e = tiktoken.get_encoding('gpt2'); ids = e.encode_ordinary(sys.argv[1]); "
            "print(len(ids), e.n_vocab, e.decode(ids) == sys.argv[1])")
    env_vars = {**os.environ, "TIKTOKEN_CACHE_DIR": str(folder), "HTTPS_PROXY": "http://127.0.0.1:9",
                "HTTP_PROXY": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, timeout=60, env=env_vars)
    assert proc.returncode == 0, proc.stderr[-500:]
    n_ids, n_vocab, round_trip = proc.stdout.split()
    assert round_trip == "True" and int(n_vocab) == data.GPT2_VOCAB_SIZE and 1 < int(n_ids) < len(text)
