"""keras.applications.MobileNetV2 and a Keras LSTM through export and pruning, as a new user would (issue 14)."""

import keras
import numpy as np
import pytest

from tf_selopt.deploy.export import export_saved_model, export_tflite, tflite_runtime


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
    from tf_selopt.keras.pruning import prunable_variables, prune

    model = _mobilenet()
    variables = prunable_variables(model)
    total = sum(int(np.prod(v.shape)) for v in variables)
    assert len(variables) == 53
    with pytest.warns(UserWarning, match="prunable variables entirely") as record:
        masks = prune(model, 0.8)
    emptied = [path for path, m in masks.items() if not m.any()]
    # untrained (seed 0): 13 depthwise kernels, Conv_1 and the classifier itself
    assert len(emptied) == 15 and sum("depthwise" in path for path in emptied) == 13 and "predictions/kernel" in emptied
    message = str(record[0].message)
    assert f"zeroes {len(emptied)} of 53" in message and all(path in message for path in emptied)

    model = _mobilenet()
    masks = prune(model, 0.8, min_kept_per_variable=1)
    assert all(m.any() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == int(np.floor(0.8 * total + 0.5))  # exact count still


def _lstm(layer=keras.layers.LSTM):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5, 3)), layer(4), keras.layers.Dense(2)])


def test_lstm_tflite_without_batch_size_says_to_pass_it(tmp_path):
    # Before: the converter's ConverterError about SELECT_TF_OPS and a private flag.
    with pytest.raises(ValueError, match="pass batch_size=1"):
        export_tflite(_lstm(), tmp_path / "lstm.tflite")
    assert list(tmp_path.iterdir()) == []  # nothing left behind


# Each recurrent layer once and each batch size once (1: what the error asks for; 3: the check's last batch filled
# up): the layer and the batch size reach different parts of the export (the converted ops, the check's batching).
@pytest.mark.parametrize("layer, batch_size", [(keras.layers.LSTM, 1), (keras.layers.GRU, 3)])
def test_recurrent_tflite_with_batch_size_runs_in_litert_and_matches_keras(tmp_path, layer, batch_size):
    model = _lstm(layer)
    report = export_tflite(model, tmp_path / "rnn.tflite", batch_size=batch_size)  # 8 check rows: 3 batches of 3
    assert report.batch_size == batch_size and report.max_abs_diff <= 1e-5 and report.check_exercised
    interpreter, _, runtime = tflite_runtime("ai_edge_litert")
    runner = interpreter(model_path=report.path).get_signature_runner("serving_default")
    x = np.random.default_rng(5).standard_normal((batch_size, 5, 3)).astype("float32")
    got = runner(inputs=x)["outputs"]
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), rtol=0, atol=1e-5)


def test_lstm_dynamic_int8_with_batch_size(tmp_path):
    report = export_tflite(_lstm(), tmp_path / "lstm8.tflite", mode="dynamic_int8", batch_size=2)
    assert report.max_abs_diff <= report.atol and report.batch_size == 2
