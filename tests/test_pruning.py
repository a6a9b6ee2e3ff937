"""Tests of tf_selopt.pruning: prunable weights, exact counts, exact zeros, references, errors."""

import doctest
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODEL_KINDS, make_model
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_selopt import criteria, pruning
from tf_selopt.pruning import prunable_variables, prune

SPARSITIES = [0.0, 0.1, 0.3, 0.5, 0.77, 0.95]


def expected_prunable(kind, model):
    """The variables that must be prunable in conftest's models, in model.weights order."""
    if kind == "sequential":
        return [model.layers[0].kernel, model.layers[2].kernel]  # Dense, (BatchNorm), Dense
    if kind == "functional":
        conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
        dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
        return [conv.kernel, dense.kernel]
    return [model.embed.embeddings, model.head.kernel]


def snapshot(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def num_kept(sparsity, n):
    return n - math.floor(sparsity * n + 0.5)


def ref_top(scores_list, k):
    """numpy reference with selection.py's tie rule: stable sort by -score over the flat index."""
    flat = np.concatenate([s.ravel() for s in scores_list])
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    pieces = np.split(keep, np.cumsum([s.size for s in scores_list])[:-1])
    return [p.reshape(s.shape) for p, s in zip(pieces, scores_list)]


def with_ties(model, seed=0):
    """Set prunable weights to a few distinct magnitudes with both signs: many ties across layers."""
    rng = np.random.default_rng(seed)
    for v in prunable_variables(model):
        v.assign(rng.choice([-0.3, -0.2, -0.1, 0.1, 0.2, 0.3, 0.25], size=v.shape).astype("float32"))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_prunable_variables_are_kernels_and_embeddings_only(kind):
    model = make_model(kind)
    variables = prunable_variables(model)
    expected = expected_prunable(kind, model)
    assert len(variables) == len(expected) and all(v is e for v, e in zip(variables, expected))
    names = " ".join(v.path for v in variables)
    assert "bias" not in names and "gamma" not in names and "moving" not in names


def test_other_kernel_layers_are_prunable():
    inputs = keras.Input((8, 8, 2))
    h = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    h = keras.layers.Conv2D(3, 1, name="conv")(h)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.Reshape((36, 3))(h)
    h = keras.layers.Conv1D(2, 3, name="c1")(h)
    h = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 4), bias_axes="d", name="ein")(h)
    model = keras.Model(inputs, h)
    paths = [v.path for v in prunable_variables(model)]
    assert paths == ["dw/kernel", "conv/kernel", "c1/kernel", "ein/kernel"]


