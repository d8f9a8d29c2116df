#!/usr/bin/env python
"""Tokenize a text into nanoGPT-compatible train.bin / val.bin (uint16) plus meta.json.

Thin command-line front end over nanoproof.tools.data (prepare, find_tinyshakespeare).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# this checkout's harness, even where another checkout is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoproof.cli import positive_int  # noqa: E402
from nanoproof.spec.corpus import MAX_VOCAB  # noqa: E402
from nanoproof.tools.data import (  # noqa: E402
    REPO_ROOT,
    TINYSHAKESPEARE_URL,
    DataError,
    find_tinyshakespeare,
    prepare,
)

DEFAULT_OUT = {"char": "data/shakespeare_char", "gpt2": "data/shakespeare"}

DESCRIPTION = f"""\
Tokenize a UTF-8 text file into train.bin / val.bin (raw np.uint16 token ids, the layout
nanoGPT's prepare.py writes) and meta.json, in one output folder. The first 90% of the text
(by characters) is train, the rest val. All files are written atomically; nothing is pickled.

modes:
  char   vocabulary = sorted set of the characters of the whole text (nanoGPT shakespeare_char);
         at most {MAX_VOCAB} distinct characters (uint16 ids)
  gpt2   tiktoken's "gpt2" encoding (encode_ordinary, vocab_size 50257), each split encoded
         separately (nanoGPT shakespeare); uses <repo>/../shared/tiktoken_cache offline when
         TIKTOKEN_CACHE_DIR is unset

without --input, tiny Shakespeare is used, looked up in this order:
  1. <repo>/data/tinyshakespeare.txt              (download cache)
  2. <repo>/../shared/data/tinyshakespeare.txt    (on CI and dev machines)
  3. download from --url into (1)
"""

EPILOG = """\
examples:
  python scripts/prepare_data.py                       # tiny Shakespeare, char mode
  python scripts/prepare_data.py --mode gpt2
  python scripts/prepare_data.py --input my.txt --out data/mine --block_size 256

errors (missing/empty/non-UTF-8 input, text shorter than one block, vocabulary too large,
failed download) print one line to stderr and exit with status 2.
"""



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prepare_data.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--mode", choices=("char", "gpt2"), default="char",
                   help="tokenizer (default: char)")
    p.add_argument("--input", metavar="PATH", default=None,
                   help="UTF-8 text file to tokenize (default: tiny Shakespeare, see lookup order above)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help=f"output folder (default: <repo>/{DEFAULT_OUT['char']} for char, "
                        f"<repo>/{DEFAULT_OUT['gpt2']} for gpt2)")
    p.add_argument("--block_size", metavar="N", type=positive_int, default=64,
                   help="context length the data must support: each split needs at least N+1 "
                        "tokens (default: 64)")
    p.add_argument("--url", default=TINYSHAKESPEARE_URL,
                   help="where to download tiny Shakespeare from when no local copy is found "
                        "(default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out) if args.out is not None else REPO_ROOT / DEFAULT_OUT[args.mode]
    try:
        if args.input is not None:
            text_path, source = Path(args.input), args.input
        else:
            text_path, source = find_tinyshakespeare(url=args.url, log=print)
        meta = prepare(text_path, out_dir, mode=args.mode, block_size=args.block_size, source=source)
    except DataError as e:
        print(f"prepare_data.py: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{meta['encoding']} mode: vocab_size {meta['vocab_size']}, "
        f"train {meta['train_tokens']:,} tokens, val {meta['val_tokens']:,} tokens -> {out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
