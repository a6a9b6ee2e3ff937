"""Selective training in TF ops: the state machine both optimizer front ends share.

``Selective`` holds the validated hyperparameters of the note's procedure and,
once built, its state variables; ``apply`` runs one training step in-graph:

* steps ``0 .. warmup_steps-1`` (eta0): the inner optimizer alone;
* a gradient criterion accumulates the ``window`` gradients that end with the
  selection step (``warmup_steps``, then every ``reselect_every`` steps);
* at a selection step the criterion's scores go through ``masks.masks_from_scores``
  (exactly ``k`` parameters, or whole units / variables within ``k`` for
  ``granularity`` "unit" / "variable") and the window state is reset;
* from step ``warmup_steps`` on, only selected entries move: their gradient is
  zeroed before the inner update, and either their old value is restored after
  it (any inner optimizer: momentum, Adam moments, decoupled weight decay do not
  move them) or, for inner optimizers known to leave an entry with a zero
  gradient and zero momentum exactly in place, their momentum is zeroed once at
  the selection and no restore is needed (``motion_slots``);
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

from tf_selopt.core import _compat, criteria, selection
from tf_selopt.core import masks as masks_lib
from tf_selopt.core.config import BASE_ARGUMENTS, BASE_DEFAULTS, SelectionConfig
from tf_selopt.core.plan import PHASES
from tf_selopt.core.selected_only import SelectedOnly

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


def _first_emptiable(variables):
    """The first of ``variables`` that ``_compat.empty_in_place`` can empty (rank > 0, some entries), or None."""
    return next((v for v in variables if v.shape.rank and v.shape.num_elements()), None)


def _variable_name(variable, suffix):
    base = getattr(variable, "path", None) or variable.name
    return f"{base.replace('/', '_').replace(':', '_')}_{suffix}"


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
        self.window = config.window_steps
        self.variables = None
        self.motion_slots = None
        self.averages = None  # the inner optimizer's EMA of each variable (``set_averages``)
        self.frozen_stay_put = lambda: False
        self.selected_state = None  # ``SelectedOnly`` (built when the restricted phase updates selected entries only)
        self.updater = None  # the front end's inner optimizer on ``selected_state`` (``use_selected_only``)
        self.released = False
        self.inner_warmup_state = None  # the inner optimizer's N-sized state, emptied at the selection
        self.keep_scores = False  # read when ``apply`` is traced: the selection empties the scores unless set
        self._empties_traced = False  # whether a traced (or eager) selection empties the warm-up state

    # ----------------------------------------------------------------- build
    def build(self, var_list, add_variable: AddVariable, add_slot: AddSlot, pruned_mask_of=None, selected_only=False):
        """Create the state, in this order (the checkpoint layout): counters
        ``skipped_steps``, ``selections``, ``window_count``; one bool mask per
        variable (none with a preselected config on the selected-only path: the
        selected positions hold the selection, ``selection_mask`` derives a
        variable's mask from them); with ``selected_only``, the ``SelectedOnly`` buffers (values,
        positions, offsets per dtype); one float32 score per variable; each
        criterion slot for each variable (slot-major). Scores and criterion slots
        come last so that ``release`` drops a tail of the layout.
        ``pruned_mask_of(variable)`` -> bool tensor (True = kept) or None, read
        when ``apply`` is traced."""
        total = sum(int(v.shape.num_elements()) for v in var_list)
        config = self.config
        self._check_given_masks(var_list)
        self.k = config.k(total)  # raises before any variable exists
        if config.granularity != "parameter" and not config.preselected:
            smallest = min(selection.group_size(v.shape, config.granularity) for v in var_list)
            if self.k < smallest:
                raise ValueError(
                    f"`keep`={config.keep!r} gives k={self.k} parameters, fewer than the smallest "
                    f"{config.granularity} ({smallest} parameters): nothing could be selected."
                )
        self.num_parameters = total
        self.variables = list(var_list)
        self.pruned_mask_of = pruned_mask_of or (lambda variable: None)
        self.skipped_steps = add_variable((), tf.int64, "zeros", "skipped_steps")
        self.selections = add_variable((), tf.int64, "zeros", "selections")
        self.window_count = add_variable((), tf.float32, "zeros", "window_count")
        if config.preselected and selected_only:  # the selected-only positions hold the selection: no N bools
            self.masks = None
        else:
            initial = "zeros" if config.preselected else "ones"
            self.masks = [add_variable(v.shape, tf.bool, initial, _variable_name(v, "mask")) for v in var_list]
        if selected_only:
            self.selected_state = SelectedOnly()
            self.selected_state.build(var_list, self.k, add_variable)
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

    def _check_given_masks(self, var_list):
        if self.given_masks is None:
            return
        if len(self.given_masks) != len(var_list):
            raise ValueError(
                f"`masks` must hold one bool array per trainable variable ({len(var_list)}, in "
                f"model.trainable_variables order); received {len(self.given_masks)}."
            )
        for v, mask in zip(var_list, self.given_masks):
            if tuple(mask.shape) != tuple(v.shape):
                name = getattr(v, "path", None) or v.name
                raise ValueError(
                    f"`masks`: variable {name} has shape {tuple(v.shape)}, its mask {tuple(mask.shape)} "
                    "(masks follow model.trainable_variables order)."
                )

    def set_motion_slots(self, inner, lookup, constraint_allowed=lambda constraint: False):
        """Skip the restore of frozen entries where the inner optimizer allows it (front ends, after
        building ``inner`` on the same variables).

        ``lookup(inner)``: the names of ``inner``'s per-variable slot lists that must be zero for an entry
        with a zero gradient to stay exactly in place (e.g. Adam's first moments; ``()``: none needed), or
        None where no such guarantee is known: a front end's profile registry
        (``tf_selopt.core.profiles.motion_lookup``, which finds a subclass's profile along its MRO unless it
        overrides the update). The guarantee is off with weight decay, EMA, gradient accumulation, a
        variable overwritten with its gradient, or a constraint ``constraint_allowed`` does not accept; it
        is checked again whenever ``apply`` is traced. When it holds, the slots of every entry that stops
        training are zeroed at each selection and no restore follows the update.
        """
        names = lookup(inner)
        if names is None:
            return
        lists = [slots for slots in (getattr(inner, name) for name in names) if slots]  # e.g. SGD without momentum
        if any(len(slots) != len(self.variables) or any(s is None for s in slots) for slots in lists):
            return
        self.motion_slots = [[slots[i] for slots in lists] for i in range(len(self.variables))]

        def holds():
            if getattr(inner, "weight_decay", None) or getattr(inner, "use_ema", False):
                return False
            if getattr(inner, "gradient_accumulation_steps", None):
                return False
            return all(
                not getattr(v, "overwrite_with_gradient", False)
                and (getattr(v, "constraint", None) is None or constraint_allowed(v.constraint))
                for v in self.variables
            )

        self.frozen_stay_put = holds

    def set_averages(self, averages):
        """The inner optimizer's moving averages (``use_ema``), one per variable in build order (None: none).

        A frozen entry's average is kept equal to its value (set at each restore):
        the inner optimizer's EMA reads it after weight decay moved it, and
        ``finalize_variable_values`` (end of ``fit``) writes the averages into the
        model, so frozen entries stay bit-identical through both.
        """
        self.averages = None if averages is None else list(averages)

    def use_selected_only(self, updater):
        """Run the restricted phase on ``selected_state`` with ``updater`` (the front end's inner optimizer on
        the k-sized buffers): an object with ``select(masks)`` (at each selection, the bool masks of the
        entries that train, one per variable), ``apply(grads, kept)`` (``grads``: one per variable, None for a
        variable without one; ``kept``: pruning masks or None) and ``finalize()``."""
        self.updater = updater
        self.motion_slots = None  # the N-sized inner state is not used after a selection
        if self.given_masks is not None:  # the selection was made before training: take it now
            with tf.init_scope():
                trains = [_and_kept(tf.convert_to_tensor(m), self._kept(i)) for i, m in enumerate(self.given_masks)]
                updater.select(trains, True)

    def empty_at_selection(self, inner_warmup_state):
        """On the selected-only path, empty the warm-up's N-sized state in-graph at the selection
        (``core._compat.empty_in_place``): ``inner_warmup_state`` (the inner optimizer's slots and moving
        averages on the model variables, which the restricted phase no longer reads), the criterion's window
        state and, unless ``keep_scores``, the scores. Their buffers are freed inside the running step, so a
        plain ``fit`` or ``tf.function`` loop holds k-sized state from the selection on, with no retrace.

        Only where the step can do it (``_empties_at_selection``, read when ``apply`` is traced): no
        ``reselect_every`` (a reselection reads the window state), no XLA (compiled resources keep their
        shape), no ``tf.distribute`` strategy. The front end then drops the emptied variables from what it
        holds (``release``) when it next reads them (``emptied_in_graph``)."""
        self.inner_warmup_state = list(inner_warmup_state)

    def _empties_at_selection(self) -> bool:
        """Whether the selection traced now empties the warm-up state (``empty_at_selection``)."""
        return (
            self.inner_warmup_state is not None
            and self.updater is not None
            and self.plan.reselect_every is None
            and not self.released
            and not _compat.in_xla_context()
            and not tf.distribute.has_strategy()
        )

    def _warmup_state(self, keep_scores):
        """The N-sized variables the restricted phase does not read: window state, scores (unless
        ``keep_scores``), the inner optimizer's (``empty_at_selection``)."""
        own = [var for state in self.criterion_state for var in state.values()]
        scores = [] if keep_scores or self.scores is None else list(self.scores)
        return scores + own + list(self.inner_warmup_state or ())

    def emptied_in_graph(self):
        """None if the selection did not empty the warm-up state (or it is released already), else whether the
        scores were kept (eager; see ``empty_at_selection``)."""
        if self.released or not self._empties_traced:
            return None
        scores = _first_emptiable(self.scores or ())
        probe = _first_emptiable(self._warmup_state(keep_scores=True))
        probe = scores if probe is None else probe
        if probe is None or not _compat.holds_no_entries(probe):
            return None
        return scores is not None and not _compat.holds_no_entries(scores)

    def criterion_state_variables(self):
        """The criterion's window state, one dict of slots per variable, flattened (slot order per variable)."""
        return [var for state in self.criterion_state for var in state.values()]

    def release(self, keep_scores=False):
        """Forget the warm-up's state: the window state, the scores (unless ``keep_scores``) and the inner
        optimizer's moving averages; the front end drops the variables. Only after a selection of a run
        without ``reselect_every``, on the selected-only path (a ValueError names what is missing). Returns
        the released variables of this object (the tail of ``build``'s layout: scores, then criterion
        slots). Every later ``apply`` traces the restricted update only."""
        if self.updater is None:
            raise ValueError(
                "Only the selected-only path (`update_path` 'selected_only') can release the warm-up state."
            )
        if self.plan.reselect_every is not None:
            raise ValueError("With `reselect_every` set, the warm-up state is needed for every reselection.")
        released = [] if keep_scores or self.scores is None else list(self.scores)
        released += self.criterion_state_variables()
        if not keep_scores:
            self.scores = None
        self.criterion_state = [{} for _ in self.variables]
        self.averages = None
        self.released = True
        return released

    def drop_scores(self):
        """Forget the scores kept past a release (``release(keep_scores=True)``); returns their variables."""
        scores, self.scores = list(self.scores or ()), None
        return scores

    def _skips_restore(self):
        """Whether frozen entries stay in place without a restore (read at trace time)."""
        return self.motion_slots is not None and bool(self.frozen_stay_put())

    # ------------------------------------------------------------- read-outs
    def _kept(self, i):
        """Pruning mask of variable ``i`` (bool tensor) or None."""
        mask = self.pruned_mask_of(self.variables[i])
        return None if mask is None else tf.convert_to_tensor(mask)

    def selection_mask(self, i):
        """Bool tensor: the selected entries of variable ``i`` (the mask variable, or on the preselected
        selected-only path, which holds no masks, derived from the selected positions)."""
        if self.masks is None:
            return self.selected_state.mask(i)
        return tf.convert_to_tensor(self.masks[i])

    def trains(self, i):
        """Bool tensor: entries of variable ``i`` that train (selected and not pruned)."""
        return _and_kept(self.selection_mask(i), self._kept(i))

    def selected_count(self):
        """Parameters that train (int64): ``N`` minus pruned before selection, at most ``k`` after."""
        return tf.add_n([tf.reduce_sum(tf.cast(self.trains(i), tf.int64)) for i in range(len(self.variables))])

    def frozen_indices(self):
        """Indices (build order) of the variables with no entry that trains (eager; a list of ints)."""
        return [i for i in range(len(self.variables)) if not bool(tf.reduce_any(self.trains(i)))]

    def pruned_count(self):
        """Parameters held at zero by pruning masks (int64)."""
        counts = [tf.constant(0, tf.int64)]
        for i in range(len(self.variables)):
            kept = self._kept(i)
            if kept is not None:
                counts.append(tf.reduce_sum(tf.cast(tf.logical_not(kept), tf.int64)))
        return tf.add_n(counts)

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
        if self.released or self.config.preselected:  # every step is an ordinary restricted one
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

        if phase is not None:
            ordinary = tf.logical_and(tf.logical_not(special), tf.equal(restricted, phase == "restricted"))
            check = tf.debugging.Assert(ordinary, ["step", step, "is not an ordinary step of phase", phase])
            with tf.control_dependencies([check]):
                if phase == "restricted":
                    update = lambda: self._restricted_update(grads, variables, indices, inner_apply)  # noqa: E731
                else:
                    update = lambda: self._full_update(grads, variables, inner_apply)  # noqa: E731
                tf.cond(finite, update, self._count_skipped)
            return

        def finite_step():
            tf.cond(special, special_work, lambda: None)
            tf.cond(
                restricted,
                lambda: self._restricted_update(grads, variables, indices, inner_apply),
                lambda: self._full_update(grads, variables, inner_apply),
            )

        tf.cond(finite, finite_step, self._count_skipped)

    def _check_something_trains(self):
        """In-graph: with given masks, some entry trains (masks loaded, not all pruned); else the step raises."""
        if self.selected_state is not None:
            count = tf.cast(self.selected_state.selected_count(), tf.int64)
        else:
            count = tf.add_n([tf.reduce_sum(tf.cast(tf.convert_to_tensor(m), tf.int64)) for m in self.masks])
        tf.debugging.assert_positive(
            count,
            message="SelectiveOptimizer: the given masks select no entry that trains (all pruned, or an "
            "optimizer rebuilt from its config whose weights were not loaded yet)",
        )

    @staticmethod
    def _full_update(grads, variables, inner_apply):
        inner_apply(grads, variables)  # its return value (if any) is dropped: every branch returns None

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

    def _select(self):
        count = tf.convert_to_tensor(self.window_count)
        seeds = criteria.seeds(self.config.seed, len(self.variables), call=self.selections)
        scores = []
        for i, (v, seed) in enumerate(zip(self.variables, seeds)):
            state = {slot: tf.convert_to_tensor(var) for slot, var in self.criterion_state[i].items()}
            score = self.criterion.score(state, tf.convert_to_tensor(v), count, seed)
            scores.append(tf.ensure_shape(tf.cast(score, tf.float32), v.shape))
        kept = [self._kept(i) for i in range(len(self.variables))]
        masks = masks_lib.masks_from_scores(
            scores, self.k, scope=self.config.scope, granularity=self.config.granularity, kept=kept
        )
        empties = self._empties_at_selection()
        self._empties_traced = self._empties_traced or empties
        for i, (mask_var, score_var, mask, score) in enumerate(zip(self.masks, self.scores, masks, scores)):
            mask_var.assign(mask)
            if not empties or self.keep_scores:
                score_var.assign(score)
            for slot in self.motion_slots[i] if self.motion_slots is not None else ():
                trains = _and_kept(mask, kept[i])
                slot.assign(tf.where(trains, tf.convert_to_tensor(slot), tf.zeros((), slot.dtype)))
        if self.updater is not None:
            trains = [_and_kept(m, k) for m, k in zip(masks, kept)]
            self.updater.select(trains, tf.equal(self.selections, 0))
        if empties:  # after the selected entries' state was gathered from it
            for var in self._warmup_state(self.keep_scores):
                _compat.empty_in_place(var)
        else:
            for var in self.criterion_state_variables():
                var.assign(tf.math.multiply_no_nan(tf.convert_to_tensor(var), tf.constant(0, var.dtype)))
        self.window_count.assign(0.0)
        self.selections.assign_add(1)

    def _restricted_update(self, grads, variables, indices, inner_apply):
        if self.updater is not None:
            every = [None] * len(self.variables)
            for g, i in zip(grads, indices):
                every[i] = g
            self.updater.apply(every, [self._kept(i) for i in range(len(self.variables))])
            return
        masks = [self.trains(i) for i in indices]
        dense = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices (Embedding) -> dense
        masked = [tf.where(m, g, tf.constant(0, g.dtype)) for m, g in zip(masks, dense)]
        if self._skips_restore():  # frozen entries: zero gradient, zero momentum -> exactly in place
            inner_apply(masked, variables)
            return
        before = [tf.identity(v) for v in variables]
        inner_apply(masked, variables)
        for v, i, m, old in zip(variables, indices, masks, before):
            v.assign(tf.where(m, tf.convert_to_tensor(v), old))
            average = None if self.averages is None else self.averages[i]
            if average is not None:  # a frozen entry's average is its value (``set_averages``)
                average.assign(tf.where(m, tf.convert_to_tensor(average), old))

    def keep_frozen(self, finalize):
        """Run ``finalize()`` (the inner ``finalize_variable_values``) and put frozen entries back (eager)."""
        if self.variables is None:
            return finalize()
        before = [tf.identity(v) for v in self.variables]
        if not self.released:
            finalize()
        for i, (v, old) in enumerate(zip(self.variables, before)):
            v.assign(tf.where(self.trains(i), tf.convert_to_tensor(v), old))
        if self.updater is not None and int(tf.convert_to_tensor(self.selections)) > 0:
            self.updater.finalize()  # the selected entries' averages live in the k-sized state
