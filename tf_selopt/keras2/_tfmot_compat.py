"""Every private tfmot (tensorflow_model_optimization) API tf_selopt relies on, in one place (checked against
tfmot 0.8.1).

Each function names what it relies on; ``tests/test_compat.py`` checks each of
them against the installed tfmot and fails with "tfmot X.Y changed <name>:
update tf_selopt/keras2/_tfmot_compat.py" when an upgrade changes one.

Import. tfmot picks Keras 2 by setting ``TF_USE_LEGACY_KERAS=1`` when it is
first imported (``tensorflow_model_optimization.python.core.keras.compat``); if
``tf.keras`` has not been resolved yet, that switches ``tf.keras`` to tf_keras for
the whole process. ``tfmot`` here is imported after resolving ``tf.keras`` and
with the variable restored afterwards, so tfmot uses tf_keras while ``import
keras`` and ``tf.keras`` stay Keras 3.
"""

from __future__ import annotations

import os
import sys

import tensorflow as tf

#: The tfmot version the private names below were read from.
CHECKED_VERSION = "0.8.1"
#: tfmot's module that chooses its Keras (and sets ``TF_USE_LEGACY_KERAS``) when imported.
KERAS_COMPAT_MODULE = "tensorflow_model_optimization.python.core.keras.compat"


def _import_tfmot():
    """Import tfmot without switching ``tf.keras`` or leaving ``TF_USE_LEGACY_KERAS`` set."""
    if KERAS_COMPAT_MODULE in sys.modules:
        import tensorflow_model_optimization as module  # already imported: nothing to protect

        return module
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    getattr(tf.keras, "version", None)  # resolve the lazy tf.keras under the user's own setting
    try:
        import tensorflow_model_optimization as module
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return module


tfmot = _import_tfmot()

from tensorflow_model_optimization.python.core.keras.compat import keras as _tfmot_keras  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry as _prune_registry  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper as _pruning_wrapper  # noqa: E402


def keras_module():
    """The Keras tfmot builds on (``...core.keras.compat.keras``): ``tf_keras`` while ``tf.keras`` is Keras 3."""
    return _tfmot_keras


def registry_supports(layer) -> bool:
    """Whether tfmot's prune registry can make ``layer`` prunable (``PruneRegistry.supports``)."""
    return _prune_registry.PruneRegistry.supports(layer)


def registry_weights(layer) -> list:
    """The weights ``PruneRegistry.make_prunable(layer)`` would expose, without modifying the layer.

    Relies on ``PruneRegistry._is_rnn_layer``, ``_get_rnn_cells``,
    ``_RNN_CELLS_WEIGHTS_MAP`` (cell class -> weight attribute names) and
    ``_weight_names`` (dotted attribute paths, e.g. ``"cell.kernel"``)."""
    registry = _prune_registry.PruneRegistry
    if registry._is_rnn_layer(layer):
        weights = []
        for cell in registry._get_rnn_cells(layer):
            if cell.__class__ in registry._RNN_CELLS_WEIGHTS_MAP:
                weights.extend(getattr(cell, name) for name in registry._RNN_CELLS_WEIGHTS_MAP[cell.__class__])
            else:
                weights.extend(cell.get_prunable_weights())
        return weights
    weights = []
    for name in registry._weight_names(layer):
        owner = layer
        *path, attribute = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        weights.append(getattr(owner, attribute))
    return weights


def is_pruning_wrapper(layer) -> bool:
    """Whether ``layer`` is tfmot's ``PruneLowMagnitude`` wrapper (``pruning_wrapper``, not exported)."""
    return isinstance(layer, _pruning_wrapper.PruneLowMagnitude)


def wrapper_masks(wrapper) -> list:
    """``[(weight, mask)]`` of a ``PruneLowMagnitude`` wrapper: each pruned weight and its float 0/1 mask
    (1 = kept; tfmot updates it in place) (``PruneLowMagnitude.pruning_vars``, triples ``(weight, mask,
    threshold)``, filled when the wrapper is built)."""
    return [(weight, mask) for weight, mask, _ in wrapper.pruning_vars]
