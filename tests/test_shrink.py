"""tf_selopt.shrink: channels removed for real (tf_selopt/keras/shrink.py, tf_selopt/core/channels.py).

Real Keras models only. The central check: where the channels ``shrink`` removes already contribute
exactly nothing (their kernel columns, biases and BatchNormalization beta / moving mean are zero, so they
are 0 after every layer), the smaller model computes what the original did."""

import keras
import numpy as np
import pytest
from conftest import SubclassedNet

import tf_selopt
from tf_selopt.core import channels
from tf_selopt.deploy import export
from tf_selopt.keras.shrink import channel_graph, shrink

L = keras.layers


def residual_net(seed=0):
    """Conv-BN-ReLU stem, one residual block (Add), a depthwise conv, a Concatenate, GAP, Dense."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = stem = L.ReLU(name="stem_relu")(x)
    x = L.Conv2D(6, 3, padding="same", name="b_conv1")(x)
    x = L.BatchNormalization(name="b_bn1")(x)
    x = L.ReLU(name="b_relu1")(x)
    x = L.Conv2D(8, 3, padding="same", name="b_conv2")(x)
    x = L.BatchNormalization(name="b_bn2")(x)
    x = L.Add(name="add")([x, stem])
    x = L.ReLU(name="add_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(max_value=6.0, name="dw_relu")(x)
    y = L.Conv2D(4, 1, activation="relu", name="side")(x)
    x = L.Concatenate(name="cat")([x, y])
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(6, 1, name="mix")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(3, name="out")(x)
    model = keras.Model(inputs, outputs, name="resnet")
    for layer in model.layers:  # BatchNormalization statistics that are not the defaults
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([np.random.uniform(0.5, 1.5, n), np.random.uniform(-0.5, 0.5, n),
                               np.random.uniform(-0.5, 0.5, n), np.random.uniform(0.5, 1.5, n)])  # fmt: skip
    return model


def sequential_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, padding="same", activation="relu", name="c0"),
            L.MaxPooling2D(name="p0"),
            L.Conv2D(6, 3, padding="same", activation="relu", name="c1"),
            L.Flatten(name="flat"),
            L.Dense(8, activation="relu", name="d0"),
            L.Dropout(0.1, name="drop"),
            L.Dense(3, name="out"),
        ],
        name="cnn",
    )


def zero_channels(model, fraction=0.5, rng=None):
    """Make the channels of each group that a per-group count at ``fraction`` removes contribute exactly
    nothing: zero columns of every producer, zero bias; after a BN zero beta and moving mean (gamma stays);
    a depthwise conv's bias too. Returns {group producers: zeroed channel indices}."""
    rng = rng or np.random.default_rng(0)
    graph, nodes, _ = channel_graph(model)
    removed = {}
    for group, r in zip(graph.groups, channels.removal_counts([g.size for g in graph.groups], fraction)):
        gone = np.sort(rng.choice(group.size, r, replace=False))
        removed[tuple(group.producers)] = gone
        for name in group.producers:
            layer = model.get_layer(name)
            weights = layer.get_weights()
            weights[0][..., gone] = 0.0
            if len(weights) > 1:
                weights[1][gone] = 0.0
            layer.set_weights(weights)
    kept = []
    for group in graph.groups:
        gone = set(removed[tuple(group.producers)].tolist())
        kept.append(np.array([c for c in range(group.size) if c not in gone]))
    all_kept = dict(enumerate(kept))
    for node in nodes:  # every channel position after a zeroed one: BN beta/mean and depthwise bias 0
        if node.kind not in ("follow", "depthwise") or node.kind == "input":
            continue
        layer = model.get_layer(node.name)
        weights = layer.get_weights()
        if not weights:
            continue
        layout = graph.input_layouts[node.name][0] if node.kind == "follow" else graph.layouts[node.name]
        size = sum(graph.sizes[s] * r for s, r in layout)
        zero = np.setdiff1d(np.arange(size), graph.kept_indices(layout, all_kept))
        if isinstance(layer, L.BatchNormalization):
            weights[1][zero] = 0.0
            weights[2][zero] = 0.0
        elif node.kind == "depthwise" and len(weights) > 1:
            weights[1][zero] = 0.0
        layer.set_weights(weights)
    return removed


# ---------------------------------------------------------------- groups (core, Keras-free)


def test_groups_of_the_residual_net():
    graph, _, _ = channel_graph(residual_net())
    assert [g.producers for g in graph.groups] == [["stem", "b_conv2"], ["b_conv1"], ["side"], ["mix"]]
    assert [g.size for g in graph.groups] == [8, 6, 4, 6]


