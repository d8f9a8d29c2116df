"""verify --report: a self-contained HTML file whose pictures are written and non-empty: per case and
tier the error / tolerance of every check, the trajectory per step, and the model's code flow with
the first divergence marked."""
import base64
import re

from conftest import last_line, run_verify
from nanoproof.measure import catalog


def images(path):
    text = path.read_text(encoding="utf-8")
    return text, [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)]


def test_report_of_a_pass_and_of_a_failure(tmp_path):
    ok = tmp_path / "ok.html"
    proc = run_verify(catalog.FIXTURE, "--case", "tiny", "--tier", "semantic", "--report", str(ok))
    assert proc.returncode == 0 and last_line(proc).startswith("verify: OK")
    text, pngs = images(ok)
    assert "tiny — semantic: ok" in text and "code flow" in text
    assert len(pngs) == 3 and all(p[:8] == b"\x89PNG\r\n\x1a\n" and len(p) > 10_000 for p in pngs)
    assert "first divergence" not in text

    mutant = tmp_path / "gelu.py"
    mutant.write_text(catalog.apply(catalog.by_name()["gelu_cubic_const"], catalog.FIXTURE.read_text()))
    bad = tmp_path / "bad.html"
    proc = run_verify(mutant, "--case", "tiny", "--tier", "semantic", "--report", str(bad))
    assert proc.returncode == 1 and f"report: {bad}" in proc.stdout
    text, pngs = images(bad)
    assert "first divergence: h.0.mlp.gelu @ step 0" in text and "failed" in text
    assert len(pngs) == 3 and all(len(p) > 10_000 for p in pngs)
    assert pngs[2] != images(ok)[1][2]     # the flow is coloured by the errors
