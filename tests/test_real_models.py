"""keras.applications.MobileNetV2 and a Keras LSTM through export and pruning, as a new user would (issue 14)."""

import keras
import numpy as np
import pytest

from tf_selopt.export import export_saved_model


def _mobilenet(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)


def test_mobilenet_v2_export_check_says_it_could_not_run(tmp_path):
    # An untrained MobileNetV2 (and one after a few steps) gives the same output for every input in
    # inference mode. Before: the export compared constants (max diff 0) and reported success.
    model = _mobilenet()
    with pytest.warns(UserWarning, match="export check could not run"):
        report = export_saved_model(model, tmp_path, "mnv2", 1)
    assert report.check_exercised is False
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    outputs = np.asarray(model(x, training=False))
    assert np.ptp(outputs, axis=0).max() <= 2 * report.atol  # what the check saw: no input changes the output


def test_mobilenet_v2_global_pruning_warns_and_the_floor_keeps_every_kernel():
    # Global pruning at 0.8 zeroes whole depthwise kernels of MobileNetV2. Before: silently.
    from tf_selopt.pruning import prunable_variables, prune

    model = _mobilenet()
    variables = prunable_variables(model)
    total = sum(int(np.prod(v.shape)) for v in variables)
    assert len(variables) == 53
    with pytest.warns(UserWarning, match="prunable variables entirely") as record:
        masks = prune(model, 0.8)
    emptied = [path for path, m in masks.items() if not m.any()]
    # untrained (seed 0): 13 depthwise kernels, Conv_1 and the classifier itself
    assert len(emptied) == 15 and sum("depthwise" in path for path in emptied) == 13 and "predictions/kernel" in emptied
    assert f"zeroes {len(emptied)} of 53" in str(record[0].message) and all(p in str(record[0].message) for p in emptied)

    model = _mobilenet()
    masks = prune(model, 0.8, min_kept_per_variable=1)
    assert all(m.any() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == int(np.floor(0.8 * total + 0.5))  # exact count still
