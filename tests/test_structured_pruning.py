"""Structured pruning: blocks along the input axis (``block_size``) and N:M (``sparsity_m_by_n``).

The core functions against NumPy references; ``prune`` / ``GradualPruning``: exact counts of whole blocks,
exactly m zeros in every group of n, kept through training; bad inputs refused before any change; export:
the real converter keeps 1x4 (float) and 1x16 (int8) blocks sparse, without a DENSIFY op."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_selopt.core import sparsity as sp
from tf_selopt.core.schedules import ConstantSparsity, PolynomialDecay
from tf_selopt.deploy import _compat
from tf_selopt.deploy.export import ExportVerificationError, export_tflite
from tf_selopt.keras.pruning import GradualPruning, prune, pruning_mask, strip_pruning


def mlp(seed=0, widths=(16, 8), inputs=32):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((inputs,))] + [
        keras.layers.Dense(w, activation="relu", name=f"d{i}") for i, w in enumerate(widths[:-1])
    ]
    return keras.Sequential(layers + [keras.layers.Dense(widths[-1], name=f"d{len(widths) - 1}")], name="mlp")


def kernels(model):
    return [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]


def np_blocks(x, r, c):
    """(..., in, out) -> (..., in/c, out/r, c*r) with each block's entries on the last axis."""
    *lead, i, o = x.shape
    b = x.reshape(*lead, i // c, c, o // r, r)
    b = np.moveaxis(b, -3, -2)  # (..., in/c, out/r, c, r)
    return b.reshape(*lead, i // c, o // r, c * r)


def top_mask(scores, keep):
    """Exact top-``keep`` over a flat float32 array, ties to the lowest index."""
    order = sorted(range(len(scores)), key=lambda j: (-float(scores[j]), j))
    mask = np.zeros(len(scores), bool)
    mask[order[:keep]] = True
    return mask


def count_of(s, n):
    return min(n, int(np.floor(s * n + 0.5)))


# ---------------------------------------------------------------- core


@pytest.mark.parametrize("shape,block", [((8, 6), (1, 4)), ((3, 3, 8, 6), (2, 4)), ((16, 4), (1, 16))])
def test_block_scores_and_expand_match_numpy(shape, block):
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    r, c = block
    got = sp.block_scores(x, block).numpy()
    np.testing.assert_allclose(got, np_blocks(x.astype(np.float64), r, c).sum(-1), rtol=1e-12)
    blocks = np.random.default_rng(1).random(got.shape) < 0.5
    expanded = sp.expand_blocks(blocks, block, shape).numpy()
    per_block = np_blocks(expanded, r, c)
    assert (per_block == blocks[..., None]).all()  # every entry of a block carries its block's value
    assert sp.block_any(expanded, block).numpy().tolist() == blocks.tolist()
    assert sp.block_count(shape, block) == blocks.size


@pytest.mark.parametrize("m_by_n", [(2, 4), (1, 4), (3, 4), (7, 8)])
def test_m_by_n_mask_prunes_exactly_m_of_every_n_lowest_first(m_by_n):
    m, n = m_by_n
    x = np.round(np.random.default_rng(0).standard_normal((3, 16, 5)), 1).astype("float32")  # ties likely
    mask = sp.m_by_n_mask(tf.constant(x), m_by_n).numpy()
    groups = np.moveaxis(x, -1, -2).reshape(3, 5, 16 // n, n)
    kept = np.moveaxis(mask, -1, -2).reshape(3, 5, 16 // n, n)
    assert (kept.sum(-1) == n - m).all()
    for g, k in zip(groups.reshape(-1, n), kept.reshape(-1, n)):
        assert k.tolist() == top_mask(g, n - m).tolist()
    assert sp.is_m_by_n(np.where(mask, x, 0.0), m_by_n)
    assert not sp.is_m_by_n(np.where(mask, x, 0.0) + 1.0, m_by_n)


def test_m_by_n_nan_ranks_lowest():
    x = tf.constant([[np.nan], [-np.inf], [1.0], [np.nan]])
    assert sp.m_by_n_mask(x, (2, 4)).numpy().ravel().tolist() == [False, True, True, False]


# ---------------------------------------------------------------- prune


@pytest.mark.parametrize("scope", ["global", "per_layer"])
@pytest.mark.parametrize("block,sparsity", [((1, 4), 0.9), ((1, 4), 0.37), ((2, 4), 0.5), ((1, 8), 0.75)])
def test_prune_blocks_exact_count_of_whole_blocks_by_summed_magnitude(scope, block, sparsity):
    model = mlp()
    before = [k.numpy().copy() for k in kernels(model)]
    masks = prune(model, sparsity, scope=scope, block_size=block)
    r, c = block
    scores = [np_blocks(np.abs(w).astype(np.float64), r, c).sum(-1).astype(np.float32) for w in before]
    if scope == "global":
        flat = np.concatenate([s.ravel() for s in scores])
        keep = top_mask(flat, flat.size - count_of(sparsity, flat.size))
        want = np.split(keep, np.cumsum([s.size for s in scores])[:-1])
    else:
        want = [top_mask(s.ravel(), s.size - count_of(sparsity, s.size)) for s in scores]
    pruned_blocks = 0
    for k, w0, mask, wanted, s in zip(kernels(model), before, masks.values(), want, scores):
        w = k.numpy()
        per_block = np_blocks(mask, r, c)
        assert (per_block.all(-1) | ~per_block.any(-1)).all()  # whole blocks: all kept or all pruned
        assert per_block.all(-1).ravel().tolist() == wanted.tolist()
        assert (w[~mask] == 0).all() and np.array_equal(w[mask].view(np.uint32), w0[mask].view(np.uint32))
        assert np.array_equal(pruning_mask(k).numpy(), mask)
        pruned_blocks += int((~per_block.any(-1)).sum())
    total = sum(s.size for s in scores)
    if scope == "global":
        assert pruned_blocks == count_of(sparsity, total)
    else:
        assert pruned_blocks == sum(count_of(sparsity, s.size) for s in scores)


def test_blocks_on_a_conv_kernel_run_along_input_channels():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 8)), keras.layers.Conv2D(4, 3)])
    (mask,) = prune(model, 0.5, block_size=(1, 4)).values()
    assert mask.shape == (3, 3, 8, 4)
    per_block = mask.reshape(3, 3, 2, 4, 4)  # (h, w, in/4, 4 consecutive input channels, out)
    assert (per_block.all(3) | ~per_block.any(3)).all()
    assert int((~per_block.any(3)).sum()) == count_of(0.5, 3 * 3 * 2 * 4)


