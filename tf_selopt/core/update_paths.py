"""Restricted-update paths: how a restricted step moves the selected entries and keeps the others in place.

One class per path, chosen once when the optimizer is built; ``Selective`` (the schedule, the criterion, the
selection) hands each restricted step and each selection to its path and knows nothing else of it:

* ``MaskedRestore``: the inner optimizer on all N entries with the frozen entries' gradient zeroed, then the
  frozen entries' values (and moving averages) put back. Exact for any inner optimizer (momentum, Adam's
  moments, decoupled weight decay, EMA, constraints).
* ``MaskedZeroedMotion``: the same masked gradient, for inner optimizers whose profile says an entry with a
  zero gradient and zero momentum stays exactly in place (``tf_selopt.core.profiles``): the momentum slots of
  every entry that stops training are zeroed at each selection, and no restore follows the update.
* ``SelectedOnlyPath``: the inner optimizer on k-sized buffers of the selected entries
  (``tf_selopt.core.selected_only.SelectedOnly``, run by a front end's ``updater``); frozen entries are
  never read or written. It releases the warm-up's N-sized state at the selection.

The protocol (``UpdatePath``): ``build`` (create the path's own variables, in the checkpoint layout),
``on_select`` (in-graph, at each selection), ``apply`` (one restricted step), ``release`` and
``releases_at_selection`` (drop what the restricted phase no longer reads), ``finalize`` (end of ``fit``).
A new path is a new subclass here.

Example (the masked path with restore, on two variables):

>>> import tensorflow as tf
>>> from tf_selopt.core.update_paths import MaskedRestore
>>> w = tf.Variable([1.0, 2.0])
>>> path = MaskedRestore()
>>> path.bind([w], lambda i: tf.constant([True, False]), lambda i: None)
>>> path.apply([tf.constant([1.0, 1.0])], [w], [0], lambda g, v: v[0].assign_sub(g[0] + 0.5))
>>> w.numpy().tolist()  # the frozen entry is put back; the selected one moved by its gradient and 0.5
[-0.5, 2.0]

This module imports TensorFlow only, never a Keras front end.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tf_selopt.core import _compat
from tf_selopt.core.selected_only import SelectedOnly

__all__ = ["UpdatePath", "MaskedRestore", "MaskedZeroedMotion", "SelectedOnlyPath", "masked"]


class UpdatePath:
    """The protocol every restricted-update path follows (the masked path with restore is the plain one).

    ``bind(variables, trains, kept)`` (by ``Selective.build``): ``trains(i)`` is the bool tensor of the
    entries of variable ``i`` that train (selected and not pruned), ``kept(i)`` its pruning mask (True =
    kept) or None, both read when a step is traced."""

    name = "masked"
    #: whether the path holds the selection itself (no N-sized bool masks needed with given masks)
    holds_selection = False
    released = False
    restores_frozen = True

    def bind(self, variables, trains: Callable, kept: Callable):
        self.variables = list(variables)
        self.trains = trains
        self.kept = kept

    def build(self, var_list, k, add_variable):
        """Create the path's own variables (``add_variable(shape, dtype, initializer, name)``); none here."""

    def on_select(self, trains, first):
        """In-graph, at a selection: ``trains`` (bool tensor per variable), ``first`` (bool tensor)."""

    def apply(self, grads, variables, indices, inner_apply):
        """One restricted step (``Selective.apply``'s arguments; ``inner_apply(grads, variables)``)."""
        raise NotImplementedError

    def releases_at_selection(self) -> bool:
        """Whether the selection traced now empties the warm-up's N-sized state (read at trace time)."""
        return False

    def emptied_in_graph(self, scores, window_state):
        """Whether the scores were kept where a selection emptied the warm-up state; None: nothing emptied."""
        return None

    def check_release(self, plan):
        """Raise a ValueError if the warm-up state cannot be released on this path."""
        raise ValueError("Only the selected-only path (`update_path` 'selected_only') can release the warm-up state.")

    def finalize(self, finalize_inner, selected):
        """Run ``finalize_inner()`` (the inner ``finalize_variable_values``: with ``use_ema`` the model takes
        the moving averages) unless the warm-up state is released, and put the frozen entries back (eager).
        ``selected``: whether a selection was made."""
        before = [tf.identity(v) for v in self.variables]
        if not self.released:
            finalize_inner()
        for i, (v, old) in enumerate(zip(self.variables, before)):
            v.assign(tf.where(self.trains(i), tf.convert_to_tensor(v), old))

    def selected_count(self):
        """Entries held by the path (int tensor), or None where the masks say it."""
        return None

    # XLA layouts: only the selected-only path has one
    def freeze_layout(self, selections):
        return None

    def thaw_layout(self):
        pass

    def held_layout(self):
        return None

    @property
    def frozen_layout(self):
        return None


