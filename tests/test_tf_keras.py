"""tf_keras front end: the same core, the same guarantees as the Keras 3 SelectiveOptimizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from conftest import BAD_ARGUMENTS

import tf_selopt
from tf_selopt.keras2 import SelectiveOptimizer

CRITERIA = ("gradient_sum", "preconditioned", "fisher", "magnitude", "random")
TF_KERAS_INNER = {
    "sgd_momentum": lambda: tf_keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: tf_keras.optimizers.Adam(1e-2),
    "adamw": lambda: tf_keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    "rmsprop": lambda: tf_keras.optimizers.RMSprop(1e-2),
}
KERAS3_INNER = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(1e-2),
}
DEFAULTS = dict(criterion="gradient_sum", keep=0.2, warmup_steps=4, window=3, seed=0, num_examples=64)
BATCH = 16


pytestmark = pytest.mark.usefixtures("fresh_keras_names")


@pytest.fixture(autouse=True)
def _clear_tf_keras_session():
    tf_keras.backend.clear_session()


def selective(inner="adam", **kwargs):
    return SelectiveOptimizer(TF_KERAS_INNER[inner](), **(DEFAULTS | kwargs))


def make_model(seed=0):
    """Conv2D + BatchNorm + Dense, as the Keras 3 'functional' test model."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((6, 6, 1))
    h = tf_keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = tf_keras.layers.BatchNormalization()(h)
    h = tf_keras.layers.Flatten()(h)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3)(h))


def make_data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 1)).astype("float32"), rng.integers(0, 3, size=(n,)).astype("int32")


def fit(model, optimizer, x, y, epochs):
    if model.optimizer is not optimizer:
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss=loss)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


# ------------------------------------------------- one core, two front ends
# Every criterion with Adam, and SGD with momentum with gradient_sum: the criterion decides the masks only, the
# inner optimizer only the update, so the full grid adds nothing.
@pytest.mark.parametrize(
    "criterion, inner",
    [(c, "adam") for c in CRITERIA] + [("gradient_sum", i) for i in sorted(KERAS3_INNER) if i != "adam"],
)
def test_both_front_ends_take_the_same_steps_from_the_same_gradients(criterion, inner):
    """Identical variables and gradient sequences: identical masks, scores and weights, bit for bit."""
    rng = np.random.default_rng(0)
    shapes = [(5, 4), (4,), (4, 3)]
    init = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(9)]
    kwargs = DEFAULTS | dict(criterion=criterion, reselect_every=3)
    fronts = []
    for make_var, optimizer in (
        (lambda v, i: tf.Variable(v, name=f"w{i}"), SelectiveOptimizer(TF_KERAS_INNER[inner](), **kwargs)),
        (lambda v, i: keras.Variable(v, name=f"w{i}"), tf_selopt.SelectiveOptimizer(KERAS3_INNER[inner](), **kwargs)),
    ):
        variables = [make_var(v, i) for i, v in enumerate(init)]
        for step in grads:
            optimizer.apply_gradients(zip([tf.constant(g) for g in step], variables))
        fronts.append((optimizer, variables))
    (a, va), (b, vb) = fronts
    assert int(a.selections) == int(b.selections) == 2  # steps 4 and 7
    assert int(a.selected_count) == int(b.selected_count) == a.k == b.k
    for x, y in zip(va + a.masks + a.scores, vb + b.masks + b.scores):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------------ fit
@pytest.mark.parametrize("inner", sorted(TF_KERAS_INNER))
def test_fit_warmup_is_the_inner_bit_for_bit_then_frozen_entries_never_move(inner):
    x, y = make_data()
    reference, model = make_model(), make_model()
    fit(reference, TF_KERAS_INNER[inner](), x, y, epochs=1)
    optimizer = selective(inner, warmup_steps=4, keep=0.25)
    fit(model, optimizer, x, y, epochs=1)  # steps 0..3: warm-up only
    for a, b in zip(weights(reference), weights(model)):
        np.testing.assert_array_equal(a, b)
    assert int(optimizer.selections) == 0 and int(optimizer.selected_count) == optimizer.num_parameters
    fit(model, optimizer, x, y, epochs=1)  # step 4 selects, then restricted
    before, masks = weights(model), [m.numpy() for m in optimizer.masks]
    fit(model, optimizer, x, y, epochs=3)
    assert int(optimizer.selected_count) == optimizer.k == round(0.25 * optimizer.num_parameters)
    for b, a, m in zip(before, weights(model), masks):
        np.testing.assert_array_equal(a[~m], b[~m])
    moved = sum(int(np.sum(a[m] != b[m])) for b, a, m in zip(before, weights(model), masks))
    assert moved > 0.9 * optimizer.k


