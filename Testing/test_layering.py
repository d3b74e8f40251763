"""Import layering (docs/developer-notes.md): the engine needs neither Slicer nor Qt, the MRML layer no Qt, and the
module file imports Qt only where it may be missing."""

import testdata  # noqa: F401  (puts SpacingRegistration/ on sys.path)

import ast
import sys
import unittest
from pathlib import Path

MODULE_DIRECTORY = Path(__file__).resolve().parents[1] / "SpacingRegistration"
LIBRARY_DIRECTORY = MODULE_DIRECTORY / "SpacingRegistrationLib"
#: The library's MRML layer: the only files that may use slicer and vtk (but never qt/ctk); the rest is the engine.
MRML_DIRECTORY = LIBRARY_DIRECTORY / "mrml"
ENGINE_PACKAGES = {"SimpleITK", "numpy", "SpacingRegistrationLib"}
#: Optional packages the engine may import inside the function that uses them (never at module level).
OPTIONAL_LAZY_PACKAGES = {"dask", "distributed", "matplotlib", "psutil"}  # psutil: memory, when installed
QT_PACKAGES = {"qt", "ctk", "PythonQt"}
#: What the Extension Index accepts at the module file's file scope (besides the standard library and its own library).
CATALOG_PACKAGES = {"slicer", "vtk", "qt", "ctk", "SimpleITK", "numpy", "SpacingRegistrationLib"}
#: Packages that importing the module must not load (imported where they are used).
HEAVY_PACKAGES = ("dask", "distributed", "trame", "trame_slicer", "matplotlib", "selenium")
#: Parts of Slicer that import qt themselves.
QT_SLICER_MODULES = {"slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.i18n"}


def imports(tree: ast.AST):
    """(module name, statement, depth) of every import; depth 0 is module level."""
    found = []

    def visit(node, depth):
        for child in ast.iter_child_nodes(node):
            inner = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, depth) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                name = "." * child.level + (child.module or "")
                found.append((name, child, depth))
            visit(child, inner)

    visit(tree, 0)
    return found


def topLevel(name: str) -> str:
    return name.split(".")[0]


def importsTheMrmlLayer(name: str, statement: ast.stmt) -> bool:
    """Does an import in a top-level library file reach SpacingRegistrationLib.mrml (``from .mrml...``,
    ``from . import mrml``, ``SpacingRegistrationLib.mrml...``)?"""
    parts = name.lstrip(".").split(".") if name.startswith(".") else name.split(".")[1:]
    if not name.startswith(".") and topLevel(name) != "SpacingRegistrationLib":
        return False
    if parts and parts[0] == "mrml":
        return True
    return isinstance(statement, ast.ImportFrom) and parts in ([""], []) and any(a.name == "mrml" for a in statement.names)


def isGuarded(tree: ast.AST, statement: ast.stmt) -> bool:
    """Is ``statement`` in the body of a try whose handlers catch ImportError?"""
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(statement is s for body in node.body for s in ast.walk(body)):
            caught = {ast.unparse(h.type) if h.type is not None else "" for h in node.handlers}
            if caught & {"ImportError", "ModuleNotFoundError", "Exception", ""}:
                return True
    return False


class LayeringTest(unittest.TestCase):
    def engineFiles(self):
        files = sorted(p for p in LIBRARY_DIRECTORY.rglob("*.py") if MRML_DIRECTORY not in p.parents)
        self.assertGreater(len(files), 5)
        return files

    def mrmlFiles(self):
        files = sorted(MRML_DIRECTORY.rglob("*.py"))
        self.assertGreaterEqual({p.name for p in files}, {"bridge.py", "logic.py", "rendering.py", "study_nodes.py"})
        return files

    def test_engine_files_import_only_stdlib_simpleitk_numpy_and_the_library(self):
        allowed = set(sys.stdlib_module_names) | ENGINE_PACKAGES
        for path in self.engineFiles():
            for name, statement, depth in imports(ast.parse(path.read_text(encoding="utf-8"))):
                with self.subTest(file=path.name, line=statement.lineno, module=name):
                    self.assertFalse(importsTheMrmlLayer(name, statement), "the engine must not import the MRML layer")
                if name.startswith("."):
                    continue
                with self.subTest(file=path.name, line=statement.lineno, module=name):
                    if depth == 0:
                        self.assertIn(topLevel(name), allowed)
                    else:
                        self.assertIn(topLevel(name), allowed | OPTIONAL_LAZY_PACKAGES)

    def test_mrml_files_import_no_qt(self):
        for path in self.mrmlFiles():
            for name, statement, _depth in imports(ast.parse(path.read_text(encoding="utf-8"))):
                with self.subTest(file=path.name, line=statement.lineno):
                    self.assertNotIn(topLevel(name), QT_PACKAGES)
                    self.assertNotIn(name, QT_SLICER_MODULES)

    def test_module_file_imports_qt_only_in_guarded_blocks(self):
        path = MODULE_DIRECTORY / "SpacingRegistration.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        qtImports = [(name, statement) for name, statement, _depth in imports(tree)
                     if topLevel(name) in QT_PACKAGES or name in QT_SLICER_MODULES]
        self.assertGreater(len(qtImports), 0)
        for name, statement in qtImports:
            with self.subTest(line=statement.lineno, module=name):
                self.assertTrue(isGuarded(tree, statement), f"import of {name} must sit in try/except ImportError")

    def test_module_file_imports_at_file_scope_only_what_the_catalog_allows(self):
        tree = ast.parse((MODULE_DIRECTORY / "SpacingRegistration.py").read_text(encoding="utf-8"))
        allowed = set(sys.stdlib_module_names) | CATALOG_PACKAGES
        found = [(name, statement) for name, statement, depth in imports(tree) if depth == 0]
        self.assertGreater(len(found), 5)
        for name, statement in found:
            with self.subTest(line=statement.lineno, module=name):
                self.assertIn(topLevel(name), allowed)

    def test_importing_the_module_loads_no_heavy_package(self):
        """What the file scope pulls in through the library, in a fresh interpreter."""
        import subprocess

        code = ("import sys; sys.path.insert(0, sys.argv[1]); import SpacingRegistration; "
                "print(sorted({m.split('.')[0] for m in sys.modules}))")
        output = subprocess.run([sys.executable, "-c", code, str(MODULE_DIRECTORY)], capture_output=True, text=True,
                                check=True, timeout=120).stdout
        loaded = set(ast.literal_eval(output.strip().splitlines()[-1]))
        self.assertIn("SpacingRegistrationLib", loaded)
        self.assertEqual(sorted(loaded & set(HEAVY_PACKAGES)), [])

    def test_module_file_imports_without_qt(self):
        """The module file (and its Logic and Test classes) import in a Python without qt."""
        sys.path.insert(0, str(MODULE_DIRECTORY))
        import SpacingRegistration

        if SpacingRegistration.qt is None:
            self.assertIsNone(SpacingRegistration.parameterNodeWrapper)
            self.assertFalse(hasattr(SpacingRegistration, "SpacingRegistrationParameterNode"))
        self.assertTrue(callable(SpacingRegistration.SpacingRegistrationLogic))
        self.assertTrue(issubclass(SpacingRegistration.SpacingRegistrationTest, unittest.TestCase))


if __name__ == "__main__":
    unittest.main()
