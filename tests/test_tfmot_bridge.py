"""Tests of tf_selopt.keras2.tfmot_bridge: global plan vs numpy, tfmot's rounding, fit reaches the plan, errors."""

import glob
import math
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from conftest import docstring_examples

from tf_selopt.keras2 import tfmot_bridge
from tf_selopt.keras2.tfmot_bridge import global_magnitude_plan, prune_low_magnitude_global, pruning_callbacks

from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl  # isort: skip
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils  # isort: skip
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # isort: skip

tfmot = tfmot_bridge.tfmot
L = tf_keras.layers


def make_mlp(seed=0):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential(
        [
            tf_keras.Input((12,)),
            L.Dense(16, activation="relu", name="d1"),
            L.BatchNormalization(name="bn"),
            L.Dense(10, activation="relu", name="d2"),
            L.Dense(3, name="d3"),
        ]
    )  # kernels 192, 160, 30: N = 382


def make_cnn(seed=0):
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    h = L.Conv2D(6, 3, activation="relu", name="c2")(h)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Flatten(name="flat")(h)
    return tf_keras.Model(inputs, L.Dense(3, name="head")(h))  # kernels 36, 216, 72: N = 324


MODELS = {"mlp": (make_mlp, ["d1", "d2", "d3"], (12,)), "cnn": (make_cnn, ["c1", "c2", "head"], (8, 8, 1))}


def data(kind, n=64, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *MODELS[kind][2])).astype("float32")
    return x, rng.integers(0, 3, size=n).astype("int32")


def kernels(model, names):
    return [np.array(model.get_layer(n).kernel.numpy()) for n in names]


def reference_pruned(weights, sparsity, keep_one=True):
    """numpy: global top-k of |w| (stable: lowest flat index first on ties) -> pruned count per tensor.

    ``keep_one``: each tensor's largest |w| (first on ties) is always kept, as tfmot must.
    """
    scores = []
    for w in weights:
        score = np.abs(w).astype(np.float64).ravel()
        if keep_one:
            score[np.argmax(score)] = np.inf
        scores.append(score)
    flat = np.concatenate(scores)
    keep_count = flat.size - math.floor(sparsity * flat.size + 0.5)
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:keep_count]] = True
    pieces = np.split(keep, np.cumsum([w.size for w in weights])[:-1])
    return [int((~p).sum()) for p in pieces]


def tfmot_mask_zeros(weight, sparsity):
    """Zeros of the mask tfmot's own code computes for ``weight`` at ``sparsity``."""
    impl = pruning_impl.Pruning(
        training_step_fn=lambda: tf.constant(1, tf.int64),
        pruning_vars=[],
        pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(sparsity, 0),
        block_size=(1, 1),
        block_pooling_type="AVG",
    )
    _, mask = impl._update_mask(tf.constant(weight))
    return int((mask.numpy() == 0).sum())


# ---------------------------------------------------------------- the plan


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_plan_matches_numpy_reference_and_tfmot_rounding(kind, sparsity):
    make, names, _ = MODELS[kind]
    model = make()
    weights = kernels(model, names)
    plan = global_magnitude_plan(model, sparsity)
    assert list(plan) == names  # every prunable layer, in layer order; nothing else (BatchNorm, pooling)
    expected = reference_pruned(weights, sparsity)
    assert [plan[n].pruned for n in names] == expected
    assert [plan[n].size for n in names] == [w.size for w in weights]
    total = sum(w.size for w in weights)
    assert sum(expected) == math.floor(sparsity * total + 0.5)
    for name, w in zip(names, weights):
        assert 0.0 <= plan[name].sparsity < 1.0
        # tfmot's own mask computation at the layer's float gives exactly the planned count.
        assert tfmot_mask_zeros(w, plan[name].sparsity) == plan[name].pruned, name
    np.testing.assert_array_equal(kernels(model, names)[0], weights[0])  # nothing changed


