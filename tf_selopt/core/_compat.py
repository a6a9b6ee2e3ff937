"""Every private TensorFlow API the core relies on, in one place (checked against TensorFlow 2.21).

``tests/test_compat.py`` checks each against the installed TensorFlow and fails
with "TensorFlow X.Y changed <name>: update tf_selopt/core/_compat.py".
"""

from __future__ import annotations

import contextlib
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


def _not_lifted(next_creator, **kwargs):
    kwargs["experimental_enable_variable_lifting"] = False
    return next_creator(**kwargs)


@contextlib.contextmanager
def variables_created_eagerly():
    """Create the variables made in this block eagerly, even while a ``tf.function`` traces, and keep them out of
    the function's own variable creation, so that its first trace is also the one it runs.

    A ``tf.function`` whose first trace creates variables (Keras' ``fit`` step building an optimizer in its first
    ``apply``) traces a second time, with variable creation forbidden, and runs that second trace; variables
    made under ``tf.init_scope()`` with ``tf.Variable(..., experimental_enable_variable_lifting=False)`` are not
    recorded as the function's (TensorFlow's ``Function._initialize``, ``variable_capturing_scope``), so
    building a whole optimizer in this block spares that second trace of its step. Only outside
    ``tf.distribute`` strategies: their variable creators must see the variable as usual.

    Example:
        >>> traces = []
        >>> holder = []
        >>> @tf.function
        ... def step():
        ...     traces.append(1)
        ...     if not holder:
        ...         with variables_created_eagerly():
        ...             holder.append(tf.Variable(1.0))
        ...     return holder[0].assign_add(1.0)
        >>> float(step()), float(step()), len(traces)
        (2.0, 3.0, 1)
    """
    with tf.init_scope(), tf.variable_creator_scope(_not_lifted):
        yield


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


def _resource(variable):
    """The ``tf.Variable`` behind a Keras 3 variable (``.value``), or ``variable`` itself."""
    return variable if isinstance(variable, tf.Variable) else variable.value


def empty_in_place(variable) -> None:
    """Replace ``variable``'s value by an empty tensor of its rank, freeing its buffer, also inside a running
    ``tf.function``: every function traced with the variable stays valid (the variable object, its handle and
    its static shape are unchanged) as long as it does not read it again.

    TensorFlow's ``AssignVariableOp`` with ``validate_shape=False`` takes a value of another shape at run time;
    the graph's static check of the shape is avoided by a zero length known only at run time (a random
    integer in [0, 1), which constant folding cannot fold). Not under XLA: a compiled cluster holds every
    resource's shape fixed (tf2xla refuses the assignment). Rank-0 variables are left as they are.

    Example:
        >>> v = tf.Variable(tf.ones([3, 4]))
        >>> empty_in_place(v)
        >>> holds_no_entries(v), tuple(v.shape)
        (True, (3, 4))
    """
    variable = _resource(variable)
    rank = variable.shape.rank
    if rank == 0:
        return
    zero = tf.random.uniform([], 0, 1, dtype=tf.int32)
    value = tf.zeros(tf.fill([rank], zero), variable.dtype)
    tf.raw_ops.AssignVariableOp(resource=variable.handle, value=value, validate_shape=False)


def holds_no_entries(variable) -> bool:
    """Whether ``variable`` holds an empty value at run time (``empty_in_place``) although its static shape
    has entries; read eagerly without copying the value (``VariableShape``)."""
    variable = _resource(variable)
    if variable.shape.rank == 0 or variable.shape.num_elements() == 0:
        return False
    with tf.init_scope():
        shape = tf.raw_ops.VariableShape(input=variable.handle, out_type=tf.int64)
        return int(tf.reduce_prod(shape)) == 0
