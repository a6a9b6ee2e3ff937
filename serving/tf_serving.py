"""TF Serving's files for an exported SavedModel: ``models.config`` and the warm-up requests.

* ``models_config`` / ``write_models_config``: the text proto that ``tensorflow_model_server
  --model_config_file=...`` reads, one ``config`` entry per model (``name``, ``base_path`` as the server sees
  it, ``model_platform: "tensorflow"``). One model needs no file (``MODEL_NAME`` and ``/models/NAME`` do);
  several models in one server do.
* ``write_warmup_requests``: ``<version>/assets.extra/tf_serving_warmup_requests``, a TFRecord file of
  ``PredictionLog`` protos (each a ``PredictRequest``) that TF Serving runs when it loads the version, before
  it answers, so the first real request does not pay for graph tracing and allocation. At most
  ``MAX_WARMUP_RECORDS`` (TF Serving reads no more). ``read_warmup_requests`` reads the file back.

Example (``tf_selopt.deploy.export.export_saved_model(model, "serving_models", "mnist_cnn", version=1)`` first)::

    write_warmup_requests("serving_models/mnist_cnn/1", x_test[:8], "mnist_cnn", batch_size=1)
    write_models_config("serving_models/models.config", {"mnist_cnn": "/models/mnist_cnn"})

Needs the ``[serving]`` extra (``tensorflow-serving-api``).
"""

from __future__ import annotations

import os

import tensorflow as tf

from serving.client import Client
from serving.signature import SIGNATURE_KEY, check_inputs, load_signature

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit on warm-up records per model version
MODEL_PLATFORM = "tensorflow"


def models_config(models: dict) -> str:
    """The ``models.config`` text proto (``ModelServerConfig`` with a ``model_config_list``) of ``models``.

    ``models``: model name -> base path **as the server sees it** (e.g. ``/models/mnist_cnn`` inside the
    container), which holds the ``<version>/`` directories. ValueError for an empty mapping, a name that is
    empty or holds ``/``, or a base path that is not an absolute path.
    """
    from google.protobuf import text_format  # noqa: PLC0415
    from tensorflow_serving.config import model_server_config_pb2  # noqa: PLC0415  (the [serving] extra)

    if not isinstance(models, dict) or not models:
        raise ValueError(f"models must be a non-empty dict of model name -> base path, got {models!r}")
    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in models.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"models: a model name must be a non-empty string without '/', got {name!r}")
        if not isinstance(base_path, (str, os.PathLike)) or not os.path.isabs(os.fspath(base_path)):
            raise ValueError(
                f"models[{name!r}]: base path must be an absolute path as the server sees it "
                f"(e.g. '/models/{name}'), got {base_path!r}"
            )
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = os.fspath(base_path)
        entry.model_platform = MODEL_PLATFORM
    return text_format.MessageToString(config)


def _write_atomically(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_target(path, overwrite) -> str:
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False, got {overwrite!r}")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{path!r} exists; pass overwrite=True to replace it")
    return path


def write_models_config(path, models: dict, overwrite: bool = False) -> str:
    """Write ``models_config(models)`` to ``path`` (an existing file only with ``overwrite=True``); the path."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path must be a file path, got {path!r}")
    path = _check_target(os.fspath(path), overwrite)
    text = models_config(models)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    _write_atomically(path, write)
    return path


def write_warmup_requests(
    path, inputs, model_name: str, signature_name: str = SIGNATURE_KEY, batch_size: int | None = None, overwrite=False
) -> str:
    """Write TF Serving's warm-up requests for the SavedModel served for ``path``; the file's path.

    Args:
        path: a version directory, or a base path (its highest version; see ``serving.signature.version_dir``).
        inputs: the examples to send (see ``serving.signature.check_inputs``: checked against the signature
            before anything is written).
        model_name: the name the server serves the model under (set in each request's ``model_spec``).
        signature_name: the signature the requests ask for.
        batch_size: rows per request (``None``: all of ``inputs`` in one request). One record per request.
        overwrite: replace an existing warm-up file.

    Raises:
        ValueError / TypeError: bad arguments, inputs that do not fit the signature, more than
            ``MAX_WARMUP_RECORDS`` requests, or an existing file without ``overwrite=True``.
    """
    from tensorflow_serving.apis import prediction_log_pb2  # noqa: PLC0415  (the [serving] extra)

    signature = load_signature(path, signature_name)
    client = Client(signature, model_name)
    arrays = check_inputs(inputs, signature)
    rows = len(next(iter(arrays.values())))
    if batch_size is None:
        batch_size = rows
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
    starts = range(0, rows, batch_size)
    if not 1 <= len(starts) <= MAX_WARMUP_RECORDS:
        raise ValueError(
            f"inputs give {len(starts)} warm-up requests of batch_size {batch_size}; TF Serving reads 1 to "
            f"{MAX_WARMUP_RECORDS}"
        )
    target = _check_target(os.path.join(signature.path, WARMUP_FILE), overwrite)
    logs = []
    for start in starts:
        request = client.grpc_request({k: a[start : start + batch_size] for k, a in arrays.items()})
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    os.makedirs(os.path.dirname(target), exist_ok=True)

    def write(tmp):
        with tf.io.TFRecordWriter(tmp) as writer:
            for log in logs:
                writer.write(log.SerializeToString())

    _write_atomically(target, write)
    return target


def read_warmup_requests(path) -> list:
    """The ``PredictionLog`` protos of a warm-up file (``path``: the file, or the version directory holding it)."""
    from tensorflow_serving.apis import prediction_log_pb2  # noqa: PLC0415  (the [serving] extra)

    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, WARMUP_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"path: no warm-up file at {path!r}")
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
