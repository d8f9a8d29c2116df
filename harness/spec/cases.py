"""The golden cases: everything that decides what a golden file holds, as data.

Two kinds:

- trajectory cases (`tiny`, `gpt2-vocab`): a fixed token stream, a seeded init, K steps of training
  on batches drawn by the reference sampler; checked in the semantic, backend and exact tiers.
- the score case (`shakespeare-char`): val loss of a float32 run of the baby GPT on char-level tiny
  Shakespeare, recorded for an ensemble of seeds so the noise band is known; checked in the score tier;
- the generate case (`generate`): the token ids and the logits of each step of `generate` on a fixed
  random checkpoint and batch of prompts, greedy and sampled; checked in the semantic and backend
  tiers, each with and without the KV cache.

A golden file records its case (asdict) and verification refuses a file whose case differs from the
one defined here (regenerate it: scripts/regen_golden.py --case NAME --force).
"""
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nanoproof.paths import GOLDEN_DIR

# a fixed short text for the gpt2-vocab case (Shakespeare, sonnet 18; public domain)
SONNET_18 = (
    "Shall I compare thee to a summer's day?\n"
    "Thou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\n"
    "And summer's lease hath all too short a date;\n"
    "Sometime too hot the eye of heaven shines,\n"
    "And often is his gold complexion dimm'd;\n"
)


@dataclass(frozen=True)
class TrajectoryCase:
    name: str
    description: str
    config: dict
    hparams: dict
    init_seed: int          # init(config, init_seed, ...)
    sampler_seed: int       # batches: get_batch(tokens, batch_size, block_size, Generator(PCG64(sampler_seed)))
    batch_size: int
    steps: int              # K: length of the trajectory
    checkpoints: tuple      # params are recorded after these many updates
    backend_steps: int      # the backend tier checks the first few steps only
    lr_steps: int           # lr_at is recorded for steps 0 .. lr_steps-1
    data: dict = field(default_factory=dict)  # how the token stream is made
    kind: str = "trajectory"

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class ScoreCase:
    name: str
    description: str
    config: dict
    hparams: dict
    batch_size: int
    seeds: tuple            # the ensemble: init seed = s, training batches PCG64([s, 1]), eval PCG64([s, 2])
    long_steps: int         # the recorded runs' length
    eval_interval: int      # val loss recorded every eval_interval updates (and at long_steps)
    eval_iters: int         # batches per evaluation
    short_steps: int        # verify's run: val loss after this many updates (a multiple of eval_interval)
    verify_seed: int        # the seed verify runs (one of seeds)
    data: dict = field(default_factory=dict)
    kind: str = "score"

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class GenerateCase:
    name: str
    description: str
    config: dict
    init_seed: int          # params: init(config, init_seed, numpy, float64), matrices x weight_scale,
    weight_scale: float     # every vector (LayerNorm gains, biases) + N(0, vector_std) drawn in
    vector_seed: int        # state-dict order from Generator(PCG64(vector_seed))
    vector_std: float
    prompts: tuple          # token-id tuples of different lengths (the batch is left-padded)
    n_tokens: int           # asked for; generation stops earlier at block_size
    runs: dict              # name -> generate's keyword arguments (seed: rng = Generator(PCG64(seed)))
    kind: str = "generate"

    def as_dict(self):
        return asdict(self)


