"""Golden completeness and regeneration safety: a golden file must hold every dataset its case
defines (not only what its own `datasets` attribute lists); a broken file is advised to be restored
from git first; regeneration refuses unknown backends and silent group drops and removes what an
interrupted run left; the tolerance table is validated on load. Every test works on copies in
tmp_path: the shipped golden files are only read."""
import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from nanoproof.golden import files as golden
from nanoproof.spec import tolerances
from nanoproof.spec.cases import (CASES, GENERATE, SHAKESPEARE_CHAR, TINY, expected_datasets, golden_path,
                           regen_command)
from nanoproof.cli import load_script
from nanoproof.golden.files import GoldenError, clean_stale_temps, read_golden, write_golden
from nanoproof.golden.regen import ALL_BACKENDS, regenerate

from nanoproof.paths import REPO_ROOT as REPO
QUIET = dict(log=lambda m: None)


def copy_of(tmp_path, name):
    dst = tmp_path / f"{name}.h5"
    shutil.copy(golden_path(name), dst)
    return dst


def delete(path, *names, from_attribute=True):
    """Delete datasets from a golden file copy and, by default, from its `datasets` attribute too
    (what a careless hand edit does: the file's own list no longer mentions them)."""
    with h5py.File(path, "r+") as f:
        for n in names:
            del f[n]
        if from_attribute:
            listed = json.loads(f.attrs["datasets"])
            f.attrs["datasets"] = json.dumps([n for n in listed if n not in names])


def golden_error(path, case):
    with pytest.raises(GoldenError) as ei:
        read_golden(path, case)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg
    return ei.value, msg


def assert_restore_first(msg, name):
    restore = f"restore it with `git checkout golden/{name}.h5`"
    assert restore in msg, msg
    assert regen_command(name) in msg, msg
    assert msg.index(restore) < msg.index(regen_command(name)), msg


# ----------------------------------------------------------------------------- completeness

@pytest.mark.parametrize("name", list(CASES))
def test_shipped_files_hold_exactly_the_expected_datasets(name):
    """The list matches the shipped files: every expected dataset is there, in the file's order,
    and what else a file holds is an allowed extra (stored numpy-float32 tensors, cupy groups)."""
    case = CASES[name]
    g = read_golden(golden_path(name), case)
    want = expected_datasets(case)
    assert len(want) == len(set(want))
    assert [n for n in g.data if n in set(want)] == want
    extras = [n for n in g.data if n not in set(want)]
    assert all(n.startswith(("numpy-float32/", "cupy-")) for n in extras), extras


def test_expected_datasets_cover_the_case_definition():
    params = ["wte", "wpe"] + [f"h.{i}.{p}" for i in range(2) for p in (
        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
        "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias")] + ["ln_f.weight", "ln_f.bias"]
    tiny = expected_datasets(TINY)
    assert tiny[:4] == ["inputs/tokens", "inputs/x", "inputs/y", "schedule/lr_at"]
    for p in params:
        assert f"params0/{p}" in tiny and f"numpy-float64/step0/grads/{p}" in tiny
        for k in TINY.checkpoints:
            assert f"numpy-float64/trajectory/params_after_{k}/{p}" in tiny
    for a in ("emb", "h.0.ln_1", "h.1.attn.att", "h.1.out", "ln_f", "logits"):
        assert f"numpy-float64/step0/activations/{a}" in tiny
    assert tiny[-2:] == ["numpy-float32/errors/names", "numpy-float32/errors/values"]
    gen = expected_datasets(GENERATE)
    assert {f"numpy-float64/{r}/{q}" for r in GENERATE.runs for q in ("tokens", "logits")} <= set(gen)
    assert expected_datasets(SHAKESPEARE_CHAR) == ["val_loss/steps", "val_loss/seeds", "numpy-float32/val_loss"]


@pytest.mark.parametrize("name, dataset", [
    ("tiny", "numpy-float64/step0/grads/wte"),
    ("tiny", "numpy-float64/step0/activations/h.1.attn.att"),
    ("tiny", "numpy-float64/trajectory/params_after_24/ln_f.bias"),
    ("tiny", "inputs/x"),
    ("tiny", "numpy-float32/errors/values"),
    ("generate", "numpy-float64/stop/logits"),
    ("generate", "params0/h.1.mlp.c_fc.bias"),
    ("shakespeare-char", "numpy-float32/val_loss"),
])
def test_dataset_deleted_with_its_list_entry_fails(tmp_path, name, dataset):
    """Today's hole: a dataset deleted from the file AND from its `datasets` attribute no longer
    silently removes its checks."""
    path = copy_of(tmp_path, name)
    delete(path, dataset)
    exc, msg = golden_error(path, CASES[name])
    assert f"lacks dataset {dataset}" in msg and exc.kind == "corrupt"
    assert_restore_first(msg, name)


