"""Files saved by an earlier release keep loading: `tests/fixtures/selective_0_1_0.keras` was written by
tf_selopt 0.1.0 (commit 45524d5, `tests/fixtures/make_saved_by_0_1_0.py`), before the package was split
into subpackages. Loading must give back every weight and optimizer variable bit for bit, the same
predictions (bit for bit on the machine that loads; within 1e-6 of those recorded on the machine that
saved), and training that goes on with the loaded masks."""

import os

import keras
import numpy as np

import tf_selopt

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def trains_on(model, x, y):
    """One more epoch (4 steps, to step 16) moves selected entries and leaves frozen and pruned ones bit for bit."""
    optimizer = model.optimizer
    before = [v.numpy().copy() for v in optimizer.model_variables]
    trains = [optimizer.trains(i).numpy() for i in range(len(before))]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(optimizer.iterations) == 16
    moved = 0
    for b, v, t in zip(before, optimizer.model_variables, trains):
        np.testing.assert_array_equal(v.numpy()[~t], b[~t])
        moved += int(np.sum(v.numpy()[t] != b[t]))
    assert moved > 0


def test_keras_file_saved_by_0_1_0_loads_bit_for_bit_and_trains_on():
    model = keras.saving.load_model(os.path.join(FIXTURES, "selective_0_1_0.keras"))
    expected = np.load(os.path.join(FIXTURES, "selective_0_1_0.npz"))
    optimizer = model.optimizer
    assert isinstance(optimizer, tf_selopt.SelectiveOptimizer)
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.Adam)
    # saved before `update` existed: the file holds the masked path's layout, so it loads on that path
    assert optimizer.update_path == "masked" and optimizer.get_config()["update"] == "masked"
    assert (optimizer.keep, optimizer.warmup_steps, optimizer.window, optimizer.seed) == (0.3, 6, 3, 0)
    weights = model.get_weights()
    assert len(weights) == sum(1 for key in expected.files if key.startswith("weight_"))
    for i, w in enumerate(weights):
        np.testing.assert_array_equal(w, expected[f"weight_{i}"])
    variables = optimizer.variables
    assert len(variables) == sum(1 for key in expected.files if key.startswith("optimizer_"))
    for i, v in enumerate(variables):
        np.testing.assert_array_equal(np.asarray(v), expected[f"optimizer_{i}"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64)
    predictions = model.predict(x, verbose=0)
    # Same weights, same predictions, bit for bit, on this machine: a model rebuilt from the saved weights in this
    # process. The predictions recorded when the file was written came from another CPU, whose matmul kernels
    # may round the last bit differently (1.2e-7 apart on an AVX2-only EPYC against the file's machine).
    rebuilt = keras.models.clone_model(model)
    rebuilt.set_weights([expected[f"weight_{i}"] for i in range(len(weights))])
    np.testing.assert_array_equal(predictions, rebuilt.predict(x, verbose=0))
    np.testing.assert_allclose(predictions, expected["predictions"], rtol=0, atol=1e-6)

    assert int(optimizer.selections) == 1 and int(optimizer.iterations) == 12
    zeros = tf_selopt.mask_zeros(model)  # pruning masks are run-time state: re-derived from the zeros
    assert sum(int(np.sum(w == 0)) for w in [model.layers[0].kernel.numpy(), model.layers[1].kernel.numpy()]) > 0
    assert zeros
    trains_on(model, x, y)


def test_keras_file_saved_by_main_before_the_in_graph_release_loads_and_releases_on_request():
    """`selective_b97a147.keras` (`tests/fixtures/make_saved_by_b97a147.py`): saved after the selection on the
    selected-only path, by main before the selection step released the warm-up state itself, so it holds the
    full layout. It loads bit for bit, trains on with frozen entries bit for bit, and `release_warmup_state`
    then drops the warm-up state as it would for a run of today."""
    model = keras.saving.load_model(os.path.join(FIXTURES, "selective_b97a147.keras"))
    expected = np.load(os.path.join(FIXTURES, "selective_b97a147.npz"))
    optimizer = model.optimizer
    assert optimizer.update_path == "selected_only" and int(optimizer.selections) == 1
    assert not optimizer.warmup_state_released  # the file's full layout
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_array_equal(w, expected[f"weight_{i}"])
    variables = optimizer.variables
    assert len(variables) == len(expected["optimizer_paths"])  # loaded by position (paths name the model)
    for i, v in enumerate(variables):
        np.testing.assert_array_equal(np.asarray(v), expected[f"optimizer_{i}"])
    rng = np.random.default_rng(0)
    trains_on(model, rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, size=64))
    n = sum(int(np.prod(v.shape)) for v in optimizer.model_variables)
    released = optimizer.release_warmup_state()
    assert released == n * (4 + 4 + 4 + 4)  # Adam's m and v, the scores, the window sums (float32)
    assert optimizer.warmup_state_released and optimizer.scores is None
