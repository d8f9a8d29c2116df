"""The outside implementations the oracles use: transformers' GPT-2 and torch.optim.AdamW.

Shared by tests/test_oracles.py, the pretrained-weights tests and scripts/bench.py. Never downloads:
every model is built from a config. Needs the optional extra `oracle` (torch CPU, transformers,
safetensors); import this module only where that extra may be assumed (tests importorskip first).
"""
import math
import os

import numpy as np

# never reach for the hub: every model here is built from a config
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import safetensors.numpy as safetensors_numpy  # noqa: E402
import safetensors.torch as safetensors_torch  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

transformers.logging.set_verbosity_error()

HF_NAMES = {"wte": "transformer.wte.weight", "wpe": "transformer.wpe.weight"}


def hf_name(name):
    """Our parameter name -> transformers' state-dict name (the same, with `transformer.`)."""
    return HF_NAMES.get(name, "transformer." + name)


def hf_config(config):
    """transformers' GPT2Config for one of our config dicts: no dropout, gelu_new, eps 1e-5, tied head."""
    return GPT2Config(
        vocab_size=config["vocab_size"], n_positions=config["block_size"], n_embd=config["n_embd"],
        n_layer=config["n_layer"], n_head=config["n_head"], activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, attn_implementation="eager")


def random_gpt2(config, seed=0, dtype=torch.float32):
    """GPT2LMHeadModel with transformers' own random init (torch seed `seed`), eval mode."""
    torch.manual_seed(seed)
    return GPT2LMHeadModel(hf_config(config)).to(dtype).eval()


def transformers_gpt2(config, params, dtype):
    """GPT2LMHeadModel built from a config (no download), in `dtype`, eval mode, eager attention,
    holding our parameters: written with safetensors in GPT-2's names and loaded strictly."""
    model = random_gpt2(config, 0, dtype)
    assert model.config._attn_implementation == "eager"
    blob = safetensors_numpy.save({hf_name(k): np.ascontiguousarray(v) for k, v in params.items()})
    state = {k: v.to(dtype) for k, v in safetensors_torch.load(blob).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, f"names transformers does not know: {unexpected}"
    assert set(missing) <= {"lm_head.weight"}, f"parameters we do not provide: {missing}"
    # lm_head is tied to wte: one tensor, so loading wte loaded lm_head too
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    return model


def hf_loss(model, idx, targets):
    """transformers' logits, and the mean cross-entropy against our targets (no label shift)."""
    logits = model(input_ids=torch.from_numpy(idx)).logits                   # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).reshape(-1))
    return logits, loss


def hf_params(model, attr="data"):
    """{our name: array} of the model's parameters (or their .grad)."""
    ours = {v: k for k, v in HF_NAMES.items()}
    return {ours.get(n, n.removeprefix("transformer.")): getattr(p, attr).detach().numpy().copy()
            for n, p in model.named_parameters()}


def nanogpt_lr(step, hp):
    """nanoGPT's get_lr, written out here independently of both modules' lr_at."""
    if step < hp["warmup_iters"]:
        return hp["learning_rate"] * (step + 1) / (hp["warmup_iters"] + 1)
    if step > hp["lr_decay_iters"]:
        return hp["min_lr"]
    ratio = (step - hp["warmup_iters"]) / (hp["lr_decay_iters"] - hp["warmup_iters"])
    return hp["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (hp["learning_rate"] - hp["min_lr"])


def torch_adamw(model, hp):
    """torch.optim.AdamW the nanoGPT way: weight decay on ndim >= 2 tensors only (two groups)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])


def torch_train_step(model, opt, x, y, step, hp):
    """One nanoGPT training step: lr into both groups, forward, backward, clip, AdamW.
    Returns (loss, pre-clip grad norm, lr)."""
    lr = nanogpt_lr(step, hp)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    _, loss = hf_loss(model, x, y)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
    opt.step()
    return loss.item(), norm.item(), lr


def save_random_checkpoint(folder, config, seed=0, prefix=True):
    """Write a random GPT-2 the way transformers does (`save_pretrained`, safetensors): config.json and
    model.safetensors in `folder`. prefix=True saves GPT2LMHeadModel (keys `transformer.h.0...`),
    prefix=False its GPT2Model (keys `h.0...`, like OpenAI's GPT-2 on the hub). Returns the model."""
    model = random_gpt2(config, seed)
    (model if prefix else model.transformer).save_pretrained(folder, safe_serialization=True)
    return model
