"""Keras 3 adapter of ``tf_selopt.core.selected_only``: a Keras inner optimizer on the k selected entries.

``KerasSelectedOnly(inner, var_list, k)`` builds ``SelectedOnly`` on the model
variables and, per dtype group, a clone of ``inner`` (same class and configuration)
on the group's (k,) value buffer. ``select(masks)`` carries the inner state of
the selected entries over (the first time from ``inner``'s N-sized slots, then
from the previous k-sized ones); ``apply(grads)`` runs one restricted step.

One source of truth: the clones hold only the k-sized slots. Each step reads
``inner``'s current learning rate (a float, a ``LearningRateSchedule`` evaluated
at ``inner.iterations``, or a callable, whether set before or after ``build``),
its ``iterations``, ``loss_scale_factor`` and ``weight_decay`` (with
``exclude_from_weight_decay``); nothing is copied into the clones
(``tf_selopt.keras._compat.follower``), and the step advances ``inner.iterations``.
The clones' own ``iterations`` and ``learning_rate`` variables still exist, as a
plain clone's do, so that checkpoints keep their layout; nothing reads them.
Under a ``tf.function`` a learning rate set after tracing reaches the step once it
is traced again, as with a plain Keras optimizer.

Only the elementwise optimizers with a profile (``tf_selopt.keras.profiles``: its
slots, scalars and initial values) qualify (``profiles.why_not``): there the
selected entries' values equal the masked path's (``tf_selopt.core.selective``)
bit for bit (``tests/test_selected_only.py``).

Exactness (tested against ``tf_selopt.SelectiveOptimizer`` with the same inner
optimizer and masks, eager): bit-identical for SGD (plain, momentum, Nesterov),
Adam (amsgrad, a learning-rate schedule, clipvalue, weight_decay, EMA with
overwrite), AdamW (incl. ``exclude_from_weight_decay``: the decay is applied per
entry here), Adamax, Nadam (its ``u_product`` continues), Lion, RMSprop (plain,
momentum, centered), Adagrad, Adadelta. Not exact, hence refused: Ftrl (1 ulp:
``pow`` rounds by lane), clipnorm / global_clipnorm (a norm over k entries sums in
another order than over N with zeros). EMA: the selected entries' averages are
carried and updated exactly; ``finalize_variable_values`` of the masked path
also overwrites frozen entries with their N-sized average, which this state does
not hold. Reselection: entries that stay keep their slots, new ones start from
the slot's initial value: equal to the masked path where it zeroes the only slot
(SGD with momentum, Lion); the masked path's other slots of frozen entries keep
decaying (Adam's v, RMSprop's, Adagrad's accumulators), so there it differs.
Under ``jit_compile=True`` the step equals the masked path compiled the same way
(SGD momentum, Adam, AdamW, Lion tested; RMSprop centered 1 ulp off).

Keras internals used (slot attribute names in the profiles, ``Optimizer._get_variable_index``,
``Optimizer._use_weight_decay``, the clones that read ``inner``) come from
``tf_selopt.keras._compat``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_selopt.core.selected_only import SelectedOnly, SlotLink
from tf_selopt.keras import _compat, profiles

__all__ = ["KerasSelectedOnly", "apply_in_each_replica"]


def apply_in_each_replica(optimizer, grads, variables):
    """``optimizer.apply(grads, variables)`` exactly once in effect, from any context.

    Without a strategy, or in a replica context, it is that call. In the cross-replica context of a
    ``tf.distribute`` strategy (``SelectiveOptimizer``'s step decisions run there), a Keras optimizer must
    run in each replica, where it all-reduces (sums) the gradients itself: replica 0 contributes
    ``grads``, the others zeros, so the sum is exactly ``grads`` and every replica's copy of
    ``variables`` gets the same update. Needs a static replica id (MirroredStrategy,
    MultiWorkerMirroredStrategy, OneDeviceStrategy)."""
    if not (tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context()):
        optimizer.apply(grads, variables)
        return

    def replica_apply(grads):
        replica = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
        if replica is None:
            raise NotImplementedError(
                "SelectiveOptimizer supports strategies with a static replica id (MirroredStrategy, "
                "MultiWorkerMirroredStrategy, OneDeviceStrategy); this one has none."
            )
        # New tensors on this replica's device (the all-reduce places its result by the input's device).
        optimizer.apply([tf.identity(g) if replica == 0 else tf.zeros_like(g) for g in grads], variables)

    tf.distribute.get_strategy().extended.call_for_each_replica(replica_apply, args=(list(grads),))


class KerasSelectedOnly:
    """The restricted phase of ``inner`` on the k selected entries of ``var_list`` (see module docstring).

    ``inner`` must be built on ``var_list`` (its warm-up state is read at the first ``select``). Each
    ``apply`` reads its learning rate, step count, loss scale and weight decay as they are then, and
    advances its ``iterations`` by one; nothing else of ``inner`` changes.
    """

    def __init__(self, inner, var_list, k, core=None, constraint_allowed=lambda constraint: False):
        reason = profiles.why_not(inner, var_list, constraint_allowed, exact=False)
        if reason:
            raise ValueError(f"`inner` cannot train the selected entries only: {reason}.")
        self.inner = inner
        self.profile, _ = profiles.profile_of(inner)
        self.var_list = list(var_list)
        if core is None:  # standalone (benchmarks, tests): own variables
            core = SelectedOnly()
            core.build(
                self.var_list,
                k,
                lambda shape, dtype, init, name: keras.Variable(
                    tf.zeros(shape, dtype), dtype=dtype.name, trainable=False, name=name
                ),
            )
        self.core = core
        self.clones = []
        for buffer in self.core.buffers:
            clone = _compat.follower(inner)
            clone.weight_decay = None  # ``apply`` decays per entry with the inner's settings (honours exclusions)
            clone.build([buffer])
            self.clones.append(clone)
        self._selected = False

    # ------------------------------------------------------------------ state
    def _links(self):
        links = []
        for group, clone in zip(self.core.groups, self.clones):
            group_links = []
            for name in profiles.per_variable_state(self.inner):
                small = _compat.state(clone, name)
                if not small:
                    continue
                slots = _compat.state(self.inner, name)  # empty once released (``release_full_state``)
                full = [slots[_compat.variable_index(self.inner, v)] for v in group.variables] if slots else None
                initial = None if name == _compat.EMA_ATTRIBUTE else self.profile.initial_value(self.inner, name)
                group_links.append(SlotLink(small[0], full, initial))
            links.append(group_links)
        return links

    @property
    def slot_variables(self):
        """Every variable the clones hold (iterations, learning rate, k-sized slots, ...)."""
        return [v for clone in self.clones for v in clone.variables]

    def select(self, masks, first=None):
        """Train the entries where ``masks`` are True from now on. ``first`` (bool or bool tensor; default: the
        first call in Python): the first selection takes ``inner``'s state (counters and N-sized slots)."""
        if first is None:
            first = not self._selected
        first = tf.convert_to_tensor(first, tf.bool)
        for clone in self.clones:
            for name in self.profile.scalars:
                small, full = _compat.state(clone, name), _compat.state(self.inner, name)
                small.assign(tf.where(first, tf.convert_to_tensor(full), tf.convert_to_tensor(small)))
        self.core.select(masks, self._links(), first)
        self._selected = True

    def apply(self, grads, kept=None):
        """One restricted step with ``grads`` (one per variable of ``var_list``; dense, IndexedSlices or None;
        None: no gradient, the variable is skipped as Keras skips it: its selected entries keep their value
        and their slots) and ``kept`` (None, or a pruning mask or None per variable: pruned entries keep
        their value)."""
        flags = [_compat.decays(self.inner, v) for v in self.var_list]
        # the slots a skipped variable keeps (not the EMA: Keras averages every variable, stepped or not)
        slots = [[link.small for link in group_links if link.initial is not None] for group_links in self._links()]
        step = self.core.gather_step(grads, kept, slots)
        # The clones read the inner's learning rate, step count and loss scale (``_compat.follower``); every
        # group steps at the same count, which advances once all have.
        for group, clone, g, buffer in zip(self.core.groups, self.clones, step.grads, self.core.buffers):
            if self.inner.weight_decay:
                self._decay(group, buffer, [flags[i] for i in group.members])
            apply_in_each_replica(clone, [g], [buffer])
        self.inner.iterations.assign_add(1)
        self.core.scatter_step(step)

    def finalize(self):
        """With ``use_ema``: write the selected entries' moving averages into the model variables (what the
        inner ``finalize_variable_values`` does for all entries on the masked path)."""
        if self.inner.use_ema:
            self.core.scatter_into_variables([_compat.state(clone, _compat.EMA_ATTRIBUTE)[0] for clone in self.clones])

    def _decay(self, group, buffer, flags):
        """Keras' decoupled decay ``v -= v * wd * lr`` on the entries whose variable it applies to, with the
        inner's current ``weight_decay`` and learning rate.

        Written as Keras writes it, with scalar ``wd`` and ``lr``: in a ``tf.function`` Grappler's
        arithmetic optimizer reorders the chain to ``v * (wd * lr)`` (fewer broadcasts) for both paths alike."""
        dtype = buffer.dtype
        on = tf.gather(tf.constant(flags + [False]), group.owners())  # static shape (XLA)
        lr = tf.cast(self.inner.learning_rate, dtype)
        wd = tf.cast(self.inner.weight_decay, dtype)
        buffer.assign(tf.where(on, buffer - buffer * wd * lr, buffer))

    def state_bytes(self) -> int:
        """Bytes held by the selected-only state: values, positions, offsets and the clones' variables."""
        return self.core.state_bytes(self.slot_variables)

    def bytes_per_parameter(self) -> float:
        return self.state_bytes() / self.core.num_parameters
