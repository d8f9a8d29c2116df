"""Loading GPT-2 weights in Hugging Face's layout: harness/tools/pretrained.py (one strict numpy
safetensors parser, the loader every contract module uses) and reference/pretrained.py (the
safetensors package), on folders written by transformers itself (`save_pretrained` of random configs,
never downloaded) and on files written byte by byte.

a. the parser gives bit-identical arrays to safetensors.numpy (F32, F16, F64; BF16 against torch);
b. it refuses every malformed header (`null` or not an object, negative, reversed, overlapping or
   gapped byte ranges, ranges past the data, sizes that do not fit shape x dtype, unknown dtypes, ...),
   each with one line naming the file, the tensor, the expected and the actual value, where the
   safetensors package refuses them too;
c. both loaders give the file's tensors under our names, bit-identical to each other, with and
   without the `transformer.` prefix, in the caller's dtype;
d. the loaded model's logits equal transformers' own model loaded from the same folder;
e. every broken folder is refused with a message naming the file, the key, expected and actual.

a, c, d and e need the optional extra `oracle` (skipped where it is absent); b needs numpy alone.
"""
import json
import pickle
import shutil
import struct

import numpy as np
import pytest

from nanoproof.judge.compare import normwise
from nanoproof.tools import pretrained
from nanoproof.reference.model import param_shapes

SMALL = {"vocab_size": 37, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 8}
GPT2_VOCAB = {"vocab_size": 50257, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 8}
FOLDERS = {"prefix": (SMALL, True), "no-prefix": (SMALL, False), "gpt2-vocab": (GPT2_VOCAB, True)}
LOADERS = ["harness", "ref"]

# transformers' float32 logits against ours on the same float32 weights, normwise: measured max
# 2.3e-7 for both modules (save_random_checkpoint seeds 0-3 x these 3 configs; the logits of
# random inits are small, so a couple of float32 ulps of the largest logit). TOL32 = 1e-6 is ~8 ulps.
TOL32 = 1e-6
# float64 (both sides in float64 on the float32 weights): measured max 4.4e-16; test_oracles' bound.
TOL64 = 1e-10


