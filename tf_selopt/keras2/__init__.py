"""tf_keras (Keras 2) front end, for tfmot users: ``SelectiveOptimizer`` and the tfmot bridge.

Imported on demand (``import tf_selopt.keras2``): it loads ``tf_keras``.
``tf_selopt.keras2.SelectiveOptimizer`` wraps a ``tf_keras`` optimizer;
``tf_selopt.keras2.tfmot_bridge`` prunes with tfmot (global magnitude plans).
"""

try:
    from tf_selopt.keras2.optimizer import MOTION_SLOT_ATTRIBUTES, SelectiveOptimizer
except ModuleNotFoundError as error:  # tf_keras / tfmot come with the [tf_keras] extra
    from tf_selopt import missing_extra

    raise missing_extra(error) from error

__all__ = ["SelectiveOptimizer", "MOTION_SLOT_ATTRIBUTES"]
