"""The fresh tier: new small cases drawn from a printed seed, the implementation against reference/
run live on the same inputs (differential testing; ../shared/DESIGN.md, "Proof in tiers").

Why it exists. The golden tiers check recorded inputs only, so (1) a lookup table that replays
golden/*.h5 passes them, and (2) settings the golden cases never reach hide real bugs: every golden
forward has T == block_size (a wpe not sliced to T, its gradient, the loss normalised by
B * block_size all pass), every golden trajectory clips (grad_clip = 0 meaning "off" is never run),
every golden generation stops at block_size with one row running to the end (n_tokens off by one,
the all-rows-stopped exit), and top_k never exceeds the vocabulary. Here each run of verify draws new
cases from a seed it prints (`--fresh-seed N` repeats a run), so neither a table nor a setting-specific
slip can pass, and every draw is built to reach those settings.

What is drawn (`draw(seed)`, deterministic in the seed; PCG64 streams of numpy only):

- training cases ("case 0".."case 2"): random small configs (1-3 layers, 1-4 heads of size 1-8,
  n_embd >= 4, vocab 2-100, block_size up to 12), B 1-4 and T from 1 to block_size, case 0 always
  with T < block_size, case 1 with T = block_size; weights drawn here, not by init (embeddings
  N(0, s) with s from 0.03 to 1, matrices N(0, g / sqrt(fan_in)) with g from 0.5 to 1.5, LayerNorm
  gains 1 + noise, biases nonzero); random AdamW hyperparameters with grad_clip > 0 and clipping
  (case 0, set below the step-0 norm that reference/ computes), grad_clip = 0 (case 1: no clipping),
  grad_clip near the norm (case 2: steps on either side), warmup_iters 0 and 1 and lr_decay_iters
  inside the TRAIN_STEPS steps. Checked: every activation, the loss and every gradient at step 0,
  then per step the lr, loss and grad norm, and the params after the first and the last update.
  A draw that amplifies rounding too much (reference/'s float32 run off its float64 run by more than
  MAX_FLOAT32_ERROR; ~0.3% of draws) is redrawn, so float64 rounding stays ~1e4 below 1e-9;
- generations ("gen 0".."gen 4"): own configs and weights (matrices drawn larger, so next-token
  distributions are far from uniform), prompts of different lengths (left padding), each path with
  and without the KV cache: greedy with n_tokens below the room left to block_size; sampling with a
  stop token that every row produces early, at different steps (chosen by running reference/ without
  it: its u stream does not depend on the stop token); top_k >= vocab_size; top_p = 1.0; top-k and
  top-p together until block_size; temperatures other than 1;
- setup: init(config, seed, xp, dtype) of each training config against reference/'s (ULPs), get_batch
  with random sizes (a data length of block_size + 1 among them: one possible window) and lr_at
  through warmup, the cosine and past lr_decay_iters (warmup_iters 0 and 1, lr_decay_iters right
  after the warmup).

How it is judged. All cases of one backend go to the implementation as ONE "fresh" job
(harness/runner/record.py JOBS; `execute` runs in the worker), and reference/ runs the same job in this
process. numpy-float64 (and cupy-float64): the semantic tier's metrics and tolerances
(golden/tolerances.json semantic.*; backend.float64 for rel checks on cupy), tokens exactly.
float32 backends: the backend tier's rule per tensor, err(impl, reference float64) <=
backend.k * err(reference in float32 on this machine and backend, reference float64) + backend.floor,
and every floating result and the optimizer state in float32 (tiers.dtype_note: an upcast FAILs).
reference/'s float32 error is the largest of ROUNDING_SAMPLES runs (the plain cast of the weights, and
casts nudged one ulp at random, see `nudged`): one run's error is one draw of a random variable, and
for a scalar or a small tensor it is near 0 often enough (17 false alarms in 300 seeds) to make the
bound a coin toss; with four runs, 0 in 4000 runs of impl/gpt2.py, reference/ and the rewrites.

float32 generation and near-ties. A float32 run may pick another token than float64 where two
choices are within float32 rounding of each other (a greedy near-tie, or u * total near a CDF step);
after that the two runs continue different sequences. So in float32 (i) each step's logits are
compared only while the tokens fed so far are the float64 reference's (and reference/'s own float32
run's, which sets the bound); a divergence becomes an "info" row and the later logits of that
generation are not compared; (ii) the tokens are checked against the tokens the implementation's OWN
float32 logits pick (reference/sampling.py's `choose`, same u stream: one rng.random(B) per step),
and the number of steps against what its own tokens imply (n_tokens, block_size, every row stopped).
Both are exact and free of near-ties (the choice is made in float64 from identical float32 logits),
yet a sampling or stopping bug still fails in float32. Tokens are compared with the reference's
only in float64, where a near-tie would need two logits within ~1e-15 of each other.

Rows name the drawn case and its setting ("case 0 (T=3 < block_size=7, grad_clip=0.21): dwpe",
"gen 1 (stop token 2: every row stops early, ...): steps (kv cache)"), so the first failure says
which setting broke; the case name ("fresh (seed N)") and TierResult.info say how to repeat it.
"""
import functools
import math
import secrets
import time
from types import SimpleNamespace

import numpy as np

from nanoproof.runner import record
from nanoproof.judge import tiers
from nanoproof.judge.compare import check_exact, check_rel, check_ulp, normwise
from nanoproof.judge.report import Row, TierResult, fail_row
from nanoproof.spec.contract import activation_names, load_reference, required_activation_names
from nanoproof.runner.record import ALL_BACKENDS as BACKENDS, ORACLE, StageError
from nanoproof.runner.worker import InProcess

TRAIN_STEPS = 4                 # updates per training case; params checked after 1 and after all
GEN_PATHS = (("kv_cache", True), ("no_cache", False))
TIER = "fresh"


def new_seed():
    """A seed for a run that was given none (printed in every TierResult's info)."""
    return secrets.randbelow(10 ** 9)


# ----------------------------------------------------------------------------- drawing

