"""The fast semantic tier, as the test command of mutmut (pyproject's [tool.mutmut];
scripts/mutmut_report.py --run): impl/gpt2.py in float64 against the float64 golden file of every
case but the score case (verify --tier semantic: init, get_batch, lr_at, every activation, the loss
and every gradient at step 0, the K-step trajectory; and any generate case). No backend tier, no
score tier: well under a second a case.

tests/test_golden.py runs the same tier on the `impl` fixture, which loads the file by path under a
private module name (nanoproof.spec.contract.load_impl). mutmut 3 cannot see mutants through that: its
trampolines compare the active mutant's module ("impl.gpt2") with the function's __module__, so under
a private name every mutant runs the original code, and its per-test stats find no test covering impl.
Here impl is imported as the package module `impl.gpt2`, from the root on sys.path: mutmut's mutants/
copy under mutmut, the checkout otherwise. In the normal suite this also proves that impl/gpt2.py
imports as a plain module and passes the semantic tier that way.
"""
import importlib
from pathlib import Path

import pytest

from nanoproof.judge import report, verify
from nanoproof.spec.cases import CASES
from nanoproof.spec.contract import check_contract

SEMANTIC_CASES = [name for name, case in CASES.items() if case.kind != "score"]


def import_impl():
    """impl/gpt2.py as the module `impl.gpt2` (what mutmut's trampolines need; also used by
    tests/test_mutation_gaps.py)."""
    module = importlib.import_module("impl.gpt2")
    # this checkout's file (under mutmut: the mutated copy mutants/impl/gpt2.py, while nanoproof itself
    # may be imported from the installed clone), never a stale one elsewhere on sys.path
    here = Path(__file__).resolve().parents[1] / "impl" / "gpt2.py"
    assert Path(module.__file__).resolve() == here, module.__file__
    check_contract(module, "impl.gpt2")
    return module


@pytest.fixture(scope="module")
def impl_module():
    return import_impl()


@pytest.mark.parametrize("case", SEMANTIC_CASES)
def test_semantic_tier(impl_module, case):
    results = verify.run(impl_module, [case], ("semantic",))
    assert results, f"verify ran no semantic tier on case {case}"
    for res in results:
        assert not res.skipped, res.skipped
        assert not res.failed, "\n" + "\n".join(report.table(res, full=False)) + "\n" + \
            (report.describe_failure(res) or "")
