"""Keras 3 front end: ``SelectiveOptimizer``, a wrapper around any Keras optimizer.

The procedure (warm-up, window, exact top-k selection, frozen entries that do
not move at all, NaN/Inf steps skipped) lives in the TF-ops core
``tf_selopt.core.selective``, shared with the tf_keras front end; this module only
creates the variables the Keras 3 way, forwards to the inner optimizer and
(de)serializes. Entries pruned by ``tf_selopt.keras.pruning`` are never selected.

Only the TensorFlow backend is supported. Under ``tf.distribute``
(MirroredStrategy, MultiWorkerMirroredStrategy) create the model and the
optimizer in ``strategy.scope()``: every replica and worker selects the same
masks, those of a single-device run on the same global batches (see
``_apply_distributed``).

The restricted phase updates the selected entries only (``update``, read-out
``update_path``): the inner optimizer runs on k-sized buffers of the selected
values (``tf_selopt.keras.selected_only``), wherever that equals the masked path
bit for bit (also under a tf.distribute strategy: the k-sized update runs in
each replica as the inner optimizer's does); otherwise (other inner optimizers,
clipnorm, constraints) on all N entries with a masked gradient.
"""

from __future__ import annotations

import contextlib
import logging

import keras
import tensorflow as tf

from tf_selopt.core import _compat as core_compat
from tf_selopt.core import criteria as criteria_lib
from tf_selopt.core import update_paths
from tf_selopt.core.config import config_arguments
from tf_selopt.core.frontend import SelectiveFrontEnd, new_selective
from tf_selopt.core.selective import refuse_base_arguments
from tf_selopt.keras import _compat, profiles, pruning
from tf_selopt.keras.release import StateNotLoadedWarning, WarmupRelease
from tf_selopt.keras.selected_only import KerasSelectedOnly, apply_in_each_replica

__all__ = ["SelectiveOptimizer", "StateNotLoadedWarning"]

#: Says, once at ``build`` (INFO), why ``update="auto"`` runs the restricted phase masked.
logger = logging.getLogger("tf_selopt")

for _cls in criteria_lib.BUILTIN.values():
    keras.saving.register_keras_serializable(package="tf_selopt")(_cls)


def _bare_pruning_mask(constraint) -> bool:
    """A pruning mask with no other constraint inside: it never moves an unpruned entry."""
    return isinstance(constraint, pruning.PruningMask) and constraint.inner is None


