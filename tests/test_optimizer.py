"""SelectiveOptimizer (Keras 3): warm-up, window, selection, freezing, NaN steps, save/load."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BATCH, INNER, LOSS, MODEL_KINDS, fit, make_data, make_model

import tf_selopt
from tf_selopt.core import criteria

CRITERIA = ("gradient_sum", "preconditioned", "fisher", "magnitude", "random")


pytestmark = pytest.mark.usefixtures("fresh_keras_names")


def selective(inner="adam", **kwargs):
    defaults = dict(criterion="gradient_sum", keep=0.2, warmup_steps=4, window=3, seed=0, num_examples=64)
    return tf_selopt.SelectiveOptimizer(INNER[inner](), **(defaults | kwargs))


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def assert_frozen_and_moving(before, after, masks):
    """Frozen entries bit-identical; every variable with selected entries moved."""
    for b, a, m in zip(before, after, masks):
        np.testing.assert_array_equal(a[~m], b[~m])
    moved = sum(int(np.sum(a[m] != b[m])) for b, a, m in zip(before, after, masks))
    assert moved > 0.9 * sum(int(m.sum()) for m in masks)


# ------------------------------------------------------------------ warm-up
# Adam on every model kind, and each other inner on one kind (each kind twice): 6 runs, not 12.
WARMUP_CASES = [("adam", kind) for kind in MODEL_KINDS] + list(
    zip(sorted(set(INNER) - {"adam"}), ("subclassed", "functional", "sequential"))
)


@pytest.mark.usefixtures("same_graph_rewrites")
@pytest.mark.parametrize("inner, kind", WARMUP_CASES)
def test_warmup_is_the_inner_optimizer_bit_for_bit(kind, inner):
    x, y = make_data(kind)
    reference = make_model(kind)
    fit(reference, INNER[inner](), x, y, epochs=1)
    model = make_model(kind)
    # warmup 5 > 4 steps run; the window (3) is inside those steps.
    optimizer = selective(inner, warmup_steps=5, window=3)
    fit(model, optimizer, x, y, epochs=1)
    for a, b in zip(weights(reference), weights(model)):
        np.testing.assert_array_equal(a, b)
    assert int(optimizer.selections) == 0 and int(optimizer.selected_count) == optimizer.num_parameters


# Under XLA (a compile of ~10 s each): one criterion per kind of window state in the compiled step: one slot
# (gradient_sum; fisher differs only by g*g for |g|), two slots (preconditioned), none (random; magnitude too).
@pytest.mark.usefixtures("same_graph_rewrites")
@pytest.mark.parametrize("criterion", ["gradient_sum", "preconditioned", "random"])
def test_warmup_bitwise_under_xla(criterion):
    x, y = make_data("functional")
    reference = make_model("functional")
    fit(reference, INNER["adamw"](), x, y, epochs=1, jit_compile=True)
    model = make_model("functional")
    fit(model, selective("adamw", criterion=criterion, warmup_steps=4), x, y, epochs=1, jit_compile=True)
    for a, b in zip(weights(reference), weights(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("inner", sorted(INNER))
def test_warmup_bitwise_eager_with_default_graph_options(kind, inner):
    x, y = make_data(kind)
    models = [make_model(kind), make_model(kind)]
    optimizers = [INNER[inner](), selective(inner, warmup_steps=5, window=3)]
    for s in range(4):
        for model, optimizer in zip(models, optimizers):
            with tf.GradientTape() as tape:
                loss = LOSS(y[s * 16 : (s + 1) * 16], model(x[s * 16 : (s + 1) * 16], training=True))
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    for a, b in zip(weights(models[0]), weights(models[1])):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ masked phase
# Every criterion (which entries: the masks) with Adam, and every inner optimizer (how the restricted phase
# updates: selected-only for SGD with momentum, Adam and AdamW with its decay; masked for RMSprop) with
# gradient_sum: the criterion decides the masks only, the inner only the update, so the full grid adds nothing.
MASKED_PHASE_GRID = [(c, "adam") for c in CRITERIA] + [("gradient_sum", i) for i in sorted(INNER) if i != "adam"]


@pytest.mark.parametrize("criterion, inner", MASKED_PHASE_GRID)
def test_masked_phase_freezes_exactly(criterion, inner):
    x, y = make_data("functional")
    model = make_model("functional")
    optimizer = selective(inner, criterion=criterion, warmup_steps=4, keep=0.25)
    fit(model, optimizer, x, y, epochs=1)  # steps 0..3: warm-up only
    fit(model, optimizer, x, y, epochs=1)  # step 4 selects, then restricted
    before = weights(model)
    masks = [m.numpy() for m in optimizer.masks]
    fit(model, optimizer, x, y, epochs=3)
    assert int(optimizer.selected_count) == optimizer.k == round(0.25 * optimizer.num_parameters)
    assert sum(int(m.sum()) for m in masks) == optimizer.k
    assert_frozen_and_moving(before, weights(model), masks)
    assert np.isclose(float(optimizer.frozen_fraction), 1 - optimizer.k / optimizer.num_parameters)


# Graph mode: every kind x scope. XLA (a compile of ~10-20 s each): one case per model kind, the two scopes
# spread over them, so each behaviour is compiled once: Dense+BatchNorm (sequential) and Conv2D+BatchNorm
# (functional) under the global top-k, and per-variable selection with Embedding's IndexedSlices gradients
# (subclassed). The scope picks only the masks (from the same scores); the kind picks the gradients.
MASKED_PHASE_CASES = [(kind, False, scope) for scope in ("global", "per_variable") for kind in MODEL_KINDS] + [
    ("functional", True, "global"),
    ("subclassed", True, "per_variable"),
]


@pytest.mark.parametrize("kind, jit_compile, scope", MASKED_PHASE_CASES)
def test_masked_phase_on_every_model_kind(kind, jit_compile, scope):
    x, y = make_data(kind)
    model = make_model(kind)
    optimizer = selective("adamw", keep=0.3, warmup_steps=2, window=2, scope=scope)
    fit(model, optimizer, x, y, epochs=1, jit_compile=jit_compile)
    before = weights(model)
    masks = [m.numpy() for m in optimizer.masks]
    fit(model, optimizer, x, y, epochs=3, jit_compile=jit_compile)
    assert sum(int(m.sum()) for m in masks) == optimizer.k
    assert_frozen_and_moving(before, weights(model), masks)
    if scope == "per_variable":
        for m in masks:  # the same fraction in each variable, up to rounding
            assert abs(m.sum() - 0.3 * m.size) < 1


def test_the_selection_step_itself_is_restricted():
    """The gradient of step eta0 is the window's last and its update is already masked."""
    x, y = make_data("sequential", n=80)
    model = make_model("sequential")
    optimizer = selective("adamw", warmup_steps=4, window=2)
    fit(model, optimizer, x[:64], y[:64], epochs=1)  # steps 0..3
    before = weights(model)
    fit(model, optimizer, x[64:], y[64:], epochs=1)  # step 4 only
    masks = [m.numpy() for m in optimizer.masks]
    assert int(optimizer.iterations) == 5 and int(optimizer.selections) == 1
    assert_frozen_and_moving(before, weights(model), masks)


