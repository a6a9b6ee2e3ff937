"""TensorBoard as a user sees it: tags that line up across runs, exact step functions, loss/accuracy in every run.

Event files are read back with TensorBoard's own reader (``EventAccumulator``).
"""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import tf_selopt
from tf_selopt.core.schedules import ConstantSparsity
from tf_selopt.keras.callbacks import SelectionMonitor
from tf_selopt.keras.pruning import GradualPruning
from tf_selopt.study import models

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
#: mlp((8,)) on 8 inputs, 2 classes: 8*8 + 8 + 8*2 + 2 = 90 parameters, so keep=9 freezes exactly 0.9.
N, KEEP, WARMUP = 90, 9, 5


def read(log_dir):
    """(scalars: tag -> [(step, value)], histograms: tag -> [step]) of the event files in ``log_dir``."""
    acc = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={k: 0 for k in event_accumulator.DEFAULT_SIZE_GUIDANCE}, purge_orphaned_data=False
    )
    acc.Reload()
    scalars, histograms = {}, {}
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        if events[0].tensor_proto.tensor_shape.dim:  # TF2 histograms: a [buckets, 3] tensor
            histograms[tag] = [e.step for e in events]
        else:
            scalars[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events]
    return scalars, histograms


def data(n=64):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 2, size=(n,)).astype("int32")


def selective_run(log_dir, criterion="preconditioned"):
    """mlp((8,)) built by the study's builder, SelectiveOptimizer, 2 epochs of 8 steps; selection at step 5."""
    keras.utils.set_random_seed(0)
    model = models.mlp((8,), input_shape=(8,), num_classes=2)
    opt = tf_selopt.SelectiveOptimizer(
        keras.optimizers.Adam(1e-2),
        criterion=criterion,
        keep=KEEP,
        warmup_steps=WARMUP,
        window=2,
        num_examples=64,
        seed=0,
    )
    model.compile(opt, LOSS)
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[SelectionMonitor(log_dir)])
    return model, opt


def test_same_builder_same_tags_in_two_runs(tmp_path):
    model_a, _ = selective_run(tmp_path / "a")
    model_b, _ = selective_run(tmp_path / "b")  # same process: Keras' automatic names would differ (dense_2, ...)
    assert (
        [v.path for v in model_a.weights]
        == [v.path for v in model_b.weights]
        == ["mlp/dense_0/kernel", "mlp/dense_0/bias", "mlp/dense_1/kernel", "mlp/dense_1/bias"]
    )
    (scalars_a, hist_a), (scalars_b, hist_b) = read(tmp_path / "a"), read(tmp_path / "b")
    assert set(scalars_a) == set(scalars_b) and set(hist_a) == set(hist_b)
    assert "frozen_fraction/mlp/dense_0/kernel" in scalars_a
    assert set(hist_a) == {f"scores_log10/{v.path}" for v in model_a.weights}


def test_selection_is_an_exact_step_at_its_step(tmp_path):
    _, opt = selective_run(tmp_path)
    scalars, histograms = read(tmp_path)
    # Selection in step index 5 (0-based), i.e. the 6th optimizer step: state before at x=5, after at x=6.
    # Points: after the first step, which builds the optimizer (1), before (5), after (6), epoch ends (8, 16).
    assert scalars["selection/frozen_fraction"] == [
        (1, 0.0),
        (5, 0.0),
        (6, float(np.float32(0.9))),
        (8, float(np.float32(0.9))),
        (16, float(np.float32(0.9))),
    ]
    assert float(opt.frozen_fraction) == pytest.approx(0.9, abs=1e-7)
    assert [v for _, v in scalars["selection/selected_count"]] == [N, N, KEEP, KEEP, KEEP]
    assert [s for s, _ in scalars["scores/p50"]] == [6]  # once per selection
    # Score histograms (log10) at each window step: the window's first step (x=5: the scores of its 1 gradient)
    # and the selection step (x=6: the selection's scores); not rewritten later.
    assert all(steps == [5, 6] for steps in histograms.values())
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    for v, score in zip(opt.model_variables, opt.scores):
        first, event = acc.Tensors(f"scores_log10/{v.path}")
        assert not np.array_equal(tf.make_ndarray(first.tensor_proto), tf.make_ndarray(event.tensor_proto))
        buckets = tf.make_ndarray(event.tensor_proto)  # [left, right, count]
        s = score.numpy().ravel()
        assert buckets[:, 2].sum() == np.count_nonzero(s > 0)
        assert buckets[0, 0] == pytest.approx(np.log10(s[s > 0].min()), rel=1e-5)
        assert buckets[-1, 1] == pytest.approx(np.log10(s.max()), rel=1e-5)


