"""SelectionMonitor: what it writes, read back with TensorBoard's own event reader."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import tf_selopt
from tf_selopt.core.schedules import ConstantSparsity
from tf_selopt.keras.callbacks import QUANTILES, SelectionMonitor
from tf_selopt.keras.pruning import GradualPruning, pruning_mask

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


pytestmark = pytest.mark.usefixtures("fresh_keras_names")


def make_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)], name="net"
    )


def make_data(n=32):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, size=(n,)).astype("int32")


def selective(keep=7, warmup_steps=2):
    return tf_selopt.SelectiveOptimizer(
        keras.optimizers.Adam(1e-2), keep=keep, warmup_steps=warmup_steps, window=2, seed=0
    )


def read(log_dir):
    """(scalars: tag -> [(step, value)], histogram tags) as TensorBoard loads them."""
    acc = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={k: 0 for k in event_accumulator.DEFAULT_SIZE_GUIDANCE}, purge_orphaned_data=False
    )
    acc.Reload()
    scalars, histograms = {}, set()
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        if events[0].tensor_proto.tensor_shape.dim:  # TF2 histograms: a [buckets, 3] tensor
            histograms.add(tag)
        else:
            scalars[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events]
    return scalars, histograms


def last(scalars, tag):
    return scalars[tag][-1][1]


def test_selective_scalars_and_histograms_match_readouts(tmp_path):
    model = make_model()
    opt = selective(keep=7)
    model.compile(opt, LOSS)
    x, y = make_data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[SelectionMonitor(tmp_path)])
    scalars, histograms = read(tmp_path)

    n = opt.num_parameters
    # step axis = optimizer.iterations: after the step that builds the optimizer, before and at the selection
    # (step index 2 = the 3rd step), per epoch
    assert [s for s, _ in scalars["selection/k"]] == [1, 2, 3, 4, 8]
    assert last(scalars, "selection/selected_count") == int(opt.selected_count) == opt.k == 7
    assert last(scalars, "selection/k") == 7
    assert last(scalars, "selection/frozen_fraction") == pytest.approx(1 - 7 / n, abs=1e-6)
    assert last(scalars, "selection/selections") == 1
    assert [s for s, _ in scalars["scores/p50"]] == [3]  # once per selection
    assert last(scalars, "selection/skipped_steps") == 0
    paths = [v.path for v in model.trainable_variables]
    for path, mask in zip(paths, opt.masks):
        assert last(scalars, f"frozen_fraction/{path}") == pytest.approx(1 - mask.numpy().mean(), abs=1e-6)
    scores = np.concatenate([s.numpy().ravel() for s in opt.scores])
    expected = np.quantile(scores, list(QUANTILES.values()))
    for name, value in zip(QUANTILES, expected):
        assert scalars[f"scores/{name}"][-1][1] == pytest.approx(float(np.float32(value)), rel=1e-6)
    assert histograms == {f"scores_log10/{p}" for p in paths}  # masks are fractions (scalars), not histograms
    assert not any(tag.startswith(("pruning/", "sparsity/")) for tag in scalars)


def test_update_freq_steps_and_quantiles_only_after_selection(tmp_path):
    model = make_model()
    model.compile(selective(warmup_steps=5), LOSS)
    x, y = make_data()
    monitor = SelectionMonitor(tmp_path, update_freq=3, histogram_freq=0)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[monitor])  # 8 steps; selection at step 5
    scalars, histograms = read(tmp_path)
    # after the building step (1), every 3 steps, before and at the selection in step index 5
    assert [s for s, _ in scalars["selection/selected_count"]] == [1, 3, 5, 6]
    assert [v for _, v in scalars["selection/selections"]] == [0, 0, 0, 1]
    assert [s for s, _ in scalars["scores/p50"]] == [6]
    assert histograms == set()


def test_skipped_non_finite_step_is_logged(tmp_path):
    model = make_model()
    opt = selective()
    model.compile(opt, LOSS)
    x, y = make_data(16)
    x[4:8] = np.nan  # the second batch of 4 has a NaN gradient
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[SelectionMonitor(tmp_path)])
    scalars, _ = read(tmp_path)
    assert int(opt.skipped_steps) == 1
    assert scalars["selection/skipped_steps"][-1] == (3, 1.0)  # 4 batches, 3 applied


def test_plain_optimizer_with_gradual_pruning_logs_pruning_only(tmp_path):
    model = make_model()
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    x, y = make_data()
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=0, frequency=2))
    # The monitor comes first: the masks GradualPruning installs later are found all the same.
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[SelectionMonitor(tmp_path), pruning])
    scalars, histograms = read(tmp_path)
    assert last(scalars, "pruning/pruned_count") == pruning.pruned_count == 36  # 72 kernel weights at 0.5
    assert last(scalars, "pruning/sparsity") == pytest.approx(pruning.sparsity, abs=1e-6)
    kernels = [v for v in model.weights if pruning_mask(v) is not None]
    for v in kernels:
        expected = 1 - pruning_mask(v).numpy().mean()
        assert last(scalars, f"sparsity/{v.path}") == pytest.approx(expected, abs=1e-6)
        assert expected == pytest.approx(np.mean(v.numpy() == 0), abs=1e-6)
    assert histograms == set()  # masks are logged as counts and fractions
    assert not any(tag.startswith(("selection/", "frozen_fraction/", "scores/")) for tag in scalars)


def test_selective_with_pruning_counts_agree(tmp_path):
    model = make_model()
    opt = selective(keep=7)
    model.compile(opt, LOSS)
    x, y = make_data()
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=0, frequency=2))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruning, SelectionMonitor(tmp_path)])
    scalars, _ = read(tmp_path)
    assert last(scalars, "pruning/pruned_count") == pruning.pruned_count == int(opt.pruned_count)
    assert last(scalars, "selection/selected_count") == int(opt.selected_count)
    assert last(scalars, "selection/frozen_fraction") == pytest.approx(float(opt.frozen_fraction), abs=1e-6)
    for v, mask in zip(model.trainable_variables, opt.masks):
        kept = pruning_mask(v)
        trains = mask.numpy() if kept is None else mask.numpy() & kept.numpy()
        assert last(scalars, f"frozen_fraction/{v.path}") == pytest.approx(1 - trains.mean(), abs=1e-6)


def test_nothing_to_log_warns(tmp_path):
    model = make_model()
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    x, y = make_data(8)
    with pytest.warns(UserWarning, match="nothing to log"):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[SelectionMonitor(tmp_path)])


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(log_dir=""), "log_dir"),
        (dict(log_dir=None), "log_dir"),
        (dict(update_freq="batch"), "update_freq"),
        (dict(update_freq=0), "update_freq"),
        (dict(update_freq=True), "update_freq"),
        (dict(update_freq=2.5), "update_freq"),
        (dict(histogram_freq=-1), "histogram_freq"),
        (dict(histogram_freq=None), "histogram_freq"),
        (dict(histogram_freq=1.0), "histogram_freq"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, word):
    kwargs = {"log_dir": str(tmp_path), **kwargs}
    with pytest.raises(ValueError, match=f"`{word}`"):
        SelectionMonitor(**kwargs)


@pytest.mark.parametrize("criterion", ["random", "gradient_sum"])
def test_window_scores_are_what_the_next_selection_ranks(criterion):
    """What SelectionMonitor's window histograms show: after the window's last gradient, the scores the
    selection then ranks (the same seeds: for "random" at every window step)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    optimizer = tf_selopt.SelectiveOptimizer(
        keras.optimizers.SGD(0.0), keep=0.25, criterion=criterion, warmup_steps=3, window=3, seed=5
    )
    optimizer.keep_scores = True  # as SelectionMonitor sets it: the selection's scores are not released
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    seen = []
    while int(optimizer.selections) == 0:
        if float(optimizer.window_count) > 0 or criterion == "random":  # "random" keeps no window state
            seen.append([s.numpy() for s in optimizer.window_scores()])
        grads = [tf.constant(rng.normal(size=v.shape), v.dtype) for v in model.trainable_variables]
        optimizer.apply(grads, model.trainable_variables)
    # gradient_sum: after window steps 1 and 2 (the third completes the window and selects); random: every step
    assert len(seen) == 2 if criterion == "gradient_sum" else len(seen) >= 3
    selected = [s.numpy() for s in optimizer.scores]
    for a, b in zip(selected, seen[-1]):
        if criterion == "random":
            np.testing.assert_array_equal(a, b)
        else:  # the third gradient is not in seen[-1]
            assert not np.array_equal(a, b)
    if criterion == "random":
        for a, b in zip(seen[0], seen[-1]):
            np.testing.assert_array_equal(a, b)
