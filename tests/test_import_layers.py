"""The import contract: one direction through the house, and no cycles between modules.

Every ``import`` counts, including those inside functions (a lazy import hides a cycle, it does
not remove it); imports under ``if TYPE_CHECKING:`` do not run and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import meerbench

PACKAGE = Path(meerbench.__file__).parent

#: Lower layers first. A module may import from its own layer and the layers below it, never
#: above: data and models know nothing of metrics' users, metrics know nothing of models or
#: files beyond the store, reports read Results, and only the front doors see everything.
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer.split()) for layer in (
    "errors",
    "io settings schema registry",
    "store",
    "metrics",
    "data",
    "protocol models",
    "results",
    "tasks",
    "engine train",
    "report",
    "cli testing __init__",
))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The meerbench modules ``path`` imports (``from pkg import mod`` resolved to ``pkg.mod``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if n in modules else node.module for n in names]
        else:
            continue
        if _type_checking_only(node, parents):
            continue
        found |= {n for n in names if n.split(".")[0] == "meerbench" and n in modules}
    return found - {module_name(path)}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


#: Modules that sit lower than their package: the torch-free model contract (the ArcFace template
#: and the preprocessing contract, which data preparation and readers of cards need).
PLACED = {"meerbench.models.contract": "schema"}


def layer_of(module: str) -> int:
    part = PLACED.get(module) or (module.split(".")[1] if "." in module else "__init__")
    for index, layer in enumerate(LAYERS):
        if part in layer:
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS: place it there")


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                   for a, targets in graph().items() for b in targets
                   if layer_of(b) > layer_of(a) and not a.startswith(b + "."))
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = graph()
    # a package's __init__ importing its own submodules is how packages re-export; their
    # importing the package back is the cycle to forbid
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_contract_sees_every_module_and_an_edge_it_must_see() -> None:
    edges = graph()
    assert "meerbench.store" in edges and "meerbench.engine.evaluate" in edges
    assert "meerbench.store" in edges["meerbench.engine.cache"]
    assert all(layer_of(module) >= 0 for module in edges)