def test_pruning_event_is_an_exact_step(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.mlp((8,), input_shape=(8,), num_classes=2)
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    x, y = data()
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=3, frequency=100))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pruning, SelectionMonitor(tmp_path)])
    scalars, histograms = read(tmp_path)
    steps = [s for s, _ in scalars["pruning/sparsity"]]
    points = scalars["pruning/sparsity"]
    (event,) = [s for (s, v), (_, before) in zip(points[1:], points) if v != before]
    assert points[steps.index(event) - 1] == (event - 1, 0.0)  # the step before the event, then the event
    assert dict(points)[event] == 0.5
    assert scalars["pruning/sparsity"][-1] == (8, 0.5)
    assert histograms == {}  # masks are counts and fractions, never 0/1 histograms


def graph_events(log_dir):
    """Events of every event file under ``log_dir`` that hold a graph (``graph_def`` / ``meta_graph_def``)."""
    return [
        event
        for path in sorted(pathlib.Path(log_dir).rglob("events.out.tfevents.*"))
        for event in tf.compat.v1.train.summary_iterator(str(path))
        if event.HasField("graph_def") or event.HasField("meta_graph_def")
    ]


@pytest.mark.parametrize(
    "kind, method", [("selection", "gradient_sum"), ("pruning", "global")], ids=["selection", "pruning"]
)
def test_study_runs_log_validation_step_loss_and_test_metrics(tmp_path, kind, method):
    """Selection and our pruning runs: Keras' epoch_* for train and validation, the loss of every optimizer step
    and the test metrics at the last step, next to the library's tags (one x axis: optimizer steps)."""
    from tf_selopt.study import config, data, runs

    spec = runs.RunSpec(kind, "digits", "lenet_300_100", method, 0.9, 0)
    training = config.Training(epochs=2, batch_size=256)
    splits = data.load("digits")
    row, _ = runs.run(
        spec,
        training,
        config.Selection(window=2),
        config.Pruning(begin_epochs=0, end_fraction=0.5, events=1),
        log_dir=tmp_path,
        splits=splits,
    )
    for split in ("train", "validation"):
        epochs, _ = read(tmp_path / split)
        assert [s for s, _ in epochs["epoch_accuracy"]] == [0, 1] and [s for s, _ in epochs["epoch_loss"]] == [0, 1]
    ours, _ = read(tmp_path)
    last = 2 * runs.steps_per_epoch(len(splits.x_train), 256)
    assert [s for s, _ in ours["train/loss"]] == list(range(1, last + 1))  # every optimizer step
    assert ours["test/accuracy"] == [(last, float(np.float32(row["test_accuracy"])))]
    assert ours["test/loss"] == [(last, float(np.float32(row["test_loss"])))]
    tag = "selection/frozen_fraction" if kind == "selection" else "pruning/sparsity"
    assert ours[tag][-1] == (last, pytest.approx(0.9, abs=1e-3))
    assert "frozen_fraction/lenet_300_100/dense_0/kernel" in ours or "sparsity/lenet_300_100/dense_0/kernel" in ours
    assert graph_events(tmp_path) == []


@pytest.mark.parametrize("api", ["keras", "tf_keras"])
def test_step_loss_is_each_steps_own_loss(tmp_path, api):
    """Nothing trains (SGD at 0): the loss logged at optimizer step s is exactly the loss of batch s, across an
    epoch boundary (Keras' running mean restarts) and a smaller last batch."""
    if api == "keras":
        from tf_selopt.keras.callbacks import StepLoss

        lib = keras
    else:
        import tf_keras as lib

        from tf_selopt.keras2.callbacks import StepLoss
    lib.utils.set_random_seed(0)
    model = lib.Sequential([lib.Input((8,)), lib.layers.Dense(2)])
    model.compile(lib.optimizers.SGD(0.0), lib.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(10)  # batches of 4, 4, 2
    callback = StepLoss(tmp_path)
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[callback])
    batches = [(0, 4), (4, 8), (8, 10)]
    expected = [float(model.evaluate(x[a:b], y[a:b], batch_size=4, verbose=0)) for a, b in batches] * 2
    scalars, _ = read(tmp_path)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], expected, rtol=1e-6)
    assert callback.losses == [v for _, v in scalars["train/loss"]]