def _check_inner(inner):
    """A ValueError unless ``inner`` is a Keras 3 optimizer this wrapper can drive (TensorFlow backend)."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"SelectiveOptimizer needs the TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()!r}."
        )
    if not isinstance(inner, keras.optimizers.Optimizer):
        raise ValueError(
            "`inner` must be a Keras 3 optimizer instance (keras.optimizers.Optimizer, "
            f"e.g. keras.optimizers.Adam(1e-3)); received {inner!r} of type {type(inner).__name__}. "
            "For tf_keras optimizers use tf_selopt.keras2.SelectiveOptimizer."
        )
    if isinstance(inner, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "`inner` must not be a LossScaleOptimizer: wrap the other way, "
            "LossScaleOptimizer(SelectiveOptimizer(inner)) (what compile does under mixed_float16)."
        )
    if inner.gradient_accumulation_steps:
        raise ValueError(
            "`inner` must not accumulate gradients (its gradient_accumulation_steps="
            f"{inner.gradient_accumulation_steps}): steps are counted by the inner optimizer's `iterations`, "
            "which then stand still between updates, so windows and selections would repeat."
        )


def _why_masked(inner, config, parameters) -> str:
    """Why the restricted phase runs masked ("" for selected-only; ``tf_selopt.keras.profiles.why_not``); a
    ValueError if ``config.update`` asks for selected-only where it is not exact."""
    if config.update == "masked":
        return "update='masked'"
    if not parameters:
        return "no parameters to select (every variable is overwritten with its gradient)"
    reselects = config.reselect_every is not None
    reason = profiles.why_not(inner, parameters, _bare_pruning_mask, exact=config.update == "auto", reselects=reselects)
    if reason and config.update == "selected_only":
        raise ValueError(
            f"`update`='selected_only' is not exact here: {reason}. Use update='auto' (selected-only "
            "wherever it is exact) or 'masked'."
        )
    return reason


def _building_eagerly(config):
    """Where ``apply`` builds the optimizer: eagerly even while the first step traces. Given masks are read at
    build, so their variables must be initialized before the step runs; and a step that creates no variable
    of its own is traced once, not twice (``core._compat.variables_created_eagerly``). Under a
    ``tf.distribute`` strategy, where Keras builds before tracing, the strategy's variable creators see each
    variable as usual."""
    if tf.distribute.has_strategy():
        return tf.init_scope() if config.preselected else contextlib.nullcontext()
    return core_compat.variables_created_eagerly()


def _apply_distributed(selective, inner, grads, variables, indices, phase):
    """``Selective.apply`` under a ``tf.distribute`` strategy, called per replica.

    The gradients are all-reduced (summed: the global batch's gradient, as
    Keras scales each replica's loss by 1 / replicas); the step's decisions
    (finite check, window, selection, restore) then run once, in
    cross-replica context (one ``merge_call``), on the first local replica's
    copy of that sum. Variable writes there update every replica's copy, so
    masks and scores are the same on all replicas and workers. The inner
    optimizer runs per replica and all-reduces itself: replica 0 gives it the
    (masked) reduced gradients, the others zeros, so its sum is exactly them.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise ValueError(
            "Under a tf.distribute strategy, SelectiveOptimizer.apply must be called in a replica "
            "context (inside `model.fit` or `strategy.run`), as Keras optimizers are."
        )
    reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.convert_to_tensor(g) for g in grads])

    def step(strategy, reduced):
        def inner_apply(grads, variables):
            apply_in_each_replica(inner, grads, variables)

        first = [strategy.experimental_local_results(g)[0] for g in reduced]
        selective.apply(first, variables, indices, inner.iterations, inner_apply, phase)

    ctx.merge_call(step, args=(reduced,))