def _config(rng, block_lo, block_hi, vocab_hi=100):
    """n_embd >= 4: LayerNorm over 2 or 3 numbers is ill-conditioned (their variance is often
    within eps of 0, where its gradient amplifies rounding ~300x: 2e-9 relative in float64)."""
    n_head, head = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    head = max(head, -(-4 // n_head))
    return {"vocab_size": int(rng.integers(2, vocab_hi + 1)),
            "block_size": int(rng.integers(block_lo, block_hi + 1)),
            "n_layer": int(rng.integers(1, 4)), "n_head": n_head, "n_embd": n_head * head}


def _params(rng, ref, config, gain_lo=0.5, gain_hi=1.5):
    """Weights of our own (not init's): names and shapes from reference/'s init, values varied
    enough that a wrong sign, a dropped bias or a gain taken for 1 moves the result; scales small
    enough that float64 rounding stays near 1e-14 (far below the 1e-9 tolerances)."""
    emb = 10 ** rng.uniform(-1.5, 0.0)
    gain = rng.uniform(gain_lo, gain_hi)
    vec = rng.uniform(0.02, 0.3)
    out = {}
    for name, p in ref.init(config, 0, np, "float64").items():
        shape = np.shape(p)
        if name in ("wte", "wpe"):
            out[name] = rng.normal(0.0, emb, shape)
        elif len(shape) == 2:
            out[name] = rng.normal(0.0, gain * 10 ** rng.uniform(-0.2, 0.2) / math.sqrt(shape[0]), shape)
        elif name.endswith(".weight"):                                   # LayerNorm gain
            out[name] = 1.0 + rng.normal(0.0, vec, shape)
        else:                                                            # biases
            out[name] = rng.normal(0.0, vec, shape)
    return out


MAX_FLOAT32_ERROR = 1e-4     # a drawn training case whose float32 run is further off is redrawn


def _float32_error(ref, case):
    """The largest normwise error of reference/'s float32 run of a training case against its float64
    run (step-0 gradients, every step's loss and grad norm, the params after the last step): how
    much this draw amplifies rounding. Typical draws: ~1e-6; a few in a hundred reach 1e-3 (attention
    or LayerNorm near a saturation), where float64 rounding too is 1e4 times larger than usual and
    the float32 bound rests on errors dominated by one amplified direction."""
    from nanoproof.judge.compare import normwise
    runs = []
    for dtype in ("float64", "float32"):
        p = {k: v.astype(dtype) for k, v in case["params0"].items()}
        state, out = {}, {"grads": None, "scalars": []}
        for s in range(case["steps"]):
            loss, cache = ref.forward(p, case["x"][s], case["y"][s], case["config"])
            g = ref.backward(p, cache, case["config"])
            out["grads"] = out["grads"] or g
            norm = ref.adamw_step(p, g, state, s, ref.lr_at(s, case["hparams"]), case["hparams"])
            out["scalars"] += [loss, norm]
        runs.append((out, p))
    (a, pa), (b, pb) = runs
    errs = [normwise(b["grads"][n], a["grads"][n])[1] for n in a["grads"]]
    errs += [normwise(pb[n], pa[n])[1] for n in pa]
    errs += [normwise(y, x)[1] for x, y in zip(a["scalars"], b["scalars"])]
    return max(errs)


def _grad_norm0(ref, case):
    """reference/'s gradient norm at step 0 of a training case (to set grad_clip against it)."""
    _, cache = ref.forward(case["params0"], case["x"][0], case["y"][0], case["config"])
    grads = ref.backward(case["params0"], cache, case["config"])
    return math.sqrt(sum(float((g * g).sum()) for g in grads.values()))


def _hparams(rng, warmup, decay):
    """AdamW and schedule hyperparameters. min_lr > 0: lr_at is checked in ULPs, and at
    lr_decay_iters the cosine leaves min_lr plus a rounding of cos(pi) (0 and 1e-35 are ~1e18 ULPs
    apart). eps from 1e-4 to 1e-2, not 1e-8: Adam's first update is g / (|g| + eps), a sign function
    of any gradient far above eps, and some gradients are 0 up to rounding (the key bias's, exactly 0
    in exact arithmetic: softmax ignores a constant added to every score); with eps = 1e-8 float32
    noise there became lr-sized steps, different in the implementation and in reference/ (measured:
    errors 33x reference/'s own), and 4e-10 relative in float64."""
    lr = 10 ** rng.uniform(-3.0, -1.7)
    return {"learning_rate": lr, "min_lr": lr * rng.uniform(0.05, 0.5), "warmup_iters": int(warmup),
            "lr_decay_iters": int(decay), "weight_decay": rng.uniform(0.0, 0.3),
            "beta1": rng.uniform(0.7, 0.95), "beta2": rng.uniform(0.9, 0.999),
            "eps": 10 ** rng.uniform(-4.0, -2.0), "grad_clip": 0.0}


def _temperature(rng):
    """Not 1: a temperature the code ignores must move the tokens."""
    return float(rng.uniform(0.5, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 2.0))


def _train_cases(rng, ref):
    return [_train_case(rng, ref, i) for i in range(3)]


def _train_case(rng, ref, i):
    """Training case i (see the module docstring), redrawn while it amplifies rounding too much
    (`_float32_error` above MAX_FLOAT32_ERROR): keeps float64 rounding ~1e4 below the 1e-9 tolerances."""
    for _ in range(50):
        case = _train_case_draw(rng, ref, i)
        if _float32_error(ref, case) <= MAX_FLOAT32_ERROR:
            return case
    raise RuntimeError(f"fresh: no well-conditioned training case {i} in 50 draws (a harness bug)")


def _train_case_draw(rng, ref, i):
    K = TRAIN_STEPS
    config = _config(rng, 2 if i == 0 else 1, 12)
    block = config["block_size"]
    T = int(rng.integers(1, block)) if i == 0 else block if i == 1 else int(rng.integers(1, block + 1))
    B = int(rng.integers(1, 5))
    # schedules: warmup 0 with lr_decay_iters at the last step; warmup 1 with decay right after
    # (the last steps sit flat at min_lr); a random one inside the steps
    warmup = i if i < 2 else int(rng.integers(0, 3))
    decay = K - 1 if i == 0 else 2 if i == 1 else warmup + int(rng.integers(1, K))
    case = {"kind": "train", "key": f"case{i}", "config": config, "batch_size": B, "T": T,
            "hparams": _hparams(rng, warmup, decay), "steps": K, "checkpoints": [1, K],
            "params0": _params(rng, ref, config),
            "x": rng.integers(0, config["vocab_size"], (K, B, T)).astype(np.int64),
            "y": rng.integers(0, config["vocab_size"], (K, B, T)).astype(np.int64)}
    if i == 0:      # clipping on every step (the norm hardly moves in a few small updates)
        case["hparams"]["grad_clip"] = float(_grad_norm0(ref, case) * rng.uniform(0.2, 0.6))
        clip = f"grad_clip={case['hparams']['grad_clip']:.3g} (clips)"
    elif i == 1:    # off: the golden cases always clip
        clip = "grad_clip=0 (off)"
    else:           # around the norm: steps on both sides (clipping is continuous there)
        case["hparams"]["grad_clip"] = float(_grad_norm0(ref, case) * rng.uniform(0.9, 1.1))
        clip = f"grad_clip={case['hparams']['grad_clip']:.3g} (near the norm)"
    shape = f"T={T} < block_size={block}" if T < block else f"T=block_size={block}"
    case["label"] = f"{shape}, {clip}"
    case["about"] = (f"V={config['vocab_size']} L={config['n_layer']} NH={config['n_head']} "
                     f"C={config['n_embd']} B={B} T={T}/{block}, {clip}, warmup_iters={warmup}, "
                     f"lr_decay_iters={decay}")
    return case


def _prompts(rng, config, rows):
    """`rows` prompts of different lengths (when possible), each leaving >= 2 slots to block_size."""
    V, longest = config["vocab_size"], config["block_size"] - 2
    lengths = rng.permutation(np.arange(1, longest + 1))[:rows] if longest >= rows else \
        rng.integers(1, longest + 1, rows)
    return [[int(t) for t in rng.integers(0, V, int(n))] for n in lengths]


def _generation(rng, ref, key, kwargs, n_tokens=None, rows=None, vocab_hi=100):
    """A generation's config, weights (drawn larger: next-token distributions far from uniform) and
    prompts; n_tokens below the room left to block_size unless given. Its label is set by the caller."""
    config = _config(rng, 4, 12, vocab_hi)
    params = _params(rng, ref, config, 1.5, 3.0)
    prompts = _prompts(rng, config, rows or int(rng.integers(1, 4)))
    room = config["block_size"] - max(map(len, prompts))
    if n_tokens is None:                           # below the room: stops at n_tokens
        n_tokens = int(rng.integers(1, room))
    return {"kind": "generate", "key": key, "config": config, "params0": params, "prompts": prompts,
            "n_tokens": int(n_tokens), "room": room, "kwargs": kwargs, "label": ""}


def _stop_generation(rng, ref):
    """A sampled generation and a stop token that every row produces before the room runs out, at
    different steps (a finished row keeps feeding it while the others go on), so the batch ends
    early. reference/ run without a stop token gives each row's tokens: the u stream (one
    rng.random(B) a step) and a row's tokens up to its stop do not depend on the stop token."""
    for _ in range(200):
        kwargs = {"temperature": _temperature(rng), "top_k": None, "top_p": None,
                  "seed": int(rng.integers(0, 2 ** 31))}
        g = _generation(rng, ref, "gen1", kwargs, n_tokens=0, rows=int(rng.integers(2, 4)),
                        vocab_hi=8)
        g["n_tokens"] = g["room"] + int(rng.integers(0, 4))          # would run to block_size
        tokens, _ = ref.generate(g["params0"], g["prompts"], g["n_tokens"], g["config"],
                                 kv_cache=True, rng=np.random.Generator(np.random.PCG64(kwargs["seed"])),
                                 **{k: v for k, v in kwargs.items() if k != "seed"})
        best = None
        for token in range(g["config"]["vocab_size"]):
            first = [row.index(token) if token in row else None for row in tokens]
            if None in first or max(first) >= g["room"] - 1 or len(set(first)) < 2:
                continue
            if best is None or max(first) < best[1]:
                best = (token, max(first))
        if best is not None:
            kwargs["stop_token"] = best[0]
            g["label"] = (f"stop token {best[0]}: every row stops early, by step {best[1]} of "
                          f"{g['room']}; temperature {kwargs['temperature']:.2g}")
            return g
    raise RuntimeError("fresh: no stop-token generation found in 200 draws (a harness bug)")


def _generations(rng, ref):
    out = []
    kw = {"temperature": 0.0, "top_k": None, "top_p": None, "seed": None}
    g = _generation(rng, ref, "gen0", kw)
    g["label"] = f"greedy, n_tokens={g['n_tokens']} < room {g['room']}"
    out.append(g)
    out.append(_stop_generation(rng, ref))
    t = _temperature(rng)
    g = _generation(rng, ref, "gen2", {"temperature": t, "top_k": None, "top_p": None,
                                           "seed": int(rng.integers(0, 2 ** 31))})
    V = g["config"]["vocab_size"]
    # above the vocabulary (equal to it would not need the clamp): a few over, or nanoGPT's 200
    g["kwargs"]["top_k"] = int(V + rng.integers(1, 50) if rng.random() < 0.5 else max(V + 1, 200))
    g["label"] = (f"top_k={g['kwargs']['top_k']} > vocab_size={V}, temperature {t:.2g}, "
                  f"n_tokens={g['n_tokens']} < room {g['room']}")
    out.append(g)
    t = _temperature(rng)
    g = _generation(rng, ref, "gen3", {"temperature": t, "top_k": None, "top_p": 1.0,
                                           "seed": int(rng.integers(0, 2 ** 31))})
    g["label"] = f"top_p=1.0, temperature {t:.2g}, n_tokens={g['n_tokens']} < room {g['room']}"
    out.append(g)
    t = _temperature(rng)
    g = _generation(rng, ref, "gen4", {"temperature": t, "top_k": None,
                                           "top_p": float(rng.uniform(0.3, 0.95)),
                                           "seed": int(rng.integers(0, 2 ** 31))}, n_tokens=0)
    g["n_tokens"] = g["room"] + int(rng.integers(1, 5))
    V = g["config"]["vocab_size"]
    g["kwargs"]["top_k"] = int(rng.integers(1, V)) if V > 2 else 1
    g["label"] = (f"top_k={g['kwargs']['top_k']} < vocab_size={V}, top_p={g['kwargs']['top_p']:.2g}, "
                  f"temperature {t:.2g}, until block_size")
    out.append(g)
    for g in out:
        shown = {k: v for k, v in g["kwargs"].items() if v is not None}
        g["about"] = (f"V={g['config']['vocab_size']} L={g['config']['n_layer']} "
                      f"NH={g['config']['n_head']} C={g['config']['n_embd']} "
                      f"block_size={g['config']['block_size']}, prompts of "
                      f"{[len(p) for p in g['prompts']]} tokens, n_tokens={g['n_tokens']}, {shown}")
    return out


def _setup_cases(rng, train):
    out = []
    for i, c in enumerate(train):
        seed = int(rng.integers(0, 2 ** 31))
        cfg = c["config"]
        out.append({"kind": "init", "key": f"init{i}", "config": cfg, "seed": seed,
                    "label": f"V={cfg['vocab_size']} L={cfg['n_layer']} C={cfg['n_embd']} "
                             f"block_size={cfg['block_size']}, seed {seed}"})
    for i in range(3):
        block = int(rng.integers(1, 13))
        n = block + 1 if i == 0 else block + int(rng.integers(2, 60))   # i = 0: a single window
        B, calls = int(rng.integers(1, 7)), int(rng.integers(2, 4))
        seed = int(rng.integers(0, 2 ** 31))
        data = rng.integers(0, 2 ** 16, n).astype(np.uint16)            # as prepare_data's .bin
        edge = " = block_size + 1: one window" if i == 0 else ""
        out.append({"kind": "get_batch", "key": f"get_batch{i}", "data": data, "batch_size": B,
                    "block_size": block, "seed": seed, "calls": calls,
                    "label": f"len {n}{edge}, B={B}, block_size={block}, {calls} draws"})
    for i in range(3):
        warmup = i if i < 2 else int(rng.integers(2, 7))
        decay = warmup + (1 if i == 1 else int(rng.integers(1, 7)))
        hp = _hparams(rng, warmup, decay)
        out.append({"kind": "lr_at", "key": f"lr_at{i}", "hparams": hp, "steps": decay + 3,
                    "label": f"warmup_iters={warmup}, lr_decay_iters={decay}"})
    return out


@functools.lru_cache(maxsize=8)
def draw(seed):
    """The drawn cases of a seed, in check order: setup (init, get_batch, lr_at), training cases,
    generations. Each a dict with kind, key (its result-key prefix), label (the setting, as rows
    name it), about (everything drawn) and its inputs. Deterministic in the seed (reference/ runs
    here to aim grad_clip and the stop token, and to turn down ill-conditioned training draws).
    Cached: do not modify what it returns."""
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    ref = load_reference()
    train = _train_cases(rng, ref)
    gens = _generations(rng, ref)
    return tuple(_setup_cases(rng, train) + train + gens)


def describe(seed, cases):
    """One line for TierResult.info: the seed and what was drawn."""
    train = [c for c in cases if c["kind"] == "train"]
    gens = [c for c in cases if c["kind"] == "generate"]
    return (f"seed {seed} (repeat with --fresh-seed {seed}): "
            + "; ".join(f"case {i}: {c['about']}" for i, c in enumerate(train)) + "; "
            + "; ".join(f"gen {i}: {c['label']}" for i, c in enumerate(gens))
            + "; init, get_batch and lr_at checks")


def job(cases, backend, seed):
    """(spec, inputs) of the one "fresh" job of a backend: plain JSON and host arrays. get_batch and
    lr_at are host-side: float64 jobs only."""
    dtype = backend.split("-")[1]
    spec = {"seed": int(seed), "backend": backend, "init": [], "get_batch": [], "lr_at": [],
            "train": [], "generate": []}
    inputs = {}
    for c in cases:
        k, kind = c["key"], c["kind"]
        if kind == "init":
            spec["init"].append({"key": k, "config": c["config"], "seed": c["seed"]})
        elif kind == "get_batch" and dtype == "float64":
            spec["get_batch"].append({"key": k, "batch_size": c["batch_size"],
                                      "block_size": c["block_size"], "seed": c["seed"],
                                      "calls": c["calls"]})
            inputs[f"{k}/data"] = c["data"]
        elif kind == "lr_at" and dtype == "float64":
            spec["lr_at"].append({"key": k, "hparams": c["hparams"], "steps": c["steps"]})
        elif kind == "train":
            spec["train"].append({"key": k, "config": c["config"], "hparams": c["hparams"],
                                  "steps": c["steps"], "checkpoints": c["checkpoints"]})
            inputs.update({f"{k}/params0/{n}": v for n, v in c["params0"].items()})
            inputs[f"{k}/x"], inputs[f"{k}/y"] = c["x"], c["y"]
        elif kind == "generate":
            spec["generate"].append({"key": k, "config": c["config"], "prompts": c["prompts"],
                                     "n_tokens": c["n_tokens"], "kwargs": c["kwargs"]})
            inputs.update({f"{k}/params0/{n}": v for n, v in c["params0"].items()})
    return spec, inputs


# ----------------------------------------------------------------------------- the job (worker side)

def part_of(key):
    """The part a result key belongs to (one StageError each): init0, get_batch1, lr_at2,
    case0/step0, case0/trajectory, gen3/kv_cache."""
    head, _, rest = key.partition("/")
    if head.startswith(("case", "gen")):
        return f"{head}/{rest.split('/')[0]}"
    return head


def _guard(errors, part, fn):
    """fn() -> its value, or None after recording its StageError (or anything else it raised on
    what the module returned) under `part`."""
    try:
        return fn()
    except StageError as exc:
        errors[part] = exc
    except Exception as exc:   # a malformed return (a cache that is no dict, ...): the module's
        errors[part] = StageError(part, None, f"returned something unusable: "
                                              f"{type(exc).__name__}: {exc}")
    return None


def _prefixed(inputs, prefix):
    return {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)}


def execute(module, spec, inputs):
    """Run every drawn case of spec (see `job`) on `module` in spec["backend"], through the contract
    only (harness/runner/record.py's helpers). Returns (results {key: host array}, errors {part:
    StageError}, meta {"state_dtypes": {"case0/m.wte": "float32", ...}, "extra_grads": {...}})."""
    xp, dtype = record.backend_xp(spec["backend"])
    results, errors, meta = {}, {}, {"state_dtypes": {}, "extra_grads": {}}
    if xp is None:
        return {}, {"backend": StageError("backend", None, f"{spec['backend']}: {dtype}")}, meta
    for it in spec.get("init", []):
        k = it["key"]
        got = _guard(errors, k, lambda: record.run_init(module, it["config"], it["seed"], xp, dtype))
        results.update({f"{k}/{n}": v for n, v in (got or {}).items()})
    for it in spec.get("get_batch", []):
        k = it["key"]
        got = _guard(errors, k, lambda: record.run_sampler(module, inputs[f"{k}/data"], it["batch_size"],
                                                           it["block_size"], it["seed"], it["calls"]))
        if got is not None:
            results[f"{k}/x"], results[f"{k}/y"] = got
    for it in spec.get("lr_at", []):
        k = it["key"]
        got = _guard(errors, k, lambda: record.run_lr(module, it["hparams"], it["steps"]))
        if got is not None:
            results[k] = got
    for it in spec.get("train", []):
        _execute_train(module, it, inputs, xp, dtype, results, errors, meta)
    for it in spec.get("generate", []):
        k = it["key"]
        params0 = _prefixed(inputs, f"{k}/params0/")
        case = SimpleNamespace(config=it["config"], prompts=it["prompts"], n_tokens=it["n_tokens"],
                               runs={"run": dict(it["kwargs"])})
        for path, kv_cache in GEN_PATHS:
            got = _guard(errors, f"{k}/{path}",
                         lambda: record.run_generate(module, case, params0, xp, dtype, kv_cache)["run"])
            if got is not None:
                results[f"{k}/{path}/tokens"], results[f"{k}/{path}/logits"] = got["tokens"], got["logits"]
    return record._numeric(results, errors, part_of), errors, meta


def _execute_train(module, it, inputs, xp, dtype, results, errors, meta):
    k, cfg = it["key"], it["config"]
    params0 = _prefixed(inputs, f"{k}/params0/")
    xs, ys = inputs[f"{k}/x"], inputs[f"{k}/y"]
    try:
        s0 = record.run_step0(module, cfg, params0, xs[0], ys[0], xp, dtype)
        results.update({f"{k}/step0/activations/{n}": v for n, v in s0["activations"].items()})
        results[f"{k}/step0/loss"] = np.float64(s0["loss"])
        results.update({f"{k}/step0/grads/{n}": v for n, v in s0["grads"].items()})
        meta["extra_grads"][k] = s0["extra_grads"]
    except StageError as exc:
        errors[f"{k}/step0"] = exc
        partial = getattr(exc, "partial", None)
        if partial is not None:     # forward's results still count when backward raised
            results.update({f"{k}/step0/activations/{n}": v for n, v in partial["activations"].items()})
            results[f"{k}/step0/loss"] = np.float64(partial["loss"])
    except Exception as exc:
        errors[f"{k}/step0"] = StageError("forward", 0, f"returned something unusable: "
                                                        f"{type(exc).__name__}: {exc}")
    tr = None
    try:
        tr = record.run_trajectory(module, cfg, it["hparams"], params0, xs, ys, it["steps"],
                                   it["checkpoints"], xp, dtype)
    except StageError as exc:
        errors[f"{k}/trajectory"] = exc
        tr = getattr(exc, "partial", None)
    except Exception as exc:
        errors[f"{k}/trajectory"] = StageError("adamw_step", None, f"returned something unusable: "
                                                                   f"{type(exc).__name__}: {exc}")
    if tr is not None:
        for q in ("loss", "lr", "grad_norm"):
            results[f"{k}/trajectory/{q}"] = np.asarray(tr[q], dtype=np.float64)
        for n_updates, ps in tr["params"].items():
            results.update({f"{k}/trajectory/params_after_{n_updates}/{n}": v for n, v in ps.items()})
        meta["state_dtypes"].update({f"{k}/{n}": d for n, d in tr.get("state_dtypes", {}).items()})


# ----------------------------------------------------------------------------- the verdicts (parent side)

_REFERENCE = {}
ROUNDING_SAMPLES = 4    # reference/ float32 runs whose largest error sets a tensor's float32 bound


def reference_job(seed, backend, spec, inputs, sample=0):
    """reference/ on the same job, in this process (deterministic: cached per seed, backend and
    rounding sample; see `nudged`)."""
    key = (int(seed), backend, sample)
    if key not in _REFERENCE:
        if len(_REFERENCE) >= 4 * (ROUNDING_SAMPLES + 1):
            _REFERENCE.pop(next(iter(_REFERENCE)))
        _REFERENCE[key] = InProcess(load_reference(), "reference/").run(
            "fresh", spec, nudged(inputs, seed, sample) if sample else inputs)
    return _REFERENCE[key]


def nudged(inputs, seed, sample):
    """The inputs with every float32 weight moved one ulp up or down at random (float64 arrays whose
    float32 cast is the nudged value): another, equally exact float32 rounding of the same problem.

    Why: the float32 bound is k x reference/'s own float32 error, and one run's error is one draw of
    a random variable. For a scalar (a loss, a grad norm) or a small tensor it can be near 0 by luck
    (the ratio of two such errors is Cauchy-like: one run alone gave 17 false alarms in 300 seeds);
    the largest error over ROUNDING_SAMPLES runs, the plain cast and a few nudged ones, is a steady
    scale. Tokens and batches are not touched."""
    rng = np.random.Generator(np.random.PCG64([int(seed), int(sample)]))
    out = dict(inputs)
    for k, v in inputs.items():
        if "/params0/" in k:
            a = np.asarray(v).astype(np.float32)
            up = rng.random(a.shape) < 0.5
            out[k] = np.where(up, np.nextafter(a, np.float32(np.inf)),
                              np.nextafter(a, np.float32(-np.inf))).astype(np.float64)
    return out


def fresh_tier(runner, seed, tol):
    """The fresh tier: one TierResult per backend (numpy-float64, numpy-float32, and the cupy
    backends where cupy runs; skipped TierResults say why not). seed None: a new one, printed."""
    seed = new_seed() if seed is None else int(seed)
    cases = draw(seed)
    info = describe(seed, cases)
    runner = tiers.subject(runner)
    out = []
    for backend in BACKENDS:
        # the seed in the case name too: verify's one-line summary then says how to repeat a failure
        res = TierResult(TIER, f"fresh (seed {seed})", backend=backend, info=info)
        res.skipped = tiers.backend_skip(backend)
        if res.skipped:
            out.append(res)
            continue
        out.append(_run_backend(runner, seed, cases, backend, tol, res))
    return out


def _run_backend(runner, seed, cases, backend, tol, res):
    t0 = time.perf_counter()
    dtype = backend.split("-")[1]
    spec, inputs = job(cases, backend, seed)
    got = tiers.run_job(runner, "fresh", spec, inputs, res, TIER, backend)
    if got is not None:
        oracle = reference_job(seed, ORACLE, *job(cases, ORACLE, seed))
        same = [reference_job(seed, backend, spec, inputs, r) for r in range(ROUNDING_SAMPLES)] \
            if dtype != "float64" else []
        bad = {**oracle.errors, **{p: e for r in same for p, e in r.errors.items()}}
        if bad:   # the oracle itself failed on a draw: never a pass, and not the code's fault
            part, exc = next(iter(bad.items()))
            res.rows.append(fail_row(TIER, "setup", "reference/", f"reference/ itself failed on {part}: "
                                     f"{exc} (a harness bug: report it with the seed)", backend=backend))
        else:
            res.rows += _Judge(got, oracle, same, dtype, backend, tol).rows(cases)
    res.seconds = time.perf_counter() - t0
    return res


STAGE_SECTIONS = tiers.STAGE_SECTIONS


class _Judge:
    """Rows of one backend's job against reference/'s: setup, the training cases, the generations."""

    def __init__(self, job, oracle, same, dtype, backend, tol):
        self.job, self.oracle, self.same, self.dtype, self.backend = job, oracle, same, dtype, backend
        self.tol, self.rows_, self.reported = tol, [], set()
        self.k, self.floor = tol["backend.k"]["value"], tol["backend.floor"]["value"]

    # --------------------------------------------------------------- helpers

    def bound(self, key, entry, step=None):
        """The tolerance of a rel-checked key (element `step` of a per-step array): the semantic
        entry in float64 on numpy, backend.float64 on cupy-float64, else k * reference/'s own float32
        error (the largest of its ROUNDING_SAMPLES runs) + floor."""
        if self.dtype == "float64":
            name = entry if self.backend == ORACLE else "backend.float64"
            return self.tol[name]["value"]
        ref = _at(self.oracle.results.get(key), step)
        errors = [normwise(_at(r.results[key], step), ref)[1] for r in self.same if key in r.results]
        e = max((x for x in errors if math.isfinite(x)), default=math.inf)
        return self.k * e + self.floor if math.isfinite(e) else self.floor

    def add(self, row, key=None, dtype_checked=False, got=None):
        row.backend = self.backend
        if key is not None:
            row.key = key
        if row.tol is not None and not row.entry:
            row.entry = entry_of(row) or ""
        if dtype_checked and got is not None:
            note = tiers.dtype_note(got, self.dtype)
            if note:
                row.verdict, row.note = "FAIL", note
        self.rows_.append(row)
        return row

    def crash(self, label, part, section=None, step=None):
        """One FAIL row for a part that raised; True when the part raised (reported once)."""
        exc = self.job.errors.get(part)
        if exc is None:
            return False
        if part not in self.reported:
            self.reported.add(part)
            sec = section or STAGE_SECTIONS.get(exc.stage, "setup")
            what = f"{exc.stage.split(' ')[0]}()"
            if part.endswith(tuple(p for p, _ in GEN_PATHS)):      # which path of generate
                what = f"generate() ({part.rsplit('/', 1)[1].replace('_', ' ')})"
            self.add(fail_row(TIER, sec, f"{label}: {what}", exc.message,
                              step=exc.step if exc.step is not None else step))
        return True

    def missing(self, section, name, what, key, step=None):
        self.add(fail_row(TIER, section, name, what, step=step), key)

    def rows(self, cases):
        gens = 0
        train = 0
        for c in cases:
            if c["kind"] == "init":
                self.init_rows(c)
            elif c["kind"] == "get_batch" and self.dtype == "float64":
                self.batch_rows(c)
            elif c["kind"] == "lr_at" and self.dtype == "float64":
                self.lr_rows(c)
            elif c["kind"] == "train":
                self.train_rows(c, f"case {train} ({c['label']})")
                train += 1
            elif c["kind"] == "generate":
                self.gen_rows(c, f"gen {gens} ({c['label']})")
                gens += 1
        for part, exc in self.job.errors.items():   # anything not reported with its case
            if part not in self.reported:
                self.reported.add(part)
                self.add(fail_row(TIER, STAGE_SECTIONS.get(exc.stage, "setup"), f"{part}: {exc.stage}()",
                                  exc.message, step=exc.step))
        return self.rows_

    # --------------------------------------------------------------- setup

    def init_rows(self, c):
        k, label = c["key"], f"init {c['key'][4:]} ({c['label']})"
        ref = self.reference_for_init()
        names = [n[len(k) + 1:] for n in ref.results if n.startswith(k + "/")]
        if self.crash(label, k, "setup"):
            return
        for n in names:
            key = f"{k}/{n}"
            got = self.job.results.get(key)
            if got is None:
                self.missing("setup", f"{label}: {n}", "missing from init's params", key)
                continue
            row = check_ulp(TIER, "setup", f"{label}: {n}", got, ref.results[key],
                            self.tol["semantic.init"]["value"])
            self.add(row, key, True, got)
        extra = sorted(n[len(k) + 1:] for n in self.job.results if n.startswith(k + "/")
                       and n not in ref.results)
        if extra:
            self.add(fail_row(TIER, "setup", f"{label}: params", f"unexpected param names: {extra}"))

    def reference_for_init(self):
        """init in float32 is compared with reference/'s float32 init (the float64 draw, cast)."""
        return self.same[0] if self.same else self.oracle

    def batch_rows(self, c):
        k, label = c["key"], f"get_batch {c['key'][9:]} ({c['label']})"
        if self.crash(label, k, "setup"):
            return
        for q in ("x", "y"):
            key, ref = f"{k}/{q}", self.oracle.results[f"{k}/{q}"]
            got = self.job.results.get(key)
            if got is None:
                self.missing("setup", f"{label}: {q}", "missing", key)
                continue
            row = self.add(check_exact(TIER, "setup", f"{label}: {q}", got, ref), key)
            a = np.asarray(got)
            if row.failed and a.shape == ref.shape:
                draw_ = int(np.argmax((a != ref).reshape(len(ref), -1).any(axis=1)))
                row.note = f"draw {draw_} differs first; " + row.note

    def lr_rows(self, c):
        k, label = c["key"], f"lr_at {c['key'][5:]} ({c['label']})"
        if self.crash(label, k, "setup"):
            return
        ref, got = self.oracle.results[k], self.job.results.get(k)
        if got is None:
            return self.missing("setup", label, "missing", k)
        row = self.add(check_ulp(TIER, "setup", label, got, ref, self.tol["semantic.lr_at"]["value"]), k)
        if row.failed and np.shape(got) == np.shape(ref):
            bad = [s for s in range(len(ref)) if got[s] != ref[s]]
            if bad:
                row.note = (f"first differing step {bad[0]}: got {got[bad[0]]!r}, expected "
                            f"{ref[bad[0]]!r}; {len(bad)} of {len(ref)} steps differ")

    # --------------------------------------------------------------- training

    def rel(self, section, name, key, entry, step=None, at=None, dtype_checked=False):
        """A normwise-relative row of result `key` (element `at` of a per-step array)."""
        ref = _at(self.oracle.results[key], at)
        got = _at(self.job.results.get(key), at)
        row = check_rel(TIER, section, name, got, ref, self.bound(key, entry, at), step=step)
        return self.add(row, key if at is None else f"{key}@{at}", dtype_checked, got)

    def train_rows(self, c, label):
        k, cfg = c["key"], c["config"]
        res, ref = self.job.results, self.oracle.results
        step0_crashed = self.crash(label, f"{k}/step0", step=0)
        required = set(required_activation_names(cfg["n_layer"]))
        for n in activation_names(cfg["n_layer"]):
            key = f"{k}/step0/activations/{n}"
            if key not in ref:
                continue
            if key in res:
                self.rel("forward", f"{label}: {n}", key, "semantic.activations", 0, dtype_checked=True)
            elif n in required and not step0_crashed:
                self.missing("forward", f"{label}: {n}", "required activation missing from the cache", key, 0)
        if f"{k}/step0/loss" in res:
            self.rel("loss", f"{label}: loss", f"{k}/step0/loss", "semantic.loss", 0)
        elif not step0_crashed:
            self.missing("loss", f"{label}: loss", "missing", f"{k}/step0/loss", 0)
        for n in reversed(list(c["params0"])):                      # backward order
            key = f"{k}/step0/grads/{n}"
            if key in res:
                self.rel("backward", f"{label}: d{n}", key, "semantic.grads", 0, dtype_checked=True)
            elif not step0_crashed:
                self.missing("backward", f"{label}: d{n}", "missing from backward's grads", key, 0)
        extra = self.job.meta.get("extra_grads", {}).get(k)
        if extra:
            self.add(fail_row(TIER, "backward", f"{label}: grads", f"unexpected gradient keys: {extra}",
                              step=0))
        self.trajectory_rows(c, label)
        wrong = {n: d for n, d in self.job.meta.get("state_dtypes", {}).items()
                 if n.startswith(k + "/") and str(d).startswith("float") and d != self.dtype}
        if wrong:
            n, d = next(iter(wrong.items()))
            total = sum(1 for s in self.job.meta["state_dtypes"] if s.startswith(k + "/"))
            self.add(fail_row(TIER, "trajectory", f"{label}: optimizer state",
                              f"{len(wrong)} of {total} state arrays are not {self.dtype} (first: "
                              f"{n.split('/', 1)[1]} is {d}{': a float64 upcast' if d == 'float64' else ''})"))

    def trajectory_rows(self, c, label):
        """Step by step, as the golden trajectory: params entering step s, lr, loss, grad norm."""
        k, K = c["key"], c["steps"]
        res, ref = self.job.results, self.oracle.results
        part = f"{k}/trajectory"
        crashed = part in self.job.errors
        done = len(res.get(f"{k}/trajectory/loss", ()))
        names = list(c["params0"])
        for s in range(K + 1):
            if s in c["checkpoints"]:
                for n in names:
                    key = f"{k}/trajectory/params_after_{s}/{n}"
                    if key in res:
                        self.rel("trajectory", f"{label}: {n} (after {s} updates)", key,
                                 "semantic.trajectory.params", s, dtype_checked=True)
                    elif not crashed:
                        self.missing("trajectory", f"{label}: {n} (after {s} updates)", "missing", key, s)
            if s == K:
                break
            if s >= done:
                if crashed:
                    self.crash(label, part, step=s)
                    return
                continue
            for q in ("lr", "loss", "grad_norm"):
                key = f"{k}/trajectory/{q}"
                if q == "lr":
                    if self.dtype != "float64":   # host-side: as in float64
                        continue
                    row = check_ulp(TIER, "trajectory", f"{label}: lr", res[key][s], ref[key][s],
                                    self.tol["semantic.trajectory.lr"]["value"], step=s)
                    self.add(row, f"{key}@{s}")
                else:
                    self.rel("trajectory", f"{label}: {q}", key, f"semantic.trajectory.{q}", s, at=s)
        self.crash(label, part, step=done)

    # --------------------------------------------------------------- generation

    def gen_rows(self, c, label):
        k = c["key"]
        paths = []
        for path, _ in GEN_PATHS:
            shown = path.replace("_", " ")
            if not self.crash(label, f"{k}/{path}", "generate") and f"{k}/{path}/tokens" in self.job.results:
                paths.append((path, shown))
        ref_tokens, ref_logits = (self.oracle.results[f"{k}/kv_cache/{q}"] for q in ("tokens", "logits"))
        got = {p: (self.job.results[f"{k}/{p}/tokens"], self.job.results[f"{k}/{p}/logits"]) for p, _ in paths}
        expected = {}          # per path: (tokens, steps) it must have produced
        for p, _ in paths:
            tokens, logits = got[p]
            if self.dtype == "float64":
                expected[p] = (ref_tokens, ref_logits.shape[1])
            else:
                expected[p] = own_choices(c, logits)
        if self.dtype != "float64":
            same_tokens = self.same[0].results[f"{k}/kv_cache/tokens"]
        compared_until = {}
        steps = max([ref_logits.shape[1]] + [_steps(got[p][1]) for p, _ in paths])
        for s in range(steps):
            for p, shown in paths:
                tokens, logits = got[p]
                exp_tokens, exp_steps = expected[p]
                if s >= min(_steps(logits), exp_steps):
                    continue
                key = f"{k}/{p}/logits"
                if s < ref_logits.shape[1] and p not in compared_until:
                    fed = [_pad(tokens, s)[:, :s], _pad(ref_tokens, s)[:, :s]]
                    if self.dtype != "float64":
                        fed.append(_pad(same_tokens, s)[:, :s])
                    if all(np.array_equal(fed[0], f) for f in fed[1:]):
                        row = check_rel(TIER, "generate", f"{label}: logits ({shown})", logits[:, s],
                                        ref_logits[:, s], self.gen_bound(k, s), step=s)
                        self.add(row, f"{key}@{s}", True, logits)
                    else:   # from here on the runs continue different sequences
                        compared_until[p] = s
                        why = ("a float32 near-tie: its tokens follow from its own logits, checked in "
                               "the tokens rows" if self.dtype != "float64" and fed[0].shape == fed[1].shape
                               else "see the tokens rows")
                        self.add(Row(TIER, "generate", f"{label}: logits ({shown})", s, verdict="info",
                                     note=f"the tokens fed before step {s} differ from reference/'s "
                                          f"float64 ones ({why}): later logits not compared"))
                what = "tokens" if self.dtype == "float64" else "tokens (as its own logits pick)"
                row = check_exact(TIER, "generate", f"{label}: {what} ({shown})", _pad(tokens, s + 1)[:, s],
                                  _pad(exp_tokens, s + 1)[:, s], step=s)
                self.add(row, f"{k}/{p}/tokens@{s}")
        for p, shown in paths:
            tokens, logits = got[p]
            exp_tokens, exp_steps = expected[p]
            n = _steps(logits)
            row = check_exact(TIER, "generate", f"{label}: steps ({shown})", np.int64(n), np.int64(exp_steps))
            if row.failed:
                row.note = f"{n} steps, expected {exp_steps} ({why_steps(c, exp_steps)})"
            self.add(row, f"{k}/{p}/steps")
            width = np.shape(tokens)[1] if np.ndim(tokens) == 2 else -1
            if np.ndim(tokens) != 2 or np.shape(tokens)[0] != len(c["prompts"]) or width > n:
                self.add(fail_row(TIER, "generate", f"{label}: tokens ({shown})",
                                  f"tokens of shape {np.shape(tokens)} for {len(c['prompts'])} prompts "
                                  f"and {n} steps"))

    def gen_bound(self, k, s):
        """Step s's logits bound; in float32 from the reference runs that fed the float64 tokens."""
        if self.dtype == "float64":
            return self.tol["semantic.generate.logits" if self.backend == ORACLE else "backend.float64"]["value"]
        o = self.oracle.results[f"{k}/kv_cache/logits"]
        fed = _pad(self.oracle.results[f"{k}/kv_cache/tokens"], s)[:, :s]
        errors = []
        for run in self.same:
            r, t = run.results.get(f"{k}/kv_cache/logits"), run.results.get(f"{k}/kv_cache/tokens")
            if r is None or r.ndim != 3 or r.shape[1] <= s or not np.array_equal(_pad(t, s)[:, :s], fed):
                continue
            errors.append(normwise(r[:, s], o[:, s])[1])
        e = max(errors, default=math.inf)
        return self.k * e + self.floor if math.isfinite(e) else self.floor


def entry_of(row):
    """The tolerance entry that governs a fresh row (by its key and backend), None for rows that
    take none (crashes, dtype notes, steps, info). float32 rel rows: backend.k (bound k * err + floor)."""
    key, backend = row.key, row.backend or ORACLE
    if not key:
        return None
    base = key.split("@")[0]
    part = part_of(base)
    if part.startswith("init"):
        return "semantic.init"
    if part.startswith("get_batch"):
        return "semantic.get_batch"
    if part.startswith("lr_at"):
        return "semantic.lr_at"
    if base.endswith("/tokens") or base.endswith("/steps"):
        return "semantic.generate.tokens"
    if base.endswith("/trajectory/lr"):
        return "semantic.trajectory.lr"
    if not backend.endswith("float64"):
        return "backend.k"
    if backend != ORACLE:
        return "backend.float64"
    if base.endswith("/logits"):
        return "semantic.generate.logits"
    for part_, entry in (("/step0/activations/", "semantic.activations"), ("/step0/loss", "semantic.loss"),
                         ("/step0/grads/", "semantic.grads"), ("/params_after_", "semantic.trajectory.params"),
                         ("/trajectory/loss", "semantic.trajectory.loss"),
                         ("/trajectory/grad_norm", "semantic.trajectory.grad_norm")):
        if part_ in base:
            return entry
    return None


def _at(a, i):
    if a is None or i is None:
        return a
    a = np.asarray(a)
    return a[i] if a.ndim >= 1 and len(a) > i else None


def _steps(logits):
    return np.shape(logits)[1] if np.ndim(logits) == 3 else 0


def _pad(tokens, width):
    """(B, >= width) int64: the tokens, padded with -1 (a finished row's later slots)."""
    t = np.asarray(tokens)
    if t.ndim != 2:
        return np.full((0, width), -1, np.int64)
    if t.shape[1] >= width:
        return t
    return np.concatenate([t, np.full((t.shape[0], width - t.shape[1]), -1, t.dtype)], axis=1)


def own_choices(c, logits):
    """(tokens (B, steps) padded with -1, steps): what generate must have produced given its own
    step logits (B, S, V): reference/sampling.py's choice at each step from those logits and the
    same u stream, rows ending at the stop token, the batch at n_tokens, the room to block_size or
    once every row has stopped. Exact in float32 too: the choice is the same arithmetic on the same
    numbers, so no near-tie can split them."""
    choose = load_reference().sampling.choose
    kw = c["kwargs"]
    temperature, stop = kw["temperature"], kw.get("stop_token")
    B, limit = len(c["prompts"]), min(c["n_tokens"], c["room"])
    rng = np.random.Generator(np.random.PCG64(kw["seed"])) if kw.get("seed") is not None else None
    logits = np.asarray(logits)
    available = _steps(logits) if logits.ndim == 3 and logits.shape[0] == B else 0
    new, steps = [[] for _ in range(B)], limit
    for s in range(min(available, limit)):
        u = rng.random(B) if temperature != 0 else [None] * B
        for b in range(B):
            if not (new[b] and new[b][-1] == stop):
                new[b].append(choose(logits[b, s], temperature, kw.get("top_k"), kw.get("top_p"), u[b]))
        if stop is not None and all(r and r[-1] == stop for r in new):
            steps = s + 1
            break
    width = max(map(len, new), default=0)
    return np.array([r + [-1] * (width - len(r)) for r in new], dtype=np.int64).reshape(B, width), steps


def why_steps(c, steps):
    """Why a generation has `steps` steps, in words."""
    stop = c["kwargs"].get("stop_token")
    if stop is not None and steps < min(c["n_tokens"], c["room"]):
        return f"every row has produced stop token {stop} by step {steps - 1}"
    if c["n_tokens"] < c["room"]:
        return f"n_tokens={c['n_tokens']}, below the room of {c['room']} left to block_size"
    return f"the longest prompt reaches block_size after {c['room']} steps (n_tokens={c['n_tokens']})"
