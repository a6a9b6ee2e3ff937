"""Selected-only restricted phase (issue 16): k-sized values + indices + inner state, bit-identical to the
masked path (``tf_selopt.SelectiveOptimizer``) for the elementwise inner optimizers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_selopt
from tf_selopt.core.selected_only import SelectedOnly, index_dtype_for
from tf_selopt.keras.profiles import why_not
from tf_selopt.keras.selected_only import KerasSelectedOnly


@keras.saving.register_keras_serializable(package="tf_selopt_tests")
class SubclassedAdam(keras.optimizers.Adam):
    """A user subclass that keeps Adam's ``update_step`` and ``build``: profiled as Adam."""


def adamw_excluding_biases():
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["w1", "w3"])
    return optimizer


EXACT = {
    "sgd": lambda: keras.optimizers.SGD(0.05),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adam_amsgrad": lambda: keras.optimizers.Adam(1e-2, amsgrad=True),
    "adam_schedule": lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-2, 2, 0.9)),
    "adam_clipvalue": lambda: keras.optimizers.Adam(1e-2, clipvalue=0.5),
    "adam_weight_decay": lambda: keras.optimizers.Adam(1e-2, weight_decay=0.1),
    "adam_ema": lambda: keras.optimizers.Adam(1e-2, use_ema=True, ema_overwrite_frequency=3),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    "adamw_excluding": adamw_excluding_biases,
    "adamax": lambda: keras.optimizers.Adamax(1e-2),
    "nadam": lambda: keras.optimizers.Nadam(1e-2),
    "lion": lambda: keras.optimizers.Lion(1e-3),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-2),
    "rmsprop_momentum": lambda: keras.optimizers.RMSprop(1e-2, momentum=0.9),
    "rmsprop_centered": lambda: keras.optimizers.RMSprop(1e-2, centered=True),
    "adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "adadelta": lambda: keras.optimizers.Adadelta(1.0),
}
SHAPES = [(3, 3, 1, 4), (4,), (5, 4), (4,)]
WARMUP = 3


def gradients(steps, seed=0):
    rng = np.random.default_rng(seed)
    return [[tf.constant(rng.normal(size=s).astype("float32")) for s in SHAPES] for _ in range(steps)]


def model_variables():
    rng = np.random.default_rng(1)
    return [keras.Variable(rng.normal(size=s).astype("float32"), name=f"w{i}") for i, s in enumerate(SHAPES)]


def masked_run(make, steps, reselect_every=None, jit_compile=None):
    """Today's masked path (eager, or in a ``tf.function`` with ``jit_compile``); returns its variables and
    the masks after each selection step."""
    optimizer = tf_selopt.SelectiveOptimizer(
        make(), keep=0.3, warmup_steps=WARMUP, window=2, seed=0, reselect_every=reselect_every, update="masked"
    )
    variables = model_variables()
    optimizer.build(variables)
    apply = optimizer.apply if jit_compile is None else tf.function(optimizer.apply, jit_compile=jit_compile)
    apply = (lambda g, v, f=apply: f(g)) if jit_compile is not None else apply  # variables: closed over
    masks = {}
    for step, grads in enumerate(gradients(steps)):
        apply(grads, variables)
        if step >= WARMUP and int(optimizer.selections) > len(masks):
            masks[step] = [optimizer.trains(i).numpy() for i in range(len(variables))]
    return variables, masks, optimizer.k


def selected_only_run(make, steps, masks, k, step_fn=None):
    """Warm-up on ``inner``, then the selected-only path from the first selection step on."""
    inner = make()
    variables = model_variables()
    so = None
    for step, grads in enumerate(gradients(steps)):
        if step < WARMUP:
            inner.apply_gradients(zip(grads, variables))
            continue
        if so is None:
            so = KerasSelectedOnly(inner, variables, k)
        if step in masks:
            so.select(masks[step])
        (step_fn or so.apply)(grads) if step_fn is None else step_fn(so, grads)
    return variables, so