def oracle():
    """torch, transformers and safetensors.numpy, or a skip naming the missing extra."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return torch, pytest.importorskip("safetensors.numpy")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    oracle()
    from nanoproof.measure.oracle import save_random_checkpoint
    root = tmp_path_factory.mktemp("hf")
    for name, (config, prefix) in FOLDERS.items():
        save_random_checkpoint(root / name, config, seed=3, prefix=prefix)
    return {name: root / name for name in FOLDERS}


def load(which, folder, dtype="float32"):
    """(params, config) through harness's loader or reference's (float64, cast here)."""
    if which == "harness":
        return pretrained.load_pretrained(folder, dtype)
    from nanoproof.reference import pretrained as ref_pretrained
    params, config = ref_pretrained.load_pretrained(folder)
    return {k: v.astype(dtype) for k, v in params.items()}, config


def broken_copy(tmp_path, folder, tensors=None, config=None):
    """A copy of `folder` with model.safetensors rewritten from `tensors` and/or config.json from `config`."""
    out = tmp_path / "broken"
    shutil.copytree(folder, out)
    if tensors is not None:
        oracle()[1].save_file(tensors, str(out / "model.safetensors"))
    if config is not None:
        (out / "config.json").write_text(json.dumps(config))
    return out


def file_tensors(folder):
    return oracle()[1].load_file(str(folder / "model.safetensors"))


def file_config(folder):
    return json.loads((folder / "config.json").read_text())


# ----------------------------------------------------------------------------- a. the parser

def assert_same_arrays(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        assert (ours[k].dtype, ours[k].shape) == (theirs[k].dtype, theirs[k].shape), k
        assert ours[k].tobytes() == theirs[k].tobytes(), k


def test_parser_is_bit_identical_on_transformers_files(folders):
    for folder in folders.values():
        path = folder / "model.safetensors"
        assert_same_arrays(pretrained.read_safetensors(path), file_tensors(folder))


def test_parser_reads_every_float_dtype(tmp_path):
    torch, safetensors_numpy = oracle()
    rng = np.random.default_rng(0)
    arrays = {"f64": rng.normal(size=(3, 5)), "f32": rng.normal(size=(7,)).astype(np.float32),
              "f16": rng.normal(size=(2, 3, 4)).astype(np.float16), "scalar": np.array(2.5, np.float32),
              "empty": np.zeros((0, 4), np.float32)}
    path = tmp_path / "x.safetensors"
    safetensors_numpy.save_file(arrays, str(path), metadata={"format": "np"})
    assert_same_arrays(pretrained.read_safetensors(path), safetensors_numpy.load_file(str(path)))
    # bfloat16 (numpy has none): widened to float32, exactly as torch does
    import safetensors.torch
    bf16 = {"w": torch.randn(4, 6, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)}
    safetensors.torch.save_file(bf16, str(path))
    assert_same_arrays(pretrained.read_safetensors(path), {"w": bf16["w"].float().numpy()})


# ----------------------------------------------------------------------------- b. malformed files

def write_raw(path, header, data=b"", length=None):
    """A .safetensors file byte by byte: the 8-byte header length (`length`, default the header's),
    the header (a JSON-able object, or bytes as they are), the data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def tensor(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


SIX = np.arange(6, dtype=np.float32).tobytes()  # 24 bytes of data
A = tensor("F32", [2, 3], 0, 24)

# case: (header, data, fragments of the message besides the file's path); every header here is one
# the format forbids: the safetensors package refuses it too, but where marked False
MALFORMED = {
    "null header": (None, SIX, ["header is null", "expected a JSON object"], True),
    "list header": ([A], SIX, ["header is [", "expected a JSON object"], True),
    "not JSON": (b"{'a': 1}", SIX, ["header is not UTF-8 JSON"], True),
    "not UTF-8": (b'{"\xff": 1}', SIX, ["header is not UTF-8 JSON"], True),
    "negative begin": ({"a": tensor("F32", [2, 3], -4, 20)}, SIX,
                       ["tensor 'a'", "data_offsets begin is -4", "expected >= 0"], True),
    "end before begin": ({"a": tensor("F32", [0], 0, 0), "b": tensor("F32", [2, 3], 24, 0)}, SIX,
                         ["tensor 'b'", "data_offsets end is 0", "expected >= its begin 24"], True),
    "overlapping": ({"a": tensor("F32", [4], 0, 16), "b": tensor("F32", [4], 8, 24)}, SIX,
                    ["tensor 'b'", "data_offsets begin is 8", "expected 16", "overlaps tensor 'a'"], True),
    "same range twice": ({"a": A, "b": A}, SIX, ["tensor 'b'", "begin is 0", "expected 24", "overlaps tensor 'a'"],
                         True),
    "gap": ({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [3], 12, 24)}, SIX,
            ["tensor 'b'", "data_offsets begin is 12", "expected 8", "bytes 8 to 12 belong to no tensor"], True),
    "past the data": ({"a": tensor("F32", [2, 4], 0, 32)}, SIX,
                      ["tensor 'a'", "data_offsets end is 32", "expected <= 24"], True),
    "trailing bytes": ({"a": tensor("F32", [2, 2], 0, 16)}, SIX,
                       ["the tensors end at byte 16", "expected 24"], True),
    "size not shape x dtype": ({"a": tensor("F32", [2, 2], 0, 24)}, SIX,
                               ["tensor 'a'", "[0, 24] hold 24 bytes", "expected 16", "shape [2, 2] of F32"], True),
    "wrong dtype for size": ({"a": tensor("F64", [2, 3], 0, 24)}, SIX,
                             ["tensor 'a'", "hold 24 bytes", "expected 48", "of F64"], True),
    "unknown dtype": ({"a": tensor("F12", [2, 3], 0, 24)}, SIX,
                      ["tensor 'a'", "dtype is 'F12'", "expected one of F64, F32, F16, BF16"], True),
    "integer dtype": ({"a": tensor("I32", [2, 3], 0, 24)}, SIX,
                      ["tensor 'a'", "dtype is 'I32'", "expected one of F64, F32, F16, BF16"], False),
    "negative dimension": ({"a": tensor("F32", [-2, -3], 0, 24)}, SIX,
                           ["tensor 'a'", "shape is [-2, -3]", "non-negative integers"], True),
    "offsets not two integers": ({"a": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24.0]}}, SIX,
                                 ["tensor 'a'", "data_offsets is [0, 24.0]", "expected [begin, end]"], True),
    "entry missing a field": ({"a": {"dtype": "F32", "shape": [6]}}, SIX,
                              ["tensor 'a'", "entry is an object of dtype, shape", "expected an object of dtype, "
                               "shape, data_offsets"], True),
    "entry not an object": ({"a": 3}, SIX, ["tensor 'a'", "entry is 3", "expected an object"], True),
    "name twice": (b'{"a": ' + json.dumps(A).encode() + b', "a": ' + json.dumps(A).encode() + b"}", SIX,
                   ["name 'a' appears 2 times", "expected once"], False),
    "metadata not strings": ({"__metadata__": {"format": 1}, "a": A}, SIX,
                             ["__metadata__ is {\"format\": 1}", "expected an object of strings"], True),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_parser_refuses_a_malformed_header(tmp_path, case):
    header, data, fragments, package_refuses = MALFORMED[case]
    path = write_raw(tmp_path / "x.safetensors", header, data)
    with pytest.raises(ValueError) as e:
        pretrained.read_safetensors(path)
    message = str(e.value)
    assert "\n" not in message
    for fragment in [f"{path}: not a readable safetensors file", *fragments]:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("case", [c for c in MALFORMED if MALFORMED[c][3]])