@keras.saving.register_keras_serializable(package="tf_selopt")
class SelectiveOptimizer(_compat.SyncsBeforeCheckpoint, WarmupRelease, SelectiveFrontEnd, keras.optimizers.Optimizer):
    """Train only the parameters a criterion selects; freeze the rest exactly.

    Args:
        inner: the Keras 3 optimizer that does the updates (SGD, Adam, AdamW, ...).
        criterion: ``"gradient_sum"`` (the note's), ``"preconditioned"`` (the
            note's, needs ``num_examples``), ``"fisher"``, ``"magnitude"``,
            ``"random"``, or a criterion object (see ``tf_selopt.core.criteria``).
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
        granularity: what is selected: ``"parameter"`` (single entries, exactly
            ``k``; the note's), ``"unit"`` (whole output units: one index of
            the last axis of each variable, i.e. a Dense unit's or a Conv
            channel's kernel column, a bias entry; an Embedding dimension; a
            scalar) or ``"variable"`` (whole tensors; needs ``scope="global"``).
            ``keep`` still counts parameters: whole groups are taken greedily
            by the sum of their entries' scores (best first, skipping a group
            that no longer fits) so at most ``k`` parameters train
            (``selected_count``, exact and deterministic; ``k`` smaller than
            every group raises at ``build``). Variables left with nothing to
            train can leave the gradient computation: see
            ``tf_selopt.keras.freezing.DropFrozenVariables`` and ``trainable_subset``.
        update: how the restricted phase updates. ``"auto"`` (default):
            ``"selected_only"`` wherever it is exact, else ``"masked"``.
            ``"selected_only"``: the inner optimizer runs on the k selected
            entries only (k-sized values, int32 indices and inner state; frozen
            entries are never written; the selected entries' values equal the
            masked path's bit for bit): the elementwise optimizers SGD, Adam,
            AdamW, Adamax, Nadam and Lion, and their subclasses that keep
            ``update_step`` and ``build``; RMSprop, Adagrad and Adadelta only
            when asked for (1 ulp off in a ``tf.function``); not with clipnorm /
            global_clipnorm or variable constraints other than a pruning mask (a
            ValueError at ``build`` naming the reason: the profiles of
            ``tf_selopt.keras.profiles``).
            ``"masked"``: the inner optimizer on all N entries with
            a masked gradient. After the last selection (no ``reselect_every``)
            ``release_warmup_state`` drops the N-sized warm-up state.
        masks: None, or the entries to train given before training: a list of
            bool arrays, one per trainable variable in
            ``model.trainable_variables`` order (e.g. from ``tf_selopt.calibrate``).
            They train from step 0 (no warm-up, window or selection; ``keep``,
            ``warmup_steps``, ``window`` and ``reselect_every`` must keep their
            defaults); on the selected-only path the inner optimizer is never
            built on the model variables, so no N-sized float state exists.
            Read-out ``preselected``; see docs/guides/finetuning.md.
        name: optimizer name.

    Read-outs (``tf_selopt.core.frontend.SelectiveFrontEnd``): ``masks`` (bool
    variable per trainable variable, in build order; True = selected),
    ``scores`` (float32, the criterion's scores at the last selection),
    ``selected_count`` (selected and not pruned), ``pruned_count``,
    ``frozen_fraction``, ``skipped_steps`` (steps skipped for non-finite
    gradients), ``selections`` (selections done), ``k``, ``num_parameters``,
    ``update_path`` (``"selected_only"`` or ``"masked"``; ``update_path_reason``
    says why a masked path runs, and under ``update="auto"`` the logger
    ``"tf_selopt"`` says it once at ``build``, at INFO; ``masked_reason`` is
    another name for it),
    ``restores_frozen`` (False when the inner optimizer's profile says a zero
    gradient with zeroed momentum leaves an entry in place, without weight
    decay, EMA or a constraint other than a pruning mask: frozen entries then
    stay in place because their momentum is zeroed at selection, and no
    restore follows each update).

    Keras' contract (docs/guides/selection.md, "What SelectiveOptimizer forwards"): ``learning_rate``,
    ``iterations``, ``loss_scale_factor``, ``exclude_from_weight_decay`` and
    ``finalize_variable_values`` go to the inner optimizer, and every step, on
    every path, reads from it the learning rate (float, schedule or callable,
    whenever set), ``iterations``, ``loss_scale_factor`` and weight decay;
    ``get_weights`` / ``set_weights`` cover its state too; None gradients are
    handled as Keras does; ``overwrite_with_gradient`` variables (float8) are overwritten and are
    no parameters. With the inner optimizer's ``use_ema``, a frozen entry's
    moving average is kept equal to its value and ``finalize_variable_values``
    leaves frozen entries alone: they stay bit-identical through ``fit``.
    Clipping (the inner's ``clipnorm`` / ``global_clipnorm`` / ``clipvalue``)
    clips the gradient the inner optimizer applies: after a selection the
    masked one, as if frozen entries were constants.

    Pruning (``tf_selopt.keras.pruning``): entries held at zero by a pruning mask rank
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
        granularity="parameter",
        update="auto",
        masks=None,
        name=None,
        **kwargs,
    ):
        _check_inner(inner)
        refuse_base_arguments(kwargs)
        selective = new_selective(masks, **config_arguments(locals()))
        super().__init__(learning_rate=0.0, name=name)
        self._selective = selective
        self.inner_optimizer = inner
        self._selected_only_clones = []  # the k-sized inner optimizers, one per dtype (selected-only path)

    def build(self, var_list):
        """Create the state in ``Selective.build``'s order (the checkpoint layout),
        after ``iterations`` and ``learning_rate``, then the inner optimizer's.

        Variables Keras overwrites with their gradient (``overwrite_with_gradient``:
        float8 scales and amax histories after ``model.quantize("float8")``) are
        no parameters: they are left out of the selection (N, ``k``, masks,
        ``num_parameters``) and overwritten as Keras does."""
        if self.built:
            return
        var_list, inner = list(var_list), self.inner_optimizer
        parameters = [v for v in var_list if not _compat.overwrites_with_gradient(self, v)]
        # raises for update="selected_only" where it is not exact
        self._update_path_reason = _why_masked(inner, self._selective.config, parameters)
        selected_only = not self._update_path_reason
        path = update_paths.SelectedOnlyPath(self._selective.plan.reselect_every) if selected_only else None
        self._selective.build(
            parameters,
            add_variable=lambda shape, dtype, init, name: self.add_variable(shape, init, dtype.name, name=name),
            add_slot=lambda v, name: self.add_variable_from_reference(v, name=name),
            pruned_mask_of=pruning.pruning_mask,
            path=path,
        )
        self._parameter_index = {_compat.variable_key(self, v): i for i, v in enumerate(parameters)}
        # Given masks on the selected-only path: the inner optimizer never holds N-sized state.
        inner_on_buffers_only = selected_only and self._selective.config.preselected
        inner.build([] if inner_on_buffers_only else var_list)
        if selected_only:
            with tf.init_scope():  # `build` may run while the first step traces; the clones read the config eagerly
                updater = KerasSelectedOnly(inner, parameters, path.k, path.state, _bare_pruning_mask)
            self._selected_only_clones = updater.clones  # tracked: checkpoints hold their state
            path.use_updater(updater, None if inner_on_buffers_only else self._warmup_slots())
            self._selective.select_given()
        else:
            averages = _compat.moving_averages(inner, parameters)
            path = update_paths.masked(inner, parameters, profiles.motion_slots, _bare_pruning_mask, averages)
            self._selective.use_path(path)
        super().build(var_list)
        if not selected_only and self._selective.config.update == "auto":
            logger.info("%s runs the restricted phase masked: %s.", self.name, self._update_path_reason)

    @property
    def variables(self):
        """Everything the optimizer holds and a checkpoint saves: its own state, the inner optimizer's, and on
        the selected-only path the k-sized inner state."""
        self._sync_release()
        clones = [v for c in self._selected_only_clones for v in c.variables]
        return super().variables + self.inner_optimizer.variables + clones

    def apply_gradients(self, grads_and_vars):
        grads, trainable_variables = zip(*grads_and_vars)
        return self.apply(grads, trainable_variables)

    def apply(self, grads, trainable_variables=None):
        """Apply one step as Keras does (a None gradient is filtered with a warning, all None raise); returns
        ``iterations`` (the inner optimizer's)."""
        if len(grads) == 0:  # a no-op, as in Keras
            return self.iterations
        if trainable_variables is None:
            if not self.built:
                raise ValueError("Call `optimizer.build(trainable_variables)` before `apply` without variables.")
            trainable_variables = _compat.built_variables(self)
        trainable_variables = list(trainable_variables)
        if not self.built:
            with _building_eagerly(self._selective.config), keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        _compat.check_variables_are_known(self, trainable_variables)
        grads, variables = _compat.filter_empty_gradients(self, grads, trainable_variables)
        grads, variables = _compat.overwrite_variables_with_gradients(self, grads, variables)
        indices = [self._parameter_index[_compat.variable_key(self, v)] for v in variables]
        if not variables:  # only overwritten variables (float8 scales): the inner step counts as Keras' does
            self.inner_optimizer.iterations.assign_add(1)
        elif tf.distribute.has_strategy():
            _apply_distributed(self._selective, self.inner_optimizer, grads, variables, indices, self.phase)
        else:
            inner = self.inner_optimizer
            self._selective.apply(grads, variables, indices, inner.iterations, inner.apply, self.phase)
        return self.iterations

    # ------------------------------------------------- forwarded to the inner
    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def loss_scale_factor(self):
        inner = getattr(self, "inner_optimizer", None)
        return None if inner is None else inner.loss_scale_factor

    @loss_scale_factor.setter
    def loss_scale_factor(self, factor):
        # Keras' LossScaleOptimizer turns its inner optimizer's scaling off with `loss_scale_factor = None`:
        # it must reach the optimizer that unscales. (The base constructor sets None before `inner_optimizer`.)
        inner = getattr(self, "inner_optimizer", None)
        if inner is not None:
            inner.loss_scale_factor = factor

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    # --------------------------------------------------------- serialization (``SelectiveFrontEnd``)
    _serialize = staticmethod(keras.saving.serialize_keras_object)
    _deserialize = staticmethod(keras.saving.deserialize_keras_object)
    _serialize_inner = staticmethod(keras.saving.serialize_keras_object)
    _deserialize_inner = staticmethod(keras.saving.deserialize_keras_object)
