"""Tests of tf_selopt.keras.pruning: prunable weights, exact counts and zeros, masks enforced through training,
gradual pruning, strip and save/load, errors."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import INNER, MODEL_KINDS, docstring_examples, make_data, make_model
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_selopt.core import criteria
from tf_selopt.core.schedules import ConstantSparsity, PolynomialDecay
from tf_selopt.keras import pruning
from tf_selopt.keras.pruning import (
    GradualPruning,
    PruningMask,
    mask_zeros,
    prunable_variables,
    prune,
    pruning_mask,
    strip_pruning,
)

SPARSITIES = [0.0, 0.1, 0.3, 0.5, 0.77, 0.95]


def expected_prunable(kind, model):
    """The variables that must be prunable in conftest's models, in model.weights order."""
    if kind == "sequential":
        return [model.layers[0].kernel, model.layers[2].kernel]  # Dense, (BatchNorm), Dense
    if kind == "functional":
        conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
        dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
        return [conv.kernel, dense.kernel]
    return [model.embed.embeddings, model.head.kernel]


def snapshot(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


def state(model):
    """Weights, constraint objects and installed mask values."""
    masks = {v.path: pruning_mask(v).numpy() for v in model.weights if pruning_mask(v) is not None}
    return snapshot(model), {v.path: v.constraint for v in model.weights}, masks


def assert_state_unchanged(model, before):
    weights, constraints, masks = state(model)
    assert constraints.keys() == before[1].keys()
    assert all(constraints[p] is c for p, c in before[1].items())
    assert masks.keys() == before[2].keys()
    for path, value in weights.items():
        np.testing.assert_array_equal(bits(value), bits(before[0][path]))
    for path, value in masks.items():
        np.testing.assert_array_equal(value, before[2][path])


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def num_kept(sparsity, n):
    return n - math.floor(sparsity * n + 0.5)


def ref_top(scores_list, k):
    """numpy reference with selection.py's tie rule: stable sort by -score over the flat index."""
    flat = np.concatenate([s.ravel() for s in scores_list])
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    pieces = np.split(keep, np.cumsum([s.size for s in scores_list])[:-1])
    return [p.reshape(s.shape) for p, s in zip(pieces, scores_list)]


def with_ties(model, seed=0):
    """Set prunable weights to a few distinct magnitudes with both signs: many ties across layers."""
    rng = np.random.default_rng(seed)
    for v in prunable_variables(model):
        v.assign(rng.choice([-0.3, -0.2, -0.1, 0.1, 0.2, 0.3, 0.25], size=v.shape).astype("float32"))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_prunable_variables_are_kernels_and_embeddings_only(kind):
    model = make_model(kind)
    variables = prunable_variables(model)
    expected = expected_prunable(kind, model)
    assert len(variables) == len(expected) and all(v is e for v, e in zip(variables, expected))
    names = " ".join(v.path for v in variables)
    assert "bias" not in names and "gamma" not in names and "moving" not in names


def test_other_kernel_layers_are_prunable():
    inputs = keras.Input((8, 8, 2))
    h = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    h = keras.layers.Conv2D(3, 1, name="conv")(h)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.Reshape((36, 3))(h)
    h = keras.layers.Conv1D(2, 3, name="c1")(h)
    h = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 4), bias_axes="d", name="ein")(h)
    model = keras.Model(inputs, h)
    paths = [v.path for v in prunable_variables(model)]
    assert paths == ["dw/kernel", "conv/kernel", "c1/kernel", "ein/kernel"]


