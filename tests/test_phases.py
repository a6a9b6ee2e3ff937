"""TracePerPhase: per-phase traces of the train step give bit-identical training."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import INNER

import tf_selopt
from tf_selopt.core.config import SelectionConfig
from tf_selopt.core.plan import SelectionPlan

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def data(n=240, nan_batch=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    if nan_batch is not None:
        x[nan_batch * 8] = np.nan  # that batch's loss and gradients are NaN: a skipped step
    return x, y


def train(callbacks, inner, steps_per_execution, reselect_every, nan_batch):
    model = make_model()
    optimizer = tf_selopt.SelectiveOptimizer(
        INNER[inner](), keep=0.25, warmup_steps=6, window=3, reselect_every=reselect_every, seed=0
    )
    model.compile(optimizer=optimizer, loss=LOSS, steps_per_execution=steps_per_execution)
    x, y = data(nan_batch=nan_batch)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)
    return model, optimizer


# Three two-valued factors, every pair of values once (a pairwise design: 4 runs, not 8): Adam and AdamW (restore-free
# and restore paths), 1 and 3 steps per execution, no reselection and reselection every 7 steps.
@pytest.mark.parametrize(
    "inner, steps_per_execution, reselect_every",
    [("adam", 1, None), ("adam", 3, 7), ("adamw", 1, 7), ("adamw", 3, None)],
)
def test_bit_identical_to_the_general_step(inner, steps_per_execution, reselect_every):
    runs = []
    for callbacks in ([], [tf_selopt.TracePerPhase()]):
        runs.append((*train(callbacks, inner, steps_per_execution, reselect_every, nan_batch=12), callbacks))
    (model_a, opt_a, _), (model_b, opt_b, (phases,)) = runs
    assert int(opt_a.skipped_steps) == int(opt_b.skipped_steps) == 1
    assert int(opt_a.iterations) == int(opt_b.iterations) == 29  # 30 batches, one skipped
    assert int(opt_a.selections) == int(opt_b.selections) == (1 if reselect_every is None else 4)
    # selected-only Adam/AdamW without reselection: the selection step releases the warm-up state, traced per
    # phase or not
    released = reselect_every is None
    assert opt_a.warmup_state_released == opt_b.warmup_state_released == released
    assert phases.released_bytes == (opt_a.released_bytes if released else 0)
    assert len(opt_a.variables) == len(opt_b.variables)
    for a, b in zip(model_a.trainable_variables + opt_a.variables, model_b.trainable_variables + opt_b.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=getattr(a, "path", ""))
    assert phases.phase is None and opt_b.phase is None  # the general step is back after fit
    assert phases.switches >= (4 if steps_per_execution == 1 else 2)  # at least into and out of "restricted"
    # warm-up (1 step with 3 per call), restricted; the general step traced first is reused at the end
    assert phases.rebuilds == (2 if steps_per_execution == 1 else 1)


def test_phases_switch_where_expected():
    plan = SelectionPlan(warmup_steps=6, window=3, reselect_every=7)
    # windows: 4..6 (selection 6), 11..13 (13), 18..20 (20)
    expected = {
        (0, 0): "warmup",
        (0, 3): "warmup",
        (3, 3): "warmup",
        (3, 4): None,
        (4, 4): None,
        (6, 6): None,
        (5, 7): None,
        (7, 7): "restricted",
        (7, 10): "restricted",
        (10, 11): None,
        (14, 17): "restricted",
        (17, 18): None,
    }
    for (first, last), phase in expected.items():
        assert plan.ordinary_phase(first, last) == phase, (first, last)
    magnitude = SelectionConfig(criterion="magnitude", keep=0.5, warmup_steps=6, seed=0).plan  # no window: step 6
    assert [magnitude.ordinary_phase(s, s) for s in (5, 6, 7, 100)] == ["warmup", None, "restricted", "restricted"]


def test_a_step_traced_for_one_phase_refuses_to_run_in_another():
    model = make_model()
    optimizer = tf_selopt.SelectiveOptimizer(INNER["adam"](), keep=0.25, warmup_steps=6, window=3, seed=0)
    model.compile(optimizer=optimizer, loss=LOSS)
    x, y = data(n=16)
    model.train_on_batch(x[:8], y[:8])  # builds; step 0 done
    before = [v.numpy().copy() for v in model.trainable_variables + optimizer.variables]
    optimizer.phase = "restricted"  # wrong: step 1 is a warm-up step
    tf_selopt.keras.pruning.retrace_train_step(model)
    with pytest.raises(tf.errors.InvalidArgumentError, match="is not an ordinary step of phase"):
        model.train_on_batch(x[8:], y[8:])
    for b, a in zip(before, model.trainable_variables + optimizer.variables):
        np.testing.assert_array_equal(b, np.asarray(a))


def test_needs_a_selective_optimizer():
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(), loss=LOSS)
    x, y = data(n=16)
    with pytest.raises(ValueError, match="TracePerPhase needs a model compiled with tf_selopt.SelectiveOptimizer"):
        model.fit(x, y, batch_size=8, callbacks=[tf_selopt.TracePerPhase()], verbose=0)
