"""Every private tf_keras API tf_selopt relies on, in one place (checked against tf_keras 2.21.0).

Each function names what it relies on; ``tests/test_compat.py`` checks each of
them against the installed tf_keras and fails with "tf_keras X.Y changed <name>:
update tf_selopt/keras2/_compat.py" when an upgrade changes one. tfmot's
private API is in ``tf_selopt.keras2._tfmot_compat``.
"""

from __future__ import annotations

import tf_keras
from tf_keras.src.optimizers import utils as _optimizer_utils

from tf_selopt.core.profiles import Profile

#: The tf_keras version the private names below were read from.
CHECKED_VERSION = "2.21.0"

#: Optimizer class -> its profile (``tf_selopt.core.profiles.Profile``, looked up along a class's MRO): the
#: private per-variable slot lists (one variable per model variable in ``build`` order; ``momentums`` of SGD
#: and Lion are public) that must be zero for an entry with a zero gradient to stay exactly in place
#: (``tf_selopt.core.update_paths.masked``). This front end runs the masked path only, so
#: the rows say nothing else.
PROFILES = {
    row.optimizer_class: row
    for row in (
        Profile(tf_keras.optimizers.SGD, motion=("momentums",)),
        Profile(tf_keras.optimizers.Adam, motion=("_momentums",)),
        Profile(tf_keras.optimizers.Adamax, motion=("_m",)),
        Profile(tf_keras.optimizers.Nadam, motion=("_momentums",)),
        Profile(tf_keras.optimizers.Lion, motion=("momentums",)),
        Profile(tf_keras.optimizers.RMSprop, motion=("_momentums",), breaks_motion=("centered",)),
        Profile(tf_keras.optimizers.Adagrad, motion=()),
        Profile(tf_keras.optimizers.Adadelta, motion=()),
    )
}

#: Optimizer class -> its motion slots (the rows' ``motion``), public as ``tf_selopt.keras2.MOTION_SLOT_ATTRIBUTES``.
MOTION_SLOT_ATTRIBUTES = {cls: row.motion for cls, row in PROFILES.items()}


def is_built(optimizer) -> bool:
    """Whether ``optimizer.build`` has run (``Optimizer._built``, set by tf_keras' own ``build``)."""
    return getattr(optimizer, "_built", False)


def mark_built(optimizer):
    """Set the flag ``is_built`` reads: what tf_keras' own optimizers do at the end of their ``build``."""
    optimizer._built = True


def variable_index(optimizer, variable) -> int:
    """Position of ``variable`` in the list ``optimizer`` was built on: the index into its slot lists
    (``Optimizer._index_dict`` keyed by ``Optimizer._var_key``)."""
    return optimizer._index_dict[optimizer._var_key(variable)]


def moving_averages(optimizer, variables):
    """``optimizer``'s EMA variable of each of ``variables`` (None without ``use_ema``;
    ``Optimizer._model_variables_moving_average``, indexed like the slot lists)."""
    if not optimizer.use_ema:
        return None
    return [optimizer._model_variables_moving_average[variable_index(optimizer, v)] for v in variables]


def filter_empty_gradients(grads_and_vars):
    """Drop ``(None, variable)`` pairs as tf_keras' own ``apply_gradients`` does (warns; raises if all are
    None): a tuple of pairs (``tf_keras.src.optimizers.utils.filter_empty_gradients``)."""
    return _optimizer_utils.filter_empty_gradients(grads_and_vars)


def is_functional(model) -> bool:
    """Whether ``model`` is a functional (graph) model, not a subclassed one (``Model._is_graph_network``;
    a ``Sequential`` built with an input is one too)."""
    return getattr(model, "_is_graph_network", False)
