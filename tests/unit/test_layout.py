"""The architecture as a test: the package's layers import only downwards, and no module imports itself back.

Layers, bottom to top: schema → geometry → nets → data → run → analysis → training → cli. Every
import is counted, also those inside functions (a cycle hidden in a function is still a cycle).
``hydra_plugins/eqtrain_sweeper`` (the grid sweeper's class, where Hydra looks for sweepers) belongs to
the cli layer: it may use eqtrain.cli and below, and nothing below cli may use it.
"""

import ast
from pathlib import Path

import eqtrain

ROOT = Path(eqtrain.__file__).parent
PLUGINS = ROOT.parent / "hydra_plugins" / "eqtrain_sweeper"
OURS = ("eqtrain", "hydra_plugins.eqtrain_sweeper")
LAYERS = ["schema", "geometry", "nets", "data", "run", "optim", "analysis", "training", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The eqtrain modules a file imports (relative imports resolved; ``from x import y`` counts y if it is a module)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(OURS)}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith(OURS):
                found.add(base)
                found |= {
                    f"{base}.{a.name}"
                    for a in node.names
                    if (ROOT.parent / f"{base}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                }
    return found - {name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in [*ROOT.rglob("*.py"), *PLUGINS.rglob("*.py")]}


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "hydra_plugins":
        return LAYERS.index("cli")
    if len(parts) == 1:  # eqtrain/__init__: the front door above all (eqtrain.train loads cli.python_api)
        return len(LAYERS)
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else -1


def upward_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return [(m, d) for m, deps in edges.items() for d in deps if layer(d) > layer(m)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return [*path, node, dep]
            if dep not in state and (cycle := visit(dep, [*path, node])):
                return cycle
        state[node] = 2
        return None

    return [c for m in sorted(edges) if m not in state and (c := visit(m, []))]


def test_layers_import_only_downwards():
    assert upward_edges(graph()) == []


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_the_checks_have_teeth():
    edges = graph()
    assert "eqtrain.training.loop" in edges["eqtrain.cli.train"]  # imported inside main(): still seen
    assert "eqtrain.cli.sweeper" in edges["hydra_plugins.eqtrain_sweeper.grid_sweeper"]  # the plugin is seen
    assert upward_edges({"eqtrain.training.loop": {"hydra_plugins.eqtrain_sweeper.grid_sweeper"}}) != []
    assert upward_edges({"eqtrain.nets.cnn": {"eqtrain.training.loop"}}) == [
        ("eqtrain.nets.cnn", "eqtrain.training.loop")
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
