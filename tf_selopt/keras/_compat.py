"""Every private Keras 3 API tf_selopt relies on, in one place (checked against Keras 3.15.1).

Each function names what it relies on; ``tests/test_compat.py`` checks each of
them against the installed Keras and fails with "Keras X.Y changed <name>:
update tf_selopt/keras/_compat.py" when an upgrade changes one. No other module
of ``tf_selopt.keras`` touches a private attribute of Keras (``tests/test_compat.py``
greps for it). The built-in optimizers' profiles (``PROFILES``) are here too, as
they name the optimizers' private slot lists.
"""

from __future__ import annotations

import contextlib

import keras

from tf_selopt.core.profiles import Profile

#: The Keras version the private names below were read from.
CHECKED_VERSION = "3.15.1"

# ---------------------------------------------------------------- optimizer profiles
# The built-in optimizers' rows of the profile registry (``tf_selopt.core.profiles.Profile``; looked up along a
# class's MRO by ``tf_selopt.keras.profiles``, so AdamW takes Adam's): their private per-variable slot lists
# (lists of one variable per model variable, in ``build`` order, each of the model variable's shape;
# ``momentums`` of SGD is public) and scalar state.

#: In a ``tf.function`` Grappler's arithmetic optimizer rewrites ``x / sqrt(y)`` as ``x * rsqrt(y)``, whose
#: vectorized and scalar lanes round differently, so an entry's update depends on its position in the tensor.
_RSQRT = "in a tf.function Grappler rewrites its x / sqrt(y) as x * rsqrt(y), which rounds by lane (1 ulp)"


def _registry(*rows: Profile) -> dict:
    return {row.optimizer_class: row for row in rows}


#: Optimizer class -> its profile.
PROFILES = _registry(
    Profile(keras.optimizers.SGD, slots=("momentums",), motion=("momentums",), reselection_exact=True),
    Profile(keras.optimizers.Adam, slots=("_momentums", "_velocities", "_velocity_hats"), motion=("_momentums",)),
    Profile(keras.optimizers.Adamax, slots=("_m", "_u"), motion=("_m",)),
    Profile(
        keras.optimizers.Nadam, slots=("_momentums", "_velocities"), motion=("_momentums",), scalars=("_u_product",)
    ),
    Profile(keras.optimizers.Lion, slots=("_momentums",), motion=("_momentums",), reselection_exact=True),
    Profile(
        keras.optimizers.RMSprop,
        slots=("_velocities", "_momentums", "_average_gradients"),
        motion=("_momentums",),
        breaks_motion=("centered",),
        graph_rounding=_RSQRT,
    ),
    Profile(
        keras.optimizers.Adagrad,
        slots=("_accumulators",),
        motion=(),
        initial=(("_accumulators", "initial_accumulator_value"),),
        graph_rounding=_RSQRT,
    ),
    Profile(
        keras.optimizers.Adadelta,
        slots=("_accumulated_grads", "_accumulated_delta_vars"),
        motion=(),
        graph_rounding=_RSQRT,
    ),
    Profile(
        keras.optimizers.Ftrl,
        slots=("_accumulators", "_linears"),
        initial=(("_accumulators", "initial_accumulator_value"),),
        not_exact="Ftrl's pow(accumulator, -lr_power) rounds differently in vectorized and scalar lanes, so an "
        "entry's update depends on its position in the tensor (1-ulp differences)",
    ),
)

#: ``Optimizer.build``'s list of moving averages with ``use_ema`` (a slot list like the ones above).
EMA_ATTRIBUTE = "_model_variables_moving_average"


def state(optimizer, name):
    """``optimizer``'s private state ``name`` from a profile above: a per-variable slot list (empty, e.g.
    SGD's ``momentums`` without momentum) or a scalar variable; None if it has no such attribute."""
    return getattr(optimizer, name, None)


def follower(optimizer):
    """A new, unbuilt optimizer of ``optimizer``'s class and configuration whose updates read ``optimizer``'s
    ``learning_rate``, ``iterations`` and ``loss_scale_factor`` at each step: nothing is copied.

    Keras' ``apply`` reads the three through these public properties (``Optimizer._backend_apply_gradients``
    passes ``self.learning_rate`` to ``update_step``; ``update_step`` and the moving averages read
    ``self.iterations``; ``apply`` unscales by ``self.loss_scale_factor``). The follower, an instance of a
    subclass of ``optimizer``'s class, answers them with ``optimizer``'s: its current learning rate (a float,
    a schedule evaluated at ``optimizer``'s iterations, or a callable, whenever it was set), its step count
    and its loss scale. The follower still creates the variables a plain copy creates (its variables are
    the same list), which are not read: its own ``iterations``, which its ``apply`` advances, and, when
    ``optimizer``'s learning rate is a variable, a ``learning_rate`` variable holding that value. A schedule
    or callable is passed as is: a lambda does not survive ``from_config`` (``Optimizer._learning_rate``)."""
    config = optimizer.get_config()
    if not isinstance(optimizer._learning_rate, keras.Variable):
        config["learning_rate"] = optimizer._learning_rate

    class Follower(type(optimizer)):
        learning_rate = property(lambda self: optimizer.learning_rate)
        iterations = property(lambda self: optimizer.iterations)
        # Keras' constructor sets the attribute: the follower ignores it
        loss_scale_factor = property(lambda self: optimizer.loss_scale_factor, lambda self, factor: None)

    Follower.__name__ = Follower.__qualname__ = f"{type(optimizer).__name__}Follower"
    return Follower.from_config(config)


