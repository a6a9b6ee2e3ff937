"""tf_selopt: decide which parameters still train (selective optimization) and
which can be removed (pruning), for Keras 3 and TensorFlow.

The TF-ops core (``criteria``, ``selection``, ``schedules``, ``selective``) does
not import Keras. Front ends: Keras 3 ``SelectiveOptimizer``, ``prune`` and the
``GradualPruning`` callback (``tf_selopt.pruning``); tf_keras
``tf_selopt.tf_keras.SelectiveOptimizer`` and the tfmot bridge
``tf_selopt.tfmot_bridge`` (imported on demand: they load tf_keras).
"""

from tf_selopt import criteria, schedules, selection
from tf_selopt.callbacks import SelectionMonitor
from tf_selopt.freezing import DropFrozenVariables
from tf_selopt.optimizer import SelectiveOptimizer
from tf_selopt.phases import TracePerPhase
from tf_selopt.pruning import GradualPruning, mask_zeros, prune, strip_pruning

__all__ = [
    "SelectiveOptimizer",
    "prune",
    "GradualPruning",
    "strip_pruning",
    "mask_zeros",
    "SelectionMonitor",
    "DropFrozenVariables",
    "TracePerPhase",
    "criteria",
    "schedules",
    "selection",
]
__version__ = "0.1.0"
