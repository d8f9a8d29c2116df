"""Independent oracles: PyTorch autograd, torch.optim.AdamW and transformers' GPT2LMHeadModel.

reference/ and the implementation under test are two implementations by the same hands; these tests
pin both to code written elsewhere, on the same random weights (never downloaded: every model is
built from a config and loaded with our parameters):

a. forward logits and loss == transformers' GPT2LMHeadModel in float64 (<= 1e-10 normwise);
b. every gradient == torch autograd's through that model in float64 (<= 1e-10);
c. 10 steps of our AdamW + clipping + schedule == torch.optim.AdamW (decay on ndim >= 2 only, two
   groups) with clip_grad_norm_ and nanoGPT's get_lr written out here, in float64 (<= 1e-10);
d. the same in float32, judged against float64 next to torch-float32's own error, so that the
   float32 tolerances are anchored to an outside implementation too.

Needs the optional extra `oracle` (torch CPU, transformers, safetensors); skipped where it is absent.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from nanoproof.judge.compare import normwise as _normwise  # noqa: E402
from nanoproof.measure.oracle import (hf_loss, hf_params, nanogpt_lr, torch_adamw,  # noqa: E402
                            torch_train_step, transformers_gpt2)
from strategies import random_params  # noqa: E402

# Small configs, one with several layers and T < block_size, one with GPT-2's vocabulary, one with
# three heads. (B, T) is the batch the forward/backward tests use.
CONFIGS = {
    "tiny": ({"vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 8}, (2, 8)),
    "deep": ({"vocab_size": 37, "block_size": 16, "n_layer": 3, "n_head": 4, "n_embd": 16}, (3, 13)),
    "three-heads": ({"vocab_size": 23, "block_size": 6, "n_layer": 2, "n_head": 3, "n_embd": 12}, (2, 5)),
    "gpt2-vocab": ({"vocab_size": 50257, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 8}, (2, 8)),
}
WEIGHT_STD = 0.2   # ten times GPT-2's init: attention far from uniform, GELU well into its curve
SEED = 1234

# nanoGPT-like, scaled so 10 steps cross warmup, cosine decay and the min_lr floor, and so that the
# gradient norm is clipped on some steps and not on others (both paths are asserted to be taken)
HPARAMS = {"learning_rate": 1e-2, "min_lr": 1e-3, "warmup_iters": 3, "lr_decay_iters": 7,
           "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.9}
N_STEPS = 10

# Float64 agreement with transformers/torch, measured (numpy 2.4 + OpenBLAS, torch 2.13 CPU,
# transformers 5.23), both modules: logits <= 1.3e-15, loss <= 3.5e-16, gradients <= 3.0e-14
# normwise at step 0 (4 seeds x 4 configs); after 10 AdamW steps, parameters <= 4.0e-12 (1e-15
# typical), loss <= 4.9e-15, grad norm <= 8.1e-14 (5 seeds x 2 configs), the attention key bias
# aside (see KEY_BIAS_TOL64). TOL64 = 1e-10 is the bound, 25x above the worst.
TOL64 = 1e-10


@pytest.fixture(scope="session", params=["ref", "impl"])
def gpt(request):
    return request.getfixturevalue(request.param)


def normwise(a, b):
    """The harness's normwise relative error max|a - b| / max|b| (nanoproof.judge.compare.normwise)."""
    return _normwise(a, b)[1]


def problem(name, dtype="float64"):
    config, (B, T) = CONFIGS[name]
    params = random_params(_ref(), config, SEED, weight_std=WEIGHT_STD)
    params = {k: v.astype(dtype) for k, v in params.items()}
    rng = np.random.Generator(np.random.PCG64([SEED, 1]))
    idx = rng.integers(0, config["vocab_size"], (B, T))
    targets = rng.integers(0, config["vocab_size"], (B, T))
    return config, params, idx, targets


def _ref():
    from nanoproof.spec.contract import load_reference
    return load_reference()