@pytest.mark.parametrize("scope", ["global", "per_layer"])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_exact_counts_zeros_and_untouched_weights(kind, scope):
    model = make_model(kind)
    prunable = {v.path for v in prunable_variables(model)}
    for sparsity in SPARSITIES:
        before = snapshot(model)
        masks = prune(model, sparsity, scope=scope)
        after = snapshot(model)
        assert list(masks) == [v.path for v in prunable_variables(model)]
        sizes = {p: before[p].size for p in prunable}
        if scope == "global":
            assert sum(int(m.sum()) for m in masks.values()) == num_kept(sparsity, sum(sizes.values()))
        else:
            assert {p: int(m.sum()) for p, m in masks.items()} == {p: num_kept(sparsity, n) for p, n in sizes.items()}
        for path, value in after.items():
            if path in masks:
                m = masks[path]
                assert m.dtype == bool and m.shape == value.shape
                assert np.all(bits(value[~m]) == 0)  # exactly +0.0
                np.testing.assert_array_equal(bits(value[m]), bits(before[path][m]))
            else:  # biases, BatchNorm parameters and statistics
                np.testing.assert_array_equal(bits(value), bits(before[path]))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_global_magnitude_matches_numpy_reference_with_ties(kind):
    model = make_model(kind)
    with_ties(model)
    weights = [v.numpy() for v in prunable_variables(model)]
    total = sum(w.size for w in weights)
    for sparsity in (0.25, 0.5, 0.8):
        model_copy = make_model(kind)
        with_ties(model_copy)
        masks = prune(model_copy, sparsity, scope="global")
        expected = ref_top([np.abs(w) for w in weights], num_kept(sparsity, total))
        for got, exp in zip(masks.values(), expected):
            np.testing.assert_array_equal(got, exp)
    # Global ranks across layers, not evenly per layer: large conv weights all survive 50%.
    if kind == "functional":
        model = make_model(kind)
        conv, dense = prunable_variables(model)
        w = conv.numpy()
        conv.assign(np.where(w >= 0, w + 10.0, w - 10.0))  # every conv |w| above every Dense |w|
        masks = prune(model, 0.5)
        assert masks[conv.path].all()  # every large conv weight survives


def test_per_layer_matches_numpy_reference_with_ties():
    model = make_model("functional")
    with_ties(model, seed=3)
    weights = [v.numpy() for v in prunable_variables(model)]
    masks = prune(model, 0.6, scope="per_layer")
    for got, w in zip(masks.values(), weights):
        np.testing.assert_array_equal(got, ref_top([np.abs(w)], num_kept(0.6, w.size))[0])


def test_random_criterion_is_seeded_and_exact():
    masks = [prune(make_model("sequential"), 0.5, criterion="random", seed=s) for s in (7, 7, 8)]
    for a, b in zip(masks[0].values(), masks[1].values()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(masks[0].values(), masks[2].values()))
    # Reference: the criterion's own scores with seed [seed, variable index], global top-k.
    model = make_model("sequential")
    weights = [v.numpy() for v in prunable_variables(model)]
    scores = [
        criteria.Random().score({}, tf.constant(w), tf.constant(0.0), tf.constant([7, i], tf.int32)).numpy()
        for i, w in enumerate(weights)
    ]
    expected = ref_top(scores, num_kept(0.5, sum(w.size for w in weights)))
    for got, exp in zip(masks[0].values(), expected):
        np.testing.assert_array_equal(got, exp)
    # Random is not magnitude: the masks differ from the magnitude masks.
    magnitude = prune(make_model("sequential"), 0.5)
    assert any(not np.array_equal(a, b) for a, b in zip(masks[0].values(), magnitude.values()))


def test_criterion_object_without_gradients_is_used():
    class Smallest:
        """Keeps the smallest |w| (a score with only `score`)."""

        def score(self, state, weight, count, seed):
            assert state == {}
            return -tf.abs(weight)

    model = make_model("sequential")
    weights = [v.numpy() for v in prunable_variables(model)]
    masks = prune(model, 0.75, criterion=Smallest())
    expected = ref_top([-np.abs(w) for w in weights], num_kept(0.75, sum(w.size for w in weights)))
    for got, exp in zip(masks.values(), expected):
        np.testing.assert_array_equal(got, exp)
    masks = prune(make_model("sequential"), 0.75, criterion=criteria.Magnitude())
    assert sum(int(m.sum()) for m in masks.values()) == num_kept(0.75, 72)


def test_layers_restricts_pruning():
    model = make_model("sequential")
    first, second = prunable_variables(model)
    layer_name = first.path.split("/")[-2]
    assert [v.path for v in prunable_variables(model, [layer_name])] == [first.path]
    before = snapshot(model)
    masks = prune(model, 0.5, layers=[layer_name])
    assert list(masks) == [first.path]
    assert int(masks[first.path].sum()) == num_kept(0.5, 48)
    np.testing.assert_array_equal(bits(second.numpy()), bits(before[second.path]))
    assert int((first.numpy() == 0).sum()) == 24


def test_nested_model_layers_are_found():
    inner = make_model("sequential")
    outer = keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(2, name="top")])
    expected = prunable_variables(inner) + [outer.get_layer("top").kernel]
    got = prunable_variables(outer)
    assert len(got) == 3 and all(g is e for g, e in zip(got, expected))