def test_choose_counts_follow_the_rounding_rule_and_keep_one():
    assert channels.removal_counts([1, 2, 3, 5, 10], 0.5) == [0, 1, 2, 3, 5]  # floor(s*N+0.5), at most N-1
    kept = channels.choose([np.ones(3), np.arange(5.0)], 0.99, "global")
    assert [len(k) for k in kept] == [1, 1]
    kept = channels.choose([np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 40.0])], 0.5, "global")
    assert [k.tolist() for k in kept] == [[2, 3], [2, 3]]  # normalized per group: same ranks -> same counts


def test_global_scope_normalizes_scores_per_group():
    # raw scores would remove all of the small-fan-in group first; per-group mean normalization does not
    kept = channels.choose([np.array([1.0, 1.1, 0.9, 1.0]), np.array([100.0, 110.0, 90.0, 100.0])], 0.25, "global")
    assert [len(k) for k in kept] == [3, 3]


# ---------------------------------------------------------------- outputs unchanged when removed channels are zero


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_residual_net_outputs_unchanged_when_removed_channels_are_zero(scope):
    model = residual_net()
    removed = zero_channels(model)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    small = shrink(model, 0.5, scope=scope)
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    # the residual group lost the same channels in both branches, and the BNs and depthwise conv with them
    kept = np.setdiff1d(np.arange(8), removed[("stem", "b_conv2")])
    kept_b1 = np.setdiff1d(np.arange(6), removed[("b_conv1",)])
    stem = model.get_layer("stem").kernel.numpy()
    np.testing.assert_array_equal(small.get_layer("stem").kernel.numpy(), stem[..., kept])
    np.testing.assert_array_equal(
        small.get_layer("b_conv2").kernel.numpy(), model.get_layer("b_conv2").kernel.numpy()[:, :, kept_b1][..., kept]
    )
    assert small.get_layer("stem_bn").gamma.shape == (4,) and small.get_layer("b_bn2").gamma.shape == (4,)
    assert small.get_layer("dw").kernel.shape == (3, 3, 4, 1)
    assert small.get_layer("mix").kernel.shape == (1, 1, 4 + 2, 3)  # Concatenate: 4 of 8, then 2 of 4