@pytest.fixture(scope="module", params=list(CONFIGS))
def oracle_step0(request):
    """transformers' float64 logits, loss and autograd gradients for one config, computed once."""
    config, params, idx, targets = problem(request.param)
    model = transformers_gpt2(config, params, torch.float64)
    logits, loss = hf_loss(model, idx, targets)
    loss.backward()
    return {"name": request.param, "config": config, "params": params, "idx": idx, "targets": targets,
            "logits": logits.detach().numpy(), "loss": loss.item(), "grads": hf_params(model, "grad")}


# ----------------------------------------------------------------------------- a, b: float64, step 0

def test_forward_equals_transformers_float64(gpt, oracle_step0):
    o = oracle_step0
    loss, cache = gpt.forward({k: v.copy() for k, v in o["params"].items()}, o["idx"], o["targets"],
                              o["config"])
    assert cache["logits"].shape == o["logits"].shape and cache["logits"].dtype == np.float64
    assert normwise(cache["logits"], o["logits"]) <= TOL64, o["name"]
    assert abs(loss - o["loss"]) <= TOL64 * abs(o["loss"]), o["name"]


def test_gradients_equal_torch_autograd_float64(gpt, oracle_step0):
    o = oracle_step0
    params = {k: v.copy() for k, v in o["params"].items()}
    _, cache = gpt.forward(params, o["idx"], o["targets"], o["config"])
    grads = gpt.backward(params, cache, o["config"])
    assert set(grads) == set(o["grads"])
    for name in grads:
        assert grads[name].shape == o["grads"][name].shape and grads[name].dtype == np.float64, name
        assert normwise(grads[name], o["grads"][name]) <= TOL64, f"{o['name']}: d{name}"


# ----------------------------------------------------------------------------- c: 10 AdamW steps

def batches(config, B, seed=SEED):
    """N_STEPS training batches drawn from a random token stream by the reference's get_batch."""
    rng = np.random.Generator(np.random.PCG64([seed, 2]))
    data = rng.integers(0, config["vocab_size"], 4000).astype(np.uint16)
    return [_ref().get_batch(data, B, config["block_size"], rng) for _ in range(N_STEPS)]


def torch_trajectory(config, params, steps, hp, dtype):
    """torch.optim.AdamW on transformers' GPT-2, nanoGPT's way (nanoproof.measure.oracle.torch_train_step).
    Returns (loss, pre-clip norm, lr, params after the step) per step."""
    model = transformers_gpt2(config, params, dtype)
    opt = torch_adamw(model, hp)
    return [(*torch_train_step(model, opt, x, y, step, hp), hf_params(model)) for step, (x, y) in enumerate(steps)]


# The key third of each c_attn.bias has a gradient that is 0 in exact arithmetic (softmax ignores a
# constant per row: test_properties.py::test_model_key_bias_gradient_is_zero), so what AdamW does to
# it is to normalise rounding noise, m_hat / (sqrt(v_hat) + eps): in float64 the noise (~1e-17) is
# far below eps and the slice drifts by ~1e-11 in 10 steps, in float32 (noise ~1e-9, comparable to
# eps) by up to ~lr per step. Two correct implementations agree there only as far as their noises
# do, so the slice is compared on its own, absolutely: float64 measured <= 1.4e-11 apart after 10
# steps (5 seeds x 2 configs x 2 modules; the whole tensor's normwise error then reaches 5.4e-11,
# too close to TOL64 to be judged with the rest); float32 by Adam's step bound (Kingma & Ba 2.1:
# |step| <= lr when 1 - beta1 <= sqrt(1 - beta2)): two runs differ by at most 2 sum(lr).
KEY_BIAS_TOL64 = 1e-9


def split_key_bias(name, a, config):
    """(the tensor without the key bias slice, the key bias slice or None)."""
    if not name.endswith("attn.c_attn.bias"):
        return a, None
    C = config["n_embd"]
    return np.concatenate([a[:C], a[2 * C:]]), a[C:2 * C]


def our_trajectory(module, config, params, steps, hp):
    params, state, out = {k: v.copy() for k, v in params.items()}, {}, []
    for step, (x, y) in enumerate(steps):
        loss, cache = module.forward(params, x, y, config)
        grads = module.backward(params, cache, config)
        lr = module.lr_at(step, hp)
        norm = module.adamw_step(params, grads, state, step, lr, hp)
        out.append((loss, norm, lr, {k: v.copy() for k, v in params.items()}))
    return out


