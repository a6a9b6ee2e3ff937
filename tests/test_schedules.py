"""Tests of tf_selopt.core.schedules: same values as tfmot's schedules, XLA, config, validation."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import docstring_examples
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule as tfmot_schedule

import tf_selopt.keras.pruning  # noqa: F401  (registers the schedules with Keras)
from tf_selopt.core import schedules
from tf_selopt.core.schedules import ConstantSparsity, PolynomialDecay

# (class name, kwargs): the same kwargs build ours and tfmot's.
CASES = [
    ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=0)),
    ("ConstantSparsity", dict(target_sparsity=0.8, begin_step=7, end_step=130, frequency=10)),
    ("ConstantSparsity", dict(target_sparsity=0.0, begin_step=3, end_step=3, frequency=1)),
    ("ConstantSparsity", dict(target_sparsity=0.3, begin_step=20, end_step=-1, frequency=7)),
    ("PolynomialDecay", dict(initial_sparsity=0.0, final_sparsity=0.9, begin_step=0, end_step=200)),
    ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.75, begin_step=13, end_step=171, frequency=9)),
    ("PolynomialDecay", dict(initial_sparsity=0.5, final_sparsity=0.2, begin_step=5, end_step=6, power=1, frequency=1)),
    ("PolynomialDecay", dict(initial_sparsity=0.2, final_sparsity=0.95, begin_step=40, end_step=310, power=2.5)),
]
STEPS = list(range(-3, 420)) + [1000, 10**6 + 3, 2**40]


def build(name, kwargs):
    return getattr(schedules, name)(**kwargs), getattr(tfmot_schedule, name)(**kwargs)


@pytest.mark.parametrize("name,kwargs", CASES)
def test_matches_tfmot_step_by_step(name, kwargs):
    ours, theirs = build(name, kwargs)
    ref = [theirs(tf.constant(s, tf.int64)) for s in STEPS]
    ref_prune = np.array([bool(p) for p, _ in ref])
    ref_sparsity = np.array([float(x) for _, x in ref], np.float32)
    got = [ours(tf.constant(s, tf.int64)) for s in STEPS]
    got_prune = np.array([bool(p) for p, _ in got])
    got_sparsity = np.array([float(x) for _, x in got], np.float32)
    np.testing.assert_array_equal(got_prune, ref_prune)
    np.testing.assert_array_equal(got_sparsity.view(np.uint32), ref_sparsity.view(np.uint32))
    assert got_prune.sum() > 0  # the case does prune somewhere


def test_pruning_steps_by_hand():
    s = ConstantSparsity(0.5, begin_step=10, end_step=40, frequency=15)
    assert [t for t in range(60) if bool(s(t)[0])] == [10, 25, 40]
    s = ConstantSparsity(0.5, begin_step=10, frequency=15)  # no end
    assert [t for t in range(0, 100) if bool(s(t)[0])] == [10, 25, 40, 55, 70, 85]
    p = PolynomialDecay(0.2, 0.6, begin_step=0, end_step=4, power=1, frequency=2)
    assert [round(float(p(t)[1]), 6) for t in range(6)] == [0.2, 0.3, 0.4, 0.5, 0.6, 0.6]
    assert [bool(p(t)[0]) for t in range(7)] == [True, False, True, False, True, False, False]


@pytest.mark.parametrize("name,kwargs", CASES)
def test_outputs_are_scalar_tensors_and_python_int_steps_work(name, kwargs):
    ours, _ = build(name, kwargs)
    for step in (0, 17, tf.constant(17, tf.int32), tf.Variable(17, dtype=tf.int64)):
        should_prune, sparsity = ours(step)
        assert should_prune.dtype == tf.bool and should_prune.shape == ()
        assert sparsity.dtype == tf.float32 and sparsity.shape == ()
    a, b = ours(17), ours(tf.constant(17, tf.int32))
    assert bool(a[0]) == bool(b[0]) and float(a[1]) == float(b[1])


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("name,kwargs", CASES)
def test_tf_function_and_xla_match_eager(name, kwargs, jit_compile):
    ours, _ = build(name, kwargs)
    fn = tf.function(lambda step: ours(step), jit_compile=jit_compile)
    for s in range(-3, 330, 7):
        step = tf.constant(s, tf.int64)
        (p_graph, x_graph), (p_eager, x_eager) = fn(step), ours(step)
        assert bool(p_graph) == bool(p_eager), s
        # Graph rewriting / XLA fusion may evaluate pow differently: a few float32 ULPs.
        np.testing.assert_allclose(float(x_graph), float(x_eager), rtol=1e-6, atol=1e-7)


def test_works_with_an_optimizer_iteration_counter_under_xla():
    s = PolynomialDecay(0.0, 0.5, begin_step=2, end_step=6, frequency=2)
    step = tf.Variable(0, dtype=tf.int64)
    seen = tf.Variable(tf.zeros([8]))

    @tf.function(jit_compile=True)
    def train_step():
        should_prune, sparsity = s(step)
        seen.scatter_nd_update([[step]], [tf.where(should_prune, sparsity, -1.0)])
        step.assign_add(1)

    for _ in range(8):
        train_step()
    expected = [-1, -1, 0.0, -1, 0.4375, -1, 0.5, -1]
    np.testing.assert_allclose(seen.numpy(), expected, atol=1e-7)


@pytest.mark.parametrize("name,kwargs", CASES)
def test_config_round_trip(name, kwargs):
    ours, _ = build(name, kwargs)
    config = ours.get_config()
    full = dict(kwargs)
    defaults = {"end_step": -1, "frequency": 100, "power": 3}
    for key, value in defaults.items():
        if key in config:
            full.setdefault(key, value)
    assert config == full  # plain constructor arguments, nothing left out, nothing extra
    assert json.loads(json.dumps(config)) == config
    again = type(ours).from_config(config)
    assert again == ours and again.get_config() == config
    for s in (0, 50, 171, 400):
        assert bool(again(s)[0]) == bool(ours(s)[0]) and float(again(s)[1]) == float(ours(s)[1])
    # Keras serialization through the registered name.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(restored) is type(ours) and restored.get_config() == config


def test_repr_is_constructor_call():
    s = PolynomialDecay(0.1, 0.5, 0, 10, power=2, frequency=3)
    assert eval(repr(s), {"PolynomialDecay": PolynomialDecay}) == s


BAD = [
    (lambda: ConstantSparsity(1.0, 0), "target_sparsity"),
    (lambda: ConstantSparsity(-0.1, 0), "target_sparsity"),
    (lambda: ConstantSparsity(float("nan"), 0), "target_sparsity"),
    (lambda: ConstantSparsity(True, 0), "target_sparsity"),
    (lambda: ConstantSparsity("0.5", 0), "target_sparsity"),
    (lambda: ConstantSparsity(0.5, -1), "begin_step"),
    (lambda: ConstantSparsity(0.5, 1.0), "begin_step"),
    (lambda: ConstantSparsity(0.5, True), "begin_step"),
    (lambda: ConstantSparsity(0.5, 10, end_step=9), "end_step"),
    (lambda: ConstantSparsity(0.5, 0, end_step=-2), "end_step"),
    (lambda: ConstantSparsity(0.5, 0, end_step=5.0), "end_step"),
    (lambda: ConstantSparsity(0.5, 0, frequency=0), "frequency"),
    (lambda: ConstantSparsity(0.5, 0, frequency=2.0), "frequency"),
    (lambda: PolynomialDecay(1.0, 0.5, 0, 10), "initial_sparsity"),
    (lambda: PolynomialDecay(0.1, 1.5, 0, 10), "final_sparsity"),
    (lambda: PolynomialDecay(0.1, -0.5, 0, 10), "final_sparsity"),
    (lambda: PolynomialDecay(0.1, 0.5, -3, 10), "begin_step"),
    (lambda: PolynomialDecay(0.1, 0.5, 0, -1), "end_step"),  # no "no end" for a decay
    (lambda: PolynomialDecay(0.1, 0.5, 10, 10), "end_step"),  # tfmot divides by zero here
    (lambda: PolynomialDecay(0.1, 0.5, 10, 5), "end_step"),
    (lambda: PolynomialDecay(0.1, 0.5, 0, 10, power=0), "power"),
    (lambda: PolynomialDecay(0.1, 0.5, 0, 10, power=float("inf")), "power"),
    (lambda: PolynomialDecay(0.1, 0.5, 0, 10, frequency=-1), "frequency"),
    (lambda: ConstantSparsity(0.5, 0)(tf.constant(1.0)), "step"),
    (lambda: ConstantSparsity(0.5, 0)(2.5), "step"),
    (lambda: PolynomialDecay(0.1, 0.5, 0, 10)(True), "step"),
]


@pytest.mark.parametrize("make,argument", BAD)
def test_bad_inputs_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make()


def test_docstring_examples_run(request):
    attempted, failed = docstring_examples(schedules, request)  # or the doctest items of `make test`
    assert attempted > 0 and failed == 0