def test_blocks_stay_zero_through_training_and_masks_are_monotone():
    model = mlp()
    first = prune(model, 0.5, block_size=(1, 4))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    x = np.random.default_rng(0).standard_normal((64, 32)).astype("float32")
    model.fit(x, np.ones((64, 8)), epochs=2, batch_size=16, verbose=0)
    for k, mask in zip(kernels(model), first.values()):
        assert (k.numpy()[~mask] == 0).all() and (k.numpy()[mask] != 0).all()
    second = prune(model, 0.75, block_size=(1, 4))
    total = sum(m.size // 4 for m in second.values())
    assert sum(int((~m).sum()) // 4 for m in second.values()) == count_of(0.75, total)
    assert all((~a | b).all() for a, b in zip(second.values(), first.values()))  # pruned stays pruned
    assert prune(model, 0.5, block_size=(1, 4)).keys() == second.keys()  # less sparsity: nothing changes
    assert all(np.array_equal(pruning_mask(k).numpy(), m) for k, m in zip(kernels(model), second.values()))


@pytest.mark.parametrize("m_by_n", [(2, 4), (1, 4)])
def test_m_by_n_exact_in_every_group_and_kept_through_training(m_by_n):
    m, n = m_by_n
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 4))
    h = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(h))
    before = [k.numpy().copy() for k in kernels(model)]
    masks = prune(model, None, sparsity_m_by_n=m_by_n)
    assert prune(model, m / n, sparsity_m_by_n=m_by_n).keys() == masks.keys()  # the implied sparsity is accepted
    for w0, mask in zip(before, masks.values()):
        *lead, i, o = mask.shape
        groups = np.moveaxis(mask, -1, -2).reshape(-1, i // n, n)
        assert ((~groups).sum(-1) == m).all()  # exactly m zeros in every group, each group checked
        values = np.moveaxis(np.abs(w0), -1, -2).reshape(-1, n)
        for v, k in zip(values, groups.reshape(-1, n)):
            assert k.tolist() == top_mask(v, n - m).tolist()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    x = np.random.default_rng(0).standard_normal((32, 6, 6, 4)).astype("float32")
    model.fit(x, np.ones((32, 4)), epochs=2, batch_size=8, verbose=0)
    for k in kernels(model):
        assert sp.is_m_by_n(k.numpy(), m_by_n)
        *_, i, o = k.shape
        zeros = (np.moveaxis(k.numpy(), -1, -2).reshape(-1, n) == 0).sum(-1)
        assert (zeros == m).all()


def test_gradual_pruning_in_blocks_and_n_by_m():
    x = np.random.default_rng(0).standard_normal((32, 32)).astype("float32")
    y = np.ones((32, 8), "float32")
    model = mlp()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=6, frequency=2)
    pruning = GradualPruning(schedule, block_size=(1, 4))
    model.fit(x, y, epochs=2, batch_size=4, callbacks=[pruning], verbose=0)  # 16 steps
    total = sum(int(np.prod(k.shape)) // 4 for k in kernels(model))
    zero_blocks = sum(int((np_blocks(k.numpy(), 1, 4) == 0).all(-1).sum()) for k in kernels(model))
    assert zero_blocks == count_of(0.8, total) and pruning.pruned_count == 4 * count_of(0.8, total)

    model = mlp()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=3, frequency=100), sparsity_m_by_n=(2, 4))
    model.fit(x, y, epochs=1, batch_size=8, callbacks=[pruning], verbose=0)
    assert all(sp.is_m_by_n(k.numpy(), (2, 4)) for k in kernels(model))
    assert pruning.sparsity == 0.5

    model = mlp()  # N:M whose schedule never reaches its begin step: nothing pruned
    model.compile(keras.optimizers.Adam(0.01), "mse")
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=1000), sparsity_m_by_n=(2, 4))
    model.fit(x, y, epochs=1, batch_size=8, callbacks=[pruning], verbose=0)
    assert pruning.pruned_count == 0 and all((k.numpy() != 0).all() for k in kernels(model))


