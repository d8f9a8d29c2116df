"""Golden-file I/O: one HDF5 file per case, written atomically, read back with every check a user
needs to trust it (see golden/README.md for the layout).

Writing: all datasets go to a temp file beside the target, which is renamed over it only when the
file is complete and closed, so an interrupted or failed write never leaves a broken golden file.
Each dataset is gzip-compressed (with byte shuffling) and carries the sha256 of its content.

An interrupted write (SIGKILL) leaves its temp file; the next write of the same target removes
the temp files of writers that are gone (`clean_stale_temps`).

Reading (`read_golden`) raises GoldenError with one line naming the file, what is wrong, and what to
do: missing, unreadable (truncated, corrupted, not HDF5), another format version, a case (config,
seeds, hparams) different from harness/spec/cases.py, a missing or corrupted dataset (sha256 mismatch).
With a case, every dataset the case defines (nanoproof.spec.cases.expected_datasets) must be in the file,
whatever its own `datasets` attribute lists. A missing or broken file is first advised to be
restored from git (`git checkout golden/NAME.h5`), then to be regenerated; a file of another
format version or case definition only to be regenerated.
"""
import hashlib
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nanoproof.paths import atomic_file, source_file

FORMAT = "nanoproof-golden"
FORMAT_VERSION = 1
# the source the golden values are a function of (sha256 recorded as provenance)
GENERATING_SOURCES = ("reference/__init__.py", "reference/layers.py", "reference/model.py",
                      "reference/training.py", "reference/sampling.py", "harness/spec/cases.py",
                      "harness/runner/record.py")


class GoldenError(Exception):
    """A golden file that cannot be used, with a one-line message naming the file and what is wrong.

    `kind` says which way (scripts map every GoldenError to exit status 2):
    "missing" (no such file), "corrupt" (unreadable, truncated, not a nanoproof file, a dataset absent
    or failing its sha256: restore the file from git), "format" (another format version),
    "case-changed" (recorded for another case definition: regenerate), "refused" (regeneration
    refused: no --force, an unknown backend, a recorded group it would drop, a group every file of
    the case holds that it would not record), "invalid" (anything else)."""

    def __init__(self, message, kind="invalid"):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):   # keeps `kind` across pickling (e.g. from a worker process)
        return type(self), (str(self), self.kind)


def dataset_sha256(a):
    """sha256 of an array's dtype, shape and little-endian C-order bytes."""
    a = np.asarray(a)
    a = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<")))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def source_sha256(paths=GENERATING_SOURCES):
    """{path: sha256} of the generating source, plus "all": the sha256 of the concatenation."""
    out, total = {}, hashlib.sha256()
    for p in paths:
        data = source_file(p).read_bytes()
        out[p] = hashlib.sha256(data).hexdigest()
        total.update(data)
    out["all"] = total.hexdigest()
    return out


