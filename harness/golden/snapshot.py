"""The exact tier: a local, bitwise baseline taken before an edit (scripts/snapshot.py), compared
bit for bit afterwards by scripts/verify.py. "bits changed" is information, not a verdict: the
semantic tier decides whether the function changed.

The snapshot (SNAPSHOT_PATH, in the git-ignored .nanoproof/ folder) holds the sha256 of every result
of the semantic and numpy-float32 backend runs of every trajectory case, and the environment they
were computed in (library versions, BLAS, CPU, the pinned thread variables). Results are only
comparable in the same pinned environment; otherwise the tier says so and is skipped.
"""
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path


from nanoproof import env
from nanoproof.golden.files import dataset_sha256
from nanoproof.paths import REPO_ROOT, WORK_DIR, atomic_write_bytes, command
from nanoproof.judge.report import Row, TierResult

SNAPSHOT_DIR = WORK_DIR / ".nanoproof"
SNAPSHOT_PATH = SNAPSHOT_DIR / "snapshot.json"
FORMAT = "nanoproof-snapshot-1"
# the environment that must be equal for bits to be comparable
ENV_KEYS = ("python", "numpy", "blas", "cpu", "cpu_count", "env", "pinned_in_time")


def environment():
    d = env.describe()
    d["pinned_in_time"] = bool(env.PINNED_IN_TIME)
    return {k: d.get(k) for k in ENV_KEYS}


def hashes(sem_results, backend_results):
    out = {f"numpy-float64/{k}": dataset_sha256(v) for k, v in sem_results.items()
           if not isinstance(v, list)}
    for b, res in backend_results.items():
        out.update({f"{b}/{k}": dataset_sha256(v) for k, v in res.items() if not isinstance(v, list)})
    return out


def write(path, impl_path, per_case):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "impl": str(impl_path),
            "impl_sha256": hashlib.sha256(Path(impl_path).read_bytes()).hexdigest(),
            "environment": environment(), "cases": per_case}
    atomic_write_bytes(path, json.dumps(data, indent=1).encode())
    return data


def read(path):
    path = Path(path)
    if not path.is_file():
        return None, f"no snapshot at {path}: run {command('snapshot', 'snapshot')} before an edit"
    try:
        data = json.loads(path.read_text())
        assert data.get("format") == FORMAT
    except Exception:
        return None, f"{path} is not a readable snapshot: take a new one with {command('snapshot', 'snapshot')}"
    return data, ""


def exact_tier(case, sem_results, backend_results, snapshot_path=None):
    res = TierResult("exact", case.name)
    data, why = read(snapshot_path or SNAPSHOT_PATH)
    if data is None:
        res.skipped = why
        return res
    now = environment()
    diff = [k for k in ENV_KEYS if data["environment"].get(k) != now.get(k)]
    if diff:
        res.skipped = (f"not comparable: the environment differs from the snapshot's ({', '.join(diff)}); "
                       f"run through scripts/verify.py (which pins it) or take a new snapshot")
        return res
    old = data["cases"].get(case.name)
    if old is None:
        res.skipped = f"the snapshot has no results for {case.name}"
        return res
    new = hashes(sem_results, backend_results)
    changed = [k for k in old if k in new and old[k] != new[k]]
    missing = [k for k in old if k not in new]
    for k in changed + missing:
        res.rows.append(Row("exact", "exact", k, verdict="info",
                            note="bits changed" if k in changed else "no longer produced"))
    if not changed and not missing:
        res.info = f"bit-identical ({len(old)} results)"
    else:
        first = (changed + missing)[0]
        res.info = f"bits changed in {len(changed) + len(missing)} of {len(old)} results (first: {first})"
    return res
