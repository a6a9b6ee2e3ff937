"""serving/: TF Serving requests, warm-up file and models.config, and the LiteRT runner, on a tiny exported model.

No model server runs here (no binary, no network), so each request is checked the way the server would read
it: the REST JSON decoded to the signature's dtypes, the gRPC TensorProtos through ``tf.make_ndarray``, then
run through the SavedModel's own signature (``tf.saved_model.load``) and compared with the Keras model.
"""

import http.server
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # serving/ is a directory of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from google.protobuf import text_format  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from serving import client as serving_client  # noqa: E402
from serving import litert_runner, tf_serving  # noqa: E402
from serving.signature import load_signature, version_dir  # noqa: E402
from tf_selopt.deploy import export  # noqa: E402

X = np.random.default_rng(0).standard_normal((5, 3)).astype("float32")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(Keras model, base path ``<tmp>/tiny`` holding version 1, its loaded serving signature function)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    base = tmp_path_factory.mktemp("models")
    export.export_saved_model(model, base, "tiny", 1)
    signature = tf.saved_model.load(str(base / "tiny" / "1")).signatures["serving_default"]
    return model, base / "tiny", signature


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """A SavedModel whose signature takes ``a`` (float32, (None, 2)) and ``n`` (int32, (None,))."""
    module = tf.Module()
    module.scale = tf.Variable([1.5, -2.0])

    @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32), tf.TensorSpec((None,), tf.int32)])
    def serve(a, n):
        return {"y": a * module.scale * tf.cast(n, tf.float32)[:, None]}

    base = tmp_path_factory.mktemp("multi") / "multi"
    tf.saved_model.save(module, str(base / "7"), signatures={"serving_default": serve})
    return base


@pytest.fixture(scope="module")
def tiny_signature(exported):
    return load_signature(exported[1])


def _run(signature_fn, arrays):
    return {k: v.numpy() for k, v in signature_fn(**{k: tf.constant(a) for k, a in arrays.items()}).items()}


def test_signature_is_read_from_the_highest_version(exported, tmp_path):
    _, base, _ = exported
    sig = load_signature(base)
    assert sig.version == 1 and sig.path == str(base / "1")
    assert {k: (s.dtype, s.shape.as_list()) for k, s in sig.inputs.items()} == {"inputs": (tf.float32, [None, 3])}
    assert list(sig.outputs) == ["outputs"]
    (tmp_path / "3").mkdir()  # a version directory without a SavedModel is not served
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "saved_model.pb").write_bytes(b"")
    assert version_dir(tmp_path) == str(tmp_path / "12")


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_rest_body_runs_through_the_signature(exported, fmt):
    model, base, signature_fn = exported
    client = serving_client.Client.from_saved_model(base, "tiny", host="example", version=1)
    assert client.rest_url == "http://example:8501/v1/models/tiny/versions/1:predict"
    body = json.loads(json.dumps(client.rest_body(X, format=fmt)))  # what goes over the wire
    assert body["signature_name"] == "serving_default" and set(body) == {"signature_name", fmt}
    arrays = serving_client.decode_rest_body(body, client.signature)
    assert arrays["inputs"].dtype == np.float32 and np.array_equal(arrays["inputs"], X)  # JSON keeps float32 exact
    outputs = _run(signature_fn, arrays)
    np.testing.assert_allclose(outputs["outputs"], model(X, training=False).numpy(), atol=1e-6)


def test_grpc_request_runs_through_the_signature(exported):
    model, base, signature_fn = exported
    client = serving_client.Client.from_saved_model(base, "tiny", version=1)
    wire = client.grpc_request(X.tolist()).SerializeToString()
    request = predict_pb2.PredictRequest.FromString(wire)
    assert (request.model_spec.name, request.model_spec.signature_name) == ("tiny", "serving_default")
    assert request.model_spec.version.value == 1 and list(request.inputs) == ["inputs"]
    arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    assert arrays["inputs"].dtype == np.float32 and np.array_equal(arrays["inputs"], X)
    np.testing.assert_allclose(_run(signature_fn, arrays)["outputs"], model(X, training=False).numpy(), atol=1e-6)


