"""Property-based tests (hypothesis): exact counts, frozen never moves, pruned never revives,
save/load/export never loses a mask. Example counts are modest; no deadline (TF is slow to warm up)."""

import warnings

import keras
import numpy as np
import tensorflow as tf
from conftest import INNER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tf_selopt
from tf_selopt.core import schedules, selection
from tf_selopt.deploy import export
from tf_selopt.keras.pruning import mask_zeros, prunable_variables, prune, pruning_mask

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ selection
@st.composite
def scored_variables(draw):
    """1-3 score tensors of random small shapes; values from a small pool, so ties are common."""
    pool = draw(st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, 1e-40, np.inf, -np.inf, np.nan]), min_size=1))
    shapes = draw(st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3))
    arrays = [
        np.array(
            draw(st.lists(st.sampled_from(pool), min_size=int(np.prod(s)), max_size=int(np.prod(s)))), np.float32
        ).reshape(s)
        for s in shapes
    ]
    k = draw(st.integers(1, sum(a.size for a in arrays)))
    return arrays, k


def reference_top_k(flat, k):
    """numpy: rank by value (NaN lowest, -0.0 == 0.0), ties to the lowest flat index."""
    key = np.where(np.isnan(flat), -np.inf, flat).astype(np.float64)
    rank = np.lexsort((np.arange(flat.size), np.isnan(flat), -key))  # value desc, non-NaN first, index asc
    mask = np.zeros(flat.size, bool)
    mask[rank[:k]] = True
    return mask


@FAST
@given(scored_variables())
def test_select_global_is_exactly_the_reference_top_k(case):
    arrays, k = case
    masks = [m.numpy() for m in selection.select([tf.constant(a) for a in arrays], k, "global")]
    assert [m.shape for m in masks] == [a.shape for a in arrays]
    flat = np.concatenate([m.ravel() for m in masks])
    assert int(flat.sum()) == k
    np.testing.assert_array_equal(flat, reference_top_k(np.concatenate([a.ravel() for a in arrays]), k))


@FAST
@given(scored_variables())
def test_select_per_variable_is_exact_per_variable(case):
    arrays, k = case
    masks = [m.numpy() for m in selection.select([tf.constant(a) for a in arrays], k, "per_variable")]
    counts = selection.per_variable_counts([a.size for a in arrays], k)
    assert sum(counts) == k
    for m, a, k_i in zip(masks, arrays, counts):
        np.testing.assert_array_equal(m.ravel(), reference_top_k(a.ravel(), k_i))


# ------------------------------------------------------------------ schedules
sparsities = st.floats(0.0, 0.99, allow_nan=False)


@FAST
@given(
    initial=sparsities,
    final=sparsities,
    begin=st.integers(0, 50),
    span=st.integers(1, 200),
    power=st.floats(0.1, 6.0),
    frequency=st.integers(1, 30),
)
def test_polynomial_decay_is_monotone_and_bounded(initial, final, begin, span, power, frequency):
    schedule = schedules.PolynomialDecay(initial, final, begin, begin + span, power=power, frequency=frequency)
    steps = np.unique(np.linspace(0, begin + 2 * span, 60).astype(int))
    values = np.array([float(schedule(int(s))[1]) for s in steps])
    low, high = min(initial, final), max(initial, final)
    tol = 1e-6
    assert np.all(values >= low - tol) and np.all(values <= high + tol)
    diffs = np.diff(values)
    assert np.all(diffs >= -tol) if final >= initial else np.all(diffs <= tol)
    assert abs(values[0] - (initial if steps[0] <= begin else values[0])) <= tol
    assert abs(float(schedule(begin + span)[1]) - final) <= tol
    pruning_steps = [int(s) for s in steps if bool(schedule.should_prune(int(s)))]
    assert all(begin <= s <= begin + span and (s - begin) % frequency == 0 for s in pruning_steps)