# ----------------------------------------------------------------- window
def _custom_loop(model, optimizer, x, y, steps):
    """Apply `steps` steps on fixed batches; return the |g| of every step."""
    abs_grads = []
    for s in range(steps):
        xb, yb = x[s * 8 : (s + 1) * 8], y[s * 8 : (s + 1) * 8]
        with tf.GradientTape() as tape:
            loss = LOSS(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        abs_grads.append([np.abs(g.numpy()) for g in grads])
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return abs_grads


def test_gradient_sum_scores_are_the_note_window_and_reselection_uses_a_fresh_one():
    x, y = make_data("sequential", n=160)
    model = make_model("sequential")
    optimizer = selective("sgd_momentum", warmup_steps=5, window=3, reselect_every=4)
    abs_grads = _custom_loop(model, optimizer, x, y, steps=6)  # steps 0..5, selection at 5
    expected = [sum(abs_grads[s][i] for s in (3, 4, 5)) for i in range(len(abs_grads[0]))]
    for e, got in zip(expected, optimizer.scores):
        np.testing.assert_allclose(got.numpy(), e, rtol=1e-6)
    first_masks = [m.numpy() for m in optimizer.masks]
    abs_grads += _custom_loop(model, optimizer, x[48:], y[48:], steps=4)  # steps 6..9, reselection at 9
    assert int(optimizer.selections) == 2
    expected = [sum(abs_grads[s][i] for s in (7, 8, 9)) for i in range(len(abs_grads[0]))]
    for e, got in zip(expected, optimizer.scores):
        np.testing.assert_allclose(got.numpy(), e, rtol=1e-6)
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(first_masks, optimizer.masks))
    assert int(optimizer.selected_count) == optimizer.k


