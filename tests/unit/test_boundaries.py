"""Adapters may import only the engine's public surface (``import engine``)."""

import ast
from pathlib import Path

import engine

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"


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