@given(sparsity=st.floats(0.0, 1.0, exclude_max=True), scope=st.sampled_from(["global", "per_layer"]))
@settings(max_examples=30, deadline=None)
def test_property_exact_count_for_any_sparsity(sparsity, scope):
    model = strip_pruning(_PROPERTY_MODEL)  # masks are monotone: start each example unpruned
    model.set_weights(_PROPERTY_WEIGHTS)
    masks = prune(model, sparsity, scope=scope)
    sizes = [m.size for m in masks.values()]
    if scope == "global":
        assert sum(int(m.sum()) for m in masks.values()) == num_kept(sparsity, sum(sizes))
    else:
        assert [int(m.sum()) for m in masks.values()] == [num_kept(sparsity, n) for n in sizes]
    zeros = sum(int((v.numpy() == 0).sum()) for v in prunable_variables(model))
    assert zeros == sum(int((~m).sum()) for m in masks.values())  # no initial weight is exactly 0


_PROPERTY_MODEL = make_model("functional", seed=5)
_PROPERTY_WEIGHTS = _PROPERTY_MODEL.get_weights()


BAD = [
    (dict(sparsity=1.0), "sparsity"),
    (dict(sparsity=-0.01), "sparsity"),
    (dict(sparsity=float("nan")), "sparsity"),
    (dict(sparsity=True), "sparsity"),
    (dict(sparsity="0.5"), "sparsity"),
    (dict(sparsity=0.5, scope="per_variable"), "scope"),
    (dict(sparsity=0.5, criterion="gradient_sum"), "gradient"),
    (dict(sparsity=0.5, criterion="preconditioned"), "gradient"),
    (dict(sparsity=0.5, criterion=criteria.GradientSum()), "uses_gradients"),
    (dict(sparsity=0.5, criterion=criteria.Magnitude), "criterion"),
    (dict(sparsity=0.5, criterion="largest"), "criterion"),
    (dict(sparsity=0.5, criterion=None), "criterion"),
    (dict(sparsity=0.5, layers=["nope"]), "'nope' is not a layer"),
    (dict(sparsity=0.5, layers=["batch_normalization"]), "no prunable weights"),
    (dict(sparsity=0.5, layers="dense"), "layers"),
    (dict(sparsity=0.5, layers=[]), "layers"),
    (dict(sparsity=0.5, seed=-1), "seed"),
    (dict(sparsity=0.5, seed=2**31), "seed"),
    (dict(sparsity=0.5, seed=1.5), "seed"),
    (dict(sparsity=0.5, min_kept_per_variable=-1), "min_kept_per_variable"),
    (dict(sparsity=0.5, min_kept_per_variable=1.5), "min_kept_per_variable"),
    (dict(sparsity=0.5, min_kept_per_variable=True), "min_kept_per_variable"),
    (dict(sparsity=0.5, include_recurrent="yes"), "include_recurrent"),
    (dict(sparsity=0.99, min_kept_per_variable=10**6), "min_kept_per_variable"),
]


@pytest.mark.parametrize("kwargs,message", BAD)
def test_bad_inputs_raise_before_any_weight_changes(kwargs, message):
    model = make_model("sequential")
    prune(model, 0.3, layers=[model.layers[0].name])  # one variable masked, one not
    if kwargs.get("layers") == ["batch_normalization"]:
        kwargs = dict(kwargs, layers=[model.layers[1].name])
    before = state(model)
    with pytest.raises(ValueError, match=message):
        prune(model, **kwargs)
    assert_state_unchanged(model, before)


def test_unknown_layer_error_lists_valid_names():
    model = make_model("sequential")
    valid = sorted(v.path.split("/")[-2] for v in prunable_variables(model))
    with pytest.raises(ValueError) as info:
        prunable_variables(model, ["nope"])
    assert str(valid) in str(info.value)


def test_bad_criterion_shape_raises_before_any_weight_changes():
    class Scalar:
        def score(self, state, weight, count, seed):
            return tf.reduce_sum(weight)

    model = make_model("sequential")
    before = snapshot(model)
    with pytest.raises(ValueError, match="shape"):
        prune(model, 0.5, criterion=Scalar())
    for path, value in snapshot(model).items():
        np.testing.assert_array_equal(bits(value), bits(before[path]))


def test_nothing_prunable_raises():
    only_norm = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="no prunable weights"):
        prune(only_norm, 0.5)
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="built"):
        prunable_variables(unbuilt)


