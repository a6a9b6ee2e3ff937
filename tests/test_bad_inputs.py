"""Bad inputs not covered by the module tests: one parametrized case per row of docs/bad_inputs.md
marked ``test_bad_inputs``. Every call must raise the listed exception with the argument's name (and,
where there is one, the allowed range) in the message, before any state changes."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from conftest import make_model

import tf_selopt
from tf_selopt.core import criteria, selection
from tf_selopt.core.schedules import ConstantSparsity
from tf_selopt.core.selective import BASE_ARGUMENTS
from tf_selopt.deploy import export
from tf_selopt.keras.pruning import GradualPruning, mask_zeros, pruning_mask
from tf_selopt.keras2 import SelectiveOptimizer as TfKerasSelectiveOptimizer

DEFAULTS = dict(keep=0.2, warmup_steps=4, window=3, seed=0)

# (kwargs, words the message must contain)
SELECTIVE_BAD = [
    (dict(keep=float("nan")), ["`keep`", "(0, 1]"]),
    (dict(keep=float("inf")), ["`keep`", "(0, 1]"]),
    (dict(keep="0.1"), ["`keep`", "(0, 1]"]),
    (dict(keep=None), ["`keep`", "(0, 1]"]),
    (dict(warmup_steps=True), ["`warmup_steps`", ">= 0"]),
    (dict(warmup_steps=None), ["`warmup_steps`", ">= 0"]),
    (dict(window=2.0), ["`window`", "[1, warmup_steps=4]"]),
    (dict(window=None), ["`window`", "[1, warmup_steps=4]"]),
    (dict(reselect_every=2.5), ["`reselect_every`", ">= 3"]),
    (dict(reselect_every=-1), ["`reselect_every`", ">= 3"]),
    (dict(scope=None), ["`scope`", "'global', 'per_variable'"]),
    (dict(seed=2**31), ["`seed`", "[0, 2**31)"]),
    (dict(seed=1.5), ["`seed`", "[0, 2**31)"]),
    (dict(criterion=None), ["`criterion`", "gradient_sum"]),
    (dict(criterion=criteria.GradientSum), ["`criterion`", "instance"]),
    (dict(criterion=3), ["`criterion`", "gradient_sum"]),
    (dict(criterion="preconditioned", num_examples=0), ["`num_examples`", ">= 1"]),
    (dict(criterion="preconditioned", num_examples=2.5), ["`num_examples`", ">= 1"]),
    (dict(momentum=0.9), ["unknown arguments", "momentum"]),
] + [(dict([(arg, 0.5)]), [f"`{arg}`", "inner optimizer"]) for arg in BASE_ARGUMENTS if arg != "weight_decay"]


@pytest.mark.parametrize("front_end", ["keras3", "tf_keras"])
@pytest.mark.parametrize("kwargs, words", SELECTIVE_BAD)
def test_selective_optimizer(front_end, kwargs, words):
    if front_end == "keras3":
        inner, cls = keras.optimizers.Adam(), tf_selopt.SelectiveOptimizer
    else:
        inner, cls = tf_keras.optimizers.Adam(), TfKerasSelectiveOptimizer
    with pytest.raises(ValueError) as info:
        cls(inner, **(DEFAULTS | kwargs))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("keep", [10**6])
def test_selective_optimizer_keep_at_build(keep):
    """A keep only refused at build (a count above N) builds nothing, changes no weight."""
    model = make_model("sequential")
    before = [v.numpy().copy() for v in model.weights]
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(), **(DEFAULTS | dict(keep=keep)))
    with pytest.raises(ValueError, match=r"`keep`.*(\[1, 99\]|\(0, 1\])"):
        optimizer.build(model.trainable_variables)
    assert not optimizer.built and optimizer.model_variables is None
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


# ------------------------------------------------------------------- pruning
@pytest.mark.parametrize(
    "layers, words",
    [
        (["nope"], ["`layers`", "'nope' is not a layer of the model"]),
        ("dense", ["`layers`", "non-empty list of layer names"]),
        ([], ["`layers`", "non-empty list of layer names"]),
    ],
)
def test_mask_zeros_layers(layers, words):
    model = make_model("sequential")
    with pytest.raises(ValueError) as info:
        mask_zeros(model, layers=layers)
    assert all(word in str(info.value) for word in words)
    assert all(pruning_mask(v) is None for v in model.weights)


def test_mask_zeros_unbuilt_model():
    with pytest.raises(ValueError, match="no prunable weights.*built"):
        mask_zeros(keras.Sequential([keras.layers.Dense(3)]))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(layers=[]), ["`layers`", "non-empty list"]),
        (dict(seed=2**31), ["`seed`", "[0, 2**31)"]),
        (dict(criterion=criteria.GradientSum()), ["criterion", "uses_gradients"]),
        (dict(schedule=None), ["`schedule`", "PruningSchedule"]),
    ],
)
def test_gradual_pruning(kwargs, words):
    with pytest.raises(ValueError) as info:
        GradualPruning(**({"schedule": ConstantSparsity(0.5, 0)} | kwargs))
    assert all(word in str(info.value) for word in words)


# ----------------------------------------------------------------- selection
@pytest.mark.parametrize("scope", ["global", "per_variable"])
@pytest.mark.parametrize("k", [6, -1])
def test_select_k_out_of_range(scope, k):
    scores = [tf.ones((2, 2)), tf.ones(1)]
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        selection.select(scores, k, scope)


@pytest.mark.parametrize(
    "scores, k, kept, word",
    [
        ([], 1, None, "non-empty"),
        ([np.ones(3, "float32")], 2.0, None, "`k`"),
        ([np.ones(3, "float32")], True, None, "`k`"),
        ([np.ones(3, "float32"), np.ones(2, "float32")], 1, [None], "`kept`"),
    ],
)
def test_select_bad_arguments(scores, k, kept, word):
    with pytest.raises(ValueError, match=word):
        selection.select(scores, k, kept=kept)


def test_select_takes_numpy_arrays_and_k_zero():
    scores = [np.array([3.0, 1.0, 2.0], "float32"), np.array([[0.5, 4.0]], "float32")]
    masks = selection.select(scores, 2)
    assert [m.numpy().tolist() for m in masks] == [[True, False, False], [[False, True]]]
    assert sum(int(np.sum(m)) for m in selection.select(scores, 0)) == 0


# -------------------------------------------------------------------- export
def _mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(base_dir=None), "base_dir"),
        (dict(base_dir=3), "base_dir"),
        (dict(atol=-1.0), "atol"),
        (dict(atol="0"), "atol"),
        (dict(model="model"), "model"),
    ],
)
def test_export_saved_model(tmp_path, kwargs, word):
    args = dict(model=_mlp(), base_dir=tmp_path / "base", model_name="m", version=1) | kwargs
    with pytest.raises(ValueError, match=word):
        export.export_saved_model(**args)
    assert not (tmp_path / "base").exists()


@pytest.mark.parametrize(
    "kwargs, word", [(dict(path=""), "path"), (dict(path=None), "path"), (dict(atol=True), "atol")]
)
def test_export_tflite(tmp_path, kwargs, word):
    args = dict(model=_mlp(), path=tmp_path / "m.tflite") | kwargs
    with pytest.raises(ValueError, match=word):
        export.export_tflite(**args)
    assert list(tmp_path.iterdir()) == []