class MaskedRestore(UpdatePath):
    """The inner optimizer on all N entries with a masked gradient; frozen values restored after it.

    ``averages``: the inner optimizer's moving averages (``use_ema``), one per variable in build order, or
    None. A frozen entry's average is kept equal to its value (set at each restore): the inner optimizer's
    EMA reads it after weight decay moved it, and ``finalize_variable_values`` (end of ``fit``) writes the
    averages into the model, so frozen entries stay bit-identical through both."""

    def __init__(self, averages=None):
        self.averages = None if averages is None else list(averages)

    def _masked(self, grads, indices):
        masks = [self.trains(i) for i in indices]
        dense = [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices (Embedding) -> dense
        return masks, [tf.where(m, g, tf.constant(0, g.dtype)) for m, g in zip(masks, dense)]

    def apply(self, grads, variables, indices, inner_apply):
        masks, masked = self._masked(grads, indices)
        self._restore_after(masks, masked, variables, indices, inner_apply)

    def _restore_after(self, masks, masked, variables, indices, inner_apply):
        before = [tf.identity(v) for v in variables]
        inner_apply(masked, variables)
        for v, i, m, old in zip(variables, indices, masks, before):
            v.assign(tf.where(m, tf.convert_to_tensor(v), old))
            average = None if self.averages is None else self.averages[i]
            if average is not None:
                average.assign(tf.where(m, tf.convert_to_tensor(average), old))


class MaskedZeroedMotion(MaskedRestore):
    """The masked gradient without a restore: the momentum slots (``motion_slots``: per variable, the inner
    optimizer's slot variables that must be zero for an entry with a zero gradient to stay in place) of
    every entry that stops training are zeroed at each selection.

    ``holds()`` says whether the guarantee still holds (no weight decay, EMA, gradient accumulation, a
    variable overwritten with its gradient, or a constraint other than an allowed one); it is read whenever
    a step is traced, and where it no longer holds the step restores as ``MaskedRestore`` does."""

    def __init__(self, motion_slots, holds: Callable[[], bool], averages=None):
        super().__init__(averages)
        self.motion_slots = motion_slots
        self.holds = holds

    @property
    def restores_frozen(self):
        return not self.holds()

    def on_select(self, trains, first):
        for slots, mask in zip(self.motion_slots, trains):
            for slot in slots:
                slot.assign(tf.where(mask, tf.convert_to_tensor(slot), tf.zeros((), slot.dtype)))

    def apply(self, grads, variables, indices, inner_apply):
        masks, masked = self._masked(grads, indices)
        if self.holds():  # frozen entries: zero gradient, zero momentum -> exactly in place
            inner_apply(masked, variables)
            return
        self._restore_after(masks, masked, variables, indices, inner_apply)


def masked(inner, variables, lookup, constraint_allowed=lambda constraint: False, averages=None) -> MaskedRestore:
    """The masked path for ``inner`` (built on ``variables``): ``MaskedZeroedMotion`` where its profile allows
    it, else ``MaskedRestore``.

    ``lookup(inner)``: the names of ``inner``'s per-variable slot lists that must be zero for an entry with a
    zero gradient to stay exactly in place (e.g. Adam's first moments; ``()``: none needed), or None where no
    such guarantee is known (``tf_selopt.core.profiles.motion_lookup``, which finds a subclass's profile
    along its MRO unless it overrides the update). ``constraint_allowed(constraint)``: whether a variable
    constraint keeps the guarantee (a bare pruning mask does). ``averages``: see ``MaskedRestore``."""
    names = lookup(inner)
    if names is None:
        return MaskedRestore(averages)
    variables = list(variables)
    lists = [slots for slots in (getattr(inner, name) for name in names) if slots]  # e.g. SGD without momentum
    if any(len(slots) != len(variables) or any(s is None for s in slots) for slots in lists):
        return MaskedRestore(averages)

    def holds():
        if getattr(inner, "weight_decay", None) or getattr(inner, "use_ema", False):
            return False
        if getattr(inner, "gradient_accumulation_steps", None):
            return False
        return all(
            not getattr(v, "overwrite_with_gradient", False)
            and (getattr(v, "constraint", None) is None or constraint_allowed(v.constraint))
            for v in variables
        )

    motion = [[slots[i] for slots in lists] for i in range(len(variables))]
    return MaskedZeroedMotion(motion, holds, averages)


def _first_emptiable(variables):
    """The first of ``variables`` that ``_compat.empty_in_place`` can empty (rank > 0, some entries), or None."""
    return next((v for v in variables if v.shape.rank and v.shape.num_elements()), None)


class SelectedOnlyPath(UpdatePath):
    """The restricted phase on the k selected entries only; see the module docstring.

    ``build`` creates the ``SelectedOnly`` buffers (``state``); the front end then gives the ``updater``
    that runs its inner optimizer on them (``use_updater``): an object with ``select(trains, first)`` (at
    each selection), ``apply(grads, kept)`` (``grads``: one per variable, None for a variable without one;
    ``kept``: pruning masks or None) and ``finalize()``."""

    name = "selected_only"
    holds_selection = True
    restores_frozen = False

    def __init__(self, reselect_every=None):
        self.reselect_every = reselect_every
        self.state = None
        self.updater = None
        self.inner_warmup_state = None
        self.released = False
        self._empties_traced = False

    def build(self, var_list, k, add_variable):
        self.k = k
        self.state = SelectedOnly()
        self.state.build(var_list, k, add_variable)

    def use_updater(self, updater, inner_warmup_state=None):
        """Run the restricted steps with ``updater``. ``inner_warmup_state``: the inner optimizer's slots and
        moving averages on the model variables, which the restricted phase no longer reads: emptied at the
        selection where the step can do it (``releases_at_selection``), or None (nothing to empty)."""
        self.updater = updater
        self.inner_warmup_state = None if inner_warmup_state is None else list(inner_warmup_state)

    def on_select(self, trains, first):
        self.updater.select(trains, first)

    def apply(self, grads, variables, indices, inner_apply):
        every = [None] * len(self.variables)
        for g, i in zip(grads, indices):
            every[i] = g
        self.updater.apply(every, [self.kept(i) for i in range(len(self.variables))])

    def finalize(self, finalize_inner, selected):
        super().finalize(finalize_inner, selected)
        if selected:
            self.updater.finalize()  # the selected entries' averages live in the k-sized state

    def selected_count(self):
        return self.state.selected_count()

    def mask(self, i):
        return self.state.mask(i)

    # --------------------------------------------------------------- release
    def releases_at_selection(self) -> bool:
        """Whether the selection traced now empties the warm-up state in-graph (``core._compat.empty_in_place``):
        its buffers are freed inside the running step, so a plain ``fit`` or ``tf.function`` loop holds k-sized
        state from the selection on, with no retrace. Only with no ``reselect_every`` (a reselection reads the
        window state), outside XLA (compiled resources keep their shape) and outside ``tf.distribute``."""
        return (
            self.inner_warmup_state is not None
            and self.reselect_every is None
            and not self.released
            and not _compat.in_xla_context()
            and not tf.distribute.has_strategy()
        )

    def empty(self, own):
        """In-graph, at the selection, after the selected entries' state was gathered: empty ``own`` (the
        caller's N-sized warm-up variables) and the inner optimizer's warm-up state."""
        self._empties_traced = True
        for var in list(own) + self.inner_warmup_state:
            _compat.empty_in_place(var)

    def emptied_in_graph(self, scores, window_state):
        """None if no selection emptied the warm-up state (or it is released already), else whether the
        ``scores`` were kept (eager). ``window_state``: the criterion's variables."""
        if self.released or not self._empties_traced:
            return None
        scores = _first_emptiable(scores or ())
        probe = _first_emptiable(list(window_state) + list(self.inner_warmup_state or ()))
        probe = scores if probe is None else probe
        if probe is None or not _compat.holds_no_entries(probe):
            return None
        return scores is not None and not _compat.holds_no_entries(scores)

    def check_release(self, plan):
        if plan.reselect_every is not None:
            raise ValueError("With `reselect_every` set, the warm-up state is needed for every reselection.")

    # ------------------------------------------------------------ XLA layout
    def freeze_layout(self, selections):
        """``SelectedOnly.freeze_layout`` once a selection was made (``selections``: int), else None."""
        if self.updater is None or selections == 0:
            return None
        return self.state.freeze_layout()

    def thaw_layout(self):
        self.state.thaw_layout()

    def held_layout(self):
        return None if self.updater is None else self.state.held_layout()

    @property
    def frozen_layout(self):
        return self.state.frozen_layout