def test_pruned_model_still_predicts_and_zero_sparsity_is_identity():
    model = make_model("functional")
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 1)).astype("float32")
    before = snapshot(model)
    y0 = model(x, training=False).numpy()
    masks = prune(model, 0.0)
    assert all(m.all() for m in masks.values())
    for path, value in snapshot(model).items():
        np.testing.assert_array_equal(bits(value), bits(before[path]))
    np.testing.assert_array_equal(model(x, training=False).numpy(), y0)
    prune(model, 0.9)
    y1 = model(x, training=False).numpy()
    assert np.all(np.isfinite(y1)) and not np.allclose(y1, y0)


def test_docstring_examples_run(request):
    attempted, failed = docstring_examples(pruning, request)  # or the doctest items of `make test`
    assert attempted > 0 and failed == 0


# --- Masks enforced through training, gradual pruning, strip, save/load ---

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compiled(kind="sequential", optimizer="adam", **compile_kwargs):
    model = make_model(kind)
    model.compile(INNER[optimizer](), LOSS, **compile_kwargs)
    return model


def check_enforced(model, masks, before):
    """Pruned entries exactly +0.0; most kept entries moved since ``before`` (path -> array)."""
    moved = total = 0
    for v in prunable_variables(model):
        w, m = v.numpy(), masks[v.path]
        assert np.all(bits(w[~m]) == 0), v.path
        moved += int((w[m] != before[v.path][m]).sum())
        total += int(m.sum())
    assert moved > 0.5 * total


def configs(model):
    return [layer.get_config() for layer in model._flatten_layers(include_self=False, recursive=True)]


@pytest.mark.parametrize(
    "kind,optimizer,jit",
    [
        ("sequential", "sgd_momentum", False),
        ("sequential", "adam", False),
        ("sequential", "adamw", False),
        ("subclassed", "adam", True),
    ],  # Embedding: sparse (IndexedSlices) gradients, under XLA
)
def test_pruned_weights_stay_zero_through_fit(kind, optimizer, jit):
    model = compiled(kind, optimizer, jit_compile=jit)
    n_weights, layer_configs = len(model.weights), configs(model)
    masks = prune(model, 0.6)
    for v in prunable_variables(model):
        assert isinstance(v.constraint, PruningMask)
        np.testing.assert_array_equal(pruning_mask(v).numpy(), masks[v.path])
    before = snapshot(model)
    model.fit(*make_data(kind), batch_size=16, epochs=2, verbose=0)
    check_enforced(model, masks, before)
    assert len(model.weights) == n_weights and configs(model) == layer_configs  # masks are not layer state


def test_custom_loop_with_xla_keeps_pruned_weights_zero():
    model = make_model("sequential")
    optimizer = INNER["adamw"]()
    optimizer.build(model.trainable_variables)
    masks = prune(model, 0.6)  # masks installed before the step is traced

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    x, y = make_data("sequential")
    before = snapshot(model)
    for _ in range(5):
        step(x, y)
    check_enforced(model, masks, before)


def test_prune_and_strip_after_fit_retrace_the_train_step():
    model = compiled()
    data = make_data("sequential")
    model.fit(*data, batch_size=16, verbose=0)  # train_function traced without masks
    masks = prune(model, 0.5)
    before = snapshot(model)
    model.fit(*data, batch_size=16, verbose=0)
    check_enforced(model, masks, before)
    layer_configs = configs(model)
    assert strip_pruning(model) is model
    assert all(v.constraint is None for v in model.weights)
    assert pruning_mask(prunable_variables(model)[0]) is None
    model.fit(*data, batch_size=16, verbose=0)
    revived = sum(int((v.numpy()[~masks[v.path]] != 0).sum()) for v in prunable_variables(model))
    assert revived > 0.5 * sum(int((~m).sum()) for m in masks.values())
    assert configs(model) == layer_configs


def test_strip_restores_the_previous_constraint_which_applies_under_the_mask():
    max_norm = keras.constraints.MaxNorm(0.2)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, kernel_constraint=max_norm), keras.layers.Dense(3)]
    )
    model.compile(keras.optimizers.SGD(0.5), LOSS)
    config = model.layers[0].get_config()
    masks = prune(model, 0.5)
    kernel = model.layers[0].kernel
    assert kernel.constraint.inner is max_norm
    model.fit(*make_data("sequential"), batch_size=16, verbose=0)
    w = kernel.numpy()
    assert np.all(bits(w[~masks[kernel.path]]) == 0)
    assert np.all(np.linalg.norm(w, axis=0) <= 0.2 + 1e-6)  # MaxNorm still applied
    strip_pruning(model)
    assert kernel.constraint is max_norm and model.layers[1].kernel.constraint is None
    assert model.layers[0].get_config() == config


