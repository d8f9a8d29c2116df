"""Mutation testing of the harness (harness/measure/catalog.py, mutate.py, sensitivity.py): the catalog is well-formed against the frozen
copy of impl/gpt2.py it was written for (catalog.FIXTURE, tests/fixtures/gpt2_frozen.py), and a fixed
subset of it is caught (semantic mutants) or passed (equivalent rewrites) there. These are tests of the
harness on known mutants, so they never read impl/gpt2.py, whose text users edit; against an edited
file, entries that no longer apply are information, never failures (the last tests here)."""
import importlib.util
import re
from pathlib import Path

import pytest

from nanoproof.measure import catalog, mutate, sensitivity

SOURCE = catalog.FIXTURE.read_text(encoding="utf-8")
_spec = importlib.util.spec_from_file_location(
    "_nanoproof_scripts_mutate", Path(__file__).resolve().parents[1] / "scripts" / "mutate.py")
mutate_cli = importlib.util.module_from_spec(_spec)   # scripts/mutate.py, under a private name
_spec.loader.exec_module(mutate_cli)


def test_catalog_well_formed():
    assert catalog.catalog_problems(SOURCE) == []
    names = [m["name"] for m in catalog.CATALOG]
    assert len(names) == len(set(names))
    assert sum(m["kind"] == "semantic" for m in catalog.CATALOG) >= 40
    assert sum(m["kind"] == "equivalent" for m in catalog.CATALOG) >= 10
    for m in catalog.CATALOG:
        assert SOURCE.count(m["old"]) == 1, m["name"]
        assert catalog.apply(m, SOURCE) != SOURCE


def test_stale_entry_is_reported_not_skipped(tmp_path):
    entry = {"name": "gone", "kind": "semantic", "old": "this text is not in impl/gpt2.py",
             "new": "x", "description": "stale on purpose", "expect": "emb"}
    r = mutate.run_mutant(entry, SOURCE, mutate.FAST_TIERS, tmp_path)
    assert r["status"] == "stale" and r["verdicts"] == {}      # information, not a verdict
    s = mutate.summarize([r], mutate.FAST_TIERS)
    assert s["stale"] == ["gone"] and s["applied"] == 0 and s["kill_rate"]["semantic"]["of"] == 0
    assert any("stale" in p for p in catalog.catalog_problems(SOURCE, [entry]))


def test_deletion_allowed_but_missing_new_reported():
    entry = catalog.by_name()["ln_back_drop_var"]
    deleting = dict(entry, new="")
    assert SOURCE.count(entry["old"]) == 1 and len(catalog.apply(deleting, SOURCE)) < len(SOURCE)
    assert not any("missing" in p for p in catalog.catalog_problems(SOURCE, [deleting]))
    no_new = {k: v for k, v in entry.items() if k != "new"}
    assert f"{entry['name']}: missing new" in catalog.catalog_problems(SOURCE, [no_new])


@pytest.fixture(scope="module")
def ci_run():
    return mutate.run_catalog(catalog.select(subset="ci"), mutate.FAST_TIERS, catalog.FIXTURE)


def test_ci_subset_covers_layers_optimizer_sampler():
    entries = catalog.select(subset="ci")
    sem = [m for m in entries if m["kind"] == "semantic"]
    assert len(sem) >= 8 and sum(m["kind"] == "equivalent" for m in entries) >= 3
    assert {"init", "sampler", "schedule", "forward", "backward", "optimizer"} <= {m["area"] for m in sem}


@pytest.mark.parametrize("name", [n for n in catalog.CI_SUBSET if catalog.by_name()[n]["kind"] == "semantic"])
def test_semantic_mutant_killed_at_expected_tensor(ci_run, name):
    r = next(r for r in ci_run["results"] if r["name"] == name)
    assert r["status"] == "ok"
    assert r["verdicts"]["semantic"] == "killed", r
    assert r["expect_matched"] is True, (r["expect"], r["first"].get("semantic"))


