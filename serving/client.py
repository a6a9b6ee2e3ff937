"""Predict requests in TF Serving's REST and gRPC formats, checked against the served signature, and sent.

``Client`` reads the signature from the exported directory (what the server loads) and checks every request's
inputs against it (``serving.signature.check_inputs``: names, dtypes, shapes) before building or sending it.

* REST: ``POST http://HOST:8501/v1/models/NAME[/versions/V]:predict`` with the JSON body
  ``{"signature_name": ..., "instances": [...]}`` (row format; the answer is ``{"predictions": ...}``) or
  ``{"signature_name": ..., "inputs": ...}`` (columnar; the answer is ``{"outputs": ...}``), sent with
  ``urllib``. ``tf.string`` values go as ``{"b64": ...}``.
* gRPC: ``tensorflow_serving.apis.predict_pb2.PredictRequest`` (``model_spec`` name, signature name and
  version; inputs as ``TensorProto`` from ``tf.make_tensor_proto``), sent through
  ``PredictionServiceStub.Predict`` on ``HOST:8500``.

Both send with a ``timeout`` in seconds and raise ``ServingError`` (the URL or target and the server's
message) when the server answers with an error or does not answer in time. ``decode_rest_body`` and
``decode_grpc_request`` turn a request back into arrays, as the server reads it.

Example (a server started with the ``docker run`` line in ``serving/README.md``)::

    client = Client.from_saved_model("serving_models/mnist_cnn", "mnist_cnn")
    client.rest_body(x_test[:2])  # {"signature_name": "serving_default", "instances": [[[[0.0], ...]]]}
    logits = client.predict_rest(x_test[:2])  # {"outputs": array of shape (2, 10)}
    logits = client.predict_grpc(x_test[:2])  # the same through gRPC

Needs the ``[serving]`` extra (``tensorflow-serving-api``) for the gRPC protos.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf

from serving.signature import SIGNATURE_KEY, Signature, check_inputs, load_signature, spec_text

REST_PORT = 8501
GRPC_PORT = 8500
REST_FORMATS = ("instances", "inputs")
DEFAULT_TIMEOUT = 10.0


class ServingError(RuntimeError):
    """The model server answered with an error, or did not answer within the timeout."""


def _json_value(array: np.ndarray):
    if array.dtype == object:  # tf.string: bytes, sent base64-encoded as TF Serving's REST API wants
        encoded = np.array([{"b64": base64.b64encode(v).decode("ascii")} for v in array.flat], dtype=object)
        return encoded.reshape(array.shape).tolist()
    return array.tolist()


def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


class Client:
    """Builds and sends predict requests for one model served by TF Serving.

    Args:
        signature: the served signature (``serving.signature.load_signature``); requests are checked against it.
        model_name: the name the server serves the model under (``MODEL_NAME`` / ``models.config``'s ``name``).
        host: the server's host name.
        rest_port, grpc_port: TF Serving's REST (8501) and gRPC (8500) ports.
        version: ask for this version (``None``: the server's default, the highest).
        timeout: seconds to wait for an answer.
    """

    def __init__(
        self,
        signature: Signature,
        model_name: str,
        host: str = "localhost",
        rest_port: int = REST_PORT,
        grpc_port: int = GRPC_PORT,
        version: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        if not isinstance(signature, Signature):
            raise TypeError(f"signature must be a serving.signature.Signature (load_signature), got {signature!r}")
        if not isinstance(model_name, str) or not model_name or "/" in model_name or ":" in model_name:
            raise ValueError(f"model_name must be a non-empty name without '/' or ':', got {model_name!r}")
        for name, port in (("rest_port", rest_port), ("grpc_port", grpc_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"{name} must be an integer in 1..65535, got {port!r}")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
            raise ValueError(f"version must be None or a non-negative integer, got {version!r}")
        self.signature = signature
        self.model_name = model_name
        self.host = host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.version = version
        self.timeout = _check_timeout(timeout)

    @classmethod
    def from_saved_model(cls, path, model_name: str, signature_name: str = SIGNATURE_KEY, **kwargs) -> Client:
        """A client for the SavedModel at ``path`` (a version directory or a base path: its highest version)."""
        return cls(load_signature(path, signature_name), model_name, **kwargs)

    # ------------------------------------------------------------------ REST

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT/v1/models/NAME[/versions/V]:predict``."""
        version = "" if self.version is None else f"/versions/{self.version}"
        return f"http://{self.host}:{self.rest_port}/v1/models/{self.model_name}{version}:predict"

    def rest_body(self, inputs, format: str = "instances") -> dict:
        """The JSON body (a dict) of a REST predict request for ``inputs`` (see ``check_inputs``).

        ``format``: ``"instances"`` (row format: one entry per example; a dict per example when the signature
        has several inputs) or ``"inputs"`` (columnar: the whole batch; a dict of inputs when several).
        """
        if format not in REST_FORMATS:
            raise ValueError(f"format must be one of {REST_FORMATS}, got {format!r}")
        arrays = check_inputs(inputs, self.signature)
        if format == "inputs":
            value = {k: _json_value(a) for k, a in arrays.items()}
            return {
                "signature_name": self.signature.name,
                "inputs": value if len(value) > 1 else next(iter(value.values())),
            }
        if len(arrays) == 1:
            instances = _json_value(next(iter(arrays.values())))
        else:
            rows = len(next(iter(arrays.values())))
            instances = [{k: _json_value(a[i]) for k, a in arrays.items()} for i in range(rows)]
        return {"signature_name": self.signature.name, "instances": instances}

    def predict_rest(self, inputs, format: str = "instances") -> dict:
        """Send a REST predict request; the answer as ``{output name: np.ndarray}``. ``ServingError`` on failure."""
        body = json.dumps(self.rest_body(inputs, format)).encode()
        request = urllib.request.Request(self.rest_url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise ServingError(f"POST {self.rest_url}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None
        except (urllib.error.URLError, TimeoutError, socket.timeout) as e:
            raise ServingError(f"POST {self.rest_url}: no answer within {self.timeout:g} s ({e})") from None
        return self._rest_outputs(answer)

    def _rest_outputs(self, answer: dict) -> dict:
        names = list(self.signature.outputs)
        if "outputs" in answer:
            value = answer["outputs"]
            return (
                {k: np.asarray(v) for k, v in value.items()}
                if isinstance(value, dict)
                else {names[0]: np.asarray(value)}
            )
        predictions = answer["predictions"]
        if predictions and isinstance(predictions[0], dict):
            return {k: np.asarray([row[k] for row in predictions]) for k in predictions[0]}
        return {names[0]: np.asarray(predictions)}

    # ------------------------------------------------------------------ gRPC

    @property
    def grpc_target(self) -> str:
        """``HOST:PORT`` of the gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    def grpc_request(self, inputs):
        """A ``predict_pb2.PredictRequest`` for ``inputs`` (see ``check_inputs``): model spec and TensorProtos."""
        from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415  (the [serving] extra)

        arrays = check_inputs(inputs, self.signature)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature.name
        if self.version is not None:
            request.model_spec.version.value = self.version
        for name, array in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=self.signature.inputs[name].dtype))
        return request

    def predict_grpc(self, inputs) -> dict:
        """Send a gRPC predict request; the answer as ``{output name: np.ndarray}``. ``ServingError`` on failure."""
        import grpc  # noqa: PLC0415  (the [serving] extra)
        from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: PLC0415

        request = self.grpc_request(inputs)
        with grpc.insecure_channel(self.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            try:
                response = stub.Predict(request, timeout=self.timeout)
            except grpc.RpcError as e:
                raise ServingError(f"gRPC Predict at {self.grpc_target}: {e.code().name}: {e.details()}") from None
        return {k: tf.make_ndarray(v) for k, v in sorted(response.outputs.items())}


# ---------------------------------------------------------------------- requests read back


def _from_json(value, dtype: tf.DType):
    if dtype == tf.string:

        def decode(v):
            return [decode(x) for x in v] if isinstance(v, list) else base64.b64decode(v["b64"])

        return np.array(decode(value), dtype=object)
    return np.asarray(value, dtype=dtype.as_numpy_dtype)


def decode_rest_body(body, signature: Signature) -> dict:
    """The inputs of a REST predict body (a dict or its JSON text), as the server reads them: ``{name: array}``.

    Numbers become the signature's dtypes (as TF Serving converts JSON numbers), ``{"b64": ...}`` becomes bytes.
    The result still goes through ``check_inputs``.
    """
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    if body.get("signature_name", SIGNATURE_KEY) != signature.name:
        raise ValueError(f"body asks for signature {body.get('signature_name')!r}, not {signature.name!r}")
    specs = signature.inputs
    if "instances" in body:
        rows = body["instances"]
        if rows and isinstance(rows[0], dict):
            named = {k: _from_json([row[k] for row in rows], specs[k].dtype) for k in specs}
        else:
            named = {k: _from_json(rows, s.dtype) for k, s in specs.items()}
    else:
        value = body["inputs"]
        named = {k: _from_json(value[k] if isinstance(value, dict) else value, s.dtype) for k, s in specs.items()}
    return check_inputs(named, signature)


def decode_grpc_request(request, signature: Signature) -> dict:
    """The inputs of a ``PredictRequest`` as the server reads them (``tf.make_ndarray``): ``{name: array}``.

    A TensorProto's dtype must be the signature's (TF Serving does not convert them): TypeError otherwise.
    """
    if request.model_spec.signature_name not in ("", signature.name):
        raise ValueError(f"request asks for signature {request.model_spec.signature_name!r}, not {signature.name!r}")
    for name, proto in request.inputs.items():
        spec = signature.inputs.get(name)
        if spec is not None and proto.dtype != spec.dtype.as_datatype_enum:
            got = tf.dtypes.as_dtype(proto.dtype).name
            raise TypeError(f"input {name!r} is a {got} TensorProto; the signature wants {spec_text(spec)}")
    return check_inputs({k: tf.make_ndarray(v) for k, v in request.inputs.items()}, signature)