def test_dataset_deleted_but_still_listed_fails(tmp_path):
    path = copy_of(tmp_path, "tiny")
    delete(path, "numpy-float64/step0/loss", from_attribute=False)
    exc, msg = golden_error(path, TINY)
    assert "lacks dataset numpy-float64/step0/loss" in msg and exc.kind == "corrupt"


def test_many_missing_datasets_are_counted_and_named(tmp_path):
    path = copy_of(tmp_path, "tiny")
    gone = [n for n in expected_datasets(TINY) if n.startswith("numpy-float64/trajectory/")]
    delete(path, *gone)
    _, msg = golden_error(path, TINY)
    assert f"lacks {len(gone)} datasets: {gone[0]}, " in msg and f"(+{len(gone) - 4} more)" in msg


def test_optional_extras_may_be_absent(tmp_path):
    """A stored numpy-float32 tensor is an extra: deleting it (and its list entry) is not an error."""
    path = copy_of(tmp_path, "tiny")
    delete(path, "numpy-float32/step0/activations/emb")
    read_golden(path, TINY)


def test_expected_dataset_left_out_of_the_list_fails(tmp_path):
    path = copy_of(tmp_path, "tiny")
    with h5py.File(path, "r+") as f:
        f.attrs["datasets"] = json.dumps([n for n in json.loads(f.attrs["datasets"]) if n != "inputs/y"])
    exc, msg = golden_error(path, TINY)
    assert "'datasets' attribute omits 1 dataset(s)" in msg and "inputs/y" in msg
    assert exc.kind == "corrupt"


# ----------------------------------------------------------------------------- advice and kind

def test_missing_file_advises_git_checkout_first(tmp_path):
    exc, msg = golden_error(tmp_path / "tiny.h5", TINY)
    assert exc.kind == "missing" and "no such golden file" in msg
    assert_restore_first(msg, "tiny")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip-a-value", "format-attribute"])
def test_corrupt_file_advises_git_checkout_first(tmp_path, damage):
    path = copy_of(tmp_path, "generate")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "garbage":
        path.write_text("not hdf5")
    else:
        with h5py.File(path, "r+") as f:
            if damage == "format-attribute":
                f.attrs["format"] = "something-else"
            else:
                d = f["numpy-float64/greedy/logits"]
                v = d[()]
                v[0, 0, 0] += 1e-3
                d[...] = v
    exc, msg = golden_error(path, GENERATE)
    assert exc.kind == "corrupt"
    assert_restore_first(msg, "generate")


def test_changed_case_and_format_advise_regeneration_only(tmp_path):
    path = copy_of(tmp_path, "tiny")
    with h5py.File(path, "r+") as f:
        case = json.loads(f.attrs["case"])
        case["steps"] = 25
        f.attrs["case"] = json.dumps(case)
    exc, msg = golden_error(path, TINY)
    assert exc.kind == "case-changed" and "git checkout" not in msg and regen_command("tiny") in msg
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 99
    exc, msg = golden_error(path, TINY)
    assert exc.kind == "format" and "git checkout" not in msg and regen_command("tiny") in msg


def test_golden_error_keeps_its_kind_across_pickling():
    exc = pickle.loads(pickle.dumps(GoldenError("x.h5: broken", "corrupt")))
    assert str(exc) == "x.h5: broken" and exc.kind == "corrupt"
    assert GoldenError("y").kind == "invalid"


# ----------------------------------------------------------------------------- regeneration

def run_regen_script(capsys, *argv):
    status = load_script("regen_golden").main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("backends", ["numpy-float16", "numpy-float64,numpy-float32,numpy-float16",
                                      "cuda-float32", "numpy"])
