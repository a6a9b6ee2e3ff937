"""A long run: 3,000 batches on a tiny model, 7 selections, pruning raised mid-run, one NaN batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_selopt
from tf_selopt.keras.pruning import prune, pruning_mask

BATCHES, BATCH = 3000, 16
WARMUP, WINDOW, RESELECT = 200, 50, 400  # selections at steps 200, 600, ..., 2600
NAN_BATCH, PRUNE_MORE_AT = 1234, 1500


@pytest.mark.slow
def test_long_run_exact_counts_frozen_entries_and_pruned_zeros():
    keras.backend.clear_session(free_memory=False)  # names reset; no gc.collect() (1-3 s in a grown worker)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    prune(model, 0.3)  # before tracing: the masks are read at trace time, their values later
    optimizer = tf_selopt.SelectiveOptimizer(
        keras.optimizers.AdamW(1e-2, weight_decay=0.1),
        keep=0.1,
        warmup_steps=WARMUP,
        window=WINDOW,
        reselect_every=RESELECT,
        seed=0,
    )
    variables = model.trainable_variables
    optimizer.build(variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCHES, BATCH, 6)).astype("float32")
    y = rng.integers(0, 3, size=(BATCHES, BATCH)).astype("int32")
    x[NAN_BATCH, 5, 2] = np.nan

    frozen_since = None  # (weights, trains) right after the latest selection
    selected_counts, checked_intervals = [], 0
    for b in range(BATCHES):
        if b == PRUNE_MORE_AT:
            prune(model, 0.6)  # monotone: the 0.3 masks stay, more entries go to zero
        selections = int(optimizer.selections)
        before = [v.numpy() for v in variables]
        step(x[b], y[b])
        if int(optimizer.selections) != selections:  # step b was a selection step
            if frozen_since is not None:  # frozen (and still kept) entries did not move since the last one
                for (w0, trains), w1, v in zip(frozen_since, before, variables):
                    kept = pruning_mask(v)
                    still = ~trains if kept is None else ~trains & kept.numpy()
                    np.testing.assert_array_equal(w1[still], w0[still])
                checked_intervals += 1
            selected_counts.append(int(optimizer.selected_count))
            frozen_since = [(v.numpy(), optimizer.trains(i).numpy()) for i, v in enumerate(variables)]
    for v in variables:
        kept = pruning_mask(v)
        if kept is not None:
            assert np.all(v.numpy()[~kept.numpy()] == 0.0)
    pruned = sum(int((~pruning_mask(v).numpy()).sum()) for v in variables if pruning_mask(v) is not None)
    assert pruned == 86  # floor(0.6 * 144 + 0.5) kernel weights
    assert int(optimizer.skipped_steps) == 1
    assert int(optimizer.iterations) == BATCHES - 1
    assert int(optimizer.selections) == 7 and checked_intervals == 6
    assert selected_counts == [optimizer.k] * 7  # 0.1 * 163 -> 16, all from unpruned entries
    assert optimizer.k == 16