def test_fit_step_that_builds_the_optimizer_is_traced_once(monkeypatch):
    """tf_keras' ``fit`` builds the optimizer inside the first trace of its train step; ours creates its variables
    eagerly there, so the step is traced once (twice when they count as the function's), with the same weights
    and state as when built before ``fit``."""
    x, y = make_data()
    runs = []
    for built_before in (False, True):
        model, optimizer = make_model(), selective("adam")
        if built_before:
            optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        traces, train_step = [], model.train_step
        monkeypatch.setattr(model, "train_step", lambda data: traces.append(1) or train_step(data))
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)  # 8 steps, across the selection
        assert len(traces) == 1 and int(optimizer.selections) == 1, built_before
        runs.append(weights(model) + [v.numpy() for v in optimizer.variables])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_step_changes_nothing():
    x, y = make_data()
    model = make_model()
    optimizer = selective("adamw", warmup_steps=2, window=2)
    fit(model, optimizer, x, y, epochs=1)  # 4 steps: selected at step 2
    state = [v.numpy().copy() for v in model.trainable_variables + optimizer.variables]
    grads = [
        tf.fill(v.shape, np.float32(np.nan) if i == 1 else np.float32(0.5))
        for i, v in enumerate(model.trainable_variables)
    ]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    after = [v.numpy() for v in model.trainable_variables + optimizer.variables]
    changed = [i for i, (b, a) in enumerate(zip(state, after)) if not np.array_equal(a, b)]
    n = len(model.trainable_variables)
    assert [optimizer.variables[i - n] for i in changed] == [optimizer.skipped_steps]
    assert int(optimizer.skipped_steps) == 1 and int(optimizer.iterations) == 4


# ------------------------------------------------------------ save / load
def test_keras_file_round_trip_continues_bit_for_bit(tmp_path):
    x, y = make_data()
    model = make_model()
    optimizer = selective("adamw", criterion="preconditioned", warmup_steps=3, window=2, reselect_every=5)
    fit(model, optimizer, x, y, epochs=2)
    model.save(tmp_path / "m.keras")
    loaded = tf_keras.models.load_model(tmp_path / "m.keras")
    restored = loaded.optimizer
    assert isinstance(restored, SelectiveOptimizer) and restored.get_config() == optimizer.get_config()
    for a, b in zip(optimizer.variables, restored.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    fit(model, optimizer, x, y, epochs=2)
    loaded.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert int(restored.selections) == int(optimizer.selections) == 3  # steps 3, 8, 13
    for a, b in zip(weights(model) + optimizer.masks, weights(loaded) + restored.masks):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tf_checkpoint_round_trip(tmp_path):
    x, y = make_data()
    model = make_model()
    optimizer = selective("adam", warmup_steps=3, window=2)
    fit(model, optimizer, x, y, epochs=2)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    other = make_model(seed=5)
    other_opt = selective("adam", warmup_steps=3, window=2)
    other_opt.build(other.trainable_variables)
    tf.train.Checkpoint(model=other, optimizer=other_opt).read(path).assert_consumed()
    for a, b in zip(optimizer.variables, other_opt.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(other_opt.selections) == 1


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("front_end", ["keras3", "tf_keras"])
@pytest.mark.parametrize("kwargs, match", BAD_ARGUMENTS)
def test_both_front_ends_refuse_the_same_arguments(front_end, kwargs, match):
    if front_end == "keras3":
        make = lambda: tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(), **(DEFAULTS | kwargs))  # noqa: E731
    else:
        make = lambda: selective(**kwargs)  # noqa: E731
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("inner", [keras.optimizers.Adam, tf_keras.optimizers.legacy.Adam, lambda: None])
def test_inner_must_be_a_tf_keras_optimizer(inner):
    with pytest.raises(ValueError, match="`inner` must be a tf_keras optimizer"):
        SelectiveOptimizer(inner())


def test_keep_above_n_raises_at_build_and_creates_nothing():
    model = make_model()
    n = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    optimizer = selective(keep=n + 1)
    before = len(optimizer.variables)
    with pytest.raises(ValueError, match=rf"keep.*\[1, {n}\]"):
        optimizer.build(model.trainable_variables)
    assert len(optimizer.variables) == before


def test_distribution_strategy_is_refused_not_silently_wrong():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = make_model()
        model.compile(optimizer=selective(), loss="sparse_categorical_crossentropy")
    x, y = make_data()
    with pytest.raises(NotImplementedError, match="tf.distribute"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "make_masks",
    [
        lambda v: {"w": tf.ones(v.shape)},  # not a variable.ref()
        lambda v: {v.ref(): tf.ones([3])},  # wrong shape
        lambda v: {v.ref(): 1.0},  # not a mask
    ],
)
def test_watch_pruning_masks_refuses_bad_masks_before_any_change(make_masks):
    optimizer = SelectiveOptimizer(tf_keras.optimizers.Adam(), keep=0.5, warmup_steps=2, window=1)
    v = tf.Variable(tf.ones([2, 2]))
    with pytest.raises(ValueError, match="`masks` must map variable.ref"):
        optimizer.watch_pruning_masks(make_masks(v))
    assert len(optimizer._pruning_masks) == 0
