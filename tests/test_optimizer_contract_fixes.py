"""SelectiveOptimizer against Keras' optimizer contract (issue 14): EMA, loss scaling, None gradients,
float8 overwrite variables, dtype casts, forwarding, clipping, Keras 3.15's newer inner optimizers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_selopt
from tf_selopt.keras.phases import TracePerPhase
from tf_selopt.keras2 import SelectiveOptimizer as TfKerasSelectiveOptimizer

ARGS = dict(criterion="gradient_sum", keep=5, warmup_steps=4, window=2, seed=0)


pytestmark = pytest.mark.usefixtures("fresh_keras_names")


@pytest.fixture(autouse=True)
def _float32_policy_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def data(n=32, features=4, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype("float32"), rng.normal(size=(n, outputs)).astype("float32")


def dense_model(features=4, outputs=3, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(outputs)]
    )


def values(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def assert_frozen_and_moved(before, after, masks):
    for b, a, m in zip(before, after, masks):
        np.testing.assert_array_equal(a[~m], b[~m])
    assert sum(int(np.sum(a[m] != b[m])) for b, a, m in zip(before, after, masks)) > 0


# --------------------------------------------------------------------------------------- 1. EMA
@pytest.mark.parametrize(
    "inner",
    [
        lambda: keras.optimizers.AdamW(0.05, weight_decay=0.5, use_ema=True),
        lambda: keras.optimizers.SGD(0.05, weight_decay=0.5, use_ema=True),
        lambda: keras.optimizers.SGD(0.05, weight_decay=0.5, use_ema=True, ema_overwrite_frequency=3),
    ],
    ids=["adamw", "sgd", "sgd_overwrite"],
)
def test_ema_keeps_frozen_entries_through_fit_and_finalize(inner):
    x, y = data()
    model = dense_model()
    optimizer = tf_selopt.SelectiveOptimizer(inner(), **ARGS)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # 4 warm-up steps, then finalize
    assert int(optimizer.iterations) == 4
    before = values(model)
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)  # selection, 11 restricted steps, finalize
    assert int(optimizer.selections) == 1
    masks = [m.numpy() for m in optimizer.masks]
    assert_frozen_and_moved(before, values(model), masks)
    # the average of a frozen entry is its value
    for v, average, m in zip(
        model.trainable_variables, optimizer.inner_optimizer._model_variables_moving_average, masks
    ):
        np.testing.assert_array_equal(average.numpy()[~m], v.numpy()[~m])


def test_ema_keeps_frozen_entries_tf_keras():
    x, y = data()
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.Input((4,)), tf_keras.layers.Dense(8, activation="tanh"), tf_keras.layers.Dense(3)]
    )
    inner = tf_keras.optimizers.AdamW(0.05, weight_decay=0.5, use_ema=True)
    optimizer = TfKerasSelectiveOptimizer(inner, **ARGS)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    masks = [m.numpy() for m in optimizer.masks]
    assert_frozen_and_moved(before, [v.numpy() for v in model.trainable_variables], masks)


# ------------------------------------------------------------------------------ 2. loss scaling
def test_loss_scale_optimizer_turns_off_the_wrapped_scaling():
    grads = [tf.constant([300.0, -200.0])]
    results = []
    for wrap in (False, True):
        sgd = keras.optimizers.SGD(0.5, loss_scale_factor=100)
        variable = keras.Variable([1.0, 2.0])
        inner = tf_selopt.SelectiveOptimizer(sgd, keep=1, warmup_steps=3, window=1, seed=0) if wrap else sgd
        lso = keras.optimizers.LossScaleOptimizer(inner, initial_scale=4.0)
        assert sgd.loss_scale_factor is None and inner.loss_scale_factor is None
        lso.apply(grads, [variable])
        results.append(variable.numpy())
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[0], np.float32([1.0, 2.0]) - np.float32(0.5) * np.float32([75.0, -50.0]))


def test_loss_scale_under_mixed_float16_compile_is_plain_keras():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = data()
    results = []
    for wrap in (False, True):
        model = dense_model()
        sgd = keras.optimizers.SGD(0.5, loss_scale_factor=100)
        optimizer = tf_selopt.SelectiveOptimizer(sgd, keep=5, warmup_steps=8, window=2, seed=0) if wrap else sgd
        model.compile(optimizer=optimizer, loss="mse")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)  # 8 warm-up steps
        results.append(values(model))
    for a, b in zip(*results):
        np.testing.assert_array_equal(b, a)


# ------------------------------------------------------------------------------ 3. None gradients
def test_none_gradient_warns_and_all_none_raise_as_keras():
    a, b = keras.Variable([1.0, 2.0], name="a"), keras.Variable([3.0], name="b")
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.SGD(0.1), keep=1, warmup_steps=2, window=1, seed=0)
    with pytest.warns(UserWarning, match=r"Gradients do not exist for variables \['b'\] when minimizing the loss"):
        optimizer.apply([tf.constant([1.0, 1.0]), None], [a, b])
    np.testing.assert_allclose(a.numpy(), [0.9, 1.9])
    assert int(optimizer.iterations) == 1
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        optimizer.apply([None, None], [a, b])


def test_fit_on_a_loss_without_the_weights_raises():
    x, y = data()
    model = dense_model()
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.SGD(0.1), **ARGS)
    model.compile(optimizer=optimizer, loss=lambda y_true, y_pred: keras.ops.mean(y_true))
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_none_gradient_tf_keras():
    a, b = tf.Variable([1.0, 2.0], name="a"), tf.Variable([3.0], name="b")
    optimizer = TfKerasSelectiveOptimizer(tf_keras.optimizers.SGD(0.1), keep=1, warmup_steps=2, window=1, seed=0)
    optimizer.apply_gradients([(tf.constant([1.0, 1.0]), a), (None, b)])
    assert int(optimizer.iterations) == 1
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        optimizer.apply_gradients([(None, a), (None, b)])


# ------------------------------------------------------------------------- 4. float8 variables
def float8_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.quantize("float8")
    return model


def test_float8_overwrite_variables_are_no_parameters():
    x, y = data(features=8, outputs=4)
    reference = float8_model()
    reference.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    reference.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model = float8_model()
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) > 36  # scales and amax histories
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.SGD(0.1), keep=5, warmup_steps=4, window=2, seed=0)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)  # 4 warm-up steps: Keras' own, bit for bit
    for a, b in zip(reference.trainable_variables, model.trainable_variables):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=b.path)
    assert optimizer.num_parameters == 36 and len(optimizer.masks) == 2
    parameters = optimizer.model_variables
    scales = [v for v in model.trainable_variables if getattr(v, "overwrite_with_gradient", False)]
    before, scales_before = [v.numpy().copy() for v in parameters], [v.numpy().copy() for v in scales]
    model.fit(x, y * 3.0, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert int(optimizer.selected_count) == 5 and optimizer.k == 5
    np.testing.assert_allclose(float(optimizer.frozen_fraction), 31 / 36)
    assert_frozen_and_moved(before, [v.numpy() for v in parameters], [m.numpy() for m in optimizer.masks])
    assert any(np.any(v.numpy() != b) for v, b in zip(scales, scales_before))  # still overwritten each step


# ---------------------------------------------------------------------- 5. float64 variables
def test_float64_variable_with_float32_gradients():
    variable = keras.Variable(np.arange(1.0, 5.0), dtype="float64")
    plain = keras.Variable(np.arange(1.0, 5.0), dtype="float64")
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.SGD(0.1), keep=2, warmup_steps=2, window=2, seed=0)
    sgd = keras.optimizers.SGD(0.1)
    grads = [tf.constant([1.0, -3.0, 0.5, 2.0], tf.float32)] * 4
    for step, g in enumerate(grads):
        optimizer.apply([g], [variable])
        if step < 2:
            sgd.apply([g], [plain])
            np.testing.assert_array_equal(variable.numpy(), plain.numpy())
    assert int(optimizer.selections) == 1
    mask = optimizer.masks[0].numpy()
    np.testing.assert_array_equal(mask, [False, True, False, True])
    np.testing.assert_array_equal(variable.numpy()[~mask], plain.numpy()[~mask])


# ------------------------------------------------------------------------ 6. better than LSO
def test_get_and_set_weights_cover_the_inner_state():
    x, y = data()
    model = dense_model()
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(0.01), **ARGS)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    weights = optimizer.get_weights()
    k_sized = [v for clone in optimizer._selected_only_clones for v in clone.variables]
    assert optimizer.update_path == "selected_only" and k_sized
    assert len(weights) == len(optimizer._variables) + len(optimizer.inner_optimizer.variables) + len(k_sized)
    other = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(0.01), **ARGS)
    other.build(model.trainable_variables)
    other.set_weights(weights)
    for a, b in zip(optimizer.variables, other.variables):
        np.testing.assert_array_equal(b.numpy(), a.numpy())
    assert int(other.iterations) == 8 and int(other.selections) == 1
    with pytest.raises(ValueError, match="`weights` must hold"):
        other.set_weights(weights[:-1])
    with pytest.raises(ValueError, match="has shape"):
        other.set_weights([np.zeros((2,))] * len(weights))


def test_exclude_from_weight_decay_reaches_the_inner():
    x, y = data()
    results = []
    for wrap in (False, True):
        model = dense_model()
        adamw = keras.optimizers.AdamW(0.05, weight_decay=0.5)
        optimizer = tf_selopt.SelectiveOptimizer(adamw, keep=5, warmup_steps=8, window=2, seed=0) if wrap else adamw
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append(values(model))
    for a, b in zip(*results):
        np.testing.assert_array_equal(b, a)


def test_apply_returns_the_inner_iterations():
    variable = keras.Variable([1.0, 2.0])
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.SGD(0.1), keep=1, warmup_steps=2, window=1, seed=0)
    assert int(optimizer.apply_gradients([(tf.constant([1.0, 1.0]), variable)])) == 1
    assert int(optimizer.apply([tf.constant([1.0, 1.0])], [variable])) == 2


@pytest.mark.parametrize("front_end", ["keras3", "tf_keras"])
def test_config_with_keras_base_defaults_loads(front_end):
    if front_end == "keras3":
        cls, inner = tf_selopt.SelectiveOptimizer, keras.optimizers.SGD(0.1)
        base = keras.optimizers.Optimizer(learning_rate=0.1).get_config()
    else:
        cls, inner = TfKerasSelectiveOptimizer, tf_keras.optimizers.SGD(0.1)
        base = tf_keras.optimizers.SGD(0.1).get_config()
        base.pop("momentum"), base.pop("nesterov")
    base.pop("name"), base.pop("learning_rate")
    config = cls(inner, **ARGS).get_config() | base
    loaded = cls.from_config(config)
    assert loaded.keep == 5 and loaded.inner_optimizer.get_config() == inner.get_config()
    with pytest.raises(ValueError, match="does not take `ema_momentum`: set it on the inner optimizer"):
        cls.from_config(config | {"ema_momentum": 0.5})


# ------------------------------------------------------------------------------- 7. clipping
@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_clipping_clips_what_trains(clip):
    """Gradient [100, 100], the second entry frozen: the trained entry's step is plain SGD's on a 1-entry problem."""
    variable = keras.Variable([1.0, 1.0])
    optimizer = tf_selopt.SelectiveOptimizer(
        keras.optimizers.SGD(1.0, **{clip: 1.0}), criterion="magnitude", keep=1, warmup_steps=1, seed=0
    )
    plain_pair = keras.Variable([1.0, 1.0])
    keras.optimizers.SGD(1.0, **{clip: 1.0}).apply([tf.constant([100.0, 100.0])], [plain_pair])
    grads = [tf.constant([100.0, 100.0])]
    optimizer.apply(grads, [variable])  # warm-up: the plain optimizer on both entries
    np.testing.assert_array_equal(variable.numpy(), plain_pair.numpy())
    variable.assign([2.0, 1.0])  # the magnitude criterion selects the first entry
    optimizer.apply(grads, [variable])
    np.testing.assert_array_equal(optimizer.masks[0].numpy(), [True, False])
    single = keras.Variable([2.0])
    keras.optimizers.SGD(1.0, **{clip: 1.0}).apply([tf.constant([100.0])], [single])
    np.testing.assert_array_equal(variable.numpy(), [single.numpy()[0], 1.0])
    assert float(single.numpy()[0]) == 1.0


@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_clipping_per_phase_equals_the_general_step(clip):
    x, y = data(n=64)
    results = []
    for callbacks in ([], [TracePerPhase()]):
        model = dense_model()
        optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.SGD(0.5, **{clip: 0.1}), **ARGS)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
        results.append(values(model))
    assert callbacks[0].switches >= 2
    for a, b in zip(*results):
        np.testing.assert_array_equal(b, a)


# ------------------------------------------------------------- 8. Keras 3.15's newer optimizers
NEW_INNER = {
    "muon": lambda: keras.optimizers.Muon(0.02),
    "schedule_free_adamw": lambda: keras.optimizers.ScheduleFreeAdamW(0.02, weight_decay=0.1),
    "lamb": lambda: keras.optimizers.Lamb(0.02),
    "adafactor": lambda: keras.optimizers.Adafactor(0.02),
    "ftrl": lambda: keras.optimizers.Ftrl(0.02, l1_regularization_strength=0.01),
}


@pytest.mark.parametrize("inner", sorted(NEW_INNER))
def test_newer_inner_optimizers_keep_frozen_entries(inner):
    x, y = data()
    model = dense_model()
    optimizer = tf_selopt.SelectiveOptimizer(NEW_INNER[inner](), **ARGS)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    before = values(model)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert int(optimizer.selections) == 1 and int(optimizer.selected_count) == 5
    assert_frozen_and_moved(before, values(model), [m.numpy() for m in optimizer.masks])


def test_multi_optimizer_with_a_selective_optimizer():
    x, y = data()
    model = dense_model()
    selective = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(0.02), **ARGS)
    multi = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(keras.optimizers.SGD(0.05), {".*dense_1.*": selective})
    )
    model.compile(optimizer=multi, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    first, second = model.layers
    assert [v.path for v in selective.model_variables] == [v.path for v in second.trainable_variables]
    before = values(model)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert int(selective.selections) == 1 and selective.num_parameters == 27
    after = values(model)
    assert all(np.all(a != b) for a, b in zip(after[:2], before[:2]))  # the SGD part trains everything
    assert_frozen_and_moved(before[2:], after[2:], [m.numpy() for m in selective.masks])
