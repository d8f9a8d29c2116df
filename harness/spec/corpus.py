"""Text to token ids, the rules the score case and data preparation share (nanoGPT's conventions):
the first 90% of the text (by characters) is train, the rest val; a char vocabulary is the sorted
set of the characters of the whole text, token id = index in it; ids are uint16.

The judge reads tiny Shakespeare through these functions alone (harness/spec/cases.py,
shakespeare_splits); harness/tools/data.py builds data folders with them. Numpy only."""
import hashlib
import lzma

import numpy as np

from nanoproof.paths import GOLDEN_DIR

TRAIN_FRACTION = 0.9  # nanoGPT: train = data[:int(n*0.9)], val = the rest
DTYPE = np.uint16
MAX_VOCAB = int(np.iinfo(DTYPE).max) + 1  # ids 0..65535 fit in uint16


class DataError(Exception):
    """A problem with the input text or a data folder, with a message meant for the user."""


# tiny Shakespeare (karpathy/char-rnn's input.txt, 1,115,394 bytes) ships with the repo, xz-compressed
# beside the golden file recorded on it, so the score gate and the tests that train on it run on any
# clone, offline
TINYSHAKESPEARE_XZ = GOLDEN_DIR / "tinyshakespeare.txt.xz"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def tinyshakespeare_bytes(path=TINYSHAKESPEARE_XZ):
    """The bytes of the shipped tiny Shakespeare (`path`: an xz file), their sha256 checked. Raises
    DataError naming the file when it is missing, not xz, or not the text it should be."""
    restore = f"restore it with git checkout golden/{path.name}"
    try:
        raw = lzma.decompress(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {restore}") from None
    except (OSError, lzma.LZMAError) as exc:
        raise DataError(f"{path} is unreadable ({exc}): {restore}") from None
    sha = hashlib.sha256(raw).hexdigest()
    if sha != TINYSHAKESPEARE_SHA256:
        raise DataError(f"{path}: sha256 {sha[:12]}..., expected {TINYSHAKESPEARE_SHA256[:12]}...: {restore}")
    return raw


def split_text(text):
    """(train text, val text)."""
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut], text[cut:]


def char_vocabulary(text):
    """The sorted distinct code points of `text` (uint32): token id = index."""
    return np.unique(np.frombuffer(text.encode("utf-32-le"), dtype="<u4"))


def char_encode(text, codepoints, *, what):
    """Map each character of `text` to its index in the sorted `codepoints`; uint16 ids."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    ids = np.searchsorted(codepoints, codes)
    ok = ids < len(codepoints)
    ok[ok] = codepoints[ids[ok]] == codes[ok]
    if not ok.all():
        bad = chr(int(codes[np.argmin(ok)]))
        raise DataError(f"{what}: character {bad!r} is not in the char vocabulary")
    return ids.astype(DTYPE)


def char_decode(ids, codepoints):
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(codepoints)):
        raise DataError(f"token id out of range for a char vocabulary of {len(codepoints)}")
    return codepoints[ids].astype("<u4").tobytes().decode("utf-32-le")


def char_splits(text, *, what):
    """(train ids, val ids, codepoints) of `text` in char mode."""
    codepoints = char_vocabulary(text)
    if len(codepoints) > MAX_VOCAB:
        raise DataError(f"{what} has {len(codepoints)} distinct characters: a char vocabulary of "
                        f"{len(codepoints)} does not fit in uint16 token ids (at most {MAX_VOCAB}); "
                        f"use --mode gpt2")
    train_text, val_text = split_text(text)
    return (char_encode(train_text, codepoints, what=what), char_encode(val_text, codepoints, what=what),
            codepoints)
