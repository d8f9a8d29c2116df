"""verify --report PATH: one self-contained HTML file (no server, images inline as PNG) with

- the verdict line and, per case and tier, every check's error / tolerance on a log axis in check
  order (setup, forward, loss, backward, trajectory), the first divergence marked;
- per trajectory case, the trajectory's worst error / tolerance at each step;
- per trajectory case, the code flow of the model drawn from the contract's activation taps
  (embedding -> blocks -> ln_f -> logits -> loss, and the parameter gradients back through the
  blocks), each box with its tensor's shape and coloured by its error / tolerance, so an edit that
  changed the function shows where in the flow it did.

matplotlib draws on its Agg canvas (no pyplot, no global state); the file is written atomically."""
import base64
import html
import io
import math

from nanoproof.paths import atomic_write_bytes

RATIO_FLOOR, RATIO_CEIL = 1e-8, 1e8
SECTION_COLORS = {"setup": "C7", "forward": "C0", "loss": "C4", "backward": "C1", "trajectory": "C2",
                  "generate": "C5", "score": "C6"}
# one transformer block's activation taps, in forward order (harness/spec/contract.py's names)
BLOCK_TAPS = ("ln_1", "attn.qkv", "attn.att", "attn.y", "attn.proj", "res_1", "ln_2", "mlp.fc",
              "mlp.gelu", "mlp.proj", "out")
# one block's parameters, in backward order (each box: weight and bias together)
BLOCK_PARAMS = ("mlp.c_proj", "mlp.c_fc", "ln_2", "attn.c_proj", "attn.c_attn", "ln_1")


def ratio(row):
    """error / tolerance of a row, for plotting: inf for a failure without a number (a crash), None
    for a row with nothing to compare (a skip)."""
    if row.err is None or row.tol is None:
        return math.inf if row.failed else None
    if row.tol == 0:
        return 0.0 if row.err == 0 else math.inf
    return row.err / row.tol


def _clip(x):
    return min(max(x, RATIO_FLOOR), RATIO_CEIL)


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def ratio_plot(result):
    """PNG (base64) of every check's error / tolerance in check order, the first divergence marked."""
    fig = _figure(10, 3.4)
    ax = fig.add_subplot()
    points = [(i, ratio(r), r) for i, r in enumerate(result.rows)]
    points = [(i, x, r) for i, x, r in points if x is not None]
    for section in dict.fromkeys(r.section for _, _, r in points):
        xs = [(i, _clip(x)) for i, x, r in points if r.section == section]
        ax.scatter([i for i, _ in xs], [x for _, x in xs], s=9, color=SECTION_COLORS.get(section, "C9"),
                   label=section)
    bad = [(i, _clip(x)) for i, x, r in points if r.failed]
    if bad:
        ax.scatter([i for i, _ in bad], [x for _, x in bad], s=30, facecolors="none", edgecolors="red",
                   label="FAIL")
    ax.axhline(1.0, color="red", lw=0.8, ls="--")
    ax.text(0, 1.3, "tolerance", color="red", fontsize=7)
    first = result.first_failure()
    if first is not None:
        i = result.rows.index(first)
        ax.axvline(i, color="red", lw=1)
        ax.text(i, RATIO_CEIL / 10, f" first divergence: {first.name}"
                + ("" if first.step is None else f" @ step {first.step}"), color="red", fontsize=8,
                va="top", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set_yscale("log")
    ax.set_ylim(RATIO_FLOOR / 3, RATIO_CEIL * 3)
    ax.set_xlabel("check, in order: setup, forward, loss, backward, trajectory")
    ax.set_ylabel("error / tolerance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def trajectory_plot(result):
    """PNG (base64) of the trajectory's worst error / tolerance per step, or None without one."""
    by_step = {}
    for r in result.rows:
        x = ratio(r)
        if r.section == "trajectory" and x is not None and r.step is not None:
            by_step[r.step] = max(by_step.get(r.step, 0.0), x)
    if not by_step:
        return None
    fig = _figure(10, 2.6)
    ax = fig.add_subplot()
    steps = sorted(by_step)
    ax.plot(steps, [_clip(by_step[s]) for s in steps], "o-", ms=3)
    ax.axhline(1.0, color="red", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("worst error / tolerance")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _colour(x, cmap):
    if x is None:
        return (0.9, 0.9, 0.9, 1.0)
    if math.isinf(x) or x > 1:
        return (0.95, 0.25, 0.2, 1.0)
    return cmap((math.log10(_clip(x)) - math.log10(RATIO_FLOOR)) / -math.log10(RATIO_FLOOR))


def flow_plot(result, n_layer):
    """PNG (base64) of the model's code flow for one trajectory case, coloured by `result`'s rows:
    forward taps down each block's column, left to right, then ln_f, logits and the loss; below, the
    parameter gradients in backward order, right to left."""
    from matplotlib import colormaps
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    cmap = colormaps["viridis"]
    rows = {r.key: r for r in result.rows if r.key}
    first = result.first_failure()
    first_key = first.key if first is not None else None

    def tap(key):
        r = rows.get(key)
        return (None, None) if r is None else (ratio(r), r.shape)

    columns = [("embedding", [("emb", "step0/activations/emb")])]
    for i in range(n_layer):
        columns.append((f"block {i}", [(t, f"step0/activations/h.{i}.{t}") for t in BLOCK_TAPS]))
    columns.append(("head", [("ln_f", "step0/activations/ln_f"), ("logits", "step0/activations/logits"),
                             ("loss", "step0/loss")]))
    grads = [("head", [("ln_f", ["step0/grads/ln_f.weight", "step0/grads/ln_f.bias"])])]
    for i in reversed(range(n_layer)):
        grads.append((f"block {i}", [(p, [f"step0/grads/h.{i}.{p}.weight", f"step0/grads/h.{i}.{p}.bias"])
                                     for p in BLOCK_PARAMS]))
    grads.append(("embedding", [("wte (tied with lm_head)", ["step0/grads/wte"]), ("wpe", ["step0/grads/wpe"])]))

    ncol = len(columns)
    fig = _figure(max(8.0, 2.1 * ncol), 8.6)
    ax = fig.add_axes([0, 0, 1, 0.93])
    ax.set_xlim(0, ncol)
    ax.set_ylim(-10.6, 12.5)
    ax.axis("off")
    box_h, box_w = 0.8, 0.86

    def box(x, y, label, x_ratio, shape, first_here=False):
        colour = _colour(x_ratio, cmap)
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02",
                                    facecolor=colour, edgecolor="black" if not first_here else "#600",
                                    lw=0.6 if not first_here else 3))
        dark = sum(colour[:3]) < 1.3
        shape_text = "" if shape is None else "(" + ",".join(map(str, shape)) + ")"
        value = "" if x_ratio is None else ("FAIL" if (math.isinf(x_ratio) or x_ratio > 1) else f"{x_ratio:.0e}")
        value = "FIRST DIVERGENCE" if first_here else value
        ax.text(x, y + 0.12, label, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.text(x, y - 0.2, f"{shape_text} {value}".strip(), ha="center", va="center", fontsize=5.5,
                color="white" if dark else "black")

    def arrow(a, b):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=7, lw=0.6, color="0.3"))

    prev = None
    for c, (title, taps) in enumerate(columns):
        x = c + 0.5
        ax.text(x, 12.0, title, ha="center", fontsize=8, weight="bold")
        for k, (label, key) in enumerate(taps):
            y = 11 - k
            x_ratio, shape = tap(key)
            box(x, y, label, x_ratio, shape, key == first_key)
            if prev is not None and k == 0:     # the residual stream into the next column
                arrow(prev, (x - box_w / 2, y))
            elif prev is not None:
                arrow(prev, (x, y + box_h / 2))
            prev = (x + box_w / 2, y) if k == len(taps) - 1 else (x, y - box_h / 2)
    ax.text(ncol / 2, -0.6, "backward: parameter gradients (weight and bias together), from the loss back",
            ha="center", fontsize=8, weight="bold")
    for c, (title, params) in enumerate(grads):
        x = ncol - c - 0.5
        for k, (label, keys) in enumerate(params):
            y = -1.8 - k * 1.6
            found = [tap(key) for key in keys]
            ratios = [r for r, _ in found if r is not None]
            box(x, y, label, max(ratios) if ratios else None, found[0][1], first_key in keys)
    sm_note = "colour: error / tolerance, log scale from 1e-8 (dark) to 1 (yellow); red: over the tolerance"
    fig.text(0.5, 0.965, f"{result.case} — {result.tier} tier{f' [{result.backend}]' if result.backend else ''}: "
             f"the model's flow from the contract's activation taps", ha="center", fontsize=10)
    fig.text(0.5, 0.945, sm_note, ha="center", fontsize=7)
    return _png(fig)


