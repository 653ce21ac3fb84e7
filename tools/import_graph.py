"""Print cherrybench's internal import graph by layer and flag imports that run upward.

    python tools/import_graph.py          # the upward edges and cycles
    python tools/import_graph.py --all    # every edge

Layers (low to high): records and models -> engine -> metrics and selectors -> runners -> cli.
A module's layer comes from LAYERS below (first matching prefix wins)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "cherrybench"

# (module prefix, layer); first match wins, longest prefixes first
LAYERS = [
    ("cherrybench.cli", 4), ("cherrybench.__main__", 4), ("cherrybench.demo", 4), ("cherrybench.options", 4),
    ("cherrybench.regress.cli", 4),
    ("cherrybench.runners", 3),
    ("cherrybench.metrics", 2), ("cherrybench.selectors", 2), ("cherrybench.regress", 2),
    ("cherrybench.scoring", 1), ("cherrybench.finetune", 1), ("cherrybench.evaluate", 1), ("cherrybench.pairwise", 1),
    ("cherrybench.lm", 1), ("cherrybench.cache", 1), ("cherrybench.ray_engine", 1),
    ("cherrybench.context", 1), ("cherrybench.embedders", 1), ("cherrybench.diversity", 1), ("cherrybench.audit", 1),
    ("cherrybench.gradients", 1),
    ("cherrybench", 0),
]
NAMES = {0: "records/models", 1: "engine", 2: "metrics/selectors", 3: "runners", 4: "cli"}


def layer(module: str) -> int:
    for prefix, level in sorted(LAYERS, key=lambda p: -len(p[0])):
        if module == prefix or module.startswith(prefix + "."):
            return level
    return 0


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def edges() -> list[tuple[str, str, int]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        src = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            for t in targets:
                if t.startswith("cherrybench"):
                    out.append((src, t, node.lineno))
    return out


def cycles(pairs: set[tuple[str, str]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for a, b in pairs:
        if a != b and not b.startswith(a + ".") and not a.startswith(b + "."):
            graph.setdefault(a, set()).add(b)
    found, stack, seen = [], [], set()

    def visit(node):
        if node in stack:
            cycle = stack[stack.index(node):] + [node]
            key = frozenset(cycle)
            if key not in seen:
                seen.add(key)
                found.append(cycle)
            return
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for start in sorted(graph):
        visit(start)
    return found


def main() -> int:
    all_edges = edges()
    upward = [(a, b, line) for a, b, line in all_edges if layer(b) > layer(a)]
    if "--all" in sys.argv:
        for a, b, line in all_edges:
            print(f"{a}:{line} -> {b}")
    for a, b, line in upward:
        print(f"UP {a}:{line} ({NAMES[layer(a)]}) -> {b} ({NAMES[layer(b)]})")
    found = cycles({(a, b) for a, b, _ in all_edges})
    for cycle in found:
        print("CYCLE " + " -> ".join(cycle))
    print(f"{len(all_edges)} imports, {len(upward)} upward, {len(found)} cycles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
