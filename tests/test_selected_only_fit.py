"""The selected-only path inside ``tf_selopt.SelectiveOptimizer`` (``update="auto"``): chosen where exact,
bit-identical to ``update="masked"`` through ``model.fit`` (graph mode, default graph options, XLA),
frozen entries never written, exactly k trained, resumable from any phase, and masked with a reason
everywhere else."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BATCH, LOSS, fit, make_data, make_model

import tf_selopt
from tf_selopt.core import _compat as core_compat

EXACT_IN_GRAPH = {
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adam_amsgrad_clipvalue": lambda: keras.optimizers.Adam(1e-2, amsgrad=True, clipvalue=0.1),
    "adam_ema": lambda: keras.optimizers.Adam(1e-2, use_ema=True, ema_overwrite_frequency=3),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    "adamax": lambda: keras.optimizers.Adamax(1e-2),
    "nadam": lambda: keras.optimizers.Nadam(1e-2),
    "lion": lambda: keras.optimizers.Lion(1e-3),
}


pytestmark = pytest.mark.usefixtures("fresh_keras_names")


def selective(make, **kwargs):
    defaults = dict(criterion="gradient_sum", keep=0.2, warmup_steps=4, window=3, seed=0)
    return tf_selopt.SelectiveOptimizer(make(), **(defaults | kwargs))


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def assert_bits(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def run(kind, make, update, epochs=3, jit_compile=False, **kwargs):
    x, y = make_data(kind)
    model = make_model(kind)
    optimizer = selective(make, update=update, **kwargs)
    fit(model, optimizer, x, y, epochs=1, jit_compile=jit_compile)  # warm-up and the selection at step 3
    before = weights(model)
    fit(model, optimizer, x, y, epochs=epochs - 1)
    return model, optimizer, before


# ------------------------------------------------------------- bit for bit
# Plain SGD (no slot, the same one-line update on both paths) is checked eagerly in test_selected_only.py.
@pytest.mark.parametrize("name", sorted(EXACT_IN_GRAPH))
def test_fit_equals_the_masked_path_bit_for_bit(name):
    """Same model, data and masks: every weight equal after the restricted phase, frozen entries unwritten."""
    masked, masked_opt, _ = run("sequential", EXACT_IN_GRAPH[name], "masked")
    model, optimizer, before = run("sequential", EXACT_IN_GRAPH[name], "auto")
    assert (masked_opt.update_path, optimizer.update_path) == ("masked", "selected_only")
    assert optimizer.masked_reason == "" and not optimizer.restores_frozen
    assert_bits(optimizer.masks, masked_opt.masks)
    assert_bits(weights(model), weights(masked))
    masks = [m.numpy() for m in optimizer.masks]
    assert sum(int(m.sum()) for m in masks) == optimizer.k == int(optimizer.selected_count)
    moved = 0
    for b, a, m in zip(before, weights(model), masks):
        np.testing.assert_array_equal(a[~m], b[~m])
        moved += int(np.sum(a[m] != b[m]))
    assert moved > 0.5 * optimizer.k
    assert int(optimizer.iterations) == int(masked_opt.iterations) == 12


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_conv_and_embedding_models_equal_the_masked_path(kind):
    """Conv2D + BatchNorm, and an Embedding whose gradient is IndexedSlices (gathered without densifying)."""
    masked, _, _ = run(kind, EXACT_IN_GRAPH["adam"], "masked", scope="per_variable")
    model, optimizer, _ = run(kind, EXACT_IN_GRAPH["adam"], "auto", scope="per_variable")
    assert optimizer.update_path == "selected_only"
    assert_bits(weights(model), weights(masked))


@pytest.mark.parametrize("name", ["adam", "sgd_nesterov"])
def test_xla_equals_the_masked_path_compiled_the_same_way(name):
    masked, _, _ = run("functional", EXACT_IN_GRAPH[name], "masked", jit_compile=True)
    model, optimizer, _ = run("functional", EXACT_IN_GRAPH[name], "auto", jit_compile=True)
    assert optimizer.update_path == "selected_only"
    assert_bits(weights(model), weights(masked))


@pytest.mark.parametrize("name", ["sgd_nesterov", "lion"])
def test_reselection_equals_the_masked_path_where_it_zeroes_the_state(name):
    masked, masked_opt, _ = run("sequential", EXACT_IN_GRAPH[name], "masked", epochs=4, reselect_every=5)
    model, optimizer, _ = run("sequential", EXACT_IN_GRAPH[name], "auto", epochs=4, reselect_every=5)
    assert optimizer.update_path == "selected_only"
    assert int(optimizer.selections) == int(masked_opt.selections) == 3  # steps 3, 8, 13
    assert_bits(optimizer.masks, masked_opt.masks)
    assert_bits(weights(model), weights(masked))


def test_reselection_with_adam_runs_selected_only_only_when_asked():
    """Adam's masked path keeps decaying a frozen entry's moments; the selected-only path starts a newly
    selected entry from zero (the issue's rule), so ``auto`` stays masked and ``selected_only`` differs."""
    _, auto, _ = run("sequential", EXACT_IN_GRAPH["adam"], "auto", epochs=4, reselect_every=5)
    assert auto.update_path == "masked" and "reselect_every" in auto.masked_reason
    model, asked, before = run("sequential", EXACT_IN_GRAPH["adam"], "selected_only", epochs=4, reselect_every=5)
    assert asked.update_path == "selected_only" and int(asked.selections) == 3
    masks = [m.numpy() for m in asked.masks]
    assert sum(int(m.sum()) for m in masks) == asked.k


# ------------------------------------------------------------- which path
@pytest.mark.parametrize(
    "make, kwargs, word",
    [
        (lambda: keras.optimizers.RMSprop(1e-2), {}, "1 ulp"),
        (lambda: keras.optimizers.Adagrad(0.1), {}, "1 ulp"),
        (lambda: keras.optimizers.Adam(1e-2, clipnorm=1.0), {}, "clipnorm"),
        (lambda: keras.optimizers.Lamb(1e-2), {}, "profiled optimizers"),
        (lambda: keras.optimizers.Ftrl(1e-2), {}, "Ftrl"),
        (lambda: keras.optimizers.Adam(1e-2), {"update": "masked"}, "update='masked'"),
    ],
)
def test_auto_runs_masked_with_a_reason(make, kwargs, word):
    optimizer = selective(make, **kwargs)
    model = make_model("sequential")
    optimizer.build(model.trainable_variables)
    assert optimizer.update_path == "masked"
    assert word in optimizer.masked_reason


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: keras.optimizers.Adam(1e-2, clipnorm=1.0), "clipnorm"),
        (lambda: keras.optimizers.Lamb(1e-2), "profiled optimizers"),
    ],
)
def test_selected_only_where_it_is_not_exact_raises_at_build_before_any_state(make, word):
    optimizer = selective(make, update="selected_only")
    model = make_model("sequential")
    counters = [v.path for v in optimizer.variables]  # iterations and learning rates (Keras' constructor)
    with pytest.raises(ValueError, match=f"`update`='selected_only'.*{word}.*'auto'.*'masked'"):
        optimizer.build(model.trainable_variables)
    assert not optimizer.built and [v.path for v in optimizer.variables] == counters