@pytest.mark.parametrize("name", [n for n in catalog.CI_SUBSET if catalog.by_name()[n]["kind"] == "equivalent"])
def test_equivalent_rewrite_passes(ci_run, name):
    r = next(r for r in ci_run["results"] if r["name"] == name)
    assert r["status"] == "ok"
    assert r["verdicts"]["semantic"] == "survived", r["first"]
    assert r["verdicts"]["backend"] == "survived", r["first"]


def test_report_formats(ci_run):
    text = "\n".join(mutate.format_report(ci_run))
    assert "kill rate, semantic tier" in text and "false alarms on equivalent rewrites" in text


def test_sensitivity_probes_well_formed():
    names = [p["name"] for p in catalog.PROBES]
    assert len(names) == len(set(names))
    # the constants the mutation-testing issue names, each probed
    assert {"ln_eps", "gelu_c", "gelu_cubic", "attn_scale", "init_std", "warmup_iters", "lr_decay_iters",
            "grad_clip", "beta1", "beta2", "adam_eps", "weight_decay"} <= set(names)
    for p in catalog.PROBES:
        assert catalog.status_of(p, SOURCE) == "ok", p["name"]
        entry = sensitivity.probe_entry(p, 1e-3)
        assert "{f}" not in entry["new"] and "1.001" in entry["new"]
        assert catalog.apply(entry, SOURCE) != SOURCE


def test_sensitivity_brackets_the_threshold():
    probe = next(p for p in catalog.PROBES if p["name"] == "ln_eps")
    doc = sensitivity.run_sensitivity([probe], ("semantic",), catalog.FIXTURE, deltas=(1e-3, 1e-13))
    v = doc["probes"][0]["tiers"]["semantic"]
    assert v["detected"] == 1e-3 and v["missed"] == 1e-13, v      # 1e-13 of 1e-5 is below float64's reach
    assert v["first"]["tolerance"].startswith("semantic."), v["first"]
    text = "\n".join(sensitivity.format_sensitivity(doc))
    assert "ln_eps" in text and "per tolerance" in text and v["first"]["tolerance"] in text


def test_rows_carry_their_tolerance_entry():
    """Every checked row names the tolerance-table entry it was checked against (chosen where the
    tolerance is, never parsed back from the printed name), in every tier and section."""
    from nanoproof.judge import tiers
    from nanoproof.spec import tolerances
    from nanoproof.spec.cases import CASES
    from nanoproof.spec.contract import load_reference
    tol, ref = tolerances.load(), load_reference()
    case = CASES["tiny"]
    golden = tiers.load_case_golden(case)
    seen = {}
    for res in (tiers.semantic(ref, case, golden, tol)[0], tiers.backend(ref, case, golden, "numpy-float32", tol)[0],
                tiers.generate(ref, CASES["generate"], tiers.load_case_golden(CASES["generate"]), "numpy-float64", tol)[0]):
        for r in res.rows:
            if r.verdict != "skip":
                assert r.entry in tol, (res.tier, r.key, r.entry)
                seen.setdefault((res.tier, r.section), set()).add(r.entry)
    assert seen[("semantic", "setup")] == {"semantic.init", "semantic.get_batch", "semantic.lr_at"}
    assert seen[("semantic", "forward")] == {"semantic.activations"}
    assert seen[("semantic", "backward")] == {"semantic.grads"}
    assert seen[("semantic", "trajectory")] == {"semantic.trajectory.params", "semantic.trajectory.lr",
                                                "semantic.trajectory.loss", "semantic.trajectory.grad_norm"}
    assert seen[("semantic", "generate")] == {"semantic.generate.logits", "semantic.generate.tokens"}
    assert seen[("backend", "forward")] <= {"backend.k", "backend.floor"}
    assert sensitivity.tolerance_key({"tier": "semantic", "section": "forward", "entry": "semantic.activations"}) \
        == "semantic.activations"


# ----------------------------------------------------------------------------- an edited implementation