def test_plan_ties_go_to_the_lowest_flat_index():
    model = make_mlp()
    rng = np.random.default_rng(3)
    for name in ("d1", "d2", "d3"):
        kernel = model.get_layer(name).kernel
        kernel.assign(rng.choice([-0.3, -0.2, 0.1, 0.2, 0.3], size=kernel.shape).astype("float32"))
    weights = kernels(model, ["d1", "d2", "d3"])
    for sparsity in (0.25, 0.5, 0.6, 0.9):
        plan = global_magnitude_plan(model, sparsity)
        assert [p.pruned for p in plan.values()] == reference_pruned(weights, sparsity), sparsity


def test_plan_keeps_one_weight_per_tensor_as_tfmot_must():
    model = make_mlp()
    d3 = model.get_layer("d3").kernel
    d3.assign(np.linspace(1e-4, 2e-4, 30).reshape(3, 10).T.reshape(d3.shape).astype("float32"))
    weights = kernels(model, ["d1", "d2", "d3"])
    sparsity = 0.9  # 382 weights: 344 pruned, 38 kept; the plain global top-k keeps nothing of d3
    assert reference_pruned(weights, sparsity, keep_one=False)[2] == 30
    plan = global_magnitude_plan(model, sparsity)
    assert plan["d3"].pruned == 29  # its largest |w| is kept ...
    assert sum(p.pruned for p in plan.values()) == 344  # ... and the total stays exact
    assert [p.pruned for p in plan.values()] == reference_pruned(weights, sparsity)
    # the rest is the global top-37 of d1 and d2
    flat = np.abs(np.concatenate([weights[0].ravel(), weights[1].ravel()]))
    kept = np.argsort(-flat, kind="stable")[:37]
    assert plan["d1"].pruned == 192 - int((kept < 192).sum())
    assert tfmot_mask_zeros(weights[2], plan["d3"].sparsity) == 29


def test_layers_restricts_the_plan():
    model = make_cnn()
    plan = global_magnitude_plan(model, 0.5, layers=["c2", "head"])
    assert list(plan) == ["c2", "head"]
    assert [p.pruned for p in plan.values()] == reference_pruned(kernels(model, ["c2", "head"]), 0.5)
    assert sum(p.pruned for p in plan.values()) == 144  # floor(0.5 * 288 + 0.5)