def test_masks_are_monotone():
    model = make_model("sequential")
    first = prune(model, 0.5)
    second = prune(model, 0.3)  # less sparsity than reached: nothing revived, nothing else pruned
    for path in first:
        np.testing.assert_array_equal(second[path], first[path])
    assert sum(int((~m).sum()) for m in second.values()) == 72 - num_kept(0.5, 72)
    # Random scores ignore the zeros: only the masks keep earlier pruning.
    model = compiled()
    old = prune(model, 0.3, criterion="random", seed=1)
    model.fit(*make_data("sequential"), batch_size=16, verbose=0)
    new = prune(model, 0.6, criterion="random", seed=2)
    assert all(not np.any(new[p] & ~old[p]) for p in old)
    assert sum(int((~m).sum()) for m in new.values()) == 72 - num_kept(0.6, 72)
    assert sum(int((v.numpy() == 0).sum()) for v in prunable_variables(model)) == 72 - num_kept(0.6, 72)


def test_save_load_keeps_zeros_and_mask_zeros_keeps_them(tmp_path):
    model = compiled()
    data = make_data("sequential")
    masks = prune(model, 0.7)
    model.fit(*data, batch_size=16, verbose=0)
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert all(v.constraint is None for v in loaded.weights)  # masks are not saved ...
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(bits(b.numpy()), bits(a.numpy()))  # ... zeros are
    assert configs(loaded) == configs(model)
    restored = mask_zeros(loaded)
    # Paths are not kept by load_model ('sequential_3/dense_6/kernel' -> 'dense_6/kernel'): match by order.
    assert len(restored) == len(masks)
    for got, expected in zip(restored.values(), masks.values()):
        np.testing.assert_array_equal(got, expected)
    before = snapshot(loaded)
    loaded.fit(*data, batch_size=16, verbose=0)
    check_enforced(loaded, restored, before)


class Recorder(keras.callbacks.Callback):
    """After GradualPruning in the list: (step, pruned_count, zero weights) at each batch begin."""

    def __init__(self, pruning):
        super().__init__()
        self.pruning, self.seen = pruning, []

    def on_train_batch_begin(self, batch, logs=None):
        zeros = sum(int((v.numpy() == 0).sum()) for v in prunable_variables(self.model))
        self.seen.append((int(self.model.optimizer.iterations), self.pruning.pruned_count, zeros))


SIZES = [48, 24]  # prunable kernels of conftest's sequential model


def expected_pruned(schedule, step, scope):
    """Pruned count once the schedule's pruning steps up to ``step`` are applied (monotone masks)."""
    count = 0
    for s in range(step + 1):
        should, sparsity = schedule(s)
        if bool(should):
            sparsity = float(sparsity)
            n = [72 - num_kept(sparsity, 72)] if scope == "global" else [k - num_kept(sparsity, k) for k in SIZES]
            count = max(count, sum(n))
    return count


def fit_gradually(schedule, scope="global", steps=24, steps_per_execution=1, optimizer="sgd_momentum", **kwargs):
    model = compiled(optimizer=optimizer, steps_per_execution=steps_per_execution)
    pruning = GradualPruning(schedule, scope=scope, **kwargs)
    recorder = Recorder(pruning)
    model.fit(*make_data("sequential", n=8 * steps), batch_size=8, verbose=0, callbacks=[pruning, recorder])
    return model, pruning, recorder


class AtSteps(PolynomialDecay):
    """A user's schedule with its own ``should_prune``: steps 3, 4 and 13 only."""

    def should_prune(self, step):
        return tf.reduce_any(tf.equal(tf.cast(step, tf.int64), tf.constant([3, 4, 13], tf.int64)))


SCHEDULES = {
    "polynomial": PolynomialDecay(0.1, 0.7, begin_step=2, end_step=14, frequency=4),  # prunes at 2, 6, 10, 14
    "constant": ConstantSparsity(0.6, begin_step=5, end_step=17, frequency=6),  # prunes at 5, 11, 17
    "custom": AtSteps(0.1, 0.7, begin_step=2, end_step=14, frequency=4),  # prunes at 3, 4, 13 (not 2, 6, 10, 14)
}