def test_the_safetensors_package_refuses_them_too(tmp_path, case):
    """The parser is at least as strict as the format's own reader (where reference/ reads files)."""
    safetensors_numpy = oracle()[1]
    header, data, _, _ = MALFORMED[case]
    path = write_raw(tmp_path / "x.safetensors", header, data)
    with pytest.raises(Exception):
        safetensors_numpy.load_file(str(path))


@pytest.mark.parametrize("case,data,length,fragments", [
    ("empty file", b"", None, ["file size is 0 bytes", "expected at least 8"]),
    ("header past the end", b"{}", 100, ["header length is 100 bytes", "expected at most 2"]),
])
def test_parser_refuses_a_broken_frame(tmp_path, case, data, length, fragments):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data if length is None else struct.pack("<Q", length) + data)
    with pytest.raises(ValueError) as e:
        pretrained.read_safetensors(path)
    for fragment in [str(path), *fragments]:
        assert fragment in str(e.value), (fragment, str(e.value))


def test_parser_accepts_what_the_format_allows(tmp_path):
    """Tensors in any header order, zero-size tensors, metadata, extra fields of an entry, padding."""
    header = {"__metadata__": {"format": "pt"}, "b": tensor("F32", [2], 16, 24), "empty": tensor("F16", [0, 3], 16, 16),
              "a": {**tensor("F32", [2, 2], 0, 16), "comment": "ignored"}}
    path = write_raw(tmp_path / "x.safetensors", json.dumps(header).encode() + b"   ", SIX)
    out = pretrained.read_safetensors(path)
    np.testing.assert_array_equal(out["a"], np.arange(4, dtype=np.float32).reshape(2, 2))
    np.testing.assert_array_equal(out["b"], [4.0, 5.0])
    assert out["empty"].shape == (0, 3) and out["empty"].dtype == np.float16
    assert pretrained.read_safetensors(write_raw(tmp_path / "none.safetensors", {})) == {}


