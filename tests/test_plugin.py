"""The pytest plugin (harness/pytest_plugin.py, entry point pytest11) in a scratch repository that
holds only a user's GPT-2 file: `pytest --nanoproof-impl FILE` passes for a copy of impl/gpt2.py and
fails for a GELU-constant mutant with the first divergence and the rows around it as the message;
JUnit XML comes from pytest itself; --nanoproof-regen records the exact tier's baseline and fails;
the nanoproof_golden fixture serves the golden data to a user's own tests."""
import subprocess
import sys
import xml.etree.ElementTree as ET

from nanoproof.measure import catalog

FAST = ["--nanoproof-case", "tiny", "--nanoproof-tier", "semantic", "--nanoproof-tier", "exact"]


def pytest_in(folder, *args):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=folder, capture_output=True, text=True, timeout=600)


def test_a_users_file_passes_and_a_mutant_fails_with_its_first_divergence(tmp_path):
    (tmp_path / "gpt2.py").write_text(catalog.FIXTURE.read_text())
    (tmp_path / "gelu.py").write_text(catalog.apply(catalog.by_name()["gelu_cubic_const"], catalog.FIXTURE.read_text()))
    snap = tmp_path / "snapshot.json"
    ok = pytest_in(tmp_path, "--nanoproof-impl", "gpt2.py", "--nanoproof-snapshot", str(snap), *FAST)
    assert ok.returncode == 0, ok.stdout[-3000:]
    assert "1 passed, 1 skipped" in ok.stdout and "no snapshot" not in ok.stdout   # -rs is off: the skip is counted

    regen = pytest_in(tmp_path, "--nanoproof-impl", "gpt2.py", "--nanoproof-snapshot", str(snap), "--nanoproof-regen")
    assert regen.returncode == 1 and "baseline was written" in regen.stdout and snap.is_file()

    junit = tmp_path / "junit.xml"
    bad = pytest_in(tmp_path, "--nanoproof-impl", "gelu.py", "--nanoproof-snapshot", str(snap), *FAST,
                    f"--junitxml={junit}")
    assert bad.returncode == 1
    assert "first divergence: tiny: semantic tier, forward, step 0: h.0.mlp.gelu" in bad.stdout
    assert "more failing rows after it" in bad.stdout and "1 failed, 1 passed" in bad.stdout
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["nanoproof[tiny-semantic]"].find("failure") is not None
    props = {p.get("name"): p.get("value") for p in cases["nanoproof[tiny-exact]"].iter("property")}
    assert props["exact"].startswith("bits changed")


def test_the_golden_fixture_serves_a_users_own_checks(tmp_path):
    (tmp_path / "test_mine.py").write_text(
        "def test_my_loss(nanoproof_golden):\n"
        "    golden = nanoproof_golden('tiny')\n"
        "    assert golden.data['numpy-float64/step0/loss'] > 0\n"
        "    assert golden.data['params0/wte'].shape[1] == 16\n")
    proc = pytest_in(tmp_path)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-2000:]
