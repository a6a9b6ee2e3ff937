"""Mixed precision (``mixed_float16``) with loss scaling.

Supported nesting: ``keras.optimizers.LossScaleOptimizer(SelectiveOptimizer(inner))``, which is
what ``model.compile`` builds by itself under ``mixed_float16``. On an overflow step the loss-scale
optimizer halves its scale and does not call the wrapped optimizer at all, so the step leaves
every ``SelectiveOptimizer`` variable (``iterations``, window, criterion state, scores, masks,
inner state, ``skipped_steps``) and every weight bit-identical: overflow steps are counted by the
loss-scale optimizer, not in ``skipped_steps``, and are not steps of the schedule.

The other nesting, ``SelectiveOptimizer(LossScaleOptimizer(inner))``, is silently wrong (``compile``
wraps it in a second loss-scale optimizer; the inner one divides the already unscaled gradients
by its own growing scale): it must be refused.
"""

import keras
import numpy as np
import pytest

import tf_selopt
from tf_selopt.keras.pruning import prune, pruning_mask

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(autouse=True)
def mixed_float16():
    keras.backend.clear_session(free_memory=False)  # names reset; no gc.collect() (1-3 s in a grown worker)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    yield
    keras.mixed_precision.set_dtype_policy(previous)


def make_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, dtype="float32"),  # float32 logits, as the Keras guide advises
        ]
    )


def make_data(n=128):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def selective(**kwargs):
    defaults = dict(keep=0.2, warmup_steps=8, window=4, reselect_every=6, seed=0)
    return tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), **(defaults | kwargs))


class Steps(keras.callbacks.Callback):
    """Per batch: the scale, the SelectiveOptimizer's variables and the weights before and after."""

    def __init__(self, selective):
        super().__init__()
        self.selective, self.rows = selective, []

    def _snapshot(self):
        return (
            float(self.model.optimizer.dynamic_scale.numpy()),
            int(self.selective.iterations.numpy()),
            [v.numpy().copy() for v in self.selective.variables],
            [v.numpy().copy() for v in self.model.trainable_variables],
            [m.numpy().copy() for m in self.selective.masks],
        )

    def on_train_batch_begin(self, batch, logs=None):
        self._before = self._snapshot() if self.selective.built else None

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append((self._before, self._snapshot()))


def test_compile_wraps_the_selective_optimizer_in_loss_scaling():
    x, y = make_data()
    model = make_model()
    optimizer = selective()
    model.compile(optimizer=optimizer, loss=LOSS)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.optimizer.inner_optimizer is optimizer
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert model.layers[0].compute_dtype == "float16" and model.layers[0].kernel.dtype == "float32"
    assert int(optimizer.iterations) == 16 and int(optimizer.selections) == 2  # steps 8 and 14
    assert int(optimizer.selected_count) == optimizer.k == 33  # floor(0.2 * 163 + 0.5)
    assert optimizer.masks[0].dtype == "bool" and optimizer.scores[0].dtype == "float32"


def test_overflow_steps_change_nothing_frozen_and_pruned_stay():
    x, y = make_data()
    model = make_model()
    masks = prune(model, 0.3)  # 144 kernel weights: floor(0.3 * 144 + 0.5) = 43 pruned
    optimizer = selective()
    # Scale growth every 2 finite steps: the scale keeps overshooting, so overflows recur all run long.
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**19, dynamic_growth_steps=2),
        loss=LOSS,
    )
    steps = Steps(optimizer)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[steps])
    overflow = {"warmup": 0, "window": 0, "masked": 0}
    for before, after in steps.rows[1:]:  # the first batch builds the optimizer
        scale, iterations, state, weights, selected = before
        if after[0] < scale:  # the loss-scale optimizer skipped this step
            phase = "masked" if iterations >= 8 else ("window" if iterations >= 5 else "warmup")
            overflow[phase] += 1
            for a, b in zip(state + weights, after[2] + after[3]):
                np.testing.assert_array_equal(a, b)
        else:
            assert after[1] == iterations + 1
            if iterations > 8 and (iterations - 8) % 6:  # a masked step, not a selection: frozen do not move
                for m, w0, w1 in zip(selected, weights, after[3]):
                    np.testing.assert_array_equal(w1[~m], w0[~m])
        for v, w in zip(model.trainable_variables, after[3]):
            kept = pruning_mask(v)
            if kept is not None:
                assert np.all(w[~kept.numpy()] == 0.0)
    assert overflow["window"] > 0 and overflow["masked"] > 0, overflow
    total = sum(overflow.values())
    assert len(steps.rows) == 32 and int(optimizer.iterations) == 31 - total
    assert int(optimizer.skipped_steps) == 0  # overflows are the loss-scale optimizer's to count
    assert int(optimizer.selected_count) == optimizer.k
    assert int(optimizer.pruned_count) == sum(int((~m).sum()) for m in masks.values()) == 43


def test_loss_scale_optimizer_inside_is_refused():
    with pytest.raises(ValueError, match="LossScaleOptimizer"):
        tf_selopt.SelectiveOptimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()))


def test_trace_per_phase_under_loss_scaling_is_bit_identical():
    """Overflow steps do not advance ``iterations``: TracePerPhase reads it before every batch."""
    runs = []
    for callbacks in ([], [tf_selopt.TracePerPhase()]):
        x, y = make_data()
        model = make_model()
        optimizer = selective()
        model.compile(
            optimizer=keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**19, dynamic_growth_steps=2),
            loss=LOSS,
        )
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
        runs.append((model, optimizer, callbacks))
    (model_a, opt_a, _), (model_b, opt_b, (phases,)) = runs
    assert int(opt_a.iterations) == int(opt_b.iterations) < 32  # some overflow steps
    assert int(opt_a.selections) == int(opt_b.selections) >= 3
    assert phases.switches >= 4 and phases.rebuilds == 2
    assert float(model_a.optimizer.dynamic_scale) == float(model_b.optimizer.dynamic_scale)
    for a, b in zip(model_a.trainable_variables + opt_a.variables, model_b.trainable_variables + opt_b.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=getattr(a, "path", ""))