@pytest.mark.parametrize("scope", ["global", "per_layer"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_exact_counts_zeros_and_untouched_weights(kind, scope):
    model = make_model(kind)
    prunable = {v.path for v in prunable_variables(model)}
    for sparsity in SPARSITIES:
        before = snapshot(model)
        masks = prune(model, sparsity, scope=scope)
        after = snapshot(model)
        assert list(masks) == [v.path for v in prunable_variables(model)]
        sizes = {p: before[p].size for p in prunable}
        if scope == "global":
            assert sum(int(m.sum()) for m in masks.values()) == num_kept(sparsity, sum(sizes.values()))
        else:
            assert {p: int(m.sum()) for p, m in masks.items()} == {p: num_kept(sparsity, n) for p, n in sizes.items()}
        for path, value in after.items():
            if path in masks:
                m = masks[path]
                assert m.dtype == bool and m.shape == value.shape
                assert np.all(bits(value[~m]) == 0)  # exactly +0.0
                np.testing.assert_array_equal(bits(value[m]), bits(before[path][m]))
            else:  # biases, BatchNorm parameters and statistics
                np.testing.assert_array_equal(bits(value), bits(before[path]))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_global_magnitude_matches_numpy_reference_with_ties(kind):
    model = make_model(kind)
    with_ties(model)
    weights = [v.numpy() for v in prunable_variables(model)]
    total = sum(w.size for w in weights)
    for sparsity in (0.25, 0.5, 0.8):
        model_copy = make_model(kind)
        with_ties(model_copy)
        masks = prune(model_copy, sparsity, scope="global")
        expected = ref_top([np.abs(w) for w in weights], num_kept(sparsity, total))
        for got, exp in zip(masks.values(), expected):
            np.testing.assert_array_equal(got, exp)
    # Global ranks across layers, not evenly per layer: large conv weights all survive 50%.
    if kind == "functional":
        model = make_model(kind)
        conv, dense = prunable_variables(model)
        w = conv.numpy()
        conv.assign(np.where(w >= 0, w + 10.0, w - 10.0))  # every conv |w| above every Dense |w|
        masks = prune(model, 0.5)
        assert masks[conv.path].all()  # every large conv weight survives


def test_per_layer_matches_numpy_reference_with_ties():
    model = make_model("functional")
    with_ties(model, seed=3)
    weights = [v.numpy() for v in prunable_variables(model)]
    masks = prune(model, 0.6, scope="per_layer")
    for got, w in zip(masks.values(), weights):
        np.testing.assert_array_equal(got, ref_top([np.abs(w)], num_kept(0.6, w.size))[0])


def test_random_criterion_is_seeded_and_exact():
    masks = [prune(make_model("sequential"), 0.5, criterion="random", seed=s) for s in (7, 7, 8)]
    for a, b in zip(masks[0].values(), masks[1].values()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(masks[0].values(), masks[2].values()))
    # Reference: the criterion's own scores with seed [seed, variable index], global top-k.
    model = make_model("sequential")
    weights = [v.numpy() for v in prunable_variables(model)]
    scores = [
        criteria.Random().score({}, tf.constant(w), tf.constant(0.0), tf.constant([7, i], tf.int32)).numpy()
        for i, w in enumerate(weights)
    ]
    expected = ref_top(scores, num_kept(0.5, sum(w.size for w in weights)))
    for got, exp in zip(masks[0].values(), expected):
        np.testing.assert_array_equal(got, exp)
    # Random is not magnitude: the masks differ from the magnitude masks.
    magnitude = prune(make_model("sequential"), 0.5)
    assert any(not np.array_equal(a, b) for a, b in zip(masks[0].values(), magnitude.values()))


def test_criterion_object_without_gradients_is_used():
    class Smallest:
        """Keeps the smallest |w| (a score with only `score`)."""

        def score(self, state, weight, count, seed):
            assert state == {}
            return -tf.abs(weight)

    model = make_model("sequential")
    weights = [v.numpy() for v in prunable_variables(model)]
    masks = prune(model, 0.75, criterion=Smallest())
    expected = ref_top([-np.abs(w) for w in weights], num_kept(0.75, sum(w.size for w in weights)))
    for got, exp in zip(masks.values(), expected):
        np.testing.assert_array_equal(got, exp)
    masks = prune(make_model("sequential"), 0.75, criterion=criteria.Magnitude())
    assert sum(int(m.sum()) for m in masks.values()) == num_kept(0.75, 72)


def test_layers_restricts_pruning():
    model = make_model("sequential")
    first, second = prunable_variables(model)
    layer_name = first.path.split("/")[-2]
    assert [v.path for v in prunable_variables(model, [layer_name])] == [first.path]
    before = snapshot(model)
    masks = prune(model, 0.5, layers=[layer_name])
    assert list(masks) == [first.path]
    assert int(masks[first.path].sum()) == num_kept(0.5, 48)
    np.testing.assert_array_equal(bits(second.numpy()), bits(before[second.path]))
    assert int((first.numpy() == 0).sum()) == 24


def test_nested_model_layers_are_found():
    inner = make_model("sequential")
    outer = keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(2, name="top")])
    expected = prunable_variables(inner) + [outer.get_layer("top").kernel]
    got = prunable_variables(outer)
    assert len(got) == 3 and all(g is e for g, e in zip(got, expected))


