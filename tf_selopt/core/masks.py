"""Scores -> masks: the one function the selection, ``calibrate``, pruning and the tfmot bridge call.

``masks_from_scores(scores, k, scope=..., granularity=..., kept=..., floor=...)`` turns per-entry scores
(one float tensor per variable, higher = more worth keeping or training) into bool masks of the same
shapes, True = selected. ``check_scope_and_granularity`` is the one check of the two arguments that every
public entry point runs before any state changes.

**Ties: one rule, no seed.** Among units (entries or blocks) of equal score, the one with the lowest flat
index wins; the flat index runs over the variables in order and row-major inside each
(``selection.top_k_mask``). NaN ranks below every number, ``-0.0`` equals ``+0.0``. A mask depends on
the scores only: a seed reaches it through the criterion's scores (``tf_selopt.core.criteria.seeds``
gives every caller the same per-variable seeds), never through the tie-break.

**Granularity** (what a unit is, and what ``k`` counts):

* ``"parameter"``: a unit is one entry; exactly ``k`` entries.
* ``Block(rows, cols)``: a unit is a block of ``sparsity.block_scores`` (``rows`` output units x ``cols``
  consecutive inputs of a ``(..., in, out)`` variable); a block scores the float64 sum of its kept
  entries' scores (ranked as float32, like every score); exactly ``k`` blocks.
* ``"unit"`` / ``"variable"``: whole groups of ``selection.group_view`` taken greedily, best first, within
  a budget of ``k`` entries (``selection.select``): at most ``k`` entries.
* ``MByN(m, n)``: in every group of ``n`` consecutive inputs the ``n - m`` best entries
  (``sparsity.m_by_n_mask``); ``k``, ``scope`` and ``floor`` do not apply (pass ``k=None``).

**Scope**: ``"global"`` ranks all units of all variables together; ``"per_variable"`` ranks each variable
on its own, ``k`` split in proportion to the variables' unit counts (``selection.per_variable_counts``,
the total stays ``k``) or given as a list of per-variable counts.

This module imports TensorFlow only, never a Keras front end.

Examples:
    >>> import tensorflow as tf
    >>> [m.numpy().tolist() for m in masks_from_scores([tf.constant([3.0, 1.0, 3.0, 2.0])], 2)]
    [[True, False, True, False]]
    >>> [m.numpy().astype(int).tolist() for m in masks_from_scores(
    ...     [tf.constant([1.0, 2.0]), tf.constant([5.0, 6.0])], 2, floor=1)]  # each variable keeps its best
    [[0, 1], [0, 1]]
    >>> masks_from_scores([tf.constant([[4.0], [1.0], [3.0], [3.0]])], None, granularity=MByN(2, 4))[0].numpy().ravel()
    array([ True, False,  True, False])
"""

from __future__ import annotations

import tensorflow as tf

from tf_selopt.core import selection
from tf_selopt.core import sparsity as sparsity_lib
from tf_selopt.core.checks import is_int
from tf_selopt.core.selection import Block, MByN, check_scope_and_granularity

__all__ = ["Block", "MByN", "SCOPES", "GRANULARITIES", "check_scope_and_granularity", "masks_from_scores"]


SCOPES = selection.SCOPES
#: every granularity ``masks_from_scores`` takes: the strings of ``selection.GRANULARITIES``, a ``Block``, an ``MByN``
GRANULARITIES = selection.GRANULARITIES + (Block, MByN)


def _kept_first(scores, kept):
    """Scores as float32 with the entries not ``kept`` at ``-inf`` (they rank below every finite score)."""
    return [
        tf.cast(s, tf.float32) if m is None else tf.where(m, tf.cast(s, tf.float32), float("-inf"))
        for s, m in zip(scores, kept)
    ]


def _counts(k, sizes, scope):
    """Per-variable counts for ``"per_variable"`` (an int split in proportion, or a list taken as is)."""
    if isinstance(k, (list, tuple)):
        if (
            scope != "per_variable"
            or len(k) != len(sizes)
            or not all(is_int(c) and 0 <= c <= n for c, n in zip(k, sizes))
        ):
            raise ValueError(
                f"`k` as a list needs scope='per_variable' and one int in [0, size] per variable (sizes {sizes}); "
                f"received k={k!r}, scope={scope!r}."
            )
        return [int(c) for c in k]
    total = sum(sizes)
    if not (is_int(k) and 0 <= k <= total):
        raise ValueError(f"`k` must be an int in [0, {total}] (the number of units); received k={k!r}.")
    return selection.per_variable_counts(sizes, k) if scope == "per_variable" else None


