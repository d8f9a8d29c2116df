"""The mechanical refactors of scripts/refactor_drill.py (harness/measure/refactors.py): they keep the
function of the code they edit, and they do edit it. The drill itself (three full pytest runs in
copies of the checkout) is a command, not a test: README, "Tests"."""
import ast
import textwrap

from conftest import impl_path, last_line, run_verify
from nanoproof.measure.refactors import rename_locals, reorder_functions

TRICKY = textwrap.dedent('''
    import math
    LIMIT = 3

    def helper(x, scale=2):
        return x * scale

    def tricky(values, scale=5):
        total = 0
        squares = [v * v for v in values]
        key = lambda total: -total           # a lambda parameter named like a local: left alone
        for i, v in enumerate(sorted(squares, key=key)):
            total += helper(v, scale=scale) + i
        text = f"{total:.1f}|{LIMIT}|{math.floor(total / 7)}"
        def inner():
            nonlocal total
            total += 1
            return total
        inner()
        del squares
        return text, total

    def counter():
        global LIMIT
        LIMIT += 1
        found = LIMIT
        return found
''')


def _run(source):
    scope = {}
    exec(compile(source, "<test>", "exec"), scope)
    return scope["tricky"]([3, 1, 2]), scope["tricky"]([4.5], scale=1), scope["counter"]()


def test_rename_keeps_the_function_of_tricky_scopes():
    new, n_names, n_functions = rename_locals(TRICKY)
    assert _run(new) == _run(TRICKY)
    assert "total_renamed" not in new and "LIMIT_renamed" not in new   # nonlocal / global: kept
    for name in ("squares", "key", "text", "i", "v", "found"):
        assert f"{name}_renamed" in new, name
    assert "helper(v_renamed, scale=scale)" in new   # keyword names and parameters are not locals
    assert (n_names, n_functions) == (6, 2)


def test_reorder_reverses_the_functions_and_keeps_the_rest():
    new, order = reorder_functions(TRICKY)
    assert order == ["counter", "tricky", "helper"]
    assert [n.name for n in ast.parse(new).body if isinstance(n, ast.FunctionDef)] == order
    assert new.index("LIMIT = 3") < new.index("def counter")
    assert _run(new) == _run(TRICKY)


def test_the_drill_edits_of_the_implementation_pass_verify(tmp_path):
    """The edits scripts/refactor_drill.py makes to the implementation are real (many names, a new
    order) and keep its function: verify's semantic tier passes on both."""
    source = impl_path().read_text(encoding="utf-8")
    renamed, n_names, _ = rename_locals(source)
    reordered, order = reorder_functions(source)
    original = [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
    assert n_names >= 20 and renamed != source
    assert order == original[::-1] and len(order) >= 5
    for name, text in (("renamed", renamed), ("reordered", reordered)):
        path = tmp_path / f"gpt2_{name}.py"
        path.write_text(text, encoding="utf-8")
        proc = run_verify(path, "--case", "tiny", "--tier", "semantic")
        assert proc.returncode == 0, (name, last_line(proc))
