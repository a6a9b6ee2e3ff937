"""Sparse fine-tuning (issue 17): ``tf_selopt.calibrate`` picks exactly k entries before training without
changing the model, and ``SelectiveOptimizer(inner, masks=...)`` trains exactly those from step 0 on k-sized
state only (no N-sized inner state is ever created), exactly as the masked path would, and resumes bit for bit.
(Under MirroredStrategy: tests/test_distributed.py.)"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BATCH, LOSS, fit, make_data, make_model

import tf_selopt
from tf_selopt.core import criteria, selection
from tf_selopt.keras import pruning

pytestmark = pytest.mark.usefixtures("fresh_keras_names")


def values(variables):
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v).copy() for v in variables]


def assert_bits(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def hand_scores(model, x, y, steps, square):
    """The criterion by hand: per batch gradient of the mean loss, |g| or g**2 summed over ``steps`` batches."""
    sums = [np.zeros(v.shape, np.float32) for v in model.trainable_variables]
    for s in range(steps):
        xb, yb = x[s * BATCH : (s + 1) * BATCH], y[s * BATCH : (s + 1) * BATCH]
        with tf.GradientTape() as tape:
            loss = LOSS(yb, model(xb, training=False))
        for total, g in zip(sums, tape.gradient(loss, model.trainable_variables)):
            g = tf.convert_to_tensor(g).numpy()
            total += g * g if square else np.abs(g)
    return sums


# ----------------------------------------------------------------- calibrate
@pytest.mark.parametrize(
    "kind, name",
    [("functional", name) for name in ("fisher", "gradient_sum", "preconditioned", "magnitude", "random")]
    + [("sequential", "fisher"), ("subclassed", "fisher")],  # Dense+BatchNorm; Embedding (IndexedSlices)
)
def test_calibrate_selects_exactly_k_and_changes_nothing(kind, name):
    model = make_model(kind)
    x, y = make_data(kind)
    before = values(model.variables)
    masks = tf_selopt.calibrate(
        model,
        (x, y),
        loss=LOSS,
        keep=0.1,
        criterion=name,
        steps=3,
        batch_size=BATCH,
        num_examples=len(x),
        training=True,  # BatchNormalization's moving statistics move during the calls and are put back
    )
    n = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert [m.shape for m in masks] == [tuple(v.shape) for v in model.trainable_variables]
    assert all(m.dtype == np.bool_ for m in masks)
    assert int(sum(m.sum() for m in masks)) == selection.resolve_count(0.1, n)
    assert_bits(values(model.variables), before)
    assert getattr(model, "optimizer", None) is None and not model.compiled


@pytest.mark.parametrize("name, square", [("fisher", True), ("gradient_sum", False)])
def test_calibrate_masks_are_the_top_k_of_the_hand_computed_criterion(name, square):
    model = make_model("sequential")
    x, y = make_data("sequential")
    masks = tf_selopt.calibrate(model, (x, y), loss=LOSS, keep=20, criterion=name, steps=3, batch_size=BATCH)
    scores = hand_scores(model, x, y, 3, square)
    flat = np.concatenate([s.ravel() for s in scores])
    chosen = np.concatenate([m.ravel() for m in masks])
    assert chosen.sum() == 20
    # every chosen entry scores at least as high as every other one (up to float rounding of the two sums)
    assert flat[chosen].min() >= flat[~chosen].max() * (1 - 1e-5)


def test_calibrate_reads_a_dataset_with_sample_weights_and_a_user_criterion():
    class Squared(criteria.Criterion):
        name, slots, uses_gradients = "squared", ("s",), True

        def update(self, state, grad, weight, count):
            return {"s": state["s"] + grad * grad}

        def score(self, state, weight, count, seed):
            return state["s"] / count

    model = make_model("sequential")
    x, y = make_data("sequential")
    weights = np.ones(len(x), np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(BATCH)
    by_user = tf_selopt.calibrate(model, data, loss=LOSS, keep=15, criterion=Squared(), steps=4)
    by_fisher = tf_selopt.calibrate(model, (x, y), loss=LOSS, keep=15, criterion="fisher", steps=4, batch_size=BATCH)
    assert_bits(by_user, by_fisher)  # g**2 / count ranks as g**2; unit weights change nothing


def test_calibrate_never_selects_pruned_entries_and_granularity_unit_takes_whole_units():
    model = make_model("sequential")
    x, y = make_data("sequential")
    kept = pruning.prune(model, 0.5)
    masks = tf_selopt.calibrate(model, (x, y), loss=LOSS, keep=0.3, steps=2, batch_size=BATCH)
    by_path = dict(zip([v.path for v in model.trainable_variables], masks))
    for path, keep in kept.items():
        assert not np.any(by_path[path] & ~keep)
    assert int(sum(m.sum() for m in masks)) == selection.resolve_count(0.3, sum(m.size for m in masks))
    model = make_model("sequential")
    units = tf_selopt.calibrate(model, (x, y), loss=LOSS, keep=40, steps=2, batch_size=BATCH, granularity="unit")
    assert 0 < sum(m.sum() for m in units) <= 40
    for m in units:  # a unit is one index of the last axis: all of its entries or none
        columns = m.reshape(-1, m.shape[-1])
        assert np.all(columns.all(axis=0) | ~columns.any(axis=0))


def test_calibrate_shows_progress_when_asked(capsys):
    model = make_model("sequential")
    x, y = make_data("sequential")
    tf_selopt.calibrate(model, (x, y), loss=LOSS, keep=5, steps=2, batch_size=BATCH, verbose=1)
    assert "2/2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(keep=0), "keep"),
        (dict(keep=10**6), "keep"),
        (dict(steps=0), "steps"),
        (dict(steps=1.5), "steps"),
        (dict(criterion="fishr"), "criterion"),
        (dict(criterion="preconditioned"), "num_examples"),
        (dict(scope="layer"), "scope"),
        (dict(granularity="block"), "granularity"),
        (dict(granularity="variable", scope="per_variable"), "granularity"),
        (dict(seed=-1), "seed"),
        (dict(batch_size=0), "batch_size"),
        (dict(training="yes"), "training"),
        (dict(verbose=2), "verbose"),
        (dict(loss="not_a_loss"), "loss"),
        (dict(loss=None), "loss"),
        (dict(data=np.zeros((4, 6))), "data"),
        (dict(data=(np.zeros((4, 6)), np.zeros(5))), "same length"),
        (dict(model="model"), "model"),
    ],
)
def test_calibrate_bad_inputs_raise_before_any_batch_runs(kwargs, word):
    model = make_model("sequential")
    x, y = make_data("sequential")
    seen = []
    data = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(BATCH)
        .map(lambda a, b: (tf.numpy_function(lambda t: seen.append(1) or t, [a], tf.float32), b))
    )
    arguments = dict(model=model, data=data, loss=LOSS, keep=5, steps=2) | kwargs
    with pytest.raises(ValueError, match=word):
        tf_selopt.calibrate(arguments.pop("model"), arguments.pop("data"), **arguments)
    assert seen == []


def test_calibrate_says_when_data_runs_out_and_when_a_variable_gets_no_gradient():
    model = make_model("sequential")
    x, y = make_data("sequential", n=32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)  # 2 batches
    with pytest.raises(ValueError, match="ran out after 2 batches"):
        tf_selopt.calibrate(model, data, loss=LOSS, keep=5, steps=3)

    class WithUnusedLayer(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(3)
            self.unused = keras.layers.Dense(2)
            self.unused.build((None, 6))

        def call(self, inputs):
            return self.head(inputs)

    model = WithUnusedLayer()
    model(x[:1])
    with pytest.raises(ValueError, match="no gradient"):
        tf_selopt.calibrate(model, (x, y), loss=LOSS, keep=5, steps=1, batch_size=BATCH)


# ------------------------------------------------------ SelectiveOptimizer(masks=...)
def calibrated(kind="sequential", keep=0.1, **kwargs):
    model = make_model(kind)
    x, y = make_data(kind)
    masks = tf_selopt.calibrate(model, (x, y), loss=LOSS, keep=keep, steps=2, batch_size=BATCH, **kwargs)
    return model, x, y, masks


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_given_masks_train_exactly_those_entries_from_step_0_on_k_sized_state(kind):
    model, x, y, masks = calibrated(kind)
    before = values(model.trainable_variables)
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), masks=masks)
    fit(model, optimizer, x, y, epochs=1)
    after = values(model.trainable_variables)
    k = int(sum(m.sum() for m in masks))
    assert optimizer.update_path == "selected_only" and optimizer.preselected
    assert optimizer.k == k == int(optimizer.selected_count) and int(optimizer.selections) == 1
    for b, a, m in zip(before, after, masks):
        assert np.array_equal(b[~m], a[~m])  # frozen: bit-identical
    changed = sum(int((b[m] != a[m]).sum()) for b, a, m in zip(before, after, masks))
    assert changed == k  # every selected entry moved from the first step on (4 Adam steps)
    # no N-sized state at all: the k-sized values, positions and Adam moments, the offsets of the selected
    # entries per variable and scalar counters; nothing else (no bool masks: the positions hold the selection)
    m = len(masks)
    sizes = {}
    for v in optimizer.variables:
        size = int(np.prod(v.shape))
        kind_of = "mask" if v.dtype == "bool" else "k" if size == k else "offsets" if size == m + 1 else "scalar"
        assert kind_of != "scalar" or size == 1, v.path
        sizes[kind_of] = sizes.get(kind_of, 0) + size * tf.as_dtype(v.dtype).size
    assert "mask" not in sizes and sizes["k"] == 16 * k and sizes["offsets"] == 4 * (m + 1)
    assert optimizer.scores is None and optimizer.inner_optimizer.variables[2:] == []
    # the read-out masks are derived from the positions: exactly the given ones
    for given, derived in zip(masks, optimizer.masks):
        assert np.array_equal(given, derived.numpy())
    assert optimizer.frozen_variables == [v for v, mask in zip(optimizer.model_variables, masks) if not mask.any()]


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_given_masks_equal_the_masked_path_bit_for_bit(kind):
    runs = []
    for update in ("auto", "masked"):
        model, x, y, masks = calibrated(kind)
        optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), masks=masks, update=update)
        fit(model, optimizer, x, y, epochs=2)
        runs.append((values(model.trainable_variables), optimizer.update_path))
    assert [path for _, path in runs] == ["selected_only", "masked"]
    assert_bits(runs[0][0], runs[1][0])


def test_given_masks_under_xla_and_with_an_optimizer_that_stays_masked():
    model, x, y, masks = calibrated()
    before = values(model.trainable_variables)
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), masks=masks)
    fit(model, optimizer, x, y, epochs=1, jit_compile=True)
    for b, a, m in zip(before, values(model.trainable_variables), masks):
        assert np.array_equal(b[~m], a[~m]) and np.all(b[m] != a[m])
    model, x, y, masks = calibrated()
    before = values(model.trainable_variables)
    lamb = tf_selopt.SelectiveOptimizer(keras.optimizers.Lamb(1e-2), masks=masks)
    fit(model, lamb, x, y, epochs=1)
    assert lamb.update_path == "masked" and "Lamb" in lamb.masked_reason
    for b, a, m in zip(before, values(model.trainable_variables), masks):
        assert np.array_equal(b[~m], a[~m]) and np.all(b[m] != a[m])


def test_given_masks_resume_bit_for_bit_from_a_keras_file_and_a_checkpoint(tmp_path):
    model, x, y, masks = calibrated()
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), masks=masks)
    fit(model, optimizer, x, y, epochs=1)
    model.save(tmp_path / "m.keras")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    fit(model, optimizer, x, y, epochs=1)
    expected = values(model.trainable_variables)

    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.optimizer.preselected and loaded.optimizer.get_config() == optimizer.get_config()
    fit(loaded, loaded.optimizer, x, y, epochs=1)
    assert_bits(values(loaded.trainable_variables), expected)

    model2 = make_model("sequential")
    optimizer2 = tf_selopt.SelectiveOptimizer.from_config(optimizer.get_config())
    model2.compile(optimizer=optimizer2, loss=LOSS)
    optimizer2.build(model2.trainable_variables)
    tf.train.Checkpoint(model=model2, optimizer=optimizer2).read(path).assert_existing_objects_matched()
    fit(model2, optimizer2, x, y, epochs=1)
    assert_bits(values(model2.trainable_variables), expected)


def test_an_optimizer_rebuilt_from_its_config_without_its_weights_refuses_to_step():
    model, x, y, masks = calibrated()
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), masks=masks)
    fresh = tf_selopt.SelectiveOptimizer.from_config(optimizer.get_config())
    before = values(model.trainable_variables)
    model.compile(optimizer=fresh, loss=LOSS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="select no entry that trains"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert_bits(values(model.trainable_variables), before)


def test_given_masks_keep_pruned_entries_at_zero_and_work_with_trace_per_phase():
    model, x, y, _ = calibrated()
    pruning.prune(model, 0.5)
    masks = [np.ones(v.shape, bool) for v in model.trainable_variables]  # even pruned entries "selected"
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), masks=masks)
    model.compile(optimizer=optimizer, loss=LOSS)
    phases = tf_selopt.TracePerPhase()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[phases])
    kernels = pruning.prunable_variables(model)
    for v in kernels:
        assert np.all(v.numpy()[~pruning.pruning_mask(v).numpy()] == 0.0)
    assert int(optimizer.selected_count) == optimizer.num_parameters - int(optimizer.pruned_count)
    assert phases.phase is None and phases.released_bytes == 0


def test_given_masks_in_the_tf_keras_front_end_run_masked():
    import tf_keras

    from tf_selopt.keras2 import SelectiveOptimizer

    model = tf_keras.Sequential([tf_keras.Input((6,)), tf_keras.layers.Dense(4), tf_keras.layers.Dense(3)])
    masks = [np.zeros(v.shape, bool) for v in model.trainable_variables]
    masks[0][0, :] = True
    optimizer = SelectiveOptimizer(tf_keras.optimizers.Adam(1e-2), masks=masks)
    model.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = make_data("sequential")
    before = values(model.trainable_variables)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    for b, a, m in zip(before, values(model.trainable_variables), masks):
        assert np.array_equal(b[~m], a[~m]) and np.all(b[m] != a[m])
    assert int(optimizer.selected_count) == 4 and optimizer.preselected


@pytest.mark.parametrize(
    "masks, kwargs, word",
    [
        ("all", {}, "list of bool arrays"),
        (np.ones(3, bool), {}, "list of bool arrays"),
        ([np.ones((6, 8), np.float32)], {}, "bool array"),
        ([np.zeros((6, 8), bool)], {}, "no entry"),
        (None, dict(keep=5), "keep"),
        (None, dict(warmup_steps=3), "warmup_steps"),
        (None, dict(reselect_every=5), "reselect_every"),
    ],
)
def test_bad_masks_raise_at_construction(masks, kwargs, word):
    if masks is None:
        masks = [np.ones((6, 8), bool)]
    with pytest.raises(ValueError, match=word):
        tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(), masks=masks, **kwargs)


@pytest.mark.parametrize("change, word", [("count", "one bool array per"), ("shape", "has shape")])
def test_masks_that_do_not_fit_the_model_raise_at_build_before_any_state(change, word):
    model = make_model("sequential")
    masks = [np.ones(v.shape, bool) for v in model.trainable_variables]
    masks = masks[:-1] if change == "count" else masks[:-1] + [np.ones((4,), bool)]
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(), masks=masks)
    with pytest.raises(ValueError, match=word):
        optimizer.build(model.trainable_variables)
    assert optimizer.model_variables is None and optimizer.inner_optimizer.variables[2:] == []


# ----------------------------------------------------------------- calibrate on named and listed inputs
def tiny_bert_classifier():
    """keras_hub's BertTextClassifier built from config (no preset): vocab 100, 2 layers, hidden 32, seq 16."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=16
    )
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None, dropout=0.0)