def provenance(command=None):
    """Root-level provenance attributes (the per-backend library/GPU identity go on each group)."""
    from nanoproof import env
    return {
        "source_sha256": json.dumps(source_sha256()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command or " ".join([os.path.basename(sys.executable)] + sys.argv),
        "environment": json.dumps(env.describe()),
    }


# a seam for the tests: called after every dataset written to the temp file
_after_dataset = None
# this process's start, as far as temp files go: none of ours is older than this module's import
_STARTED = time.time()


def _writer_alive(tmp, path):
    """Whether the process that made temp file `tmp` (named .NAME.PID.XXXX.tmp) may still be
    writing it: True for another live PID (or one we may not signal), False for a dead one, None
    when the name holds no PID (an older writer's) or ours (a reused PID): then its age decides."""
    middle = tmp.name[len(f".{path.name}."):-len(".tmp")].split(".")
    if len(middle) != 2 or not middle[0].isdigit():
        return None
    pid = int(middle[0])
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_stale_temps(path, log=None):
    """Remove the temp files an interrupted write of `path` left beside it (.NAME.h5.*.tmp): those
    whose writer process is gone, or, without another writer's PID in the name, older than this
    process (a temp file of a live writer, e.g. a concurrent regeneration, is left alone).
    Says so in one line through `log`; returns the removed paths."""
    path = Path(path)
    removed, size = [], 0
    if not path.parent.is_dir():
        return removed
    for tmp in sorted(path.parent.glob(f".{path.name}.*.tmp")):
        try:
            alive = _writer_alive(tmp, path)
            st = tmp.stat()
            if alive or (alive is None and st.st_mtime >= _STARTED):
                continue
            tmp.unlink()
        except OSError:
            continue
        removed.append(tmp)
        size += st.st_size
    if removed and log is not None:
        log(f"  removed {len(removed)} stale temp file(s) of an interrupted write of {path.name} "
            f"({size / 2 ** 20:.1f} MB): {', '.join(t.name for t in removed)}")
    return removed


def write_golden(path, attrs, datasets, group_attrs=None, log=None):
    """Write a golden file atomically (removing first what an interrupted write left: see
    clean_stale_temps, which reports through `log`).

    attrs: root attributes (str/number values; dicts and lists are stored as JSON strings);
    datasets: {"group/sub/name": array}, in the order they should be read back;
    group_attrs: {"group": {attr: value}}.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path, log)
    import h5py
    with atomic_file(path, prefix=f"{os.getpid()}.") as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            for k, v in attrs.items():
                f.attrs[k] = _attr(v)
            f.attrs["datasets"] = json.dumps(list(datasets))
            for name, value in datasets.items():
                a = np.asarray(value)
                kw = {}
                if a.size > 16:
                    kw = {"compression": "gzip", "compression_opts": 9, "shuffle": True}
                d = f.create_dataset(name, data=a, **kw)
                d.attrs["sha256"] = dataset_sha256(a)
                if _after_dataset is not None:
                    _after_dataset(name)
            for g, ga in (group_attrs or {}).items():
                grp = f.require_group(g)
                for k, v in ga.items():
                    grp.attrs[k] = _attr(v)


def _attr(v):
    return json.dumps(v) if isinstance(v, (dict, list, tuple)) else v


class Golden:
    """A golden file read into memory: `attrs` (root, JSON decoded), `data` {path: array} in
    written order, `group_attrs(group)`."""

    def __init__(self, path, attrs, data, groups):
        self.path, self.attrs, self.data, self._groups = Path(path), attrs, data, groups

    def group_attrs(self, group):
        return self._groups.get(group, {})

    def groups(self):
        """Top-level groups that are backend recordings (e.g. numpy-float64)."""
        return [g for g in self._groups if "-float" in g and "/" not in g]

    def sub(self, prefix):
        """{name: array} of the datasets directly under `prefix/`, in written order."""
        p = prefix.rstrip("/") + "/"
        return {k[len(p):]: v for k, v in self.data.items()
                if k.startswith(p) and "/" not in k[len(p):]}

    def has(self, name):
        return name in self.data


def _decode(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def _normalise(x):
    return json.loads(json.dumps(x))


def read_golden(path, case=None, regen=None):
    """Read and check a golden file. `case` (a nanoproof.spec.cases case) must equal the recorded one, and
    every dataset it defines (nanoproof.spec.cases.expected_datasets) must be present and intact.
    Raises GoldenError (with its `kind`) naming the file, the problem and what to do: restore a
    missing or broken file with git, or run `regen` (the regenerating command; "-": none)."""
    import h5py
    path = Path(path)
    if regen is None and case is not None:
        from nanoproof.spec.cases import regen_command
        regen = regen_command(case.name)

    def fail(msg, kind="corrupt"):
        advice = []
        if case is not None and kind in ("missing", "corrupt"):
            advice.append(f"restore it with `git checkout golden/{path.name}`")
        if regen and regen != "-":
            advice.append(f"regenerate it with: {regen}")
        raise GoldenError(f"{path}: {msg}" + ("; " + ", or ".join(advice) if advice else ""), kind)

    if not path.is_file():
        fail("no such golden file", "missing")
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        fail(f"not a readable HDF5 file (truncated or corrupted?): {type(exc).__name__}: "
             f"{' '.join(str(exc).split())}")
    with f:
        try:
            attrs = {k: _decode(v) for k, v in f.attrs.items()}
        except Exception as exc:
            fail(f"cannot read its attributes (corrupted?): {type(exc).__name__}: {exc}")
        if attrs.get("format") != FORMAT:
            fail(f"not a {FORMAT} file (format attribute: {attrs.get('format')!r})")
        if attrs.get("format_version") != FORMAT_VERSION:
            fail(f"format version {attrs.get('format_version')!r}, this harness reads version "
                 f"{FORMAT_VERSION}", "format")
        if case is not None:
            want, got = _normalise(case.as_dict()), attrs.get("case")
            if got != want:
                diffs = _dict_diff(got if isinstance(got, dict) else {}, want)
                fail(f"recorded for a different case definition than harness/spec/cases.py "
                     f"({'; '.join(diffs[:4])}{' ...' if len(diffs) > 4 else ''})", "case-changed")
        names = attrs.get("datasets")
        if not isinstance(names, list):
            fail("lacks its list of datasets (attribute 'datasets')")
        expected = []
        if case is not None:
            from nanoproof.spec.cases import expected_datasets
            expected = expected_datasets(case)

        def present(name):
            try:
                return isinstance(f.get(name), h5py.Dataset)
            except Exception:
                return False
        missing = [n for n in dict.fromkeys(expected + names) if not present(n)]
        if missing:
            fail(f"lacks dataset {missing[0]}" if len(missing) == 1 else
                 f"lacks {len(missing)} datasets: {', '.join(missing[:4])}"
                 f"{f' ... (+{len(missing) - 4} more)' if len(missing) > 4 else ''}")
        unlisted = [n for n in expected if n not in names]
        if unlisted:
            fail(f"its 'datasets' attribute omits {len(unlisted)} dataset(s) the case defines "
                 f"({', '.join(unlisted[:4])}{' ...' if len(unlisted) > 4 else ''}): edited by hand?")
        data = {}
        for name in names:
            try:
                d = f[name]
                value = d[()]
                stored = _decode(d.attrs.get("sha256"))
            except Exception as exc:
                fail(f"cannot read dataset {name} (corrupted?): {type(exc).__name__}: "
                     f"{' '.join(str(exc).split())}")
            value = np.asarray(value)
            actual = dataset_sha256(value)
            if stored != actual:
                fail(f"dataset {name} is corrupted: sha256 {actual[:12]}..., recorded "
                     f"{str(stored)[:12]}...")
            data[name] = value
        groups = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                groups[name] = {k: _decode(v) for k, v in obj.attrs.items()}
        f.visititems(visit)
    return Golden(path, attrs, data, groups)


def _dict_diff(got, want, prefix=""):
    out = []
    for k in sorted(set(got) | set(want)):
        a, b = got.get(k, "<absent>"), want.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _dict_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            sa, sb = repr(a), repr(b)
            out.append(f"{prefix}{k}: file {sa[:40]}, expected {sb[:40]}")
    return out


def diff_goldens(old, new):
    """Lines describing what changed between two {path: array} dicts, tensor by tensor."""
    lines = []
    for name in list(new) + [n for n in old if n not in new]:
        if name not in old:
            lines.append(f"  new        {name} {tuple(np.shape(new[name]))}")
            continue
        if name not in new:
            lines.append(f"  removed    {name}")
            continue
        a, b = np.asarray(old[name]), np.asarray(new[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            lines.append(f"  changed    {name}: {a.dtype}{a.shape} -> {b.dtype}{b.shape}")
        elif a.tobytes() == b.tobytes():
            lines.append(f"  identical  {name}")
        else:
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
            scale = float(np.max(np.abs(a.astype(np.float64)))) if a.size else 0.0
            rel = float(d.max()) / scale if scale else float("inf")
            lines.append(f"  changed    {name}: max|Δ| {float(d.max()):.3e}, rel {rel:.3e}")
    return lines