def test_parser_refuses_a_corrupt_transformers_file(folders, tmp_path):
    raw = (folders["prefix"] / "model.safetensors").read_bytes()
    for name, data in [("truncated", raw[: len(raw) // 2]), ("garbage", b"not safetensors at all"), ("empty", b"")]:
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ValueError, match="not a readable safetensors file") as e:
            pretrained.read_safetensors(path)
        assert str(path) in str(e.value)


# ----------------------------------------------------------------------------- c. the loaders

@pytest.mark.parametrize("which", LOADERS)
@pytest.mark.parametrize("name", list(FOLDERS))
def test_loaders_give_the_files_tensors_under_our_names(folders, which, name):
    from nanoproof.measure.oracle import hf_name
    config, prefix = FOLDERS[name]
    tensors = file_tensors(folders[name])
    assert all(k.startswith("transformer.") for k in tensors) == prefix
    dtype = "float32" if which == "harness" else "float64"
    params, loaded_config = load(which, folders[name], dtype)
    assert loaded_config == config
    assert list(params) == list(param_shapes(config))  # our names, in state-dict order
    for k, v in params.items():
        key = hf_name(k) if prefix else hf_name(k).removeprefix("transformer.")
        assert v.dtype == np.dtype(dtype) and v.flags.writeable, k
        np.testing.assert_array_equal(v, tensors[key].astype(dtype), err_msg=k)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(FOLDERS))
def test_harness_loader_equals_reference_bit_for_bit(folders, name, dtype):
    from nanoproof.reference import pretrained as ref_pretrained
    ours, config = pretrained.load_pretrained(folders[name], dtype)
    theirs, ref_config = ref_pretrained.load_pretrained(folders[name])
    assert config == ref_config and list(ours) == list(theirs)
    for k in theirs:
        expected = theirs[k].astype(dtype)
        assert (ours[k].dtype, ours[k].shape) == (expected.dtype, expected.shape), k
        assert ours[k].tobytes() == expected.tobytes(), k


def test_harness_loader_gives_the_callers_array_module(folders):
    """xp.asarray of each array: numpy here; the array module is whatever the caller passes."""
    class Recorder:
        seen = []

        @classmethod
        def asarray(cls, a):
            cls.seen.append(a.dtype)
            return a
    params, _ = pretrained.load_pretrained(folders["prefix"], "float64", Recorder)
    assert Recorder.seen == [np.dtype(np.float64)] * len(params)


def test_reference_loads_float64(folders):
    from nanoproof.reference import pretrained as ref_pretrained
    params, _ = ref_pretrained.load_pretrained(folders["prefix"])
    assert {v.dtype for v in params.values()} == {np.dtype(np.float64)}


def hub_like(folder):
    """OpenAI's GPT-2 on the hub: no `transformer.` prefix, each block's causal-mask buffers saved
    (attn.bias, and attn.masked_bias in older files), a config.json that lists the sizes and leaves
    the architecture flags to their defaults (and carries n_ctx, dropouts, task_specific_params)."""
    tensors = {k.removeprefix("transformer."): v for k, v in file_tensors(folder).items()}
    T = SMALL["block_size"]
    for i in range(SMALL["n_layer"]):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
        tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    sizes = {k: file_config(folder)[k] for k in ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head"]}
    config = {**sizes, "n_ctx": sizes["n_positions"], "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
              "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
              "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}}}
    return tensors, config


def transformers_extras(folder):
    """What other writers add: the tied lm_head saved too, an explicit n_inner = 4 * n_embd."""
    tensors = file_tensors(folder)
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].copy()
    return tensors, {**file_config(folder), "n_inner": 4 * SMALL["n_embd"], "activation_function": "gelu_new"}


@pytest.mark.parametrize("which", LOADERS)
@pytest.mark.parametrize("variant", [hub_like, transformers_extras])
def test_hub_layout_and_extras_are_accepted(folders, tmp_path, which, variant):
    folder = folders["prefix"]
    expected, config = load(which, folder)
    params, hub_config = load(which, broken_copy(tmp_path, folder, *variant(folder)))
    assert hub_config == config
    for k in expected:
        np.testing.assert_array_equal(params[k], expected[k], err_msg=k)


def test_presets_are_transformers_gpt2_sizes():
    """Each preset's parameter shapes are those of transformers' GPT-2 of the same sizes (built on the
    meta device: no memory, no download), and the counts are the published 124M, 355M, 774M, 1.5B."""
    torch, _ = oracle()
    from nanoproof.measure.oracle import hf_config, hf_name
    from transformers import GPT2LMHeadModel
    counts = {}
    for name, config in pretrained.PRESETS.items():
        assert (config["vocab_size"], config["block_size"]) == (50257, 1024)
        with torch.device("meta"):
            model = GPT2LMHeadModel(hf_config(config))
        theirs = {n: tuple(p.shape) for n, p in model.named_parameters()}  # lm_head: tied, listed once
        assert theirs == {hf_name(k): s for k, s in param_shapes(config).items()}, name
        counts[name] = sum(int(np.prod(s)) for s in param_shapes(config).values())
    assert {k: round(v / 1e6) for k, v in counts.items()} == {
        "gpt2": 124, "gpt2-medium": 355, "gpt2-large": 774, "gpt2-xl": 1558}


# ----------------------------------------------------------------------------- d. against transformers

def transformers_logits(folder, idx, dtype):
    torch, _ = oracle()
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").to(dtype).eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(idx)).logits.numpy()


@pytest.mark.parametrize("which", LOADERS)
@pytest.mark.parametrize("name", list(FOLDERS))
def test_logits_equal_transformers_from_the_same_folder(impl, ref, folders, which, name):
    """harness's loader feeding the implementation under test, reference's feeding reference/."""
    torch, _ = oracle()
    config = FOLDERS[name][0]
    idx = np.random.default_rng(1).integers(0, config["vocab_size"], (2, config["block_size"]))
    module = impl if which == "harness" else ref
    for dtype, torch_dtype, tol in [("float32", torch.float32, TOL32), ("float64", torch.float64, TOL64)]:
        params, config = load(which, folders[name], dtype)
        _, cache = module.forward(params, idx, None, config)
        expected = transformers_logits(folders[name], idx, torch_dtype)
        err = normwise(cache["logits"], expected)[1]
        assert err <= tol, f"{which} {name} {dtype}: logits differ from transformers' by {err:.2e} > {tol:.0e}"


# ----------------------------------------------------------------------------- e. broken folders

def drop(key):
    return lambda t: {k: v for k, v in t.items() if k != key}


def put(key, value):
    return lambda t: {**t, key: value(t)}


BROKEN_TENSORS = {
    "missing key": (drop("transformer.h.1.ln_2.bias"), ["missing keys", "h.1.ln_2.bias"]),
    "extra key": (put("transformer.h.0.mlp.c_gate.weight", lambda t: np.zeros((8, 8), np.float32)),
                  ["unexpected keys", "h.0.mlp.c_gate.weight"]),
    "wrong shape": (put("transformer.h.0.attn.c_attn.weight", lambda t: np.zeros((8, 25), np.float32)),
                    ["h.0.attn.c_attn.weight", "expected (8, 24)", "actual (8, 25)"]),
    "untied lm_head": (put("lm_head.weight", lambda t: t["transformer.wte.weight"] + 1),
                       ["lm_head.weight", "wte.weight"]),
    "prefix twice": (put("wte.weight", lambda t: t["transformer.wte.weight"]), ["transformer."]),
}


@pytest.mark.parametrize("which", LOADERS)
@pytest.mark.parametrize("case", list(BROKEN_TENSORS))
def test_broken_weights_are_refused(folders, tmp_path, which, case):
    edit, fragments = BROKEN_TENSORS[case]
    folder = broken_copy(tmp_path, folders["prefix"], tensors=edit(file_tensors(folders["prefix"])))
    with pytest.raises(ValueError) as e:
        load(which, folder)
    for fragment in [str(folder / "model.safetensors"), *fragments]:
        assert fragment in str(e.value), (fragment, str(e.value))


def test_a_malformed_weights_file_is_refused_by_the_loader(folders, tmp_path):
    """A folder whose model.safetensors has a `null` header: the loader's error is the parser's."""
    folder = broken_copy(tmp_path, folders["prefix"])
    write_raw(folder / "model.safetensors", None, SIX)
    with pytest.raises(ValueError, match="header is null") as e:
        pretrained.load_pretrained(folder)
    assert str(folder / "model.safetensors") in str(e.value)


BROKEN_CONFIGS = {  # key: value this GPT-2 does not compute (expected: what it does)
    "activation_function": ("relu", "gelu_new"),
    "n_inner": (3 * SMALL["n_embd"], None),
    "layer_norm_epsilon": (1e-6, 1e-5),
    "tie_word_embeddings": (False, True),
    "scale_attn_by_inverse_layer_idx": (True, False),
    "scale_attn_weights": (False, True),
    "add_cross_attention": (True, False),
    "model_type": ("gpt_neo", "gpt2"),
}


@pytest.mark.parametrize("which", LOADERS)
@pytest.mark.parametrize("key", list(BROKEN_CONFIGS))
def test_unsupported_config_is_refused(folders, tmp_path, which, key):
    actual, expected = BROKEN_CONFIGS[key]
    folder = broken_copy(tmp_path, folders["prefix"], config={**file_config(folders["prefix"]), key: actual})
    with pytest.raises(ValueError) as e:
        load(which, folder)
    msg = str(e.value)
    for fragment in [str(folder / "config.json"), key, repr(actual), repr(expected)]:
        assert fragment in msg, (fragment, msg)


@pytest.mark.parametrize("which", LOADERS)
@pytest.mark.parametrize("change,fragments", [({"n_layer": None}, ["n_layer"]),
                                              ({"n_head": 2.5}, ["n_head", "2.5", "positive integer"]),
                                              ({"n_embd": -8}, ["n_embd", "-8", "positive integer"])])
def test_config_without_a_size_is_refused(folders, tmp_path, which, change, fragments):
    config = {k: v for k, v in {**file_config(folders["prefix"]), **change}.items() if v is not None}
    folder = broken_copy(tmp_path, folders["prefix"], config=config)
    with pytest.raises(ValueError) as e:
        load(which, folder)
    for fragment in [str(folder / "config.json"), *fragments]:
        assert fragment in str(e.value), (fragment, str(e.value))


class WritesAMarkerWhenUnpickled:
    """A pickle that leaves a file behind if anything ever unpickles it."""
    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("which", LOADERS)
@pytest.mark.parametrize("case", ["missing folder", "missing config.json", "missing model.safetensors",
                                  "pickle only"])
def test_missing_files_and_pickles_are_refused(folders, tmp_path, which, case):
    folder = broken_copy(tmp_path, folders["prefix"])
    marker = tmp_path / "unpickled"
    if case == "missing folder":
        shutil.rmtree(folder)
        kind, fragments = FileNotFoundError, [str(folder), "no such folder"]
    elif case == "missing config.json":
        (folder / "config.json").unlink()
        kind, fragments = FileNotFoundError, [str(folder / "config.json"), "not found"]
    elif case == "missing model.safetensors":
        (folder / "model.safetensors").unlink()
        kind, fragments = FileNotFoundError, [str(folder / "model.safetensors"), "not found"]
    else:
        (folder / "model.safetensors").unlink()
        WritesAMarkerWhenUnpickled.marker = marker
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(WritesAMarkerWhenUnpickled()))
        kind, fragments = ValueError, ["pytorch_model.bin", "pickle", "never loaded", "safe_serialization=True"]
    with pytest.raises(kind) as e:
        load(which, folder)
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))
    assert not marker.exists()