def test_rounding_emulation_equals_tensorflow_and_search_reaches_every_count():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([np.arange(1, 300), rng.integers(300, 2**24, 700), [2**22, 2**24 - 1, 2**24]])
    sparsities = rng.uniform(0, 1, sizes.size).astype(np.float32)
    # tfmot's formula (pruning_impl.Pruning._update_mask) in TensorFlow, vectorized
    ref = tf.cast(tf.maximum(tf.round(tf.cast(sizes, tf.float32) * (1 - tf.constant(sparsities))), 1), tf.int64).numpy()
    got = [tfmot_bridge._tfmot_kept(int(n), s) for n, s in zip(sizes, sparsities)]
    np.testing.assert_array_equal(got, ref)
    # Every count of a tensor below 2**22 weights is reachable: all of them for small tensors ...
    for n in range(1, 160):
        for pruned in range(n):
            assert tfmot_bridge._layer_sparsity([n], pruned) == (pruned / n, pruned)
    # ... sampled for large ones, where pruned / n is not always the float that works.
    misses_of_natural = 0
    for n in [100_003, 2_999_999, 2**22 - 1, 2**22 + 5, 9_437_184, 2**24 - 1]:
        for pruned in sorted({0, 1, n // 3, n // 2, n - 2, n - 1} | set(rng.integers(0, n, 40).tolist())):
            s, reached = tfmot_bridge._layer_sparsity([n], pruned)
            assert 0.0 <= s < 1.0
            k = tf.maximum(tf.round(tf.cast(n, tf.float32) * (1 - tf.constant(s, tf.float32))), 1)
            assert int(k) == n - reached, (n, pruned, s)  # the reported count is what TensorFlow computes
            # above 2**22 kept weights float32 steps by 0.5 and rounds half to even: off by one at most
            assert reached == pruned if n - pruned < 2**22 else abs(reached - pruned) <= 1, (n, pruned)
            misses_of_natural += tfmot_bridge._tfmot_kept(n, pruned / n) != n - pruned
    assert misses_of_natural > 0  # the bisection was needed somewhere


def test_several_tensors_in_one_layer_get_the_nearest_count_with_a_warning():
    # two equal tensors always round alike: an odd total is out of reach
    s, reached = tfmot_bridge._layer_sparsity([10, 10], 4)
    assert reached == 4 and s == 0.2
    with pytest.warns(UserWarning, match="closest it can reach"):
        model = tf_keras.Sequential([tf_keras.Input((3, 2)), L.SimpleRNN(2, name="rnn")])
        plan = global_magnitude_plan(model, 0.375)  # kernel 4 + recurrent 4 = 8: 3 pruned, but 2 * round(.)
    assert plan["rnn"].size == 8 and abs(plan["rnn"].pruned - 3) == 1


def test_plan_agrees_with_tfmot_on_every_kind_of_prunable_layer():
    """Embedding, RNNs (2 tensors), MultiHeadAttention (4), SeparableConv (pointwise only), Conv, Dense."""
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((6,), dtype="int32")
    h = L.Embedding(20, 8, name="emb")(inputs)
    h = L.LSTM(4, return_sequences=True, name="lstm")(h)
    h = L.MultiHeadAttention(num_heads=2, key_dim=2, name="mha")(h, h)
    h = L.SeparableConv1D(4, 2, name="sep")(h)
    h = L.Conv1D(3, 2, name="conv")(h)
    h = L.GRU(3, name="gru")(h)
    model = tf_keras.Model(inputs, L.Dense(2, name="dense")(h))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # (inside, prune_low_magnitude_global checks that each wrapper masks exactly the planned tensors)
        pruned_model, plan = prune_low_magnitude_global(model, 0.5, "constant", end_step=-1, frequency=1)
    assert list(plan) == ["emb", "lstm", "mha", "sep", "conv", "gru", "dense"]
    sizes = {
        "emb": 160,
        "lstm": 8 * 16 + 4 * 16,
        "mha": 4 * 16,
        "sep": 4 * 4,
        "conv": 24,
        "gru": 3 * 9 + 3 * 9,
        "dense": 6,
    }
    assert {n: p.size for n, p in plan.items()} == sizes
    for warning in caught:  # only layers with several tensors can miss their count
        assert "'mha'" in str(warning.message) or "'lstm'" in str(warning.message) or "'gru'" in str(warning.message)
    assert abs(sum(p.pruned for p in plan.values()) - math.floor(0.5 * 516 + 0.5)) <= 3
    pruned_model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).integers(0, 20, (16, 6))
    pruned_model.fit(x, np.zeros((16, 2)), batch_size=8, verbose=0, callbacks=pruning_callbacks())
    for layer in pruned_model.layers:
        if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
            zeros = sum(int((w.numpy() == 0).sum()) for w, _, _ in layer.pruning_vars)
            assert zeros == plan[layer.layer.name].pruned, layer.layer.name


def test_tfmot_keeps_more_than_k_on_ties():
    """Documents tfmot's tie behaviour (pruning_impl): everything >= the k-th largest |w| is kept."""
    w = np.array([3.0, -2.0, 2.0, 2.0, 1.0], np.float32)
    assert tfmot_mask_zeros(w, 0.6) == 1  # k = 2 but the three 2's tie: 4 kept, 1 zero instead of 3
    w = np.array([3.0, 0.0, 0.0, 0.0, 1.0], np.float32)
    assert tfmot_mask_zeros(w, 0.2) == 0  # k-th largest is 0: the mask keeps every weight
    w = np.array([3.0, -2.5, 2.0, 1.5, 1.0], np.float32)
    assert tfmot_mask_zeros(w, 0.6) == 3  # no ties: exact


# ---------------------------------------------------------------- training with tfmot


# Each model kind (Dense, Conv2D kernels) once and each schedule once: the plan is per layer whatever the kind, the
# schedule only sets when tfmot's wrappers reach it (test_polynomial_total_follows_the_global_curve: the curve).
@pytest.mark.parametrize("kind, schedule", [("mlp", "constant"), ("cnn", "polynomial")])
def test_fit_with_callbacks_and_strip_reaches_the_plan(kind, schedule, tmp_path):
    make, names, _ = MODELS[kind]
    model = make()
    sparsity = 0.7
    pruned_model, plan = prune_low_magnitude_global(
        model, sparsity, schedule, begin_step=2, end_step=14, frequency=4, initial_sparsity=0.2
    )
    assert plan == global_magnitude_plan(model, sparsity)
    wrappers = [layer for layer in pruned_model.layers if isinstance(layer, pruning_wrapper.PruneLowMagnitude)]
    assert [w.layer.name for w in wrappers] == names
    for w in wrappers:
        schedule_obj = w.pruning_schedule
        final = schedule_obj.target_sparsity if schedule == "constant" else schedule_obj.final_sparsity
        assert final == plan[w.layer.name].sparsity
    pruned_model.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x, y = data(kind)
    log_dir = tmp_path / "logs"
    # 64 / 8 = 8 steps per epoch, 3 epochs = 24 steps > end_step
    pruned_model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=pruning_callbacks(log_dir))
    assert glob.glob(str(log_dir / "metrics" / "events.out.tfevents.*"))
    final_model = tfmot_bridge.strip_pruning(pruned_model)
    assert not any(isinstance(layer, pruning_wrapper.PruneLowMagnitude) for layer in final_model.layers)
    zeros = {n: int((final_model.get_layer(n).kernel.numpy() == 0).sum()) for n in names}
    assert zeros == {n: plan[n].pruned for n in names}
    total = sum(plan[n].size for n in names)
    assert sum(zeros.values()) == math.floor(sparsity * total + 0.5)
    assert all(plan[n].pruned > 0 for n in names)
    assert final_model.predict(x[:4], verbose=0).shape == (4, 3)


