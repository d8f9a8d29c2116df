"""The contract: what the harness needs from a GPT-2 implementation (../shared/DESIGN.md).

A file is verifiable when it defines, at module level:

    init(config, seed, xp, dtype) -> params
        dict of arrays named as GPT-2's state dict without `transformer.` (wte, wpe, h.0.ln_1.weight,
        ..., ln_f.bias), Conv1D layout (in, out), lm_head tied to wte; weights drawn in state-dict
        order as rng.normal(0, std, shape) in float64 from numpy.random.Generator(PCG64(seed)).
    forward(params, idx, targets, config) -> (loss, cache)
        loss a float (None when targets is None); cache maps ACTIVATIONS names to arrays.
    backward(params, cache, config) -> grads            same keys as params
    adamw_step(params, grads, state, step, lr, hparams) -> grad_norm
        clip + AdamW in place; step is 0-based; state a flat dict of arrays, empty at first.
    lr_at(step, hparams) -> float
    get_batch(data, batch_size, block_size, rng) -> (x, y)
        host int64 arrays (B, T) for i = rng.integers(0, len(data) - block_size, size=batch_size).
    generate(params, prompts, n_tokens, config, temperature=0.0, top_k=None, top_p=None, rng=None,
             kv_cache=True, stop_token=None) -> (tokens, logits)
        continue each prompt (a list of token-id lists, lengths may differ) by up to n_tokens, fewer
        when the longest row reaches block_size (a longer prompt is a ValueError) or every row has
        produced stop_token (a finished row takes no more tokens); tokens: one list of new ids per
        prompt, ending at its stop_token if any; logits: host array (B, steps, V) of each step's
        logits. temperature 0 is greedy (argmax); else logits / temperature, top-k, top-p (the
        smallest set of most probable tokens whose probability reaches top_p), then the inverse CDF
        at u[b] * (kept probability) for one rng.random(B) per step. kv_cache=False recomputes the
        whole prefix every step: the same tokens, the same logits to rounding (reference/sampling.py).

config is a plain dict with CONFIG_KEYS; hparams a plain dict with HPARAM_KEYS.

The training subset (TRAINING_CONTRACT: init, forward, backward, adamw_step, lr_at, get_batch) is all
that training and `nanoproof compare` need: a variant that changes the function on purpose (an Elman
RNN, a GPT-2 with RMSNorm) provides these with any params and cache of its own, and is compared by
its scores (harness/measure/compare.py), not verified against GPT-2's golden files. Verify needs the
whole CONTRACT, and GPT-2's params and taps (it says "a different function" otherwise).
"""
import importlib.util
import sys
from pathlib import Path

from nanoproof.paths import IMPL_DIR, REPO_ROOT
DEFAULT_IMPL = IMPL_DIR / "gpt2.py"

CONTRACT = ("init", "forward", "backward", "adamw_step", "lr_at", "get_batch", "generate")
# what training needs (harness/tools/training.py, nanoproof compare): no generate, any params and taps
TRAINING_CONTRACT = ("init", "forward", "backward", "adamw_step", "lr_at", "get_batch")
CONFIG_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
HPARAM_KEYS = ("learning_rate", "min_lr", "warmup_iters", "lr_decay_iters", "weight_decay",
               "beta1", "beta2", "eps", "grad_clip")

# Canonical activation names, in forward order. `{i}` runs over the blocks.
BLOCK_ACTIVATIONS = ("ln_1", "attn.qkv", "attn.att", "attn.y", "attn.proj", "res_1",
                     "ln_2", "mlp.fc", "mlp.gelu", "mlp.proj", "out")
# a shrunk implementation may drop the other taps, never these
REQUIRED_BLOCK_ACTIVATIONS = ("out",)


def activation_names(n_layer):
    """Every canonical activation name for a model of n_layer blocks, in forward order."""
    names = ["emb"]
    for i in range(n_layer):
        names += [f"h.{i}.{a}" for a in BLOCK_ACTIVATIONS]
    return names + ["ln_f", "logits"]


def required_activation_names(n_layer):
    return ["emb"] + [f"h.{i}.{a}" for i in range(n_layer) for a in REQUIRED_BLOCK_ACTIVATIONS] \
        + ["ln_f", "logits"]


class ContractError(Exception):
    """An implementation file that cannot be verified: missing, broken, or lacking a contract name."""


def load_impl(path=None, required=CONTRACT):
    """Import an implementation file (default impl/gpt2.py) as a module and check that it defines the
    `required` functions (the whole contract, or TRAINING_CONTRACT). The module is imported under a
    private name, so two files can be loaded side by side."""
    path = Path(path) if path is not None else DEFAULT_IMPL
    if not path.is_file():
        raise ContractError(f"{path}: no such implementation file")
    name = f"nanoproof_impl_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report, don't crash the harness
        del sys.modules[name]
        raise ContractError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from exc
    check_contract(module, str(path), required)
    return module


def load_reference():
    from nanoproof import reference
    check_contract(reference, "reference/")
    return reference


def check_contract(module, where, required=CONTRACT):
    missing = [n for n in required if not callable(getattr(module, n, None))]
    if missing:
        from nanoproof.paths import command
        subset = (f"; it has the training subset, enough for `{command('compare_scores', 'compare')}` "
                  f"to compare its scores") if required == CONTRACT and not set(missing) & set(TRAINING_CONTRACT) else ""
        raise ContractError(f"{where}: missing contract function(s): {', '.join(missing)} "
                            f"(needs {', '.join(required)}; see harness/spec/contract.py){subset}")
