"""Selected-only state and update: the restricted phase on the k selected entries only.

After a selection (granularity "parameter": bool masks with at most ``k`` True in
total), the masked path (``tf_selopt.core.selective.Selective._restricted_update``)
still runs the inner optimizer on all N entries. ``SelectedOnly`` instead keeps,
for each dtype of the model variables (a *group*), one flat buffer of the
selected entries and runs the inner optimizer on that buffer only.

State per group (created once in ``build``; shapes static, so a traced step
never retraces at a reselection):

* ``values``: (k,) of the group's dtype, the selected entries' values (what the
  inner optimizer updates; refreshed from the model variables every step, so a
  write to a model variable between steps is seen);
* ``positions``: (k,) int32 (int64 if a variable of the group has >= 2**31
  entries), the flat (row-major) index of each entry in its own variable;
* ``offsets``: (m + 1,) int32 for the group's m variables: the entries of
  variable ``i`` are buffer slots ``offsets[i] .. offsets[i+1]-1``, sorted by
  variable (build order) then position. Slots from ``offsets[m]`` to ``k - 1``
  are padding (fewer than k selected, e.g. pruned entries): they get a zero
  gradient and are never written back.

A step: ``gather_step`` gathers the selected gradient entries into a (k,) tensor
(dense gradients by a flat gather; ``tf.IndexedSlices`` without densifying to N:
duplicate rows are summed with ``unsorted_segment_sum`` in order of occurrence,
as ``tf.convert_to_tensor`` sums them) and refreshes ``values`` from the model
variables; the caller runs the inner optimizer built on the buffers with that
gradient; ``scatter_step`` writes the updated values back. Frozen entries are
never written.

Selection (``select``): new positions/offsets from the masks; the inner
optimizer's per-entry slots (``SlotLink``) are carried over: from the N-sized
warm-up slots (``from_full``, the first selection) by a gather, or from the
previous k-sized slots (a reselection) by matching each new entry to its old
buffer slot (``searchsorted`` on the sorted global positions); newly selected
entries get the slot's initial value (zero, or e.g. Adagrad's
``initial_accumulator_value``).

Units: ``state_bytes`` counts bytes held by this state (values, positions,
offsets and the k-sized slots handed in); divide by N for bytes per model
parameter. With Adam: 16 B per selected entry (values 4, position 4, m 4, v 4),
0.16 B per model parameter at keep 1%, 1.6 at keep 10%.

Cost per step (outside XLA, or under XLA with a frozen layout, below): a gather
of k gradient entries and k values, the inner update on k entries, a scatter of
k entries in all. From a capacity of
``COMPILED_SCATTER_MIN_ENTRIES`` on, the scatter is compiled by XLA
(``_compiled_scatter``) even when the step is not: TensorFlow's CPU
``ResourceScatterNdUpdate`` writes entry by entry and bounded the step at keep
10%; XLA's copies the variable once (an N-sized transient per variable) and is
several times faster, at a one-time cost in resident memory. Under a
``tf.distribute`` strategy the scatter goes through ``extended.update`` uncompiled.
``apply`` and ``select`` compile with ``jit_compile=True`` (``select`` uses static shapes only).

Under XLA shapes are static, so a step that reads ``offsets`` in-graph cannot cut
the k slots into the variables' parts: it gathers k entries from each of the m
variables (keeping the slot owner's) and scatters all k slots into each (about
3 m k random accesses per step). ``freeze_layout`` (eager, once the selection is
made) fixes the held offsets as Python ints for the steps traced afterwards:
there variable ``i`` gathers and scatters exactly its ``offsets[i+1] -
offsets[i]`` entries (static slices, k in all), with the same values. A
selection thaws it. XLA ignores ``tf.debugging`` assertions, so such a step
instead compares the held offsets with its frozen ones (one (m+1,) compare) and,
if they differ, writes the entries' current values back: a stale trace writes no
wrong entry (``_Gather``). ``tf_selopt.keras.phases.TracePerPhase`` freezes the
layout for the restricted phase of a run without ``reselect_every`` under
``jit_compile`` and retraces if the held offsets change.

Pruning: ``apply(..., kept=...)`` takes each variable's pruning mask (True =
kept): a selected entry that is pruned gets a zero gradient and keeps its
value (0), as on the masked path.

This module imports TensorFlow only; the Keras 3 adapter is
``tf_selopt.keras.selected_only``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from tf_selopt.core import _compat

__all__ = ["SelectedOnly", "SlotLink", "index_dtype_for"]

#: ``add_variable(shape, dtype, initializer, name)`` -> variable; ``initializer`` is "zeros".
AddVariable = Callable[[tuple, tf.DType, str, str], tf.Variable]

_INT32_LIMIT = 2**31
#: From this capacity k on, the scatter back is compiled by XLA (``_compiled_scatter``): faster than TensorFlow's
#: CPU kernel, which writes entry by entry, but loading XLA's compiler costs the process about 50 MiB of
#: resident memory once (``selopt finetune``: peak RSS +50 MiB at k = 7,725), while below this k the kernel's
#: writes take well under a millisecond.
COMPILED_SCATTER_MIN_ENTRIES = 2**15


def index_dtype_for(num_entries) -> tf.DType:
    """int32 for flat indices of a variable with fewer than 2**31 entries, else int64."""
    return tf.int32 if int(num_entries) < _INT32_LIMIT else tf.int64


@dataclasses.dataclass
class SlotLink:
    """One per-entry slot of the inner optimizer for one group.

    ``small``: the (k,) slot variable of the optimizer built on the group's
    buffer; ``full``: the N-sized slots of the group's model variables (one per
    variable, in the group's order) to take the state from at the first
    selection, or None; ``initial``: the value a newly selected entry starts from
    (None: the entry's current value, as for an EMA).
    """

    small: object
    full: list | None
    initial: float | None = 0.0


def _num(v) -> int:
    return int(v.shape.num_elements())


class _Group:
    """The selected entries of the model variables of one dtype."""

    def __init__(self, dtype, members, variables, k, add_variable, index_dtype=None):
        self.dtype = dtype
        self.members = members  # indices into the model variable list
        self.variables = variables
        self.k = k
        self.index_dtype = index_dtype or index_dtype_for(max(_num(v) for v in variables))
        # global position of a variable's entry 0 within the group (for matching at reselection)
        sizes = [_num(v) for v in variables]
        self.bases = [sum(sizes[:i]) for i in range(len(sizes))]
        self.padding_key = sum(sizes)
        name = dtype.name
        self.values = add_variable((k,), dtype, "zeros", f"selected_values_{name}")
        self.positions = add_variable((k,), self.index_dtype, "zeros", f"selected_positions_{name}")
        self.offsets = add_variable((len(variables) + 1,), tf.int32, "zeros", f"selected_offsets_{name}")
        self.static_offsets = None  # the held offsets as Python ints once the layout is frozen (``freeze_layout``)

    # ------------------------------------------------------------ indices
    def new_indices(self, masks):
        """(positions (k,), offsets (m+1,)) from bool masks of the group's variables.

        Static shapes only (XLA compiles it): each True entry's rank among the
        group's True entries (a cumulative sum over the concatenated masks) is
        its buffer slot, filled by one scatter of the entries' group positions;
        Trues past the capacity ``k`` raise."""
        flat = tf.concat([tf.reshape(tf.convert_to_tensor(m), [-1]) for m in masks], 0)
        key_dtype = tf.int32 if self.padding_key < _INT32_LIMIT else tf.int64
        if not _compat.in_xla_context():  # k-sized temporaries: the True entries' positions, padded
            return self._new_indices_dynamic(flat, key_dtype)
        taken = tf.concat([tf.zeros([1], key_dtype), tf.cumsum(tf.cast(flat, key_dtype))], 0)  # (N+1,)
        rank = taken[1:] - 1
        check = tf.debugging.assert_less_equal(
            rank[-1], tf.constant(self.k - 1, key_dtype), message="more entries selected than the capacity k"
        )
        with tf.control_dependencies([check]):
            slot = tf.where(flat, rank, tf.constant(self.k, key_dtype))  # slot k: a dump, dropped below
        keys = tf.scatter_nd(slot[:, None], tf.range(self.padding_key, dtype=key_dtype), [self.k + 1])[: self.k]
        count = tf.cast(rank[-1] + 1, tf.int32)
        keys = tf.where(tf.range(self.k) < count, keys, tf.constant(self.padding_key, key_dtype))
        bounds = tf.constant(self.bases + [self.padding_key], key_dtype)
        offsets = tf.cast(tf.gather(taken, bounds), tf.int32)  # True entries before each variable's first
        owner = _owners(offsets, self.k)  # m for padding: bounds[m] is padding_key
        positions = tf.where(keys < self.padding_key, keys - tf.gather(bounds, owner), tf.zeros((), key_dtype))
        return tf.cast(positions, self.index_dtype), offsets

    def _new_indices_dynamic(self, flat, key_dtype):
        """``new_indices`` outside XLA: ``tf.where`` lists the True entries (no N-sized int temporaries,
        which the static version needs three of: 240 MB at N = 20M)."""
        found = tf.cast(tf.where(flat)[:, 0], key_dtype)  # sorted
        count = tf.shape(found)[0]
        check = tf.debugging.assert_less_equal(count, self.k, message="more entries selected than the capacity k")
        with tf.control_dependencies([check]):
            keys = tf.concat([found, tf.fill([self.k - count], tf.constant(self.padding_key, key_dtype))], 0)
        keys = tf.ensure_shape(keys, (self.k,))
        bounds = tf.constant(self.bases + [self.padding_key], key_dtype)
        offsets = tf.cast(tf.searchsorted(keys, bounds, side="left"), tf.int32)
        owner = _owners(offsets, self.k)
        positions = tf.where(keys < self.padding_key, keys - tf.gather(bounds, owner), tf.zeros((), key_dtype))
        return tf.cast(positions, self.index_dtype), offsets

    def owners(self, offsets=None):
        """(k,) int32: which of the group's variables each buffer slot holds (m, their number: padding)."""
        return _owners(tf.convert_to_tensor(self.offsets) if offsets is None else offsets, self.k)

    def keys(self, positions, offsets, owner=None):
        """Sorted int64 global positions of the buffer slots (padding: ``padding_key``); ``owner``: the slots'
        ``owners(offsets)`` when already computed."""
        owner = _owners(offsets, self.k) if owner is None else owner
        bases = tf.constant(self.bases + [self.padding_key], tf.int64)
        is_padding = tf.range(self.k, dtype=offsets.dtype) >= offsets[-1]
        keys = tf.gather(bases, owner) + tf.cast(positions, tf.int64)
        return tf.where(is_padding, tf.constant(self.padding_key, tf.int64), keys)

    def slices(self, tensor, offsets=None):
        """``tensor`` (k,) cut into the group's variables' parts (dynamic sizes)."""
        offsets = tf.convert_to_tensor(self.offsets) if offsets is None else offsets
        sizes = tf.concat([offsets[1:] - offsets[:-1], [self.k - offsets[-1]]], 0)  # the last part: padding
        return tf.split(tensor, sizes, num=len(self.variables) + 1)[:-1]

    # -------------------------------------------------------------- steps
    def gather(self, positions=None, offsets=None, owner=None) -> "_Gather":
        """The gather at ``positions``/``offsets`` (default: the held ones, under XLA cut by the frozen layout
        if there is one); see ``_Gather``."""
        static = None
        if positions is None and offsets is None and _compat.in_xla_context():
            static = self.static_offsets
        positions = tf.convert_to_tensor(self.positions) if positions is None else positions
        offsets = tf.convert_to_tensor(self.offsets) if offsets is None else offsets
        return _Gather(self, positions, offsets, owner, static)

    def gather_gradients(self, grads, gather=None):
        """(k,) gradient from ``grads`` (one per variable of the group; dense, IndexedSlices or None) at the held
        positions (or ``gather``'s)."""
        gather = self.gather() if gather is None else gather
        if gather.parts is None:  # static shapes (XLA): densify IndexedSlices, m gathers of k entries
            dense = [
                tf.zeros(v.shape, self.dtype) if g is None else tf.convert_to_tensor(g)
                for g, v in zip(grads, self.variables)
            ]
            return gather(dense)
        parts = []
        for g, v, p in zip(grads, self.variables, gather.parts):
            if g is None:
                parts.append(tf.zeros(tf.shape(p), self.dtype))
            elif isinstance(g, tf.IndexedSlices) and gather.static is None:
                parts.append(_gather_indexed_slices(g, v.shape, p))
            elif isinstance(g, tf.IndexedSlices):  # a frozen layout (XLA): densified, as the static path does
                parts.append(tf.gather(tf.reshape(tf.convert_to_tensor(g), [-1]), p))
            else:
                parts.append(tf.gather(tf.reshape(g, [-1]), p))
        return gather.pad(parts)

    def scatter(self, values, gather=None, unchanged=None):
        """Write ``values`` (k,) into the group's variables at the held positions (or ``gather``'s).

        With a frozen layout (XLA) each variable gets exactly its slots, and ``values`` are written only if the
        held offsets still equal the frozen ones; otherwise the slots' current entries (``unchanged``, the
        gather of the variables at ``gather``; gathered here if None) are written back, so the step writes
        nothing (``_Gather``)."""
        gather = self.gather() if gather is None else gather
        if gather.parts is None:
            return self._scatter_static(values, gather.offsets)
        if gather.static is not None:
            unchanged = gather(self.variables) if unchanged is None else unchanged
            values = tf.where(gather.matches, values, unchanged)
            for v, p, x in zip(self.variables, gather.parts, gather.split(values)):
                if p.shape[0]:
                    _scatter_nd_update(v, _unravel(p, v.shape), x)
            return
        for v, p, x in zip(self.variables, gather.parts, self.slices(values, gather.offsets)):
            if self.k >= COMPILED_SCATTER_MIN_ENTRIES and not tf.distribute.has_strategy():
                _compiled_scatter(_tf_variable(v), p, x)
            else:
                _scatter_nd_update(v, _unravel(p, v.shape), x)

    def _scatter_static(self, values, offsets):
        """``scatter`` with static shapes (XLA): each variable gets all k slots; a slot of another variable
        repeats the variable's first selected entry (or, with none, rewrites its entry 0 unchanged), so
        duplicate indices always carry equal values."""
        positions = tf.convert_to_tensor(self.positions)
        owner = _owners(offsets, self.k)
        for i, v in enumerate(self.variables):
            first = tf.minimum(offsets[i], self.k - 1)
            has = offsets[i + 1] > offsets[i]
            flat = tf.reshape(tf.convert_to_tensor(v), [-1])
            anchor_position = tf.where(has, positions[first], tf.zeros((), positions.dtype))
            anchor_value = tf.where(has, values[first], flat[0])
            mine = owner == i
            index = tf.where(mine, positions, anchor_position)
            _scatter_nd_update(v, _unravel(index, v.shape), tf.where(mine, values, anchor_value))


class _Gather:
    """Entries of N-sized tensors (one per variable of a group, in its order) at the buffer slots' positions, as a
    (k,) tensor, padding 0. The index work is done once for every gather at the same positions, in one of
    three ways:

    * outside XLA, one split of the positions into the variables' parts (``parts``; then m gathers of their
      sizes, k entries in all);
    * under XLA with the group's layout frozen (``static``: the held offsets as Python ints, read when the
      step was traced), static slices of the positions (``parts``; then m gathers of their sizes, k in all).
      ``matches`` (bool scalar) says whether the held offsets still equal ``static``; XLA ignores
      ``tf.debugging`` assertions, so instead each part is capped to its variable's size (every index stays
      in range) and ``_Group.scatter`` writes back the entries' current values when they differ: a stale
      trace writes no wrong entry;
    * under XLA otherwise (static shapes only), the slots' owners (``parts`` None; then m gathers of k
      entries, each kept where the slot is the variable's).

    >>> import tensorflow as tf
    >>> from tf_selopt.core.selected_only import SelectedOnly
    >>> a, b = tf.Variable([1.0, 2.0, 3.0]), tf.Variable([[4.0, 5.0]])
    >>> state = SelectedOnly()
    >>> state.build([a, b], 3, lambda shape, dtype, init, name: tf.Variable(tf.zeros(shape, dtype), name=name))
    >>> state.select([tf.constant([False, True, True]), tf.constant([[True, False]])])
    >>> state.groups[0].gather()([a, b]).numpy().tolist()
    [2.0, 3.0, 4.0]
    """

    def __init__(self, group, positions, offsets, owner=None, static=None):
        self.k = group.k
        self.offsets = offsets
        self.static = static
        self.matches = None
        if static is not None:
            self.matches = tf.reduce_all(tf.equal(offsets, tf.constant(static, tf.int32)))
            self.parts = [
                tf.minimum(positions[a:b], tf.constant(max(_num(v) - 1, 0), positions.dtype))
                for v, a, b in zip(group.variables, static[:-1], static[1:])
            ]
        elif _compat.in_xla_context():
            owner = _owners(offsets, group.k) if owner is None else owner
            self.parts = None
            self._mine = [owner == i for i in range(len(group.variables))]
            self._at = [tf.clip_by_value(positions, 0, max(_num(v) - 1, 0)) for v in group.variables]
        else:
            self.parts = group.slices(positions, offsets)

    def __call__(self, tensors):
        flat = [tf.reshape(tf.convert_to_tensor(t), [-1]) for t in tensors]
        if self.parts is not None:
            return self.pad([tf.gather(t, p) for t, p in zip(flat, self.parts)])
        result = None
        for t, mine, at in zip(flat, self._mine, self._at):
            part = tf.gather(t, at)
            result = tf.where(mine, part, tf.zeros((), part.dtype) if result is None else result)
        return result

    def pad(self, parts):
        """The variables' parts (``parts`` not None) as one (k,) tensor, padding 0."""
        used = self.offsets[-1] if self.static is None else self.static[-1]
        flat = tf.concat(parts + [tf.zeros([self.k - used], parts[0].dtype)], 0)
        return tf.ensure_shape(flat, (self.k,))

    def split(self, values):
        """``values`` (k,) cut into the variables' parts by the frozen layout (static sizes)."""
        return [values[a:b] for a, b in zip(self.static[:-1], self.static[1:])]


def _owners(offsets, k):
    """(k,) int32: the variable each buffer slot belongs to (m, the number of variables, for padding), i.e.
    ``tf.searchsorted(offsets[1:], tf.range(k), side="right")`` in O(k + m) (XLA's compares every pair)."""
    ends = tf.minimum(tf.cast(offsets[1:], tf.int32), k)
    return tf.cumsum(tf.scatter_nd(ends[:, None], tf.ones_like(ends), [k + 1]))[:k]


def _count_below(a, b):
    """For each entry of sorted ``b``: how many entries of sorted ``a`` are strictly smaller
    (``tf.searchsorted(a, b)``), by one stable sort of both: O((|a| + |b|) log) with static shapes, where
    XLA's ``searchsorted`` compares every pair (|a| * |b| memory: 1.3 TB at k = 582,452)."""
    n_b = int(b.shape[0])
    n = n_b + int(a.shape[0])
    order = tf.argsort(tf.concat([b, a], 0), stable=True)  # ties: b's entries first (they come first)
    position = tf.scatter_nd(order[:, None], tf.range(n), [n])  # where each entry landed
    return tf.cast(position[:n_b] - tf.range(n_b), tf.int32)


def _unravel(positions, shape):
    """(n, rank) indices of flat row-major ``positions`` in ``shape`` (``tf.unravel_index`` refuses n = 0)."""
    coords, rest = [], positions
    for size in reversed(shape.as_list()[1:]):
        coords.append(rest % size)
        rest = rest // size
    return tf.stack([rest] + coords[::-1], axis=1)


def _tf_variable(v):
    """The ``tf.Variable`` behind a Keras 3 variable (``.value``), or ``v`` itself."""
    return v if isinstance(v, tf.Variable) else v.value


@tf.function(jit_compile=True, autograph=False)
def _compiled_scatter(variable, positions, updates):
    """``variable``'s entries at flat ``positions`` set to ``updates``, compiled by XLA even inside a step that
    is not: TensorFlow's CPU ``ResourceScatterNdUpdate`` writes entry by entry (keep 10% of the 5.8M MLP: about
    4x the time of this, which copies the variable once; ``benchmarks/selected_only.py``). XLA compiles once
    per shape of ``positions`` (once per run without ``reselect_every``)."""
    flat = tf.tensor_scatter_nd_update(tf.reshape(variable, [-1]), positions[:, None], updates)
    variable.assign(tf.reshape(flat, variable.shape))


def _scatter_nd_update(variable, indices, updates):
    """``variable.scatter_nd_update(indices, updates)``; for a variable of a ``tf.distribute`` strategy (from
    cross-replica context: the same write to every replica's copy) through ``extended.update``."""
    variable = _tf_variable(variable)
    if tf.distribute.has_strategy():
        extended = tf.distribute.get_strategy().extended
        if extended.variable_created_in_scope(variable):
            extended.update(variable, lambda v, i, u: v.scatter_nd_update(i, u), args=(indices, updates), group=False)
            return
    variable.scatter_nd_update(indices, updates)


def _gather_indexed_slices(g, shape, positions):
    """Entries at flat ``positions`` of the dense equivalent of ``g`` (rows of a variable of ``shape``),
    without building it: duplicate rows are summed in order of occurrence, as ``tf.convert_to_tensor``
    (``unsorted_segment_sum``) sums them."""
    row_size = int(shape[1:].num_elements()) if shape.rank > 1 else 1
    rows, which = tf.unique(tf.cast(g.indices, tf.int64))
    summed = tf.math.unsorted_segment_sum(tf.reshape(g.values, [-1, row_size]), which, tf.shape(rows)[0])
    summed = tf.concat([tf.reshape(summed, [-1]), tf.zeros([1], summed.dtype)], 0)  # a 0 for "not found"
    order = tf.argsort(rows)
    sorted_rows = tf.concat([tf.gather(rows, order), [tf.int64.max]], 0)  # sentinel: never a row
    positions = tf.cast(positions, tf.int64)
    want_row = positions // row_size
    at = tf.searchsorted(sorted_rows, want_row)
    found = tf.gather(sorted_rows, at) == want_row
    order = tf.cast(tf.concat([order, [0]], 0), tf.int64)
    flat = tf.gather(order, at) * row_size + positions % row_size
    return tf.gather(summed, tf.where(found, flat, tf.size(summed, tf.int64) - 1))


class _Step:
    """What a restricted step carries from ``SelectedOnly.gather_step`` to ``scatter_step``, per group: the held
    positions' gather, the (k,) gradient, the entries that take the update (``live``; None: all), the values
    before it (``refreshed``) and, for variables without a gradient, the slots to put back (``held``)."""

    def __init__(self, groups):
        self.gathers = [group.gather() for group in groups]  # the held positions, split once per group
        self.grads = None
        self.live = [None] * len(groups)
        self.refreshed = [None] * len(groups)
        self.held = [None] * len(groups)


class SelectedOnly:
    """k-sized values, indices and (through ``SlotLink``) inner state; see the module docstring.

    Usage: ``build(var_list, k, add_variable)``; build the inner optimizer on
    ``buffers`` and hand its slots in with ``links``; ``select(masks, links)``
    at each selection; each restricted step ``gather_step(grads)``, the inner
    optimizer on ``buffers`` with the step's ``grads``, ``scatter_step(step)``.
    """

    def __init__(self):
        self.groups = []
        self.variables = None

    def build(self, var_list, k, add_variable: AddVariable, index_dtype=None):
        """One group per dtype, in order of first appearance; each holds capacity ``k``."""
        self.variables = list(var_list)
        self.k = int(k)
        self.num_parameters = sum(_num(v) for v in self.variables)
        by_dtype = {}
        for i, v in enumerate(self.variables):
            by_dtype.setdefault(tf.as_dtype(v.dtype), []).append(i)
        self.groups = [
            _Group(dtype, members, [self.variables[i] for i in members], self.k, add_variable, index_dtype)
            for dtype, members in by_dtype.items()
        ]

    @property
    def buffers(self):
        """The (k,) value variables, one per group: what the inner optimizer is built on."""
        return [g.values for g in self.groups]

    def held_layout(self) -> tuple:
        """Per group, the held offsets as a tuple of Python ints (eager): how the buffer slots split into the
        group's variables."""
        if not tf.executing_eagerly():
            raise RuntimeError("`held_layout` reads the offsets eagerly; call it outside a traced function.")
        return tuple(tuple(int(x) for x in tf.convert_to_tensor(g.offsets).numpy()) for g in self.groups)

    def freeze_layout(self) -> tuple:
        """Specialize the steps traced from now on under XLA to the held layout; returns it (``held_layout``).

        Under XLA (static shapes) a step that reads the offsets in-graph gathers k entries from each of the m
        variables and scatters k slots into each (``_Gather``); with the layout frozen, variable ``i`` gathers
        and scatters exactly its own ``offsets[i+1] - offsets[i]`` entries, k in all. Valid while the held
        offsets stay as they are: a selection (``select``) thaws the layout, and a traced step whose held
        offsets no longer equal its frozen ones writes nothing to the model variables (``_Gather``). So
        freeze only where no selection follows while the traced step is used (``TracePerPhase``: the
        restricted phase without ``reselect_every``), and retrace after a change. Outside XLA steps do not use
        it (they already split the k slots by the held offsets)."""
        layout = self.held_layout()
        for group, offsets in zip(self.groups, layout):
            group.static_offsets = offsets
        return layout

    def thaw_layout(self):
        """Undo ``freeze_layout``: steps traced from now on read the offsets in-graph."""
        for group in self.groups:
            group.static_offsets = None

    @property
    def frozen_layout(self):
        """The layout set by ``freeze_layout`` (per group, a tuple of Python ints), or None."""
        if not self.groups or self.groups[0].static_offsets is None:
            return None
        return tuple(g.static_offsets for g in self.groups)

    def select(self, masks, links=None, first=True):
        """Take the entries where ``masks`` (bool, one per model variable) are True.

        ``links``: per group, a list of ``SlotLink``; ``first`` (bool, or a bool tensor decided in-graph):
        whether this is the first selection, where slots come from the links' N-sized ``full`` slots;
        otherwise from the previous selection's k-sized state (entries that stay keep theirs, new ones start
        from ``initial``). Thaws a frozen layout (``freeze_layout``): steps traced later read the new offsets."""
        self.thaw_layout()
        links = links or [[] for _ in self.groups]
        first = tf.convert_to_tensor(first, tf.bool)
        for group, group_links in zip(self.groups, links):
            positions, offsets = group.new_indices([masks[i] for i in group.members])
            owner = _owners(offsets, self.k)
            old_keys = group.keys(tf.convert_to_tensor(group.positions), tf.convert_to_tensor(group.offsets))
            new_keys = group.keys(positions, offsets, owner)
            at = tf.minimum(_count_below(old_keys, new_keys), self.k - 1)
            kept = tf.logical_and(tf.gather(old_keys, at) == new_keys, new_keys != group.padding_key)
            kept = tf.logical_and(kept, tf.logical_not(first))
            gather = group.gather(positions, offsets, owner)
            values = gather(group.variables)
            from_full = None  # the first selection's held slots: their state comes from the N-sized slots
            for link in group_links:
                initial = values if link.initial is None else tf.constant(link.initial, link.small.dtype)
                new = tf.where(kept, tf.gather(tf.convert_to_tensor(link.small), at), initial)
                if link.full is not None:
                    if from_full is None:
                        from_full = tf.logical_and(first, tf.range(self.k) < offsets[-1])
                    new = tf.where(from_full, gather(link.full), new)
                link.small.assign(new)
            group.positions.assign(positions)
            group.offsets.assign(offsets)
            group.values.assign(values)

    def gather_gradients(self, grads, gathers=None):
        """(k,) gradient per group from ``grads`` (one per model variable; dense, IndexedSlices or None), at the
        held positions (or, per group, ``gathers``')."""
        gathers = gathers or [None] * len(self.groups)
        return [g.gather_gradients([grads[i] for i in g.members], at) for g, at in zip(self.groups, gathers)]

    def gather_step(self, grads, kept=None, slots=None) -> "_Step":
        """The first half of a restricted step: refresh the buffers from the model variables and gather the
        (k,) gradient per group (``_Step.grads``) that the inner optimizer then applies to ``buffers``;
        ``scatter_step`` writes the result back.

        ``kept``: None or one bool tensor (True = kept) or None per model variable: the pruning masks;
        selected entries that are pruned get a zero gradient and keep their value. A variable whose
        gradient is None is skipped, as Keras skips it: its entries keep their value and, in ``slots``
        (per group, the inner optimizer's k-sized slot variables), their state."""
        step = _Step(self.groups)
        step.grads = self.gather_gradients(grads, step.gathers)
        for j, (group, gather) in enumerate(zip(self.groups, step.gathers)):
            values = step.refreshed[j] = gather(group.variables)
            group.values.assign(values)
            masks = [None if kept is None else kept[i] for i in group.members]
            absent = [grads[i] is None for i in group.members]
            if any(m is not None for m in masks) or any(absent):
                masks = [
                    tf.zeros(v.shape, tf.bool) if gone else tf.ones(v.shape, tf.bool) if m is None else m
                    for m, v, gone in zip(masks, group.variables, absent)
                ]
                step.live[j] = gather(masks)
                step.grads[j] = tf.where(step.live[j], step.grads[j], tf.zeros((), step.grads[j].dtype))
            if any(absent) and slots is not None:
                skipped = tf.gather(tf.constant([not gone for gone in absent] + [True]), group.owners(gather.offsets))
                step.held[j] = (skipped, [(s, tf.identity(s)) for s in slots[j]])
        return step

    def scatter_step(self, step: "_Step"):
        """The second half of a restricted step (``gather_step``): write the updated buffers back into the
        model variables, except pruned entries and skipped variables (whose slots get their state back)."""
        for j, (group, gather) in enumerate(zip(self.groups, step.gathers)):
            values = tf.convert_to_tensor(group.values)
            if step.live[j] is not None:
                values = tf.where(step.live[j], values, step.refreshed[j])
            if step.held[j] is not None:
                updated, state = step.held[j]
                for slot, old in state:
                    slot.assign(tf.where(updated, tf.convert_to_tensor(slot), old))
            group.scatter(values, gather, unchanged=step.refreshed[j])

    def scatter_into_variables(self, tensors):
        """Write ``tensors`` (one (k,) tensor per group, e.g. the inner optimizer's moving averages of the
        buffers) into the model variables at the selected entries."""
        for group, values in zip(self.groups, tensors):
            group.scatter(tf.convert_to_tensor(values))

    def mask(self, i):
        """Bool tensor of model variable ``i``'s shape: True at its selected entries (from ``positions`` and
        ``offsets``; no N-sized state is held for it)."""
        for group in self.groups:
            if i in group.members:
                j = group.members.index(i)
                variable = group.variables[j]
                offsets = tf.convert_to_tensor(group.offsets)
                positions = tf.cast(tf.convert_to_tensor(group.positions)[offsets[j] : offsets[j + 1]], tf.int64)
                flat = tf.scatter_nd(positions[:, None], tf.ones_like(positions, tf.int8), [_num(variable)])
                return tf.reshape(flat > 0, variable.shape)
        raise IndexError(f"no model variable {i} (there are {len(self.variables)})")

    def selected_count(self):
        """Entries held (int32 scalar), at most k per group."""
        return tf.add_n([g.offsets[-1] for g in self.groups])

    def state_bytes(self, extra_variables=()) -> int:
        """Bytes of this state (values, positions, offsets) plus ``extra_variables`` (the inner
        optimizer's k-sized slots and counters); divide by ``num_parameters`` for B/param."""
        variables = [v for g in self.groups for v in (g.values, g.positions, g.offsets)] + list(extra_variables)
        return sum(_num(v) * tf.as_dtype(v.dtype).size for v in variables)
