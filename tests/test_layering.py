"""The TF-ops core imports TensorFlow and the standard library only: never Keras."""

import ast
import importlib

import pytest

CORE = ("checks", "configurable", "criteria", "selection", "schedules", "selective")
ALLOWED = {"__future__", "math", "numbers", "random", "typing", "tensorflow"}


def _imports(path):
    tree = ast.parse(open(path).read())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return names


@pytest.mark.parametrize("name", CORE)
def test_core_module_imports_no_front_end(name):
    # (A runtime check would prove nothing: `import tensorflow` itself loads keras.)
    module = importlib.import_module(f"tf_selopt.{name}")
    for imported in _imports(module.__file__):
        top = imported.split(".")[0]
        assert top in ALLOWED or imported in {f"tf_selopt.{c}" for c in CORE} or imported == "tf_selopt", imported