def _top_units(scores, k, scope, kept, floor, floor_name):
    """Exact top-``k`` masks over units (entries, or blocks seen as entries); see ``masks_from_scores``."""
    sizes = [int(s.shape.num_elements()) for s in scores]
    counts = _counts(k, sizes, scope)
    ranked = _kept_first(scores, kept)
    if counts is not None:
        return [selection.top_k_mask(s, max(c, min(floor, n))) for s, c, n in zip(ranked, counts, sizes)]
    if not floor:
        return selection.select(ranked, int(k), "global")
    available = [n if m is None else int(tf.reduce_sum(tf.cast(m, tf.int32))) for n, m in zip(sizes, kept)]
    floors = [min(floor, a) for a in available]
    if sum(floors) > k:
        raise ValueError(
            f"`{floor_name}`={floor} keeps {sum(floors)} units over {len(scores)} variables, more than the {k} "
            "kept in total; lower it or keep more."
        )
    firsts = [selection.top_k_mask(s, c) for s, c in zip(ranked, floors)]
    flat = tf.concat([tf.reshape(s, [-1]) for s in ranked], axis=0)
    rest = selection.top_k_mask(flat, int(k) - sum(floors), last=tf.concat([tf.reshape(f, [-1]) for f in firsts], 0))
    pieces = tf.split(rest, sizes) if len(sizes) > 1 else [rest]
    return [tf.logical_or(f, tf.reshape(p, s.shape)) for f, p, s in zip(firsts, pieces, scores)]


def masks_from_scores(scores, k, *, scope="global", granularity="parameter", kept=None, floor=0, floor_name="floor"):
    """Bool masks (the shapes of ``scores``, True = selected) of the ``k`` best units; see the module doc.

    Args:
        scores: list of float tensors (or arrays) with static shapes, one per variable.
        k: units to select: an int in [0, units] (per variable in proportion for ``"per_variable"``), a
            list of per-variable counts (``"per_variable"`` with ``"parameter"`` or ``Block``), or None
            for ``MByN``.
        scope: one of ``SCOPES``: ``"global"`` or ``"per_variable"``.
        granularity: ``"parameter"``, ``"unit"``, ``"variable"``, ``Block(rows, cols)`` or ``MByN(m, n)``.
        kept: None or a list (bool tensor of the score's shape, or None = all) of the entries that may be
            selected (e.g. not pruned). Other entries rank below every finite score, so they are chosen
            only when fewer than ``k`` units are kept; the masks are not and-ed with ``kept`` (callers do,
            where a pruned entry must stay out).
        floor: int >= 0 (``"parameter"`` and ``Block``): each variable gets at least its best
            ``min(floor, u_i)`` units (``u_i``: its kept units for ``"global"``, all its units for
            ``"per_variable"``). Global: out of the same ``k`` (the rest is ranked over the other units,
            the total stays exactly ``k``; ValueError when the floors exceed ``k``); per variable: a
            variable's count is ``max(k_i, min(floor, u_i))``. A global floor counts the kept units in
            Python, so it runs eagerly only (pruning and the tfmot plan are eager).
        floor_name: the caller's name for ``floor`` in that ValueError.

    Returns:
        list of bool tensors: exactly ``k`` units True in total (per variable ``k_i``, or more where the
        floor lifts it) for ``"parameter"`` and ``Block``; at most ``k`` entries for ``"unit"`` and
        ``"variable"``; exactly ``m`` False in every group of ``n`` for ``MByN``.

    Raises:
        ValueError: for a bad ``scope``, ``granularity``, ``k``, ``kept``, ``floor``, or a variable a block or
            group does not divide.
    """
    check_scope_and_granularity(scope, granularity, SCOPES, GRANULARITIES)
    scores = [tf.convert_to_tensor(s) for s in scores]
    if not scores:
        raise ValueError("`scores` must be a non-empty list of score tensors.")
    kept = [None] * len(scores) if kept is None else [None if m is None else tf.convert_to_tensor(m) for m in kept]
    if len(kept) != len(scores):
        raise ValueError(f"`kept` must have one entry per score tensor ({len(scores)}); received {len(kept)}.")
    if not (is_int(floor) and floor >= 0):
        raise ValueError(f"`{floor_name}` must be an int >= 0; received {floor_name}={floor!r}.")
    if floor and not (granularity == "parameter" or isinstance(granularity, Block)):
        raise ValueError(f"`{floor_name}` applies to 'parameter' and Block granularity; received {granularity!r}.")
    if isinstance(granularity, MByN):
        if k is not None:
            raise ValueError(f"`k` does not apply to MByN granularity (m of every n are dropped); received k={k!r}.")
        return [sparsity_lib.m_by_n_mask(s, tuple(granularity)) for s in _kept_first(scores, kept)]
    if isinstance(granularity, Block):
        block = tuple(granularity)
        for i, s in enumerate(scores):
            sparsity_lib.check_divisible(s.shape, block[0], block[1], f"`granularity`={granularity!r}", f"scores[{i}]")
        summed = [s if m is None else tf.where(m, tf.cast(s, tf.float32), 0.0) for s, m in zip(scores, kept)]
        block_kept = [None if m is None else sparsity_lib.block_any(m, block) for m in kept]
        block_scores = [tf.cast(sparsity_lib.block_scores(s, block), tf.float32) for s in summed]
        chosen = _top_units(block_scores, k, scope, block_kept, floor, floor_name)
        return [sparsity_lib.expand_blocks(m, block, s.shape) for m, s in zip(chosen, scores)]
    if granularity != "parameter":  # "unit" or "variable"
        if not is_int(k):
            raise ValueError(f"`k` must be an int (the budget in entries) for {granularity!r} granularity.")
        return selection.select(scores, int(k), scope, granularity, kept)
    return _top_units(scores, k, scope, kept, floor, floor_name)
