"""Selection: scores -> boolean masks with exactly ``k`` ones.

The threshold is found by a radix-style search over the bits of an
order-preserving int32 key of each float32 score: 32 passes, each one
comparison and one sum over the ``N`` scores, so time is linear in ``N`` (no
sort, no ``top_k``) and everything compiles under XLA.

Tie rule (deterministic): among parameters whose score equals the k-th largest
score, those with the lowest flat index win, where the flat index runs over the
variables in order and row-major inside each variable. NaN scores rank below
every number; ``-0.0`` equals ``+0.0``.

Granularity: ``"parameter"`` selects entries (exactly ``k``); ``"unit"`` and
``"variable"`` select whole groups (see ``select``), at most ``k`` parameters.

This module imports TensorFlow only, never a Keras front end.

Examples:
    >>> import tensorflow as tf
    >>> [m.numpy().tolist() for m in select([tf.constant([3.0, 1.0, 3.0, 2.0])], 2)]
    [[True, False, True, False]]
    >>> [m.numpy().tolist() for m in select([tf.constant([1.0, 1.0]), tf.constant([1.0])], 2)]
    [[True, True], [False]]
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import tensorflow as tf

from tf_selopt.core.checks import is_int

__all__ = [
    "SCOPES",
    "GRANULARITIES",
    "Block",
    "MByN",
    "check_scope_and_granularity",
    "count_of",
    "resolve_count",
    "per_variable_counts",
    "sortable_key",
    "top_k_mask",
    "group_size",
    "group_view",
    "greedy_groups",
    "select",
]

SCOPES = ("global", "per_variable")
GRANULARITIES = ("parameter", "unit", "variable")


class Block(NamedTuple):
    """Granularity: blocks of ``rows`` consecutive output units x ``cols`` consecutive inputs (ints >= 1)."""

    rows: int
    cols: int


class MByN(NamedTuple):
    """Granularity: ``m`` dropped in every ``n`` consecutive inputs (tfmot's ``sparsity_m_by_n``; 1 <= m < n)."""

    m: int
    n: int


def _describe(allowed) -> str:
    words = [repr(a) for a in allowed if isinstance(a, str)]
    words += [f"{a.__name__}({', '.join(a.__annotations__)})" for a in allowed if isinstance(a, type)]
    return f"({', '.join(words)})"


def _valid_structure(granularity) -> bool:
    if not all(is_int(v) for v in granularity):
        return False
    if isinstance(granularity, Block):
        return min(granularity) >= 1
    return 1 <= granularity.m < granularity.n


def check_scope_and_granularity(scope, granularity="parameter", scopes=SCOPES, granularities=GRANULARITIES):
    """ValueError naming the argument and its allowed values unless ``scope`` and ``granularity`` go together.

    ``scopes`` and ``granularities`` are what the caller accepts (e.g. pruning's ``("global", "per_layer")``;
    ``selection.GRANULARITIES`` for the optimizer); a ``Block``/``MByN`` class in ``granularities``
    accepts its instances with valid ints. ``"variable"`` granularity needs ``scope="global"``.

    Examples:
        >>> check_scope_and_granularity("per_variable", "variable")
        Traceback (most recent call last):
        ...
        ValueError: `granularity`='variable' selects whole variables over the network, so it needs scope='global'; received scope='per_variable'.
    """  # noqa: E501
    if not isinstance(scope, str) or scope not in scopes:
        raise ValueError(f"`scope` must be one of {tuple(scopes)}; received scope={scope!r}.")
    if isinstance(granularity, (Block, MByN)):
        ok = type(granularity) in granularities and _valid_structure(granularity)
    else:
        ok = isinstance(granularity, str) and granularity in granularities
    if not ok:
        if all(isinstance(g, str) for g in granularities):
            allowed = tuple(granularities)
        else:
            allowed = _describe(granularities) + " (Block: ints >= 1; MByN: ints with 1 <= m < n)"
        raise ValueError(f"`granularity` must be one of {allowed}; received granularity={granularity!r}.")
    if granularity == "variable" and scope != "global":
        raise ValueError(
            "`granularity`='variable' selects whole variables over the network, so it needs "
            f"scope='global'; received scope={scope!r}."
        )


def count_of(fraction: float, total: int) -> int:
    """The count of ``total`` items at ``fraction``: ``floor(fraction * total + 0.5)`` (rounded half up, in
    float64), at most ``total``. The one rounding rule of the package: parameters selected
    (``resolve_count``), weights pruned (``tf_selopt.keras.pruning``, ``tf_selopt.keras2.tfmot_bridge``)."""
    return min(total, int(math.floor(fraction * total + 0.5)))


def resolve_count(keep, total: int, name: str = "keep") -> int:
    """Number of parameters to select: ``keep`` as a fraction or a count.

    A float in (0, 1] gives ``max(1, floor(keep * total + 0.5))``; an int in
    [1, total] is taken as is. Anything else raises ``ValueError`` naming
    ``name``.
    """
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real):
        raise ValueError(f"`{name}` must be a float in (0, 1] or an int in [1, {total}]; received {name}={keep!r}.")
    if isinstance(keep, numbers.Integral):
        if not 1 <= keep <= total:
            raise ValueError(f"`{name}` as a count must be an int in [1, {total}] (N); received {name}={keep}.")
        return int(keep)
    if not (math.isfinite(keep) and 0.0 < keep <= 1.0):
        raise ValueError(f"`{name}` as a fraction must be in (0, 1]; received {name}={keep!r}.")
    return max(1, count_of(keep, total))


