"""Every private TensorFlow API the core relies on, in one place (checked against TensorFlow 2.21).

``tests/test_compat.py`` checks each against the installed TensorFlow and fails
with "TensorFlow X.Y changed <name>: update tf_selopt/core/_compat.py".
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

#: The TensorFlow version the private names below were read from.
CHECKED_VERSION = "2.21"


def in_xla_context() -> bool:
    """Whether ops created now are compiled by XLA (inside ``tf.function(jit_compile=True)``, also nested,
    e.g. ``model.compile(jit_compile=True)``), where every shape must be static
    (``control_flow_util.GraphOrParentsInXlaContext``)."""
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
