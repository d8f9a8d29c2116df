"""The pinned numerical environment, and a description of the machine for provenance.

Bitwise reproducibility on one machine needs the BLAS to run single-threaded (a multithreaded
OpenBLAS may split a matmul's reduction differently from run to run) and needs this to be decided
before numpy loads its BLAS. So `pin()` must run before numpy is imported: every script calls it
first thing; this module imports only the standard library at import time.

    from nanoproof import env; env.pin()     # before `import numpy`
"""
import os
import platform
import sys

# set before numpy is imported; recorded in golden files and snapshots
PINNED = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "CUPY_TF32": "0",                      # no TF32 matmuls on the GPU
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # deterministic cuBLAS reductions
}


PINNED_IN_TIME = None  # set by pin(): whether the BLAS could still see the pinned variables


def pin():
    """Set PINNED in os.environ (overriding) and return whether it happened in time, i.e. before
    numpy was imported. Late pinning still sets the variables for child processes."""
    global PINNED_IN_TIME
    in_time = "numpy" not in sys.modules
    if PINNED_IN_TIME is None or not in_time:
        PINNED_IN_TIME = in_time if PINNED_IN_TIME is None else (PINNED_IN_TIME and in_time)
    os.environ.update(PINNED)
    return in_time


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory instead of handing it back to the OS. A numpy training
    step frees and reallocates its large temporaries every iteration; returned to the OS, each comes
    back as fresh zeroed pages, one page fault per 4 KiB (on the baby config: 27 000 faults, a quarter
    of the step's time; scripts/bench.py --malloc system shows it). Sets M_TRIM_THRESHOLD and
    M_MMAP_THRESHOLD to 1 GiB with mallopt; peak RSS is unchanged on the bench's configs. Returns
    whether it applied (False where libc is not glibc)."""
    import ctypes
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_TRIM_THRESHOLD, 1 << 30)) and bool(mallopt(M_MMAP_THRESHOLD, 1 << 30))


def tiktoken_cache():
    """Make tiktoken's GPT-2 BPE work offline (golden regeneration, data preparation, sampling and the
    tests never download) when the user has not set TIKTOKEN_CACHE_DIR: ../shared/tiktoken_cache
    beside a clone, else the GPT-2 files shipped xz-compressed in golden/tiktoken_gpt2/, unpacked
    once into .nanoproof/tiktoken_cache. Returns the folder in use, or None."""
    import lzma
    from nanoproof.paths import GOLDEN_DIR, IN_CLONE, REPO_ROOT, WORK_DIR, atomic_write_bytes
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    shared = REPO_ROOT.parent / "shared" / "tiktoken_cache"
    shipped = sorted((GOLDEN_DIR / "tiktoken_gpt2").glob("*.xz"))
    if IN_CLONE and shared.is_dir():
        folder = shared
    elif shipped:
        folder = WORK_DIR / ".nanoproof" / "tiktoken_cache"
        for f in shipped:   # tiktoken names each file by the sha1 of its URL: the names are kept
            if not (folder / f.stem).is_file():
                atomic_write_bytes(folder / f.stem, lzma.decompress(f.read_bytes()))
    else:
        return None
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    return str(folder)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_name():
    """The BLAS numpy was built against, as numpy reports it (e.g. 'scipy-openblas 0.3.31.188.0')."""
    import numpy
    try:
        cfg = numpy.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '?')}"
    except Exception:  # older numpy: no dict mode
        return "unknown"


def blas_kernel():
    """The BLAS numpy runs and how, as threadpoolctl reports it for this process, e.g.
    "openblas 0.3.31.188.0 SkylakeX, 1 thread": float32 results depend on the kernel
    (OPENBLAS_CORETYPE selects another) and speed on the threads."""
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl inspects)
    try:
        import threadpoolctl
    except ImportError:
        return f"{blas_name()} (kernel unknown: threadpoolctl is not installed)"
    libs = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture') or ''}".strip()
                     + f", {i.get('num_threads')} thread{'s' if i.get('num_threads') != 1 else ''}"
                     for i in libs) or "no BLAS found"


def limit_blas_threads(n):
    """Run numpy's BLAS on n threads from now on (threadpoolctl; the limit stays for the process).
    A BLAS that spins n threads on a busy machine with fewer free cores loses several times its speed
    (README, "Training"): pin it. Returns the threadpoolctl limiter, or None without threadpoolctl."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    import numpy  # noqa: F401  (loads the BLAS to limit)
    return threadpoolctl.threadpool_limits(limits=int(n), user_api="blas")


def gpu():
    """(cupy module, description) when cupy and a CUDA device are usable, else (None, reason)."""
    try:
        import cupy
    except ImportError:
        return None, "cupy is not installed"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            return None, "cupy found no CUDA device"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return cupy, f"{name}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}"
    except Exception as exc:  # driver missing, no device, ...
        return None, f"cupy cannot use a GPU: {type(exc).__name__}: {exc}"


def describe(xp_name="numpy"):
    """Provenance of a run: library versions, BLAS, CPU/GPU identity, pinned variables."""
    import h5py
    import numpy
    info = {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
        "blas": blas_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "env": {k: os.environ.get(k, "") for k in PINNED},
    }
    if xp_name == "cupy":
        import cupy
        _, desc = gpu()
        info.update({"cupy": cupy.__version__, "gpu": desc,
                     "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
                     "cuda_driver": cupy.cuda.runtime.driverGetVersion()})
    else:
        try:
            import cupy
            info["cupy"] = cupy.__version__
        except ImportError:
            info["cupy"] = "absent"
    return info
