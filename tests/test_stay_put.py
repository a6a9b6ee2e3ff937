"""Frozen entries without a restore: inner optimizers that leave an entry with a zero gradient and
zero momentum exactly in place (``tf_selopt.core.update_paths.MaskedZeroedMotion``); all others are restored."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from conftest import AdamWithOwnUpdateStep

import tf_selopt
from tf_selopt.keras import pruning
from tf_selopt.keras2 import SelectiveOptimizer as TfKerasSelectiveOptimizer


@keras.saving.register_keras_serializable(package="tf_selopt_tests")
class SubclassedAdam(keras.optimizers.Adam):
    """A user subclass that keeps Adam's ``update_step`` and ``build``: profiled as Adam, no restore."""


class TfKerasSubclassedAdam(tf_keras.optimizers.Adam):
    """The same in tf_keras: profiled as tf_keras' Adam (the profile rule is the core's)."""


STAYS_PUT = {
    "sgd": lambda: keras.optimizers.SGD(0.05),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adam_amsgrad": lambda: keras.optimizers.Adam(1e-2, amsgrad=True),
    "adamax": lambda: keras.optimizers.Adamax(1e-2),
    "nadam": lambda: keras.optimizers.Nadam(1e-2),
    "lion": lambda: keras.optimizers.Lion(1e-3),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-2),
    "rmsprop_momentum": lambda: keras.optimizers.RMSprop(1e-2, momentum=0.9),
    "adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "adadelta": lambda: keras.optimizers.Adadelta(1.0),
    "subclassed_adam": lambda: SubclassedAdam(1e-2),
}
RESTORED = {
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    "adam_weight_decay": lambda: keras.optimizers.Adam(1e-2, weight_decay=0.1),
    "adam_ema": lambda: keras.optimizers.Adam(1e-2, use_ema=True, ema_overwrite_frequency=3),
    "rmsprop_centered": lambda: keras.optimizers.RMSprop(1e-2, centered=True),
    "ftrl": lambda: keras.optimizers.Ftrl(0.1),
    "lamb": lambda: keras.optimizers.Lamb(1e-2),
    "adam_own_update_step": lambda: AdamWithOwnUpdateStep(1e-2),
}
TF_KERAS = {
    "sgd_momentum": (lambda: tf_keras.optimizers.SGD(0.05, momentum=0.9), False),
    "adam": (lambda: tf_keras.optimizers.Adam(1e-2), False),
    "subclassed_adam": (lambda: TfKerasSubclassedAdam(1e-2), False),
    "nadam": (lambda: tf_keras.optimizers.Nadam(1e-2), False),
    "lion": (lambda: tf_keras.optimizers.Lion(1e-3), False),
    "adamw": (lambda: tf_keras.optimizers.AdamW(1e-2, weight_decay=0.1), True),
    "rmsprop_centered": (lambda: tf_keras.optimizers.RMSprop(1e-2, centered=True), True),
}
SHAPES = [(3, 3, 1, 4), (4,), (5, 4), (4,)]
KWARGS = dict(keep=0.3, warmup_steps=3, window=2, reselect_every=4, seed=0)  # selections at steps 3, 7, 11


def gradients(steps, seed=0):
    rng = np.random.default_rng(seed)
    return [[tf.constant(rng.normal(size=s).astype("float32")) for s in SHAPES] for _ in range(steps)]


def initial_values(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in SHAPES]


def run_checking_frozen(optimizer, variables, steps=14):
    """Apply ``steps`` random gradients; at every step from the first selection on, the entries that
    do not train keep their value bit for bit and the others move. Returns the steps checked."""
    checked = 0
    for step, grads in enumerate(gradients(steps)):
        before = [v.numpy().copy() for v in variables]
        optimizer.apply_gradients(zip(grads, variables))
        if step < KWARGS["warmup_steps"]:
            continue
        trains = [optimizer.trains(i).numpy() for i in range(len(variables))]
        for b, v, t in zip(before, variables, trains):
            np.testing.assert_array_equal(v.numpy()[~t], b[~t])
        moved = sum(int(np.sum(v.numpy()[t] != b[t])) for b, v, t in zip(before, variables, trains))
        assert moved > 0.5 * sum(int(t.sum()) for t in trains), "selected entries should move"
        checked += 1
    assert int(optimizer.selections) == 3
    return checked