def per_variable_counts(sizes, k: int) -> list[int]:
    """Split ``k`` over variables of ``sizes`` in proportion, summing to exactly ``k``.

    Largest-remainder apportionment: each variable gets ``floor(k * n_i / N)``;
    the leftover ones go to the largest remainders, earlier variables first on
    ties.
    """
    total = sum(sizes)
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}]; received k={k}.")
    base = [k * n // total for n in sizes]
    remainders = [k * n - b * total for n, b in zip(sizes, base)]
    order = sorted(range(len(sizes)), key=lambda i: (-remainders[i], i))
    for i in order[: k - sum(base)]:
        base[i] += 1
    return base


def _sortable_key32(scores):
    """float32 scores -> int32 keys with the same order (signed comparison).

    NaN (any sign or payload) maps to ``INT32_MIN``, below every number (-inf
    maps to ``-2**31 + 2**23 - 1``); -0.0 and +0.0 map to the same key (0).
    Integer bits only (``tf.bitcast``): no float op that a compiler may drop or
    that may flush subnormals to zero.
    """
    bits = tf.bitcast(tf.cast(scores, tf.float32), tf.int32)
    magnitude = tf.bitwise.bitwise_and(bits, 0x7FFFFFFF)
    # Negative floats (sign bit set): flip the magnitude bits to reverse their order;
    # -0.0 (magnitude 0) becomes INT32_MIN ^ 0x7FFFFFFF = -1, one below +0.0's 0.
    keys = tf.bitwise.bitwise_xor(bits, tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 31), 0x7FFFFFFF))
    # -0.0 -> +0.0: merge on the integer bits (a magnitude of 0 is a signed zero).
    keys = tf.where(tf.equal(magnitude, 0), tf.constant(0, tf.int32), keys)
    # NaN: exponent all ones and a nonzero mantissa, i.e. magnitude > bits of +inf.
    return tf.where(magnitude > 0x7F800000, tf.constant(tf.int32.min, tf.int32), keys)


def sortable_key(scores):
    """float32 scores -> int64 keys in [0, 2**32) with the same order.

    NaN maps below -inf (to 0); -0.0 and +0.0 map to the same key. This is the
    int32 key of ``top_k_mask`` shifted by ``2**31``.
    """
    return tf.cast(_sortable_key32(scores), tf.int64) + 2**31