BAD = [
    (dict(sparsity=0.5, block_size=(0, 4)), "`block_size` must be None or a pair of ints >= 1"),
    (dict(sparsity=0.5, block_size=(4,)), "`block_size` must be None or a pair of ints >= 1"),
    (dict(sparsity=0.5, block_size="1x4"), "`block_size` must be None or a pair of ints >= 1"),
    (dict(sparsity=0.5, block_size=(1.0, 4)), "`block_size` must be None or a pair of ints >= 1"),
    (dict(sparsity=0.5, block_size=(True, 4)), "`block_size` must be None or a pair of ints >= 1"),
    (dict(sparsity=0.5, block_size=(1, 5)), r"`block_size`=\(1, 5\): 'mlp/d0/kernel' of shape \(32, 16\)"),
    (dict(sparsity=0.5, block_size=(3, 4)), r"`block_size`=\(3, 4\): 'mlp/d0/kernel' of shape \(32, 16\)"),
    (dict(sparsity=None, sparsity_m_by_n=(4, 4)), "1 <= m < n"),
    (dict(sparsity=None, sparsity_m_by_n=(0, 4)), "1 <= m < n"),
    (dict(sparsity=None, sparsity_m_by_n=(3, 2)), "1 <= m < n"),
    (dict(sparsity=None, sparsity_m_by_n=(2, 4, 1)), "`sparsity_m_by_n` must be None or a pair"),
    (dict(sparsity=None, sparsity_m_by_n="2:4"), "`sparsity_m_by_n` must be None or a pair"),
    (dict(sparsity=None, sparsity_m_by_n=(2, 5)), r"`sparsity_m_by_n`=\(2, 5\): 'mlp/d0/kernel' of shape \(32, 16\)"),
    (dict(sparsity=None, sparsity_m_by_n=(2, 4), block_size=(1, 4)), "exclude each other"),
    (dict(sparsity=0.9, sparsity_m_by_n=(2, 4)), "conflicts with `sparsity_m_by_n`"),
    (dict(sparsity=None), "`sparsity` must be a float"),
    (dict(sparsity=None, sparsity_m_by_n=(2, 4), min_kept_per_variable=1), "does not apply"),
    (dict(sparsity=0.8, policy="xnnpack"), r"`policy` must be None or one of \('xnnpack_1x1',\)"),
    (dict(sparsity=0.8, policy=["xnnpack_1x1"]), "`policy` must be None or one of"),
    (dict(sparsity=0.8, policy="xnnpack_1x1"), r"model 'mlp' has no layer to prune under it .* 'd0' is a Dense"),
]