def test_rmsprop_runs_selected_only_when_asked_and_equals_eager():
    """Asked for, RMSprop runs selected-only: bit-identical to the masked path eagerly (the 1-ulp difference
    is Grappler's rewrite of x/sqrt(y) in a tf.function)."""
    results = []
    for update in ("masked", "selected_only"):
        model = make_model("sequential")
        optimizer = selective(lambda: keras.optimizers.RMSprop(1e-2, momentum=0.9), update=update)
        x, y = make_data("sequential")
        for step in range(8):
            with tf.GradientTape() as tape:
                loss = LOSS(y[step * 8 : step * 8 + 8], model(x[step * 8 : step * 8 + 8], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        assert optimizer.update_path == update
        results.append(weights(model))
    assert_bits(*results)


def test_under_a_distribution_strategy_the_path_is_selected_only():
    """Built under a strategy, the selected-only path is chosen as without one. Training under MirroredStrategy
    (2 devices) and MultiWorkerMirroredStrategy runs in tests/test_distributed.py's subprocesses: a fit under a
    strategy inside a long-lived test worker crashed it once (a segmentation fault in Keras' epoch iterator)."""
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = make_model("sequential")
        optimizer = selective(EXACT_IN_GRAPH["adam"])
        optimizer.build(model.trainable_variables)
    assert optimizer.update_path == "selected_only" and optimizer.masked_reason == ""


def test_update_is_in_the_config_and_an_old_config_loads_masked():
    optimizer = selective(EXACT_IN_GRAPH["adam"], update="selected_only")
    config = optimizer.get_config()
    assert config["update"] == "selected_only"
    assert tf_selopt.SelectiveOptimizer.from_config(config).get_config() == config
    del config["update"]  # a file written before the selected-only path: its state has the masked layout
    assert tf_selopt.SelectiveOptimizer.from_config(config).get_config()["update"] == "masked"


# ------------------------------------------------------------- state and resume
def test_optimizer_state_is_k_sized_after_build():
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adam"], keep=5)
    optimizer.build(model.trainable_variables)
    n = optimizer.num_parameters
    k_sized = [v for v in optimizer.variables if "selected_values" in v.path]
    assert k_sized and all(tuple(v.shape) == (5,) for v in k_sized)  # values and Adam's two moments
    assert len(k_sized) == 3
    assert sum(int(np.prod(v.shape)) for v in optimizer.inner_optimizer.variables) > 2 * n  # the warm-up's


@pytest.mark.parametrize("warmup_steps, phase", [(9, "warm-up"), (6, "window"), (2, "restricted")])
def test_keras_file_resumes_bit_for_bit_from_every_phase(warmup_steps, phase, tmp_path):
    x, y = make_data("sequential")
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adamw"], warmup_steps=warmup_steps, window=min(3, warmup_steps))
    fit(model, optimizer, x, y, epochs=1)  # 4 steps: 0..3
    assert int(optimizer.selections) == (phase == "restricted")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.optimizer.update_path == "selected_only"
    assert_bits(optimizer.variables, loaded.optimizer.variables)
    fit(model, optimizer, x, y, epochs=3)
    loaded.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    assert int(loaded.optimizer.selections) == int(optimizer.selections) == 1
    assert_bits(weights(model), weights(loaded))
    assert_bits(optimizer.variables, loaded.optimizer.variables)


def test_tf_checkpoint_resumes_the_restricted_phase_bit_for_bit(tmp_path):
    x, y = make_data("subclassed")
    model = make_model("subclassed")
    optimizer = selective(EXACT_IN_GRAPH["adam"])
    fit(model, optimizer, x, y, epochs=2)  # selected at step 3, which released the warm-up state in-graph
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))  # nothing read before
    other = make_model("subclassed", seed=5)
    other_optimizer = selective(EXACT_IN_GRAPH["adam"])
    other_optimizer.build(other.trainable_variables)
    status = tf.train.Checkpoint(model=other, optimizer=other_optimizer).read(path)
    other_optimizer.release_warmup_state()
    status.assert_consumed()
    assert_bits(optimizer.variables, other_optimizer.variables)
    fit(model, optimizer, x, y, epochs=1)
    fit(other, other_optimizer, x, y, epochs=1)
    assert_bits(weights(model), weights(other))