def assert_bit_identical(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", sorted(EXACT))
def test_selected_entries_equal_the_masked_path_bit_for_bit(name):
    assert why_not(EXACT[name](), exact=False) == ""  # eager: exact for all of EXACT
    expected, masks, k = masked_run(EXACT[name], 10)
    assert list(masks) == [WARMUP]
    got, so = selected_only_run(EXACT[name], 10, masks, k)
    assert_bit_identical(got, expected)  # selected (moved) and frozen (never written) entries alike
    trains = masks[WARMUP]
    start = model_variables()
    moved = sum(int(np.sum(g.numpy()[t] != s.numpy()[t])) for g, s, t in zip(got, start, trains))
    assert moved > 0.5 * k
    assert int(so.inner.iterations) == 10


@pytest.mark.parametrize("name", sorted(EXACT))
def test_graph_rounding_optimizers_are_refused_where_exactness_is_asked(name):
    """RMSprop, Adagrad and Adadelta divide by a square root; in a tf.function Grappler rewrites
    x / sqrt(y) to x * rsqrt(y) on one path and not the other (1 ulp), so ``update="auto"`` keeps them masked."""
    reason = why_not(EXACT[name](), exact=True)
    rounding = name.startswith(("rmsprop", "adagrad", "adadelta"))
    assert bool(reason) is rounding
    assert ("1 ulp" in reason) is rounding


@pytest.mark.parametrize("name", ["sgd_momentum", "lion", "sgd_nesterov"])
def test_reselection_equals_the_masked_path_where_it_zeroes_the_state(name):
    """The masked path zeroes these optimizers' only slot for entries that stop training, so newly
    selected entries start from zero there too: the whole run is bit-identical."""
    expected, masks, k = masked_run(EXACT[name], 14, reselect_every=4)
    assert sorted(masks) == [3, 7, 11]
    got, _ = selected_only_run(EXACT[name], 14, masks, k)
    assert_bit_identical(got, expected)


def test_reselection_keeps_the_state_of_entries_that_stay_and_starts_new_ones_from_zero():
    _, masks, k = masked_run(EXACT["adam"], 8, reselect_every=4)
    inner = keras.optimizers.Adam(1e-2)
    variables = model_variables()
    for grads in gradients(WARMUP):
        inner.apply_gradients(zip(grads, variables))
    so = KerasSelectedOnly(inner, variables, k)
    so.select(masks[3])
    for grads in gradients(4, seed=5):
        so.apply(grads)
    group = so.core.groups[0]

    def state():
        keys = group.keys(tf.convert_to_tensor(group.positions), tf.convert_to_tensor(group.offsets)).numpy()
        m, v = so.clones[0]._momentums[0].numpy(), so.clones[0]._velocities[0].numpy()
        return {key: (m[j], v[j]) for j, key in enumerate(keys) if key != group.padding_key}

    before = state()
    so.select(masks[7])
    after = state()
    stayed = set(before) & set(after)
    assert stayed and set(after) - stayed
    for key in stayed:
        assert after[key] == before[key]
    for key in set(after) - stayed:
        assert after[key] == (0.0, 0.0)


def test_inside_a_tf_function_equals_the_masked_path_in_a_tf_function():
    """Graph against graph: Grappler reorders AdamW's decay ``v - v * wd * lr`` to ``v * (wd * lr)`` in a
    ``tf.function`` on both paths alike (1 ulp from eager)."""
    make = EXACT["adamw"]
    expected, masks, k = masked_run(make, 8, jit_compile=False)
    inner = make()
    variables = model_variables()
    inner.build(variables)
    warm = tf.function(lambda g: inner.apply(g, variables))
    for grads in gradients(WARMUP):
        warm(grads)
    so = KerasSelectedOnly(inner, variables, k)
    tf.function(so.select)(masks[WARMUP])
    step = tf.function(so.apply)
    for grads in gradients(8)[WARMUP:]:
        step(grads)
    assert_bit_identical(variables, expected)
    assert step.experimental_get_tracing_count() == 1


def test_indexed_slices_are_gathered_without_densifying_and_sum_duplicates():
    """An Embedding-like gradient with duplicate rows: the gathered entries equal those of its dense
    equivalent bit for bit, and a step with it equals the step with the dense gradient."""
    rng = np.random.default_rng(3)
    table = rng.normal(size=(50, 6)).astype("float32")
    indices = tf.constant([7, 3, 7, 49, 0, 7, 3])
    values = tf.constant(rng.normal(size=(7, 6)).astype("float32"))
    sparse = tf.IndexedSlices(values, indices, tf.constant([50, 6]))
    mask = np.zeros((50, 6), bool)
    mask[[7, 3, 49, 0, 10, 20], [0, 5, 2, 3, 1, 4]] = True  # rows 10 and 20 get no gradient
    runs = []
    for grad in (sparse, tf.convert_to_tensor(sparse)):
        variable = keras.Variable(table, name="embedding")
        inner = keras.optimizers.Adam(1e-2)
        inner.build([variable])
        so = KerasSelectedOnly(inner, [variable], 8)
        so.select([mask])
        small = so.core.gather_gradients([grad])[0].numpy()
        so.apply([grad])
        runs.append((small, variable.numpy()))
    (small_sparse, after_sparse), (small_dense, after_dense) = runs
    np.testing.assert_array_equal(small_sparse, small_dense)
    assert small_dense[6:].tolist() == [0.0, 0.0]  # padding
    np.testing.assert_array_equal(after_sparse, after_dense)
    np.testing.assert_array_equal(after_sparse[~mask], table[~mask])


def test_fewer_selected_than_k_pads_and_never_writes_the_padding():
    variables = model_variables()
    start = [v.numpy().copy() for v in variables]
    inner = keras.optimizers.SGD(0.1)
    inner.build(variables)
    so = KerasSelectedOnly(inner, variables, 20)
    masks = [np.zeros(s, bool) for s in SHAPES]
    masks[2][1, 1] = masks[2][4, 3] = masks[1][0] = True
    so.select(masks)
    assert int(so.core.selected_count()) == 3
    so.apply(gradients(1)[0])
    for v, s, m in zip(variables, start, masks):
        np.testing.assert_array_equal(v.numpy()[~m], s[~m])
        assert np.all(v.numpy()[m] != s[m])


def test_int64_indices_give_the_same_step():
    assert index_dtype_for(2**31 - 1) == tf.int32 and index_dtype_for(2**31) == tf.int64
    results = []
    for index_dtype in (None, tf.int64):
        variables = model_variables()
        core = SelectedOnly()
        core.build(variables, 10, lambda shape, dtype, init, name: tf.Variable(tf.zeros(shape, dtype)), index_dtype)
        masks = [np.random.default_rng(i).uniform(size=s) > 0.8 for i, s in enumerate(SHAPES)]
        while sum(int(m.sum()) for m in masks) > 10:
            masks[0][masks[0].nonzero()[0][0]] = False
        core.select(masks)
        step = core.gather_step(gradients(1)[0])
        for buffer, g in zip(core.buffers, step.grads):
            buffer.assign_sub(0.5 * g)
        core.scatter_step(step)
        results.append([v.numpy() for v in variables])
        assert core.groups[0].positions.dtype == (index_dtype or tf.int32)
    assert_bit_identical(*results)


def test_one_buffer_per_dtype():
    variables = [keras.Variable(np.ones((4, 3), "float32"), name="a"), keras.Variable(np.ones(5, "float64"), name="b")]
    inner = keras.optimizers.SGD(0.5)
    inner.build(variables)
    so = KerasSelectedOnly(inner, variables, 3)
    assert [g.dtype for g in so.core.groups] == [tf.float32, tf.float64]
    masks = [np.eye(4, 3, dtype=bool) & (np.arange(3) < 2), np.array([0, 0, 1, 0, 0], bool)]
    so.select(masks)
    so.apply([tf.ones((4, 3)), tf.ones(5, tf.float64)])
    np.testing.assert_array_equal(variables[0].numpy(), np.where(masks[0], 0.5, 1.0))
    np.testing.assert_array_equal(variables[1].numpy(), np.where(masks[1], 0.5, 1.0))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: keras.optimizers.Lamb(1e-2), "Lamb is not one of the profiled optimizers"),
        (lambda: keras.optimizers.Adafactor(1e-2), "Adafactor is not one of the profiled optimizers"),
        (lambda: keras.optimizers.Muon(1e-2), "Muon is not one of the profiled optimizers"),
        (lambda: keras.optimizers.Ftrl(0.1), "1-ulp"),
        (lambda: keras.optimizers.Adam(1e-2, clipnorm=1.0), "clipnorm"),
        (lambda: keras.optimizers.Adam(1e-2, global_clipnorm=1.0), "clipnorm"),
        (lambda: keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2), "gradient_accumulation_steps"),
    ],
)
def test_non_elementwise_inner_optimizers_are_detected(make, reason):
    assert reason in why_not(make())
    variables = model_variables()
    with pytest.raises(ValueError, match="cannot train the selected entries only"):
        KerasSelectedOnly(make(), variables, 5)