def write(path, results, verdict_line, impl, seconds, cases):
    """Write the report for verify's `results` (TierResults) to `path`; `cases`: name -> Case."""
    parts = [f"<h1>nanoproof verify</h1><p><b>{html.escape(str(impl))}</b></p>",
             f"<pre>{html.escape(verdict_line)} ({seconds:.1f} s)</pre>"]
    flows = {}
    for r in results:
        label = f"{r.case} — {r.tier}" + (f" [{r.backend}]" if r.backend else "")
        if r.skipped:
            parts.append(f"<h2>{html.escape(label)}: skip</h2><p>{html.escape(r.skipped)}</p>")
            continue
        if r.tier == "exact" or not r.rows:
            parts.append(f"<h2>{html.escape(label)}: {html.escape(r.info or r.verdict)}</h2>")
            continue
        first = r.first_failure()
        n_failed = sum(x.failed for x in r.rows)
        head = f"{label}: {r.verdict} — {len(r.rows)} checks" + (f", {n_failed} failed" if n_failed else "")
        parts.append(f"<h2>{html.escape(head)}</h2>")
        if first is not None:
            parts.append(f"<p style='color:#b00'>first divergence: {html.escape(first.name)}"
                         f"{'' if first.step is None else f' @ step {first.step}'}: {html.escape(first.note or '')}</p>")
        parts.append(f"<img src='data:image/png;base64,{ratio_plot(r)}'>")
        traj = trajectory_plot(r)
        if traj:
            parts.append(f"<img src='data:image/png;base64,{traj}'>")
        case = cases.get(r.case)
        if case is not None and getattr(case, "kind", "") == "trajectory" and r.tier in ("semantic", "backend"):
            # the flow of each case once: coloured by its first failing tier, else by the semantic tier
            if r.case not in flows or (r.failed and not flows[r.case].failed):
                flows[r.case] = r
    for name, r in flows.items():
        parts.append(f"<h2>{html.escape(name)}: code flow ({html.escape(r.tier)} tier)</h2>")
        parts.append(f"<img src='data:image/png;base64,{flow_plot(r, cases[name].config['n_layer'])}'>")
    doc = ("<!doctype html><html><head><meta charset='utf-8'><title>nanoproof verify</title>"
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
           "h2{font-size:1.05em;margin-top:1.6em}</style></head><body>" + "\n".join(parts) + "</body></html>")
    atomic_write_bytes(path, doc.encode("utf-8"))
