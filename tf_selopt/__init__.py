"""tf_selopt: decide which parameters still train (selective optimization) and
which can be removed (pruning), for Keras 3 and TensorFlow.

The TF-ops core (``criteria``, ``selection``, ``schedules``, ``selective``) does
not import Keras. Front ends: Keras 3 ``SelectiveOptimizer``, ``prune`` and the
``GradualPruning`` callback (``tf_selopt.keras.pruning``); tf_keras
``tf_selopt.keras2.SelectiveOptimizer`` and the tfmot bridge
``tf_selopt.keras2.tfmot_bridge`` (imported on demand: they load tf_keras).
"""

from tf_selopt.core import criteria, schedules, selection
from tf_selopt.keras.callbacks import SelectionMonitor
from tf_selopt.keras.freezing import DropFrozenVariables
from tf_selopt.keras.optimizer import SelectiveOptimizer
from tf_selopt.keras.phases import TracePerPhase
from tf_selopt.keras.pruning import GradualPruning, mask_zeros, prune, strip_pruning

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
