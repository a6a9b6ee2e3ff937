"""Sparse deltas (``tf_selopt.sparse_delta``): frozen kernels, k trainable deltas, gradient at k positions only."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_selopt
from tf_selopt.keras import sparse_delta as sd

RNG = np.random.default_rng(0)


def _model():
    """Embedding -> EinsumDense (per-head) -> EinsumDense (heads merged) -> Dense -> Dense(2)."""
    ids = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(20, 8, name="emb")(ids)
    h = keras.layers.EinsumDense("abc,cde->abde", output_shape=(6, 2, 4), bias_axes="de", name="qkv")(h)
    h = keras.layers.EinsumDense("abcd,cde->abe", output_shape=(6, 8), name="out")(h)
    h = keras.layers.Dense(5, activation="relu", name="ffn")(h)
    h = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h))
    return keras.Model(ids, h)


def _data(n=32):
    return RNG.integers(0, 20, (n, 6)).astype("int32"), RNG.normal(size=(n, 2)).astype("float32")


def _conv_model(**conv2d):
    """Conv2D(4, 3, **conv2d) -> rows as a sequence -> Conv1D(3, 3, dilation 2, same) -> Dense(2)."""
    x = keras.Input((9, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="c2", **({"strides": 2} | conv2d))(x)
    h = keras.layers.Reshape((-1, 4))(h)
    h = keras.layers.Conv1D(3, 3, dilation_rate=2, padding="same", activation="relu", name="c1")(h)
    return keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h)))


def _conv_data(n=32):
    return RNG.normal(size=(n, 9, 8, 3)).astype("float32"), RNG.normal(size=(n, 2)).astype("float32")


#: model kind -> (model maker, data maker, input signature of a batch of unknown size)
MODELS = {
    "dense": (_model, _data, tf.TensorSpec((None, 6), tf.int32)),
    "conv": (_conv_model, _conv_data, tf.TensorSpec((None, 9, 8, 3), tf.float32)),
}


def _random_positions(model, per_variable=7, seed=0):
    rng = np.random.default_rng(seed)
    return {
        v.path: rng.choice(int(np.prod(v.shape)), min(per_variable, int(np.prod(v.shape))), replace=False)
        for v in model.trainable_variables
    }


def _perturb(model, seed=1):
    rng = np.random.default_rng(seed)
    for layer in sd.sparse_delta_layers(model):
        for v in (layer.sparse_delta, layer.sparse_delta_bias):
            if v is not None:
                v.assign(rng.normal(size=v.shape).astype("float32"))


def _merged_copy(model, make=_model):
    """A plain copy of ``model``'s architecture (``make()``) holding W + delta."""
    plain = make()
    merged = {}
    for layer in sd.sparse_delta_layers(model):
        merged[layer.name] = layer.sparse_delta_merged()
    for layer, source in zip(plain.layers, model.layers):
        for dst, src in zip(layer.weights, [w for w in source.weights if "sparse_delta" not in w.path]):
            dst.assign(src)
        if layer.name in merged:
            kernel, bias = merged[layer.name]
            (layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel).assign(kernel)
            if bias is not None:
                layer.bias.assign(bias)
    return plain


def _loss_and_gradients(model, x, y, signature=None, jit_compile=False):
    """The MSE loss and its gradients by variable path; traced with ``signature`` when given."""

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        return loss, tape.gradient(loss, model.trainable_variables)

    if signature is not None:
        step = tf.function(step, input_signature=signature, jit_compile=jit_compile)
    loss, grads = step(x, y)
    return float(loss), {v.path: tf.convert_to_tensor(g) for v, g in zip(model.trainable_variables, grads)}


def _assert_gradient_at_k_positions_equals_dense_gradient(signature=None, jit_compile=False, make=_model, data=_data):
    model = make()
    sd.sparse_delta(model, _random_positions(model))
    _perturb(model)
    plain = _merged_copy(model, make)
    x, y = data(13)
    loss, grads = _loss_and_gradients(model, x, y, signature, jit_compile)
    dense_loss, dense = _loss_and_gradients(plain, x, y)
    np.testing.assert_allclose(loss, dense_loss, rtol=1e-5)
    assert all(g.shape[0] <= 7 for g in grads.values())  # k-sized gradients only
    for layer in sd.sparse_delta_layers(model):
        base = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
        want = tf.convert_to_tensor(dense[base.path]).numpy().reshape(-1)[layer.sparse_delta_index.numpy()]
        np.testing.assert_allclose(grads[layer.sparse_delta.path].numpy(), want, rtol=1e-4, atol=1e-5)


def test_gradient_at_k_positions_equals_dense_gradient_there():
    _assert_gradient_at_k_positions_equals_dense_gradient()


