"""scripts/bench.py: a smoke run (no timing is asserted) and its analytic FLOP count."""
import json
import subprocess
import sys

import pytest

from nanoproof.measure import bench
from nanoproof.spec.contract import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "bench.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)


def test_smoke_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    r = run("--configs", "baby", "--iters", "2", "--repeats", "1", "--warmup", "1", "--no-torch",
            "--json", str(out))
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    for column in ("ms/iter", "tokens/s", "GFLOP/iter", "GFLOP/s", "of", "sgemm", "peak", "analytic"):
        assert column in header, (column, header)
    rows = {line.split()[1]: line.split() for line in r.stdout.splitlines()[1:] if line.startswith("  baby")}
    assert set(rows) == {"impl", "reference"}
    doc = json.loads(out.read_text())
    res = doc["results"]["baby"]
    assert res["flops_per_iter"] == bench.flops_per_iter(bench.model_config("baby"), 12)
    for name in ("impl", "reference"):
        d = res["impls"][name]
        ms = d["ms_per_iter"]
        assert 0 < ms["min"] <= ms["median"] <= ms["max"]
        # the printed row carries the JSON's numbers (the table is made from the results, not apart)
        printed = rows[name]
        assert float(printed[printed.index("impl" if name == "impl" else "reference") + 1]) == \
            pytest.approx(ms["median"], rel=0.01, abs=0.06)
        # physically possible: no model step beats the machine's own sgemm rate by half again
        assert 0 < d["fraction_of_sgemm"] < 1.5, d
        assert d["peak_rss_mb"] >= d["base_rss_mb"] > 0
    assert "ratio_impl_over_torch" not in res
    assert not list(tmp_path.glob("*.tmp")), "the JSON is written atomically"


def test_missing_impl_is_a_usage_error(tmp_path):
    r = run("--impl", str(tmp_path / "nope.py"), "--no-torch")
    assert r.returncode == 2 and "nope.py: no such file" in r.stderr


@pytest.mark.parametrize("name", list(bench.CONFIGS))
def test_flops_match_nanogpts_estimate(name):
    """nanoGPT's estimate_mfu: 6 N + 12 L C T FLOPs per token, N the parameters without wpe (wte counts
    once, as the lm_head's matmul). Our count is matmuls only, so leave out N's biases and LayerNorms."""
    cfg, B = bench.model_config(name), bench.CONFIGS[name]["batch_size"]
    C, T, L, V = cfg["n_embd"], cfg["block_size"], cfg["n_layer"], cfg["vocab_size"]
    n_matrices = V * C + L * (C * 3 * C + C * C + C * 4 * C + 4 * C * C)
    assert bench.flops_per_iter(cfg, B) == (6 * n_matrices + 12 * L * C * T) * B * T


def test_profile_splits_each_phase(impl):
    import numpy as np
    cfg = dict(bench.model_config("baby"), n_layer=1)
    data = np.arange(1000, dtype=np.uint16) % cfg["vocab_size"]
    prof = bench.profile(impl, cfg, 2, data, iters=2)
    assert set(prof["phases"]) == {"get_batch", "forward", "backward", "adamw_step"}
    # matmuls are attributed to the phases that make them: none in get_batch or adamw_step
    assert prof["phases"]["get_batch"]["matmul_ms"] == prof["phases"]["adamw_step"]["matmul_ms"] == 0
    assert prof["phases"]["forward"]["matmul_ms"] > 0 and prof["phases"]["backward"]["matmul_ms"] > 0
    assert set(prof["matmul_by_layer_ms"]) == {"attn.c_attn", "attn.scores", "attn.att@v", "attn.c_proj",
                                               "mlp.c_fc", "mlp.c_proj", "lm_head"}


@pytest.mark.parametrize("name", list(bench.CONFIGS))
def test_profiled_matmuls_are_the_analytic_flops(name):
    """The profiler's list of matmuls (bench.matmuls) and the FLOP count (bench.flops_per_iter) are
    two separate derivations: their FLOPs must agree, and backward must do twice forward's (dx and
    dW for every forward matmul)."""
    cfg, B = bench.model_config(name), bench.CONFIGS[name]["batch_size"]
    flops = {}
    for phase, _, b, M, K, N in bench.matmuls(cfg, B):
        flops[phase] = flops.get(phase, 0) + 2 * b * M * K * N
    assert set(flops) == {"forward", "backward"}
    assert flops["backward"] == 2 * flops["forward"]
    assert flops["forward"] + flops["backward"] == bench.flops_per_iter(cfg, B)
