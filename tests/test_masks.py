"""Contract of the one score -> mask function (``tf_selopt.core.masks.masks_from_scores``): every caller (the
optimizer's selection, ``calibrate``, ``prune`` unstructured / block / 2:4, the tfmot bridge's plan) given the
same scores gives the masks ``masks_from_scores`` gives, with exactly the requested count; plus its bad inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_selopt
from tf_selopt.core import criteria, selection
from tf_selopt.core.masks import Block, MByN, masks_from_scores
from tf_selopt.keras2.tfmot_bridge import global_magnitude_plan

pytestmark = pytest.mark.usefixtures("fresh_keras_names")

#: kernels (8, 8) and (8, 4), no biases: the trainable and the prunable variables are the same 96 entries
SHAPES = [(8, 8), (8, 4)]
N = 96
K = 37  # kept / selected entries


def tied_weights(seed=0):
    """Weights in {-1.5, -1, ..., 1.5}: |w| has 4 values over 96 entries, so nearly every cut falls in a tie."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(-3, 4, size=s) / 2).astype("float32") for s in SHAPES]


def keras3_model(weights):
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, use_bias=False), keras.layers.Dense(4, use_bias=False)]
    )
    model.set_weights(weights)
    return model


def by_selection(weights, criterion, seed):
    """The optimizer's first selection (learning rate 0, zero gradients: the weights do not move)."""
    model = keras3_model(weights)
    optimizer = tf_selopt.SelectiveOptimizer(
        keras.optimizers.SGD(0.0), criterion=criterion, keep=K, warmup_steps=1, window=1, seed=seed
    )
    variables = model.trainable_variables
    for _ in range(2):  # step 0 trains in full, step 1 selects
        optimizer.apply([tf.zeros_like(v) for v in variables], variables)
    return [m.numpy() for m in optimizer.masks]


def by_calibrate(weights, criterion, seed):
    model = keras3_model(weights)
    data = (np.zeros((4, 8), "float32"), np.zeros((4, 4), "float32"))
    return tf_selopt.calibrate(model, data, loss="mse", keep=K, criterion=criterion, seed=seed, batch_size=4)


def by_prune(weights, criterion, seed):
    model = keras3_model(weights)
    return list(tf_selopt.prune(model, (N - K) / N, criterion=criterion, seed=seed).values())


def reference_scores(weights, criterion, seed):
    values = [tf.constant(w) for w in weights]
    seeds = criteria.seeds(seed, len(values))
    return [criteria.get(criterion).score({}, v, tf.constant(0.0), s) for v, s in zip(values, seeds)]


def stable_top_k(weights, k):
    """numpy reference: the k largest |w| over the flat concatenation, ties to the lowest flat index."""
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    chosen = np.zeros(flat.size, bool)
    chosen[np.argsort(-flat, kind="stable")[:k]] = True
    return np.split(chosen, np.cumsum([w.size for w in weights])[:-1])


@pytest.mark.parametrize("criterion, seed", [("magnitude", 0), ("random", 5)])
@pytest.mark.parametrize("caller", [by_selection, by_calibrate, by_prune], ids=["selection", "calibrate", "prune"])
def test_every_caller_gives_the_shared_function_s_masks_exactly_k(caller, criterion, seed):
    weights = tied_weights()
    expected = [m.numpy() for m in masks_from_scores(reference_scores(weights, criterion, seed), K)]
    got = caller(weights, criterion, seed)
    assert sum(int(np.sum(m)) for m in got) == K
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(g).ravel(), e.ravel())
    if criterion == "magnitude":  # the tie rule: lowest flat index among equal scores
        for g, r in zip(got, stable_top_k(weights, K)):
            np.testing.assert_array_equal(np.asarray(g).ravel(), r)


def test_structured_pruning_gives_the_shared_function_s_masks():
    weights = tied_weights(1)
    scores = [tf.abs(tf.constant(w)) for w in weights]
    blocks = N // 2  # 48 blocks of (1, 2): prune 20, keep 28
    masks = tf_selopt.prune(keras3_model(weights), 20 / blocks, block_size=(1, 2))
    expected = masks_from_scores(scores, blocks - 20, granularity=Block(1, 2))
    for g, e in zip(masks.values(), expected):
        np.testing.assert_array_equal(g, e.numpy())
    assert sum(int((~m).sum()) for m in masks.values()) == 2 * 20
    masks = tf_selopt.prune(keras3_model(weights), None, sparsity_m_by_n=(2, 4))
    expected = masks_from_scores(scores, None, granularity=MByN(2, 4))
    for g, e in zip(masks.values(), expected):
        np.testing.assert_array_equal(g, e.numpy())
        assert int((~g).sum()) == g.size // 2  # 2 of every 4