CONV2D = [{"strides": 2}, {"strides": 1, "dilation_rate": 2, "padding": "same"}, {"strides": (2, 1), "padding": "same"}]


@pytest.mark.parametrize("conv2d", CONV2D, ids=["stride-2", "dilation-2-same", "stride-2x1-same"])
def test_conv_gradient_at_k_positions_equals_dense_gradient_there(conv2d):
    # Conv2D (with kernel and bias deltas) then Conv1D (dilation 2, same): patches against the dense kernel gradient
    _assert_gradient_at_k_positions_equals_dense_gradient(
        make=lambda: _conv_model(**conv2d), data=_conv_data, signature=[MODELS["conv"][2], tf.TensorSpec((None, 2))]
    )


@pytest.mark.parametrize(
    "kind, batch, jit_compile",
    [("dense", 13, False), ("dense", None, False), ("dense", None, True), ("conv", None, True)],
    ids=["static-rows", "dynamic-rows", "xla", "conv-xla"],
)
def test_tiled_backward_in_blocks_smaller_than_the_batch_equals_dense_gradient(monkeypatch, kind, batch, jit_compile):
    # Tiles of 4 rows and chunks of 3 positions: 13 x 6 = 78 rows (13 x 12 patches for the Conv2D) and k = 7 fill
    # neither, so the padded rows and the repeated last chunk are exercised, on the static-rows path (one tile) and
    # the row-tile loop.
    monkeypatch.setattr(sd, "TILE_ROWS", 4)
    monkeypatch.setattr(sd, "CHUNK_POSITIONS", 3)
    make, data, spec = MODELS[kind]
    signature = [tf.TensorSpec((batch, *spec.shape[1:]), spec.dtype), tf.TensorSpec((batch, 2), tf.float32)]
    _assert_gradient_at_k_positions_equals_dense_gradient(signature, jit_compile, make, data)


def _gradient_shapes(model, x, y):
    """Shapes of every tensor the traced training step's gradient ops output."""

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        return tape.gradient(loss, model.trainable_variables)

    graph = step.get_concrete_function(x, y).graph
    shapes = []
    for op in graph.get_operations():
        if op.name.startswith("gradient_tape/"):  # the backward pass, custom gradients included
            shapes += [tuple(t.shape.as_list()) if t.shape.rank is not None else None for t in op.outputs]
    return shapes


