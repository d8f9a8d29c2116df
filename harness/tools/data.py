"""Token data for training and validation: nanoGPT-compatible ``train.bin`` / ``val.bin``.

A prepared data folder holds three files, each written atomically (temp file in the same folder,
then ``os.replace``; never pickle):

- ``train.bin``, ``val.bin``: token ids as raw ``np.uint16`` (``ndarray.tofile`` layout, as nanoGPT's
  ``prepare.py`` writes them), readable with ``np.memmap(path, dtype=np.uint16, mode='r')``;
- ``meta.json``: ``format`` ("nanoproof-data-1"), ``encoding`` ("char" or "gpt2"), ``vocab_size``,
  ``chars`` (char mode: the vocabulary, index = token id; null for gpt2), ``train_tokens``,
  ``val_tokens``, ``source`` (input path or URL), ``source_sha256`` (of the input's bytes),
  ``dtype`` ("uint16").

The split follows nanoGPT: the first 90% of the *text* (by characters, ``data[:int(n*0.9)]``) is
train, the rest val. Char mode's vocabulary is the sorted set of characters of the whole text
(nanoGPT's shakespeare_char); gpt2 mode encodes each split separately with tiktoken's "gpt2"
``encode_ordinary`` (nanoGPT's shakespeare).

Every failure a user can cause (missing, empty or non-UTF-8 input, text too short for one block,
a vocabulary uint16 cannot hold, an unreachable download, a missing data folder) raises
:class:`DataError` with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nanoproof.paths import GOLDEN_DIR, REPO_ROOT, WORK_DIR, atomic_write_bytes, atomic_write_files
from nanoproof.spec.corpus import (DTYPE, TINYSHAKESPEARE_XZ, DataError, char_decode, char_encode, char_splits,
                                  split_text, tinyshakespeare_bytes)

FORMAT = "nanoproof-data-1"
MODES = ("char", "gpt2")
SPLITS = ("train", "val")
GPT2_VOCAB_SIZE = 50257

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_NAME = "tinyshakespeare.txt"
DOWNLOAD_TIMEOUT_S = 30.0


def one_line(x: object) -> str:
    """x as text on one line (an error message inside ours)."""
    return " ".join(str(x).split())


# ----------------------------------------------------------------------------- tiktoken


@functools.lru_cache(maxsize=1)
def _gpt2_encoding():
    from nanoproof import env
    env.tiktoken_cache()   # offline: ../shared's or the shipped GPT-2 files
    try:
        import tiktoken

        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # ImportError, network errors, corrupt cache: all end the same way
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
        raise DataError(
            f"could not load tiktoken's 'gpt2' encoding (TIKTOKEN_CACHE_DIR={cache}): "
            f"{type(e).__name__}: {one_line(e)}"
        ) from None


# ----------------------------------------------------------------------------- encode / decode


def encoder(meta: dict) -> tuple[Callable[[str], list[int]], Callable[[Sequence[int]], str]]:
    """Return ``(encode, decode)`` for a data folder's meta: ``encode(str) -> list[int]``,
    ``decode(ids) -> str`` (ids: any sequence or array of ints)."""
    encoding = meta.get("encoding")
    if encoding == "char":
        codepoints = np.array([ord(c) for c in meta["chars"]], dtype=np.uint32)

        def encode(s: str) -> list[int]:
            return char_encode(s, codepoints, what="encode").tolist()

        def decode(ids: Sequence[int]) -> str:
            return char_decode(ids, codepoints)

        return encode, decode
    if encoding == "gpt2":
        enc = _gpt2_encoding()

        def encode(s: str) -> list[int]:
            return enc.encode_ordinary(s)

        def decode(ids: Sequence[int]) -> str:
            return enc.decode([int(i) for i in ids])

        return encode, decode
    raise DataError(f"unknown encoding {encoding!r} in meta (expected one of {', '.join(MODES)})")


# ----------------------------------------------------------------------------- input text


def read_text(text_path: str | os.PathLike) -> tuple[str, str]:
    """Read a UTF-8 text file; return ``(text, sha256 of its bytes)``. Raises DataError."""
    path = Path(text_path)
    if not path.exists():
        raise DataError(f"input file {path} does not exist")
    if not path.is_file():
        raise DataError(f"input {path} is not a file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read input file {path}: {one_line(e.strerror or e)}") from None
    if not raw:
        raise DataError(f"input file {path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"input file {path} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}: {e.reason})"
        ) from None
    return text, hashlib.sha256(raw).hexdigest()


def find_tinyshakespeare(
    root: str | os.PathLike | None = None,
    url: str = TINYSHAKESPEARE_URL,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, str]:
    """Locate tiny Shakespeare; return ``(local path, source)``.

    Lookup order: ``<root>/data/tinyshakespeare.txt`` (a cache), then
    ``<root>/../shared/data/tinyshakespeare.txt``, then the copy shipped in ``<root>/golden/``
    (decompressed into the cache), else download ``url`` into the cache (atomically).
    ``source`` is the local path, or ``url`` when this call downloaded it. ``root`` defaults to the
    repo root. Raises DataError (naming the URL and the reason) when the download fails.
    """
    # the shipped copy: in root's golden/ when a root is given (tests), else this install's golden/
    shipped = (Path(root) / "golden" if root is not None else GOLDEN_DIR) / TINYSHAKESPEARE_XZ.name
    root = Path(root) if root is not None else WORK_DIR
    log = log or (lambda msg: None)
    cache = root / "data" / TINYSHAKESPEARE_NAME
    shared = root.parent / "shared" / "data" / TINYSHAKESPEARE_NAME
    for candidate in (cache, shared):
        if candidate.is_file():
            log(f"using tiny Shakespeare from {candidate}")
            return candidate, str(candidate)
    if shipped.is_file():
        log(f"using tiny Shakespeare shipped as {shipped}")
        raw = tinyshakespeare_bytes(shipped)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cache, raw)
        except OSError as e:
            raise DataError(f"cannot write the cache {cache}: {one_line(e)}") from None
        return cache, str(shipped)

    log(f"downloading tiny Shakespeare from {url} to {cache}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        reason = f"HTTP {e.code} {e.reason}"
    except urllib.error.URLError as e:
        reason = one_line(e.reason)
    except (OSError, http.client.HTTPException, ValueError) as e:  # timeouts, resets, bad URL
        reason = one_line(e) or type(e).__name__
    else:
        reason = None if raw else "the server sent an empty file"
    if reason is not None:
        raise DataError(
            f"could not download tiny Shakespeare from {url}: {reason}; "
            f"pass --input PATH to use a local text file"
        )
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, raw)
    except OSError as e:
        raise DataError(f"cannot write the download cache {cache}: {one_line(e)}") from None
    return cache, url


# ----------------------------------------------------------------------------- prepare / load


def prepare(
    text_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    mode: str = "char",
    block_size: int = 64,
    source: str | None = None,
) -> dict:
    """Tokenize a UTF-8 text file into ``out_dir/{train.bin,val.bin,meta.json}``; return the meta.

    ``mode``: "char" or "gpt2". Each split must have at least ``block_size + 1`` tokens.
    ``source`` (recorded in meta) defaults to ``text_path``. Raises DataError; on any failure the
    files already in ``out_dir`` are left as they were.
    """
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    if int(block_size) != block_size or block_size < 1:
        raise DataError(f"block_size must be a positive integer, got {block_size!r}")
    text_path = Path(text_path)
    text, sha256 = read_text(text_path)

    if mode == "char":
        train_ids, val_ids, codepoints = char_splits(text, what=f"input file {text_path}")
        vocab_size = len(codepoints)
        chars = [chr(int(c)) for c in codepoints]
    else:
        enc = _gpt2_encoding()
        vocab_size = enc.n_vocab
        chars = None
        train_text, val_text = split_text(text)
        train_ids = np.array(enc.encode_ordinary(train_text), dtype=DTYPE)
        val_ids = np.array(enc.encode_ordinary(val_text), dtype=DTYPE)

    need = block_size + 1
    if len(train_ids) < need or len(val_ids) < need:
        raise DataError(
            f"input file {text_path} is too short for block_size {block_size} in {mode} mode: "
            f"the train split has {len(train_ids)} tokens and the val split has {len(val_ids)}; "
            f"each split needs at least {need} (block_size + 1)"
        )

    meta = {
        "format": FORMAT,
        "encoding": mode,
        "vocab_size": int(vocab_size),
        "chars": chars,
        "train_tokens": int(len(train_ids)),
        "val_tokens": int(len(val_ids)),
        "source": source if source is not None else str(text_path),
        "source_sha256": sha256,
        "dtype": "uint16",
    }
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_files(
            {
                out_dir / "train.bin": train_ids.tobytes(),
                out_dir / "val.bin": val_ids.tobytes(),
                out_dir / "meta.json": (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
            }
        )
    except OSError as e:
        where = e.filename or out_dir
        raise DataError(f"cannot write data folder {out_dir} ({where}): {one_line(e.strerror or e)}") from None
    return meta


_HINT = "run scripts/prepare_data.py first"


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles builtin containers and scalars only (dict, list, tuple, str, int, float, bool, None,
    bytes: pickle builds those without looking up a class); any class or function is refused, so a
    meta.pkl cannot run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain data is read")


def nanogpt_meta(data_dir: Path) -> dict:
    """Our meta for a nanoGPT data folder (train.bin/val.bin, uint16, and meta.pkl for char-level data,
    nanoGPT's {'vocab_size', 'itos', 'stoi'}; none for GPT-2 BPE): meta.pkl is read as plain data only."""
    pkl = data_dir / "meta.pkl"
    counts = {}
    for split in SPLITS:
        size = (data_dir / f"{split}.bin").stat().st_size
        if size % np.dtype(DTYPE).itemsize:
            raise DataError(f"{data_dir / f'{split}.bin'}: {size} bytes is not a whole number of uint16 tokens")
        counts[f"{split}_tokens"] = size // np.dtype(DTYPE).itemsize
    meta = {"format": FORMAT, "dtype": "uint16", "source": f"nanoGPT data folder {data_dir}",
            "source_sha256": None, **counts}
    if not pkl.is_file():   # nanoGPT's shakespeare / openwebtext: GPT-2 BPE, no meta.pkl
        return {**meta, "encoding": "gpt2", "vocab_size": GPT2_VOCAB_SIZE, "chars": None}
    try:
        with open(pkl, "rb") as f:
            raw = _PlainDataUnpickler(f).load()
    except Exception as e:   # refused classes, truncated files, I/O errors: one message
        raise DataError(f"cannot read {pkl} as plain data: {type(e).__name__}: {one_line(e)}") from None
    itos, vocab_size = (raw.get("itos"), raw.get("vocab_size")) if isinstance(raw, dict) else (None, None)
    if not isinstance(vocab_size, int) or not isinstance(itos, dict) \
            or sorted(itos) != list(range(vocab_size)) or not all(isinstance(c, str) and len(c) == 1 for c in itos.values()):
        raise DataError(f"{pkl}: expected nanoGPT's char meta {{'vocab_size': int, 'itos': {{id: char}}}} "
                        f"with ids 0..vocab_size-1, got keys {sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    return {**meta, "encoding": "char", "vocab_size": vocab_size, "chars": [itos[i] for i in range(vocab_size)]}


def load_meta(data_dir: str | os.PathLike) -> dict:
    """Read and check ``data_dir/meta.json``; for a nanoGPT data folder (train.bin and val.bin
    without meta.json) build it from meta.pkl (plain data only) and the file sizes. Raises
    DataError when missing or not ours."""
    data_dir = Path(data_dir)
    path = data_dir / "meta.json"
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist: {_HINT}")
    if not path.is_file():
        if all((data_dir / f"{s}.bin").is_file() for s in SPLITS):
            return nanogpt_meta(data_dir)
        raise DataError(f"{path} does not exist: {_HINT}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {one_line(e)}; {_HINT}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{path} is not a {FORMAT} meta file (format: {found!r}); {_HINT}")
    missing = [k for k in ("encoding", "vocab_size", "train_tokens", "val_tokens", "dtype") if k not in meta]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; {_HINT}")
    if meta["dtype"] != "uint16":
        raise DataError(f"{path} has dtype {meta['dtype']!r}, expected 'uint16'; {_HINT}")
    return meta


def load_split(data_dir: str | os.PathLike, split: str) -> np.memmap:
    """Return ``split`` ("train" or "val") as a read-only ``np.memmap`` of uint16 token ids.

    Checks the folder, ``meta.json`` and that the file holds exactly the meta's token count.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    path = data_dir / f"{split}.bin"
    if not path.is_file():
        raise DataError(f"{path} does not exist: {_HINT}")
    expected = int(meta[f"{split}_tokens"]) * np.dtype(DTYPE).itemsize
    size = path.stat().st_size
    if size != expected or size == 0:
        raise DataError(
            f"{path} has {size} bytes but meta.json says {meta[f'{split}_tokens']} tokens "
            f"({expected} bytes): the folder is inconsistent; {_HINT}"
        )
    return np.memmap(path, dtype=DTYPE, mode="r")
