"""Every private TFLite API tf_selopt relies on, in one place (checked against TensorFlow 2.21.0).

TensorFlow ships the TFLite flatbuffer schema and a reader only under internal
module paths (``tensorflow.lite.python.schema_py_generated``,
``tensorflow.lite.tools.flatbuffer_utils``). ``tests/test_compat.py`` parses a
converted model with them and fails with "TensorFlow X.Y changed <name>: update
tf_selopt/deploy/_compat.py" when an upgrade changes one. Imported lazily: the
schema module is large and only ``export_tflite``'s zero count needs it.
"""

from __future__ import annotations

#: The TensorFlow version the module paths below were read from.
CHECKED_VERSION = "2.21.0"


def schema():
    """The TFLite flatbuffer schema (``tensorflow.lite.python.schema_py_generated``): ``TensorType``,
    ``BuiltinOperator``, ..."""
    from tensorflow.lite.python import schema_py_generated  # noqa: PLC0415

    return schema_py_generated


def read_model(content: bytes):
    """The ``ModelT`` object tree of a ``.tflite`` file's bytes (``flatbuffer_utils.read_model_from_bytearray``):
    ``subgraphs`` (``tensors``, ``operators``), ``buffers``, ``operatorCodes``."""
    from tensorflow.lite.tools import flatbuffer_utils  # noqa: PLC0415

    return flatbuffer_utils.read_model_from_bytearray(bytearray(content))
