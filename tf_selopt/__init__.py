"""tf_selopt: decide which parameters still train (selective optimization) and
which can be removed (pruning), for Keras 3 and TensorFlow.

The TF-ops core (``criteria``, ``selection``) does not import Keras; the Keras 3
front end is ``SelectiveOptimizer`` and one-shot ``prune`` (issue 3, in progress).
"""

from tf_selopt import criteria, schedules, selection
from tf_selopt.optimizer import SelectiveOptimizer
from tf_selopt.pruning import prune

__all__ = ["SelectiveOptimizer", "prune", "criteria", "schedules", "selection"]
__version__ = "0.1.0"