def test_a_non_finite_step_in_the_restricted_phase_changes_nothing():
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adam"], warmup_steps=2, window=1)
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    for _ in range(3):
        optimizer.apply_gradients(zip([tf.constant(rng.normal(size=v.shape), v.dtype) for v in variables], variables))
    assert optimizer.update_path == "selected_only" and int(optimizer.selections) == 1
    state = [v.numpy().copy() for v in optimizer.variables]
    before = weights(model)
    bad = [tf.fill(v.shape, np.nan) for v in variables]
    optimizer.apply_gradients(zip(bad, variables))
    assert_bits(weights(model), before)
    assert int(optimizer.skipped_steps) == 1
    changed = [v.path for v, s in zip(optimizer.variables, state) if not np.array_equal(v.numpy(), s)]
    assert changed == [optimizer.skipped_steps.path]


# ------------------------------------------------------------- releasing the warm-up state
def fit_with_release(model, optimizer, x, y, epochs, **kwargs):
    phases = tf_selopt.TracePerPhase(**kwargs)
    if not model.compiled or model.optimizer is not optimizer:
        model.compile(optimizer=optimizer, loss=LOSS)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=[phases])
    return phases


def test_trace_per_phase_releases_the_warmup_state_and_training_is_unchanged():
    x, y = make_data("sequential")
    reference = make_model("sequential")
    fit(reference, selective(EXACT_IN_GRAPH["adam"]), x, y, epochs=3)
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adam"])
    n = len(model.trainable_variables)
    phases = fit_with_release(model, optimizer, x, y, epochs=3)
    assert optimizer.warmup_state_released and optimizer.scores is None
    n_params = optimizer.num_parameters
    assert phases.released_bytes == n_params * (8 + 4 + 4)  # Adam's m and v, scores, the window's sums
    assert_bits(weights(model), weights(reference))
    assert len(optimizer.variables) == 5 + n + 3 + 2 + 4  # counters, masks, values/positions/offsets, inner, clone
    assert all(int(np.prod(v.shape)) <= 1 for v in optimizer.inner_optimizer.variables)  # counters only
    names = [v.path for v in optimizer.variables]
    assert not any(name.endswith(("_score", "criterion_sum", "_momentum", "_velocity")) for name in names[:-2])
    assert optimizer.get_weights() and len(optimizer.get_weights()) == len(optimizer.variables)


