"""Printing tier results: per case and tier, a table in check order (setup, forward, loss, backward,
trajectory; the generate case step by step) with tensor, step, shape, max abs error, error (normwise
relative, ULPs or count), tolerance and verdict; failing rows are followed by their note (where, how many, got/expected).
Passing runs of setup, trajectory and generate rows are folded into one line each unless full=True."""
import math
from dataclasses import dataclass, field


# ----------------------------------------------------------------------------- the report model

@dataclass
class Row:
    """One check: a tensor (or scalar, or setup item) against its golden value."""
    tier: str                 # exact / semantic / backend / score
    section: str              # setup / forward / loss / backward / trajectory / score / exact
    name: str                 # what was compared, as printed
    step: object = None       # the step it belongs to (None: not step-bound)
    shape: tuple = None
    max_abs: float = None
    err: float = None         # in `metric` units
    metric: str = "rel"       # rel / ulp / exact / band / bits
    tol: float = None
    verdict: str = "ok"       # ok / FAIL / skip / info
    note: str = ""
    backend: str = ""
    key: str = ""             # the result key (golden path) it checks, when it checks one
    entry: str = ""           # the golden/tolerances.json entry its tolerance comes from ("" if none)
    value: float = None       # the observed number, for a row that checks one (the score tier's val loss)

    @property
    def failed(self):
        return self.verdict == "FAIL"

    def as_dict(self):
        d = dict(self.__dict__)
        d["shape"] = list(self.shape) if self.shape is not None else None
        for k in ("max_abs", "err", "tol"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = str(d[k])
        return d


def fail_row(tier, section, name, note, step=None, backend=""):
    return Row(tier, section, name, step, verdict="FAIL", note=note, backend=backend)


@dataclass
class TierResult:
    tier: str
    case: str
    rows: list = field(default_factory=list)
    skipped: str = ""         # reason, when the whole tier could not run
    info: str = ""            # a one-line outcome (the exact tier's "bit-identical")
    seconds: float = 0.0
    backend: str = ""         # the backend a backend/fresh tier ran on ("numpy-float32")
    output: str = ""          # what the code under test printed, when its worker failed
    different: str = ""       # one line, when the code under test is not GPT-2 at all (other params or taps)

    @property
    def failed(self):
        return any(r.failed for r in self.rows)

    @property
    def verdict(self):
        if self.skipped:
            return "skip"
        if self.tier == "exact":
            return "info"
        return "FAIL" if self.failed else "ok"

    def first_failure(self):
        return next((r for r in self.rows if r.failed), None)

    def as_dict(self):
        first = self.first_failure()
        return {"tier": self.tier, "case": self.case, "verdict": self.verdict, "backend": self.backend,
                "skipped": self.skipped, "info": self.info, "seconds": round(self.seconds, 2),
                "output": self.output, "different_function": self.different or None,
                "first_divergence": first.as_dict() if first else None,
                "rows": [r.as_dict() for r in self.rows]}


# ----------------------------------------------------------------------------- printing


UNITS = {"rel": "", "abs": "", "ulp": " ulp", "sigma": " σ", "exact": " differ", "bits": " bits"}


def _num(x, metric=None):
    """A number for the report, with its unit: ulp (units in the last place), σ (standard deviations
    of the seed ensemble), "differ" (count of differing elements); rel and abs errors are bare (the
    column or the line says "rel err")."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    unit = UNITS.get(metric, "")
    if metric in ("ulp", "exact") and (isinstance(x, int) or float(x).is_integer()) \
            and math.isfinite(x) and abs(x) < 1e6:
        return f"{int(x)}{unit}"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.2e}{unit}"


def _shape(s):
    return "-" if s is None else ("()" if len(s) == 0 else "(" + ",".join(map(str, s)) + ")")


HEADER = ("section", "tensor", "step", "shape", "max|Δ|", "error", "tolerance", "verdict")


def _line(cells, widths):
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()


def _fold_key(r):
    """Which passing rows fold into one line, from the row's key (its golden path), never from its
    printed name: setup rows per stage, trajectory rows per step (params apart from scalars),
    generate rows per step, fresh rows per drawn case. The label is the key's last field."""
    key = r.key or ""
    if r.tier == "fresh":   # one line per drawn case: its key's first part ("case0", "gen1", "init2")
        return ("fresh", key.split("/")[0], r.name.rsplit(": ", 1)[0])
    if key.startswith("setup/"):
        return ("setup", key.split("/")[1])
    if key.startswith("trajectory/"):
        params = key.startswith("trajectory/params_after_")
        return ("trajectory", r.step, "params" if params else "scalars")
    if r.section == "generate":
        return ("generate", r.step, "steps")
    return None


def table(result, full=False):
    """Lines of one TierResult's table."""
    if result.skipped:
        return [f"  skipped: {result.skipped}"]
    rows, out = result.rows, []
    display = []  # (cells, note)
    i = 0
    while i < len(rows):
        r = rows[i]
        key = None if (full or r.failed) else _fold_key(r)
        if key is not None:
            j = i
            while j < len(rows) and not rows[j].failed and _fold_key(rows[j]) == key:
                j += 1
            group = rows[i:j]
            if len(group) > 1:
                worst = max(group, key=lambda g: -1 if g.err is None else
                            (g.err / g.tol if g.tol else g.err))
                names = ", ".join(dict.fromkeys(g.key.split("@")[0].rsplit("/", 1)[-1] for g in group))
                if key[0] == "fresh":
                    label = f"{key[2]} ({len(group)} checks)"
                elif key[0] == "setup":
                    label = f"{key[1]} ({len(group)} tensors)"
                elif key[2] == "params":
                    label = f"params after {key[1]} updates ({len(group)} tensors)"
                elif key[0] == "generate":
                    label = f"logits and tokens ({len(group)} checks)"
                else:
                    label = names
                verdict = "ok" if all(g.verdict in ("ok", "skip") for g in group) else "?"
                display.append(([r.section, label, "-" if r.step is None else r.step, "-",
                                 _num(max((g.max_abs or 0.0) for g in group)),
                                 _num(worst.err, worst.metric), _num(worst.tol, worst.metric),
                                 verdict], ""))
                i = j
                continue
        display.append(([r.section, r.name, "-" if r.step is None else r.step, _shape(r.shape),
                         _num(r.max_abs), _num(r.err, r.metric), _num(r.tol, r.metric),
                         r.verdict], r.note))
        i += 1
    widths = [max(len(str(c)) for c in col) for col in zip(HEADER, *[d[0] for d in display])]
    widths = [min(w, 48) for w in widths]
    out.append("  " + _line(HEADER, widths))
    for cells, note in display:
        out.append("  " + _line(cells, widths))
        if note and cells[-1] in ("FAIL", "info"):
            out.append("      -> " + note)
    return out


def describe_failure(result):
    r = result.first_failure()
    if r is None:
        return None
    step = "" if r.step is None else f", step {r.step}"
    err = ""
    if r.err is not None:
        label = {"rel": "rel err", "abs": "abs err"}.get(r.metric, "error")
        err = f" ({label} {_num(r.err, r.metric)} > tolerance {_num(r.tol, r.metric)})"
    backend = f" [{r.backend}]" if r.backend else ""
    return f"{result.case}: {result.tier} tier{backend}, {r.section}{step}: {r.name}{err}" \
           + (f" — {r.note}" if r.note and r.err is None else "")


def _label(result):
    return f"{result.case} — {result.tier}" + (f" [{result.backend}]" if result.backend else "")


def around_first_failure(result, before=2, after=2):
    """The table lines around a result's first failing row: `before` rows ahead of it, the row, `after`
    rows behind it (failing or not), then how many more rows failed further on."""
    rows = result.rows
    i = next(k for k, r in enumerate(rows) if r.failed)
    lo, hi = max(0, i - before), min(len(rows), i + after + 1)
    part = type(result)(result.tier, result.case, rows[lo:hi])
    lines = table(part, full=True)
    more = sum(r.failed for r in rows[hi:])
    if more:
        lines.append(f"  ... and {more} more failing row{'s' if more > 1 else ''} after it "
                     f"(--full prints every row)")
    return lines


def compact(results):
    """verify's default report, pytest-style: one line per case and tier (verdict, number of checks,
    time), and under a failing one the first divergence and a short table around it. Skipped
    backends are left to the summary line's "not run"; a skip reason is printed once."""
    width = max([len(_label(r)) for r in results] + [10])
    out, reasons = [], set()
    for r in results:
        if r.skipped and (r.backend or r.skipped in reasons):
            continue
        if r.skipped:
            reasons.add(r.skipped)
            out.append(f"{_label(r):{width}}  skip  {r.skipped}")
            continue
        if r.tier == "exact":
            out.append(f"{_label(r):{width}}  info  {r.info}")
            continue
        if r.different:   # not GPT-2 at all: one line, no table of rows that fail for that alone
            out.append(f"{_label(r):{width}}  FAIL  a different function")
            out.append(f"  {r.different}")
            continue
        n_failed = sum(x.failed for x in r.rows)
        checks = f"{len(r.rows)} checks" if not n_failed else f"{n_failed} of {len(r.rows)} checks FAIL"
        # the fresh tier's info lists every drawn setting: shown only where it failed
        extra = f", {r.info}" if r.info and r.tier != "fresh" else ""
        out.append(f"{_label(r):{width}}  {r.verdict:4s}  {checks}{extra}"
                   + (f" ({r.seconds:.1f} s)" if r.seconds else ""))
        if r.failed:
            out.append(f"  first divergence: {describe_failure(r)}")
            if r.tier == "fresh" and r.info:
                out.append(f"  drawn: {r.info}")
            out += around_first_failure(r)
            if r.output:
                out.append("  what the code under test printed:")
                out += ["    " + ln for ln in r.output.splitlines()[-20:]]
    return out


@dataclass
class Verdict:
    """What decides verify's exit status: ok, the one summary line, and what did not run (in words)."""
    ok: bool
    line: str
    not_run: list


def _not_run(results):
    """["score (tiny Shakespeare not found at ...)", "cupy-float32, cupy-float64 (cupy is not
    installed)"]: every skipped gating tier or backend, with its reason, once per reason."""
    by_reason = {}
    for r in results:
        if r.tier == "exact" or not r.skipped:
            continue
        what = r.backend or r.tier
        reason = r.skipped.split(": ", 1)[1] if r.backend and r.skipped.startswith(r.backend + ":") \
            else r.skipped
        names = by_reason.setdefault(reason, [])
        if what not in names:
            names.append(what)
    return [f"{', '.join(names)} ({reason})" for reason, names in by_reason.items()]


def verdict(results, require=()):
    """The verdict of a verify run: FAIL when a gating tier failed or a required tier/backend did not
    run; the summary line names the first divergence (semantic tier first), the counts, and what did
    not run, in words (a skip is never counted as a pass)."""
    gating = [r for r in results if r.tier != "exact" and not r.skipped]
    failed = [r for r in gating if r.failed]
    counts = {}
    for r in results:
        c = counts.setdefault(r.tier, [0, 0, 0])
        c[0 if r.skipped else (2 if r.failed else 1)] += 1
    order = ("semantic", "backend", "score", "fresh")
    parts = []
    for t in order:
        if t in counts:
            skip, ok, bad = counts[t]
            if ok + bad:
                parts.append(f"{t} {ok}/{ok + bad} ok")
    exact = [r for r in results if r.tier == "exact"]
    if exact:
        changed = [r.case for r in exact if r.info.startswith("bits changed")]
        same = [r.case for r in exact if r.info.startswith("bit-identical")]
        if changed:
            parts.append(f"exact: bits changed in {', '.join(changed)} (information only)")
        elif same:
            parts.append(f"exact: bit-identical ({', '.join(same)})")
        else:
            from nanoproof.paths import command
            parts.append(f"exact: no snapshot ({command('snapshot', 'snapshot')} before an edit)")
    not_run = _not_run(results)
    missing = []
    for want in require:
        ran = [r for r in results if (r.tier == want or r.backend == want) and not r.skipped]
        if not ran:
            missing.append(want)
    tail = ", ".join(parts) + (f"; not run: {'; '.join(not_run)}" if not_run else "")
    different = next((r for r in failed if r.different), None)
    if different is not None:
        return Verdict(False, f"verify: FAIL — {different.different}", not_run)
    if failed:
        failed.sort(key=lambda r: order.index(r.tier) if r.tier in order else 9)
        return Verdict(False, f"verify: FAIL — first divergence: {describe_failure(failed[0])}; " + tail,
                       not_run)
    if missing:
        return Verdict(False, f"verify: FAIL — required but not run: {', '.join(missing)}; " + tail, not_run)
    if not gating:
        return Verdict(False, "verify: FAIL — nothing was checked; " + tail, not_run)
    return Verdict(True, "verify: OK — same function; " + tail, not_run)


def summary(results):
    """The verdict's one line."""
    return verdict(results).line