def test_two_input_signature_in_both_formats(two_inputs):
    a = np.arange(6, dtype="float32").reshape(3, 2)
    n = np.array([1, 2, 3], "int32")
    expected = a * np.array([1.5, -2.0], "float32") * n[:, None]
    client = serving_client.Client.from_saved_model(two_inputs, "multi")
    signature_fn = tf.saved_model.load(client.signature.path).signatures["serving_default"]
    body = client.rest_body({"a": a, "n": [1, 2, 3]})
    assert body["instances"][1] == {"a": [2.0, 3.0], "n": 2}  # row format: one dict per example
    for arrays in (
        serving_client.decode_rest_body(json.dumps(body), client.signature),
        serving_client.decode_rest_body(json.dumps(client.rest_body({"a": a, "n": n}, "inputs")), client.signature),
        serving_client.decode_grpc_request(client.grpc_request({"a": a, "n": n}), client.signature),
    ):
        assert arrays["n"].dtype == np.int32
        np.testing.assert_array_equal(_run(signature_fn, arrays)["y"], expected)


def test_warmup_file_parses_back_into_requests_the_signature_runs(exported, tmp_path):
    model, base, signature_fn = exported
    path = tf_serving.write_warmup_requests(base, X, "tiny", batch_size=2)
    assert path == str(base / "1" / "assets.extra" / "tf_serving_warmup_requests")
    logs = tf_serving.read_warmup_requests(base / "1")
    assert [len(tf.make_ndarray(log.predict_log.request.inputs["inputs"])) for log in logs] == [2, 2, 1]
    rows = []
    for log in logs:
        request = log.predict_log.request
        assert (request.model_spec.name, request.model_spec.signature_name) == ("tiny", "serving_default")
        rows.append(_run(signature_fn, {"inputs": tf.make_ndarray(request.inputs["inputs"])})["outputs"])
    np.testing.assert_allclose(np.concatenate(rows), model(X, training=False).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        tf_serving.write_warmup_requests(base, X[:1], "tiny")
    assert len(tf_serving.read_warmup_requests(path)) == 3  # unchanged
    tf_serving.write_warmup_requests(base, X[:1], "tiny", overwrite=True)
    assert len(tf_serving.read_warmup_requests(path)) == 1
    assert "serving_default" in tf.saved_model.load(str(base / "1")).signatures  # assets.extra does not disturb it


def test_models_config_text_proto(tmp_path):
    text = tf_serving.models_config({"tiny": "/models/tiny", "multi": "/models/multi"})
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    got = [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]
    assert got == [("tiny", "/models/tiny", "tensorflow"), ("multi", "/models/multi", "tensorflow")]
    path = tf_serving.write_models_config(tmp_path / "models.config", {"tiny": "/models/tiny"})
    assert open(path).read() == tf_serving.models_config({"tiny": "/models/tiny"})
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        tf_serving.write_models_config(path, {"other": "/models/other"})
    assert "tiny" in open(path).read()


SPEC = "float32 \\(None, 3\\)"
BAD_REQUESTS = [
    (
        "inputs",
        {"x": [[1.0, 2.0, 3.0]]},
        ValueError,
        "inputs: unknown \\['x'\\], missing \\['inputs'\\]; signature 'serving_d",
    ),
    ("inputs", [[1.0, 2.0]], ValueError, f"input 'inputs' has shape \\(1, 2\\); the signature wants {SPEC}"),
    ("inputs", [1.0, 2.0, 3.0], ValueError, f"input 'inputs' has shape \\(3,\\); the signature wants {SPEC}"),
    ("inputs", [["a", "b", "c"]], TypeError, f"input 'inputs' has dtype <U1; the signature wants {SPEC}"),
    ("inputs", [[1.0, 2.0], [3.0]], ValueError, "input 'inputs': not a rectangular array"),
]


@pytest.mark.parametrize("argument, inputs, error, message", BAD_REQUESTS)
@pytest.mark.parametrize("via", ["rest_body", "grpc_request", "write_warmup_requests"])
def test_bad_request_inputs_name_the_input_and_the_spec(
    exported, tiny_signature, argument, inputs, error, message, via
):
    _, base, _ = exported
    client = serving_client.Client(tiny_signature, "tiny")
    calls = {
        "rest_body": lambda: client.rest_body(inputs),
        "grpc_request": lambda: client.grpc_request(inputs),
        "write_warmup_requests": lambda: tf_serving.write_warmup_requests(base / "1", inputs, "tiny", overwrite=True),
    }
    before = sorted(os.listdir(base / "1"))
    with pytest.raises(error, match=message):
        calls[via]()
    assert sorted(os.listdir(base / "1")) == before  # nothing written


BAD_TWO_INPUT_REQUESTS = [
    (
        "inputs",
        [[0.0, 0.0]],
        TypeError,
        "inputs must be a dict of input name -> array: signature 'serving_default' takes 2 in",
    ),
    (
        "inputs",
        {"a": [[0.0, 0.0]], "n": [0.5]},
        TypeError,
        "input 'n' has dtype float64; the signature wants int32 \\(None,\\)",
    ),
    ("inputs", {"a": [[0.0, 0.0]], "n": [2**40]}, TypeError, "input 'n': values out of range of int32"),
    (
        "inputs",
        {"a": [[0.0, 0.0]], "n": [1, 2]},
        ValueError,
        "inputs must share their batch size .* \\{'a': 1, 'n': 2\\}",
    ),
]


@pytest.mark.parametrize("argument, inputs, error, message", BAD_TWO_INPUT_REQUESTS)
def test_bad_two_input_requests(two_inputs, argument, inputs, error, message):
    client = serving_client.Client.from_saved_model(two_inputs, "multi")
    with pytest.raises(error, match=message):
        client.rest_body(inputs)


def test_grpc_request_with_another_dtype_is_refused(two_inputs):
    client = serving_client.Client.from_saved_model(two_inputs, "multi")
    request = client.grpc_request({"a": [[0.0, 0.0], [1.0, 1.0]], "n": [1, 2]})
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([1, 2], "int64")))
    with pytest.raises(TypeError, match="input 'n' is a int64 TensorProto; the signature wants int32"):
        serving_client.decode_grpc_request(request, client.signature)