def test_keep_scores_keeps_the_scores_only():
    x, y = make_data("sequential")
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adam"])
    phases = fit_with_release(model, optimizer, x, y, epochs=2, keep_scores=True)
    assert optimizer.warmup_state_released and phases.released_bytes == optimizer.num_parameters * (8 + 4)
    assert len(optimizer.scores) == len(model.trainable_variables)


def _nbytes(v):
    return int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size


def _assert_released_at_selection(optimizer, emptied):
    """The optimizer holds what the restricted phase reads only (masks 1 B/param, k-sized state, counters) and
    every emptied variable holds no entry (its memory is freed), while its static shape is unchanged."""
    assert optimizer.warmup_state_released and optimizer.scores is None
    n = optimizer.num_parameters
    masks = [v for v in optimizer.variables if v.dtype == "bool"]
    assert sum(_nbytes(v) for v in masks) == n
    assert all(int(np.prod(v.shape)) <= optimizer.k for v in optimizer.variables if v.dtype != "bool")
    assert emptied and all(core_compat.holds_no_entries(v) for v in emptied)
    assert optimizer.released_bytes == sum(_nbytes(v) for v in emptied) == n * (8 + 4 + 4)  # m, v, scores, sums


def _warmup_state(optimizer):
    """Adam's N-sized moments, the scores and the window's sums, before they are released."""
    inner = [v for v in optimizer.inner_optimizer.variables if len(v.shape)]
    return list(optimizer.scores) + [v for s in optimizer.criterion_state for v in s.values()] + inner


def test_plain_fit_releases_the_warmup_state_at_the_selection_and_training_is_unchanged():
    """No callback, no retrace: the selection step empties the N-sized state in-graph; the weights equal the
    masked path's bit for bit, in the epoch of the selection and after it."""
    x, y = make_data("sequential")
    masked, _, _ = run("sequential", EXACT_IN_GRAPH["adam"], "masked")
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adam"])
    optimizer.build(model.trainable_variables)
    emptied = _warmup_state(optimizer)
    fit(model, optimizer, x, y, epochs=2)  # the selection at step 4, the first of the second epoch
    traced = model.train_function
    _assert_released_at_selection(optimizer, emptied)
    fit(model, optimizer, x, y, epochs=1)
    assert model.train_function is traced  # the same trace ran on
    assert_bits(weights(model), weights(masked))