def release(optimizer, variables, slot_names=()):
    """Drop ``variables`` from what ``optimizer`` holds (``variables``, ``get_weights``, a checkpoint, a
    ``.keras`` file) and empty its slot lists ``slot_names``, so nothing of Keras references them.

    ``Optimizer._variables`` is a ``ListWrapper`` that TensorFlow refuses to checkpoint once an element is
    deleted, so it is replaced by a new list of the kept variables, with Keras' ``Tracker`` store pointed at
    it (``_tracker.config`` / ``stored_ids``); the slot lists are replaced by empty ones."""
    from keras.src.utils import tracking

    gone = {id(v) for v in variables}
    kept = [v for v in optimizer._variables if id(v) not in gone]
    with tracking.DotNotTrackScope():
        optimizer._variables = kept
        for name in slot_names:
            if getattr(optimizer, name, None) is not None:
                setattr(optimizer, name, [])
    accepts, _ = optimizer._tracker.config["variables"]
    optimizer._tracker.config["variables"] = (accepts, optimizer._variables)
    optimizer._tracker.stored_ids["variables"] -= gone


def variable_index(optimizer, variable) -> int:
    """Position of ``variable`` in the list ``optimizer`` was built on: the index into its slot lists
    (``Optimizer._get_variable_index``)."""
    return optimizer._get_variable_index(variable)


def moving_averages(optimizer, variables):
    """``optimizer``'s EMA variable of each of ``variables`` (None without ``use_ema``)."""
    if not optimizer.use_ema:
        return None
    averages = state(optimizer, EMA_ATTRIBUTE)
    return [averages[variable_index(optimizer, v)] for v in variables]


def decays(optimizer, variable) -> bool:
    """Whether ``optimizer`` applies weight decay to ``variable``, honouring ``exclude_from_weight_decay``
    (``Optimizer._use_weight_decay``)."""
    return bool(optimizer.weight_decay) and optimizer._use_weight_decay(variable)


# ---------------------------------------------------------------- the base Optimizer, for a wrapper


def variable_key(optimizer, variable):
    """The key ``optimizer`` indexes ``variable`` by (``Optimizer._var_key``)."""
    return optimizer._var_key(variable)


def built_variables(optimizer) -> list:
    """The variables ``optimizer`` was built on (``Optimizer._trainable_variables``; ``apply`` without
    variables uses them)."""
    return optimizer._trainable_variables


def check_variables_are_known(optimizer, variables):
    """Raise Keras' ValueError for a variable ``optimizer`` was not built on (``_check_variables_are_known``)."""
    optimizer._check_variables_are_known(variables)


def filter_empty_gradients(optimizer, grads, variables):
    """Drop None gradients as Keras does (warns; raises if all are None): ``(grads, variables)``
    (``Optimizer._filter_empty_gradients``)."""
    return optimizer._filter_empty_gradients(grads, variables)


def overwrites_with_gradient(optimizer, variable) -> bool:
    """Whether Keras overwrites ``variable`` with its gradient (float8 scales and amax histories;
    ``Optimizer._overwrite_variable_with_gradient``)."""
    return optimizer._overwrite_variable_with_gradient(variable)


def overwrite_variables_with_gradients(optimizer, grads, variables):
    """Overwrite the ``overwrite_with_gradient`` variables with their gradients, as Keras does; returns the
    other ``(grads, variables)`` (``Optimizer._overwrite_variables_directly_with_gradients``)."""
    return optimizer._overwrite_variables_directly_with_gradients(grads, variables)


# ---------------------------------------------------------------- layers


def flatten_layers(model):
    """``model`` itself and every layer nested in it, depth-first (``Layer._flatten_layers``; Keras has no
    public recursive listing: ``model.layers`` is one level)."""
    return model._flatten_layers(include_self=True, recursive=True)


def call_inputs(layer) -> list:
    """The flat input ``KerasTensor`` s of each recorded call of ``layer`` in a functional graph, one list per
    call (``Layer._inbound_nodes``, each ``Node.input_tensors``; Keras has no public list of a tensor's
    consumers)."""
    return [list(node.input_tensors) for node in getattr(layer, "_inbound_nodes", [])]


@contextlib.contextmanager
def unlocked(layer):
    """A built ``layer`` whose variable tracker accepts new variables inside the block, locked again after
    (``Layer._tracker.unlock``/``lock``, as Keras' own ``enable_lora`` does)."""
    layer._tracker.unlock()
    try:
        yield layer
    finally:
        layer._tracker.lock()


class SyncsBeforeCheckpoint:
    """Mixin for an object with ``_sync_release()``: called before ``tf.train.Checkpoint`` lists the object's
    children (``Trackable._trackable_children``), so a checkpoint never holds state the step emptied in-graph
    (``SelectiveOptimizer``)."""

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        self._sync_release()
        return super()._trackable_children(save_type, **kwargs)


def is_functional(model) -> bool:
    """Whether ``model`` is a functional model (``keras.src.models.functional.Functional``), subclasses such as
    keras_hub backbones and tasks included (Keras has no public test; their ``get_config`` lists constructor
    arguments, not layers)."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def replace_encoder_attention(encoder, key_dim, inputs_shape):
    """Replaces a built keras_hub ``TransformerEncoder``'s self-attention (its private ``_self_attention_layer``,
    which ``build`` creates with head size ``hidden_dim // num_heads``) by an equal one of head size ``key_dim``,
    built for ``inputs_shape``; the old one is untracked (``Layer._tracker.untrack``), so its variables are gone.
    """
    old = encoder._self_attention_layer
    config = dict(old.get_config(), key_dim=int(key_dim), value_dim=int(key_dim))
    new = keras.layers.MultiHeadAttention.from_config(config)
    new.build(query_shape=inputs_shape, value_shape=inputs_shape)
    encoder._tracker.untrack(old)
    encoder._self_attention_layer = new
