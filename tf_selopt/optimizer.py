"""Keras 3 front end: ``SelectiveOptimizer``, a wrapper around any Keras optimizer.

The procedure (warm-up, window, exact top-k selection, frozen entries that do
not move at all, NaN/Inf steps skipped) lives in the TF-ops core
``tf_selopt.selective``, shared with the tf_keras front end; this module only
creates the variables the Keras 3 way, forwards to the inner optimizer and
(de)serializes. Entries pruned by ``tf_selopt.pruning`` are never selected.

Only the TensorFlow backend is supported; ``tf.distribute`` strategies are not
yet (the optimizer refuses to run under one rather than select different masks
on different replicas).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_selopt import criteria as criteria_lib
from tf_selopt import pruning
from tf_selopt.selective import Selective, SelectiveReadouts, refuse_base_arguments

__all__ = ["SelectiveOptimizer"]

for _cls in criteria_lib.BUILTIN.values():
    keras.saving.register_keras_serializable(package="tf_selopt")(_cls)


@keras.saving.register_keras_serializable(package="tf_selopt")
class SelectiveOptimizer(SelectiveReadouts, keras.optimizers.Optimizer):
    """Train only the parameters a criterion selects; freeze the rest exactly.

    Args:
        inner: the Keras 3 optimizer that does the updates (SGD, Adam, AdamW, ...).
        criterion: ``"gradient_sum"`` (the note's), ``"preconditioned"`` (the
            note's, needs ``num_examples``), ``"fisher"``, ``"magnitude"``,
            ``"random"``, or a criterion object (see ``tf_selopt.criteria``).
        keep: how many parameters keep training: a fraction in (0, 1] or a count
            in [1, N] (N = number of trainable parameters).
        warmup_steps: eta0, the number of full steps before the first selection
            (int >= 0). The step with 0-based index ``warmup_steps`` is the first
            restricted one.
        window: t, the number of gradients a gradient criterion accumulates
            (int in [1, warmup_steps]); the selection step's own gradient is the
            window's last. Ignored by ``magnitude`` and ``random``.
        scope: ``"global"`` (top-k over the whole network, the note's setting) or
            ``"per_variable"`` (the same fraction in each variable).
        reselect_every: None (select once) or n >= window: select again every n
            steps after ``warmup_steps``, each time from a fresh window.
        seed: int seed for the ``random`` criterion; None draws one at
            construction (it is kept in ``get_config``).
        num_examples: N_data for ``criterion="preconditioned"``.
        name: optimizer name.

    Read-outs (``tf_selopt.selective.SelectiveReadouts``): ``masks`` (bool
    variable per trainable variable, in build order; True = selected),
    ``scores`` (float32, the criterion's scores at the last selection),
    ``selected_count`` (selected and not pruned), ``pruned_count``,
    ``frozen_fraction``, ``skipped_steps`` (steps skipped for non-finite
    gradients), ``selections`` (selections done), ``k``, ``num_parameters``.

    Pruning (``tf_selopt.pruning``): entries held at zero by a pruning mask rank
    below all others at selection and never train; if fewer than ``k`` entries
    are unpruned, all of them train (``selected_count < k``).

    Examples:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> opt = SelectiveOptimizer(keras.optimizers.Adam(1e-3), keep=3,
        ...                          warmup_steps=2, window=2)
        >>> model.compile(optimizer=opt, loss="mse")
        >>> _ = model.fit(keras.ops.ones((8, 4)), keras.ops.ones((8, 2)),
        ...               batch_size=4, epochs=2, verbose=0)
        >>> int(opt.selected_count), int(opt.selections)
        (3, 1)
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
        name=None,
        **kwargs,
    ):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"SelectiveOptimizer needs the TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()!r}."
            )
        if not isinstance(inner, keras.optimizers.Optimizer):
            raise ValueError(
                "`inner` must be a Keras 3 optimizer instance (keras.optimizers.Optimizer, "
                f"e.g. keras.optimizers.Adam(1e-3)); received {inner!r} of type {type(inner).__name__}. "
                "For tf_keras optimizers use tf_selopt.tf_keras.SelectiveOptimizer."
            )
        refuse_base_arguments(kwargs)
        selective = Selective(criterion, keep, warmup_steps, window, scope, reselect_every, seed, num_examples)
        super().__init__(learning_rate=0.0, name=name)
        self._selective = selective
        self.inner_optimizer = inner

    def build(self, var_list):
        """Create the state in ``Selective.build``'s order (the checkpoint layout),
        after ``iterations`` and ``learning_rate``, then the inner optimizer's."""
        if self.built:
            return
        self._selective.build(
            var_list,
            add_variable=lambda shape, dtype, init, name: self.add_variable(shape, init, dtype.name, name=name),
            add_slot=lambda v, name: self.add_variable_from_reference(v, name=name),
            pruned_mask_of=pruning.pruning_mask,
        )
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            if not self.built:
                raise ValueError("Call `optimizer.build(trainable_variables)` before `apply` without variables.")
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        self._check_variables_are_known(trainable_variables)
        if tf.distribute.has_strategy():
            raise NotImplementedError("SelectiveOptimizer does not support tf.distribute strategies yet.")
        pairs = [(g, v) for g, v in zip(grads, trainable_variables) if g is not None]
        self._selective.apply(
            grads=[g for g, _ in pairs],
            variables=[v for _, v in pairs],
            indices=[self._get_variable_index(v) for _, v in pairs],
            step=self.inner_optimizer.iterations,
            inner_apply=self.inner_optimizer.apply,
        )

    # ------------------------------------------------- forwarded to the inner
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    # --------------------------------------------------------- serialization
    def get_config(self):
        config = self._selective.config()
        config["criterion"] = keras.saving.serialize_keras_object(config["criterion"])
        return {"name": self.name, "inner": keras.saving.serialize_keras_object(self.inner_optimizer), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["inner"] = keras.saving.deserialize_keras_object(config["inner"], custom_objects=custom_objects)
        config["criterion"] = keras.saving.deserialize_keras_object(config["criterion"], custom_objects=custom_objects)
        return cls(**config)