def _kth_largest_key(keys, k: int):
    """Largest ``t`` with ``count(keys >= t) >= k``: the k-th largest int32 key.

    Radix search from the top bit of the unsigned view ``t + 2**31``: that bit
    is the (inverted) sign bit, so its candidate is 0; the lower 31 bits are the
    same in both views, and setting one (still clear) bit cannot overflow.
    Starting at ``INT32_MIN`` is safe: every key is >= it.
    """

    def step(bit, t):
        candidate = tf.where(bit == 31, tf.zeros_like(t), tf.bitwise.bitwise_or(t, tf.bitwise.left_shift(1, bit)))
        count = tf.reduce_sum(tf.cast(keys >= candidate, tf.int32))
        return bit - 1, tf.where(count >= k, candidate, t)

    # A loop in the graph rather than 32 unrolled rounds: ~15 ops to trace and compile instead of ~200
    # (measured against the unrolled rounds by benchmarks/selection_graph.py).
    start = (tf.constant(31, tf.int32), tf.constant(tf.int32.min, tf.int32))
    return tf.while_loop(lambda bit, t: bit >= 0, step, start, maximum_iterations=32)[1]


def top_k_mask(scores, k: int, last=None):
    """Boolean mask of the shape of ``scores`` with exactly ``k`` True entries.

    ``k`` is a Python int in [0, size]. Ties: lowest flat (row-major) index wins.
    ``last``: None or a bool tensor of the shape of ``scores``: its True entries
    rank below every other entry (NaN included), so they are chosen only when
    the others are fewer than ``k``.
    """
    flat = tf.reshape(scores, [-1])
    size = flat.shape[0]
    if size is None:
        raise ValueError("top_k_mask needs a static number of scores.")
    if not 0 <= k <= size:
        raise ValueError(f"k must be in [0, {size}]; received k={k}.")
    if k == 0:
        return tf.zeros(tf.shape(scores), tf.bool)
    if k == size:
        return tf.ones(tf.shape(scores), tf.bool)
    keys = _sortable_key32(flat)
    if last is not None:  # NaN moves one key up (still below -inf's key), ``last`` takes the lowest key
        lowest = tf.constant(tf.int32.min, tf.int32)
        keys = tf.where(keys == lowest, lowest + 1, keys)
        keys = tf.where(tf.reshape(last, [-1]), lowest, keys)
    threshold = _kth_largest_key(keys, k)
    above = keys > threshold
    at = keys == threshold
    room = k - tf.reduce_sum(tf.cast(above, tf.int32))
    rank_at = tf.cumsum(tf.cast(at, tf.int32), exclusive=True)
    mask = tf.logical_or(above, tf.logical_and(at, rank_at < room))
    return tf.reshape(mask, tf.shape(scores))


def group_size(shape, granularity: str) -> int:
    """Parameters per group of a variable of static ``shape`` (``"parameter"``: 1).

    ``"unit"``: a group is one index of the last axis (an output unit of a Dense
    kernel, an output channel of a Conv kernel, one entry of a bias); a scalar
    is one group; for an Embedding table ``[vocab, dim]`` a group is one
    embedding dimension over all tokens. ``"variable"``: the whole tensor.
    """
    shape = tf.TensorShape(shape)
    if granularity == "parameter":
        return 1
    if granularity == "unit" and shape.rank:
        return shape.num_elements() // shape[-1]
    return shape.num_elements()


def group_view(x, granularity: str):
    """``x`` reshaped to ``[group_size, groups]``, one column per group (see ``group_size``)."""
    return tf.reshape(x, [group_size(x.shape, granularity), -1])


def greedy_groups(scores, costs, budget: int):
    """Bool ``[G]``: groups taken greedily, best ``scores`` first, while they fit in ``budget``.

    Groups are visited by descending score (``sortable_key`` order; ties: lowest
    index first); a group is taken if its ``cost`` (int64, > 0) fits in what is
    left of ``budget``, skipped otherwise (smaller ones later may still fit).
    Groups of cost 0 are never taken. Sequential over ``G`` (a ``tf.scan``).
    """
    keys = sortable_key(scores)
    order = tf.argsort(keys, direction="DESCENDING", stable=True)
    budget = tf.constant(budget, tf.int64)

    def take(total, cost):
        return tf.where(tf.logical_and(cost > 0, total + cost <= budget), total + cost, total)

    totals = tf.scan(take, tf.gather(costs, order), initializer=tf.constant(0, tf.int64))
    taken = totals > tf.concat([tf.zeros([1], tf.int64), totals[:-1]], axis=0)
    taken = tf.scatter_nd(order[:, None], tf.cast(taken, tf.int32), tf.shape(order))  # back to group order
    return taken > 0