def test_per_layer_pruning_and_its_floor_are_per_variable_counts():
    weights = tied_weights(2)
    scores = [tf.abs(tf.constant(w)) for w in weights]
    masks = tf_selopt.prune(keras3_model(weights), 0.95, scope="per_layer", min_kept_per_variable=4)
    counts = [max(n - selection.count_of(0.95, n), 4) for n in (64, 32)]  # 3 -> 4 and 2 -> 4
    expected = masks_from_scores(scores, counts, scope="per_variable")
    for g, e in zip(masks.values(), expected):
        np.testing.assert_array_equal(g, e.numpy())
    assert [int(m.sum()) for m in masks.values()] == [4, 4]


def test_tfmot_plan_counts_are_the_shared_function_s_with_a_floor_of_one():
    weights = tied_weights(3)
    weights[1][:] = 0.5  # the second kernel ties throughout and holds no large |w|: only the floor keeps one
    model = tf_keras.Sequential(
        [tf_keras.Input((8,)), tf_keras.layers.Dense(8, use_bias=False), tf_keras.layers.Dense(4, use_bias=False)]
    )
    model.set_weights(weights)
    keep = 12
    plan = global_magnitude_plan(model, (N - keep) / N)
    masks = masks_from_scores([tf.abs(tf.constant(w)) for w in weights], keep, floor=1)
    expected = [m.numpy().size - int(m.numpy().sum()) for m in masks]
    assert [p.pruned for p in plan.values()] == expected
    assert expected[1] == 31 and sum(expected) == N - keep


@pytest.mark.parametrize("floor, k", [(1, 6), (3, 8)])
def test_global_floor_is_exact_and_keeps_each_variable_s_best(floor, k):
    scores = [tf.constant([[0.0, 0.0], [0.0, 0.0]]), tf.constant([5.0, 1.0, 5.0]), tf.constant([9.0, 9.0])]
    kept = [None, tf.constant([True, True, False]), None]
    masks = [m.numpy().ravel() for m in masks_from_scores(scores, k, kept=kept, floor=floor)]
    assert sum(int(m.sum()) for m in masks) == k
    assert all(m[: min(floor, 2)].all() for m in masks)  # each variable's best kept ones (lowest index on ties)


def test_last_ranks_below_nan():
    scores = tf.constant([np.nan, 1.0, 2.0, -np.inf])
    mask = selection.top_k_mask(scores, 3, last=tf.constant([False, False, True, False]))
    np.testing.assert_array_equal(mask.numpy(), [True, True, False, True])


# --------------------------------------------------------------- bad inputs
TWO = [tf.ones([4, 4]), tf.ones([2, 4])]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(scope="per_layer"), ["`scope`", "'global', 'per_variable'"]),
        (dict(scope=None), ["`scope`", "'global', 'per_variable'"]),
        (dict(granularity="block"), ["`granularity`", "'parameter', 'unit', 'variable', Block(rows, cols)"]),
        (dict(granularity=(1, 4)), ["`granularity`", "Block(rows, cols), MByN(m, n)"]),
        (dict(granularity=Block(0, 4)), ["`granularity`", "Block: ints >= 1"]),
        (dict(granularity=MByN(4, 2), k=None), ["`granularity`", "1 <= m < n"]),
        (dict(granularity="variable", scope="per_variable"), ["`granularity`='variable'", "scope='global'"]),
        (dict(k=[2, 2]), ["`k` as a list", "scope='per_variable'"]),
        (dict(k=[2, 9], scope="per_variable"), ["`k` as a list", "[0, size]"]),
        (dict(k=25), ["`k`", "[0, 24]"]),
        (dict(granularity=MByN(2, 4)), ["`k` does not apply", "MByN"]),
        (dict(granularity="unit", floor=1), ["`floor`", "'parameter' and Block"]),
        (dict(floor=-1), ["`floor`", ">= 0"]),
        (dict(floor=7), ["`floor`=7 keeps 14", "more than the 4 kept"]),
        (dict(granularity=Block(1, 4), k=1), ["`granularity`=Block(rows=1, cols=4)", "scores[1]"]),
    ],
)
def test_masks_from_scores_bad_arguments(kwargs, words):
    args = dict(k=4) | kwargs
    with pytest.raises(ValueError) as info:
        masks_from_scores(TWO, args.pop("k"), **args)
    for word in words:
        assert word in str(info.value)