KERNEL_SHAPES = {
    "dense": {(20, 8), (8, 2, 4), (2, 4, 8), (8, 5), (30, 2), (160,), (40,), (60,)},
    "conv": {(3, 3, 3, 4), (108,), (3, 4, 3), (36,), (36, 2), (72,)},
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_no_kernel_sized_gradient_in_the_traced_step(kind):
    make, data, _ = MODELS[kind]
    x, y = data(8)
    kernel_shapes = KERNEL_SHAPES[kind]
    plain = make()
    assert kernel_shapes & set(_gradient_shapes(plain, x, y))  # the control: a dense gradient is there
    model = make()
    sd.sparse_delta(model, {layer: np.array([0, 3]) for layer in model.layers if layer.weights})
    found = kernel_shapes & set(_gradient_shapes(model, x, y))
    assert not found, found


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODELS))
def test_fit_xla_trains_deltas_only_and_merge_equals(kind):
    make, data, _ = MODELS[kind]
    model = make()
    x, y = data()
    before = [np.array(v.numpy()) for v in model.weights]
    before_variables = list(model.trainable_variables)
    result = sd.sparse_delta(model, _random_positions(model, 5))
    expected = sum(min(5, int(np.prod(v.shape))) for v in before_variables)
    assert result.trained == sum(int(np.prod(v.shape)) for v in model.trainable_variables) == expected
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=True)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = [w for w in model.weights if "sparse_delta" not in w.path]
    assert all(np.array_equal(b, a.numpy()) for b, a in zip(before, after))  # frozen: bit-identical
    assert all(np.all(layer.sparse_delta.numpy() != 0) for layer in sd.sparse_delta_layers(model))
    assert max(int(np.prod(v.shape)) for v in model.optimizer.variables) == 5  # no N-sized optimizer state
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(_merged_copy(model, make)(x), out, rtol=1e-5, atol=1e-6)
    merged = tf_selopt.merge_sparse_delta(model)
    assert not sd.sparse_delta_layers(merged)
    assert all(type(layer).__module__.startswith("keras.") for layer in merged.layers)  # plain Keras layers
    np.testing.assert_allclose(merged.predict(x, verbose=0), out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no sparse deltas to merge"):
        tf_selopt.merge_sparse_delta(merged)


@pytest.mark.parametrize("kind", list(MODELS))
def test_save_load_resumes_bit_for_bit(tmp_path, kind):
    make, data, _ = MODELS[kind]
    model = make()
    x, y = data()
    sd.sparse_delta(model, _random_positions(model, 4))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    path = os.fspath(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [v.path for v in loaded.trainable_variables] == [v.path for v in model.trainable_variables]
    for a, b in zip(model.weights, loaded.weights):
        assert np.array_equal(a.numpy(), b.numpy()), a.path
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(model.weights, loaded.weights):
        assert np.array_equal(a.numpy(), b.numpy()), a.path


def test_calibrate_path_names_what_it_does_not_cover_and_export_takes_the_merge(tmp_path):
    inp = keras.Input((4,))
    h = keras.layers.Dense(6, name="d")(inp)
    h = keras.layers.LayerNormalization(name="ln")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(h))
    x, y = RNG.normal(size=(32, 4)).astype("float32"), RNG.normal(size=(32, 2)).astype("float32")
    masks = [np.ones(v.shape, bool) for v in model.trainable_variables]
    with pytest.warns(UserWarning, match="ln/gamma"):
        result = tf_selopt.sparse_delta(model, masks)
    assert result.uncovered == {"ln/gamma": 6, "ln/beta": 6}
    assert set(result.frozen) == {"ln/gamma", "ln/beta"}
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    tf_selopt.merge_sparse_delta(model)
    from tf_selopt.deploy.export import export_saved_model

    report = export_saved_model(model, tmp_path, "m", 1)
    assert report is not None


@pytest.mark.slow
def test_keras_hub_bert_classifier_calibrate_sparse_delta_fit_xla():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=16
    )
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None)
    x = {
        "token_ids": RNG.integers(0, 100, (32, 16)).astype("int32"),
        "segment_ids": np.zeros((32, 16), "int32"),
        "padding_mask": np.ones((32, 16), "int32"),
    }
    y = RNG.integers(0, 2, 32)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    masks = tf_selopt.calibrate(
        model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), loss=loss, keep=600, steps=4
    )
    positions = dict(zip([v.path for v in model.trainable_variables], masks))
    positions = {p: m for p, m in positions.items() if "layer_norm" not in p and "position_embedding" not in p}
    positions["transformer_layer_0/self_attention_layer/query/kernel"] = np.arange(0, 1024, 7)  # an EinsumDense
    before = {v.path: np.array(v.numpy()) for v in model.weights}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything covered
        result = tf_selopt.sparse_delta(model, positions)
    assert any("query" in p for p in result.layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, jit_compile=True)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert all(np.array_equal(before[v.path], v.numpy()) for v in model.weights if v.path in before)
    query = [layer for layer in sd.sparse_delta_layers(model) if "query" in layer.path][0]
    assert np.count_nonzero(query.sparse_delta.numpy()) > 0
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(tf_selopt.merge_sparse_delta(model).predict(x, verbose=0), out, rtol=1e-4, atol=1e-5)


def _built_dense():
    layer = keras.layers.Dense(3, name="dd")
    layer.build((None, 4))
    return layer


def _built(layer, shape):
    layer.build(shape)
    return layer


def _convs():
    """Refused convolutions: (name, maker, message)."""
    image = (None, 8, 8, 2)
    return [
        (
            lambda: _built(keras.layers.Conv2D(2, 3, groups=2, name="cc"), image),
            r"'cc' \(Conv2D\) has groups=2; .*need groups in \[1\] \(argument `positions`",
        ),
        (
            lambda: _built(keras.layers.Conv2D(2, 3, data_format="channels_first", name="cc"), (None, 2, 8, 8)),
            r"'cc'.*data_format='channels_first'; .*need data_format in \['channels_last'\]",
        ),
        (
            lambda: _built(keras.layers.Conv1D(2, 3, padding="causal", name="cc"), (None, 8, 2)),
            r"'cc' \(Conv1D\) has padding='causal'; .*need padding in \['valid', 'same'\]",
        ),
        (lambda: _built(keras.layers.Conv3D(2, 3, name="cc"), (None, 4, 4, 4, 1)), r"'cc' \(Conv3D\).*not 3-D"),
        (lambda: _built(keras.layers.DepthwiseConv2D(3, name="cc"), image), r"'cc' \(DepthwiseConv2D\).*depthwise"),
        (lambda: _built(keras.layers.SeparableConv2D(2, 3, name="cc"), image), r"'cc' \(SeparableConv2D\).*separable"),
        (
            lambda: _built(keras.layers.Conv2DTranspose(2, 3, name="cc"), image),
            r"'cc' \(Conv2DTranspose\).*transposed",
        ),
    ]


def _lora():
    layer = _built_dense()
    layer.enable_lora(2)
    return layer


def _twice():
    layer = _built_dense()
    sd.enable_sparse_delta(layer, np.array([0]))
    return layer


