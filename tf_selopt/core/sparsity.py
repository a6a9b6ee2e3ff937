"""Sparsity structures: blocks and N:M groups along a kernel's input axis, as pure TensorFlow functions.

The layout these functions assume is the one of Keras kernels: a variable of
shape ``(..., in, out)`` (Dense ``(in, out)``; Conv ``(h, w, in, out)``) whose
axis ``-2`` is the **input axis** and axis ``-1`` the output axis. TFLite stores
the same weights transposed, input axis last (FULLY_CONNECTED ``(out, in)``,
CONV_2D ``(out, h, w, in)``), so a structure "along the input axis" is one along
the last axis of the TFLite weight, where LiteRT's sparse kernels look for it.

* **Blocks** (``block_size=(r, c)``, written in TFLite's ``(out, in)``
  orientation): a block is ``r`` consecutive output units times ``c``
  consecutive inputs of one position of the leading axes. ``(1, 4)``: four
  consecutive input weights of one output unit, LiteRT's float block format;
  ``(1, 16)``: its int8 one. ``block_scores`` sums per-entry scores over each
  block, ``expand_blocks`` turns a mask over blocks back into one over
  entries. A shape must be divisible: ``in % c == 0`` and ``out % r == 0``
  (``check_divisible``).
* **N:M** (``m_by_n=(m, n)``, tfmot's ``sparsity_m_by_n`` convention: ``m``
  zeros in every ``n`` consecutive values): ``m_by_n_mask`` keeps the ``n - m``
  best-scoring entries of every group of ``n`` consecutive inputs (per output
  unit and leading position) and prunes the other ``m``: exactly ``m`` per
  group. ``in % n == 0`` is required.

Ties go to the lowest index (as in ``tf_selopt.core.selection``). Scores are
compared with ``selection.sortable_key`` (NaN below ``-inf``). This module
imports TensorFlow only, never a Keras front end.

Examples:
    >>> import tensorflow as tf
    >>> w = tf.constant([[1.0, -2.0], [0.5, 3.0], [-4.0, 0.125], [0.25, 0.375]])  # a Dense kernel (in=4, out=2)
    >>> block_scores(tf.abs(w), (1, 2)).numpy().tolist()  # blocks of 2 consecutive inputs per output unit
    [[1.5, 5.0], [4.25, 0.5]]
    >>> expand_blocks(tf.constant([[True, True], [True, False]]), (1, 2), w.shape).numpy().astype(int).tolist()
    [[1, 1], [1, 1], [1, 0], [1, 0]]
    >>> m_by_n_mask(tf.abs(w), (1, 2)).numpy().astype(int).tolist()  # 1 zero in every 2 consecutive inputs
    [[1, 0], [0, 1], [1, 0], [0, 1]]
    >>> is_m_by_n(tf.where(m_by_n_mask(tf.abs(w), (1, 2)), w, 0.0), (1, 2))
    True
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_selopt.core.checks import fraction, is_int
from tf_selopt.core.selection import sortable_key

__all__ = [
    "check_block_size",
    "check_m_by_n",
    "check_structure",
    "check_divisible",
    "block_count",
    "block_scores",
    "block_any",
    "expand_blocks",
    "m_by_n_mask",
    "is_m_by_n",
]


def _pair(value):
    """``value`` as a tuple of two ints, or None if it is not a list/tuple of two ints (bools refused)."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(v) for v in value):
        return int(value[0]), int(value[1])
    return None


def check_block_size(block_size) -> tuple[int, int]:
    """``block_size`` as ``(r, c)``: None -> ``(1, 1)`` (unstructured); else two ints >= 1.

    Raises ValueError naming ``block_size`` for anything else.
    """
    if block_size is None:
        return (1, 1)
    pair = _pair(block_size)
    if pair is None or min(pair) < 1:
        raise ValueError(
            "`block_size` must be None or a pair of ints >= 1 (rows = consecutive output units, cols = "
            f"consecutive inputs; e.g. (1, 4)); received block_size={block_size!r}."
        )
    return pair


def check_m_by_n(m_by_n, name: str = "sparsity_m_by_n"):
    """``m_by_n`` as ``(m, n)`` with ``1 <= m < n`` (m zeros in every n), or None if None; else ValueError."""
    if m_by_n is None:
        return None
    pair = _pair(m_by_n)
    if pair is None or not 1 <= pair[0] < pair[1]:
        raise ValueError(
            f"`{name}` must be None or a pair (m, n) of ints with 1 <= m < n (m zeros in every n consecutive "
            f"weights along the input axis, e.g. (2, 4)); received {name}={m_by_n!r}."
        )
    return pair


def check_structure(sparsity, block_size, sparsity_m_by_n):
    """The rule tying ``sparsity``, ``block_size`` and ``sparsity_m_by_n``; returns ``(sparsity, block, m_by_n)``.

    ``block`` is ``check_block_size``'s pair, ``m_by_n`` ``check_m_by_n``'s (or
    None). Without N:M, ``sparsity`` must be a float in [0, 1). With it,
    ``block_size`` must be None or ``(1, 1)`` (the two exclude each other) and
    ``sparsity`` None or ``m / n`` (returned as ``m / n``). ValueError naming the
    argument otherwise.
    """
    block = check_block_size(block_size)
    m_by_n = check_m_by_n(sparsity_m_by_n)
    if m_by_n is None:
        return fraction("sparsity", sparsity), block, None
    if block != (1, 1):
        raise ValueError(
            f"`block_size`={block_size!r} and `sparsity_m_by_n`={sparsity_m_by_n!r} exclude each other: give one "
            "of them (blocks: a fraction of whole blocks; N:M: m zeros in every n consecutive weights)."
        )
    implied = m_by_n[0] / m_by_n[1]
    if sparsity is not None and not (fraction("sparsity", sparsity) == implied):
        raise ValueError(
            f"`sparsity`={sparsity!r} conflicts with `sparsity_m_by_n`={sparsity_m_by_n!r}, which prunes "
            f"m/n = {implied:g} of every pruned kernel; pass sparsity=None (or {implied!r})."
        )
    return implied, block, m_by_n


