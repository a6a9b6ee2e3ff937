"""Tests of tf_selopt.core.selection: exact-k masks, the tie rule, keys, counts."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tf_selopt.core import selection as selection_module
from tf_selopt.core.selection import count_of, per_variable_counts, resolve_count, select, sortable_key, top_k_mask

SCOPES = ("global", "per_variable")
SHAPES = [(3,), (2, 4), (2, 2, 3), (1,), (5,)]
# A small pool: many duplicates, plus the special values the tie rule must handle.
POOL = [-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 3.0, np.inf, -np.inf, np.nan]


def _ref_top_k(flat, k):
    """numpy reference: stable sort by (-score, flat index), NaN last, take the first k."""
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask


def ref_select(arrays, k, scope):
    """numpy reference of ``select``."""
    if scope == "per_variable":
        counts = per_variable_counts([a.size for a in arrays], k)
        return [_ref_top_k(a.ravel(), c).reshape(a.shape) for a, c in zip(arrays, counts)]
    flat = np.concatenate([a.ravel() for a in arrays])
    pieces = np.split(_ref_top_k(flat, k), np.cumsum([a.size for a in arrays])[:-1])
    return [p.reshape(a.shape) for p, a in zip(pieces, arrays)]


def assert_masks_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == tf.bool
        assert tuple(g.shape) == e.shape
        np.testing.assert_array_equal(g.numpy(), e)


@st.composite
def score_lists(draw):
    """1-3 float32 arrays (from the duplicate-heavy pool or any non-subnormal float32) and a k."""
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3))
    elements = draw(
        st.one_of(
            st.just(st.sampled_from(POOL)),
            st.just(st.floats(width=32, allow_subnormal=False)),
        )
    )
    arrays = [draw(hnp.arrays(np.float32, s, elements=elements)) for s in shapes]
    k = draw(st.integers(1, sum(a.size for a in arrays)))
    return arrays, k


@pytest.mark.parametrize("scope", SCOPES)
@settings(max_examples=80, deadline=None)
@given(case=score_lists())
def test_select_exact_k_matches_numpy_reference(scope, case):
    """Exactly k True in total, and the same set as the stable-sort reference."""
    arrays, k = case
    masks = select([tf.constant(a) for a in arrays], k, scope=scope)
    assert sum(int(m.numpy().sum()) for m in masks) == k
    assert_masks_equal(masks, ref_select(arrays, k, scope))


@pytest.mark.parametrize(
    "scope, expected",
    [
        ("global", [[[True, True], [True, False]], [False, False, False]]),
        # counts [2, 1]: quotas 12/7 and 9/7, the larger remainder goes to the first variable
        ("per_variable", [[[True, True], [False, False]], [True, False, False]]),
    ],
)
def test_all_equal_scores_select_first_flat_indices(scope, expected):
    masks = select([tf.fill([2, 2], 0.7), tf.fill([3], 0.7)], 3, scope=scope)
    assert_masks_equal(masks, [np.array(e) for e in expected])


@pytest.mark.parametrize("scope", SCOPES)
def test_k_equal_n_selects_all(scope):
    scores = [tf.constant([[np.nan, -np.inf], [0.0, 1.0]]), tf.constant([np.nan])]
    masks = select(scores, 5, scope=scope)
    assert all(m.numpy().all() for m in masks)


@pytest.mark.parametrize(
    "scores, k, expected",
    [
        ([1.0, 5.0, 5.0, 2.0], 1, [False, True, False, False]),  # k = 1: first of the tied maxima
        ([-3.0, -1.0, -2.0, -1.0], 2, [False, True, False, True]),  # negative scores
        ([-3.0, -1.0, -2.0, -1.0], 3, [False, True, True, True]),
        ([np.nan, -np.inf, np.nan], 1, [False, True, False]),  # NaN below -inf
        ([np.nan, -np.inf, np.nan], 2, [True, True, False]),  # ties among NaN: lowest index
        ([1.0, np.inf, 3.0e38, np.inf], 1, [False, True, False, False]),
        ([3.0e38, -np.inf, np.nan, 1.0], 2, [True, False, False, True]),
        ([-0.0, 0.0, -0.0], 2, [True, True, False]),  # -0.0 == +0.0
        ([0.0, -0.0], 1, [True, False]),
        ([-0.0, 0.0], 1, [True, False]),
        ([-1e-30, -0.0, 1e-30], 2, [False, True, True]),
    ],
)
def test_select_special_values(scores, k, expected):
    (mask,) = select([tf.constant(scores, tf.float32)], k)
    np.testing.assert_array_equal(mask.numpy(), expected)


def _run(mode, fn, *args):
    if mode == "eager":
        return fn(*args)
    return tf.function(fn, jit_compile=(mode == "jit"))(*args)


@pytest.mark.parametrize("mode", ["eager", "fn", "jit"])
def test_signed_zeros_tie_in_every_mode(mode):
    """-0.0 == +0.0 also when compiled: [0, -0, 0, -0] with k=2 keeps the first two."""
    x = tf.constant([0.0, -0.0, 0.0, -0.0])
    keys = _run(mode, sortable_key, x).numpy()
    (mask,) = _run(mode, lambda s: select([s], 2), x)
    assert len(set(keys.tolist())) == 1
    np.testing.assert_array_equal(mask.numpy(), [True, True, False, False])


@pytest.mark.parametrize("mode", ["eager", "fn", "jit"])
def test_subnormal_scores_are_ordered_in_every_mode(mode):
    """0 < 1e-40 < 2e-40 (subnormal float32) must stay ordered."""
    x = tf.constant([0.0, 1e-40, 2e-40], tf.float32)
    keys = _run(mode, sortable_key, x).numpy()
    (mask,) = _run(mode, lambda s: select([s], 1), x)
    assert keys[0] < keys[1] < keys[2]
    np.testing.assert_array_equal(mask.numpy(), [False, False, True])


def _pairwise_order(a):
    """sign(a[i] - a[j]) for all pairs, without overflow or inf - inf."""
    return (a[:, None] > a[None, :]).astype(int) - (a[:, None] < a[None, :]).astype(int)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(width=32, allow_nan=False, allow_subnormal=False), min_size=1, max_size=30))
def test_sortable_key_preserves_order(values):
    """For finite (non-subnormal) float32 a, b: sign(key(a) - key(b)) == sign(a - b)."""
    x = np.array(values, np.float32)
    keys = sortable_key(tf.constant(x))
    assert keys.dtype == tf.int64
    k = keys.numpy()
    assert ((k >= 0) & (k < 2**32)).all()
    np.testing.assert_array_equal(_pairwise_order(k), _pairwise_order(x))


def test_sortable_key_special_values():
    """NaN (either sign) < -inf < -max < -0.0 == +0.0 < min normal < max < inf."""
    f32 = np.finfo(np.float32)
    x = tf.constant([np.nan, -np.nan, -np.inf, -f32.max, -0.0, 0.0, f32.smallest_normal, f32.max, np.inf], tf.float32)
    k = sortable_key(x).numpy()
    assert k[0] == k[1] == 0
    assert k[4] == k[5]
    assert k[1] < k[2] < k[3] < k[4] and k[5] < k[6] < k[7] < k[8] < 2**32


@settings(max_examples=100, deadline=None)
@given(data=st.data(), sizes=st.lists(st.integers(1, 60), min_size=1, max_size=6))
def test_per_variable_counts_largest_remainder(data, sizes):
    """Sums to k, each count is floor or ceil of k*n_i/N (so <= n_i), larger remainders round up first."""
    total = sum(sizes)
    k = data.draw(st.integers(0, total))
    counts = per_variable_counts(sizes, k)
    assert sum(counts) == k
    for c, n in zip(counts, sizes):
        assert 0 <= c <= n
        assert abs(c * total - k * n) < total  # |c - k*n/N| < 1
    remainders = [k * n % total for n in sizes]
    up = [r for c, n, r in zip(counts, sizes, remainders) if c * total > k * n]
    down = [r for c, n, r in zip(counts, sizes, remainders) if c * total < k * n]
    assert not up or not down or min(up) >= max(down)


@pytest.mark.parametrize(
    "sizes, k, expected",
    [
        ([3, 7], 5, [2, 3]),  # remainders tie: the earlier variable rounds up
        ([1, 1, 1], 2, [1, 1, 0]),
        ([4, 3], 3, [2, 1]),
        ([10], 4, [4]),
        ([5, 5], 0, [0, 0]),
        ([2, 6], 8, [2, 6]),
    ],
)
def test_per_variable_counts_examples(sizes, k, expected):
    assert per_variable_counts(sizes, k) == expected


@pytest.mark.parametrize("k", [-1, 11])
def test_per_variable_counts_rejects_k_out_of_range(k):
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        per_variable_counts([4, 6], k)


@pytest.mark.parametrize(
    "keep, total, expected",
    [
        (0.5, 10, 5),
        (1.0, 10, 10),
        (1e-9, 10, 1),
        (0.25, 2, 1),  # 0.5 rounds half up
        (0.15, 10, 2),
        (0.04, 10, 1),  # 0.4 rounds down, then max(1, .)
        (1, 10, 1),
        (10, 10, 10),
        (np.int64(3), 10, 3),
        (np.float64(0.3), 10, 3),
    ],
)
def test_resolve_count_valid(keep, total, expected):
    got = resolve_count(keep, total)
    assert got == expected and type(got) is int


@pytest.mark.parametrize(
    "fraction, total, expected",
    [(0.5, 9, 5), (0.25, 2, 1), (0.04, 10, 0), (0.0, 3, 0), (1.0, 7, 7), (0.75, 40, 30), (0.8, 5, 4)],
)
def test_count_of_rounds_half_up(fraction, total, expected):
    """The one rounding rule: floor(s * N + 0.5), at most N; selection adds max(1, .) on top."""
    got = count_of(fraction, total)
    assert got == expected and type(got) is int


def test_count_of_is_the_only_rounding_rule():
    """No other module of the package writes ``floor(... + 0.5)`` itself (one home: ``count_of``)."""
    package = pathlib.Path(selection_module.__file__).parents[1]
    for path in package.rglob("*.py"):
        code = [line.split("#")[0] for line in path.read_text().splitlines() if not line.lstrip().startswith(">>>")]
        offending = [line for line in code if "math.floor(" in line and "0.5" in line]
        assert path.name == "selection.py" or not offending, f"{path}: {offending}"


@settings(max_examples=100, deadline=None)
@given(keep=st.floats(0.0, 1.0, exclude_min=True), total=st.integers(1, 10**7))
def test_resolve_count_fraction_property(keep, total):
    """A fraction gives an int in [1, N] within 0.5 of keep*N (or 1 when keep*N < 0.5)."""
    n = resolve_count(keep, total)
    assert 1 <= n <= total
    assert abs(n - keep * total) <= 0.5 + 1e-9 or (n == 1 and keep * total < 0.5)


@pytest.mark.parametrize(
    "keep, allowed",
    [
        (0, "[1, 10]"),
        (-1, "[1, 10]"),
        (11, "[1, 10]"),
        (1.5, "(0, 1]"),
        (0.0, "(0, 1]"),
        (-0.5, "(0, 1]"),
        (float("nan"), "(0, 1]"),
        (float("inf"), "(0, 1]"),
        (True, "(0, 1]"),
        (False, "[1, 10]"),
        ("0.1", "(0, 1]"),
        (None, "[1, 10]"),
    ],
)
def test_resolve_count_invalid(keep, allowed):
    """ValueError naming the argument (`keep`, or a custom name) and the allowed range."""
    for name in ("keep", "fraction"):
        kwargs = {} if name == "keep" else {"name": name}
        with pytest.raises(ValueError) as info:
            resolve_count(keep, 10, **kwargs)
        assert f"`{name}`" in str(info.value) and allowed in str(info.value)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: select([tf.ones([3])], 1, scope="layer"), "scope"),
        (lambda: top_k_mask(tf.ones([3]), 4), r"\[0, 3\]"),
        (lambda: top_k_mask(tf.ones([3]), -1), r"\[0, 3\]"),
    ],
)
def test_invalid_select_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_top_k_mask_k_zero_and_shape():
    scores = tf.constant([[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]])
    np.testing.assert_array_equal(top_k_mask(scores, 0).numpy(), np.zeros((2, 3), bool))
    np.testing.assert_array_equal(top_k_mask(scores, 2).numpy(), [[False, False, False], [True, True, False]])


@pytest.mark.parametrize(
    "shapes, k, scope",
    [
        ([(7,)], 3, "global"),
        ([(2, 4), (3,)], 5, "global"),
        ([(2, 2, 3), (5,), (1,)], 9, "per_variable"),
        ([(2, 4), (2, 2, 3)], 1, "per_variable"),
    ],
)
def test_select_under_xla_matches_eager(shapes, k, scope):
    """tf.function(jit_compile=True) gives the same masks as eager (and as numpy)."""
    rng = np.random.default_rng(len(shapes) * 100 + k)
    pool = np.array([-1.0, 0.0, 0.5, 2.0, np.inf, -np.inf, np.nan], np.float32)
    arrays = [rng.choice(pool, size=s) for s in shapes]
    scores = [tf.constant(a) for a in arrays]
    compiled = tf.function(lambda s: select(s, k, scope=scope), jit_compile=True)(scores)
    eager = select(scores, k, scope=scope)
    for c, e in zip(compiled, eager):
        np.testing.assert_array_equal(c.numpy(), e.numpy())
    assert_masks_equal(compiled, ref_select(arrays, k, scope))


@pytest.mark.parametrize("scope", SCOPES)
def test_select_large_against_argsort(scope):
    """N = 200_000 with many duplicates and some NaN, against the numpy argsort reference."""
    rng = np.random.default_rng(7)
    shapes = [(100_000,), (500, 150), (25, 40, 25)]
    arrays = [(rng.integers(0, 4000, size=s) * 0.25 - 500.0).astype(np.float32) for s in shapes]
    arrays[1][rng.random(arrays[1].shape) < 0.01] = np.nan
    k = 123_457
    masks = select([tf.constant(a) for a in arrays], k, scope=scope)
    assert sum(int(m.numpy().sum()) for m in masks) == k
    assert_masks_equal(masks, ref_select(arrays, k, scope))


def test_select_casts_non_float32_scores():
    """float64 / float16 scores are compared as float32; ties still go to the lowest flat index."""
    scores = [tf.constant([1.0, 3.0], tf.float64), tf.constant([2.0, 3.0], tf.float16)]
    masks = select(scores, 2)
    assert_masks_equal(masks, [np.array([False, True]), np.array([False, True])])


def _old_int64_key(x):
    """numpy model of the int64 key: NaN -> 0, -0.0 -> +0.0, negatives reversed, shifted by 2**31."""
    bits = x.view(np.int32).astype(np.int64)
    bits = np.where(bits == -(2**31), 0, bits)
    keys = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31
    return np.where(np.isnan(x), 0, keys)


def _random_bit_floats(n, seed):
    """float32 from random bit patterns (every NaN payload, subnormal, sign) plus the special values."""
    rng = np.random.default_rng(seed)
    f32 = np.finfo(np.float32)
    special = np.array(
        [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, f32.max, -f32.max, f32.smallest_normal, 1e-45, -1e-45, 1e-40],
        np.float32,
    )
    bits = rng.integers(-(2**31), 2**31, n, dtype=np.int64).astype(np.int32)
    return np.concatenate([special, bits.view(np.float32), rng.choice(special, n)])


@pytest.mark.parametrize("mode", ["eager", "fn", "jit"])
def test_int32_key_matches_int64_key_on_all_bit_patterns(mode):
    """The int32 key of top_k_mask is the int64 key minus 2**31 (NaN -> INT32_MIN), in every mode."""
    from tf_selopt.core.selection import _sortable_key32

    x = _random_bit_floats(5000, 1)
    k32 = _run(mode, _sortable_key32, tf.constant(x)).numpy()
    k64 = _run(mode, sortable_key, tf.constant(x)).numpy()
    assert k32.dtype == np.int32
    np.testing.assert_array_equal(k64, _old_int64_key(x))
    np.testing.assert_array_equal(k32.astype(np.int64) + 2**31, k64)


@pytest.mark.parametrize("mode", ["eager", "fn", "jit"])
@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_mask_on_all_bit_patterns_matches_reference(mode, seed):
    """Subnormals stay distinct, NaN last, signed zeros tie, lowest index first: same as the stable sort."""
    x = _random_bit_floats(3000, seed)
    for k in (1, 7, 12, x.size // 3, x.size // 2, x.size - 5, x.size - 1):
        mask = _run(mode, lambda s, k=k: top_k_mask(s, k), tf.constant(x)).numpy()
        np.testing.assert_array_equal(mask, _ref_top_k(x, k))


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("value", [np.nan, -np.inf, np.inf, -0.0, 0.0, -np.finfo(np.float32).max, 1e-45])
def test_top_k_mask_constant_scores_at_key_extremes(mode, value):
    """All-equal scores at the ends of the key range (NaN = INT32_MIN, +-inf): the first k win."""
    x = np.full(10, value, np.float32)
    for k in (1, 4, 9):
        mask = _run(mode, lambda s, k=k: top_k_mask(s, k), tf.constant(x)).numpy()
        np.testing.assert_array_equal(mask, np.arange(10) < k)
