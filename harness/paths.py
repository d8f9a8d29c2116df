"""Where things are, and how a file is written so that a reader never sees half of it.
Standard library only: scripts import it before numpy loads (harness/env.py's pin())."""
import os
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent       # the nanoproof package (harness/ in a clone)
# A clone (run in place, or installed with pip install -e): the repo's folders. A plain `pip install`:
# golden/, impl/, reference/ and the frozen fixture ship inside the package (pyproject's package-dir),
# and what a run writes (data/, out/, .nanoproof/) goes under the current folder.
IN_CLONE = all((PACKAGE_DIR.parent / name).exists() for name in ("pyproject.toml", "golden", "reference", "impl"))
if IN_CLONE:
    REPO_ROOT = PACKAGE_DIR.parent
    GOLDEN_DIR, IMPL_DIR, REFERENCE_DIR = REPO_ROOT / "golden", REPO_ROOT / "impl", REPO_ROOT / "reference"
    FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
else:
    REPO_ROOT = Path.cwd()
    GOLDEN_DIR, IMPL_DIR, REFERENCE_DIR = PACKAGE_DIR / "goldens", PACKAGE_DIR / "impl", PACKAGE_DIR / "reference"
    FIXTURES_DIR = PACKAGE_DIR / "fixtures"
WORK_DIR = REPO_ROOT   # where data/, out/ and .nanoproof/ go


def command(script, name):
    """How to run one of nanoproof's commands here: `python scripts/SCRIPT.py` in a clone, `nanoproof
    NAME` from an installed package (messages say the one that works)."""
    return f"python scripts/{script}.py" if IN_CLONE else f"nanoproof {name}"


def source_file(relpath):
    """A source file named as in the clone ("reference/model.py", "harness/spec/cases.py"), wherever
    it is installed."""
    head, _, rest = str(relpath).partition("/")
    return {"reference": REFERENCE_DIR, "harness": PACKAGE_DIR}[head] / rest

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_file(path, prefix=None):
    """Yield a temp path beside `path`; when the block ends without an exception the temp file is
    renamed over `path` (os.replace: the old content or the whole new one, never a mix), else it is
    removed. Temp names are `.NAME.<prefix>XXXX.tmp`, so an interrupted writer's leftovers can be
    found (nanoproof.golden.files.clean_stale_temps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{prefix or ''}", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        yield tmp
        with open(tmp, "rb+") as f:      # on disk before the rename
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_bytes(f, data):
    """Write a payload to an open temp file (a seam: tests make a write fail midway)."""
    f.write(data)


def _write(tmp, data):
    with open(tmp, "wb") as f:
        _write_bytes(f, data)


def atomic_write_bytes(path, data):
    """Write one file atomically."""
    with atomic_file(path) as tmp:
        _write(tmp, data)


def atomic_write_files(files):
    """Write several files {path: bytes} so that each is either its old content or its complete new
    one: every temp file is written first, and only when all are complete are they renamed over their
    targets, in the given order (put the file that describes the others, e.g. meta.json, last)."""
    with ExitStack() as stack:
        tmps = {path: stack.enter_context(atomic_file(path)) for path in reversed(list(files))}
        for path, data in files.items():   # exits (renames) run in reverse order of entry
            _write(tmps[path], data)