def test_polynomial_total_follows_the_global_curve(tmp_path):
    model = make_mlp()
    pruned_model, plan = prune_low_magnitude_global(
        model, 0.8, "polynomial", begin_step=0, end_step=16, frequency=8, initial_sparsity=0.4, power=1
    )
    pruned_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = data("mlp")
    # 8 steps: one pruning step (step 8, halfway): every layer at 0.5 of the way from 0.4 to 0.8 of its target
    pruned_model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=pruning_callbacks())
    zeros = sum(int((pruned_model.get_layer(f"prune_low_magnitude_{n}").layer.kernel.numpy() == 0).sum()) for n in plan)
    assert abs(zeros / 382 - 0.6) < 0.01


def test_nested_model_is_planned_and_wrapped():
    tf_keras.utils.set_random_seed(0)
    inner = tf_keras.Sequential([tf_keras.Input((5,)), L.Dense(6, name="inner_dense")], name="inner")
    model = tf_keras.Sequential([tf_keras.Input((5,)), inner, L.Dense(2, name="outer_dense")])
    pruned_model, plan = prune_low_magnitude_global(model, 0.5, "constant", end_step=-1, frequency=1)
    assert list(plan) == ["inner_dense", "outer_dense"] and sum(p.pruned for p in plan.values()) == 21
    inner_clone = pruned_model.layers[0]
    assert isinstance(inner_clone.layers[0], pruning_wrapper.PruneLowMagnitude)
    assert isinstance(pruned_model.layers[1], pruning_wrapper.PruneLowMagnitude)


def test_zero_target_layers_stay_unwrapped():
    model = make_mlp()
    pruned_model, plan = prune_low_magnitude_global(model, 0.5, "constant", end_step=-1, layers=["d2"])
    assert list(plan) == ["d2"]
    kinds = {layer.name: type(layer).__name__ for layer in pruned_model.layers}
    assert kinds == {
        "d1": "Dense",
        "bn": "BatchNormalization",
        "prune_low_magnitude_d2": "PruneLowMagnitude",
        "d3": "Dense",
    }
    pruned_model, plan = prune_low_magnitude_global(model, 0.0, "constant", end_step=-1)
    assert all(p.pruned == 0 for p in plan.values())
    assert not any(isinstance(layer, pruning_wrapper.PruneLowMagnitude) for layer in pruned_model.layers)


# ---------------------------------------------------------------- bad inputs

