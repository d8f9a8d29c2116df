"""The judge never runs the code under test in its own process (../shared/DESIGN.md: "The judge is
isolated from the code it judges").

`Isolated(path)` runs each job of a tier (harness/runner/record.py's JOBS: a trajectory run, a generate run,
the score run, a fresh case) in a new worker process:

    parent: job.json (plain JSON) + inputs.npz (copies of the inputs)  ->  python harness/runner/worker.py DIR
    worker: imports the file, runs the job, writes results.npz (allow_pickle=False) + results.json
    parent: reads plain arrays back and computes every verdict itself

What the code under test can do in the worker (exit with any status, kill itself, print, loop for
ever, monkeypatch the harness it sees there, register an atexit hook) cannot change a verdict: the
parent accepts results only from a worker that wrote them completely and then exited with status 0,
in time, without writing to stdout; anything else is a WorkerFailure naming what happened, which the
tiers turn into a FAIL row. Its stdout/stderr are captured, shown on a failure, never mixed with the
parent's output. Results are plain numeric arrays: nothing from the worker is unpickled.

`InProcess(module)` runs the same jobs in this process: for reference/ (trusted code, run live for the
backend bound and the fresh tier) and for tests that hand the tiers a module object.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PROTOCOL = "nanoproof-worker-1"
WORKER_FILE = Path(__file__).resolve()
REPO_ROOT = WORKER_FILE.parents[2]   # (not nanoproof.paths: the worker puts this on sys.path itself)
DEFAULT_TIMEOUT = 300.0   # seconds per job; verify --timeout overrides it
OUTPUT_TAIL = 1500        # characters of the worker's output shown with a failure


class WorkerFailure(Exception):
    """The worker did not hand back complete results: `what` is one line (exited, killed, timed out,
    printed, wrote no results), `output` the tail of what it printed."""

    def __init__(self, what, output=""):
        super().__init__(what)
        self.what, self.output = what, output


@dataclass
class JobResult:
    results: dict                               # key -> numpy array (host, the dtype the code returned)
    errors: dict                                # part -> nanoproof.runner.record.StageError
    meta: dict = field(default_factory=dict)    # plain JSON extras (e.g. optimizer state dtypes)
    output: str = ""                            # what the worker printed (stderr), for information
    seconds: float = 0.0


# ----------------------------------------------------------------------------- array files

def save_arrays(path, arrays):
    """{key: array} -> .npz, keys kept in a JSON list (keys may hold '/' and '@'); never pickled."""
    import numpy as np
    from nanoproof.paths import atomic_file
    keys = list(arrays)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, __keys__=np.frombuffer(json.dumps(keys).encode(), dtype=np.uint8),
                 **{f"a{i}": np.asarray(arrays[k]) for i, k in enumerate(keys)}, allow_pickle=False)


def load_arrays(path):
    import numpy as np
    with np.load(path, allow_pickle=False) as z:
        keys = json.loads(bytes(z["__keys__"]).decode())
        return {k: z[f"a{i}"] for i, k in enumerate(keys)}


# ----------------------------------------------------------------------------- runners

class InProcess:
    """Run jobs on a module object in this process (trusted code, or tests)."""

    def __init__(self, module, label=None):
        self.module, self.label = module, label or getattr(module, "__name__", "module")

    def run(self, job, spec, inputs):
        from nanoproof.runner import record
        t0 = time.perf_counter()
        inputs = {k: _copy(v) for k, v in inputs.items()}   # the job may write into its inputs
        results, errors, meta = record.JOBS[job](self.module, spec, inputs)
        return JobResult(results, errors, meta, "", time.perf_counter() - t0)


def _copy(v):
    import numpy as np
    return np.array(v, copy=True)


class Isolated:
    """Run jobs on an implementation file, each in a new worker process."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT, label=None):
        self.path, self.timeout = str(Path(path).resolve()), float(timeout)
        self.label = label or str(path)

    def run(self, job, spec, inputs):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="nanoproof-job-") as d:
            d = Path(d)
            (d / "job.json").write_text(json.dumps({"protocol": PROTOCOL, "impl": self.path,
                                                    "job": job, "spec": spec}))
            save_arrays(d / "inputs.npz", inputs)
            out_path, err_path = d / "stdout.txt", d / "stderr.txt"
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                try:
                    proc = subprocess.Popen([sys.executable, str(WORKER_FILE), str(d)], stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=err, cwd=str(d), start_new_session=True)
                except OSError as exc:
                    raise WorkerFailure(f"could not start a worker process: {exc}") from None
                try:
                    code = proc.wait(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    _kill(proc)
                    raise WorkerFailure(f"timed out after {self.timeout:g} s (an endless loop? "
                                        f"raise --timeout if the file is just slow)",
                                        _tail(out_path, err_path)) from None
            stdout = out_path.read_text(errors="replace")
            output = _tail(out_path, err_path)
            done = _read_done(d, job)
            if code != 0:
                how = (f"was killed by signal {-code}" if code < 0 else f"exited with status {code}")
                when = "after reporting its results" if done else "before reporting any results"
                raise WorkerFailure(f"the worker process {how} {when} (an exit(), sys.exit() or "
                                    f"os._exit() in the code under test, or a crash)", output)
            if done is None:
                raise WorkerFailure("the worker process exited with status 0 before reporting any results "
                                    "(an exit(), sys.exit() or os._exit() in the code under test?)", output)
            if done.get("contract_error"):
                from nanoproof.spec.contract import ContractError
                raise ContractError(done["contract_error"])
            if stdout.strip():
                lines = stdout.strip().splitlines()
                raise WorkerFailure(f"the code under test printed {len(lines)} line(s) to stdout (first: "
                                    f"{lines[0][:80]!r}); the contract's functions must not print",
                                    output)
            try:
                results = load_arrays(d / "results.npz")
            except Exception as exc:
                raise WorkerFailure(f"its results file is unreadable: {type(exc).__name__}: {exc}",
                                    output) from None
        from nanoproof.runner.record import StageError
        errors = {part: StageError(e["stage"], e["step"], e["message"])
                  for part, e in done.get("errors", {}).items()}
        return JobResult(results, errors, done.get("meta", {}), output, time.perf_counter() - t0)


def _kill(proc):
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # the worker and anything it started
    except OSError:
        proc.kill()
    proc.wait()


def _tail(out_path, err_path):
    parts = []
    for name, p in (("stdout", out_path), ("stderr", err_path)):
        try:
            text = p.read_text(errors="replace").strip()
        except OSError:
            text = ""
        if text:
            parts.append(f"[{name}] " + (text if len(text) <= OUTPUT_TAIL else "..." + text[-OUTPUT_TAIL:]))
    return "\n".join(parts)


def _read_done(d, job):
    """The worker's results.json when it is complete and for this job, else None."""
    try:
        done = json.loads((d / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or done.get("protocol") != PROTOCOL or done.get("job") != job \
            or done.get("complete") is not True:
        return None
    return done


# ----------------------------------------------------------------------------- the worker itself

def main(argv):
    d = Path(argv[1])
    job_doc = json.loads((d / "job.json").read_text())
    sys.path.insert(0, str(REPO_ROOT))
    import numpy  # noqa: F401  (before the file under test, so its import time is not the job's)
    from nanoproof.runner import record
    from nanoproof.spec.contract import ContractError, load_impl, load_reference
    inputs = load_arrays(d / "inputs.npz")
    job = job_doc["job"]
    done = {"protocol": PROTOCOL, "job": job}
    try:
        module = load_reference() if job_doc["impl"] == "reference" else load_impl(job_doc["impl"])
    except ContractError as exc:
        done.update(complete=True, contract_error=str(exc))
        _write_json(d / "results.json", done)
        return 0
    results, errors, meta = record.JOBS[job](module, job_doc["spec"], inputs)
    save_arrays(d / "results.npz", {k: v for k, v in results.items()})
    done.update(complete=True, meta=meta,
                errors={p: {"stage": e.stage, "step": e.step, "message": e.message} for p, e in errors.items()})
    _write_json(d / "results.json", done)
    return 0


def _write_json(path, doc):
    from nanoproof.paths import atomic_write_bytes
    atomic_write_bytes(path, json.dumps(doc).encode())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