@pytest.mark.parametrize("kwargs,message", BAD)
def test_bad_structured_inputs_raise_before_any_weight_changes(kwargs, message):
    model = mlp()
    prune(model, 0.3, layers=[model.layers[0].name])  # one variable masked, one not
    before = [k.numpy().copy() for k in kernels(model)]
    masks = {k.path: None if pruning_mask(k) is None else pruning_mask(k).numpy().copy() for k in kernels(model)}
    with pytest.raises(ValueError, match=message):
        prune(model, **kwargs)
    for k, w in zip(kernels(model), before):
        assert np.array_equal(k.numpy(), w)
        mask = pruning_mask(k)
        assert (mask is None) == (masks[k.path] is None)
        assert mask is None or np.array_equal(mask.numpy(), masks[k.path])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(block_size=(1, 0)), "`block_size` must be None"),
        (dict(sparsity_m_by_n=(2, 2)), "1 <= m < n"),
        (dict(sparsity_m_by_n=(2, 4), block_size=(1, 4)), "exclude each other"),
        (dict(sparsity_m_by_n=(2, 4), min_kept_per_variable=2), "does not apply"),
        (dict(policy="1x1"), "`policy` must be None or one of"),
    ],
)
def test_gradual_pruning_refuses_bad_structure(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradualPruning(ConstantSparsity(0.5, 0), **kwargs)


def test_gradual_pruning_refuses_an_indivisible_kernel_at_train_begin_before_any_change():
    model = mlp(widths=(16, 8), inputs=30)  # 30 inputs: not divisible by 4
    model.compile(keras.optimizers.SGD(0.1), "mse")
    before = [k.numpy().copy() for k in kernels(model)]
    with pytest.raises(ValueError, match=r"`block_size`=\(1, 4\): 'mlp/d0/kernel' of shape \(30, 16\)"):
        model.fit(
            np.ones((8, 30)),
            np.ones((8, 8)),
            callbacks=[GradualPruning(ConstantSparsity(0.5, 0), block_size=(1, 4))],
            verbose=0,
        )
    assert all(np.array_equal(k.numpy(), w) for k, w in zip(kernels(model), before))
    assert all(pruning_mask(k) is None for k in kernels(model))


# ---------------------------------------------------------------- policy: XNNPack's sparse 1x1 convolutions


def conv_net(seed=0):
    """A small NHWC conv net: 3x3/s2 stem, 1x1 convs XNNPack can run sparse, and kernels it cannot."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = inputs = keras.Input((8, 8, 3))
    x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(8, 3, strides=2, name="stem")(x)  # 3x3: not pruned
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(16, 1, activation="relu", name="expand")(x)  # 1x1: pruned
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)  # depthwise: not pruned
    y = L.Conv2D(8, 1, name="project")(x)  # 1x1: pruned
    y = L.Conv2D(8, 1, strides=2, name="strided")(y)  # 1x1 but stride 2: not pruned
    y = L.Conv2D(8, 1, dilation_rate=2, name="dilated")(y)  # 1x1 but dilated: not pruned
    x = L.GlobalAveragePooling2D()(y)
    return keras.Model(inputs, L.Dense(4, name="head")(x), name="convnet")


ONE_BY_ONE = ("expand", "project")


@pytest.mark.parametrize("scope,sparsity", [("per_layer", 0.75), ("global", 0.8)])
def test_xnnpack_policy_prunes_exactly_the_1x1_kernels(scope, sparsity):
    model = conv_net()
    before = {v.path: v.numpy().copy() for v in model.weights}
    pruned = {model.get_layer(n).kernel.path for n in ONE_BY_ONE}
    masks = prune(model, sparsity, scope=scope, policy="xnnpack_1x1")
    assert set(masks) == pruned
    for v in model.weights:  # every other weight (3x3 stem, depthwise, strided/dilated 1x1, BN, biases, head) as is
        if v.path not in pruned:
            assert pruning_mask(v) is None and np.array_equal(v.numpy(), before[v.path]), v.path
    scores = {p: np.abs(before[p]).ravel() for p in pruned}
    if scope == "per_layer":  # each 1x1 kernel loses floor(s * n + 0.5) of its n weights, the smallest |w|
        expected = {p: top_mask(a, a.size - count_of(sparsity, a.size)) for p, a in scores.items()}
    else:  # one budget over the two 1x1 kernels only
        paths = sorted(pruned, key=[v.path for v in model.weights].index)
        flat = np.concatenate([scores[p] for p in paths])
        keep = top_mask(flat, flat.size - count_of(sparsity, flat.size))
        expected = dict(zip(paths, np.split(keep, np.cumsum([scores[p].size for p in paths])[:-1])))
    for p, mask in masks.items():
        assert np.array_equal(mask.ravel(), expected[p]), p
        w = next(v for v in model.weights if v.path == p).numpy()
        assert np.array_equal(w, np.where(mask, before[p], 0.0))  # kept weights bit for bit, pruned exactly 0.0
    assert sum(int((~m).sum()) for m in masks.values()) == (
        sum(count_of(sparsity, m.size) for m in masks.values())
        if scope == "per_layer"
        else count_of(sparsity, sum(m.size for m in masks.values()))
    )


def test_xnnpack_policy_warns_below_two_thirds_and_narrows_layers():
    model = conv_net()
    with pytest.warns(UserWarning, match="XNNPack runs those dense"):
        prune(model, 0.5, scope="per_layer", policy="xnnpack_1x1")
    model = conv_net()
    masks = prune(model, 0.9, scope="per_layer", policy="xnnpack_1x1", layers=["project"])
    assert list(masks) == [model.get_layer("project").kernel.path]
    assert pruning_mask(model.get_layer("expand").kernel) is None


def test_gradual_pruning_with_the_xnnpack_policy_prunes_only_1x1_kernels():
    model = conv_net()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    others = [layer.name for layer in model.layers if hasattr(layer, "kernel") and layer.name not in ONE_BY_ONE]
    callback = GradualPruning(ConstantSparsity(0.75, 0), scope="per_layer", policy="xnnpack_1x1")
    model.fit(np.ones((4, 8, 8, 3)), np.ones((4, 4)), epochs=1, callbacks=[callback], verbose=0)
    assert set(callback.masks) == {model.get_layer(n).kernel.path for n in ONE_BY_ONE}
    for n in ONE_BY_ONE:
        k = model.get_layer(n).kernel.numpy()
        assert int(np.sum(k == 0)) == count_of(0.75, k.size)
    assert all(pruning_mask(model.get_layer(n).kernel) is None for n in others)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(layers=["stem"]), r"`layers` names 'stem', which has a 3x3 kernel, not 1x1"),
        (dict(layers=["expand", "dw"]), r"`layers` names 'dw', which is a DepthwiseConv2D, not a Conv2D"),
        (dict(layers=["strided"]), r"'strided', which has strides \(2, 2\), not \(1, 1\)"),
        (dict(layers=["dilated"]), r"'dilated', which has dilation_rate \(2, 2\), not \(1, 1\)"),
        (dict(layers=["nope"]), r"`layers`: 'nope' is not a layer of the model"),
        (dict(layers="expand"), "`layers` must be None or a non-empty list"),
    ],
)
def test_xnnpack_policy_bad_layers_raise_before_any_change(kwargs, message):
    model = conv_net()
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(ValueError, match=message):
        prune(model, 0.8, policy="xnnpack_1x1", **kwargs)
    assert all(np.array_equal(v.numpy(), w) for v, w in zip(model.weights, before))
    assert all(pruning_mask(v) is None for v in model.weights)


# ---------------------------------------------------------------- export


def _sparse_tensors(path):
    """(shape, TFLite type, dense size of the block dimension or None) of each sparse tensor; DENSIFY ops."""
    schema = _compat.schema()
    fb = _compat.read_model(open(path, "rb").read())
    found = []
    for graph in fb.subgraphs:
        for t in graph.tensors:
            if t.sparsity is not None:
                s = t.sparsity
                block = int(s.dimMetadata[-1].denseSize) if s.blockMap is not None and len(s.blockMap) else None
                found.append((tuple(int(d) for d in t.shape), int(t.type), block))
    ops = [fb.operatorCodes[op.opcodeIndex] for g in fb.subgraphs for op in g.operators]
    densify = sum(max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.DENSIFY for c in ops)
    return found, densify


def test_export_keeps_1x4_blocks_float_and_1x16_blocks_int8_sparse(tmp_path):
    schema = _compat.schema()
    x = np.random.default_rng(0).standard_normal((64, 64)).astype("float32")
    model = mlp(widths=(32, 16), inputs=64)
    prune(model, 0.9, block_size=(1, 4))
    strip_pruning(model)
    report = export_tflite(model, tmp_path / "b4.tflite", mode="sparse_float32", sample_inputs=x[:8])
    found, densify = _sparse_tensors(report.path)
    # both FULLY_CONNECTED weights (out, in) stored in 1x4 blocks, read sparse at run time: no DENSIFY op
    assert found == [((32, 64), schema.TensorType.FLOAT32, 4), ((16, 32), schema.TensorType.FLOAT32, 4)]
    assert densify == 0 and (report.sparse_tensors, report.densify_ops) == (2, 0)
    assert report.max_abs_diff <= 1e-5

    unstructured = mlp(widths=(32, 16), inputs=64)
    prune(unstructured, 0.9)
    strip_pruning(unstructured)
    plain = export_tflite(unstructured, tmp_path / "u.tflite", mode="sparse_float32", sample_inputs=x[:8])
    assert plain.sparse_tensors == plain.densify_ops > 0  # the contrast: unstructured zeros are densified at load

    model = mlp(widths=(32, 16), inputs=64)
    prune(model, 0.9, block_size=(1, 16))
    strip_pruning(model)
    report = export_tflite(model, tmp_path / "b16.tflite", mode="sparse_int8", representative_data=x)
    found, densify = _sparse_tensors(report.path)
    assert found == [((32, 64), schema.TensorType.INT8, 16), ((16, 32), schema.TensorType.INT8, 16)]
    assert densify == 0 and report.max_abs_diff <= report.atol

    with pytest.raises(ExportVerificationError, match="1x16 blocks"):  # unstructured sparse int8: XNNPack fails
        export_tflite(unstructured, tmp_path / "u8.tflite", mode="sparse_int8", representative_data=x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b16.tflite", "b4.tflite", "u.tflite"]