BAD = [
    (dict(sparsity=1.0), "`sparsity`"),
    (dict(sparsity=-0.1), "`sparsity`"),
    (dict(sparsity=float("nan")), "`sparsity`"),
    (dict(sparsity=True), "`sparsity`"),
    (dict(sparsity="0.5"), "`sparsity`"),
    (dict(sparsity=0.999), "`sparsity`"),  # would leave a tensor empty: tfmot keeps >= 1 per tensor
    (dict(schedule="cubic"), "`schedule`"),
    (dict(end_step=10, begin_step=10), "`end_step`"),  # polynomial needs end > begin
    (dict(end_step=5, begin_step=10), "`end_step`"),
    (dict(end_step=150, frequency=100), "`end_step`"),  # 150 is not a pruning step: final never applied
    (dict(end_step=20.0), "`end_step`"),
    (dict(end_step=None), "`end_step` must be an int"),  # required without sparsity_m_by_n
    (dict(schedule="constant", end_step=5, begin_step=10), "`end_step`"),
    (dict(schedule="constant", end_step=0, begin_step=0), "`end_step`"),  # never prunes (steps start at 1)
    (dict(schedule="constant", end_step=-2), "`end_step`"),
    (dict(begin_step=-1), "`begin_step`"),
    (dict(frequency=0), "`frequency`"),
    (dict(frequency=2.0), "`frequency`"),
    (dict(initial_sparsity=0.6), "`initial_sparsity`"),  # above sparsity=0.5
    (dict(power=0), "`power`"),
    (dict(layers=["nope"]), "is not a layer of the model"),
    (dict(layers=["bn"]), "has no weights tfmot can prune"),
    (dict(layers="d1"), "`layers`"),
    (dict(layers=[]), "`layers`"),
]


@pytest.mark.parametrize("kwargs,message", BAD)
def test_bad_inputs_raise_before_anything_changes(kwargs, message):
    model = make_mlp()
    before = [np.array(w) for w in model.get_weights()]
    args = dict(sparsity=0.5, schedule="polynomial", end_step=20, frequency=10) | kwargs
    with pytest.raises(ValueError, match=message):
        prune_low_magnitude_global(model, **args)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # tfmot's wrapper patches `get_prunable_weights` onto the layers it wraps: none was wrapped
    assert not any(hasattr(layer, "get_prunable_weights") for layer in model.layers)
    if "sparsity" in kwargs or "layers" in kwargs:
        with pytest.raises(ValueError, match=message):
            global_magnitude_plan(model, args["sparsity"], layers=args.get("layers"))


class Subclassed(tf_keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_wrong_models_raise_clear_errors():
    k3 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for fn in (lambda m: global_magnitude_plan(m, 0.5), lambda m: prune_low_magnitude_global(m, 0.5, end_step=100)):
        with pytest.raises(ValueError, match=r"Keras 3 model.*tf_selopt\.prune"):
            fn(k3)
        sub = Subclassed()
        sub(np.zeros((1, 4), np.float32))
        with pytest.raises(ValueError, match="subclassed"):
            fn(sub)
        with pytest.raises(ValueError, match="not built"):
            fn(tf_keras.Sequential([L.Dense(2)]))
        with pytest.raises(ValueError, match="no weights tfmot can prune"):
            fn(tf_keras.Sequential([tf_keras.Input((4,)), L.BatchNormalization()]))
        with pytest.raises(ValueError, match="tf_keras.Model"):
            fn("model")


# ---------------------------------------------------------------- structured: blocks and N:M


def make_blocky(seed=0):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential(
        [tf_keras.Input((16,)), L.Dense(8, activation="relu", name="b1"), L.Dense(4, name="b2")]
    )  # kernels (16, 8), (8, 4): 32 + 8 = 40 blocks of 1x4


def make_nm_cnn(seed=0):
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((6, 6, 4))
    h = L.Conv2D(8, 3, activation="relu", name="c1")(inputs)  # kernel (3, 3, 4, 8)
    h = L.Flatten(name="flat")(h)
    return tf_keras.Model(inputs, L.Dense(4, name="head")(h))  # kernel (128, 4)


def fit_briefly(pruned_model, input_shape, steps=4, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8 * steps, *input_shape)).astype("float32")
    y = rng.integers(0, 4, size=8 * steps).astype("int32")
    pruned_model.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    pruned_model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=pruning_callbacks())
    return tfmot_bridge.strip_pruning(pruned_model)