@given(sparsity=st.floats(0.0, 1.0, exclude_max=True), scope=st.sampled_from(["global", "per_layer"]))
@settings(max_examples=30, deadline=None)
def test_property_exact_count_for_any_sparsity(sparsity, scope):
    model = _PROPERTY_MODEL
    model.set_weights(_PROPERTY_WEIGHTS)
    masks = prune(model, sparsity, scope=scope)
    sizes = [m.size for m in masks.values()]
    if scope == "global":
        assert sum(int(m.sum()) for m in masks.values()) == num_kept(sparsity, sum(sizes))
    else:
        assert [int(m.sum()) for m in masks.values()] == [num_kept(sparsity, n) for n in sizes]
    zeros = sum(int((v.numpy() == 0).sum()) for v in prunable_variables(model))
    assert zeros == sum(int((~m).sum()) for m in masks.values())  # no initial weight is exactly 0


_PROPERTY_MODEL = make_model("functional", seed=5)
_PROPERTY_WEIGHTS = _PROPERTY_MODEL.get_weights()


BAD = [
    (dict(sparsity=1.0), "sparsity"),
    (dict(sparsity=-0.01), "sparsity"),
    (dict(sparsity=float("nan")), "sparsity"),
    (dict(sparsity=True), "sparsity"),
    (dict(sparsity="0.5"), "sparsity"),
    (dict(sparsity=0.5, scope="per_variable"), "scope"),
    (dict(sparsity=0.5, criterion="gradient_sum"), "gradient"),
    (dict(sparsity=0.5, criterion="preconditioned"), "gradient"),
    (dict(sparsity=0.5, criterion=criteria.GradientSum()), "uses_gradients"),
    (dict(sparsity=0.5, criterion=criteria.Magnitude), "criterion"),
    (dict(sparsity=0.5, criterion="largest"), "criterion"),
    (dict(sparsity=0.5, criterion=None), "criterion"),
    (dict(sparsity=0.5, layers=["nope"]), "'nope' is not a layer"),
    (dict(sparsity=0.5, layers=["batch_normalization"]), "no prunable weights"),
    (dict(sparsity=0.5, layers="dense"), "layers"),
    (dict(sparsity=0.5, layers=[]), "layers"),
    (dict(sparsity=0.5, seed=-1), "seed"),
    (dict(sparsity=0.5, seed=2**31), "seed"),
    (dict(sparsity=0.5, seed=1.5), "seed"),
]


@pytest.mark.parametrize("kwargs,message", BAD)
def test_bad_inputs_raise_before_any_weight_changes(kwargs, message):
    model = make_model("sequential")
    if kwargs.get("layers") == ["batch_normalization"]:
        kwargs = dict(kwargs, layers=[model.layers[1].name])
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        prune(model, **kwargs)
    after = snapshot(model)
    for path in before:
        np.testing.assert_array_equal(bits(after[path]), bits(before[path]))


def test_unknown_layer_error_lists_valid_names():
    model = make_model("sequential")
    valid = sorted(v.path.split("/")[-2] for v in prunable_variables(model))
    with pytest.raises(ValueError) as info:
        prunable_variables(model, ["nope"])
    assert str(valid) in str(info.value)


def test_bad_criterion_shape_raises_before_any_weight_changes():
    class Scalar:
        def score(self, state, weight, count, seed):
            return tf.reduce_sum(weight)

    model = make_model("sequential")
    before = snapshot(model)
    with pytest.raises(ValueError, match="shape"):
        prune(model, 0.5, criterion=Scalar())
    for path, value in snapshot(model).items():
        np.testing.assert_array_equal(bits(value), bits(before[path]))


def test_nothing_prunable_raises():
    only_norm = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="no prunable weights"):
        prune(only_norm, 0.5)
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="built"):
        prunable_variables(unbuilt)


def test_pruned_model_still_predicts_and_zero_sparsity_is_identity():
    model = make_model("functional")
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 1)).astype("float32")
    before = snapshot(model)
    y0 = model(x, training=False).numpy()
    masks = prune(model, 0.0)
    assert all(m.all() for m in masks.values())
    for path, value in snapshot(model).items():
        np.testing.assert_array_equal(bits(value), bits(before[path]))
    np.testing.assert_array_equal(model(x, training=False).numpy(), y0)
    prune(model, 0.9)
    y1 = model(x, training=False).numpy()
    assert np.all(np.isfinite(y1)) and not np.allclose(y1, y0)


def test_docstring_examples_run():
    result = doctest.testmod(pruning)
    assert result.attempted > 0 and result.failed == 0
