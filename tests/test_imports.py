"""The import graph of the creditgym package: acyclic, and layered as DESIGN.md says.

Every module's imports (top-level and inside functions) are read with `ast`, without importing
anything, so the test is fast and sees the lazy imports too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("envs", "agents", "credit", "trainers")


def _module_files() -> dict[str, Path]:
    """``creditgym.<folder>.<...>`` -> source file, for every module of the package."""
    out = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(["creditgym", *parts])] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return isinstance(node, ast.If) and name == "TYPE_CHECKING"


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    found = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif _is_type_checking(node):
            todo.extend(node.orelse)  # the body runs only under a type checker
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def _imported_names(module: str, path: Path) -> list[str]:
    """Absolute names of what ``module`` imports at run time (``from a import b`` gives ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base]) if base else ".".join(anchor)
        names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def _graph() -> tuple[nx.DiGraph, dict[str, set[str]]]:
    """The graph of creditgym modules, and each module's top-level third-party imports."""
    files = _module_files()
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    external: dict[str, set[str]] = {}
    for module, path in files.items():
        external[module] = set()
        for name in _imported_names(module, path):
            if not name.startswith("creditgym."):
                external[module].add(name.split(".")[0])
                continue
            # "from a.b import c": c is a module (edge to a.b.c) or a name in a.b (edge to a.b).
            target = name if name in files else name.rpartition(".")[0]
            if target in files and target != module:
                graph.add_edge(module, target)
    return graph, external


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_module_list_covers_the_package() -> None:
    files = _module_files()
    assert "creditgym.trainers.train" in files and "creditgym.credit.gigpo" in files
    assert "creditgym.envs" in files and "creditgym.agents.backends.vllm" in files
    graph, _ = _graph()
    assert graph.has_edge("creditgym.trainers.train", "creditgym.trainers.wiring")


def test_no_import_cycles() -> None:
    graph, _ = _graph()
    cycles = sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)
    assert not cycles, f"import cycles among creditgym modules: {cycles}"


def test_imports_flow_one_way() -> None:
    """scripts -> trainers -> (agents, credit) -> envs; credit imports no torch."""
    forbidden = {
        "envs": {"agents", "credit", "trainers"},
        "credit": {"envs", "agents", "trainers"},
        "agents": {"trainers"},
    }
    graph, external = _graph()
    wrong = sorted((a, b) for a, b in graph.edges if _layer(b) in forbidden.get(_layer(a), set()))
    assert not wrong, f"imports against the layering of DESIGN.md: {wrong}"
    torch_in_credit = sorted(
        m for m, ext in external.items() if _layer(m) == "credit" and "torch" in ext
    )
    assert not torch_in_credit, f"credit modules importing torch: {torch_in_credit}"


def test_import_reader_sees_lazy_and_relative_imports_but_not_type_checking(
    tmp_path: Path,
) -> None:
    """A cycle made only of imports inside functions is still found; typing-only ones are not."""
    a = tmp_path / "a.py"
    a.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from creditgym.credit.graph import G\n"
        "def f():\n    from creditgym.trainers.b import g\n"
    )
    names = _imported_names("creditgym.trainers.a", a)
    assert "creditgym.trainers.b.g" in names
    assert not any(n.startswith("creditgym.credit") for n in names)
    rel = tmp_path / "c.py"
    rel.write_text("from .base import X\nfrom . import rollout\n")
    names = _imported_names("creditgym.trainers.c", rel)
    assert {"creditgym.trainers.base.X", "creditgym.trainers.rollout"} <= set(names)