def test_a_constrained_variable_is_not_supported():
    variable = keras.Variable(np.ones(3, "float32"), name="c")
    variable.constraint = keras.constraints.NonNeg()
    assert "variable c has a constraint" in why_not(keras.optimizers.Adam(), [variable])


def test_bytes_per_parameter_of_adam_at_keep_one_percent():
    variables = [keras.Variable(np.zeros((300, 100), "float32"), name="k"), keras.Variable(np.zeros(100, "float32"))]
    inner = keras.optimizers.Adam()
    inner.build(variables)
    so = KerasSelectedOnly(inner, variables, 301)  # 1% of 30,100
    # values 4 + position 4 + Adam m, v 8 = 16 B per selected entry, plus offsets and the clone's counters
    assert so.state_bytes() == 301 * 16 + 3 * 4 + sum(v.numpy().nbytes for v in so.clones[0].variables[:2])
    assert so.bytes_per_parameter() < 0.17


# Every inner optimizer once, each layout on two of them (the frozen layout with AdamW excluding a variable from
# its decay, whose update differs per variable, and with Lion): the layout decides where each variable's entries
# are gathered from and scattered to, the optimizer what is computed on them.
@pytest.mark.parametrize(
    "name, frozen",
    [("sgd_momentum", False), ("adam", False), ("adamw_excluding", True), ("lion", True)],
    ids=[
        "sgd_momentum-offsets_in_graph",
        "adam-offsets_in_graph",
        "adamw_excluding-frozen_layout",
        "lion-frozen_layout",
    ],
)
def test_under_jit_compile_equals_the_masked_path_under_jit_compile(name, frozen):
    """XLA contracts multiply-adds differently from eager (1-ulp differences on both paths), so the
    reference is the masked path compiled the same way; warm-up steps compiled too. (RMSprop with
    ``centered=True`` is 1 ulp off here: XLA fuses its N-sized and k-sized updates differently.) With the
    layout frozen each variable gathers and scatters its own entries only: the same values."""
    expected, masks, k = masked_run(EXACT[name], 8, jit_compile=True)
    inner = EXACT[name]()
    variables = model_variables()
    inner.build(variables)
    warm = tf.function(lambda g: inner.apply(g, variables), jit_compile=True)
    for grads in gradients(WARMUP):
        warm(grads)
    so = KerasSelectedOnly(inner, variables, k)
    so.select(masks[WARMUP])
    if frozen:
        assert so.core.freeze_layout() == so.core.frozen_layout == ((0, *np.cumsum([m.sum() for m in masks[WARMUP]])),)
    step = tf.function(so.apply, jit_compile=True)
    for grads in gradients(8)[WARMUP:]:
        step(grads)
    assert_bit_identical(variables, expected)


