"""Timing of full training iterations: impl/gpt2.py (and reference/, and PyTorch eager) in float32.

One timed iteration is impl's own training step, as its `train` command does it:
``get_batch`` -> ``forward`` -> ``backward`` -> ``adamw_step`` (global-norm clipping + AdamW) with
``lr_at(step)``, on random tokens of the config's vocabulary (no dataset needed). PyTorch's step is
the one the oracle tests use (harness/measure/oracle.py: transformers' GPT2LMHeadModel, eager attention, no
dropout, ``torch_adamw`` + ``torch_train_step``), fed by the same ``get_batch``.

Each implementation runs in its own worker process (``scripts/bench.py --worker NAME --one CONFIG``)
that reads commands on stdin and answers one JSON line each, so the parent can interleave blocks
(ours, PyTorch, ours, ...) on the same machine while each worker's peak RSS (ru_maxrss is a
process-wide peak) belongs to it alone. Nothing here pins the BLAS: numpy uses OpenBLAS' default
threads, torch its default threads.

FLOPs are counted analytically from the matmuls of one step (`matmuls`): forward 2*M*K*N per matmul,
backward two matmuls of the same size per forward matmul (input and weight gradients); the full
(not causally halved) attention, as nanoGPT's estimate does; element-wise work is not counted.
"""
import importlib
import json
import math
import os
import resource
import statistics
import sys
import time

import numpy as np

CONFIGS = {
    # nanoGPT's baby GPT (config/train_shakespeare_char.py)
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, batch_size=12),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, batch_size=8),
    # two blocks of GPT-2 124M at its widths, with its 50257-token vocabulary
    "gpt2-layer": dict(n_layer=2, n_head=12, n_embd=768, block_size=256, vocab_size=50257, batch_size=4),
}
HPARAMS = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000, weight_decay=0.1,
               beta1=0.9, beta2=0.99, eps=1e-8, grad_clip=1.0)
DATA_TOKENS = 100_000
SEED = 1337
SGEMM_N = 2048        # the ceiling: a square float32 matmul this big, best of a few
WORKERS = ("impl", "torch", "reference")


def model_config(name):
    return {k: v for k, v in CONFIGS[name].items() if k != "batch_size"}


# ----------------------------------------------------------------------------- analytic counts

def matmuls(cfg, B):
    """The matmuls of one training step as (phase, layer type, batch, M, K, N), (M,K)@(K,N) each."""
    T, C, NH, V, L = cfg["block_size"], cfg["n_embd"], cfg["n_head"], cfg["vocab_size"], cfg["n_layer"]
    HS, BT = C // NH, B * T
    fwd = [("attn.c_attn", 1, BT, C, 3 * C), ("attn.scores", B * NH, T, HS, T), ("attn.att@v", B * NH, T, T, HS),
           ("attn.c_proj", 1, BT, C, C), ("mlp.c_fc", 1, BT, C, 4 * C), ("mlp.c_proj", 1, BT, 4 * C, C)] * L
    fwd.append(("lm_head", 1, BT, C, V))
    out = [("forward", *m) for m in fwd]
    for layer, b, M, K, N in reversed(fwd):
        out += [("backward", layer, b, M, N, K),     # d input  = d out @ W.T
                ("backward", layer, b, K, M, N)]     # d weight = input.T @ d out
    return out


def flops_per_iter(cfg, B):
    return sum(2 * b * M * K * N for _, _, b, M, K, N in matmuls(cfg, B))


def n_params(cfg):
    V, T, C, L = cfg["vocab_size"], cfg["block_size"], cfg["n_embd"], cfg["n_layer"]
    return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C


def activation_elements(cfg, B):
    """Elements of the canonical activations a training step keeps for backward (harness/spec/contract.py),
    plus the softmax probabilities of the loss: emb, per block ln_1, qkv, att, y, proj, res_1, ln_2,
    fc, gelu, proj, out; ln_f, logits, probs."""
    T, C, NH, V, L = cfg["block_size"], cfg["n_embd"], cfg["n_head"], cfg["vocab_size"], cfg["n_layer"]
    BT = B * T
    block = BT * C * (1 + 3 + 1 + 1 + 1 + 1 + 4 + 4 + 1 + 1) + B * NH * T * T
    return BT * C + L * block + BT * C + 2 * BT * V


def analytic_bytes(cfg, B, itemsize=4):
    """params + grads + AdamW m and v + cached activations, in bytes."""
    return itemsize * (4 * n_params(cfg) + activation_elements(cfg, B))


# ----------------------------------------------------------------------------- measuring

