"""The package's import graph: no cycles among rodimus_lab modules (imports inside functions count too;
annotation-only imports under ``if TYPE_CHECKING:`` do not), and rodimus_kernels never imports rodimus_lab.

docs/architecture.md draws this graph; ``python tests/test_imports.py`` prints it.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, package_dir: Path, package: str) -> str:
    parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module → the modules (or packages) it imports, for every .py file under ``package_dir``."""
    modules = {module_name(p, package_dir, package): p for p in package_dir.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        found = set()
        for node in _nodes(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:   # relative: resolve against this module's package
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:   # `from pkg import module` imports the module
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {m for m in found if m != name}
    return graph


def _nodes(body):
    """Every statement, nested ones included, except annotation-only ``if TYPE_CHECKING:`` blocks."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _nodes(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _nodes(inner)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_rodimus_lab():
    graph = imports(ROOT / "rodimus_lab", "rodimus_lab")
    assert "rodimus_lab.model" in graph and "rodimus_lab.generate" in graph["rodimus_lab.model"]
    assert cycles(graph) == [], "import cycles among rodimus_lab modules (break them by moving the shared part down)"


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kernels_never_import_rodimus_lab():
    graph = imports(ROOT / "kernels", "rodimus_kernels")
    assert not {m for targets in graph.values() for m in targets if m.startswith("rodimus_lab")}


if __name__ == "__main__":
    for module, targets in sorted(imports(ROOT / "rodimus_lab", "rodimus_lab").items()):
        inside = sorted(t for t in targets if t.startswith("rodimus_lab"))
        print(f"{module:40s} -> {', '.join(inside)}")