def renamed(text):
    """The frozen copy with forward's local `th` renamed `tt` (a refactor that changes no math)."""
    a, b = text.index("def forward("), text.index("def backward(")
    return text[:a] + re.sub(r"\bth\b", "tt", text[a:b]) + text[b:]


@pytest.fixture
def renamed_impl(tmp_path):
    path = tmp_path / "gpt2_renamed.py"
    path.write_text(renamed(SOURCE), encoding="utf-8")
    return path


def test_entries_that_no_longer_apply_are_information(renamed_impl):
    """Against an edited file the catalog entries whose text is gone are not run, not counted and not a
    failure: the report says how many no longer apply; the counts cover only the entries that did."""
    gone = [m["name"] for m in catalog.CATALOG if catalog.status_of(m, renamed_impl.read_text()) != "ok"]
    assert "gelu_cubic_const" in gone and "eq_gelu_reassociated" in gone
    doc = mutate.run_catalog(catalog.select(only=gone + ["grad_norm_no_sqrt"]), ("semantic",), renamed_impl)
    s = doc["summary"]
    assert sorted(s["stale"]) == sorted(gone) and s["applied"] == 1 and s["entries"] == len(gone) + 1
    assert s["kill_rate"]["semantic"] == {"killed": 1, "of": 1, "rate": 1.0}
    assert s["survivors"]["semantic"] == [] and s["false_alarms"]["semantic"] == []
    assert all(r["verdicts"] == {} for r in doc["results"] if r["name"] in gone)
    text = "\n".join(mutate.format_report(doc))
    assert f"{len(gone)} of {len(gone) + 1} catalog entries no longer apply to {renamed_impl}" in text
    assert "kill rate, semantic tier: 1/1" in text
    table = text.split("\n\n")[0]
    assert not any(n in table for n in gone)       # no row, no verdict


def test_cli_exit_status_ignores_entries_that_no_longer_apply(renamed_impl, capsys):
    gone = [m["name"] for m in catalog.CATALOG if catalog.status_of(m, renamed_impl.read_text()) != "ok"]
    args = ["--impl", str(renamed_impl), "--report", "--quiet"] + [a for n in gone for a in ("--only", n)]
    assert mutate_cli.main(args) == 0
    assert f"{len(gone)} of {len(gone)} catalog entries no longer apply to {renamed_impl}" in capsys.readouterr().out
    assert mutate_cli.main(["--impl", str(renamed_impl), "--list"]) == 0
    out = capsys.readouterr().out
    assert f"{len(gone)} of {len(catalog.CATALOG)} catalog entries no longer apply" in out


def test_sensitivity_probe_that_no_longer_applies_is_information(renamed_impl):
    probe = next(p for p in catalog.PROBES if p["name"] == "gelu_cubic")
    doc = sensitivity.run_sensitivity([probe], ("semantic",), renamed_impl)
    assert doc["probes"][0]["status"] == "stale" and doc["probes"][0]["tiers"] == {}
    assert f"1 of 1 probes no longer apply to {renamed_impl}" in "\n".join(sensitivity.format_sensitivity(doc))


def test_write_rewrites_writes_every_rounding_only_rewrite_of_the_frozen_copy(tmp_path):
    """The one writer of the rewrites calibrate.py and the fresh tier's false-alarm scan run: every
    equivalent entry on the frozen copy; on another file, the entries that do not apply are named."""
    written = catalog.write_rewrites(tmp_path)
    equivalent = [m["name"] for m in catalog.CATALOG if m["kind"] == "equivalent"]
    assert [name for name, _ in written] == equivalent and len(equivalent) >= 10
    assert all(path.read_text() != catalog.FIXTURE.read_text() for _, path in written)
    other = tmp_path / "other.py"
    other.write_text("def forward():\n    pass\n")
    said = []
    assert catalog.write_rewrites(tmp_path / "none", base=other, log=said.append) == []
    assert len(said) == len(equivalent) and all("stale" in s for s in said)