def test_a_step_traced_for_a_frozen_layout_writes_nothing_once_the_offsets_change():
    """XLA ignores assertions: a step traced for a frozen layout whose held offsets changed (here: set by hand)
    leaves every model variable as it is; a selection thaws the layout, so the next trace reads the offsets."""
    variables = model_variables()
    inner = keras.optimizers.Adam(1e-2)
    inner.build(variables)
    so = KerasSelectedOnly(inner, variables, 20)
    masks = [np.zeros(s, bool) for s in SHAPES]
    masks[0].flat[[1, 5, 30]] = True
    masks[2].flat[[0, 19]] = True
    so.select(masks)
    assert so.core.freeze_layout() == ((0, 3, 3, 5, 5),)
    step = tf.function(so.apply, jit_compile=True)
    (grads,) = gradients(1)
    before = [v.numpy().copy() for v in variables]
    so.core.groups[0].offsets.assign([0, 2, 3, 5, 5])  # stale: slot 2 now belongs to another variable
    step(grads)
    assert_bit_identical(variables, before)
    so.core.groups[0].offsets.assign([0, 3, 3, 5, 5])
    step(grads)
    changed = [int(np.sum(v.numpy() != b)) for v, b in zip(variables, before)]
    assert changed == [3, 0, 2, 0]
    so.select(masks, first=False)
    assert so.core.frozen_layout is None