def test_tfmot_run_logs_an_overall_sparsity_and_no_graph(tmp_path):
    """tfmot pruning through ``pruning_callbacks(log_dir)``: ``pruning/sparsity`` over all masked kernels as an
    exact step at the pruning event, tfmot's per-layer tags in ``metrics/``, and no graph in any event file."""
    import tf_keras

    from tf_selopt.keras2 import tfmot_bridge

    tf_keras.utils.set_random_seed(0)
    model = models.mlp((8,), input_shape=(8,), num_classes=2, api=tf_keras)  # kernels: 64 + 16 = 80 weights
    schedule = tfmot_bridge.tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=3, frequency=100)
    pruned = tfmot_bridge.tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(tf_keras.optimizers.Adam(1e-2), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data()
    callbacks = tfmot_bridge.pruning_callbacks(tmp_path)
    pruned.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0, callbacks=callbacks)
    scalars, _ = read(tmp_path)
    points = scalars["pruning/sparsity"]
    (event,) = [s for (s, v), (_, before) in zip(points[1:], points) if v != before]
    assert points[[s for s, _ in points].index(event) - 1] == (event - 1, 0.0)  # the step before the event
    assert dict(points)[event] == 0.5 and points[-1] == (8, 0.5)
    assert dict(scalars["pruning/pruned_count"])[8] == 40
    metrics, _ = read(tmp_path / "metrics")
    assert any(tag.endswith("/sparsity") for tag in metrics)  # tfmot's per-layer tags
    validation, _ = read(tmp_path / "validation")
    assert "epoch_accuracy" in validation or "epoch_loss" in validation
    assert graph_events(tmp_path) == []


@pytest.mark.parametrize("keep_scores", [False, True])
def test_monitor_with_the_release_of_the_warmup_state(tmp_path, keep_scores):
    """TracePerPhase releases the scores after the selection's batch: the monitor has read them by then
    (quantiles and histograms at the selection), so both runs write the same tags."""
    keras.utils.set_random_seed(0)
    model = models.mlp((8,), input_shape=(8,), num_classes=2)
    opt = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), keep=KEEP, warmup_steps=WARMUP, window=2, seed=0)
    model.compile(opt, LOSS)
    x, y = data()
    phases = tf_selopt.TracePerPhase(keep_scores=keep_scores)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[phases, SelectionMonitor(tmp_path)])
    assert opt.warmup_state_released and (opt.scores is not None) == keep_scores
    scalars, histograms = read(tmp_path)
    assert set(histograms) == {f"scores_log10/{v.path}" for v in model.weights}
    assert any(tag.startswith("scores/") for tag in scalars)


@pytest.mark.parametrize(
    "callback, kwargs, match",
    [
        ("StepLoss", dict(log_dir=""), "`log_dir`"),
        ("StepLoss", dict(log_dir=None), "`log_dir`"),
        ("keras2.StepLoss", dict(log_dir=""), "`log_dir`"),
        ("OverallSparsity", dict(log_dir=""), "`log_dir`"),
        ("OverallSparsity on a model without tfmot wrappers", dict(), "tfmot pruning wrappers"),
    ],
)
def test_bad_arguments(tmp_path, callback, kwargs, match):
    import tf_keras

    from tf_selopt.keras2 import callbacks as keras2_callbacks
    from tf_selopt.keras2 import tfmot_bridge

    classes = {
        "StepLoss": tf_selopt.StepLoss,
        "keras2.StepLoss": keras2_callbacks.StepLoss,
        "OverallSparsity": tfmot_bridge.OverallSparsity,
    }
    if callback in classes:
        with pytest.raises(ValueError, match=match):
            classes[callback](**kwargs)
        return
    model = tf_keras.Sequential([tf_keras.Input((8,)), tf_keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    before = [w.numpy() for w in model.weights]
    x = np.ones((4, 8), "float32")
    with pytest.raises(ValueError, match=match):
        model.fit(x, np.ones((4, 2)), verbose=0, callbacks=[tfmot_bridge.OverallSparsity(tmp_path)])
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))  # raised before any step


def test_histogram_buckets_are_tensorboards():
    """Our O(n) bucketing gives TensorBoard's own histogram op's buckets, bit for bit (many, one, no values)."""
    from tensorboard.plugins.histogram.summary_v2 import _buckets

    from tf_selopt.keras.callbacks import histogram_buckets

    rng = np.random.default_rng(0)
    for values in (rng.standard_cauchy(5000), np.full(3, 2.5), np.zeros(0), rng.normal(size=7)):
        expected = _buckets(tf.constant(values, tf.float64)).numpy()
        np.testing.assert_array_equal(histogram_buckets(values), expected)


def test_window_histograms_grow_to_the_selections(tmp_path):
    """fisher sums g**2 over the window: the scores after the window's first step are at most the selection's,
    entry by entry, so the histogram at x=5 has no more positive scores and no larger maximum than at x=6."""
    _, opt = selective_run(tmp_path, criterion="fisher")
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    for v, score in zip(opt.model_variables, opt.scores):
        first, selection = (tf.make_ndarray(e.tensor_proto) for e in acc.Tensors(f"scores_log10/{v.path}"))
        assert [e.step for e in acc.Tensors(f"scores_log10/{v.path}")] == [5, 6]
        assert first[:, 2].sum() <= selection[:, 2].sum() == np.count_nonzero(score.numpy() > 0)
        assert first[-1, 1] <= selection[-1, 1] == pytest.approx(np.log10(score.numpy().max()), rel=1e-6)