def test_preconditioned_scores_match_numpy_over_the_window():
    x, y = make_data("sequential", n=160)
    model = make_model("sequential")
    optimizer = selective("sgd_momentum", criterion="preconditioned", warmup_steps=5, window=4, num_examples=1000)
    optimizer.keep_scores = True  # read after the selection
    grads = []
    for s in range(6):
        xb, yb = x[s * 8 : (s + 1) * 8], y[s * 8 : (s + 1) * 8]
        with tf.GradientTape() as tape:
            loss = LOSS(yb, model(xb, training=True))
        g = tape.gradient(loss, model.trainable_variables)
        grads.append([t.numpy().astype(np.float64) for t in g])
        optimizer.apply_gradients(zip(g, model.trainable_variables))
    for i, got in enumerate(optimizer.scores):
        window = np.stack([grads[s][i] for s in (2, 3, 4, 5)])
        var = window.var(axis=0, ddof=1)
        expected = np.abs(2.0 / (1000 * (var + 1e-12)) * window.mean(axis=0))
        np.testing.assert_allclose(got.numpy(), expected, rtol=2e-3, atol=1e-6 * expected.max())


def test_magnitude_reads_weights_at_the_selection_step():
    x, y = make_data("sequential")
    model = make_model("sequential")
    optimizer = selective("adam", criterion="magnitude", warmup_steps=3)
    optimizer.keep_scores = True  # read after the selection
    fit(model, optimizer, x[:48], y[:48], epochs=1)  # steps 0..2
    at_selection = weights(model)
    fit(model, optimizer, x[48:], y[48:], epochs=1)  # step 3 selects
    for w, s in zip(at_selection, optimizer.scores):
        np.testing.assert_array_equal(s.numpy(), np.abs(w))


def test_random_criterion_is_seeded():
    x, y = make_data("sequential")
    masks = []
    for seed in (7, 7, 8):
        model = make_model("sequential")
        optimizer = selective(criterion="random", seed=seed, warmup_steps=1)
        fit(model, optimizer, x[:32], y[:32], epochs=1)
        masks.append(np.concatenate([m.numpy().ravel() for m in optimizer.masks]))
    np.testing.assert_array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[0], masks[2])


@keras.saving.register_keras_serializable(package="tf_selopt_tests")
class LastAbsGradient(criteria.Criterion):
    """A user criterion: |g| of the window's last step only."""

    name = "last_abs_gradient"
    slots = ("last",)

    def update(self, state, grad, weight, count):
        return {"last": tf.abs(grad)}

    def score(self, state, weight, count, seed):
        return tf.cast(state["last"], tf.float32)


def test_user_criterion_drives_selection_and_round_trips():
    x, y = make_data("sequential", n=160)
    model = make_model("sequential")
    optimizer = selective("sgd_momentum", criterion=LastAbsGradient(), warmup_steps=3, window=2)
    optimizer.keep_scores = True  # read after the selection
    abs_grads = _custom_loop(model, optimizer, x, y, steps=4)  # selection at step 3
    for expected, got in zip(abs_grads[3], optimizer.scores):
        np.testing.assert_array_equal(got.numpy(), expected)
    assert int(optimizer.selected_count) == optimizer.k
    clone = tf_selopt.SelectiveOptimizer.from_config(optimizer.get_config())
    assert isinstance(clone.criterion, LastAbsGradient)