def test_regen_refuses_unknown_backends(tmp_path, capsys, backends):
    path = copy_of(tmp_path, "tiny")
    before = path.read_bytes()
    status, out, err = run_regen_script(capsys, "--case", "tiny", "--force", "--golden-dir", str(tmp_path),
                                        "--backends", backends)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "unknown backend(s)" in err and ", ".join(ALL_BACKENDS) in err
    assert path.read_bytes() == before
    with pytest.raises(GoldenError, match="unknown backend") as ei:
        regenerate(TINY, backends.split(","), force=True, golden_dir=tmp_path, **QUIET)
    assert ei.value.kind == "refused" and path.read_bytes() == before


def test_regen_refuses_unknown_drop_group(tmp_path, capsys):
    status, out, err = run_regen_script(capsys, "--case", "tiny", "--force", "--golden-dir", str(tmp_path),
                                        "--drop-group", "numpy-float16")
    assert status == 2 and out == "" and "unknown group(s) to drop 'numpy-float16'" in err


def test_regen_without_force_refuses_before_saying_regenerating(tmp_path, capsys):
    copy_of(tmp_path, "tiny")
    status, out, err = run_regen_script(capsys, "--case", "tiny", "--golden-dir", str(tmp_path))
    assert status == 2 and "regenerating" not in out and "pass --force" in err


def test_regen_refuses_to_drop_the_recorded_float32_group(tmp_path, capsys):
    path = copy_of(tmp_path, "tiny")
    before = path.read_bytes()
    status, out, err = run_regen_script(capsys, "--case", "tiny", "--force", "--golden-dir", str(tmp_path),
                                        "--backends", "numpy-float64")
    assert status == 2 and "regenerating" not in out
    assert "numpy-float32" in err and "add them to --backends" in err
    # --drop-group cannot drop a group every file of the case holds
    with pytest.raises(GoldenError, match="every tiny golden file holds group"):
        regenerate(TINY, ["numpy-float64"], force=True, golden_dir=tmp_path, drop_groups=["numpy-float32"], **QUIET)
    assert path.read_bytes() == before


def add_cupy_group(path, source_all):
    """Give a tiny copy a cupy-float32 recording (numpy-float32's datasets under another name)
    whose generating source sha256 is `source_all`."""
    with h5py.File(path, "r+") as f:
        f.copy("numpy-float32", "cupy-float32")
        f["cupy-float32"].attrs["backend"] = "cupy"
        listed = json.loads(f.attrs["datasets"])
        f.attrs["datasets"] = json.dumps(listed + [n.replace("numpy-float32/", "cupy-float32/", 1)
                                                   for n in listed if n.startswith("numpy-float32/")])
        src = json.loads(f.attrs["source_sha256"])
        src["all"] = source_all
        f.attrs["source_sha256"] = json.dumps(src)
    read_golden(path, TINY)


def test_regen_keeps_a_current_gpu_recording(tmp_path):
    """The carry-over of cupy groups (CPU-only machine, unchanged source) stays: nothing to drop."""
    path = copy_of(tmp_path, "tiny")
    add_cupy_group(path, golden.source_sha256()["all"])
    regenerate(TINY, ["numpy-float64", "numpy-float32"], force=True, golden_dir=tmp_path, **QUIET)
    g = read_golden(path, TINY)
    assert "cupy-float32" in g.groups() and g.has("cupy-float32/errors/values")


def test_regen_refuses_to_drop_a_stale_gpu_recording_without_drop_group(tmp_path, capsys):
    path = copy_of(tmp_path, "tiny")
    add_cupy_group(path, "0" * 64)
    before = path.read_bytes()
    status, out, err = run_regen_script(capsys, "--case", "tiny", "--force", "--golden-dir", str(tmp_path),
                                        "--backends", "numpy-float64,numpy-float32")
    assert status == 2 and "regenerating" not in out and err.count("\n") == 1
    assert "would drop group(s) the existing file recorded: cupy-float32" in err
    assert "pass --drop-group cupy-float32" in err
    assert path.read_bytes() == before
    logs = []
    regenerate(TINY, ["numpy-float64", "numpy-float32"], force=True, golden_dir=tmp_path,
               drop_groups=["cupy-float32"], log=logs.append)
    assert any("cupy-float32: dropped" in m for m in logs)
    g = read_golden(path, TINY)
    assert "cupy-float32" not in g.groups() and "numpy-float32" in g.groups()


