"""The JSON reports' documented schemas (harness/judge/schemas/) are valid JSON Schema, and what verify
--json and gate --json write conforms to them, on a pass and on a failure."""
import json
import subprocess
import sys

import jsonschema
import pytest

from conftest import run_verify
from nanoproof.measure import catalog
from nanoproof.paths import PACKAGE_DIR, REPO_ROOT

SCHEMAS = PACKAGE_DIR / "judge" / "schemas"


def schema(name):
    doc = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


@pytest.mark.parametrize("mutant", [None, "gelu_cubic_const"])
def test_verify_json_conforms(tmp_path, mutant):
    path = tmp_path / "gpt2.py"
    text = catalog.FIXTURE.read_text()
    path.write_text(text if mutant is None else catalog.apply(catalog.by_name()[mutant], text))
    proc = run_verify(path, "--case", "tiny", "--case", "shakespeare-char", "--tier", "exact", "--tier",
                      "semantic", "--tier", "score", "--json", "-")
    assert proc.returncode == (0 if mutant is None else 1)
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, schema("verify"))
    assert doc["schema_version"] == 1 and doc["verdict"] == ("OK" if mutant is None else "FAIL")


def test_gate_json_conforms():
    for args in (["--value", "2.57", "--step", "80"], ["--value", "3.5", "--step", "80", "--same-run"]):
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gate_val_loss.py"), *args, "--json", "-"],
                              capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        doc = json.loads(proc.stdout)
        jsonschema.validate(doc, schema("gate"))


def test_the_schemas_reject_what_they_should():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema_version": 2, "tool": "verify"}, schema("verify"))