BAD_ARGUMENTS = [
    (
        "signature_name",
        lambda base, sig: load_signature(base, "predict"),
        "signature_name must be one of \\['serving_d",
    ),
    ("path", lambda base, sig: load_signature(base.parent), "holds no <version>/saved_model.pb"),
    ("model_name", lambda base, sig: serving_client.Client(sig, "a/b"), "model_name must be a non-empty name"),
    ("timeout", lambda base, sig: serving_client.Client(sig, "m", timeout=0), "timeout must be a positive number"),
    ("rest_port", lambda base, sig: serving_client.Client(sig, "m", rest_port=0), "rest_port must be an integer in"),
    ("format", lambda base, sig: serving_client.Client(sig, "m").rest_body(X, "rows"), "format must be one of"),
    ("models", lambda base, sig: tf_serving.models_config({"m": "models/m"}), "base path must be an absolute path"),
    ("models", lambda base, sig: tf_serving.models_config({}), "models must be a non-empty dict"),
    ("batch_size", lambda base, sig: tf_serving.write_warmup_requests(base, X, "t", batch_size=0), "batch_size must"),
    ("inputs", lambda base, sig: tf_serving.write_warmup_requests(base, [[0.0] * 3] * 1001, "t", batch_size=1), "1001"),
]


@pytest.mark.parametrize("argument, call, message", BAD_ARGUMENTS)
def test_bad_arguments(exported, tiny_signature, argument, call, message):
    base = exported[1]
    before = sorted(os.listdir(base / "1"))
    with pytest.raises(ValueError, match=message):
        call(base, tiny_signature)
    assert sorted(os.listdir(base / "1")) == before  # nothing written


def test_sending_without_an_answer_raises_serving_error(exported):
    """A socket that accepts connections and never answers (REST), and a closed port (gRPC): real sockets."""
    _, base, _ = exported
    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        sig = load_signature(base)
        rest = serving_client.Client(sig, "tiny", host="127.0.0.1", rest_port=silent.getsockname()[1], timeout=0.3)
        with pytest.raises(
            serving_client.ServingError, match=r"POST http://127.0.0.1:\d+/v1/models/tiny:predict: no answer"
        ):
            rest.predict_rest(X)
        grpc_client = serving_client.Client(sig, "tiny", host="127.0.0.1", grpc_port=closed.getsockname()[1], timeout=2)
        with pytest.raises(serving_client.ServingError, match=r"gRPC Predict at 127.0.0.1:\d+: (UNAVAILABLE|DEADLINE)"):
            grpc_client.predict_grpc(X)


@pytest.fixture(scope="module")
def tflite_file(exported, tmp_path_factory):
    model = exported[0]
    path = tmp_path_factory.mktemp("lite") / "tiny.tflite"
    export.export_tflite(model, path)
    return model, path


