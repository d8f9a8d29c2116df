"""GPT-2 weights saved in Hugging Face's layout, loaded into reference/'s parameter names in float64.

A folder as transformers' `save_pretrained` writes it (and as OpenAI's GPT-2 is on the hub):

    config.json          sizes (vocab_size, n_positions, n_layer, n_head, n_embd) and architecture flags
    model.safetensors    tensors named as GPT2LMHeadModel's state dict (`transformer.h.0.ln_1.weight`,
                         ...) or GPT2Model's (`h.0.ln_1.weight`, ...), Conv1D layout (in, out)

Read with the `safetensors` package's numpy API (the optional extra `oracle`), never with pickle.
Anything this GPT-2 would compute differently from transformers is refused with a message naming the
file, the key, the expected and the actual value; so is a pickle checkpoint (`pytorch_model.bin`).
Errors are FileNotFoundError (a missing folder or file) and ValueError (everything else).

harness/tools/pretrained.py is the loader every other implementation uses: its own strict numpy
safetensors parser, with the folder, config and name checks of this module.
"""
import json
from pathlib import Path

import numpy

from .model import param_shapes

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# our config key <- config.json key
SIZE_KEYS = {"vocab_size": "vocab_size", "block_size": "n_positions", "n_layer": "n_layer",
             "n_head": "n_head", "n_embd": "n_embd"}

# config.json entries that change what the model computes, with the only value reference/ implements
# (each is transformers' default, so an absent entry means this value)
ARCHITECTURE = {
    "model_type": "gpt2",
    "activation_function": "gelu_new",              # GELU's tanh approximation
    "layer_norm_epsilon": 1e-5,
    "n_inner": None,                                # MLP width 4 * n_embd (an explicit 4 * n_embd is fine too)
    "tie_word_embeddings": True,                    # lm_head is wte
    "scale_attn_weights": True,                     # scores / sqrt(head size)
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
}

# tensors GPT-2 checkpoints carry that are not parameters: the causal mask buffers of each block
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def hf_key(name):
    """Our parameter name -> its key in model.safetensors, without the `transformer.` prefix."""
    return name + ".weight" if name in ("wte", "wpe") else name


def read_config(path):
    """config.json -> our config dict, after checking every architecture flag."""
    try:
        hf = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(hf).__name__}")
    missing = [key for key in SIZE_KEYS.values() if key not in hf]
    if missing:
        raise ValueError(f"{path}: lacks {', '.join(missing)} (a GPT-2 config needs {', '.join(SIZE_KEYS.values())})")
    config = {}
    for ours, key in SIZE_KEYS.items():
        value = hf[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: {key} must be a positive integer, got {value!r}")
        config[ours] = value
    for key, expected in ARCHITECTURE.items():
        actual = hf.get(key, expected)
        if key == "n_inner" and actual == 4 * config["n_embd"]:
            continue
        if actual != expected:
            raise ValueError(f"{path}: {key} is {actual!r}, expected {expected!r}: "
                             f"reference/ implements only OpenAI's GPT-2 architecture")
    if config["n_embd"] % config["n_head"]:
        raise ValueError(f"{path}: n_embd {config['n_embd']} is not divisible by n_head {config['n_head']}")
    return config


def check_folder(folder):
    """The paths of config.json and model.safetensors, after refusing a missing folder/file or pickle."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not weights_path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(
                f"{folder}: has {', '.join(pickles)} but no {WEIGHTS_FILE}; pickle files are never loaded "
                f"(unpickling can run arbitrary code). Convert once where torch and transformers are "
                f"installed: GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)")
        raise FileNotFoundError(f"{weights_path}: not found")
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found")
    return config_path, weights_path


def load_safetensors(path):
    """{key: numpy array} with the safetensors package (imported here: it is an optional extra)."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError("reading model.safetensors in reference/ needs the `safetensors` package: "
                          "pip install -e '.[oracle]' (or pip install safetensors)") from None
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a corrupt file
        raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None


def match_tensors(path, tensors, config):
    """Checks the file's tensors against the parameters `config` needs: {our name: array}."""
    names = {key.removeprefix("transformer."): key for key in tensors}
    if len(names) < len(tensors):
        raise ValueError(f"{path}: some keys appear both with and without the `transformer.` prefix")
    expected = {hf_key(name): shape for name, shape in param_shapes(config).items()}
    missing = [key for key in expected if key not in names]
    unexpected = [key for key in names
                  if key not in expected and key != "lm_head.weight" and not key.endswith(BUFFER_SUFFIXES)]
    if missing:
        raise ValueError(f"{path}: missing keys (named without `transformer.`): {', '.join(missing)}")
    if unexpected:
        raise ValueError(f"{path}: unexpected keys (named without `transformer.`): {', '.join(unexpected)}")
    wrong = [f"{key}: expected {shape}, actual {tuple(tensors[names[key]].shape)}"
             for key, shape in expected.items() if tuple(tensors[names[key]].shape) != shape]
    if wrong:
        raise ValueError(f"{path}: wrong shapes for the sizes in {CONFIG_FILE}: {'; '.join(wrong)}")
    if "lm_head.weight" in names:  # a saved head must be the tied one
        head, wte = tensors[names["lm_head.weight"]], tensors[names["wte.weight"]]
        if head.shape != wte.shape or not numpy.array_equal(head, wte):
            raise ValueError(f"{path}: lm_head.weight differs from wte.weight (an untied head); "
                             f"reference/ ties lm_head to wte")
    return {name: tensors[names[hf_key(name)]] for name in param_shapes(config)}


def load_pretrained(folder):
    """(params, config) of the GPT-2 saved in `folder`: params float64 numpy arrays in reference/'s
    names (wte, wpe, h.{i}.ln_1.weight, ..., ln_f.bias), config our plain dict."""
    config_path, weights_path = check_folder(folder)
    config = read_config(config_path)
    params = match_tensors(weights_path, load_safetensors(weights_path), config)
    return {name: numpy.array(value, dtype=numpy.float64) for name, value in params.items()}, config
