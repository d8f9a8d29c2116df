"""verify's output reads like pytest's: a few lines when the function is the same; on a failure the
first divergence first, a short table around it and the count of what failed downstream; every
number with its unit; -q for the verdict alone, --full for every row, --fail-fast to stop early."""
from conftest import last_line, run_verify
from nanoproof.measure import catalog


def mutant(tmp_path, name):
    path = tmp_path / f"gpt2_{name}.py"
    path.write_text(catalog.apply(catalog.by_name()[name], catalog.FIXTURE.read_text()))
    return path


def test_a_pass_takes_a_line_per_case_and_tier():
    proc = run_verify(catalog.FIXTURE, "--case", "tiny", "--case", "generate", "--tier", "semantic",
                      "--tier", "backend")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) <= 8, proc.stdout
    assert any(ln.startswith("tiny — semantic") and " ok " in ln and "checks" in ln for ln in lines), proc.stdout
    assert lines[-1].startswith("verify: OK")


def test_a_failure_shows_the_first_divergence_then_its_neighbours(tmp_path):
    proc = run_verify(mutant(tmp_path, "gelu_cubic_const"), "--case", "tiny", "--tier", "semantic")
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("tiny — semantic"))
    assert "FAIL" in lines[head] and "checks FAIL" in lines[head]
    assert lines[head + 1].startswith("  first divergence: tiny: semantic tier, forward, step 0: h.0.mlp.gelu")
    table = lines[head + 2:]
    failing = [ln for ln in table if ln.rstrip().endswith("FAIL")]
    assert "h.0.mlp.gelu" in failing[0] and "h.0.mlp.fc" in "\n".join(table[:4])   # a neighbour before it
    more = [ln for ln in table if "more failing rows after it" in ln]
    assert len(more) == 1 and int(more[0].split("and ")[1].split()[0]) > 50
    assert len(lines) < 25, proc.stdout
    full = run_verify(mutant(tmp_path, "gelu_cubic_const"), "--case", "tiny", "--tier", "semantic", "--full")
    assert len(full.stdout.splitlines()) > 100 and "more failing rows" not in full.stdout


def test_numbers_carry_their_units(tmp_path):
    """An init slip is measured in ulp: the error and the tolerance both say so."""
    proc = run_verify(mutant(tmp_path, "init_cproj_scale"), "--case", "tiny", "--tier", "semantic")
    assert proc.returncode == 1
    line = last_line(proc)
    assert " ulp > tolerance " in line and line.split("(error ")[1].split(" > ")[0].endswith(" ulp"), line


def test_quiet_prints_the_verdict_alone(tmp_path):
    proc = run_verify(mutant(tmp_path, "gelu_cubic_const"), "--case", "tiny", "--tier", "semantic", "-q")
    assert proc.returncode == 1
    assert len(proc.stdout.strip().splitlines()) == 1 and proc.stdout.startswith("verify: FAIL")


def test_fail_fast_stops_after_the_first_failing_case(tmp_path):
    path = mutant(tmp_path, "gelu_cubic_const")
    proc = run_verify(path, "--case", "tiny", "--case", "gpt2-vocab", "--tier", "semantic", "--fail-fast")
    assert proc.returncode == 1
    assert "tiny — semantic" in proc.stdout and "gpt2-vocab" not in proc.stdout, proc.stdout
    slow = run_verify(path, "--case", "tiny", "--case", "gpt2-vocab", "--tier", "semantic")
    assert "gpt2-vocab — semantic" in slow.stdout