def input_groups(kernel, n):
    """``(..., in, out)`` -> ``(-1, n)``: groups of n consecutive inputs of one output unit and position."""
    k = np.moveaxis(kernel, -2, -1)  # input axis last
    return k.reshape(-1, n)


@pytest.mark.parametrize("schedule", ["constant", "polynomial"])
def test_blocks_1x4_are_whole_along_the_input_axis_and_counted_exactly(schedule):
    model = make_blocky()
    kernels_before = kernels(model, ["b1", "b2"])
    pruned_model, plan = prune_low_magnitude_global(
        model, 0.75, schedule, begin_step=0, end_step=4, frequency=2, block_size=(1, 4)
    )
    assert plan == global_magnitude_plan(model, 0.75, block_size=(1, 4))
    # the plan counts blocks: the numpy reference over summed |w| of 4 consecutive inputs per output unit
    block_sums = [np.abs(k).reshape(k.shape[0] // 4, 4, k.shape[1]).sum(axis=1) for k in kernels_before]
    assert [plan[n].pruned // 4 for n in ("b1", "b2")] == reference_pruned(block_sums, 0.75)
    assert sum(p.pruned for p in plan.values()) == 4 * math.floor(0.75 * 40 + 0.5)
    wrappers = [layer for layer in pruned_model.layers if isinstance(layer, pruning_wrapper.PruneLowMagnitude)]
    assert [w.block_size for w in wrappers] == [(4, 1), (4, 1)]  # tfmot's (rows, cols) of the (in, out) kernel
    final = fit_briefly(pruned_model, (16,))
    for name, kernel in zip(("b1", "b2"), kernels(final, ["b1", "b2"])):
        zero_per_block = (input_groups(kernel, 4) == 0).sum(axis=1)
        assert set(zero_per_block.tolist()) <= {0, 4}, name  # whole blocks of 4 consecutive inputs
        assert int((kernel == 0).sum()) == plan[name].pruned


def test_m_by_n_is_exact_on_every_group_of_dense_and_conv_after_a_fit():
    model = make_nm_cnn()
    pruned_model, plan = prune_low_magnitude_global(model, None, sparsity_m_by_n=(2, 4))
    assert plan == global_magnitude_plan(model, 0.5, sparsity_m_by_n=[2, 4])
    assert {n: (p.sparsity, p.pruned, p.size) for n, p in plan.items()} == {
        "c1": (0.5, 144, 288),
        "head": (0.5, 256, 512),
    }
    wrappers = [layer for layer in pruned_model.layers if isinstance(layer, pruning_wrapper.PruneLowMagnitude)]
    assert [w.sparsity_m_by_n for w in wrappers] == [(2, 4), (2, 4)]
    final = fit_briefly(pruned_model, (6, 6, 4))
    for name in ("c1", "head"):
        kernel = final.get_layer(name).kernel.numpy()
        zeros = (input_groups(kernel, 4) == 0).sum(axis=1)
        assert np.all(zeros == 2), name  # exactly m zeros in every group of n consecutive inputs
        assert int((kernel == 0).sum()) == plan[name].pruned
        assert pruning_utils.is_pruned_m_by_n(tf.constant(kernel), (2, 4))  # tfmot's own check agrees


def make_narrow():
    return tf_keras.Sequential([tf_keras.Input((8,)), L.Dense(1, name="one")])  # kernel (8, 1)


def make_conv1d():
    return tf_keras.Sequential([tf_keras.Input((8, 4)), L.Conv1D(4, 3, name="k")])  # kernel (3, 4, 4): rank 3


STRUCTURED_MODELS = {"mlp": make_mlp, "cnn": make_cnn, "narrow": make_narrow, "conv1d": make_conv1d}
C = dict(schedule="constant", end_step=-1)  # a valid schedule for block cases
NM = dict(sparsity=None, sparsity_m_by_n=(2, 4))

BAD_STRUCTURE = [
    ("mlp", C | dict(block_size=(0, 4)), "`block_size` must be None or a pair of ints >= 1"),
    ("mlp", C | dict(block_size="1x4"), "`block_size` must be None or a pair of ints >= 1"),
    ("mlp", C | dict(block_size=(1, 4)), r"`block_size`=\(1, 4\): weight 'd3/kernel:0' of layer 'd3' of shape \(10, 3"),
    ("mlp", C | dict(block_size=(4, 4), layers=["d2"]), r"`block_size`=\(4, 4\): weight 'd2/kernel:0'"),
    ("cnn", C | dict(block_size=(1, 4)), r"weight 'c1/kernel:0' of layer 'c1' has shape \(3, 3, 1, 4\); tfmot prunes"),
    ("narrow", C | dict(block_size=(1, 4)), r"has shape \(8, 1\); tfmot prunes blocks only in 2-D weights with no"),
    ("mlp", C | dict(sparsity=0.99, block_size=(1, 4), layers=["d1", "d2"]), "prunes 87 of 88 blocks"),
    ("mlp", NM, r"`sparsity_m_by_n`=\(2, 4\): weight 'd3/kernel:0' of layer 'd3' of shape \(10, 3\)"),
    ("conv1d", NM, r"weight 'k/kernel:0' of layer 'k' has shape \(3, 4, 4\); tfmot's N:M pruning handles rank-2"),
    ("mlp", NM | dict(sparsity_m_by_n=(4, 4)), "1 <= m < n"),
    ("mlp", NM | dict(sparsity_m_by_n="2:4"), "`sparsity_m_by_n` must be None or a pair"),
    ("mlp", NM | dict(block_size=(1, 4)), "exclude each other"),
    ("mlp", NM | dict(sparsity=0.9), "conflicts with `sparsity_m_by_n`"),
    ("mlp", dict(sparsity=None, end_step=20), "`sparsity` must be a float"),
    ("mlp", NM | dict(end_step=20), "`end_step`=20 does not apply with `sparsity_m_by_n`"),
    ("mlp", NM | dict(begin_step=5), "`begin_step`=5 does not apply with `sparsity_m_by_n`"),
    ("mlp", NM | dict(frequency=1), "`frequency`=1 does not apply with `sparsity_m_by_n`"),
    ("mlp", NM | dict(initial_sparsity=0.1), "`initial_sparsity`=0.1 does not apply"),
    ("mlp", NM | dict(power=1), "`power`=1 does not apply"),
]
SCHEDULE_ARGS = ("schedule", "end_step", "begin_step", "frequency", "initial_sparsity", "power")


@pytest.mark.parametrize("kind,kwargs,message", BAD_STRUCTURE)
def test_bad_structure_raises_before_anything_changes(kind, kwargs, message):
    model = STRUCTURED_MODELS[kind]()
    before = [np.array(w) for w in model.get_weights()]
    args = dict(sparsity=0.5) | kwargs
    with pytest.raises(ValueError, match=message):
        prune_low_magnitude_global(model, **args)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not any(hasattr(layer, "get_prunable_weights") for layer in model.layers)  # nothing wrapped
    if not any(k in kwargs for k in SCHEDULE_ARGS[1:]):  # the plan refuses the same (it has no schedule)
        plan_args = {k: v for k, v in args.items() if k not in SCHEDULE_ARGS}
        with pytest.raises(ValueError, match=message):
            global_magnitude_plan(model, **plan_args)


# ---------------------------------------------------------------- import side effects

IMPORT_CHECK = textwrap.dedent(
    """
    import os
    import numpy as np
    import tensorflow as tf
    from tf_selopt.keras2 import tfmot_bridge
    import keras
    import tf_keras
    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    print(repr(legacy), keras.__version__, type(tf.keras.Model).__module__, tf.keras.Model.__module__)
    # Keras 3 still trains in the same process ...
    m3 = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    m3.compile("sgd", "mse")
    m3.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    # ... and so does the bridge with tfmot on tf_keras
    m2 = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(4)])
    pruned, plan = tfmot_bridge.prune_low_magnitude_global(m2, 0.5, "constant", end_step=-1, frequency=1)
    pruned.compile("sgd", "mse")
    pruned.fit(np.ones((4, 3)), np.ones((4, 4)), verbose=0, callbacks=tfmot_bridge.pruning_callbacks())
    print(int((pruned.layers[0].layer.kernel.numpy() == 0).sum()))
    """
)


@pytest.mark.parametrize("user_setting", [None, pytest.param("1", marks=pytest.mark.slow)])
def test_import_leaves_keras_3_and_the_environment_alone(user_setting):
    """A fresh process, without and with the user's own TF_USE_LEGACY_KERAS=1."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    if user_setting is not None:
        env["TF_USE_LEGACY_KERAS"] = user_setting
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    first, zeros = out.stdout.strip().splitlines()[-2:]
    legacy, keras_version, _, tf_keras_module = first.split()
    assert keras_version.startswith("3.")
    assert legacy == repr(user_setting)  # restored (or left as the user set it)
    if user_setting is None:
        assert tf_keras_module.startswith("keras."), tf_keras_module  # tf.keras is still Keras 3
    else:
        assert tf_keras_module.startswith("tf_keras."), tf_keras_module  # the user asked for Keras 2
    assert zeros == "6"


def test_docstring_examples_run(request):
    attempted, failed = docstring_examples(tfmot_bridge, request)  # or the doctest items of `make test`
    assert attempted > 0 and failed == 0


def test_one_fit_with_the_tf_keras_selective_optimizer(tmp_path):
    """The bridge's model trains with tf_selopt.keras2.SelectiveOptimizer in one fit: the plan is
    reached, exactly k entries are selected, and unselected entries either keep their value or were
    pruned by tfmot to exactly zero."""
    from tf_selopt.keras2 import SelectiveOptimizer

    make, names, _ = MODELS["mlp"]
    pruned_model, plan = prune_low_magnitude_global(make(), 0.7, "polynomial", begin_step=0, end_step=16, frequency=4)
    optimizer = SelectiveOptimizer(tf_keras.optimizers.Adam(1e-2), keep=0.3, warmup_steps=8, window=4, seed=0)
    pruned_model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    x, y = data("mlp")
    pruned_model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=pruning_callbacks(tmp_path))  # steps 0..7
    pruned_model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0, callbacks=pruning_callbacks())  # step 8 selects
    before = [v.numpy().copy() for v in pruned_model.trainable_variables]
    masks = [m.numpy() for m in optimizer.masks]
    # tfmot's masks at the selection (its pruning step 8 runs in that step's forward pass, before our update)
    tfmot_kept = tfmot_bridge.tfmot_masks(pruned_model)
    assert len(tfmot_kept) == 3  # the three kernels
    selected_pruned = 0
    for v, m in zip(pruned_model.trainable_variables, masks):
        if v.ref() in tfmot_kept:
            kept = tfmot_kept[v.ref()].numpy() != 0
            assert (~kept).sum() > 0
            selected_pruned += int((m & ~kept).sum())
    assert selected_pruned == 0  # no selection slot went to an entry tfmot had pruned
    assert int(optimizer.selected_count) == optimizer.k
    pruned_model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=pruning_callbacks())  # steps 9..24
    # tfmot prunes on at steps 12 and 16: selected entries it prunes stop training (counted out, as in Keras 3)
    tfmot_kept = {ref: mask.numpy() != 0 for ref, mask in tfmot_bridge.tfmot_masks(pruned_model).items()}
    training = sum(
        int((m & tfmot_kept.get(v.ref(), True)).sum()) for v, m in zip(pruned_model.trainable_variables, masks)
    )
    assert int(optimizer.selections) == 1 and int(optimizer.selected_count) == training < optimizer.k
    # the watched masks are not part of the optimizer's checkpoint (refs as keys would not even save)
    path = tf.train.Checkpoint(optimizer=optimizer).save(str(tmp_path / "ckpt"))
    assert not any("pruning_mask" in name for name, _ in tf.train.list_variables(path))
    for b, a, m in zip(before, [v.numpy() for v in pruned_model.trainable_variables], masks):
        frozen = ~m
        assert np.all((a[frozen] == b[frozen]) | (a[frozen] == 0.0))
    final_model = tfmot_bridge.strip_pruning(pruned_model)
    zeros = {n: int((final_model.get_layer(n).kernel.numpy() == 0).sum()) for n in names}
    assert zeros == {n: plan[n].pruned for n in names}
