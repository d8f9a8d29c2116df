"""verify passes reference/ and impl/gpt2.py under every OpenBLAS kernel this machine can run.

float32 results move with the CPU's BLAS kernel, so the backend tier bounds each float32 error by
k x reference/'s own error run live on the same kernel + floor (harness/judge/tiers.py; k and floor are
calibrated over the kernels by `scripts/calibrate.py --only backend`). This runs scripts/verify.py
(semantic and backend tiers, every case but the score case) in a subprocess with OPENBLAS_CORETYPE
set, once per kernel, on reference/ re-exported as a contract file and on the implementation under
test (NANOPROOF_IMPL, else impl/gpt2.py), and requires a pass. Each test first checks, in a tiny
subprocess with threadpoolctl, that the requested kernel is the one that runs, and skips with the
reason where it is not (numpy's BLAS is not OpenBLAS, the CPU cannot run that kernel, an OpenBLAS
build without it). ~1.5 s per verify run, ~15 s in all.
"""
import functools
import importlib.util
import os
from pathlib import Path

import pytest

from conftest import REFERENCE_AS_CONTRACT, impl_path, run_verify
from nanoproof.paths import REPO_ROOT
CASE_ARGS = ("--case", "tiny", "--case", "gpt2-vocab", "--case", "generate")   # all but the score case
TIMEOUT = 600


def _calibrate():
    """scripts/calibrate.py as a module: the one table of kernels (KERNELS), the CPU flags each
    needs, the names threadpoolctl reports for them, and the probe."""
    spec = importlib.util.spec_from_file_location("nanoproof_calibrate", REPO_ROOT / "scripts" / "calibrate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


calibrate = _calibrate()


@functools.lru_cache(maxsize=None)
def kernel_unavailable(kernel):
    """"" when OPENBLAS_CORETYPE=kernel makes numpy run that OpenBLAS kernel here, else why not."""
    return calibrate.probe_kernel(kernel)


def reference_contract(folder):
    """reference/ re-exported as a contract file (verify takes a file)."""
    path = Path(folder) / "reference_contract.py"
    path.write_text(REFERENCE_AS_CONTRACT)
    return path


@pytest.mark.parametrize("subject", ["reference", "impl"])
@pytest.mark.parametrize("kernel", list(calibrate.KERNELS))
def test_verify_passes_under_kernel(kernel, subject, tmp_path):
    why = kernel_unavailable(kernel)
    if why:
        pytest.skip(f"OpenBLAS kernel {kernel} not available here: {why}")
    impl = reference_contract(tmp_path) if subject == "reference" else impl_path()
    p = run_verify(impl, "--tier", "semantic", "--tier", "backend", *CASE_ARGS, "--require", "semantic",
                   "--require", "numpy-float32", env=dict(os.environ, OPENBLAS_CORETYPE=kernel), timeout=TIMEOUT)
    out = p.stdout + (f"\n[stderr]\n{p.stderr}" if p.stderr.strip() else "")
    assert p.returncode == 0, (f"verify failed on {subject} ({impl}) under OPENBLAS_CORETYPE={kernel} "
                               f"(exit {p.returncode}):\n{out[-6000:]}")
    assert "verify: OK" in p.stdout, out[-3000:]


def test_kernel_check_refuses_a_mismatch():
    """The check itself: a kernel reported under another name is a mismatch, Prescott's alias is not,
    and a kernel the CPU lacks the flags for is refused before anything runs it."""
    assert calibrate.kernel_mismatch("Haswell", "Haswell") == ""
    assert calibrate.kernel_mismatch("Prescott", "Katmai") == ""
    assert "SkylakeX kernel" in calibrate.kernel_mismatch("Haswell", "SkylakeX")
    assert "lacks avx512f" in calibrate.kernel_unavailable("SkylakeX", flags={"avx", "avx2", "fma", "pni"})
    assert calibrate.kernel_unavailable("Haswell", flags={"avx", "avx2", "fma", "pni"}) == ""
