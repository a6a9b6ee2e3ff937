"""tf_selopt: decide which parameters still train (selective optimization) and
which can be removed (pruning), for Keras 3 and TensorFlow.

The TF-ops core (``criteria``, ``selection``, ``schedules``, ``selective``) does
not import Keras. Front ends: Keras 3 ``SelectiveOptimizer``, ``prune`` and the
``GradualPruning`` callback (``tf_selopt.keras.pruning``), ``shrink`` (channels
removed: a smaller model, ``tf_selopt.keras.shrink``); tf_keras
``tf_selopt.keras2.SelectiveOptimizer`` and the tfmot bridge
``tf_selopt.keras2.tfmot_bridge`` (imported on demand: they load tf_keras).

The public names are imported on first use (PEP 562), so that ``import tf_selopt``
and the ``selopt`` CLI's ``--help`` do not load TensorFlow. The first use of any of
them imports all of them, and so does ``import tf_selopt`` when Keras or TensorFlow
is already loaded (no cost then): our Keras serializables are registered before a
``keras.saving.load_model``. (``import tf_selopt`` before ``import keras`` and a
``load_model`` with no tf_selopt name used in between: pass ``custom_objects`` or
touch ``tf_selopt.SelectiveOptimizer`` first.)
"""

import importlib
import importlib.util
import sys

from tf_selopt import _moved

# public name -> the submodule that defines it
_LAZY = {
    "SelectiveOptimizer": "keras.optimizer",
    "prune": "keras.pruning",
    "GradualPruning": "keras.pruning",
    "strip_pruning": "keras.pruning",
    "mask_zeros": "keras.pruning",
    "SelectionMonitor": "keras.callbacks",
    "StepLoss": "keras.callbacks",
    "DropFrozenVariables": "keras.freezing",
    "TracePerPhase": "keras.phases",
    "calibrate": "keras.calibrate",
    "shrink": "keras.shrink",
    "load_model": "keras.saving",
    "sparse_delta": "keras.sparse_delta",
    "enable_sparse_delta": "keras.sparse_delta",
    "merge_sparse_delta": "keras.sparse_delta",
}
_SUBMODULES = {"criteria": "core.criteria", "schedules": "core.schedules", "selection": "core.selection"}

# a package of an extra -> the extra (pyproject.toml); `pip install tf_selopt` has TensorFlow, Keras, click only
EXTRA_OF = {
    "tf_keras": "tf_keras",
    "tensorflow_model_optimization": "tf_keras",
    "ai_edge_litert": "export",
    "matplotlib": "study",
    "mlxtend": "study",
    "sklearn": "study",
    "tqdm": "study",
    "yaml": "study",
    "pydantic": "study",
}

__all__ = list(_LAZY) + list(_SUBMODULES)

_moved.install()  # 0.1.0's module paths (tf_selopt.pruning, tf_selopt.export, ...) and tf_selopt.criteria etc.
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:  # the first public name imports them all, as an eager __init__ did
        _load_all()
        return globals()[name]
    if name in _SUBMODULES:  # the core's public modules: tf_selopt.criteria, .schedules, .selection
        return importlib.import_module(f"tf_selopt.{_SUBMODULES[name]}")
    # any subpackage, as an eager package would have had it imported (tf_selopt.keras, .deploy, ...)
    if name.startswith("_") or importlib.util.find_spec(f"tf_selopt.{name}") is None:
        raise AttributeError(f"module 'tf_selopt' has no attribute {name!r}")
    try:
        return importlib.import_module(f"tf_selopt.{name}")
    except ModuleNotFoundError as error:
        raise missing_extra(error) from error


def missing_extra(error: ModuleNotFoundError) -> ImportError:
    """``error`` as an ImportError that names the extra to install, when the missing package is an extra's."""
    extra = EXTRA_OF.get((error.name or "").split(".")[0])
    if extra is None:
        return error
    return ImportError(f"{error.msg}: it comes with tf_selopt's [{extra}] extra: pip install 'tf_selopt[{extra}]'")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _load_all():
    """Import every public name now (registers our Keras serializables)."""
    for name, module_name in _LAZY.items():
        module = importlib.import_module(f"tf_selopt.{module_name}")
        globals()[name] = getattr(module, name)


if "keras" in sys.modules or "tensorflow" in sys.modules:
    _load_all()
