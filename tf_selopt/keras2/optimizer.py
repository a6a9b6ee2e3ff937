"""tf_keras (Keras 2) front end: ``SelectiveOptimizer`` for ``tf_keras`` models.

The same procedure, arguments, read-outs and guarantees as the Keras 3
``tf_selopt.SelectiveOptimizer``, from the same TF-ops core
(``tf_selopt.core.selective``); only variable creation and the inner update differ.
It wraps any ``tf_keras.optimizers.Optimizer`` (the v2.11+ optimizers, not
``tf_keras.optimizers.legacy``), for ``model.fit`` and for custom loops calling
``apply_gradients``. It refuses ``tf.distribute`` strategies (the Keras 3
optimizer supports them; this one would need its own replica-0 inner update) and
is meant for models with tfmot wrappers too (see ``tf_selopt.keras2.tfmot_bridge``).

Examples:
    >>> import numpy as np, tf_keras
    >>> from tf_selopt.keras2 import SelectiveOptimizer
    >>> model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    >>> opt = SelectiveOptimizer(tf_keras.optimizers.Adam(1e-3), keep=3, warmup_steps=2, window=2)
    >>> model.compile(optimizer=opt, loss="mse")
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=4, epochs=2, verbose=0)
    >>> int(opt.selected_count), int(opt.selections)
    (3, 1)
"""

from __future__ import annotations

import types

import tensorflow as tf
import tf_keras

from tf_selopt.core import _compat as core_compat
from tf_selopt.core import criteria as criteria_lib
from tf_selopt.core import update_paths
from tf_selopt.core.config import config_arguments
from tf_selopt.core.frontend import SelectiveFrontEnd, inner_attribute, new_selective
from tf_selopt.core.profiles import motion_lookup
from tf_selopt.core.selective import refuse_base_arguments
from tf_selopt.keras2 import _compat
from tf_selopt.keras2._compat import MOTION_SLOT_ATTRIBUTES

__all__ = ["SelectiveOptimizer", "MOTION_SLOT_ATTRIBUTES"]

for _cls in criteria_lib.BUILTIN.values():
    tf_keras.saving.register_keras_serializable(package="tf_selopt")(_cls)


