"""Every private TensorFlow API the core relies on, in one place (checked against TensorFlow 2.21).

``tests/test_compat.py`` checks each against the installed TensorFlow and fails
with "TensorFlow X.Y changed <name>: update tf_selopt/core/_compat.py".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

#: The TensorFlow version the private names below were read from.
CHECKED_VERSION = "2.21"


def in_xla_context() -> bool:
    """Whether ops created now are compiled by XLA (inside ``tf.function(jit_compile=True)``, also nested,
    e.g. ``model.compile(jit_compile=True)``), where every shape must be static
    (``control_flow_util.GraphOrParentsInXlaContext``)."""
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def return_freed_memory() -> bool:
    """Collect garbage and hand the C heap's free memory back to the operating system (glibc's
    ``malloc_trim(0)``): TensorFlow's CPU tensors are malloc'd, and glibc keeps freed blocks in its arenas,
    so memory released by dropping variables would otherwise stay in the process's RSS. Returns whether
    the trim ran (False without glibc)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim(0)
    return True