def keras_variables(values=None, constraint=None):
    return [keras.Variable(v, name=f"w{i}", constraint=constraint) for i, v in enumerate(values or initial_values())]


@pytest.mark.parametrize("inner", sorted(STAYS_PUT) + sorted(RESTORED))
def test_frozen_entries_never_move_with_or_without_the_restore(inner):
    optimizer = tf_selopt.SelectiveOptimizer((STAYS_PUT | RESTORED)[inner](), **KWARGS)
    variables = keras_variables()
    optimizer.build(variables)
    assert optimizer.restores_frozen == (inner in RESTORED)
    assert run_checking_frozen(optimizer, variables) == 11


@pytest.mark.parametrize("inner", ["adam", "sgd_momentum", "rmsprop_momentum", "lion"])
def test_momentum_of_entries_that_stop_training_is_zeroed_at_each_selection(inner):
    optimizer = tf_selopt.SelectiveOptimizer(STAYS_PUT[inner](), update="masked", **KWARGS)
    variables = keras_variables()
    for step, grads in enumerate(gradients(12)):
        optimizer.apply_gradients(zip(grads, variables))
        if step in (3, 7, 11):  # selection steps: the frozen entries' momentum is 0 after the update too
            for i, slots in enumerate(optimizer._selective.path.motion_slots):
                frozen = ~optimizer.trains(i).numpy()
                assert len(slots) == 1 and frozen.any()
                assert np.all(slots[0].numpy()[frozen] == 0.0)


def test_without_reselection_both_paths_give_the_same_weights_bit_for_bit():
    """Adam (no restore) and a subclass of it with its own ``update_step`` (restore): same masks and weights,
    trained and frozen."""
    runs = []
    for make in (STAYS_PUT["adam"], RESTORED["adam_own_update_step"]):
        optimizer = tf_selopt.SelectiveOptimizer(make(), keep=0.3, warmup_steps=3, window=2, seed=0)
        variables = keras_variables()
        for grads in gradients(10):
            optimizer.apply_gradients(zip(grads, variables))
        runs.append((optimizer, variables))
    (fast, va), (restored, vb) = runs
    assert not fast.restores_frozen and restored.restores_frozen
    for x, y in zip(va + fast.masks, vb + restored.masks):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_constraint_other_than_a_bare_pruning_mask_turns_the_restore_on():
    mask = [tf.constant(np.random.default_rng(0).uniform(size=s) > 0.3) for s in SHAPES]
    cases = {
        "none": (None, False),
        "bare pruning mask": ("pruning", False),
        "non-negative": (keras.constraints.NonNeg(), True),
        "pruning mask around max-norm": ("pruning+maxnorm", True),
    }
    for name, (constraint, restores) in cases.items():
        variables = keras_variables()
        for i, v in enumerate(variables):
            if constraint == "pruning":
                v.constraint = pruning.PruningMask(mask[i])
            elif constraint == "pruning+maxnorm":
                v.constraint = pruning.PruningMask(mask[i], keras.constraints.MaxNorm(1.0))
            else:
                v.constraint = constraint
        optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), **KWARGS)
        optimizer.build(variables)
        assert optimizer.restores_frozen == restores, name
        run_checking_frozen(optimizer, variables)


def test_turning_weight_decay_on_after_build_turns_the_restore_on_at_the_next_trace():
    inner = keras.optimizers.Adam(1e-2)
    optimizer = tf_selopt.SelectiveOptimizer(inner, **KWARGS)
    variables = keras_variables()
    optimizer.build(variables)
    assert not optimizer.restores_frozen
    inner.weight_decay = 0.5
    assert optimizer.restores_frozen
    run_checking_frozen(optimizer, variables)


@pytest.mark.parametrize("inner", sorted(TF_KERAS))
def test_tf_keras_front_end(inner):
    make, restores = TF_KERAS[inner]
    optimizer = TfKerasSelectiveOptimizer(make(), **KWARGS)
    variables = [tf.Variable(v, name=f"w{i}") for i, v in enumerate(initial_values())]
    optimizer.build(variables)
    assert optimizer.restores_frozen == restores
    assert run_checking_frozen(optimizer, variables) == 11


def test_an_inner_optimizer_that_accumulates_gradients_is_refused():
    inner = keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        tf_selopt.SelectiveOptimizer(inner, **KWARGS)
    assert not inner.built
