"""Refactors that keep the function, made mechanically, to show the test suite survives them
(scripts/refactor_drill.py; README, "Tests"): every local variable of every function renamed, and the
top-level functions put in reverse order. Both work on any Python file through its syntax tree, so
they apply to impl/gpt2.py whatever its text is today."""
import ast


def _locals(fn):
    """The names `fn` assigns (its own and nested scopes'), less its parameters and any name some
    nested scope takes as a parameter or declares global/nonlocal: renaming all uses of these inside
    `fn` keeps its meaning."""
    stored, keep = set(), set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            stored.add(node.id)
        elif isinstance(node, ast.arg):
            keep.add(node.arg)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            keep.update(node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not fn:
            keep.add(node.name)
    return stored - keep


def rename_locals(source, suffix="_renamed"):
    """`source` with every local variable of every top-level function (and method) renamed to
    NAME + suffix, at every use inside that function. Returns (new source, number of names renamed,
    number of functions touched)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits, n_names, n_functions = [], 0, 0
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    outermost = [f for f in functions if not any(f is not g and f in ast.walk(g) for g in functions)]
    for fn in outermost:
        names = _locals(fn)
        if not names:
            continue
        n_names += len(names)
        n_functions += 1
        edits += [(node.lineno, node.col_offset, node.end_col_offset, node.id + suffix)
                  for node in ast.walk(fn) if isinstance(node, ast.Name) and node.id in names]
    for lineno, start, end, new in sorted(edits, reverse=True):
        line = lines[lineno - 1].encode("utf-8")        # ast offsets count UTF-8 bytes
        lines[lineno - 1] = (line[:start] + new.encode("utf-8") + line[end:]).decode("utf-8")
    out = "".join(lines)
    ast.parse(out)
    return out, n_names, n_functions


def reorder_functions(source):
    """`source` with its top-level function definitions (decorators and all) in reverse order, each
    put in another's place; everything else stays where it is. Returns (new source, the names in
    their new order)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    spans = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            spans.append((first - 1, node.end_lineno, node.name))
    texts = ["".join(lines[a:b]) for a, b, _ in spans]
    out, pos = [], 0
    for (a, b, _), text in zip(spans, reversed(texts)):
        out.append("".join(lines[pos:a]))
        out.append(text if text.endswith("\n") else text + "\n")
        pos = b
    out.append("".join(lines[pos:]))
    new = "".join(out)
    ast.parse(new)
    return new, [name for *_, name in reversed(spans)]