# Each schedule once and each scope at least once: the schedule decides when the callback prunes and to what
# sparsity, the scope only how ``prune`` counts at that step (test_exact_counts_zeros_and_untouched_weights: both
# scopes on every model kind).
@pytest.mark.parametrize("name, scope", [("polynomial", "global"), ("constant", "per_layer"), ("custom", "per_layer")])
def test_gradual_pruning_prunes_at_the_schedule_steps_with_exact_counts(name, scope):
    schedule = SCHEDULES[name]
    model, pruning, recorder = fit_gradually(schedule, scope)
    assert [s for s, _, _ in recorder.seen] == list(range(24))
    for step, count, zeros in recorder.seen:
        assert count == zeros == expected_pruned(schedule, step, scope), step
    final = expected_pruned(schedule, 23, scope)
    assert pruning.pruned_count == final and pruning.sparsity == final / 72
    masks = {p: m.numpy() for p, m in pruning.masks.items()}
    if scope == "per_layer":
        sparsity = float(schedule({"polynomial": 14, "constant": 17, "custom": 13}[name])[1])
        assert [int((~m).sum()) for m in masks.values()] == [k - num_kept(sparsity, k) for k in SIZES]
    for v in prunable_variables(model):
        assert pruning.masks[v.path] is pruning_mask(v)
        assert np.all(bits(v.numpy()[~masks[v.path]]) == 0) and np.all(v.numpy()[masks[v.path]] != 0)


def test_gradual_pruning_with_steps_per_execution_reaches_the_target():
    schedule = PolynomialDecay(0.1, 0.7, begin_step=2, end_step=22, frequency=4)  # 2, 6, ..., 22
    model, pruning, recorder = fit_gradually(schedule, steps_per_execution=3)
    assert [s for s, _, _ in recorder.seen] == list(range(0, 24, 3))  # the callback sees every 3rd step
    for step, count, zeros in recorder.seen:  # a pruning step inside an execution applies at the next one
        assert count == zeros == expected_pruned(schedule, step, "global"), step
    # Step 22 falls inside the last execution (21, 22, 23): applied at on_train_end.
    assert pruning.pruned_count == 72 - num_kept(float(schedule(22)[1]), 72) == expected_pruned(schedule, 23, "global")
    assert sum(int((v.numpy() == 0).sum()) for v in prunable_variables(model)) == pruning.pruned_count


def test_gradual_pruning_never_revives_and_continues_from_earlier_masks():
    model = compiled()
    first = prune(model, 0.5)
    decreasing = PolynomialDecay(0.6, 0.2, begin_step=0, end_step=8, frequency=2)  # 0.6 at step 0, then less
    pruning = GradualPruning(decreasing, criterion="random")
    model.fit(*make_data("sequential"), batch_size=8, verbose=0, callbacks=[pruning])
    assert pruning.pruned_count == 72 - num_kept(0.6, 72)  # reached at step 0, never less afterwards
    assert all(not np.any(pruning.masks[p].numpy() & ~first[p]) for p in first)


def test_gradual_pruning_rezeroes_after_ema_finalization():
    model = make_model("sequential")
    model.compile(keras.optimizers.Adam(1e-2, use_ema=True), LOSS)
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=4, frequency=100))
    model.fit(*make_data("sequential"), batch_size=8, verbose=0, callbacks=[pruning])
    # Keras assigns the moving averages (non-zero for weights pruned at step 4) after training.
    assert pruning.pruned_count == 36
    assert sum(int((v.numpy() == 0).sum()) for v in prunable_variables(model)) == 36


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(schedule=0.5), "schedule"),
        (dict(schedule=ConstantSparsity), "schedule"),
        (dict(schedule=lambda step: (True, 0.5)), "schedule"),
        (dict(scope="per_variable"), "scope"),
        (dict(criterion="gradient_sum"), "criterion"),
        (dict(criterion="largest"), "criterion"),
        (dict(seed=-1), "seed"),
        (dict(seed=0.5), "seed"),
        (dict(layers="dense"), "layers"),
        (dict(min_kept_per_variable=-1), "min_kept_per_variable"),
        (dict(include_recurrent=1), "include_recurrent"),
    ],
)
def test_gradual_pruning_rejects_bad_arguments(kwargs, message):
    kwargs = {"schedule": ConstantSparsity(0.5, 0), **kwargs}
    with pytest.raises(ValueError, match=message):
        GradualPruning(**kwargs)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: PolynomialDecay(0.0, 0.5, begin_step=10, end_step=5), "end_step"),
        (lambda: ConstantSparsity(0.5, begin_step=10, end_step=5), "end_step"),
        (lambda: PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10, frequency=0), "frequency"),
        (lambda: ConstantSparsity(0.5, begin_step=0, frequency=0), "frequency"),
        (lambda: ConstantSparsity(1.0, begin_step=0), "target_sparsity"),
    ],
)
def test_bad_schedules_are_rejected_by_their_constructors(make, message):
    with pytest.raises(ValueError, match=message):
        GradualPruning(make())


