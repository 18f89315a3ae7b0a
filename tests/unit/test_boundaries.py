"""The architecture, checked: which package may import which, and no import cycles.

- Platform adapters may import only the engine's public surface (``import engine``).
- Imports run one way: ``bots → adapters → engine``; inside the engine, nothing that
  serves a message imports ``engine.training`` (meta-training and the benchmarks).
- No module imports itself back through others (cycles make the order of imports matter
  and hide which module owns a concept).
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "adapters", "bots")
ADAPTERS = ROOT / "adapters"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Project modules that ``path`` imports, anywhere in the file (deferred imports count too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module pkg.mod when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import a.b.c`` of a module inside a package
                target = target.rpartition(".")[0]
            if target:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(path, known)) - {name} for name, path in known.items()}


def test_adapters_import_only_the_public_engine() -> None:
    offenders = []
    for path in ADAPTERS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine."):
                offenders.append(f"{path.name}: from {node.module}")
            if isinstance(node, ast.Import):
                offenders += [f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("engine.")]
            if isinstance(node, ast.ImportFrom) and node.module == "engine":
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name not in engine.__all__]
    assert offenders == []


def test_imports_run_one_way() -> None:
    """engine never imports adapters or bots; adapters never import bots; serving never imports training."""
    below = {"engine": ("adapters", "bots"), "adapters": ("bots",), "bots": ()}
    offenders = []
    for name, targets in graph().items():
        top = name.split(".")[0]
        offenders += [f"{name} -> {t}" for t in targets if t.split(".")[0] in below[top]]
        if top == "engine" and not name.startswith("engine.training"):
            offenders += [f"{name} -> {t}" for t in targets if t.startswith("engine.training")]
    assert offenders == []


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_resolves_relative_and_package_imports() -> None:
    """The graph above is only as good as its import resolution: check it on the real tree."""
    edges = graph()
    assert "engine.learning.consolidation" in edges["engine.learning.consolidator"]  # from .consolidation import
    assert "engine.nn.lora" in edges["engine.learning.consolidator"]                  # from ..nn.lora import
    assert "engine" in edges["adapters.base"]                                          # from engine import ...