def _io(shape):
    shape = tf.TensorShape(shape)
    if shape.rank is None or shape.rank < 2 or not shape.is_fully_defined():
        return None
    return int(shape[-2]), int(shape[-1])


def check_divisible(shape, rows: int, cols: int, what: str, name: str = "the variable"):
    """ValueError naming ``name`` unless ``shape`` has rank >= 2 with ``in % cols == 0`` and ``out % rows == 0``.

    ``what`` names the structure in the message (e.g. ``"`block_size`=(1, 4)"``).
    """
    io = _io(shape)
    if io is None or io[0] % cols or io[1] % rows:
        got = "a rank below 2" if io is None else f"in={io[0]}, out={io[1]}"
        raise ValueError(
            f"{what}: {name} of shape {tuple(tf.TensorShape(shape))} ({got}) does not split into groups of "
            f"{cols} consecutive inputs x {rows} output units (its axis -2 must be divisible by {cols} and axis -1 "
            f"by {rows}); leave it out with `layers=[...]` or pick a size that divides it."
        )


def block_count(shape, block_size) -> int:
    """Number of blocks of ``block_size = (r, c)`` in a variable of ``shape`` (divisible, see ``check_divisible``)."""
    r, c = block_size
    return int(np.prod(tf.TensorShape(shape).as_list())) // (r * c)


def _split(x, block_size):
    """``(..., in, out)`` -> ``(..., in/c, c, out/r, r)``."""
    r, c = block_size
    lead = x.shape[:-2].as_list()
    i, o = int(x.shape[-2]), int(x.shape[-1])
    return tf.reshape(x, lead + [i // c, c, o // r, r])


def block_scores(scores, block_size):
    """Per-block sums of ``scores`` ``(..., in, out)`` -> float64 ``(..., in/c, out/r)``.

    Summed in float64 (the ranking does not depend on the summation order in
    practice). ``block_size = (r, c)``: ``r`` output units x ``c`` inputs.
    """
    x = tf.cast(tf.convert_to_tensor(scores), tf.float64)
    return tf.reduce_sum(_split(x, block_size), axis=[-3, -1])


def block_any(mask, block_size):
    """Bool ``(..., in/c, out/r)``: True where any entry of the block is True in ``mask`` ``(..., in, out)``."""
    return tf.reduce_any(_split(tf.convert_to_tensor(mask), block_size), axis=[-3, -1])


def expand_blocks(block_mask, block_size, shape):
    """A mask over blocks ``(..., in/c, out/r)`` as a mask over entries of ``shape`` ``(..., in, out)``."""
    r, c = block_size
    m = tf.convert_to_tensor(block_mask)
    lead = m.shape[:-2].as_list()
    bi, bo = int(m.shape[-2]), int(m.shape[-1])
    m = tf.broadcast_to(m[..., :, None, :, None], lead + [bi, c, bo, r])
    return tf.reshape(m, tf.TensorShape(shape).as_list())


def _groups_last(x, n):
    """``(..., in, out)`` -> ``(..., out, in/n, n)``: groups of ``n`` consecutive inputs on the last axis."""
    rank = x.shape.rank
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    t = tf.transpose(x, perm)
    return tf.reshape(t, t.shape[:-1].as_list() + [int(t.shape[-1]) // n, n]), perm


def m_by_n_mask(scores, m_by_n):
    """Keep-mask (bool, the shape of ``scores`` ``(..., in, out)``): exactly ``m`` False per ``n`` consecutive inputs.

    In each group (one output unit, one leading position, ``n`` consecutive
    inputs) the ``n - m`` highest scores are kept, ties to the lowest input
    index; NaN ranks below ``-inf``. ``in`` must be divisible by ``n``.

    Examples:
        >>> import tensorflow as tf
        >>> m_by_n_mask(tf.constant([[4.0], [1.0], [3.0], [3.0]]), (2, 4)).numpy().ravel().tolist()
        [True, False, True, False]
    """
    m, n = m_by_n
    x = tf.convert_to_tensor(scores)
    check_divisible(x.shape, 1, n, f"`sparsity_m_by_n`={tuple(m_by_n)}", "the scores")
    groups, perm = _groups_last(sortable_key(x), n)
    _, idx = tf.math.top_k(groups, k=n - m, sorted=True)  # equal keys: the lower index first
    keep = tf.reduce_sum(tf.one_hot(idx, n, dtype=tf.int32), axis=-2) > 0
    keep = tf.reshape(keep, groups.shape[:-2].as_list() + [int(groups.shape[-2]) * n])
    return tf.transpose(keep, perm)  # perm swaps the last two axes: its own inverse


def is_m_by_n(weight, m_by_n) -> bool:
    """True when every group of ``n`` consecutive inputs of ``weight`` ``(..., in, out)`` holds at least ``m`` zeros.

    False as well when ``in`` is not divisible by ``n``.
    """
    m, n = m_by_n
    w = tf.convert_to_tensor(weight)
    io = _io(w.shape)
    if io is None or io[0] % n:
        return False
    groups, _ = _groups_last(w, n)
    zeros = tf.reduce_sum(tf.cast(tf.equal(groups, tf.zeros_like(groups)), tf.int32), axis=-1)
    return bool(tf.reduce_all(zeros >= m))
