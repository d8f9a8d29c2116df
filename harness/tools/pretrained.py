"""GPT-2 weights in Hugging Face's layout, for any contract module: one strict safetensors parser
(numpy alone) and the loader that turns a folder into contract-layout params.

A folder as transformers' `save_pretrained` writes it (and as OpenAI's GPT-2 is on the hub):
config.json (sizes and architecture flags) and model.safetensors (tensors named as GPT2LMHeadModel's
state dict, with or without `transformer.`, Conv1D layout). Pickle files are never loaded.

``read_safetensors`` parses the file format (8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}}, then the raw little-endian data) and refuses every header the
`safetensors` package refuses, and more: a header that is not a JSON object (`null`, a list), a name
given twice, a tensor whose byte range is negative, reversed, overlapping another, leaving a gap,
running past the data or not the size its shape and dtype need, a dtype other than F64, F32, F16 and
BF16 (the package also reads integer tensors; GPT-2 has none). Each refusal is one line
naming the file, the tensor, the expected and the actual value.

``load_pretrained`` checks the folder, config.json and the tensor names and shapes with
reference/pretrained.py's checks (the same messages; reference/ itself reads the file with the
`safetensors` package, an optional extra, and so serves as this parser's oracle in
tests/test_pretrained.py), then casts to the caller's dtype and array module.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter

import numpy as np

from nanoproof.reference.pretrained import check_folder, match_tensors, read_config

# GPT-2's released sizes (OpenAI's checkpoints on the hub), as contract configs
PRESETS = {name: {"vocab_size": 50257, "block_size": 1024, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd}
           for name, (n_layer, n_head, n_embd) in {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024),
                                                   "gpt2-large": (36, 20, 1280), "gpt2-xl": (48, 25, 1600)}.items()}

# safetensors dtype -> the little-endian numpy dtype its bytes are read as (BF16: as uint16, then
# widened exactly to float32, as torch's .float() does)
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
TENSOR_FIELDS = ("dtype", "shape", "data_offsets")
HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100_000_000  # the safetensors package's limit


class SafetensorsError(ValueError):
    """A file that is not a well-formed safetensors file (a ValueError, as every loader refusal)."""


def _error(path, what):
    return SafetensorsError(f"{path}: not a readable safetensors file: {what}")


class _DuplicateName(Exception):
    pass


def _no_duplicates(pairs):
    """json's object_pairs_hook: a name given twice in one object is ambiguous (json would keep the last)."""
    counts = Counter(name for name, _ in pairs)
    for name, count in counts.items():
        if count > 1:
            raise _DuplicateName(f"name {name!r} appears {count} times in one object of the header, expected once")
    return dict(pairs)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def read_header(path) -> tuple[dict, int, int]:
    """(the header's tensors {name: {dtype, shape, data_offsets}}, each checked, the data's first byte
    in the file, the data's size in bytes)."""
    size = os.path.getsize(path)
    if size < HEADER_LENGTH_BYTES:
        raise _error(path, f"file size is {size} bytes, expected at least {HEADER_LENGTH_BYTES}")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(HEADER_LENGTH_BYTES), "little")
        most = min(size - HEADER_LENGTH_BYTES, MAX_HEADER_BYTES)
        if n > most:
            raise _error(path, f"header length is {n} bytes, expected at most {most} (what follows the "
                               f"length in the file, and at most {MAX_HEADER_BYTES})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateName as e:
        raise _error(path, str(e)) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise _error(path, f"header is not UTF-8 JSON ({' '.join(str(e).split())})") from None
    if not isinstance(header, dict):
        raise _error(path, f"header is {json.dumps(header)[:40]}, expected a JSON object "
                           f"{{name: {{dtype, shape, data_offsets}}}}")
    metadata = header.pop("__metadata__", {})
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise _error(path, f"__metadata__ is {json.dumps(metadata)[:60]}, expected an object of strings")
    data_size = size - HEADER_LENGTH_BYTES - n
    for name, info in header.items():
        where = f"tensor {name!r}"
        if not isinstance(info, dict) or not all(k in info for k in TENSOR_FIELDS):
            actual = f"an object of {', '.join(info) or 'nothing'}" if isinstance(info, dict) else json.dumps(info)[:40]
            raise _error(path, f"{where}: entry is {actual}, expected an object of {', '.join(TENSOR_FIELDS)}")
        dtype, shape, offsets = (info[k] for k in TENSOR_FIELDS)
        if dtype not in SAFETENSORS_DTYPES:
            raise _error(path, f"{where}: dtype is {dtype!r}, expected one of {', '.join(SAFETENSORS_DTYPES)}")
        if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
            raise _error(path, f"{where}: shape is {json.dumps(shape)}, expected a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
            raise _error(path, f"{where}: data_offsets is {json.dumps(offsets)}, expected [begin, end]: two integers")
        begin, end = offsets
        if begin < 0:
            raise _error(path, f"{where}: data_offsets begin is {begin}, expected >= 0")
        if end < begin:
            raise _error(path, f"{where}: data_offsets end is {end}, expected >= its begin {begin}")
        if end > data_size:
            raise _error(path, f"{where}: data_offsets end is {end}, expected <= {data_size} (the data's size)")
        nbytes = math.prod(shape) * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
        if end - begin != nbytes:
            raise _error(path, f"{where}: data_offsets {offsets} hold {end - begin} bytes, expected {nbytes} "
                               f"(shape {shape} of {dtype})")
    # in file order, the byte ranges must tile the data: no overlap, no gap, nothing after the last
    covered, previous = 0, None
    for name, info in sorted(header.items(), key=lambda item: tuple(item[1]["data_offsets"])):
        begin, end = info["data_offsets"]
        if begin != covered:
            why = (f"it overlaps tensor {previous!r}, which ends at {covered}" if begin < covered
                   else f"bytes {covered} to {begin} belong to no tensor")
            raise _error(path, f"tensor {name!r}: data_offsets begin is {begin}, expected {covered} ({why})")
        covered, previous = end, name
    if covered != data_size:
        raise _error(path, f"the tensors end at byte {covered} of the data, expected {data_size} "
                           f"(the data's size: the bytes after the last tensor belong to none)")
    return header, HEADER_LENGTH_BYTES + n, data_size


def read_safetensors(path) -> dict:
    """{name: host numpy array} of a .safetensors file, in the file's dtypes (BF16 widened exactly to
    float32). The arrays are read-only views of a memory map: copy before writing."""
    path = str(path)
    header, start, data_size = read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(data_size,)) if data_size else \
        np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = np.asarray(data[begin:end]).view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = (array.astype(np.uint32) << 16).view(np.float32) if info["dtype"] == "BF16" else array
    return out


def load_pretrained(folder, dtype="float32", xp=np) -> tuple[dict, dict]:
    """(params, config) of the GPT-2 saved in `folder` (config.json + model.safetensors): params in the
    contract's names and order (wte, wpe, h.{i}.ln_1.weight, ..., ln_f.bias), Conv1D layout, as xp
    arrays of `dtype`; config the contract's plain dict. Raises FileNotFoundError for a missing folder
    or file and ValueError for everything else this GPT-2 does not compute, each naming the file, the
    key, the expected and the actual value."""
    config_path, weights_path = check_folder(folder)
    config = read_config(config_path)
    params = match_tensors(weights_path, read_safetensors(weights_path), config)
    return {name: xp.asarray(np.array(value, dtype=dtype)) for name, value in params.items()}, config
