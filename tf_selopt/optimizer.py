"""Keras 3 front end: ``SelectiveOptimizer``, a wrapper around any Keras optimizer.

Training follows the note: ``warmup_steps`` (eta0) full steps of the inner
optimizer, then restricted steps in which only the selected parameters move.
Selection runs in-graph at step ``warmup_steps`` (0-based, counted in finite
steps) from a criterion accumulated over the ``window`` steps that end with it,
and again every ``reselect_every`` steps after that, each from a fresh window.

Frozen entries do not move at all: their gradient is zeroed before the inner
optimizer sees it, and their value is restored after the inner update, so
momentum, weight decay or any inner state cannot move them.

Only the TensorFlow backend is supported; ``tf.distribute`` strategies are not
yet (the optimizer refuses to run under one rather than select different masks
on different replicas).
"""

from __future__ import annotations

import numbers
import random

import keras
import tensorflow as tf

from tf_selopt import criteria as criteria_lib
from tf_selopt.checks import is_int
from tf_selopt import selection

__all__ = ["SelectiveOptimizer"]

for _cls in criteria_lib.BUILTIN.values():
    keras.saving.register_keras_serializable(package="tf_selopt")(_cls)

_BASE_ARGUMENTS = (
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)


@keras.saving.register_keras_serializable(package="tf_selopt")
class SelectiveOptimizer(keras.optimizers.Optimizer):
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

    Read-outs: ``masks`` (bool ``tf.Variable`` per trainable variable, in build
    order; True = trains), ``scores`` (float32 variables, the scores of the last
    selection), ``selected_count``, ``frozen_fraction``, ``skipped_steps``
    (steps skipped for non-finite gradients), ``selections`` (selections done).

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
                "For tf_keras optimizers use the tf_keras front end."
            )
        for arg in _BASE_ARGUMENTS:
            if kwargs.pop(arg, None) not in (None, False):
                raise ValueError(f"SelectiveOptimizer does not take `{arg}`: set it on the inner optimizer.")
        if kwargs:
            raise ValueError(f"SelectiveOptimizer got unknown arguments: {sorted(kwargs)}.")
        criterion = criteria_lib.get(criterion, num_examples=num_examples)
        if not (is_int(warmup_steps) and warmup_steps >= 0):
            raise ValueError(f"`warmup_steps` must be an int >= 0; received warmup_steps={warmup_steps!r}.")
        if criterion.uses_gradients and not (is_int(window) and 1 <= window <= warmup_steps):
            raise ValueError(
                f"`window` must be an int in [1, warmup_steps={warmup_steps}] for criterion "
                f"{getattr(criterion, 'name', criterion)!r}; received window={window!r}."
            )
        if reselect_every is not None:
            low = window if criterion.uses_gradients else 1
            if not (is_int(reselect_every) and reselect_every >= low):
                raise ValueError(
                    f"`reselect_every` must be None or an int >= {low}"
                    + (" (the window, so windows do not overlap)" if low > 1 else "")
                    + f"; received reselect_every={reselect_every!r}."
                )
        if scope not in selection.SCOPES:
            raise ValueError(f"`scope` must be one of {selection.SCOPES}; received scope={scope!r}.")
        if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or keep <= 0 or (
            not is_int(keep) and keep > 1
        ):
            raise ValueError(
                f"`keep` must be a fraction in (0, 1] or an int count in [1, N]; received keep={keep!r}."
            )
        if seed is None:
            seed = random.SystemRandom().randrange(2**31 - 1)
        elif not (is_int(seed) and 0 <= seed < 2**31):
            raise ValueError(f"`seed` must be None or an int in [0, 2**31); received seed={seed!r}.")

        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner
        self.criterion = criterion
        self.keep = keep
        self.warmup_steps = int(warmup_steps)
        self.window = int(window) if criterion.uses_gradients else 0
        self._window_arg = window
        self.scope = scope
        self.reselect_every = None if reselect_every is None else int(reselect_every)
        self.seed = int(seed)

    # ----------------------------------------------------------------- build
    def build(self, var_list):
        """Create, in this fixed order (it is the checkpoint layout): the
        counters ``skipped_steps``, ``selections``, ``window_count``; one mask
        per variable; one score per variable; then each criterion slot for each
        variable; then the inner optimizer's variables."""
        if self.built:
            return
        total = sum(int(v.shape.num_elements()) for v in var_list)
        self.k = selection.resolve_count(self.keep, total)  # raises before any variable exists
        self.num_parameters = total
        self.skipped_steps = self.add_variable((), "zeros", "int64", name="skipped_steps")
        self.selections = self.add_variable((), "zeros", "int64", name="selections")
        self.window_count = self.add_variable((), "zeros", "float32", name="window_count")
        self.masks = [self.add_variable(v.shape, "ones", "bool", name=self._name_for(v, "mask")) for v in var_list]
        self.scores = [self.add_variable(v.shape, "zeros", "float32", name=self._name_for(v, "score")) for v in var_list]
        self.criterion_state = [{} for _ in var_list]
        for slot in self.criterion.slots:
            for state, v in zip(self.criterion_state, var_list):
                state[slot] = self.add_variable_from_reference(v, name=f"criterion_{slot}")
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @staticmethod
    def _name_for(variable, suffix):
        base = getattr(variable, "path", None) or variable.name
        return f"{base.replace('/', '_').replace(':', '_')}_{suffix}"

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    # ------------------------------------------------------------- read-outs
    @property
    def selected_count(self):
        """Number of parameters that train (int64 scalar); N before selection."""
        return tf.add_n([tf.reduce_sum(tf.cast(m, tf.int64)) for m in self.masks])

    @property
    def frozen_fraction(self):
        """Fraction of parameters frozen (float32 scalar in [0, 1))."""
        return 1.0 - tf.cast(self.selected_count, tf.float32) / float(self.num_parameters)

    # ----------------------------------------------------------------- apply
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
        grads = [g for g, _ in pairs]
        variables = [v for _, v in pairs]
        values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(x)) for x in values])
        tf.cond(
            finite,
            lambda: self._apply_finite(grads, variables),
            lambda: self._count_skipped(),
        )

    def _count_skipped(self):
        self.skipped_steps.assign_add(1)

    def _next_selection(self, step):
        """0-based step of the next selection at or after ``step`` (-1: none)."""
        eta0 = tf.constant(self.warmup_steps, tf.int64)
        if self.reselect_every is None:
            return tf.where(step <= eta0, eta0, tf.constant(-1, tf.int64))
        n = tf.constant(self.reselect_every, tf.int64)
        after = eta0 + (tf.maximum(step - eta0, 0) + n - 1) // n * n
        return after

    def _apply_finite(self, grads, variables):
        step = tf.cast(self.inner_optimizer.iterations, tf.int64)
        selection_step = self._next_selection(step)
        indices = [self._get_variable_index(v) for v in variables]
        if self.criterion.uses_gradients:
            in_window = tf.logical_and(selection_step >= 0, selection_step - step < self.window)
            tf.cond(in_window, lambda: self._accumulate(grads, variables, indices), lambda: None)
        tf.cond(tf.equal(step, selection_step), self._select, lambda: None)
        tf.cond(
            step >= self.warmup_steps,
            lambda: self._restricted_update(grads, variables, indices),
            lambda: self.inner_optimizer.apply(grads, variables),
        )

    def _accumulate(self, grads, variables, indices):
        count = self.window_count + 1.0
        for g, v, i in zip(grads, variables, indices):
            g = tf.convert_to_tensor(g)  # IndexedSlices (Embedding) -> dense
            state = self.criterion_state[i]
            current = {slot: state[slot].value for slot in self.criterion.slots}
            new = self.criterion.update(current, g, v.value, count)
            for slot in self.criterion.slots:
                state[slot].assign(new[slot])
        self.window_count.assign(count)

    def _select(self):
        count = self.window_count.value
        scores = []
        for i, v in enumerate(self._trainable_variables):
            state = {slot: var.value for slot, var in self.criterion_state[i].items()}
            seed = tf.stack([tf.constant(self.seed, tf.int64), self.selections.value * 65536 + i])
            score = self.criterion.score(state, v.value, count, tf.cast(seed % (2**31 - 1), tf.int32))
            scores.append(tf.ensure_shape(tf.cast(score, tf.float32), v.shape))
        masks = selection.select(scores, self.k, self.scope)
        for mask_var, score_var, mask, score in zip(self.masks, self.scores, masks, scores):
            mask_var.assign(mask)
            score_var.assign(score)
        for state in self.criterion_state:
            for var in state.values():
                var.assign(tf.zeros_like(var))
        self.window_count.assign(0.0)
        self.selections.assign_add(1)

    def _restricted_update(self, grads, variables, indices):
        masks = [self.masks[i].value for i in indices]
        dense = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices (Embedding) -> dense
        masked = [tf.where(m, g, tf.zeros_like(g)) for m, g in zip(masks, dense)]
        before = [tf.identity(v.value) for v in variables]
        self.inner_optimizer.apply(masked, variables)
        for v, m, old in zip(variables, masks, before):
            v.assign(tf.where(m, v.value, old))

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
        return {
            "name": self.name,
            "inner": keras.saving.serialize_keras_object(self.inner_optimizer),
            "criterion": keras.saving.serialize_keras_object(self.criterion),
            "keep": self.keep,
            "warmup_steps": self.warmup_steps,
            "window": self._window_arg,
            "scope": self.scope,
            "reselect_every": self.reselect_every,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["inner"] = keras.saving.deserialize_keras_object(config["inner"], custom_objects=custom_objects)
        config["criterion"] = keras.saving.deserialize_keras_object(config["criterion"], custom_objects=custom_objects)
        return cls(**config)