TINY = TrajectoryCase(
    name="tiny",
    description="synthetic tokens (a noisy counting sequence), 2 layers, width 16, K = 24 steps",
    config={"vocab_size": 48, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16},
    # warmup 0-3, cosine decay 4-16, flat min_lr from 17: every regime of the schedule is in the
    # trajectory; grad_clip sits between the step norms (0.99 .. 1.71, none within 0.4% of it), so
    # 13 of the 24 steps clip and 11 do not
    hparams={"learning_rate": 1e-2, "min_lr": 1e-3, "warmup_iters": 4, "lr_decay_iters": 16,
             "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.4},
    init_seed=1234,
    sampler_seed=42,
    batch_size=4,
    steps=24,
    checkpoints=(1, 3, 24),
    backend_steps=3,
    lr_steps=24,
    data={"kind": "synthetic", "seed": 7, "length": 2000, "jump_probability": 0.25},
)

GPT2_VOCAB = TrajectoryCase(
    name="gpt2-vocab",
    description="GPT-2's 50257-token vocabulary on the GPT-2 tokenisation of a fixed short text, "
                "1 layer, width 4, K = 3 steps (narrow: every (V, C) tensor is 50257 x 4)",
    config={"vocab_size": 50257, "block_size": 4, "n_layer": 1, "n_head": 2, "n_embd": 4},
    # norms 1.70, 1.60, 1.57: steps 0 and 1 clip, step 2 does not
    hparams={"learning_rate": 3e-3, "min_lr": 3e-4, "warmup_iters": 1, "lr_decay_iters": 5,
             "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.58},
    init_seed=2024,
    sampler_seed=43,
    batch_size=2,
    steps=3,
    checkpoints=(3,),
    backend_steps=3,
    lr_steps=8,
    data={"kind": "gpt2-text", "text": SONNET_18, "encoding": "gpt2 (tiktoken, encode_ordinary)"},
)

SHAKESPEARE_CHAR = ScoreCase(
    name="shakespeare-char",
    description="the baby GPT (4 layers, 4 heads, width 128, block 64) on char-level tiny "
                "Shakespeare in float32: val loss of a seed ensemble",
    config={"vocab_size": 65, "block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128},
    hparams={"learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 10, "lr_decay_iters": 300,
             "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "grad_clip": 1.0},
    batch_size=12,
    seeds=tuple(range(8)),
    long_steps=300,
    eval_interval=20,
    eval_iters=8,
    short_steps=80,
    verify_seed=0,
    data={"kind": "tinyshakespeare-char", "path": "../shared/data/tinyshakespeare.txt"},
)

GENERATE = GenerateCase(
    name="generate",
    description="text generation: three prompts of different lengths (left-padded), 2 layers, width "
                "16, greedy (generate's defaults) and sampled (temperature, top-k, top-p together and "
                "alone, a stop token), until block_size; each with and without the KV cache",
    config={"vocab_size": 40, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16},
    init_seed=3,
    # 10x GPT-2's init std (as tests/test_oracles.py): attention and the next-token distribution far
    # from uniform, so a sampling slip moves tokens; the greedy top-1/top-2 logit gap is >= 0.0258
    # (0.9% of the largest logit, 2.85), ~2e4 times float32's logit error (<= 1.4e-6): float32 picks the
    # same ids
    weight_scale=10.0,
    # LayerNorm gains 1 + N(0, 0.1) and biases N(0, 0.1), not init's 1 and 0: a bias added with the
    # wrong sign, or LayerNorm's xhat taken for its output, changes the logits (mutmut found both
    # invisible with unit gains and zero biases)
    vector_seed=5,
    vector_std=0.1,
    prompts=((3, 14, 15, 9, 26), (5, 35), (8, 9, 7, 9)),
    n_tokens=20,              # 16 - 5 = 11 steps: the batch stops at block_size
    # greedy by generate's defaults (no keyword); temperatures other than 1; top-k and top-p each
    # alone and together; stop token 4 ends row 1 after 3 tokens and row 0 after 5 while row 2 runs
    # to block_size (finished rows keep feeding their stop token: their later logits are checked too)
    runs={"greedy": {},
          "sampled": {"temperature": 0.8, "top_k": 12, "top_p": 0.8, "seed": 9},
          "top_k": {"temperature": 1.3, "top_k": 5, "seed": 8},
          "top_p": {"temperature": 0.7, "top_p": 0.6, "seed": 9},
          "stop": {"temperature": 1.0, "stop_token": 4, "seed": 12}},
)

CASES = {c.name: c for c in (TINY, GPT2_VOCAB, SHAKESPEARE_CHAR, GENERATE)}
TRAJECTORY_CASES = tuple(n for n, c in CASES.items() if c.kind == "trajectory")
SCORE_CASES = tuple(n for n, c in CASES.items() if c.kind == "score")
GENERATE_CASES = tuple(n for n, c in CASES.items() if c.kind == "generate")


def golden_path(name, golden_dir=None):
    return Path(golden_dir or GOLDEN_DIR) / f"{name}.h5"


def regen_command(name):
    return f"python scripts/regen_golden.py --case {name} --force"


class CaseDataError(Exception):
    """A case's data cannot be made here (e.g. tiny Shakespeare or tiktoken's files are absent)."""


def make_tokens(case):
    """The case's token stream as a 1-D int64 numpy array (trajectory cases only)."""
    import numpy as np
    d = case.data
    if d["kind"] == "synthetic":
        rng = np.random.Generator(np.random.PCG64(d["seed"]))
        V, n = case.config["vocab_size"], d["length"]
        jumps = rng.random(n) < d["jump_probability"]
        offsets = np.where(jumps, rng.integers(0, V, n), 1)
        return (np.cumsum(offsets) % V).astype(np.int64)
    if d["kind"] == "gpt2-text":
        from nanoproof import env
        env.tiktoken_cache()
        try:
            import tiktoken
            enc = tiktoken.get_encoding("gpt2")
        except Exception as exc:
            raise CaseDataError(f"case {case.name}: tiktoken's gpt2 encoding is unavailable "
                                f"({type(exc).__name__}: {exc})") from None
        return np.array(enc.encode_ordinary(d["text"]), dtype=np.int64)
    raise CaseDataError(f"case {case.name}: unknown data kind {d['kind']!r}")


def shakespeare_splits():
    """(train, val, sha256) of char-level tiny Shakespeare: uint16 token arrays made in memory by
    harness/spec/corpus.py (the rules scripts/prepare_data.py also follows) from the copy shipped in
    golden/ (sha256 checked), and the sha256 of the text's bytes. Raises CaseDataError when that copy
    is missing or damaged."""
    import hashlib
    from nanoproof.spec import corpus
    try:
        raw = corpus.tinyshakespeare_bytes()
        train, val, _ = corpus.char_splits(raw.decode("utf-8"), what=str(corpus.TINYSHAKESPEARE_XZ))
    except corpus.DataError as exc:
        raise CaseDataError(f"tiny Shakespeare: {exc}") from None
    return train, val, hashlib.sha256(raw).hexdigest()


def expected_datasets(case):
    """Every dataset a correct golden file of `case` must hold, in the order regeneration writes
    them (golden/README.md). Optional groups (cupy-*) and the float32 tensors stored beside the
    numpy-float32 error table are extras a file may hold besides these."""
    from nanoproof.spec.contract import activation_names
    from nanoproof.reference.model import param_shapes
    if case.kind == "score":
        return ["val_loss/steps", "val_loss/seeds", "numpy-float32/val_loss"]
    params = list(param_shapes(case.config))
    errors = ["numpy-float32/errors/names", "numpy-float32/errors/values"]
    if case.kind == "generate":
        return (["inputs/prompts"] + [f"params0/{p}" for p in params]
                + [f"numpy-float64/{run}/{q}" for run in case.runs for q in ("tokens", "logits")]
                + errors)
    o = "numpy-float64"
    return (["inputs/tokens", "inputs/x", "inputs/y", "schedule/lr_at"]
            + [f"params0/{p}" for p in params]
            + [f"{o}/step0/activations/{a}" for a in activation_names(case.config["n_layer"])]
            + [f"{o}/step0/loss"]
            + [f"{o}/step0/grads/{p}" for p in reversed(params)]
            + [f"{o}/trajectory/{q}" for q in ("loss", "lr", "grad_norm")]
            + [f"{o}/trajectory/params_after_{k}/{p}" for k in case.checkpoints for p in params]
            + errors)