BAD = [
    (_built_dense, np.array([12]), ValueError, r"'dd'.*positions.*in \[0, 12\)"),
    (_built_dense, np.array([-1]), ValueError, r"'dd'.*positions.*in \[0, 12\)"),
    (_built_dense, np.array([1, 1]), ValueError, r"'dd'.*positions.*duplicated"),
    (_built_dense, np.array([0.0, 1.0]), TypeError, r"'dd'.*positions.*dtype float64"),
    (_built_dense, np.ones((3, 4), bool), ValueError, r"'dd'.*positions.*shape \(4, 3\)"),
    *[(make, np.array([0]), ValueError, match) for make, match in _convs()],
    (_lora, np.array([0]), ValueError, r"'dd' has LoRA enabled"),
    (_twice, np.array([1]), ValueError, r"'dd' \(argument `layer`\) already has sparse deltas"),
]


@pytest.mark.parametrize("make, positions, error, match", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_input_is_refused_before_any_change(make, positions, error, match):
    layer = make()
    kind, weights = type(layer), [(v.path, v.trainable) for v in layer.weights]
    with pytest.raises(error, match=match):
        sd.enable_sparse_delta(layer, positions)
    assert type(layer) is kind and [(v.path, v.trainable) for v in layer.weights] == weights


def test_bad_model_positions_change_nothing():
    model = _model()
    state = [(v.path, v.trainable) for v in model.weights]
    with pytest.raises(ValueError, match="not a variable"):
        sd.sparse_delta(model, {"emb/embeddings": np.array([0]), "nope/kernel": np.array([0])})
    with pytest.raises(ValueError, match="one mask per model.trainable_variables"):
        sd.sparse_delta(model, [np.ones((20, 8), bool)])
    with pytest.raises(ValueError, match=r"'qkv/kernel'.*in \[0, 64\)"):
        sd.sparse_delta(model, {"emb/embeddings": np.array([0]), "qkv/kernel": np.array([64])})
    assert [(v.path, v.trainable) for v in model.weights] == state
    assert not sd.sparse_delta_layers(model)


def test_mobilenet_v2_conv2d_layers_take_deltas_depthwise_are_named_and_one_step_fits():
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=3)
    masks = [np.arange(int(np.prod(v.shape))).reshape(v.shape) < 3 for v in model.trainable_variables]  # 3 each
    kernels = {layer.path: np.array(layer.kernel.numpy()) for layer in model.layers if hasattr(layer, "kernel")}
    conv2d = {layer.path for layer in model.layers if type(layer) is keras.layers.Conv2D}
    with pytest.warns(UserWarning, match="expanded_conv_depthwise/kernel"):
        result = tf_selopt.sparse_delta(model, masks)
    assert set(result.layers) == conv2d | {"predictions"} and len(conv2d) == 35
    depthwise = {f"{layer.path}/kernel" for layer in model.layers if type(layer) is keras.layers.DepthwiseConv2D}
    assert depthwise and depthwise <= set(result.uncovered)
    x, y = RNG.normal(size=(4, 32, 32, 3)).astype("float32"), RNG.integers(0, 3, 4)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", run_eagerly=True)  # tracing takes ~40 s
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert all(
        np.array_equal(kernels[layer.path], layer.kernel.numpy()) for layer in model.layers if layer.path in kernels
    )
    assert all(np.count_nonzero(layer.sparse_delta.numpy()) for layer in sd.sparse_delta_layers(model))


def test_mixed_precision_sums_over_rows_run_in_float32():
    # 4,096 rows of float16 products of either sign: summed in float32, the gradient is the float64 sum of the
    # same products rounded once to float16 (the compute dtype Keras casts the gradient through).
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False, dtype="mixed_float16")])
    sd.sparse_delta(model, {model.layers[0]: np.array([0, 5])})
    rng = np.random.default_rng(3)
    x = tf.constant(rng.choice([-1, 1], (4096, 3)) * rng.uniform(0.5, 1.5, (4096, 3)), tf.float16)
    dy = tf.constant(rng.uniform(0.5, 1.5, (4096, 2)), tf.float16)
    with tf.GradientTape() as tape:
        y = model(x)
    (grad,) = tape.gradient(y, model.trainable_variables, output_gradients=dy)
    assert y.dtype == tf.float16 and grad.dtype == tf.float32
    x64, dy64 = x.numpy().astype(np.float64), dy.numpy().astype(np.float64)
    want = [np.sum(x64[:, 0] * dy64[:, 0]), np.sum(x64[:, 2] * dy64[:, 1])]  # flat 0 -> (0, 0); 5 -> (2, 1)
    np.testing.assert_array_equal(grad.numpy(), np.float16(want).astype(np.float32))
