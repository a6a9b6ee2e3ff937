"""Selective training in TF ops: the state machine both optimizer front ends share.

``Selective`` holds the validated hyperparameters of the note's procedure and,
once built, its state variables; ``apply`` runs one training step in-graph:

* steps ``0 .. warmup_steps-1`` (eta0): the inner optimizer alone;
* a gradient criterion accumulates the ``window`` gradients that end with the
  selection step (``warmup_steps``, then every ``reselect_every`` steps);
* at a selection step the criterion's scores go through ``masks.masks_from_scores``
  (exactly ``k`` parameters, or whole units / variables within ``k`` for
  ``granularity`` "unit" / "variable") and the window state is reset;
* from step ``warmup_steps`` on, only selected entries move: how, is the
  restricted-update path's job (``tf_selopt.core.update_paths``: masked with
  restore, masked with zeroed motion, selected-only), chosen once at build;
* a step with a NaN/Inf gradient changes nothing but ``skipped_steps``.

Front ends (``tf_selopt.keras.optimizer`` for Keras 3, ``tf_selopt.keras2.optimizer``) only
create the variables with their framework's ``add_variable`` (in ``build``'s
order, which is the checkpoint layout), give the step counter and the inner
update, and say which entries are pruned (``pruned_mask_of``): pruned entries are
ranked last at selection and never move.

Variables with no entry that trains (``frozen_variables``) need no gradient:
``trainable_subset`` says which variables a step must compute gradients for, so
a front end (``tf_selopt.keras.freezing``) or a custom loop can leave the others out
of the gradient computation; the updates of the trained entries are the same.

This module imports TensorFlow only, never a Keras front end.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tf_selopt.core import criteria, selection, update_paths
from tf_selopt.core import masks as masks_lib
from tf_selopt.core.config import BASE_ARGUMENTS, BASE_DEFAULTS, SelectionConfig
from tf_selopt.core.plan import PHASES

__all__ = ["Selective", "BASE_ARGUMENTS", "refuse_base_arguments"]

#: ``add_variable(shape, dtype, initializer, name)`` -> variable; ``initializer`` is "zeros" or "ones".
AddVariable = Callable[[tuple, tf.DType, str, str], tf.Variable]
#: ``add_slot(model_variable, name)`` -> a zeros variable of the model variable's shape and dtype.
AddSlot = Callable[[tf.Variable, str], tf.Variable]


def refuse_base_arguments(kwargs: dict) -> None:
    """Raise for any base-optimizer argument set to other than its default, or unknown keyword, in a front end's
    ``**kwargs``."""
    for arg in BASE_ARGUMENTS:
        value = kwargs.pop(arg, None)
        if value not in (None, False) and value != BASE_DEFAULTS.get(arg):  # (0 == False: an explicit 0 is "unset")
            raise ValueError(f"SelectiveOptimizer does not take `{arg}`: set it on the inner optimizer.")
    if kwargs:
        raise ValueError(f"SelectiveOptimizer got unknown arguments: {sorted(kwargs)}.")


def _and_kept(mask, kept):
    """The entries of ``mask`` that train: those not pruned (``kept`` a pruning mask, True = kept, or None)."""
    return mask if kept is None else tf.logical_and(mask, kept)


def _variable_name(variable, suffix):
    base = getattr(variable, "path", None) or variable.name
    return f"{base.replace('/', '_').replace(':', '_')}_{suffix}"


def _checked_k(config, given_masks, var_list) -> int:
    """``k`` for ``var_list``; a ValueError if the given masks do not match it or no group fits in ``k``."""
    if given_masks is not None:
        if len(given_masks) != len(var_list):
            raise ValueError(
                f"`masks` must hold one bool array per trainable variable ({len(var_list)}, in "
                f"model.trainable_variables order); received {len(given_masks)}."
            )
        for v, mask in zip(var_list, given_masks):
            if tuple(mask.shape) != tuple(v.shape):
                name = getattr(v, "path", None) or v.name
                raise ValueError(
                    f"`masks`: variable {name} has shape {tuple(v.shape)}, its mask {tuple(mask.shape)} "
                    "(masks follow model.trainable_variables order)."
                )
    k = config.k(sum(int(v.shape.num_elements()) for v in var_list))
    if config.granularity != "parameter" and not config.preselected:
        smallest = min(selection.group_size(v.shape, config.granularity) for v in var_list)
        if k < smallest:
            raise ValueError(
                f"`keep`={config.keep!r} gives k={k} parameters, fewer than the smallest "
                f"{config.granularity} ({smallest} parameters): nothing could be selected."
            )
    return k


class Selective:
    """Hyperparameters (validated at construction) and state of selective training.

    Args: see ``tf_selopt.SelectiveOptimizer``; all checks happen here, so both
    front ends refuse the same inputs with the same messages. ``masks``: with
    ``config.preselected``, the given masks (bool arrays, one per variable of
    ``build``'s ``var_list``), or None when they come from loaded weights.
    """

    def __init__(self, config: SelectionConfig, masks=None):
        if masks is not None and not config.preselected:
            raise ValueError("Given `masks` need a preselected config (SelectionConfig(preselected=True)).")
        self.config = config
        self.given_masks = masks
        self.criterion = config.criterion
        self.plan = config.plan
        self.variables = None
        self.path = None  # the restricted-update path (``tf_selopt.core.update_paths``), set by ``build``
        self.keep_scores = False  # read when ``apply`` is traced: the selection empties the scores unless set

    # ----------------------------------------------------------------- build
    def build(self, var_list, add_variable: AddVariable, add_slot: AddSlot, pruned_mask_of=None, path=None):
        """Create the state, in this order (the checkpoint layout): counters
        ``skipped_steps``, ``selections``, ``window_count``; one bool mask per
        variable (none with a preselected config on a path that holds the
        selection itself, the selected-only one: ``selection_mask`` derives a
        variable's mask from it); the ``path``'s own variables (the selected-only
        buffers: values, positions, offsets per dtype); one float32 score per
        variable; each criterion slot for each variable (slot-major). Scores and
        criterion slots come last so that ``release`` drops a tail of the layout.
        ``path``: the restricted-update path (default ``update_paths.MaskedRestore()``;
        ``use_path`` replaces a masked one once the inner optimizer is built).
        ``pruned_mask_of(variable)`` -> bool tensor (True = kept) or None, read
        when ``apply`` is traced."""
        config = self.config
        self.k = _checked_k(config, self.given_masks, var_list)  # raises before any variable exists
        self.num_parameters = sum(int(v.shape.num_elements()) for v in var_list)
        self.variables = list(var_list)
        self.pruned_mask_of = pruned_mask_of or (lambda variable: None)
        self.skipped_steps = add_variable((), tf.int64, "zeros", "skipped_steps")
        self.selections = add_variable((), tf.int64, "zeros", "selections")
        self.window_count = add_variable((), tf.float32, "zeros", "window_count")
        self.path = update_paths.MaskedRestore() if path is None else path
        if config.preselected and self.path.holds_selection:  # the path holds the selection: no N bools
            self.masks = None
        else:
            initial = "zeros" if config.preselected else "ones"
            self.masks = [add_variable(v.shape, tf.bool, initial, _variable_name(v, "mask")) for v in var_list]
        self.path.bind(self.variables, self.trains, self.kept)
        self.path.build(var_list, self.k, add_variable)
        self.criterion_state = [{} for _ in var_list]
        if config.preselected:  # no scores, no window: the selection was made before training
            self.scores = None
            if self.given_masks is not None:
                with tf.init_scope():
                    for mask_var, mask in zip(self.masks or (), self.given_masks):
                        mask_var.assign(mask)
                    self.selections.assign(1)
            return
        self.scores = [add_variable(v.shape, tf.float32, "zeros", _variable_name(v, "score")) for v in var_list]
        for slot in self.criterion.slots:
            for state, v in zip(self.criterion_state, var_list):
                state[slot] = add_slot(v, f"criterion_{slot}")

    def use_path(self, path):
        """Replace the masked path ``build`` set (``update_paths.masked(inner, ...)`` once ``inner`` is built)."""
        path.bind(self.variables, self.trains, self.kept)
        self.path = path

    def select_given(self):
        """With given masks on a path that holds the selection, hand them to it now (eager, after ``build``
        and the path's ``use_updater``)."""
        if self.given_masks is not None and self.path.holds_selection:
            with tf.init_scope():
                self.path.on_select(
                    [_and_kept(tf.convert_to_tensor(m), self.kept(i)) for i, m in enumerate(self.given_masks)], True
                )

    def warmup_state(self, keep_scores):
        """The N-sized variables of this object the restricted phase does not read: the window state and the
        scores (unless ``keep_scores``)."""
        scores = [] if keep_scores or self.scores is None else list(self.scores)
        return scores + self.criterion_state_variables()

    def criterion_state_variables(self):
        """The criterion's window state, one dict of slots per variable, flattened (slot order per variable)."""
        return [var for state in self.criterion_state for var in state.values()]

    def release(self, keep_scores=False):
        """Forget the warm-up's state: the window state and the scores (unless ``keep_scores``); the front end
        drops the variables and the inner optimizer's N-sized state. Only after a selection of a run without
        ``reselect_every``, on the selected-only path (a ValueError names what is missing). Returns the
        released variables of this object (the tail of ``build``'s layout: scores, then criterion slots).
        Every later ``apply`` traces the restricted update only."""
        self.path.check_release(self.plan)
        released = self.warmup_state(keep_scores)
        if not keep_scores:
            self.scores = None
        self.criterion_state = [{} for _ in self.variables]
        self.path.released = True
        return released

    def drop_scores(self):
        """Forget the scores kept past a release (``release(keep_scores=True)``); returns their variables."""
        scores, self.scores = list(self.scores or ()), None
        return scores

    # ------------------------------------------------------------- read-outs
    def kept(self, i):
        """Pruning mask of variable ``i`` (bool tensor) or None."""
        mask = self.pruned_mask_of(self.variables[i])
        return None if mask is None else tf.convert_to_tensor(mask)

    def selection_mask(self, i):
        """Bool tensor: the selected entries of variable ``i`` (the mask variable, or on the preselected
        selected-only path, which holds no masks, derived from the selected positions)."""
        if self.masks is None:
            return self.path.mask(i)
        return tf.convert_to_tensor(self.masks[i])

    def trains(self, i):
        """Bool tensor: entries of variable ``i`` that train (selected and not pruned)."""
        return _and_kept(self.selection_mask(i), self.kept(i))

    def selected_count(self):
        """Parameters that train (int64): ``N`` minus pruned before selection, at most ``k`` after."""
        return tf.add_n([tf.reduce_sum(tf.cast(self.trains(i), tf.int64)) for i in range(len(self.variables))])

    def frozen_indices(self):
        """Indices (build order) of the variables with no entry that trains (eager; a list of ints)."""
        return [i for i in range(len(self.variables)) if not bool(tf.reduce_any(self.trains(i)))]

    def pruned_count(self):
        """Parameters held at zero by pruning masks (int64)."""
        kept = [k for k in map(self.kept, range(len(self.variables))) if k is not None]
        return tf.add_n([tf.constant(0, tf.int64)] + [tf.reduce_sum(tf.cast(~k, tf.int64)) for k in kept])

    # ----------------------------------------------------------------- apply
    def apply(self, grads, variables, indices, step, inner_apply, phase=None):
        """One training step. ``grads``/``variables``: matching lists (no None),
        ``indices``: each variable's position in ``build``'s ``var_list``,
        ``step``: int64 scalar, the 0-based count of finite steps,
        ``inner_apply(grads, variables)``: the inner optimizer's update,
        ``phase``: None (the general step) or one of ``plan.PHASES``: trace only
        that phase's ordinary step (``tf_selopt.keras.phases``); an in-graph
        assertion stops it from running at any other step.

        Per step (``benchmarks/overhead.py``): the finite check, one cond around
        the window/selection work, one choosing the full or restricted update.
        Every ``tf.cond`` passes each captured tensor through a switch and walks
        the ops of the branch not taken, so the rare work shares a single cond;
        this nesting also keeps the warm-up bit-identical to the inner optimizer
        under XLA (tested), which flatter chains did not.
        """
        if phase is not None and phase not in PHASES:
            raise ValueError(f"`phase` must be None or one of {PHASES}; received phase={phase!r}.")
        if self.path.released or self.config.preselected:  # every step is an ordinary restricted one
            phase = "restricted"
        if self.config.preselected:
            self._check_something_trains()
        values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(x)) for x in values])
        step = tf.cast(step, tf.int64)
        special = self.plan.in_window(step)
        restricted = self.plan.restricted(step)

        def special_work():  # a finite step in a gradient window or at a selection
            if self.criterion.uses_gradients:
                self._accumulate(grads, variables, indices)  # every special step is in the window
            tf.cond(self.plan.is_selection(step), self._select, lambda: None)

        def restricted_update():  # the path's (``tf_selopt.core.update_paths``)
            self.path.apply(grads, variables, indices, inner_apply)

        def full_update():  # the inner optimizer's; its return value (if any) is dropped
            inner_apply(grads, variables)

        if phase is not None:
            ordinary = tf.logical_and(tf.logical_not(special), tf.equal(restricted, phase == "restricted"))
            check = tf.debugging.Assert(ordinary, ["step", step, "is not an ordinary step of phase", phase])
            with tf.control_dependencies([check]):
                tf.cond(finite, restricted_update if phase == "restricted" else full_update, self._count_skipped)
            return

        def finite_step():
            tf.cond(special, special_work, lambda: None)
            tf.cond(restricted, restricted_update, full_update)

        tf.cond(finite, finite_step, self._count_skipped)

    def _check_something_trains(self):
        """In-graph: with given masks, some entry trains (masks loaded, not all pruned); else the step raises."""
        held = self.path.selected_count()
        masks = self.masks or ()
        count = tf.add_n([tf.reduce_sum(tf.cast(tf.convert_to_tensor(m), tf.int64)) for m in masks] or [held])
        tf.debugging.assert_positive(
            count,
            message="SelectiveOptimizer: the given masks select no entry that trains (all pruned, or an "
            "optimizer rebuilt from its config whose weights were not loaded yet)",
        )

    def _count_skipped(self):
        self.skipped_steps.assign_add(1)

    def _accumulate(self, grads, variables, indices):
        count = self.window_count + 1.0
        for g, v, i in zip(grads, variables, indices):
            g = tf.cast(tf.convert_to_tensor(g), v.dtype)  # IndexedSlices -> dense; cast as Keras' update steps do
            state = self.criterion_state[i]
            current = {slot: tf.convert_to_tensor(state[slot]) for slot in self.criterion.slots}
            new = self.criterion.update(current, g, tf.convert_to_tensor(v), count)
            for slot in self.criterion.slots:
                state[slot].assign(new[slot])
        self.window_count.assign(count)

    def window_scores(self) -> list:
        """The criterion's scores over the window so far: one float32 tensor per variable, of its shape, with
        the seeds the next selection uses (what it ranks). Needs the window's state (not released)."""
        count = tf.convert_to_tensor(self.window_count)
        seeds = criteria.seeds(self.config.seed, len(self.variables), call=self.selections)
        scores = []
        for i, (v, seed) in enumerate(zip(self.variables, seeds)):
            state = {slot: tf.convert_to_tensor(var) for slot, var in self.criterion_state[i].items()}
            score = self.criterion.score(state, tf.convert_to_tensor(v), count, seed)
            scores.append(tf.ensure_shape(tf.cast(score, tf.float32), v.shape))
        return scores

    def _select(self):
        scores = self.window_scores()
        kept = [self.kept(i) for i in range(len(self.variables))]
        masks = masks_lib.masks_from_scores(
            scores, self.k, scope=self.config.scope, granularity=self.config.granularity, kept=kept
        )
        empties = self.path.releases_at_selection()
        for mask_var, score_var, mask, score in zip(self.masks, self.scores, masks, scores):
            mask_var.assign(mask)
            if not empties or self.keep_scores:
                score_var.assign(score)
        self.path.on_select([_and_kept(m, k) for m, k in zip(masks, kept)], tf.equal(self.selections, 0))
        if empties:  # after the path took the selected entries' state from it
            self.path.empty(self.warmup_state(self.keep_scores))
        else:
            for var in self.criterion_state_variables():
                var.assign(tf.math.multiply_no_nan(tf.convert_to_tensor(var), tf.constant(0, var.dtype)))
        self.window_count.assign(0.0)
        self.selections.assign_add(1)