def _select_groups(scores, k: int, scope: str, granularity: str, kept):
    """``select`` for ``"unit"`` and ``"variable"`` granularity."""
    views = [group_view(tf.cast(s, tf.float64), granularity) for s in scores]
    kept_views = [
        tf.ones(v.shape, tf.bool) if m is None else group_view(tf.convert_to_tensor(m), granularity)
        for v, m in zip(views, kept)
    ]
    # float64 sums: the ranking does not depend on the summation order (XLA or not) in practice.
    group_scores = [tf.reduce_sum(tf.where(m, v, tf.constant(0, v.dtype)), axis=0) for v, m in zip(views, kept_views)]
    costs = [tf.reduce_sum(tf.cast(m, tf.int64), axis=0) for m in kept_views]
    if scope == "global":
        taken = greedy_groups(tf.concat(group_scores, axis=0), tf.concat(costs, axis=0), k)
        taken = tf.split(taken, [int(v.shape[1]) for v in views]) if len(views) > 1 else [taken]
    else:
        sizes = [int(s.shape.num_elements()) for s in scores]
        taken = [greedy_groups(g, c, k_i) for g, c, k_i in zip(group_scores, costs, per_variable_counts(sizes, k))]
    return [tf.reshape(tf.broadcast_to(t[None, :], v.shape), s.shape) for t, v, s in zip(taken, views, scores)]


def select(scores, k: int, scope: str = "global", granularity: str = "parameter", kept=None):
    """Masks for a list of score tensors: exactly ``k`` True (``"parameter"``), or whole groups.

    Args:
        scores: list of float tensors (or arrays) with static shapes (one per variable).
        k: total number to select, a Python int in [0, N] (0: nothing; see ``resolve_count``).
        scope: ``"global"``: top-k over all parameters of all variables (the
            note's setting); ``"per_variable"``: the same fraction in each
            variable, counts from ``per_variable_counts``.
        granularity: ``"parameter"``: exactly ``k`` entries (entries that are
            not ``kept`` rank below all others, so they are chosen only if fewer
            than ``k`` are kept). ``"unit"`` / ``"variable"``: whole groups of
            ``group_view``; a group's score is the sum of its kept entries'
            scores (float64), its cost the number of its kept entries, and
            ``greedy_groups`` takes them within ``k`` (per variable within its
            ``per_variable_counts`` share for ``"per_variable"``, which
            ``"variable"`` does not allow). Kept entries selected: at most
            ``k``, exactly ``k`` whenever the greedy fill hits it (e.g. a
            1-entry group is left that fits).
        kept: None or a list (bool tensor of the score's shape, or None = all)
            of the entries that may be selected (e.g. not pruned).

    Returns:
        list of bool tensors, the shapes of ``scores``.
    """
    check_scope_and_granularity(scope, granularity)
    scores = [tf.convert_to_tensor(s) for s in scores]  # numpy arrays and lists too
    if not scores:
        raise ValueError("`scores` must be a non-empty list of score tensors.")
    total = sum(int(s.shape.num_elements()) for s in scores)
    if not (is_int(k) and 0 <= k <= total):
        raise ValueError(f"`k` must be an int in [0, {total}] (N, the number of scores); received k={k!r}.")
    kept = [None] * len(scores) if kept is None else [None if m is None else tf.convert_to_tensor(m) for m in kept]
    if len(kept) != len(scores):
        raise ValueError(f"`kept` must have one entry per score tensor ({len(scores)}); received {len(kept)}.")
    if granularity != "parameter":
        return _select_groups(scores, k, scope, granularity, kept)
    scores = [s if m is None else tf.where(m, s, tf.constant(float("-inf"), s.dtype)) for s, m in zip(scores, kept)]
    sizes = [int(s.shape.num_elements()) for s in scores]
    if scope == "per_variable":
        return [top_k_mask(s, k_i) for s, k_i in zip(scores, per_variable_counts(sizes, k))]
    flat = tf.concat([tf.reshape(tf.cast(s, tf.float32), [-1]) for s in scores], axis=0)
    mask = top_k_mask(flat, k)
    pieces = tf.split(mask, sizes) if len(sizes) > 1 else [mask]
    return [tf.reshape(p, s.shape) for p, s in zip(pieces, scores)]
