"""The package's layers, checked from the imports in the source: dependencies point one way.

``core`` imports TensorFlow and the standard library only (never Keras); the Keras 3 front end
(``keras``) and the tf_keras front end (``keras2``) build on ``core`` and not on each other;
``deploy`` builds on ``core`` and the Keras 3 front end; ``study`` and the CLI may use everything.
"""

import ast
import pathlib
import sys

import pytest

import tf_selopt

PACKAGE = pathlib.Path(tf_selopt.__file__).parent
#: layer -> the tf_selopt layers it may import
LAYERS = {
    "core": {"core"},
    "keras": {"core", "keras"},
    "keras2": {"core", "keras2"},
    "deploy": {"core", "keras", "deploy"},
}
CORE_EXTERNAL = {"tensorflow", "numpy"} | set(sys.stdlib_module_names)


def _imports(path):
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    return names


def _modules(layer):
    return sorted((PACKAGE / layer).glob("*.py"))


def test_the_tree_shows_the_layers():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(LAYERS) | {"study"}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_imports_point_one_way(layer):
    modules = _modules(layer)
    assert modules
    for path in modules:
        for imported in _imports(path):
            parts = imported.split(".")
            if imported == "tf_selopt":  # the lazy package itself (e.g. ``missing_extra``): imports no layer
                continue
            if parts[0] == "tf_selopt":
                assert len(parts) > 1 and parts[1] in LAYERS[layer], f"{path.name} imports {imported}"
            elif layer == "core":
                # (A runtime check would prove nothing: `import tensorflow` itself loads keras.)
                assert parts[0] in CORE_EXTERNAL, f"core/{path.name} imports {imported}"