def test_litert_runner_runs_the_signature(tflite_file):
    model, path = tflite_file
    result = litert_runner.run(path, runs=5, warmup=1, threads=2, inputs=X[:1])
    assert result["signature"] == "serving_default" and result["threads"] == 2 and result["runs"] == 5
    assert result["inputs"] == {"inputs": "float32 (None, 3)"} and result["outputs"] == {"outputs": "float32 (None, 2)"}
    assert 0 < result["p50_us"] <= result["p90_us"]
    np.testing.assert_allclose(result["output_values"]["outputs"], model(X[:1], training=False).numpy(), atol=1e-5)


BAD_RUNNER_ARGUMENTS = [
    (dict(runs=0), "runs must be an integer >= 1"),
    (dict(threads=0), "threads must be an integer >= 1"),
    (dict(signature_key="other"), r"signature_key must be one of \['serving_default'\]"),
    (dict(inputs=[[0.5, 1.0, 2.0]]), r"input 'inputs' is float64 \(1, 3\); the signature wants float32"),
    (dict(inputs={"x": [[0.5, 1.0, 2.0]]}), r"inputs: got names \['x'\]; the signature takes"),
]


@pytest.mark.parametrize("kwargs, message", BAD_RUNNER_ARGUMENTS)
def test_litert_runner_bad_arguments(tflite_file, kwargs, message):
    with pytest.raises(ValueError, match=message):
        litert_runner.run(tflite_file[1], **kwargs)


def test_litert_runner_command_needs_no_tensorflow(tflite_file, tmp_path):
    _, path = tflite_file
    code = (
        "import runpy, sys; sys.argv = ['litert_runner', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('serving.litert_runner', run_name='__main__')\n"
        "except SystemExit as e:\n    print('tensorflow loaded:', 'tensorflow' in sys.modules); sys.exit(e.code)\n"
    )
    out = tmp_path / "timing.json"
    args = [str(path), "--runs", "5", "--json", str(out)]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=True
    )
    assert "p50" in result.stdout and "tensorflow loaded: False" in result.stdout, result.stdout
    timing = json.loads(out.read_text())
    assert (
        timing["runs"] == 5 and timing["output_shapes"] == {"outputs": [1, 2]} and len(timing["load_average_1min"]) == 2
    )


class _StandInRest(http.server.BaseHTTPRequestHandler):
    """A stand-in for TF Serving's REST predict endpoint (not TF Serving): runs the SavedModel's signature."""

    signature = None  # set per test: (serving.signature.Signature, the loaded signature function)

    def do_POST(self):  # noqa: N802 (http.server's name)
        sig, fn = self.signature
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        outputs = _run(fn, serving_client.decode_rest_body(body, sig))
        key = "predictions" if "instances" in body else "outputs"
        answer = json.dumps({key: outputs["outputs"].tolist()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_send_and_read_answers_through_stand_in_servers(exported, tiny_signature):
    """The sending and answer-reading code over real sockets, against stand-ins that run the SavedModel's
    signature as TF Serving would (the model server itself cannot run here)."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    model, _, fn = exported
    expected = model(X, training=False).numpy()

    _StandInRest.signature = (tiny_signature, fn)
    rest_server = http.server.HTTPServer(("127.0.0.1", 0), _StandInRest)
    thread = threading.Thread(target=rest_server.serve_forever, daemon=True)
    thread.start()
    try:
        client = serving_client.Client(tiny_signature, "tiny", host="127.0.0.1", rest_port=rest_server.server_port)
        for fmt in serving_client.REST_FORMATS:
            np.testing.assert_allclose(client.predict_rest(X, format=fmt)["outputs"], expected, atol=1e-6)
    finally:
        rest_server.shutdown()
        rest_server.server_close()

    class Predict(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (the service's method name)
            outputs = _run(fn, serving_client.decode_grpc_request(request, tiny_signature))
            response = predict_pb2.PredictResponse()
            response.outputs["outputs"].CopyFrom(tf.make_tensor_proto(outputs["outputs"]))
            return response

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Predict(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        client = serving_client.Client(tiny_signature, "tiny", host="127.0.0.1", grpc_port=port)
        np.testing.assert_allclose(client.predict_grpc(X)["outputs"], expected, atol=1e-6)
    finally:
        grpc_server.stop(None)