def bert_data(n=32, length=16):
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, length + 1, n)
    x = {
        "token_ids": rng.integers(0, 100, (n, length)).astype("int32"),
        "segment_ids": (np.arange(length) >= lengths[:, None] // 2).astype("int32"),
        "padding_mask": (np.arange(length) < lengths[:, None]).astype("int32"),
    }
    return x, rng.integers(0, 3, n).astype("int32")


@pytest.mark.slow  # ~20 s on the shared machine: tracing the BERT gradient
def test_calibrate_takes_a_dict_of_arrays_and_selects_the_top_fisher_scores():
    model = tiny_bert_classifier()
    x, y = bert_data(n=16)
    before = values(model.weights)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    masks = tf_selopt.calibrate(model, (x, y), loss=loss, keep=500, steps=1, batch_size=16)
    assert int(sum(m.sum() for m in masks)) == 500
    assert_bits(values(model.weights), before)
    with tf.GradientTape() as tape:  # the Fisher score by hand: g**2 of the one batch's mean loss
        value = loss(y, model(x, training=False))
    scores = np.concatenate(
        [tf.convert_to_tensor(g).numpy().ravel() ** 2 for g in tape.gradient(value, model.trainable_variables)]
    )
    chosen = np.concatenate([m.ravel() for m in masks])
    assert scores[chosen].min() >= scores[~chosen].max()


def test_calibrate_takes_a_list_of_arrays_and_a_py_dataset():
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    rng = np.random.default_rng(0)
    xa, xb, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2)), rng.normal(size=(8, 2))

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return [xa[4 * i : 4 * i + 4], xb[4 * i : 4 * i + 4]], y[4 * i : 4 * i + 4]

    masks = tf_selopt.calibrate(model, ([xa, xb], y), loss="mse", keep=4, steps=2, batch_size=4)
    assert int(sum(m.sum() for m in masks)) == 4
    assert_bits(masks, tf_selopt.calibrate(model, Batches(), loss="mse", keep=4, steps=2))
    assert_bits(masks, tf_selopt.calibrate(model, ({"a": xa, "b": xb}, y), loss="mse", keep=4, steps=2, batch_size=4))


@pytest.mark.parametrize(
    "change, word",
    [
        (lambda x: {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}, "keys must be the model's inputs"),
        (lambda x: x | {"tokens": x["token_ids"]}, r"unknown \['tokens'\]"),
        (lambda x: [x["token_ids"], x["padding_mask"]], "takes 3 inputs"),
        (lambda x: x["token_ids"], "pass a dict with the keys"),
        (lambda x: {k: np.tile(v, (1, 2)) for k, v in x.items()}, "sequence length 32, over the model's maximum 16"),
    ],
)
def test_calibrate_refuses_inputs_that_do_not_fit_the_model(change, word):
    model = tiny_bert_classifier()
    x, y = bert_data()
    cases = [(change(x), y)]
    if isinstance(change(x), dict):  # a dataset of lists or arrays reaches the model, which raises its own error
        cases.append(tf.data.Dataset.from_tensor_slices((change(x), y)).batch(8))
    for data in cases:
        with pytest.raises(ValueError, match=f"`data`.*{word}"):
            tf_selopt.calibrate(model, data, loss="sparse_categorical_crossentropy", keep=5, steps=1)