def sgemm_gflops(n=SGEMM_N, tries=5):
    """The machine's float32 matmul ceiling: best GFLOP/s of an n x n x n matmul (default threads)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    best = min(_seconds(lambda: np.matmul(a, b, out=out)) for _ in range(tries))
    return 2 * n ** 3 / best / 1e9


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: kB


def current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class NumpyStep:
    """One contract module's training step (impl/gpt2.py or reference/), float32 on numpy."""

    def __init__(self, module, cfg, batch_size, data):
        self.m, self.cfg, self.B, self.data = module, cfg, batch_size, data
        self.params, self.state, self.step = module.init(cfg, SEED, np, "float32"), {}, 0
        self.rng = np.random.Generator(np.random.PCG64([SEED, 1]))

    def __call__(self, phases=None):
        """One iteration; with a `phases` dict, add each phase's seconds to it."""
        m, t = self.m, [time.perf_counter()]
        x, y = m.get_batch(self.data, self.B, self.cfg["block_size"], self.rng)
        t.append(time.perf_counter())
        loss, cache = m.forward(self.params, x, y, self.cfg)
        t.append(time.perf_counter())
        grads = m.backward(self.params, cache, self.cfg)
        t.append(time.perf_counter())
        del cache
        m.adamw_step(self.params, grads, self.state, self.step, m.lr_at(self.step, HPARAMS), HPARAMS)
        t.append(time.perf_counter())
        self.step += 1
        if phases is not None:
            for name, a, b in zip(("get_batch", "forward", "backward", "adamw_step"), t, t[1:]):
                phases[name] = phases.get(name, 0.0) + b - a
        return loss


class TorchStep:
    """PyTorch eager: transformers' GPT-2 + torch AdamW, the oracle tests' step, float32, default threads."""

    def __init__(self, module, cfg, batch_size, data):
        from nanoproof.measure import oracle
        self.oracle, self.get_batch = oracle, module.get_batch
        self.cfg, self.B, self.data, self.step = cfg, batch_size, data, 0
        self.model = oracle.random_gpt2(cfg, SEED)
        self.opt = oracle.torch_adamw(self.model, HPARAMS)
        self.rng = np.random.Generator(np.random.PCG64([SEED, 1]))

    def __call__(self):
        x, y = self.get_batch(self.data, self.B, self.cfg["block_size"], self.rng)
        loss = self.oracle.torch_train_step(self.model, self.opt, x, y, self.step, HPARAMS)[0]
        self.step += 1
        return loss


def load_module(worker, impl_path):
    from nanoproof.spec.contract import load_impl, load_reference
    return load_reference() if worker == "reference" else load_impl(impl_path)


def block(step, iters):
    """Seconds of each of `iters` iterations."""
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        loss = step()
        out.append(time.perf_counter() - t0)
    if not math.isfinite(loss):
        raise RuntimeError(f"the training loss is {loss}")
    return out


def profile(module, cfg, B, data, iters):
    """Where a step's time goes. Each phase's wall time (median of `iters` iterations) is split as
      matmul      the phase's matmuls (analytic list, `matmuls`) each timed alone on contiguous random
                  float32 operands of the same shapes (best of 5 calls: the work itself), summed;
      python      the same phase of a tiny model (same n_layer and n_head, head size 1, T = 2, B = 1,
                  V = 2): what dispatching the phase's Python and numpy calls costs without the work;
      elementwise the rest (phase - matmul - python): element-wise ops, reductions, copies, and what
                  a matmul loses in the full step against alone (layouts, cache)."""
    per_phase = _phase_medians(NumpyStep(module, cfg, B, data), iters)
    tiny_cfg = dict(cfg, n_embd=cfg["n_head"], block_size=2, vocab_size=2)
    tiny = _phase_medians(NumpyStep(module, tiny_cfg, 1, np.zeros(64, np.uint16)), max(iters, 20))
    by_layer, by_phase = {}, {}
    rng = np.random.default_rng(0)
    for phase, layer, b, M, K, N in matmuls(cfg, B):
        a_, b_ = (rng.standard_normal(s, dtype=np.float32) for s in ((b, M, K), (b, K, N)))
        a_, b_ = (a_[0], b_[0]) if b == 1 else (a_, b_)
        np.matmul(a_, b_)
        s = min(_seconds(lambda: np.matmul(a_, b_)) for _ in range(5))
        by_layer[layer] = by_layer.get(layer, 0.0) + s
        by_phase[phase] = by_phase.get(phase, 0.0) + s
    rows = {}
    for phase, total in per_phase.items():
        mm, py = by_phase.get(phase, 0.0), tiny[phase]
        rows[phase] = {"total_ms": 1e3 * total, "matmul_ms": 1e3 * mm, "python_ms": 1e3 * py,
                       "elementwise_ms": 1e3 * max(0.0, total - mm - py)}
    return {"phases": rows, "matmul_by_layer_ms": {k: 1e3 * v for k, v in by_layer.items()}}


