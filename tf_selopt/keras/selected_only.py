"""Keras 3 adapter of ``tf_selopt.core.selected_only``: a Keras inner optimizer on the k selected entries.

``KerasSelectedOnly(inner, var_list, k)`` builds ``SelectedOnly`` on the model
variables and, per dtype group, a clone of ``inner`` (``from_config(get_config())``)
on the group's (k,) value buffer. ``select(masks)`` carries the inner state of
the selected entries over (the first time from ``inner``'s N-sized slots, then
from the previous k-sized ones) and continues ``iterations``; ``apply(grads)``
runs one restricted step. Only the elementwise optimizers of ``SLOT_ATTRIBUTES``
qualify (``supports_selected_only``): there the selected entries' values equal
the masked path's (``tf_selopt.core.selective``) bit for bit (``tests/test_selected_only.py``).

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

Keras internals used (slot attribute names, ``Optimizer._get_variable_index``,
``Optimizer._use_weight_decay``) come from ``tf_selopt.keras._compat``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_selopt.core.selected_only import SelectedOnly, SlotLink
from tf_selopt.keras import _compat
from tf_selopt.keras._compat import SCALAR_ATTRIBUTES, SLOT_ATTRIBUTES

__all__ = ["KerasSelectedOnly", "SLOT_ATTRIBUTES", "supports_selected_only"]

#: Elementwise but not bit-exact on a buffer: the reason (``supports_selected_only``).
NOT_EXACT = {
    keras.optimizers.Ftrl: "Ftrl's pow(accumulator, -lr_power) rounds differently in vectorized and scalar "
    "lanes, so an entry's update depends on its position in the tensor (1-ulp differences)",
}


def supports_selected_only(inner, variables=()) -> tuple[bool, str]:
    """Whether ``inner`` (and the model ``variables``) can train on the selected entries only, exactly.

    Returns ``(True, "")`` or ``(False, reason)``. Exact classes of ``SLOT_ATTRIBUTES`` only (a subclass
    may change the update); no ``clipnorm`` / ``global_clipnorm`` (a norm over the k entries sums in
    another order than over N with zeros: equal to rounding only), no gradient accumulation, no
    variable constraint and no ``overwrite_with_gradient`` variable (both act on whole tensors).
    """
    if type(inner) in NOT_EXACT:
        return False, NOT_EXACT[type(inner)]
    if type(inner) not in SLOT_ATTRIBUTES:
        return False, (
            f"{type(inner).__name__} is not one of the elementwise optimizers "
            f"{sorted(c.__name__ for c in SLOT_ATTRIBUTES)} (exact class)"
        )
    if inner.clipnorm or inner.global_clipnorm:
        return False, "clipnorm/global_clipnorm: the norm over k entries is not bit-identical to the one over N"
    if inner.gradient_accumulation_steps:
        return False, "gradient_accumulation_steps is set"
    for v in variables:
        if getattr(v, "constraint", None) is not None:
            return False, f"variable {v.path if hasattr(v, 'path') else v.name} has a constraint"
        if getattr(v, "overwrite_with_gradient", False):
            return False, f"variable {v.path if hasattr(v, 'path') else v.name} is overwritten with its gradient"
    return True, ""


class KerasSelectedOnly:
    """The restricted phase of ``inner`` on the k selected entries of ``var_list`` (see module docstring).

    ``inner`` must be built on ``var_list`` (its warm-up state is read at the first ``select``); it is
    not changed except for ``iterations``, which follows the clones'.
    """

    def __init__(self, inner, var_list, k):
        supported, reason = supports_selected_only(inner, var_list)
        if not supported:
            raise ValueError(f"`inner` cannot train the selected entries only: {reason}.")
        self.inner = inner
        self.var_list = list(var_list)
        self.core = SelectedOnly()
        self.core.build(
            self.var_list,
            k,
            lambda shape, dtype, init, name: keras.Variable(
                tf.zeros(shape, dtype), dtype=dtype.name, trainable=False, name=name
            ),
        )
        self.weight_decay = inner.weight_decay
        self.clones = []
        for buffer in self.core.buffers:
            clone = type(inner).from_config(inner.get_config())
            clone.weight_decay = None  # applied per entry in ``apply`` (honours exclusions)
            clone.build([buffer])
            self.clones.append(clone)
        # the value a newly selected entry's slot starts from (0, or e.g. Adagrad's initial accumulator)
        self._initial = {
            name: float(_compat.state(self.clones[0], name)[0].numpy()[0])
            for name in SLOT_ATTRIBUTES[type(inner)]
            if _compat.state(self.clones[0], name)
        }
        self._selected = False

    # ------------------------------------------------------------------ state
    def _links(self, from_full):
        links = []
        for group, clone in zip(self.core.groups, self.clones):
            names = list(SLOT_ATTRIBUTES[type(self.inner)]) + ([_compat.EMA_ATTRIBUTE] if self.inner.use_ema else [])
            group_links = []
            for name in names:
                small = _compat.state(clone, name)
                if not small:
                    continue
                full = None
                if from_full:
                    slots = _compat.state(self.inner, name)
                    full = [slots[_compat.variable_index(self.inner, v)] for v in group.variables]
                initial = None if name == _compat.EMA_ATTRIBUTE else self._initial[name]
                group_links.append(SlotLink(small[0], full, initial))
            links.append(group_links)
        return links

    @property
    def slot_variables(self):
        """Every variable the clones hold (iterations, learning rate, k-sized slots, ...)."""
        return [v for clone in self.clones for v in clone.variables]

    def select(self, masks):
        """Train the entries where ``masks`` are True from now on (the first call takes ``inner``'s state)."""
        from_full = not self._selected
        if from_full:
            for clone in self.clones:
                clone.iterations.assign(self.inner.iterations)
                for name in SCALAR_ATTRIBUTES.get(type(self.inner), ()):
                    _compat.state(clone, name).assign(_compat.state(self.inner, name))
        self.core.select(masks, self._links(from_full))
        self._selected = True

    def apply(self, grads):
        """One restricted step with ``grads`` (one per variable of ``var_list``; dense, IndexedSlices or None)."""
        flags = [_compat.decays(self.inner, v) for v in self.var_list]

        def inner_apply(small_grads, buffers):
            for group, clone, g, buffer in zip(self.core.groups, self.clones, small_grads, buffers):
                if isinstance(self.inner.learning_rate, keras.Variable):
                    clone.learning_rate.assign(self.inner.learning_rate)
                if self.weight_decay:
                    self._decay(group, clone, buffer, [flags[i] for i in group.members])
                clone.apply([g], [buffer])
            self.inner.iterations.assign(self.clones[0].iterations)

        self.core.apply(grads, inner_apply)

    def _decay(self, group, clone, buffer, flags):
        """Keras' decoupled decay ``v -= v * wd * lr`` on the entries whose variable it applies to."""
        dtype = buffer.dtype
        offsets = tf.convert_to_tensor(group.offsets)
        counts = tf.concat([offsets[1:] - offsets[:-1], [group.k - offsets[-1]]], 0)
        on = tf.repeat(tf.constant(flags + [False]), counts)
        lr = tf.cast(clone.learning_rate, dtype)
        wd = tf.where(on, tf.cast(self.weight_decay, dtype), tf.zeros((), dtype))
        buffer.assign(tf.where(on, buffer - buffer * wd * lr, buffer))

    def state_bytes(self) -> int:
        """Bytes held by the selected-only state: values, positions, offsets and the clones' variables."""
        return self.core.state_bytes(self.slot_variables)

    def bytes_per_parameter(self) -> float:
        return self.state_bytes() / self.core.num_parameters