# -------------------------------------------------------------- NaN steps
@pytest.mark.parametrize("phase_step", [0, 2, 4], ids=["warmup", "window", "masked"])
def test_non_finite_step_changes_nothing(phase_step):
    x, y = make_data("sequential", n=160)
    model = make_model("sequential")
    optimizer = selective("adamw", warmup_steps=3, window=2, reselect_every=2)
    _custom_loop(model, optimizer, x, y, steps=phase_step)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    state = [v.numpy().copy() for v in model.trainable_variables + optimizer.variables]
    for bad in (np.nan, np.inf):
        grads = [tf.fill(v.shape, tf.constant(0.5)) for v in model.trainable_variables]
        grads[1] = tf.tensor_scatter_nd_update(grads[1], [[0]], [bad])
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    after = [v.numpy() for v in model.trainable_variables + optimizer.variables]
    skipped_index = [v.path for v in optimizer.variables].index(optimizer.skipped_steps.path) + len(
        model.trainable_variables
    )
    for i, (b, a) in enumerate(zip(state, after)):
        if i != skipped_index:
            np.testing.assert_array_equal(a, b)
    assert int(optimizer.skipped_steps) == 2
    assert int(optimizer.iterations) == phase_step


# --------------------------------------------------------- custom training
def test_custom_loop_matches_fit():
    x, y = make_data("sequential")
    via_fit = make_model("sequential")
    opt_fit = selective("adam", warmup_steps=3, window=2)
    via_fit.compile(optimizer=opt_fit, loss=LOSS)
    via_fit.fit(x[:48], y[:48], batch_size=8, epochs=1, shuffle=False, verbose=0)
    via_loop = make_model("sequential")
    opt_loop = selective("adam", warmup_steps=3, window=2)
    _custom_loop(via_loop, opt_loop, x, y, steps=6)
    for a, b in zip(opt_fit.masks, opt_loop.masks):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(weights(via_fit), weights(via_loop)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(update="masked"), dict(update="selected_only"), dict(masks="given")])