@tf_keras.saving.register_keras_serializable(package="tf_selopt")
class SelectiveOptimizer(SelectiveFrontEnd, tf_keras.optimizers.Optimizer):
    """Train only the parameters a criterion selects; freeze the rest exactly.

    Args: as ``tf_selopt.SelectiveOptimizer``; ``inner`` is a
    ``tf_keras.optimizers.Optimizer`` instance. ``granularity`` selects the
    same masks; fully frozen variables leave the gradient computation only in
    custom loops (``trainable_subset``): a ``tf.Variable``'s ``trainable`` is
    fixed, so there is no ``DropFrozenVariables`` for tf_keras ``fit``.
    ``update``: ``"auto"`` and ``"masked"`` run the masked path (all N entries,
    masked gradient); ``"selected_only"`` raises: that path is built on Keras 3
    optimizers only.
    """

    def __init__(
        self,
        inner,
        criterion="gradient_sum",
        keep=0.1,
        warmup_steps=100,
        window=20,
        scope="global",
        reselect_every=None,
        seed=None,
        num_examples=None,
        granularity="parameter",
        update="auto",
        masks=None,
        name="SelectiveOptimizer",
        **kwargs,
    ):
        if not isinstance(inner, tf_keras.optimizers.Optimizer):
            raise ValueError(
                "`inner` must be a tf_keras optimizer instance (tf_keras.optimizers.Optimizer, "
                f"e.g. tf_keras.optimizers.Adam(1e-3), not a legacy one); received {inner!r} of type "
                f"{type(inner).__name__}. For Keras 3 optimizers use tf_selopt.SelectiveOptimizer."
            )
        kwargs.pop("is_legacy_optimizer", None)  # written by tf_keras serialization
        kwargs.pop("jit_compile", None)
        refuse_base_arguments(kwargs)
        selective = new_selective(masks, **config_arguments(locals()))
        if update == "selected_only":
            raise ValueError(
                "`update`='selected_only' is not available in the tf_keras front end: it runs the masked path "
                "(the selected-only path is built on Keras 3 optimizers). Use update='auto' or 'masked', or "
                "tf_selopt.SelectiveOptimizer (Keras 3)."
            )
        super().__init__(name=name, jit_compile=False)
        self._update_path_reason = "the tf_keras front end runs the masked path"
        self._selective = selective
        self.inner_optimizer = inner
        # variable.ref() -> mask (see ``watch_pruning_masks``); a read-only view, which tf.Module's attribute
        # tracking leaves alone (a dict would be wrapped and break checkpoints: its keys are not strings)
        self._pruning_masks = types.MappingProxyType({})

    def build(self, var_list):
        """Create the state in ``Selective.build``'s order (the checkpoint layout),
        after ``iteration``, then the inner optimizer's."""
        if _compat.is_built(self):
            return
        var_list = list(var_list)
        self._selective.build(
            var_list,
            add_variable=lambda shape, dtype, init, name: self.add_variable(shape, dtype, init, name),
            add_slot=lambda v, name: self.add_variable_from_reference(v, name),
            pruned_mask_of=self._pruning_mask_of,
        )
        super().build(var_list)
        self.inner_optimizer.build(var_list)
        inner = self.inner_optimizer
        averages = _compat.moving_averages(inner, var_list)
        self._selective.use_path(
            update_paths.masked(inner, var_list, motion_lookup(_compat.PROFILES), averages=averages)
        )
        _compat.mark_built(self)

    def watch_pruning_masks(self, masks: dict):
        """Pruning masks kept outside the variables, e.g. tfmot's (``tfmot_bridge.pruning_callbacks`` calls this).

        ``masks``: ``{variable.ref(): mask}``, mask of the variable's shape, nonzero / True = kept. Pruned
        entries take no selection slot and get no restricted update, as with ``tf_selopt.keras.pruning`` masks in
        Keras 3; keeping them at zero stays the pruning's job (tfmot's wrappers re-zero them in each forward
        pass). Read when the train step is traced: after a change, rebuild it
        (``model.make_train_function(force=True)``). Not saved: checkpoints keep their layout.
        """
        for ref, mask in dict(masks).items():
            variable = ref.deref() if hasattr(ref, "deref") else None
            if variable is None or tuple(getattr(mask, "shape", ())) != tuple(variable.shape):
                raise ValueError(
                    "`masks` must map variable.ref() to a mask of that variable's shape; received "
                    f"{ref!r} -> mask of shape {tuple(getattr(mask, 'shape', ()))}."
                )
        self._pruning_masks = types.MappingProxyType(dict(masks))

    def _pruning_mask_of(self, variable):
        mask = self._pruning_masks.get(variable.ref())
        return None if mask is None else tf.not_equal(mask, tf.zeros([], mask.dtype))

    @property
    def variables(self):
        return list(super().variables) + list(self.inner_optimizer.variables)

    def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
        """Apply one step; returns the step counter (the inner's ``iterations``)."""
        pairs = list(grads_and_vars)
        if not pairs:
            return self.iterations
        pairs = _compat.filter_empty_gradients(pairs)  # warns for None, raises if all are None
        if tf.distribute.has_strategy():
            raise NotImplementedError(
                "The tf_keras SelectiveOptimizer does not support tf.distribute strategies; "
                "the Keras 3 tf_selopt.SelectiveOptimizer does."
            )
        variables = [v for _, v in pairs]
        with core_compat.variables_created_eagerly():  # a first step being traced is traced once, not twice
            self.build(variables)
        inner = self.inner_optimizer
        self._selective.apply(
            grads=[g for g, _ in pairs],
            variables=variables,
            indices=[_compat.variable_index(self, v) for v in variables],
            step=inner.iterations,
            inner_apply=lambda g, v: inner.apply_gradients(zip(g, v), skip_gradients_aggregation=True),
            phase=self.phase,
        )
        return self.iterations

    # ------------------------------------------------- forwarded to the inner
    iterations = inner_attribute("iterations")

    # --------------------------------------------------------- serialization (``SelectiveFrontEnd``)
    _serialize = staticmethod(tf_keras.saving.serialize_keras_object)
    _deserialize = staticmethod(tf_keras.saving.deserialize_keras_object)
    _serialize_inner = staticmethod(tf_keras.optimizers.serialize)

    @staticmethod
    def _deserialize_inner(config, custom_objects=None):
        return tf_keras.optimizers.deserialize(config, custom_objects=custom_objects, use_legacy_optimizer=False)
