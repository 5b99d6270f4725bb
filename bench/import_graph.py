"""Print the import graph of the project's modules (scmm/, app/) and any import cycles.

    python bench/import_graph.py [--tree PATH] [--edges]

Reads every module's ``import`` statements with ``ast`` (top-level and
function-level alike, function-level ones marked ``(late)``), resolves the
relative ones, and prints each cycle found among the project's own modules,
and whether the app's server modules can reach torch through top-level imports.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGES = ("scmm", "app")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at top level?) for each import in ``path``."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, id(node) in top, tuple(f"{base}.{a.name}" for a in node.names)))
            out += [(f"{base}.{a.name}", id(node) in top) for a in node.names]
    return out


def graph(root: Path) -> dict[str, dict[str, bool]]:
    files = [p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")]
    names = {module_name(root, p) for p in files}
    edges: dict[str, dict[str, bool]] = {}
    for path in files:
        src = module_name(root, path)
        for target, top, *submodules in imports(root, path):
            if submodules and any(m in names for m in submodules[0]):
                continue  # ``from pkg import submodule``: the edge is to the submodule
            if target in names and target != src:
                edges.setdefault(src, {})
                edges[src][target] = edges[src].get(target, False) or top
    return edges


def cycles(edges: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Simple cycles between modules (each once), function-level imports included."""
    found, seen = [], set()

    def visit(node, path):
        for nxt in edges.get(node, {}):
            if nxt == path[0] and len(path) > 1:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    found.append(path + [nxt])
            elif nxt not in path and nxt > path[0]:
                visit(nxt, path + [nxt])

    for start in sorted(edges):
        visit(start, [start])
    return found


def reaches_torch(root: Path, start: str, edges) -> list[str] | None:
    """A chain of top-level imports from ``start`` to a module that imports torch at top level."""
    files = {module_name(root, p): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    stack, parent = [start], {start: None}
    while stack:
        node = stack.pop()
        if node in files and any(t == "torch" and top for t, top, *_ in imports(root, files[node])):
            chain = [node]
            while parent[chain[-1]]:
                chain.append(parent[chain[-1]])
            return chain[::-1]
        for nxt, top in edges.get(node, {}).items():
            if top and nxt not in parent:
                parent[nxt] = node
                stack.append(nxt)
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--edges", action="store_true", help="print every edge too")
    args = parser.parse_args()
    root = Path(args.tree)
    edges = graph(root)
    if args.edges:
        for src in sorted(edges):
            print(src, "->", ", ".join(t + ("" if top else " (late)") for t, top in sorted(edges[src].items())))
    found = cycles(edges)
    print(f"{sum(map(len, edges.values()))} import edges between {len(edges)} modules; {len(found)} cycle(s)")
    for cycle in found:
        print("  cycle: " + " -> ".join(cycle))
    for server in ("app.main", "app.data_access", "app.jobs", "scmm.runfolder"):
        chain = reaches_torch(root, server, edges)
        print(f"  {server}: " + ("torch via top-level imports: " + " -> ".join(chain) if chain
                                  else "no top-level path to torch"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