@pytest.mark.parametrize("layers,message", [(["nope"], "'nope' is not a layer"), (None, "no prunable weights")])
def test_gradual_pruning_bad_model_raises_before_any_change(layers, message):
    if layers is None:  # nothing prunable
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.BatchNormalization()])
        model.compile("sgd", "mse")
        data = make_data("sequential")[0], np.zeros((64, 6), "float32")
    else:
        model = compiled()
        data = make_data("sequential")
    before = state(model)
    with pytest.raises(ValueError, match=message):
        model.fit(*data, batch_size=16, verbose=0, callbacks=[GradualPruning(ConstantSparsity(0.5, 0), layers=layers)])
    assert_state_unchanged(model, before)


def test_gradual_pruning_on_an_already_trained_model_retraces():
    model = compiled()
    data = make_data("sequential")
    model.fit(*data, batch_size=8, verbose=0)  # 8 steps: train_function traced without masks
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=8, frequency=100))  # prunes at the first batch
    zeros = []  # after each step (on_train_end would re-zero the final weights anyway)
    count = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: zeros.append(
            sum(int((v.numpy() == 0).sum()) for v in prunable_variables(model))
        )
    )
    model.fit(*data, batch_size=8, verbose=0, callbacks=[pruning, count])
    assert int(model.optimizer.iterations) == 16 and pruning.pruned_count == 36
    assert zeros == [36] * 8


def _two_scales(seed=0):
    """Dense(8)->Dense(8)->Dense(2) whose middle kernel is 100x smaller: global pruning takes it first."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(8, name="tiny"), keras.layers.Dense(2)]
    )
    tiny = model.get_layer("tiny").kernel
    tiny.assign(tiny.value * 0.01)
    return model


def test_global_pruning_warns_naming_the_variables_it_zeroes_entirely():
    model = _two_scales()
    tiny = model.get_layer("tiny").kernel
    with pytest.warns(UserWarning, match=r"zeroes 1 of 3 prunable variables entirely.*\['" + tiny.path + r"'\]"):
        masks = prune(model, 0.7)  # 112 weights, 78 pruned: the 64 tiny ones and 14 more
    assert not masks[tiny.path].any()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # already empty: not reported again
        prune(model, 0.75)


@pytest.mark.parametrize("floor", [1, 3])
def test_min_kept_per_variable_keeps_the_best_of_each_and_the_total_exact(floor):
    model = _two_scales()
    variables = prunable_variables(model)
    before = [np.abs(v.numpy()) for v in variables]
    total = sum(b.size for b in before)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no variable zeroed entirely
        masks = prune(model, 0.7, min_kept_per_variable=floor)
    kept = [masks[v.path] for v in variables]
    assert sum(int(k.sum()) for k in kept) == num_kept(0.7, total)  # the floor comes out of the same budget
    tiny = [i for i, v in enumerate(variables) if v.path == model.get_layer("tiny").kernel.path][0]
    assert int(kept[tiny].sum()) == floor
    # the floor keeps the tiny kernel's largest entries; the rest is the global top among the others
    floor_mask = ref_top([before[tiny]], floor)[0]
    np.testing.assert_array_equal(kept[tiny], floor_mask)
    others = [b for i, b in enumerate(before) if i != tiny]
    want = ref_top(others, num_kept(0.7, total) - floor)
    for got, ref in zip([k for i, k in enumerate(kept) if i != tiny], want):
        np.testing.assert_array_equal(got, ref)
    for v, k in zip(variables, kept):
        assert np.all(v.numpy()[~k] == 0) and np.all(v.numpy()[k] != 0)


def test_min_kept_per_variable_zero_is_todays_behaviour_bit_for_bit():
    a, b = _two_scales(), _two_scales()
    with pytest.warns(UserWarning):
        ma = prune(a, 0.7)
    with pytest.warns(UserWarning):
        mb = prune(b, 0.7, min_kept_per_variable=0)
    assert len(ma) == len(mb) == 3
    for ka, kb in zip(ma.values(), mb.values()):
        np.testing.assert_array_equal(ka, kb)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(bits(va.numpy()), bits(vb.numpy()))


def test_min_kept_per_variable_per_layer_floor_wins():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), keras.layers.Dense(8)])
    masks = prune(model, 0.9, scope="per_layer", min_kept_per_variable=2)
    assert [int(m.sum()) for m in masks.values()] == [2, 2]  # 4 -> floor 2 (count says 0); 16 -> 2 (count says 2)


def test_gradual_pruning_min_kept_per_variable():
    model = _two_scales()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    pruning_cb = GradualPruning(ConstantSparsity(0.7, begin_step=0), min_kept_per_variable=2)
    model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=4, epochs=1, callbacks=[pruning_cb], verbose=0)
    assert pruning_cb.pruned_count == 112 - num_kept(0.7, 112)
    assert int(pruning_cb.masks[model.get_layer("tiny").kernel.path].numpy().sum()) == 2


@pytest.mark.parametrize("layer", [keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN])
def test_recurrent_kernels_are_prunable_by_choice(layer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 3)), layer(4), keras.layers.Dense(2)])
    rnn = model.layers[0]
    assert rnn.cell.recurrent_kernel.path not in {v.path for v in prunable_variables(model)}  # default unchanged
    variables = prunable_variables(model, include_recurrent=True)
    want = [rnn.cell.kernel.path, rnn.cell.recurrent_kernel.path, model.layers[1].kernel.path]
    assert [v.path for v in variables] == want
    masks = prune(model, 0.5, include_recurrent=True)
    total = sum(int(np.prod(v.shape)) for v in variables)
    assert sum(int((~m).sum()) for m in masks.values()) == total - num_kept(0.5, total)
    recurrent = rnn.cell.recurrent_kernel
    assert np.all(recurrent.numpy()[~masks[recurrent.path]] == 0)
    model.compile(keras.optimizers.Adam(0.1), "mse")
    model.fit(np.ones((4, 5, 3)), np.ones((4, 2)), verbose=0)
    assert np.all(recurrent.numpy()[~masks[recurrent.path]] == 0)  # stays zero through fit


def _tiny_bert_classifier():
    """keras_hub BertTextClassifier from config: vocabulary 100, 2 layers, hidden 32, 2 heads, sequence 16."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=16
    )
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)


