"""Reloading the library in a running Slicer: ``slicer.util.reloadScriptedModule`` re-executes only the module
file, so the module's ``onReload`` reloads the library's submodules first, each after those it imports."""

from __future__ import annotations

import ast
import graphlib
import importlib
import sys
from pathlib import Path

PACKAGE = __package__ or "SpacingRegistrationLib"


def _module_name(relative_path: Path) -> str:
    """Dotted name below the library: ``grid.py`` -> ``grid``, ``mrml/bridge.py`` -> ``mrml.bridge``,
    ``mrml/__init__.py`` -> ``mrml``."""
    parts = relative_path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_relative_imports(path: Path, name: str) -> set[str]:
    """Dotted names (below the library) that the module ``name`` imports relatively at module level: candidates
    for both ``from .x import y`` (``x``) and ``from . import y`` / ``from .x import y`` (``x.y``)."""
    package = name.split(".") if path.stem == "__init__" else name.split(".")[:-1]
    names = set()
    for statement in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
        for node in ([statement] if not isinstance(statement, ast.Try) else statement.body):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                names.add(".".join(base))
                names.update(".".join(base + [alias.name]) for alias in node.names)
    return names


def submodules_in_dependency_order(library_directory=None) -> list[str]:
    """Dotted names of the library's submodules (subpackages included), each after the submodules it imports at
    module level and after its own subpackage."""
    library_directory = Path(library_directory or Path(__file__).resolve().parent)
    paths = {_module_name(p.relative_to(library_directory)): p for p in sorted(library_directory.rglob("*.py"))}
    paths.pop("", None)  # the library's own __init__, reloaded first by reload_library
    sorter = graphlib.TopologicalSorter()
    for name, path in paths.items():
        parents = {name.rsplit(".", 1)[0]} if "." in name else set()
        sorter.add(name, *sorted((_module_level_relative_imports(path, name) | parents) & set(paths) - {name}))
    sorter.prepare()  # raises graphlib.CycleError on an import cycle (Python refuses those anyway)
    order = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += ready
        sorter.done(*ready)
    return order


def reload_library():
    """importlib.reload every loaded submodule of the library, dependencies first."""
    package = sys.modules.get(PACKAGE)
    if package is None:
        return
    importlib.reload(package)
    for name in submodules_in_dependency_order():
        module = sys.modules.get(f"{PACKAGE}.{name}")
        if module is not None:
            importlib.reload(module)
