"""nanoproof as a pytest plugin (entry point pytest11, loaded wherever nanoproof is installed; inert
unless asked): in a repository of your own,

    pytest --nanoproof-impl my_gpt2.py                 # the golden tiers as pytest items
    pytest --nanoproof-impl my_gpt2.py --nanoproof-case tiny --nanoproof-tier semantic
    pytest --nanoproof-impl my_gpt2.py --nanoproof-regen   # record the exact tier's baseline, then fail

Each case x tier (x backend) of verify becomes one item, `nanoproof[tiny-semantic]` (the exact tier's
items pass with "bit-identical" or "bits changed" as a property, or skip without a baseline); a failing item's
message is the first divergence and the rows around it, as verify prints them; a skipped tier or
backend is a pytest skip with its reason. The file runs in worker processes as under verify, once
per session. --nanoproof-regen writes the bitwise baseline of the exact tier (.nanoproof/ in the
current folder) and fails the run, as pytest-regressions' --force-regen does. JUnit XML comes from
pytest's own --junitxml.

The fixture `nanoproof_golden` gives your own tests the golden data: `nanoproof_golden("tiny")` is
the case's golden file (`.data[path]` arrays by golden path, `.attrs` its attributes)."""
import sys

if any(a == "--nanoproof-impl" or a.startswith("--nanoproof-impl=") for a in sys.argv):
    from nanoproof import env   # standard library only: pin the BLAS before anything loads numpy,
    env.pin()                   # as verify does (the exact tier compares bits in that environment)

import pytest  # noqa: E402

def pytest_addoption(parser):
    group = parser.getgroup("nanoproof", "nanoproof: is this GPT-2 the same function?")
    group.addoption("--nanoproof-impl", metavar="PATH", default=None,
                    help="check this GPT-2 file against nanoproof's golden files: one item per case and tier")
    group.addoption("--nanoproof-case", action="append", default=None, metavar="CASE",
                    help="only this case (repeatable; default: every case)")
    group.addoption("--nanoproof-tier", action="append", default=None, metavar="TIER",
                    help="only this tier (repeatable; default: semantic, backend, score, fresh)")
    group.addoption("--nanoproof-regen", action="store_true", default=False,
                    help="record the exact tier's bitwise baseline of --nanoproof-impl, then fail")
    group.addoption("--nanoproof-snapshot", metavar="PATH", default=None,
                    help="the exact tier's baseline file (default: .nanoproof/snapshot.json, as verify)")


class NanoproofItem(pytest.Item):
    """One case x tier (x backend) of verify."""

    def __init__(self, *, key, **kwargs):
        super().__init__(**kwargs)
        self.key = key

    def runtest(self):
        result = _results(self.config).get(self.key)
        if result is None:
            pytest.fail(f"nanoproof: verify returned no result for {self.key}", pytrace=False)
        if result.skipped:
            pytest.skip(f"{result.case} {result.tier}{f' [{result.backend}]' if result.backend else ''}: "
                        f"{result.skipped}")
        if result.tier == "exact":     # information, never a verdict: kept in the report (junit too)
            self.user_properties.append(("exact", result.info))
            return
        if result.failed:
            raise NanoproofFailure(result)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, NanoproofFailure):
            from nanoproof.judge import report
            result = excinfo.value.result
            lines = [f"first divergence: {report.describe_failure(result)}"]
            lines += report.around_first_failure(result)
            if result.output:
                lines += ["what the code under test printed:"] + result.output.splitlines()[-20:]
            return "\n".join(lines)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.config.getoption("nanoproof_impl"), None, self.name


class NanoproofFailure(Exception):
    def __init__(self, result):
        super().__init__(result.first_failure().name if result.first_failure() else "failed")
        self.result = result


class RegenItem(pytest.Item):
    def runtest(self):
        from nanoproof.scripts import snapshot
        out = self.config.getoption("nanoproof_snapshot")
        status = snapshot.main(["--impl", self.config.getoption("nanoproof_impl")] + (["--out", out] if out else []))
        pytest.fail(f"--nanoproof-regen: the exact tier's baseline was {'written' if status == 0 else 'NOT written'}"
                    f" (scripts/snapshot.py exit {status}); run again without --nanoproof-regen", pytrace=False)


def _plan(config):
    """[(item name, key)] in verify's order, from the cases and tiers asked for (no run yet)."""
    from nanoproof.judge import verify
    from nanoproof.judge.tiers import BACKENDS, ORACLE
    from nanoproof.spec.cases import CASES
    tiers = config.getoption("nanoproof_tier") or list(verify.TIERS)
    cases = config.getoption("nanoproof_case") or list(CASES)
    unknown = [c for c in cases if c not in CASES] + [t for t in tiers if t not in verify.TIERS]
    if unknown:
        raise pytest.UsageError(f"nanoproof: unknown case or tier {', '.join(unknown)} "
                                f"(cases: {', '.join(CASES)}; tiers: {', '.join(verify.TIERS)})")
    return cases, tiers, BACKENDS, ORACLE


def _results(config):
    """verify's results for the session, computed once: {(case, tier, backend): TierResult}."""
    cached = config.stash.get(_RESULTS_KEY_STASH, None)
    if cached is None:
        from nanoproof.judge import verify
        from nanoproof.runner.worker import Isolated
        cases, tiers, _, _ = _plan(config)
        runner = Isolated(config.getoption("nanoproof_impl"))
        cached = {(r.case.split(" (")[0], r.tier, r.backend): r for r in
                  verify.run(runner, cases, tuple(tiers), snapshot_path=config.getoption("nanoproof_snapshot"))}
        config.stash[_RESULTS_KEY_STASH] = cached
    return cached


_RESULTS_KEY_STASH = pytest.StashKey[dict]()


def pytest_collection_modifyitems(session, config, items):
    impl = config.getoption("nanoproof_impl")
    if not impl:
        return
    from pathlib import Path
    if not Path(impl).is_file():
        raise pytest.UsageError(f"--nanoproof-impl {impl}: no such file")
    if config.getoption("nanoproof_regen"):
        items.append(RegenItem.from_parent(session, name="nanoproof[regen]"))
        return
    cases, tiers, backends, oracle = _plan(config)
    from nanoproof.spec.cases import CASES
    for name in cases:
        case = CASES[name]
        for tier in tiers:
            if tier == "fresh" or (case.kind == "score") != (tier == "score") \
                    or (tier == "exact" and case.kind != "trajectory"):
                continue
            for backend in (("",) if tier in ("semantic", "score", "exact") else backends):
                key = (name, tier, backend)
                label = f"{name}-{tier}" + (f"-{backend}" if backend else "")
                items.append(NanoproofItem.from_parent(session, name=f"nanoproof[{label}]", key=key))
    if "fresh" in tiers:
        for backend in (oracle,) + backends:
            items.append(NanoproofItem.from_parent(session, name=f"nanoproof[fresh-{backend}]",
                                                   key=("fresh", "fresh", backend)))


@pytest.fixture(scope="session")
def nanoproof_golden():
    """nanoproof_golden(case_name) -> the case's golden file (read and checked once per case)."""
    from nanoproof.golden.files import read_golden
    from nanoproof.spec.cases import CASES, golden_path
    loaded = {}

    def get(name):
        if name not in CASES:
            raise KeyError(f"no golden case {name!r} (cases: {', '.join(CASES)})")
        if name not in loaded:
            loaded[name] = read_golden(golden_path(name), CASES[name])
        return loaded[name]
    return get