TRAIN_CONFIGS = ["deep", "gpt2-vocab"]


@pytest.fixture(scope="module", params=TRAIN_CONFIGS)
def torch_runs(request):
    """torch's 10-step trajectories for one config, in float64 and in float32, computed once."""
    config, (B, _) = CONFIGS[request.param]
    config, params, _, _ = problem(request.param)
    steps = batches(config, B)
    return {"name": request.param, "config": config, "params": params, "steps": steps,
            "float64": torch_trajectory(config, params, steps, HPARAMS, torch.float64),
            "float32": torch_trajectory(config, params, steps, HPARAMS, torch.float32)}


def test_adamw_trajectory_equals_torch_float64(gpt, torch_runs):
    name, config, theirs = torch_runs["name"], torch_runs["config"], torch_runs["float64"]
    ours = our_trajectory(gpt, config, torch_runs["params"], torch_runs["steps"], HPARAMS)
    norms = [t[1] for t in theirs]
    # the 10 steps take both branches of clipping, and warmup, decay and the floor of the schedule
    assert any(n > HPARAMS["grad_clip"] for n in norms) and any(n < HPARAMS["grad_clip"] for n in norms), norms
    assert N_STEPS > HPARAMS["lr_decay_iters"] + 1
    for step, ((loss, norm, lr, p), (t_loss, t_norm, t_lr, t_p)) in enumerate(zip(ours, theirs)):
        where = f"{name} step {step}"
        assert lr == pytest.approx(t_lr, rel=1e-15), f"{where}: lr"
        assert abs(loss - t_loss) <= TOL64 * abs(t_loss), f"{where}: loss"
        assert abs(norm - t_norm) <= TOL64 * t_norm, f"{where}: grad norm before clipping"
        for k in p:
            (a, a_key), (b, b_key) = split_key_bias(k, p[k], config), split_key_bias(k, t_p[k], config)
            assert a.dtype == np.float64 and normwise(a, b) <= TOL64, f"{where}: {k}"
            if a_key is not None:
                assert np.abs(a_key - b_key).max() <= KEY_BIAS_TOL64, f"{where}: {k} (key slice)"


# ----------------------------------------------------------------------------- d: float32
# Our float32 (numpy, both modules) and torch's float32 (transformers + torch.optim.AdamW), each
# against the float64 oracle: ours must stay within an absolute bound AND within K x torch's own
# float32 error + a floor, so that the float32 tolerances are anchored to an outside implementation.
#
# Measured for the configs and SEED used here (numpy 2.4 + OpenBLAS vs torch 2.13 CPU), worst over
# the configs, ours = max(reference, impl); then the same over 9 seeds (1..8 and SEED):
#   quantity               ours    torch  | 9 seeds: ours    torch  | bound  headroom (SEED; 9 seeds)
#   logits     step 0      4.0e-7  3.7e-7 |          7.2e-7  7.4e-7 | 2e-6   5x;  2.8x
#   loss       step 0      8.2e-8  9.7e-8 |          1.7e-7  1.1e-7 | 1e-6   12x; 6x
#   gradients  step 0      1.5e-6  8.0e-6 |          2.5e-6  1.6e-5 | 1e-5   7x;  4x
#   params     10 steps    1.6e-6  1.8e-6 |          6.9e-4  8.1e-4 | 2e-5   12x; -
#   loss       10 steps    9.5e-8  1.0e-7 |          8.0e-7  9.8e-7 | 2e-6   20x; 2.5x
#   grad norm  10 steps    4.9e-7  1.3e-5 |          1.4e-5  4.9e-5 | 1e-5   20x; -
# (normwise errors; loss and norm relative; a trajectory's error is its worst step; params leave the
# key bias aside, see KEY_BIAS_TOL64 above.) The trajectory bounds hold for this SEED only: on 3 of the 9
# seeds Adam amplifies float32 rounding in entries whose gradient is near 0 to 1e-5..1e-3 within 10
# steps, for torch as much as for us -- so the backend tier needs bounds per case, not one number.
# The anchor, ours <= F32_K x torch + F32_FLOOR, held on every measured seed and quantity but one
# (the deep config's trajectory on seed 3: ours 4.7e-5, torch 5.1e-6, two samples of the same
# amplified noise); the worst ratio ours/torch was 2.3 at step 0 (logits), 1.2 for SEED.
F32_BOUND = {"logits": 2e-6, "loss": 1e-6, "grads": 1e-5,
             "params": 2e-5, "traj_loss": 2e-6, "traj_norm": 1e-5}
