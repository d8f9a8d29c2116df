"""Shared fixtures: the implementation under test, the reference, and the shared files beside the repo."""
import os
from pathlib import Path

from nanoproof import env

# Pin the numerical environment (one BLAS thread, CUPY_TF32=0, ...) before anything imports numpy:
# the exact tier needs it, and a multi-threaded OpenBLAS that busy-waits on a loaded 2-core machine
# made single tests take minutes instead of seconds.
env.pin()

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from nanoproof.spec.contract import load_impl, load_reference  # noqa: E402

from nanoproof.paths import REPO_ROOT  # noqa: E402

VERIFY = REPO_ROOT / "scripts" / "verify.py"
# reference/ re-exported as a contract file (verify takes a file): the base of the tests' fakes and
# slips, each a correct GPT-2 but for its one trick (never a text edit of impl/gpt2.py)
REFERENCE_AS_CONTRACT = f"""\
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
import numpy as _np
import nanoproof.reference as _ref
from nanoproof.reference import init, forward, backward, adamw_step, lr_at, get_batch, generate
"""


def impl_path():
    """The implementation under test: NANOPROOF_IMPL if set, else impl/gpt2.py."""
    env_impl = os.environ.get("NANOPROOF_IMPL")
    return Path(env_impl).resolve() if env_impl else REPO_ROOT / "impl" / "gpt2.py"


def run_verify(impl, *args, env=None, timeout=600):
    """scripts/verify.py --impl IMPL ARGS in a subprocess (its exit status and output are the test)."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, str(VERIFY), "--impl", str(impl), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO_ROOT)


def last_line(proc):
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[-1] if lines else ""



# tiktoken must never download in tests: ../shared's cached GPT-2 BPE files, or the shipped copy
from nanoproof import env as _env  # noqa: E402
_env.tiktoken_cache()

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE (default dev; .ci/run sets ci).
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def impl():
    """The implementation under test: NANOPROOF_IMPL if set, else impl/gpt2.py."""
    return load_impl(impl_path())


def require(module, *names):
    """Skip, with the reason, a test of what an implementation offers beyond the contract (a weights
    loader, presets, a CLI) when the file under test (NANOPROOF_IMPL) does not offer it."""
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        pytest.skip(f"{getattr(module, '__file__', module)} has no {', '.join(missing)}: beyond the "
                    f"contract (harness/spec/contract.py), so not tested for this file")


@pytest.fixture(scope="session")
def ref():
    return load_reference()


@pytest.fixture(scope="session")
def tinyshakespeare(tmp_path_factory):
    """tiny Shakespeare as a text file: the copy shipped in golden/ (sha256 checked), decompressed."""
    from nanoproof.spec.corpus import tinyshakespeare_bytes
    path = tmp_path_factory.mktemp("tinyshakespeare") / "tinyshakespeare.txt"
    path.write_bytes(tinyshakespeare_bytes())
    return path


@pytest.fixture(scope="session")
def tiktoken_cache():
    """tiktoken's GPT-2 files, offline: ../shared's, or the copy shipped in golden/ (env.tiktoken_cache)."""
    from nanoproof import env
    folder = env.tiktoken_cache()
    if folder is None:
        pytest.skip("tiktoken's GPT-2 files are neither in TIKTOKEN_CACHE_DIR, ../shared nor golden/; "
                    "tests never download them")
    return Path(folder)
