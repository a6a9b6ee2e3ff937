"""A SavedModel signature's inputs and outputs, and the check every request to it goes through.

TF Serving serves ``<base_path>/<version>/`` (the highest integer version by default), the layout
``tf_selopt.deploy.export.export_saved_model`` writes. ``load_signature`` reads one signature of such a
directory; ``check_inputs`` turns a request's inputs into arrays of the signature's dtypes and shapes, or
raises an error that names the input and the expected spec.

Example::

    sig = load_signature("serving_models/mnist_cnn")  # the highest version under it
    sig.inputs  # {'inputs': TensorSpec(shape=(None, 28, 28, 1), dtype=tf.float32, name='inputs')}
    arrays = check_inputs(x_test[:2], sig)  # {'inputs': float32 array of shape (2, 28, 28, 1)}
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

SIGNATURE_KEY = "serving_default"


@dataclasses.dataclass(frozen=True)
class Signature:
    """One signature of a SavedModel version directory.

    Attributes:
        path: the version directory (``<base_path>/<version>``).
        name: the signature key (TF Serving's ``signature_name``).
        inputs: input name -> ``tf.TensorSpec`` (``None`` for a free dimension, e.g. the batch).
        outputs: output name -> ``tf.TensorSpec``.
    """

    path: str
    name: str
    inputs: dict
    outputs: dict

    @property
    def version(self) -> int:
        """The version number (the directory's name)."""
        return int(os.path.basename(os.path.normpath(self.path)))


def _versions(base_path) -> list:
    return sorted(int(d) for d in os.listdir(base_path) if d.isdigit() and os.path.isdir(os.path.join(base_path, d)))


def version_dir(path) -> str:
    """The version directory that TF Serving serves for ``path``.

    ``path``: a version directory (holds ``saved_model.pb``) or a model's base path (``<base_path>/<version>/``
    subdirectories: the highest version, as TF Serving's default policy). ValueError when it is neither.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        raise ValueError(f"path must be a SavedModel directory or a base path of version directories, got {path!r}")
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        if not os.path.basename(os.path.normpath(path)).isdigit():
            raise ValueError(
                f"path: {path!r} is a SavedModel but not a version directory (TF Serving serves <base_path>/<version>/ "
                "with an integer version; export with tf_selopt.deploy.export.export_saved_model)"
            )
        return path
    versions = [v for v in _versions(path) if os.path.isfile(os.path.join(path, str(v), "saved_model.pb"))]
    if not versions:
        raise ValueError(f"path: {path!r} holds no <version>/saved_model.pb (integer version directories)")
    return os.path.join(path, str(versions[-1]))


def load_signature(path, signature_name: str = SIGNATURE_KEY) -> Signature:
    """Read signature ``signature_name`` of the SavedModel served for ``path`` (see ``version_dir``).

    Loads the SavedModel with ``tf.saved_model.load``. ValueError naming the available signatures when
    ``signature_name`` is not one of them.
    """
    directory = version_dir(path)
    loaded = tf.saved_model.load(directory)
    if not isinstance(signature_name, str) or signature_name not in loaded.signatures:
        raise ValueError(
            f"signature_name must be one of {sorted(loaded.signatures.keys())} (the signatures of {directory!r}), "
            f"got {signature_name!r}"
        )
    function = loaded.signatures[signature_name]
    inputs = dict(sorted(function.structured_input_signature[1].items()))
    outputs = dict(sorted(function.structured_outputs.items()))
    return Signature(path=directory, name=signature_name, inputs=inputs, outputs=outputs)


def spec_text(spec: tf.TensorSpec) -> str:
    """``float32 (None, 28, 28, 1)``: a spec as the error messages show it."""
    return f"{spec.dtype.name} {tuple(spec.shape.as_list())}"


def _signature_text(signature: Signature) -> str:
    return ", ".join(f"{name!r}: {spec_text(spec)}" for name, spec in signature.inputs.items())


def _as_named(inputs, signature: Signature) -> dict:
    if isinstance(inputs, dict):
        return inputs
    if len(signature.inputs) != 1:
        raise TypeError(
            f"inputs must be a dict of input name -> array: signature {signature.name!r} takes "
            f"{len(signature.inputs)} inputs ({_signature_text(signature)})"
        )
    return {next(iter(signature.inputs)): inputs}


def _cast(name, value, spec):
    """``value`` as an array of ``spec``'s dtype; TypeError when the conversion would change its values' kind."""
    want = spec.dtype
    try:
        array = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise ValueError(
            f"input {name!r}: not a rectangular array ({e}); the signature wants {spec_text(spec)}"
        ) from None
    kind = array.dtype.kind
    if want.is_floating:
        ok = kind in "fiu"
    elif want.is_integer:
        ok = kind in "iu"
    elif want.is_bool:
        ok = kind == "b"
    elif want == tf.string:
        ok = kind in "SUO" and all(isinstance(v, (str, bytes)) for v in array.flat)
    else:
        ok = False
    if not ok:
        raise TypeError(f"input {name!r} has dtype {array.dtype}; the signature wants {spec_text(spec)}")
    if want == tf.string:
        return np.array([v.encode() if isinstance(v, str) else v for v in array.flat], dtype=object).reshape(
            array.shape
        )
    cast = array.astype(want.as_numpy_dtype)
    if want.is_integer and not np.array_equal(cast, array):
        raise TypeError(f"input {name!r}: values out of range of {want.name}; the signature wants {spec_text(spec)}")
    return cast


def check_inputs(inputs, signature: Signature) -> dict:
    """Request inputs as arrays of the signature's dtypes: ``{input name: np.ndarray}``, in the signature's order.

    ``inputs``: a dict of input name -> array-like (nested lists, NumPy arrays, tensors), or one array-like when
    the signature has a single input. Integer values are accepted for float inputs (converted); floats for
    integer inputs are not. All inputs must have the same batch size (their first dimension).

    Raises (before anything is sent or written):
        ValueError: an input name the signature does not have or one it needs and is missing, a shape that
            does not fit the spec, or different batch sizes; the message names the input and the expected spec.
        TypeError: a dtype that does not fit, e.g. floats for an int32 input.
    """
    named = _as_named(inputs, signature)
    unknown = sorted(set(named) - set(signature.inputs), key=str)
    missing = sorted(set(signature.inputs) - set(named))
    if unknown or missing:
        raise ValueError(
            f"inputs: unknown {unknown}, missing {missing}; signature {signature.name!r} takes "
            f"{_signature_text(signature)}"
        )
    arrays = {}
    for name, spec in signature.inputs.items():
        array = _cast(name, named[name], spec)
        if array.ndim != spec.shape.rank or not spec.shape.is_compatible_with(array.shape):
            raise ValueError(f"input {name!r} has shape {array.shape}; the signature wants {spec_text(spec)}")
        arrays[name] = array
    batches = {name: a.shape[0] for name, a in arrays.items() if a.ndim}
    if len(set(batches.values())) > 1:
        raise ValueError(f"inputs must share their batch size (first dimension), got {batches}")
    return arrays