def test_a_custom_loop_releases_at_the_selection_too():
    x, y = make_data("sequential")
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adam"])
    optimizer.build(model.trainable_variables)
    emptied = _warmup_state(optimizer)
    variables = model.trainable_variables

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = keras.losses.get(LOSS)(yb, model(xb, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for i in range(6):  # the selection at step 4
        b = i % (len(x) // BATCH) * BATCH
        step(x[b : b + BATCH], y[b : b + BATCH])
    _assert_released_at_selection(optimizer, emptied)


def test_under_xla_the_selection_keeps_the_state_and_release_warmup_state_drops_it():
    """Compiled resources keep their shape: under XLA the state stays until ``release_warmup_state``."""
    x, y = make_data("sequential")
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adam"])
    fit(model, optimizer, x, y, epochs=2, jit_compile=True)
    assert int(optimizer.selections) == 1 and not optimizer.warmup_state_released
    assert optimizer.released_bytes == 0
    assert optimizer.release_warmup_state() == optimizer.num_parameters * (8 + 4 + 4)


def test_keep_scores_and_the_monitor_keep_the_scores_at_the_selection(tmp_path):
    x, y = make_data("sequential")
    for callbacks in ([], [tf_selopt.SelectionMonitor(str(tmp_path))]):
        model = make_model("sequential")
        optimizer = selective(EXACT_IN_GRAPH["adam"])
        if not callbacks:
            optimizer.keep_scores = True
        fit(model, optimizer, x, y, epochs=2, callbacks=callbacks)
        assert optimizer.warmup_state_released and optimizer.keep_scores
        assert optimizer.released_bytes == optimizer.num_parameters * (8 + 4)
        assert [tuple(s.shape) for s in optimizer.scores] == [tuple(v.shape) for v in model.trainable_variables]
        assert np.concatenate([np.ravel(s.numpy()) for s in optimizer.scores]).max() > 0
    with pytest.raises(ValueError, match="`keep_scores` must be True or False"):
        optimizer.keep_scores = 1


def test_keras_file_after_release_loads_released_and_continues_bit_for_bit(tmp_path):
    x, y = make_data("sequential")
    model = make_model("sequential")
    optimizer = selective(EXACT_IN_GRAPH["adamw"])
    fit_with_release(model, optimizer, x, y, epochs=2)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.optimizer.warmup_state_released
    assert_bits(optimizer.variables, loaded.optimizer.variables)
    fit(model, optimizer, x, y, epochs=2)
    loaded.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert_bits(weights(model), weights(loaded))


def test_tf_checkpoint_after_release_restores_then_releases(tmp_path):
    x, y = make_data("subclassed")
    model = make_model("subclassed")
    optimizer = selective(EXACT_IN_GRAPH["adam"])
    fit_with_release(model, optimizer, x, y, epochs=2)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    other = make_model("subclassed", seed=5)
    other_optimizer = selective(EXACT_IN_GRAPH["adam"])
    other_optimizer.build(other.trainable_variables)
    status = tf.train.Checkpoint(model=other, optimizer=other_optimizer).read(path)
    other_optimizer.release_warmup_state()
    status.assert_existing_objects_matched()
    assert_bits(optimizer.variables, other_optimizer.variables)
    fit(model, optimizer, x, y, epochs=1)
    fit(other, other_optimizer, x, y, epochs=1)
    assert_bits(weights(model), weights(other))


@pytest.mark.parametrize(
    "kwargs, steps, word",
    [
        ({}, 2, "`selections` is 0"),
        ({"update": "masked"}, 5, "update_path"),
        ({"reselect_every": 4}, 5, "reselect_every"),
    ],
)
def test_release_where_it_cannot_raises_and_changes_nothing(kwargs, steps, word):
    model = make_model("sequential")
    make = EXACT_IN_GRAPH["lion"] if "reselect_every" in kwargs else EXACT_IN_GRAPH["adam"]
    optimizer = selective(make, **kwargs)
    variables = model.trainable_variables
    rng = np.random.default_rng(0)
    for _ in range(steps):
        optimizer.apply_gradients(zip([tf.constant(rng.normal(size=v.shape), v.dtype) for v in variables], variables))
    held = [v.path for v in optimizer.variables]
    with pytest.raises(ValueError, match=word):
        optimizer.release_warmup_state()
    assert [v.path for v in optimizer.variables] == held and not optimizer.warmup_state_released


def test_trace_per_phase_checks_its_arguments():
    with pytest.raises(ValueError, match="`release_warmup_state` and `keep_scores` must be True or False"):
        tf_selopt.TracePerPhase(release_warmup_state="yes")


def test_tf_keras_front_end_refuses_selected_only():
    """The tf_keras front end runs the masked path only; asking for selected-only says so."""
    import tf_keras

    from tf_selopt.keras2 import SelectiveOptimizer as TfKerasSelectiveOptimizer

    with pytest.raises(ValueError, match="`update`='selected_only' is not available in the tf_keras front end"):
        TfKerasSelectiveOptimizer(tf_keras.optimizers.Adam(1e-3), update="selected_only")
    optimizer = TfKerasSelectiveOptimizer(tf_keras.optimizers.Adam(1e-3))
    assert optimizer.get_config()["update"] == "auto"


@pytest.mark.parametrize("name", ["adam", "sgd_nesterov"])
def test_a_variable_without_gradient_is_skipped_as_on_the_masked_path(name):
    """Keras skips a variable whose gradient is None (with a warning); the selected-only path skips its selected
    entries too: values and inner state (Adam's moments, momentum, built up while it had gradients) untouched,
    every weight equal to the masked path bit for bit, also once its gradients return."""
    x, y = make_data("sequential")
    runs = []
    for update in ("masked", "auto"):
        keras.utils.set_random_seed(0)
        model = make_model("sequential")
        extra = keras.Variable(np.linspace(-1.0, 1.0, 12).reshape(4, 3).astype("float32"), name="extra")
        optimizer = selective(EXACT_IN_GRAPH[name], update=update, keep=0.3)
        variables = model.trainable_variables + [extra]

        @tf.function
        def step(xb, yb, with_extra):
            with tf.GradientTape() as tape:
                loss = LOSS(yb, model(xb, training=True))
                if with_extra:  # a Python flag: two traces, one where `extra` has no gradient
                    loss += tf.reduce_sum(tf.square(extra - 0.5))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

        for i in range(12):  # warm-up 4 with gradients, then steps alternating without and with them
            xb, yb = x[16 * (i % 4) : 16 * (i % 4 + 1)], y[16 * (i % 4) : 16 * (i % 4 + 1)]
            step(xb, yb, i < 6 or i % 2 == 0)
        runs.append((variables, optimizer))
    (masked, masked_opt), (ours, opt) = runs
    assert (masked_opt.update_path, opt.update_path) == ("masked", "selected_only")
    assert_bits(opt.masks, masked_opt.masks)
    assert bool(np.any(opt.masks[-1].numpy()))  # `extra` has selected entries
    assert_bits([v.numpy() for v in ours], [v.numpy() for v in masked])


@pytest.mark.parametrize("name", ["adam_ema"])  # Adam's update, then the EMA reads the scattered values
def test_the_compiled_scatter_equals_the_masked_path_bit_for_bit(name, monkeypatch):
    """From ``COMPILED_SCATTER_MIN_ENTRIES`` selected entries on the scatter back is compiled by XLA inside the
    ordinary step; forced here on a small model (the kernel's and XLA's writes are the same writes)."""
    from tf_selopt.core import selected_only

    masked, _, _ = run("sequential", EXACT_IN_GRAPH[name], "masked")
    calls = []
    compiled = selected_only._compiled_scatter
    monkeypatch.setattr(selected_only, "COMPILED_SCATTER_MIN_ENTRIES", 1)
    monkeypatch.setattr(selected_only, "_compiled_scatter", lambda *a: calls.append(1) or compiled(*a))
    model, optimizer, before = run("sequential", EXACT_IN_GRAPH[name], "auto")
    assert optimizer.update_path == "selected_only" and calls  # traced through the compiled scatter
    assert_bits(weights(model), weights(masked))