@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_every_keras_hub_embedding_table_is_pruned(scope):
    """Token, segment and position tables (keras_hub's PositionEmbedding holds its table as
    `position_embeddings`) are all pruned, to the exact count; nothing is left out, nothing warns."""
    import warnings

    model = _tiny_bert_classifier()
    tables = [v for v in model.weights if len(v.shape) == 2 and "embedding" in v.path and v.name == "embeddings"]
    names = sorted(v.path.split("/")[-2] for v in tables)
    assert names == ["position_embedding", "segment_embedding", "token_embedding"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masks = prune(model, 0.5, scope=scope)
    assert masks.left_out == {} and pruning.left_out_tables(model) == {}
    for table in tables:
        assert table.path in masks and np.all(table.numpy()[~masks[table.path]] == 0)
        if scope == "per_layer":
            assert int(masks[table.path].sum()) == num_kept(0.5, int(np.prod(table.shape)))
    if scope == "global":
        total = sum(m.size for m in masks.values())
        assert sum(int(m.sum()) for m in masks.values()) == num_kept(0.5, total)


def test_a_table_left_out_is_listed_with_its_reason_and_a_warning():
    """A LoRA-enabled Embedding exposes `embeddings` as a computed tensor: its table stays unpruned, named in
    the result's `left_out`, in `left_out_tables` and in a UserWarning (prune and GradualPruning)."""
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(10, 4, name="lora_embed"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.get_layer("lora_embed").enable_lora(2)
    table = model.get_layer("lora_embed")._embeddings
    before = table.numpy().copy()
    with pytest.warns(UserWarning, match=r"leaves 1 embedding table\(s\) out.*lora_embed/embeddings'.*LoRA"):
        masks = prune(model, 0.5)
    assert [p.split("/")[-2] for p in masks] == ["head"] and list(masks.left_out) == [table.path]
    assert "computed tensor" in masks.left_out[table.path]
    np.testing.assert_array_equal(table.numpy(), before)
    assert prune(model, 0.5, layers=["head"]).left_out == {}  # chosen by `layers`: no report
    model.compile(keras.optimizers.SGD(0.01), "mse")
    callback = GradualPruning(ConstantSparsity(0.5, begin_step=0))
    with pytest.warns(UserWarning, match="lora_embed/embeddings"):
        model.fit(np.ones((4, 3), "int32"), np.ones((4, 2)), verbose=0, callbacks=[callback])
    assert list(callback.left_out) == [table.path]