F32_K = 4.0
F32_FLOOR = {"logits": 1.2e-7, "loss": 1.2e-7, "grads": 1.2e-7,          # float32's eps
             "params": 2e-6, "traj_loss": 1.2e-7, "traj_norm": 1e-6}      # ~ the seed's own level


def assert_float32(errors, torch_errors, where):
    for q, err in errors.items():
        assert err <= F32_BOUND[q], f"{where}: float32 {q} error {err:.2e} > bound {F32_BOUND[q]:.0e}"
        anchor = F32_K * torch_errors[q] + F32_FLOOR[q]
        assert err <= anchor, (f"{where}: float32 {q} error {err:.2e} > {F32_K} x torch-float32's "
                               f"{torch_errors[q]:.2e} + {F32_FLOOR[q]:.1e}")


def step0_errors(logits, loss, grads, o):
    return {"logits": normwise(logits, o["logits"]), "loss": abs(loss - o["loss"]) / abs(o["loss"]),
            "grads": max(normwise(grads[k], o["grads"][k]) for k in o["grads"])}


@pytest.fixture(scope="module")
def torch_step0_float32(oracle_step0):
    o = oracle_step0
    model = transformers_gpt2(o["config"], o["params"], torch.float32)
    logits, loss = hf_loss(model, o["idx"], o["targets"])
    loss.backward()
    return step0_errors(logits.detach().numpy(), loss.item(), hf_params(model, "grad"), o)


def test_float32_step0_within_torch_float32_error(gpt, oracle_step0, torch_step0_float32):
    o = oracle_step0
    params = {k: v.astype(np.float32) for k, v in o["params"].items()}
    loss, cache = gpt.forward(params, o["idx"], o["targets"], o["config"])
    grads = gpt.backward(params, cache, o["config"])
    assert cache["logits"].dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    assert_float32(step0_errors(cache["logits"], loss, grads, o), torch_step0_float32, o["name"])


def trajectory_errors(run, truth, config):
    errors = {"params": 0.0, "traj_loss": 0.0, "traj_norm": 0.0}
    key_drift = 0.0
    for (loss, norm, _, p), (t_loss, t_norm, _, t_p) in zip(run, truth):
        errors["traj_loss"] = max(errors["traj_loss"], abs(loss - t_loss) / abs(t_loss))
        errors["traj_norm"] = max(errors["traj_norm"], abs(norm - t_norm) / t_norm)
        for k in t_p:
            (a, a_key), (b, b_key) = split_key_bias(k, p[k], config), split_key_bias(k, t_p[k], config)
            errors["params"] = max(errors["params"], normwise(a, b))
            if a_key is not None:
                key_drift = max(key_drift, float(np.abs(a_key.astype(np.float64) - b_key).max()))
    return errors, key_drift


def test_float32_trajectory_within_torch_float32_error(gpt, torch_runs):
    config, truth = torch_runs["config"], torch_runs["float64"]
    params = {k: v.astype(np.float32) for k, v in torch_runs["params"].items()}
    ours = our_trajectory(gpt, config, params, torch_runs["steps"], HPARAMS)
    assert all(v.dtype == np.float32 for v in ours[-1][3].values())
    errors, key_drift = trajectory_errors(ours, truth, config)
    torch_errors, torch_key_drift = trajectory_errors(torch_runs["float32"], truth, config)
    assert_float32(errors, torch_errors, torch_runs["name"])
    lr_sum = sum(nanogpt_lr(step, HPARAMS) for step in range(N_STEPS))
    assert key_drift <= 2 * lr_sum and torch_key_drift <= 2 * lr_sum
