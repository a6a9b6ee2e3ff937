"""tf_selopt.keras.traces: one traced train step per state, reused across reselection cycles, bit-identical results."""

import keras
import numpy as np
import pytest

import tf_selopt
from tf_selopt.keras.traces import state_key, switching_state

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class TraceCounting(tf_selopt.SelectiveOptimizer):
    """Counts the traces of its ``apply`` (Python runs only while the train step is traced)."""

    traces = 0

    def apply(self, grads, trainable_variables=None):
        self.traces += 1
        super().apply(grads, trainable_variables)


def make_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def data(n):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, size=n).astype("int32")


def train(callbacks, batches):
    model = make_model()
    # keep=40% of 163: every selection freezes the first kernel (96) and the last bias (3), the same set
    optimizer = TraceCounting(
        keras.optimizers.Adam(1e-2), keep=0.4, warmup_steps=4, window=2, reselect_every=6, granularity="variable"
    )
    model.compile(optimizer=optimizer, loss=LOSS)
    x, y = data(8 * batches)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)
    return model, optimizer


@pytest.mark.parametrize("batches", [20, 44])  # 3 and 7 selections
def test_both_callbacks_trace_each_state_once_and_train_bit_identically(batches):
    model_a, opt_a = train([], batches)
    drop, phases = tf_selopt.DropFrozenVariables(), tf_selopt.TracePerPhase()
    model_b, opt_b = train([drop, phases], batches)
    assert int(opt_a.selections) == int(opt_b.selections) == (3 if batches == 20 else 7)
    assert drop.dropped_count == 2
    # weights, masks and scores bit-identical (the inner state of dropped variables is not: it does not decay)
    state_a = model_a.trainable_variables + opt_a.masks + opt_a.scores
    for a, b in zip(state_a, model_b.trainable_variables + opt_b.masks + opt_b.scores):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=getattr(a, "path", ""))
    # switches grow with the cycles; built and traced steps do not. Traced: the general step, warm-up, and
    # masked with the kernel dropped.
    # Built: also two states between the callbacks' switches on one batch, never called, so never traced.
    assert drop.switches + phases.switches >= 2 * int(opt_b.selections)
    assert drop.rebuilds + phases.rebuilds == 4
    assert opt_b.traces == opt_a.traces + 2
    assert len(model_b.trainable_variables) == len(model_a.trainable_variables)  # all back after fit


def test_a_kept_step_is_reused_and_a_recompile_starts_afresh():
    model, optimizer = train([], 2)
    general = model.train_function
    with switching_state(model) as switch:
        optimizer.phase = "restricted"
    assert switch.built and not switch.reused and model.train_function is not general
    restricted = model.train_function
    with switching_state(model) as switch:
        optimizer.phase = None
    assert switch.reused and model.train_function is general
    with switching_state(model) as switch:
        optimizer.phase = "restricted"
    assert switch.reused and model.train_function is restricted

    optimizer.phase = None
    model.compile(optimizer=optimizer, loss=LOSS)  # drops the traced step
    with switching_state(model) as switch:
        optimizer.phase = "restricted"
    assert not (switch.built or switch.reused) and model.train_function is None  # fit will trace this state
    optimizer.phase = None
    model.fit(*data(8), batch_size=8, verbose=0)
    with switching_state(model) as switch:
        optimizer.phase = "restricted"
    assert switch.built and model.train_function is not restricted  # nothing kept from before the compile
    optimizer.phase = None


def test_state_key_follows_trainable_flags_and_phase():
    model, optimizer = train([], 2)
    key = state_key(model)
    model.layers[0].kernel.trainable = False
    assert state_key(model) != key
    model.layers[0].kernel.trainable = True
    assert state_key(model) == key
    optimizer.phase = "warmup"
    assert state_key(model) == (key[0], "warmup", None)
    optimizer.phase = None


def test_with_gradual_pruning_and_both_callbacks_training_is_bit_identical():
    """GradualPruning installs its masks (and rebuilds the step) at the start of fit and prunes eagerly between
    steps; the kept steps must not outlive that rebuild, and pruned weights stay exactly zero. Both arms drop
    frozen variables: with pruning the dropped set changes between selections, and a variable that comes back
    has inner state that did not decay while dropped (documented), so plain fit is not the reference here."""
    runs = []
    for extra in ([], [tf_selopt.TracePerPhase()]):
        pruning = tf_selopt.GradualPruning(tf_selopt.core.schedules.ConstantSparsity(0.3, begin_step=3, frequency=5))
        drop = tf_selopt.DropFrozenVariables()
        runs.append((*train([pruning, drop, *extra], 44), pruning, drop))
    (model_a, opt_a, pruning_a, drop_a), (model_b, opt_b, pruning_b, drop_b) = runs
    assert int(opt_a.selections) == int(opt_b.selections) == 7
    assert drop_a.switches == drop_b.switches and drop_b.rebuilds < drop_b.switches
    assert pruning_a.pruned_count == pruning_b.pruned_count > 0
    for mask_a, mask_b in zip(pruning_a.masks.values(), pruning_b.masks.values(), strict=True):
        np.testing.assert_array_equal(mask_a.numpy(), mask_b.numpy())
    state_a = model_a.trainable_variables + opt_a.masks + opt_a.scores
    for a, b in zip(state_a, model_b.trainable_variables + opt_b.masks + opt_b.scores):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=getattr(a, "path", ""))
    for v in model_b.trainable_variables:
        if v.path in pruning_b.masks:
            assert np.all(np.asarray(v)[~pruning_b.masks[v.path].numpy()] == 0.0)
