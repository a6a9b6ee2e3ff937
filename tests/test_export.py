"""Export to a TF Serving SavedModel and to TFLite: layout, signature, round trip, sparsity, refusals."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import docstring_examples

import tf_selopt
from tf_selopt.deploy import export
from tf_selopt.deploy.export import (
    ExportVerificationError,
    export_saved_model,
    export_tflite,
)
from tf_selopt.study.models import lenet_300_100


def _mlp(api=keras, seed=0):
    if api is keras:
        keras.utils.set_random_seed(seed)
    else:
        api.utils.set_random_seed(seed)
    return api.Sequential([api.Input((6,)), api.layers.Dense(16, activation="relu"), api.layers.Dense(3)])


def _x(n=5, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 6)).astype("float32")


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, ds, fs in os.walk(root) for f in fs + ds)


def _check_serving(path, model):
    loaded = tf.saved_model.load(path)
    assert list(loaded.signatures) == ["serving_default"]
    sig = loaded.signatures["serving_default"]
    args, kwargs = sig.structured_input_signature
    assert args == ()
    assert kwargs == {"inputs": tf.TensorSpec((None, 6), tf.float32, name="inputs")}
    assert sig.structured_outputs == {"outputs": tf.TensorSpec((None, 3), tf.float32, name="outputs")}
    # A TF Serving REST request in the row format, decoded as the server does.
    x = _x()
    request = json.loads(json.dumps({"instances": x.tolist()}))
    batch = tf.constant(request["instances"], dtype=tf.float32)
    got = sig(inputs=batch)["outputs"].numpy()
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_keras3_saved_model_layout_signature_and_rest_batch(tmp_path):
    model = _mlp()
    report = export_saved_model(model, tmp_path, "mlp", 3)
    assert report.path == os.path.join(str(tmp_path), "mlp", "3")
    assert os.path.isfile(os.path.join(report.path, "saved_model.pb"))
    assert os.listdir(tmp_path / "mlp") == ["3"]  # no temporary directory left
    assert report.format == "saved_model" and report.max_abs_diff <= 1e-5 and report.size_bytes > report.gzip_bytes > 0
    assert report.weights == 6 * 16 + 16 + 16 * 3 + 3
    _check_serving(report.path, model)


def test_tf_keras_saved_model_signature_and_zeros(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    model = _mlp(tf_keras)
    kernel = model.layers[0].kernel
    kernel.assign(tf.where(tf.abs(kernel) < 0.2, 0.0, kernel))
    report = export_saved_model(model, tmp_path, "mlp2", 1)
    assert report.model_zeros == report.zeros > 0
    _check_serving(report.path, model)


def test_tfmot_stripped_model_exports(tmp_path):
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    tf_keras = pytest.importorskip("tf_keras")
    model = _mlp(tf_keras)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile("sgd", "mse")
    pruned.fit(_x(16), np.zeros((16, 3)), epochs=1, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    report = export_saved_model(stripped, tmp_path, "tfmot", 1)
    assert report.zeros == report.model_zeros >= 0.5 * (6 * 16 + 16 * 3) - 2
    _check_serving(report.path, stripped)
    lite = export_tflite(stripped, tmp_path / "tfmot.tflite", mode="sparse_float32")
    assert lite.max_abs_diff <= 1e-5


def test_pruned_lenet_sparse_tflite_is_smaller_and_keeps_zeros(tmp_path):
    keras.utils.set_random_seed(0)
    model = lenet_300_100()
    tf_selopt.prune(model, sparsity=0.9)
    tf_selopt.strip_pruning(model)
    kernel_zeros = sum(int(np.sum(layer.kernel.numpy() == 0)) for layer in model.layers if hasattr(layer, "kernel"))
    assert kernel_zeros == int(0.9 * 266200 + 0.5)
    dense = export_tflite(model, tmp_path / "dense.tflite")
    sparse = export_tflite(model, tmp_path / "sparse.tflite", mode="sparse_float32")
    assert sparse.size_bytes < dense.size_bytes / 4
    assert sparse.size_bytes == os.path.getsize(tmp_path / "sparse.tflite")
    for report in (dense, sparse):
        assert report.max_abs_diff <= 1e-5
        assert report.zeros == kernel_zeros  # the all-zero biases are dropped by the converter
        assert report.weights == 266200
    assert (dense.densify_ops, sparse.densify_ops) == (0, 3)  # sparse weights are densified at load
    assert (dense.sparse_tensors, sparse.sparse_tensors) == (0, 3)
    assert sorted(os.listdir(tmp_path)) == ["dense.tflite", "sparse.tflite"]


def test_very_sparse_kernel_is_read_sparse_not_densified(tmp_path):
    keras.utils.set_random_seed(0)
    model = lenet_300_100()
    tf_selopt.prune(model, sparsity=0.95)  # the 784x300 kernel ends up 99.65% zeros
    tf_selopt.strip_pruning(model)
    report = export_tflite(model, tmp_path / "s95.tflite", mode="sparse_float32")
    # all 3 kernels stored sparse; FULLY_CONNECTED's sparse kernel reads the first as is, the other 2 are densified
    assert (report.sparse_tensors, report.densify_ops) == (3, 2)
    assert report.max_abs_diff <= 1e-5 and report.zeros == int(0.95 * 266200 + 0.5)


@pytest.mark.parametrize("mode", ["dynamic_int8", "int8"])
def test_int8_modes(tmp_path, mode):
    model = _mlp()
    rep = _x(32, seed=2)
    report = export_tflite(model, tmp_path / "m.tflite", mode=mode, representative_data=rep)
    assert report.mode == mode and report.max_abs_diff <= report.atol
    if mode == "int8":  # (dynamic_int8 leaves tensors under 1024 values in float: exact here)
        assert report.max_abs_diff > 0
    # an iterable of batches works as well
    batches = (rep[i : i + 8] for i in range(0, 32, 8))
    export_tflite(model, tmp_path / "m.tflite", mode=mode, representative_data=batches, overwrite=True)


def test_overwrite_replaces_version(tmp_path):
    export_saved_model(_mlp(seed=0), tmp_path, "m", 1)
    other = _mlp(seed=5)
    export_saved_model(other, tmp_path, "m", 1, overwrite=True)
    assert os.listdir(tmp_path / "m") == ["1"]
    _check_serving(str(tmp_path / "m" / "1"), other)


def _unbuilt():
    return keras.Sequential([keras.layers.Dense(3)])


SAVED_MODEL_BAD = [
    (dict(version=-1), "version"),
    (dict(version=1.0), "version"),
    (dict(version="1"), "version"),
    (dict(version=True), "version"),
    (dict(model_name=""), "model_name"),
    (dict(model_name="a/b"), "model_name"),
    (dict(model_name=".."), "model_name"),
    (dict(overwrite="yes"), "overwrite"),
    (dict(model=_unbuilt), "model"),
]


@pytest.mark.parametrize("bad,word", SAVED_MODEL_BAD)
def test_saved_model_bad_arguments_write_nothing(tmp_path, bad, word):
    kwargs = dict(model=_mlp(), base_dir=tmp_path / "base", model_name="m", version=1)
    kwargs.update({k: (v() if callable(v) else v) for k, v in bad.items()})
    with pytest.raises(ValueError, match=word):
        export_saved_model(**kwargs)
    assert _files(tmp_path) == []


def test_saved_model_refuses_existing_version(tmp_path):
    target = tmp_path / "m" / "1"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="overwrite"):
        export_saved_model(_mlp(), tmp_path, "m", 1)
    assert _files(tmp_path) == ["m", "m/1", "m/1/keep.txt"]
    export_saved_model(_mlp(), tmp_path, "m", 2)  # another version is fine
    export_saved_model(_mlp(), tmp_path, "empty", 0)


TFLITE_BAD = [
    (dict(mode="float16"), "mode"),
    (dict(mode="int8"), "representative_data"),
    (dict(mode="int8", representative_data=np.zeros((4, 5), "float32")), "representative_data"),
    (dict(sample_inputs=np.zeros((4, 7), "float32")), "sample_inputs"),
    (dict(overwrite=1), "overwrite"),
    (dict(atol=-1.0), "atol"),
    (dict(model=_unbuilt), "model"),
]


@pytest.mark.parametrize("bad,word", TFLITE_BAD)
def test_tflite_bad_arguments_write_nothing(tmp_path, bad, word):
    kwargs = dict(model=_mlp(), path=tmp_path / "sub" / "m.tflite")
    kwargs.update({k: (v() if k == "model" else v) for k, v in bad.items()})
    with pytest.raises(ValueError, match=word):
        export_tflite(**kwargs)
    assert _files(tmp_path) == []


def test_tflite_refuses_existing_file(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="overwrite"):
        export_tflite(_mlp(), path)
    assert path.read_bytes() == b"old"
    export_tflite(_mlp(), path, overwrite=True)
    assert path.read_bytes()[4:8] == b"TFL3"
    assert _files(tmp_path) == ["m.tflite"]


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(ExportVerificationError):
        export_tflite(_mlp(), tmp_path / "sub" / "m.tflite", mode="int8", representative_data=_x(8), atol=0.0)
    real = export._keras_outputs
    monkeypatch.setattr(export, "_keras_outputs", lambda model, *args: real(model, *args) + 1e-3)
    with pytest.raises(ExportVerificationError):
        export_saved_model(_mlp(), tmp_path / "base", "m", 1)
    with pytest.raises(ExportVerificationError):
        export_tflite(_mlp(), tmp_path / "m.tflite")
    assert _files(tmp_path) == []


def test_docstring_example_runs(request):
    attempted, failed = docstring_examples(export, request)  # or the doctest items of `make test`
    assert failed == 0 and attempted > 0


def _saved_model_cli_show(path):
    """``saved_model_cli show --tag_set serve --signature_def serving_default``, the tool TF Serving users run."""
    import subprocess
    import sys

    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    done = subprocess.run(
        [cli, "show", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return done.stdout


def test_saved_model_cli_reports_the_documented_signature_and_rest_requests_match_keras(tmp_path):
    from tf_selopt.study.models import small_cnn

    keras.utils.set_random_seed(0)
    model = small_cnn()
    tf_selopt.prune(model, 0.9)
    tf_selopt.strip_pruning(model)
    path = export_saved_model(model, tmp_path, "mnist_cnn", 1).path
    shown = _saved_model_cli_show(path)
    for line in (
        "inputs['inputs'] tensor_info:",
        "dtype: DT_FLOAT",
        "shape: (-1, 28, 28, 1)",
        "outputs['outputs'] tensor_info:",
        "shape: (-1, 10)",
        "Method name is: tensorflow/serving/predict",
    ):
        assert line in shown, shown
    assert shown.count("tensor_info:") == 2  # one input, one output
    # TF Serving's REST API: {"instances": [...]} (row format) and {"inputs": ...} (columnar), JSON-decoded.
    x = np.random.default_rng(3).random((4, 28, 28, 1)).astype("float32")
    want = model.predict(x, verbose=0)
    sig = tf.saved_model.load(path).signatures["serving_default"]
    for body, key in (({"instances": x.tolist()}, "instances"), ({"inputs": x.tolist()}, "inputs")):
        request = json.loads(json.dumps(body))
        got = sig(inputs=tf.constant(request[key], dtype=tf.float32))["outputs"].numpy()
        response = json.loads(json.dumps({"predictions": got.tolist()}))  # the row-format answer
        np.testing.assert_allclose(np.asarray(response["predictions"]), want, rtol=0, atol=1e-5)


def test_tflite_runtimes():
    interpreter, resolvers, name = export.tflite_runtime("tf.lite")
    assert name == f"tf.lite.Interpreter (tensorflow {tf.__version__})"
    assert resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES is not None
    with pytest.raises(ValueError, match="runtime"):
        export.tflite_runtime("tflite")
    try:
        import ai_edge_litert
    except ImportError:
        with pytest.raises(ValueError, match="ai-edge-litert"):
            export.tflite_runtime("ai_edge_litert")
    else:
        assert (
            export.tflite_runtime()[2]
            == export.tflite_runtime("ai_edge_litert")[2]
            == (f"ai_edge_litert {ai_edge_litert.__version__}")
        )


def _relu_threshold_model():
    """relu(0.01 * sum(x) - 1): 0 on every standard-normal or uniform(0,1) row of 6 features, varies on 0..255."""
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2, activation="relu")])
    model.layers[0].set_weights([np.full((6, 2), 0.01, "float32"), np.full((2,), -1.0, "float32")])
    return model


def _constant_model():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.layers[0].set_weights([np.zeros((6, 3), "float32"), np.array([0.5, -1.0, 2.0], "float32")])
    return model


def test_check_moves_to_inputs_that_exercise_the_model(tmp_path, recwarn):
    # Before: the check ran on standard-normal rows only, where this model outputs 0 for every row (max diff 0).
    model = _relu_threshold_model()
    for report in (
        export_saved_model(model, tmp_path, "relu", 1),
        export_tflite(model, tmp_path / "relu.tflite"),
    ):
        assert report.sample_source == "uniform(0,255)"
        assert report.check_exercised is True
    assert not [w for w in recwarn if "check could not run" in str(w.message)]


@pytest.mark.parametrize("fmt", ["saved_model", "tflite"])
def test_constant_model_check_says_it_could_not_run(tmp_path, fmt):
    model = _constant_model()
    tried = "standard_normal, uniform\\(0,1\\), uniform\\(0,255\\)"
    with pytest.warns(UserWarning, match="export check could not run.*" + tried):
        if fmt == "saved_model":
            report = export_saved_model(model, tmp_path, "const", 1)
        else:
            report = export_tflite(model, tmp_path / "const.tflite")
    assert report.check_exercised is False
    assert report.max_abs_diff <= report.atol  # the artefact is still written and compared
    assert os.path.exists(report.path)


def test_given_constant_inputs_warn_and_are_kept(tmp_path):
    model = _mlp()
    x = np.ones((4, 6), "float32")  # four equal rows: equal outputs
    with pytest.warns(UserWarning, match="export check could not run.*\\(given: "):
        report = export_saved_model(model, tmp_path, "mlp", 1, sample_inputs=x)
    assert (report.check_exercised, report.sample_source) == (False, "given")
    report = export_saved_model(model, tmp_path, "mlp", 2, sample_inputs=_x())
    assert (report.check_exercised, report.sample_source) == (True, "given")


def test_default_sample_inputs_refuses_unknown_distribution():
    spec = tf.TensorSpec((None, 6), tf.float32)
    with pytest.raises(ValueError, match="distribution must be one of"):
        export.default_sample_inputs(spec, distribution="laplace")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_tflite_refuses_bad_batch_size_before_writing(tmp_path, bad):
    with pytest.raises(ValueError, match="batch_size must be None \\(free\\) or an int >= 1"):
        export_tflite(_mlp(), tmp_path / "m.tflite", batch_size=bad)
    assert list(tmp_path.iterdir()) == []


def test_tflite_fixed_batch_checks_every_row(tmp_path):
    model = _mlp()
    report = export_tflite(model, tmp_path / "m.tflite", batch_size=3, sample_inputs=_x(7))  # 3 + 3 + 1 (filled up)
    assert report.batch_size == 3 and report.max_abs_diff <= 1e-5
    interpreter, _, _ = export.tflite_runtime()
    inputs = interpreter(model_path=report.path).get_signature_runner("serving_default").get_input_details()
    assert list(inputs["inputs"]["shape"]) == [3, 6]


def test_float_tflite_bound_scales_with_the_outputs(tmp_path):
    """Logits in the thousands differ from TFLite's by far more than FLOAT_ATOL (its kernels round in another
    order): the default bound is FLOAT_ATOL + FLOAT_RTOL * max|output|, and FLOAT_ATOL alone fails the check."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
    for v in model.trainable_variables:
        v.assign(v.numpy() * 30)
    x = np.random.default_rng(0).normal(size=(8, 784)).astype("float32")
    peak = float(np.max(np.abs(model(x, training=False))))
    assert peak > 1000
    report = export_tflite(model, tmp_path / "a.tflite", sample_inputs=x)
    assert report.atol == pytest.approx(export.FLOAT_ATOL + export.FLOAT_RTOL * peak)
    assert export.FLOAT_ATOL < report.max_abs_diff <= report.atol
    with pytest.raises(ExportVerificationError, match="atol"):
        export_tflite(model, tmp_path / "b.tflite", sample_inputs=x, atol=export.FLOAT_ATOL)
    assert not os.path.exists(tmp_path / "b.tflite")


def test_reports_are_hashable_and_equal_reports_hash_equal():
    """A report can key a dict or sit in a set (``input_ranges`` is compared, not hashed: it is a dict)."""
    fields = dict(
        path="m.tflite", format="tflite", mode="float32", size_bytes=10, gzip_bytes=8, max_abs_diff=0.0,
        atol=1e-5, zeros=0, weights=4, model_zeros=0, runtime="ai_edge_litert",
    )  # fmt: skip
    a = export.ExportReport(**fields, input_ranges={"token_ids": "uniform over [0, 100)"})
    b = export.ExportReport(**fields, input_ranges={"token_ids": "uniform over [0, 100)"})
    c = export.ExportReport(**fields, input_ranges={"token_ids": "unknown range: no embedding"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != c and len({a, c}) == 2