def test_regen_removes_stale_temp_files(tmp_path):
    path = copy_of(tmp_path, "tiny")
    old = time.time() - 3600
    stale = tmp_path / ".tiny.h5.k3j2h1.tmp"             # an older writer's name: judged by age
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (old, old))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dead_tmp = tmp_path / f".tiny.h5.{dead.pid}.abc.tmp"  # its writer is gone: stale whatever its age
    dead_tmp.write_bytes(b"y")
    fresh = tmp_path / ".tiny.h5.zz9.tmp"                 # newer than this process: may be live
    fresh.write_bytes(b"z")
    live = tmp_path / f".tiny.h5.{os.getppid()}.def.tmp"  # a live writer's: left alone
    live.write_bytes(b"w")
    os.utime(live, (old, old))
    other = tmp_path / ".generate.h5.k3j2h1.tmp"          # another target's: not ours to clean
    other.write_bytes(b"v")
    os.utime(other, (old, old))
    logs = []
    regenerate(TINY, ["numpy-float64", "numpy-float32"], force=True, golden_dir=tmp_path, log=logs.append)
    assert not stale.exists() and not dead_tmp.exists()
    assert fresh.exists() and live.exists() and other.exists()
    removed = [m for m in logs if "stale temp file" in m]
    assert len(removed) == 1 and "removed 2 stale temp file(s)" in removed[0], logs
    read_golden(path, TINY)


def test_write_golden_cleans_after_a_sigkilled_writer(tmp_path):
    """A writer killed with SIGKILL mid-write leaves its temp file; the next write removes it."""
    path = tmp_path / "x.h5"
    child = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); import numpy as np\n"
             "from nanoproof.golden import files as golden\n"
             "golden._after_dataset = lambda n: time.sleep(120) if n == 'g/a' else None\n"
             f"golden.write_golden({str(path)!r}, {{'case': {{}}}}, {{'g/a': np.ones(100), 'g/b': np.ones(3)}})\n")
    p = subprocess.Popen([sys.executable, "-c", child])
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".x.h5.*.tmp")) and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    left = list(tmp_path.glob(".x.h5.*.tmp"))
    assert len(left) == 1 and not path.exists() and re.match(rf"\.x\.h5\.{p.pid}\.", left[0].name)
    logs = []
    write_golden(path, {"case": {"a": 1}}, {"g/a": np.arange(3.0)}, log=logs.append)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.h5"]
    assert len(logs) == 1 and "removed 1 stale temp file(s)" in logs[0] and left[0].name in logs[0]
    assert clean_stale_temps(path) == []


# ----------------------------------------------------------------------------- tolerance table

def write_table(tmp_path, edit):
    table = json.loads(tolerances.PATH.read_text())
    edit(table)
    path = tmp_path / "tolerances.json"
    path.write_text(json.dumps(table))
    return path