def test_a_step_that_builds_the_optimizer_is_traced_once(kwargs, monkeypatch):
    """Keras builds an unbuilt optimizer inside the first trace of ``fit``'s train step; ours creates its variables
    eagerly there (``core._compat.variables_created_eagerly``), so that step is traced once, not twice (a
    ``tf.function`` whose first trace creates variables runs a second trace), with the same weights and state
    as when the optimizer is built before ``fit``. The same in a custom loop's ``tf.function``."""
    x, y = make_data("sequential")
    if kwargs.get("masks") == "given":  # trained from step 0 on k-sized state (keep, warm-up and window unused)
        shapes = [v.shape for v in make_model("sequential").trainable_variables]
        masks = [np.arange(int(np.prod(s))).reshape(s) % 3 == 0 for s in shapes]

        def new_optimizer():
            return tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), masks=masks)
    else:

        def new_optimizer():
            return selective("adam", **kwargs)

    runs = []
    for built_before in (False, True):
        model = make_model("sequential")
        optimizer = new_optimizer()
        model.compile(optimizer=optimizer, loss=LOSS)
        if built_before:
            optimizer.build(model.trainable_variables)
        traces, train_step = [], model.train_step
        monkeypatch.setattr(model, "train_step", lambda data: traces.append(1) or train_step(data))
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)  # 8 steps, across the selection
        assert len(traces) == 1, built_before
        runs.append(weights(model) + [v.numpy() for v in optimizer.variables])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)

    model, optimizer, traces = make_model("sequential"), new_optimizer(), []

    @tf.function
    def step(xb, yb):
        traces.append(1)
        with tf.GradientTape() as tape:
            loss = LOSS(yb, model(xb, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    for s in range(8):
        step(x[s * 8 : (s + 1) * 8], y[s * 8 : (s + 1) * 8])
    assert len(traces) == 1 and int(optimizer.iterations) == 8


def test_with_compile_metrics_built_by_one_evaluate_fit_traces_its_step_once(monkeypatch):
    """Keras builds compile metrics in the first trace of the train step (so it is traced twice), unless an
    ``evaluate`` built them first: the selection guide's tip."""
    x, y = make_data("sequential")
    for evaluate_first, expected in ((False, 2), (True, 1)):
        model, optimizer = make_model("sequential"), selective("adam")
        model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"])
        if evaluate_first:
            model.evaluate(x[:BATCH], y[:BATCH], verbose=0)
        traces, train_step = [], model.train_step
        monkeypatch.setattr(model, "train_step", lambda data: traces.append(1) or train_step(data))
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        assert len(traces) == expected and int(optimizer.selections) == 1, evaluate_first


# ------------------------------------------------------------ save / load
def test_config_round_trip():
    optimizer = selective(
        "adamw", criterion="preconditioned", keep=5, scope="per_variable", reselect_every=7, num_examples=123
    )
    config = optimizer.get_config()
    clone = tf_selopt.SelectiveOptimizer.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.inner_optimizer, keras.optimizers.AdamW)
    assert isinstance(clone.criterion, criteria.Preconditioned) and clone.criterion.num_examples == 123
    assert keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).get_config() == config


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_keras_file_round_trip_continues_bit_for_bit(kind, tmp_path):
    x, y = make_data(kind)
    model = make_model(kind)
    optimizer = selective("adamw", warmup_steps=3, window=2, reselect_every=5)
    fit(model, optimizer, x, y, epochs=2)  # selected at step 3
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    restored = loaded.optimizer
    assert isinstance(restored, tf_selopt.SelectiveOptimizer)
    for a, b in zip(optimizer.variables, restored.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    fit(model, optimizer, x, y, epochs=2)  # reselections at steps 8 and 13
    loaded.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert int(restored.selections) == int(optimizer.selections) == 3  # steps 3, 8, 13
    for a, b in zip(weights(model), weights(loaded)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer.masks, restored.masks):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_tf_checkpoint_round_trip(tmp_path):
    x, y = make_data("subclassed")
    model = make_model("subclassed")
    optimizer = selective("adam", warmup_steps=3, window=2)
    fit(model, optimizer, x, y, epochs=2)
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    other = make_model("subclassed", seed=5)
    other_opt = selective("adam", warmup_steps=3, window=2)
    other_opt.build(other.trainable_variables)
    status = tf.train.Checkpoint(model=other, optimizer=other_opt).read(path)
    assert optimizer.warmup_state_released  # at the selection: the file has the released layout
    other_opt.release_warmup_state()  # the documented order: read, release, check
    status.assert_consumed()
    for a, b in zip(optimizer.variables, other_opt.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("update", ["masked", "selected_only"])
def test_variable_order_is_the_checkpoint_layout(update):
    model = make_model("sequential")
    optimizer = selective("adam", criterion="preconditioned", update=update)
    optimizer.build(model.trainable_variables)
    assert optimizer.update_path == update
    names = [v.name for v in optimizer.variables]
    n = len(model.trainable_variables)
    head = ["iteration", "learning_rate", "skipped_steps", "selections", "window_count"]
    assert names[:5] == head
    assert all(name.endswith("_mask") for name in names[5 : 5 + n])
    if update == "selected_only":  # one dtype group: values, positions, offsets; released last-in first-out
        group = ["selected_values_float32", "selected_positions_float32", "selected_offsets_float32"]
        assert names[5 + n : 8 + n] == group
        names = names[: 5 + n] + names[8 + n :]
    assert all(name.endswith("_score") for name in names[5 + n : 5 + 2 * n])
    assert all(name.endswith("criterion_mean") for name in names[5 + 2 * n : 5 + 3 * n])
    assert all(name.endswith("criterion_m2") for name in names[5 + 3 * n : 5 + 4 * n])
    inner = [v.name for v in optimizer.inner_optimizer.variables]
    assert names[5 + 4 * n : 5 + 4 * n + len(inner)] == inner
    clones = names[5 + 4 * n + len(inner) :]
    if update == "masked":
        assert clones == []
    else:  # the k-sized inner optimizer: its counters and one slot per Adam moment
        assert clones[:2] == ["iteration", "learning_rate"]
        assert [name.rsplit("_", 1)[1] for name in clones[2:]] == ["momentum", "velocity"]


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("inner", ["adam", None, "tf_keras"])
def test_inner_must_be_a_keras3_optimizer(inner):
    if inner == "tf_keras":
        import tf_keras

        inner = tf_keras.optimizers.Adam()
    with pytest.raises(ValueError, match="`inner` must be a Keras 3 optimizer"):
        tf_selopt.SelectiveOptimizer(inner)


def test_keep_above_n_raises_at_build_and_creates_nothing():
    model = make_model("sequential")
    n = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    optimizer = selective(keep=n + 1)
    before = len(optimizer.variables)
    with pytest.raises(ValueError, match=rf"keep.*\[1, {n}\]"):
        optimizer.build(model.trainable_variables)
    assert len(optimizer.variables) == before and not optimizer.built
    full = selective(keep=n)
    full.build(model.trainable_variables)
    assert full.k == n
