"""metrolab's own import graph, read from the source (every import, at the top or inside a function),
at the grain of layers: a top package (netem, workloads, reports, metrolab) or harness's
subpackages and modules (harness.lab, harness.settings, ...). `python -m tests.support.imports`
prints the cycles and the count of function-level imports."""

from __future__ import annotations

import ast
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "netem", "workloads", "reports", "metrolab")


def unit(module: str) -> str:
    if module == "metrolab.__main__":
        return module  # the console entry, above the CLI (the facade, metrolab, is below it)
    parts = module.split(".")
    if parts[0] == "metrolab" and len(parts) > 1 and parts[1] in PACKAGES:
        parts = parts[1:]  # metrolab.harness.lab.x -> harness.lab, metrolab.netem.x -> netem
    return ".".join(parts[:2]) if parts[0] == "harness" and len(parts) > 1 else parts[0]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] != "metrolab":
        parts.insert(0, "metrolab")  # harness/lab/x.py is metrolab.harness.lab.x
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        assert node.module is not None
        module = node.module
    # `from harness import settings` imports the module metrolab.harness.settings, not the package
    return [f"{module}.{a.name}" if _is_module(f"{module}.{a.name}") else module for a in node.names]


def _is_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))  # metrolab/harness is a link to harness/
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def graph() -> tuple[dict[str, set[str]], Counter]:
    """({unit: units it imports}, {unit: function-level imports})."""
    edges: dict[str, set[str]] = defaultdict(set)
    deferred: Counter = Counter()
    for top in PACKAGES:
        for f in sorted((ROOT / top).rglob("*.py")):  # rglob does not follow metrolab/'s links
            mod = _module(f)
            package = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
            tree = ast.parse(f.read_text(), str(f))
            in_functions = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                            for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    deferred[unit(mod)] += id(node) in in_functions
                    for t in _targets(node, package):
                        if t.split(".")[0] == "metrolab":
                            edges[unit(mod)].add(unit(t))
    return edges, deferred


def deferred() -> list[tuple[str, int, bool]]:
    """Every import inside a function: (file, line, whether it says why). The reason is a `# deferred:`
    comment on its line, or on the first line of the run of imports it belongs to."""
    out = []
    for top in PACKAGES:
        for f in sorted((ROOT / top).rglob("*.py")):
            text = f.read_text()
            lines = text.splitlines()
            tree = ast.parse(text, str(f))
            nodes = sorted({(n.lineno, n.end_lineno) for fn in ast.walk(tree)
                            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                            for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))})
            ends = {end for _, end in nodes}
            said: dict[int, bool] = {}
            for start, _ in nodes:
                run_head = said.get(start - 1) if (start - 1) in ends else None
                said[start] = "# deferred:" in lines[start - 1] or bool(run_head)
                for k in range(start, dict(nodes)[start] + 1):
                    said[k] = said[start]
                out.append((str(f.relative_to(ROOT)), start, said[start]))
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            comp.append(v)
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    e, d = graph()
    unsaid = [f"{f}:{n}" for f, n, ok in deferred() if not ok]
    print(f"without a reason: {', '.join(unsaid) or 'none'}")
    print(f"function-level imports: {sum(d.values())} ({', '.join(f'{u} {n}' for u, n in d.most_common(8))}, ...)")
    for c in cycles(e):
        print(f"cycle of {len(c)}: {' '.join(c)}")
