"""Reloading the library in a running Slicer: ``slicer.util.reloadScriptedModule`` re-executes only the module
file, so the module's ``onReload`` reloads the library's submodules first, each after those it imports."""

from __future__ import annotations

import ast
import graphlib
import importlib
import sys
from pathlib import Path

PACKAGE = __package__ or "SpacingRegistrationLib"


def _module_level_relative_imports(path: Path) -> set[str]:
    names = set()
    for statement in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
        for node in ([statement] if not isinstance(statement, ast.Try) else statement.body):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return names


def submodules_in_dependency_order(library_directory=None) -> list[str]:
    """Names of the library's submodules, each after the submodules it imports at module level."""
    library_directory = Path(library_directory or Path(__file__).resolve().parent)
    paths = {p.stem: p for p in sorted(library_directory.glob("*.py")) if p.stem != "__init__"}
    sorter = graphlib.TopologicalSorter()
    for name, path in paths.items():
        sorter.add(name, *sorted(_module_level_relative_imports(path) & set(paths)))
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