def depthwise_flatten_net(seed=0):
    """A depthwise conv with depth_multiplier 2, then two flattened branches concatenated into a Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, 5, 2))
    a = L.Conv2D(4, 3, padding="same", name="a")(inputs)
    d = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(a)
    d = L.BatchNormalization(name="dw_bn")(d)
    b = L.Conv2D(6, 3, strides=2, name="b")(L.Activation("tanh", name="tanh")(d))
    x = L.Concatenate(name="cat")([L.Flatten(name="fa")(a), L.Flatten(name="fb")(b)])
    x = L.Dense(6, activation="relu", name="h")(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_depthwise_multiplier_and_concatenated_flattens_outputs_unchanged(scope):
    model = depthwise_flatten_net()
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([np.linspace(0.5, 1.5, n), np.linspace(-0.3, 0.3, n), np.linspace(-1, 1, n), np.ones(n)])
    zero_channels(model)
    x = np.random.default_rng(3).normal(size=(3, 5, 5, 2)).astype("float32")
    small = shrink(model, 0.5, scope=scope)
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert small.get_layer("dw").kernel.shape == (3, 3, 2, 2) and small.get_layer("dw_bn").gamma.shape == (4,)
    assert small.get_layer("h").kernel.shape == (5 * 5 * 2 + 2 * 2 * 3, 3)


def test_sequential_flatten_outputs_unchanged_and_exact_parameter_count():
    model = sequential_cnn()
    zero_channels(model)
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 2)).astype("float32")
    small = shrink(model, 0.5, scope="per_layer")
    assert isinstance(small, keras.Sequential)
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    # c0 4->2, c1 6->3, Flatten 3x3x3 = 27 rows, d0 8->4, out 3
    expected = (3 * 3 * 2 * 2 + 2) + (3 * 3 * 2 * 3 + 3) + (27 * 4 + 4) + (4 * 3 + 3)
    assert small.count_params() == expected


@pytest.mark.parametrize("built_by", ["input", "build"])
def test_exact_parameter_count_of_a_dense_chain_and_model_unchanged(built_by):
    keras.utils.set_random_seed(0)
    layers = [L.Dense(8, name="a"), L.Dense(6, name="b"), L.Dense(3, name="c")]
    if built_by == "input":
        model = keras.Sequential([keras.Input((5,))] + layers)
    else:
        model = keras.Sequential(layers)
        model.build((None, 5))
    before = [w.copy() for w in model.get_weights()]
    small = shrink(model, 0.5, scope="per_layer")
    assert small.count_params() == (5 * 4 + 4) + (4 * 3 + 3) + (3 * 3 + 3)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the original is untouched
    assert shrink(model, 0.0).count_params() == model.count_params()


def test_magnitude_keeps_the_largest_l1_columns_and_random_is_seeded():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), L.Dense(4, name="a"), L.Dense(1, name="b")])
    model.get_layer("a").kernel.assign([[0.1, -3.0, 0.2, 1.0], [0.1, 0.0, -0.1, 1.5]])
    small = shrink(model, 0.5)
    np.testing.assert_array_equal(small.get_layer("a").kernel.numpy(), [[-3.0, 1.0], [0.0, 1.5]])
    r1, r2 = shrink(model, 0.5, criterion="random", seed=3), shrink(model, 0.5, criterion="random", seed=3)
    np.testing.assert_array_equal(r1.get_layer("a").kernel.numpy(), r2.get_layer("a").kernel.numpy())
    by_first_row = shrink(model, 0.5, criterion=lambda kernels: kernels[0][0])  # a criterion callable
    np.testing.assert_array_equal(by_first_row.get_layer("a").kernel.numpy(), np.float32([[0.2, 1.0], [-0.1, 1.5]]))


def test_softmax_and_output_kernels_keep_their_channels():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    h = L.Dense(6, activation="softmax", name="attn")(inputs)  # mixes its units: kept whole
    out = L.Dense(2, name="out")(L.Dense(6, name="h")(h))
    small = shrink(keras.Model(inputs, out), 0.5)
    assert small.get_layer("attn").kernel.shape == (4, 6) and small.get_layer("h").kernel.shape == (6, 3)
    assert small.get_layer("out").kernel.shape == (3, 2)


# ---------------------------------------------------------------- real architectures, fine-tune, save, export


def test_mobilenet_v2_shrinks_by_half_and_runs():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BatchNormalization statistics that are not the defaults
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(-0.2, 0.2, n), rng.uniform(-0.2, 0.2, n),
                               rng.uniform(0.5, 1.5, n)])  # fmt: skip
    zero_channels(model)  # then what shrink removes contributes nothing
    small = shrink(model, 0.5)
    assert small.count_params() < 0.4 * model.count_params()
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    out = small(x)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.numpy(), model(x).numpy(), rtol=1e-4, atol=1e-6)
    # residual groups: every project conv of a stage keeps the same filters
    assert small.get_layer("block_1_project").filters == small.get_layer("block_2_project").filters


def test_shrunk_model_fine_tunes_saves_loads_and_exports(tmp_path):
    model = residual_net()
    small = shrink(model, 0.5)
    small.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    y = np.arange(8) % 3
    before = small.get_layer("stem").kernel.numpy().copy()
    small.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.array_equal(before, small.get_layer("stem").kernel.numpy())
    small.save(tmp_path / "small.keras")
    loaded = keras.saving.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    report = export.export_tflite(small, tmp_path / "small.tflite", sample_inputs=x)
    assert report.size_bytes > 0 and report.max_abs_diff <= report.atol


def test_exported_under_the_package_name():
    assert tf_selopt.shrink is shrink


# ---------------------------------------------------------------- bad inputs: before any work


def _dense():
    return keras.Sequential([keras.Input((4,)), L.Dense(4), L.Dense(2)])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(fraction=1.0), ["`fraction`", "[0, 1)"]),
        (dict(fraction=-0.1), ["`fraction`", "[0, 1)"]),
        (dict(fraction=float("nan")), ["`fraction`", "[0, 1)"]),
        (dict(fraction="0.5"), ["`fraction`", "[0, 1)"]),
        (dict(fraction=True), ["`fraction`", "[0, 1)"]),
        (dict(criterion="l2"), ["`criterion`", "'magnitude', 'random'"]),
        (dict(criterion=None), ["`criterion`", "'magnitude', 'random'"]),
        (dict(scope="layer"), ["`scope`", "'global', 'per_layer'"]),
        (dict(scope=None), ["`scope`", "'global', 'per_layer'"]),
        (dict(seed=-1), ["`seed`", "[0, 2**31)"]),
        (dict(seed=1.5), ["`seed`", "[0, 2**31)"]),
        (dict(keep="no_such_layer"), ["`keep`", "['no_such_layer']", "allowed: ['"]),
        (dict(keep=3), ["`keep`", "a layer name or a list of layer names"]),
        (dict(keep=["ok", None]), ["`keep`", "a layer name or a list of layer names"]),
    ],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        shrink(_dense(), **(dict(fraction=0.5) | kwargs))
    for word in words:
        assert word in str(info.value)


def _after_conv(layer):
    return keras.Sequential([keras.Input((4, 4, 2)), L.Conv2D(4, 3, name="conv"), layer, L.Flatten(), L.Dense(2)])


class Scale(L.Layer):  # a custom layer
    def call(self, x):
        return 2.0 * x


def _lstm():
    return keras.Sequential([keras.Input((5, 3)), L.Dense(4, name="proj"), L.LSTM(3, name="lstm"), L.Dense(2)])


def _attention():
    inputs = keras.Input((5, 4))
    h = L.Dense(8, name="proj")(inputs)
    out = L.MultiHeadAttention(2, 4, name="mha")(h, h)
    return keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling1D()(out)))


def _shared():
    inputs = keras.Input((4,))
    dense = L.Dense(4, name="shared")
    return keras.Model(inputs, L.Dense(2)(L.Add()([dense(inputs), dense(inputs)])))


def _reshape_after_conv():
    return _after_conv(L.Reshape((2, 2, 4), name="reshape"))


def _custom_after_conv():
    return _after_conv(Scale(name="scale"))


def _output_only():
    return keras.Sequential([keras.Input((4,)), L.Dense(2, name="out")])


def _mha(heads=4):
    inputs = keras.Input((5, 8))
    out = L.MultiHeadAttention(heads, 2, name="mha")(inputs, inputs)
    return keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling1D()(out)))


@pytest.mark.parametrize(
    "make, kwargs, words",
    [
        (_mha, dict(fraction=0.25, heads=0.9), ["`heads`=0.9", "all 4 heads of 'mha'", "heads=0"]),
        (_mha, dict(fraction=0.9), ["`fraction`=0.9", "all 4 heads of 'mha'"]),
        (lambda: _mha(1), dict(fraction=0.5), ["`fraction`=0.5", "all 1 heads of 'mha'"]),
        (_mha, dict(fraction=0.25, heads=1.0), ["`heads`", "[0, 1)"]),
    ],
)
def test_bad_heads(make, kwargs, words):
    with pytest.raises(ValueError) as info:
        shrink(make(), **kwargs)
    for word in words:
        assert word in str(info.value)


def _a_layer_not_a_model():
    return L.Dense(3)


def _unbuilt():
    return keras.Sequential([L.Dense(4), L.Dense(2)])


@pytest.mark.parametrize(
    "make, words",
    [
        (_reshape_after_conv, ["'reshape' (Reshape)", "'conv'", "Supported"]),
        (_custom_after_conv, ["'scale' (Scale)", "Supported"]),
        (_lstm, ["'lstm' (LSTM)", "'proj'", "Supported"]),
        (_attention, ["'mha' (MultiHeadAttention)", "'proj'"]),
        (_shared, ["'shared'", "called 2 times"]),
        (_unbuilt, ["`model`", "built"]),
        (_output_only, ["`model`", "nothing shrink can remove", "feeds a model output"]),
        (SubclassedNet, ["`model`", "Sequential or functional"]),
        (_a_layer_not_a_model, ["`model`", "Sequential or functional"]),
    ],
)
def test_bad_models(make, words):
    model = make()
    with pytest.raises(ValueError) as info:
        shrink(model, 0.5)
    for word in words:
        assert word in str(info.value)


def test_unsupported_layer_before_any_kernel_is_fine():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((16,)), L.Reshape((4, 4, 1), name="reshape"), L.Conv2D(4, 3, name="conv"), L.Flatten(), L.Dense(2)]
    )
    small = shrink(model, 0.5)
    assert small.get_layer("conv").kernel.shape == (3, 3, 1, 2)


def test_a_built_subclassed_model_is_refused():
    model = SubclassedNet()
    model(np.zeros((1, 3), "int32"))
    with pytest.raises(ValueError, match="Sequential or functional"):
        shrink(model, 0.5)


# ---------------------------------------------------------------- recalibrate: BatchNormalization statistics


def conv_bn_net(seed=0):
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(8, 3, padding="same", name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(4, 3, name="conv2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    outputs = L.Dense(2, name="out")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("as_dataset", [False, True])
def test_recalibrate_sets_exact_input_statistics_and_nothing_else(as_dataset):
    import tensorflow as tf

    model = conv_bn_net()
    x = np.random.default_rng(0).normal(size=(40, 6, 6, 2)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(40))).batch(16) if as_dataset else x
    plain = shrink(model, 0.5)
    small = shrink(model, 0.5, recalibrate=data, recalibrate_batches=3)  # 3 batches cover all 40 (16 or 32 a batch)
    for name in ("conv", "bn", "conv2", "bn2", "out"):  # every other weight bit for bit
        old, new = plain.get_layer(name).get_weights(), small.get_layer(name).get_weights()
        kept = slice(None, 2) if name.startswith("bn") else slice(None)  # gamma, beta
        for a, b in zip(old[kept], new[kept]):
            np.testing.assert_array_equal(a, b)
    # bn: its input is conv's output; bn2: conv2's output after bn in inference mode with bn's new statistics
    h = small.get_layer("conv")(x).numpy().astype(np.float64)
    bn = small.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), h.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), h.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    h2 = small.get_layer("conv2")(small.get_layer("relu")(bn(h.astype("float32"), training=False))).numpy()
    bn2 = small.get_layer("bn2")
    np.testing.assert_allclose(bn2.moving_mean.numpy(), h2.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn2.moving_variance.numpy(), h2.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain.get_layer("bn").moving_mean.numpy(), bn.moving_mean.numpy())


def test_recalibrate_reads_only_the_given_number_of_batches():
    model = conv_bn_net()
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    x[32:] += 5.0  # the second batch of 32 differs: not read with recalibrate_batches=1
    small = shrink(model, 0.5, recalibrate=x, recalibrate_batches=1)
    h = small.get_layer("conv")(x[:32]).numpy().astype(np.float64)
    np.testing.assert_allclose(small.get_layer("bn").moving_mean.numpy(), h.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(recalibrate=np.zeros((4, 6, 6, 3), "float32")), ValueError, ["`recalibrate`", "(None, 6, 6, 2)"]),
        (dict(recalibrate=np.zeros((6, 6, 2), "float32")), ValueError, ["`recalibrate`", "batch axis"]),
        (dict(recalibrate=[np.zeros((4, 6, 6, 2))] * 2), ValueError, ["`recalibrate`", "1 input(s)"]),
        (dict(recalibrate=np.array(["a"] * 4)), ValueError, ["`recalibrate`"]),
        (dict(recalibrate=np.zeros((0, 6, 6, 2), "float32")), ValueError, ["`recalibrate`", "empty"]),
        (dict(recalibrate="data"), TypeError, ["`recalibrate`", "tf.data.Dataset"]),
        (dict(recalibrate=np.zeros((4, 6, 6, 2)), recalibrate_batches=0), ValueError, ["`recalibrate_batches`"]),
    ],
)
def test_bad_recalibrate(kwargs, error, words):
    with pytest.raises(error) as info:
        shrink(conv_bn_net(), 0.5, **kwargs)
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------------------------- nested models, attention heads, never a no-op


def test_nested_functional_model_is_shrunk_inside():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((5,))
    h = L.Dense(8, activation="relu", name="a")(inner_in)
    inner = keras.Model(inner_in, L.Dense(6, name="b")(h), name="inner")
    zero_channels(inner)  # a's removed units contribute nothing
    inputs = keras.Input((5,))
    model = keras.Model(inputs, L.Dense(2, name="out")(inner(inputs)))
    small = shrink(model, 0.5, scope="per_layer")
    assert small.get_layer("inner").get_layer("a").kernel.shape == (5, 4)
    assert model.count_params() - small.count_params() == 4 * (5 + 1 + 6)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def zero_heads(layer, heads):
    """Heads ``heads`` of an attention layer (or a keras_hub encoder's) contribute nothing and score lowest."""
    for variable in layer.weights:
        part, what = variable.path.split("/")[-2:]
        value = variable.numpy()
        if part in ("query", "key", "value"):
            value[..., heads, :] = 0.0
        elif part == "attention_output" and what == "kernel":
            value[heads] = 0.0
        variable.assign(value)


def test_multi_head_attention_loses_whole_heads():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    out = L.MultiHeadAttention(4, 3, name="mha")(inputs, inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling1D()(out)))
    zero_heads(model.get_layer("mha"), [2])
    small = shrink(model, 0.25)
    assert small.get_layer("mha").num_heads == 3
    assert tuple(small.get_layer("mha").weights[0].shape) == (8, 3, 3)
    assert model.count_params() - small.count_params() == 3 * (8 * 3 + 3) + 3 * 8
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def tiny_bert_classifier():
    """keras_hub BertTextClassifier from config (2 layers, hidden 32, 4 heads of 8, 64 units), as
    ``keras.Model(task.inputs, task.outputs)``: its backbone is a nested functional model."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64, max_sequence_length=16
    )
    task = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    return keras.Model(task.inputs, task.outputs)


def test_keras_hub_encoder_loses_heads_and_feed_forward_units_exactly(tmp_path):
    model = tiny_bert_classifier()
    backbone = model.get_layer("bert_backbone")
    rng = np.random.default_rng(0)
    for i, head in enumerate([1, 3]):
        encoder = backbone.get_layer(f"transformer_layer_{i}")
        zero_heads(encoder, [head])
        gone = rng.choice(64, 16, replace=False)  # feed-forward units: gelu(0) = 0
        for variable in encoder.weights:
            if "feedforward_intermediate_dense" in variable.path:
                value = variable.numpy()
                value[..., gone] = 0.0
                variable.assign(value)
    with pytest.warns(UserWarning, match="'token_embedding' \\(ReversibleEmbedding\\)"):
        small = shrink(model, 0.25, scope="per_layer")
    per_layer = 3 * (32 * 8 + 8) + 8 * 32 + 16 * (32 + 1 + 32)  # one head, 16 units
    assert model.count_params() - small.count_params() == 2 * per_layer
    encoder = small.get_layer("bert_backbone").get_layer("transformer_layer_0")
    assert (encoder.num_heads, encoder.intermediate_dim, encoder.key_dim) == (3, 48, 8)
    x = {
        "token_ids": rng.integers(0, 100, (2, 16)).astype("int32"),
        "segment_ids": np.zeros((2, 16), "int32"),
        "padding_mask": np.ones((2, 16), "int32"),
    }
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    small.save(tmp_path / "small.keras")  # TransformerEncoderHeads is registered: it loads
    loaded = keras.saving.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(loaded(x).numpy(), small(x).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_keep_leaves_the_named_groups_whole_and_the_fraction_counts_the_rest(scope):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(8, name="a"), L.Dense(6, name="b"), L.Dense(4, name="c"), L.Dense(2, name="out")]
    )
    small = shrink(model, 0.5, scope=scope, keep="a")
    assert small.get_layer("a").units == 8  # kept whole
    # the other 6 + 4 channels: per group 3 and 2 go; globally 5 of 10 (each group keeps at least one)
    assert small.get_layer("b").units + small.get_layer("c").units == 5
    if scope == "per_layer":
        assert (small.get_layer("b").units, small.get_layer("c").units) == (3, 2)
    both = shrink(model, 0.5, scope=scope, keep=["a", "b"])
    assert [both.get_layer(n).units for n in "abc"] == [8, 6, 2]


def test_keep_leaves_an_attention_layer_whole_and_says_so_when_nothing_is_left():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    out = L.MultiHeadAttention(4, 3, name="mha")(inputs, inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling1D()(out)))
    with pytest.warns(UserWarning, match=r"removed no parameter.*or is kept whole by keep=\['mha'\]"):
        small = shrink(model, 0.25, keep=["mha"])
    assert small.get_layer("mha").num_heads == 4 and small.count_params() == model.count_params()


def test_a_shrink_that_rounds_to_nothing_warns():
    model = keras.Sequential([keras.Input((4,)), L.Dense(2, name="a"), L.Dense(1, name="b")])
    with pytest.warns(UserWarning, match="removed no parameter"):
        shrink(model, 0.1)


def test_a_subclassed_nested_model_is_named_when_it_cannot_be_re_created():
    inner = SubclassedNet()
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Dense(5, name="h")(inner(inputs))))
    with pytest.raises(ValueError, match="(?s)re-creates every layer from its config.*SubclassedNet.*subclassed model"):
        shrink(model, 0.4)


def test_recalibrate_reaches_batch_norm_inside_a_nested_model():
    keras.utils.set_random_seed(0)
    inner = conv_bn_net()
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, L.Dense(3, name="head")(inner(inputs)))
    x = np.random.default_rng(0).normal(size=(20, 6, 6, 2)).astype("float32")
    small = shrink(model, 0.5, recalibrate=x)
    nested = small.get_layer(inner.name)
    h = nested.get_layer("conv")(x).numpy().astype(np.float64)
    bn = nested.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), h.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), h.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
