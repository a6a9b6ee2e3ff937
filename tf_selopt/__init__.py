"""tf_selopt: decide which parameters still train (selective optimization) and
which can be removed (pruning), for Keras 3 and TensorFlow.

The TF-ops core (``criteria``, ``selection``) does not import Keras; the Keras 3
front end is ``SelectiveOptimizer``.
"""

from tf_selopt import criteria, selection
from tf_selopt.optimizer import SelectiveOptimizer

__all__ = ["SelectiveOptimizer", "criteria", "selection"]
__version__ = "0.1.0"