# ------------------------------------------------------- training with masks
def small_model(units):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(units), keras.layers.Dense(2)])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inner=st.sampled_from(sorted(INNER)),
    units=st.integers(1, 5),
    keep=st.one_of(st.floats(0.05, 1.0), st.integers(1, 8)),
    warmup=st.integers(1, 4),
    window=st.integers(1, 4),
    reselect=st.one_of(st.none(), st.integers(1, 4)),
    sparsity=st.floats(0.0, 0.9),
    steps=st.integers(3, 10),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_runs_frozen_never_move_pruned_never_revive(
    inner, units, keep, warmup, window, reselect, sparsity, steps, seed
):
    window = min(window, warmup)
    reselect = None if reselect is None else max(reselect, window)
    model = small_model(units)  # N >= 8 >= any int keep drawn
    masks = prune(model, sparsity)
    variables = model.trainable_variables
    n = sum(int(np.prod(v.shape)) for v in variables)
    optimizer = tf_selopt.SelectiveOptimizer(
        INNER[inner](), keep=keep, warmup_steps=warmup, window=window, reselect_every=reselect, seed=0
    )
    optimizer.build(variables)
    rng = np.random.default_rng(seed)
    unpruned = n - sum(int((~m).sum()) for m in masks.values())
    for _ in range(steps):
        before = [v.numpy().copy() for v in variables]
        trains = [optimizer.trains(i).numpy() for i in range(len(variables))]
        selections = int(optimizer.selections)
        grads = [tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables]
        optimizer.apply_gradients(zip(grads, variables))
        if int(optimizer.selections) == selections:  # no selection inside this step: frozen stay
            for b, v, t in zip(before, variables, trains):
                np.testing.assert_array_equal(v.numpy()[~t], b[~t])
        else:
            assert int(optimizer.selected_count) == min(optimizer.k, unpruned)
        for v in variables:
            kept = pruning_mask(v)
            if kept is not None:
                assert np.all(v.numpy()[~kept.numpy()] == 0.0)
    assert int(optimizer.iterations) == steps


# ------------------------------------------------------ save/load and export
@SLOW
@given(sparsity=st.floats(0.05, 0.95), scope=st.sampled_from(["global", "per_layer"]), units=st.integers(2, 6))
def test_keras_file_and_mask_zeros_keep_every_mask(tmp_path_factory, sparsity, scope, units):
    model = small_model(units)
    masks = prune(model, sparsity, scope=scope)
    model.compile(keras.optimizers.Adam(0.1), "mse")
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    model.fit(x, x[:, :2], batch_size=4, verbose=0)
    path = str(tmp_path_factory.mktemp("keras") / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = mask_zeros(loaded)
    assert [m.tolist() for m in restored.values()] == [m.tolist() for m in masks.values()]
    loaded.fit(x, x[:, :2], batch_size=4, verbose=0)
    for v, m in zip(prunable_variables(loaded), masks.values()):
        assert np.all(v.numpy()[~m] == 0.0) and np.all(v.numpy()[m] != 0.0)


def tflite_zeros(path):
    """Exact zeros in the float32 constant tensors of a .tflite file, read with the TFLite interpreter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=path)
    zeros = 0
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] != np.float32 or not detail["shape"].size or detail["name"].startswith("serving"):
            continue
        try:
            zeros += int(np.count_nonzero(interpreter.get_tensor(detail["index"]) == 0.0))
        except ValueError:  # activations: no data before allocation
            continue
    return zeros


@SLOW
@given(sparsity=st.floats(0.1, 0.9), units=st.integers(2, 6))
def test_tflite_export_keeps_the_zero_count(tmp_path_factory, sparsity, units):
    model = small_model(units)
    for layer in model.layers:  # biases non-zero, so every zero in the file is a pruned weight
        layer.bias.assign(np.full(layer.bias.shape, 0.5, np.float32))
    masks = prune(model, sparsity)
    pruned = sum(int((~m).sum()) for m in masks.values())
    path = str(tmp_path_factory.mktemp("tflite") / "m.tflite")
    report = export.export_tflite(model, path, mode="float32")
    assert report.model_zeros == report.zeros == pruned
    assert tflite_zeros(path) == pruned