def tolerance_error(path):
    with pytest.raises(tolerances.ToleranceError) as ei:
        tolerances.load(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    return msg


def test_shipped_table_loads():
    entries = tolerances.load()
    assert set(tolerances.REQUIRED_ENTRIES) <= set(entries)
    assert entries["score.band_floor"]["value"] == 0 and entries["semantic.get_batch"]["value"] == 0


def setter(key, field, value):
    def edit(t):
        t["entries"][key][field] = value
    return edit


@pytest.mark.parametrize("key, field, value, expected", [
    ("semantic.activations", "value", float("nan"), "a finite number >= 0"),
    ("semantic.activations", "value", float("inf"), "a finite number >= 0"),
    ("semantic.activations", "value", -1e-9, "a finite number >= 0"),
    ("semantic.activations", "value", "1e-9", "a finite number >= 0"),
    ("semantic.activations", "value", True, "a finite number >= 0"),
    ("semantic.activations", "value", None, "a finite number >= 0"),
    ("semantic.activations", "value", 0, "a finite number > 0"),
    ("backend.k", "value", 0, "a finite number > 0"),
    ("score.band_sigmas", "value", 0.0, "a finite number > 0"),
    ("semantic.lr_at", "value", 0, "a finite number > 0"),
    ("score.same_seed", "value", 0, "a finite number > 0"),
    ("semantic.get_batch", "value", 1, "0 (metric exact"),
    ("score.band_floor", "value", -0.1, "a finite number >= 0"),
    ("semantic.grads", "measured", float("nan"), "a finite number >= 0 or null"),
    ("semantic.grads", "measured", "small", "a finite number >= 0 or null"),
    ("semantic.grads", "measured", -1.0, "a finite number >= 0 or null"),
    ("semantic.grads", "metric", "relative", "one of ulp, exact, rel, factor, sigma, abs"),
    ("semantic.grads", "tier", 3, "a non-empty string"),
    ("semantic.grads", "why", "", "a non-empty string"),
    ("semantic.grads", "measured_on", 1.0, "a string"),
])
def test_bad_entry_named_with_field_expected_and_actual(tmp_path, key, field, value, expected):
    path = write_table(tmp_path, setter(key, field, value))
    msg = tolerance_error(path)
    assert f"entry {key}, field {field}: expected {expected}" in msg, msg
    assert msg.endswith(f"got {value!r}"), msg


@pytest.mark.parametrize("key, field, value", [
    ("score.band_floor", "value", 0.0),        # 0: nothing added to the band (the shipped value)
    ("semantic.get_batch", "value", 0),        # exact: compared for equality
    ("backend.float64", "measured", None),     # never measured
    ("semantic.loss", "measured", 0),
])
def test_meaningful_zeros_and_nulls_load(tmp_path, key, field, value):
    tolerances.load(write_table(tmp_path, setter(key, field, value)))


def test_missing_field_and_schema_errors(tmp_path):
    path = write_table(tmp_path, lambda t: t["entries"]["semantic.loss"].pop("measured_by"))
    assert "entry semantic.loss, field measured_by: expected one" in tolerance_error(path)
    path = write_table(tmp_path, lambda t: t["entries"].__setitem__("semantic.loss", [1e-9]))
    assert "entry semantic.loss: expected an object" in tolerance_error(path)
    path = write_table(tmp_path, lambda t: t.pop("entries"))
    assert "expected an object with an 'entries' object" in tolerance_error(path)
    path.write_text("[]")
    assert "expected an object with an 'entries' object, got list" in tolerance_error(path)
    path.write_text("{not json")
    assert "cannot read the tolerance table" in tolerance_error(path)


@pytest.mark.parametrize("key", tolerances.REQUIRED_ENTRIES)
def test_every_required_entry_must_be_present(tmp_path, key):
    path = write_table(tmp_path, lambda t: t["entries"].pop(key))
    msg = tolerance_error(path)
    assert f"entry {key}: expected (harness/spec/tolerances.py REQUIRED_ENTRIES" in msg and "got no such entry" in msg


def test_required_entries_can_be_extended(monkeypatch):
    monkeypatch.setattr(tolerances, "REQUIRED_ENTRIES", tolerances.REQUIRED_ENTRIES + ("fresh.example",))
    with pytest.raises(tolerances.ToleranceError, match="entry fresh.example: expected"):
        tolerances.load()


def test_required_entries_list_every_key_the_code_reads():
    """tol["..."] in harness/ and scripts/, every key semantic_key returns and every entry a row
    names (rows record the entry where the tolerance is chosen)."""
    read = set()
    for folder in ("harness", "scripts"):
        for f in (REPO / folder).rglob("*.py"):
            for inside in re.findall(r"\btol\[([^\]]*)\]", f.read_text()):
                read |= set(re.findall(r"""["']([a-z_]+\.[\w.]+)["']""", inside))
    for key in ("setup/init/wte", "setup/get_batch/x", "setup/lr_at", "step0/activations/emb", "step0/loss",
                "step0/grads/wte", "trajectory/params_after_1/wte", "trajectory/lr", "trajectory/loss",
                "trajectory/grad_norm"):
        read.add(tolerances.semantic_key(key))
    for folder in ("harness", "scripts"):   # entries named where a row's tolerance is chosen
        for f in (REPO / folder).rglob("*.py"):
            read |= {m for m in re.findall(r"""["']((?:semantic|backend|score)\.[a-z_]+(?:\.[a-z_]+)?)["']""",
                                           f.read_text()) if not m.endswith((".json", ".py", ".h5"))}
    assert read >= {"backend.k", "backend.floor", "backend.float64", "score.band_sigmas", "score.band_floor"}
    missing = sorted(read - set(tolerances.REQUIRED_ENTRIES))
    assert not missing, f"read by the code but not in REQUIRED_ENTRIES: {missing}"


def test_calibrate_exits_2_on_a_bad_table(tmp_path, monkeypatch, capsys):
    path = write_table(tmp_path, setter("backend.k", "value", math.nan))
    monkeypatch.setattr(tolerances, "PATH", path)
    assert load_script("calibrate").main(["--only", "semantic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "entry backend.k, field value" in err