def _phase_medians(step, iters):
    for _ in range(2):
        step()
    samples = []
    for _ in range(iters):
        phases = {}
        step(phases)
        samples.append(phases)
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def worker(name, config_name, impl_path, warmup, malloc="keep", threads=None):
    """A worker process: build one implementation's step on `config_name`, then answer commands read
    from stdin, one JSON line each: `time N` (seconds of N iterations), `profile N`, `memory` (RSS in
    MiB: at start after imports, and the peak so far)."""
    cfg, B = model_config(config_name), CONFIGS[config_name]["batch_size"]
    from nanoproof import env
    if malloc == "keep":
        env.keep_freed_memory()
    if threads:
        env.limit_blas_threads(threads)
    module = load_module("impl" if name == "torch" else name, impl_path)
    data = np.random.Generator(np.random.PCG64(SEED)).integers(0, cfg["vocab_size"], DATA_TOKENS, dtype=np.uint16)
    if name == "torch":
        importlib.import_module("nanoproof.measure.oracle")   # torch's libraries belong to the start, not the model
        if threads:
            import torch
            torch.set_num_threads(threads)
    base = current_rss_mb()
    step = (TorchStep if name == "torch" else NumpyStep)(module, cfg, B, data)
    block(step, warmup)
    reply = lambda doc: print(json.dumps(doc), flush=True)
    reply({"ready": name})
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "time":
            reply({"seconds": block(step, int(arg[0]))})
        elif cmd == "profile":
            reply(profile(module, cfg, B, data, int(arg[0])))
        elif cmd == "memory":
            reply({"base_rss_mb": base, "peak_rss_mb": peak_rss_mb()})
        else:
            reply({"error": f"unknown command {line.strip()!r}"})


# ----------------------------------------------------------------------------- the parent

class Worker:
    """A worker process (`scripts/bench.py --worker NAME --one CONFIG`), spoken to one line at a time."""

    def __init__(self, script, name, config_name, impl_path, warmup, malloc, threads=None):
        import subprocess
        self.name, self.config_name = name, config_name
        cmd = [sys.executable, str(script), "--worker", name, "--one", config_name, "--impl", str(impl_path),
               "--warmup", str(warmup), "--malloc", malloc] + (["--threads", str(threads)] if threads else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.read()                                                         # {"ready": name}

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            raise RuntimeError(f"bench worker {self.name!r} on config {self.config_name!r} exited "
                               f"(status {rc}) without answering; its error is above")
        doc = json.loads(line)
        if "error" in doc:
            raise RuntimeError(f"bench worker {self.name!r}: {doc['error']}")
        return doc

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def summarize(samples_ms):
    return {"min": min(samples_ms), "median": statistics.median(samples_ms), "max": max(samples_ms)}


def run_config(script, config_name, names, repeats, iters, warmup, impl_path, profile_iters=0,
               reference_repeats=1, tick=lambda: None, malloc="keep", threads=None):
    """Interleaved blocks of `iters` iterations, `repeats` times: each repeat measures the sgemm ceiling
    (here, in the parent), then one block of each worker in turn (the reference in the first
    `reference_repeats` repeats only). Returns a JSON-able dict of the results for this config."""
    cfg, B = model_config(config_name), CONFIGS[config_name]["batch_size"]
    flops = flops_per_iter(cfg, B)
    workers = {}
    try:
        for name in names:                           # one at a time: warm-ups do not overlap
            workers[name] = Worker(script, name, config_name, impl_path, warmup, malloc, threads)
        block_ms = {name: [] for name in names}
        ceilings = []
        for r in range(repeats):
            ceilings.append(sgemm_gflops())
            for name, w in workers.items():
                if name == "reference" and r >= reference_repeats:
                    continue
                block_ms[name].append(1e3 * statistics.median(w.ask(f"time {iters}")["seconds"]))
                tick()
        memory = {name: w.ask("memory") for name, w in workers.items()}
        prof = workers["impl"].ask(f"profile {profile_iters}") if profile_iters and "impl" in workers else None
    finally:
        for w in workers.values():
            w.close()
    ceiling = statistics.median(ceilings)
    result = {"config": CONFIGS[config_name], "flops_per_iter": flops, "tokens_per_iter": B * cfg["block_size"],
              "analytic_mb": analytic_bytes(cfg, B) / 2 ** 20, "sgemm_gflops": summarize(ceilings),
              "impls": {}}
    for name, ms in block_ms.items():
        med = statistics.median(ms)
        result["impls"][name] = {
            "ms_per_iter": summarize(ms), "blocks_ms": ms, "tokens_per_s": B * cfg["block_size"] / med * 1e3,
            "gflops": flops / med / 1e6, "fraction_of_sgemm": flops / med / 1e6 / ceiling, **memory[name]}
    if "torch" in block_ms and "impl" in block_ms:
        # paired: each repeat's ours/torch, then the median over repeats
        ratios = [a / b for a, b in zip(block_ms["impl"], block_ms["torch"])]
        result["ratio_impl_over_torch"] = summarize(ratios)
    if prof is not None:
        result["profile"] = prof
    return result
