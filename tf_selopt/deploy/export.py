"""Export a (pruned) model for serving: a TF Serving SavedModel or a TFLite file, each verified after writing.

Both functions accept Keras 3 models and tf_keras (Keras 2) models, e.g. the
result of tfmot's ``strip_pruning``. Models must be built, with one output (a
tensor, not a list or dict); Keras 3 models may have several inputs (a list of
Inputs, or a dict such as keras_hub's ``{"token_ids", "padding_mask",
"segment_ids"}``), tf_keras models one.

The serving signature is always ``serving_default`` with one output named
``"outputs"`` (``OUTPUT_NAME``). A model with one input takes it as
``"inputs"`` (``INPUT_NAME``); a model with several takes one tensor per input,
named as the model names them (a dict model's keys, else the Inputs' names;
``serving_input_specs``). Each input spec is the model's input with a free
batch dimension (other free dimensions, e.g. a sequence length, stay free). So
a TF Serving REST request is ``{"instances": [...]}`` or ``{"inputs": ...}``
(``{"instances": [{"token_ids": [...], ...}]}`` for named inputs) and the
answer carries ``"outputs"`` (``predictions`` for the row format); the TFLite
file has the same signature key and names (``get_signature_runner()(**named
arrays)``). ``sample_inputs`` and ``representative_data`` take what the model
takes: an array, or for several inputs a dict keyed by input name (or a list in
input order); wrong keys, a wrong count and (keras_hub) sequences longer than
the model's ``PositionEmbedding`` raise a ValueError naming the argument. TFLite
has no string or tokenizer ops: a string input, or a converter error naming
such ops (``tf.StaticRegexReplace``, ...), raises a ValueError that says to
export the model behind its preprocessor and feed token ids.

Nothing half-written: an artefact is written into a temporary directory or
file next to the target, reloaded and checked there, and only then moved into
place (``os.replace``, ``tf_selopt.deploy._files``). Argument errors raise ``ValueError`` naming the argument
before anything is written; a failed check raises ``ExportVerificationError``
and leaves no files behind (directories created for the target are removed
again when empty).

Verification (``ExportReport``): the artefact is reloaded
(``tf.saved_model.load`` and its ``serving_default`` signature; TFLite with
``ai_edge_litert``'s interpreter when that package is importable, else
``tf.lite.Interpreter``) and run on sample inputs: ``sample_inputs`` if given,
else the first batch of ``representative_data`` (TFLite), else
``default_sample_inputs``: 8 rows, float inputs standard normal with seed 0;
integer inputs read by a ``keras.layers.Embedding`` (also keras_hub's
``ReversibleEmbedding`` and ``TokenAndPositionEmbedding``) uniform over its
vocabulary ``[0, input_dim)``, integer inputs named ``*mask*`` padding masks
(ones then zeros), other integer inputs {0, 1}: their range is unknown, so the
export warns and sets ``check_exercised = False``; free sequence dimensions
take the model's maximum length (keras_hub ``PositionEmbedding``), else
``sample_inputs`` is required. ``ExportReport.input_ranges`` says how each
input was drawn. The largest absolute difference from the
Keras model (``model(x, training=False)``) must stay within ``atol``: by default
``FLOAT_ATOL = 1e-5`` for the SavedModel (the same TensorFlow kernels);
``FLOAT_ATOL + FLOAT_RTOL * max|output|`` (``FLOAT_RTOL = 1e-5``) for TFLite ``float32`` and
``sparse_float32``, whose kernels round in another order (trained logits of ~20 differ by ~1.2e-5, logits of
~3,000 by ~1.5e-3); for ``dynamic_int8``, ``int8`` and ``sparse_int8`` it is ``INT8_RTOL = 0.1`` times the largest
``|output|`` of the Keras model on those inputs (a coarse bound that catches a
broken conversion; it says nothing about accuracy, measure that on your data).

A check on inputs that do not exercise the model proves nothing: an untrained
``keras.applications.MobileNetV2(weights=None)`` gives the same output (to
1e-8) for every input in inference mode, so any artefact returning that
constant would pass. The check therefore needs the Keras outputs to vary
across its inputs by more than ``2 * atol`` in some output (then no constant
passes). Without ``sample_inputs``/``representative_data`` the inputs are
drawn from ``SAMPLE_DISTRIBUTIONS`` in order (``standard_normal``, then
``uniform(0,1)``, then ``uniform(0,255)``, all seed 0, for the float inputs;
integer inputs as above) and the first that exercises the model is used. When none does, or
the given inputs do not, the export still compares and writes, but warns
(``UserWarning``) that the check could not run and sets
``ExportReport.check_exercised = False``: pass inputs from your data.

Zeros: ``model_zeros`` counts exact zeros in the model's floating-point weights;
``zeros`` counts them in the artefact. SavedModel: in the reloaded variables.
TFLite: in the constant tensors of the file (those with a data buffer, read
with the flatbuffer schema shipped with TensorFlow), floating and int8 ones
only (not int32 shape constants). A sparse tensor (``sparse_float32``) stores
only its non-zeros: its zeros are the implicit ones (dense size minus stored
values) plus any stored zeros. int8 tensors count values equal to their zero
point (0 for weights). The converter drops or folds some tensors (all-zero
biases are dropped, for instance), so ``zeros`` may differ from ``model_zeros``
by such tensors. The interpreter cannot show a sparse tensor's dense form
before it runs. Most sparse weights are densified at load (a ``DENSIFY`` op per
tensor in the file, ``ExportReport.densify_ops``): they save file size, not
memory or time. The converter keeps a weight sparse at run time where the op
has a sparse kernel and finds it worth it (seen: ``FULLY_CONNECTED`` kernels of
LeNet-300-100 and the small CNN at 95% global sparsity, not at 90%); those
``sparse_tensors - densify_ops`` tensors save memory and time as well. Weights
pruned in blocks along the input axis (``tf_selopt.prune(..., block_size=(1, 4))``
for ``sparse_float32``, ``(1, 16)`` for ``sparse_int8``) stay sparse: no DENSIFY
op (checked in ``tests/test_structured_pruning.py``).

Examples:
    >>> import keras, tf_selopt, tempfile
    >>> from tf_selopt.deploy.export import export_saved_model, export_tflite
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> base = tempfile.mkdtemp()
    >>> report = export_saved_model(model, base, "demo", 1)
    >>> report.path.endswith("demo/1"), report.max_abs_diff <= 1e-5
    (True, True)
    >>> export_tflite(model, base + "/demo.tflite", mode="sparse_float32").mode
    'sparse_float32'
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import sys
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_selopt.core.checks import is_int
from tf_selopt.deploy import _compat, _files
from tf_selopt.keras import inputs as inputs_lib

__all__ = [
    "export_saved_model",
    "export_tflite",
    "ExportReport",
    "ExportVerificationError",
    "default_sample_inputs",
    "serving_input_spec",
    "serving_input_specs",
    "tflite_runtime",
    "TFLITE_RUNTIMES",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "SIGNATURE_KEY",
    "TFLITE_MODES",
    "INT8_MODES",
    "FLOAT_ATOL",
    "FLOAT_RTOL",
    "INT8_RTOL",
    "SAMPLE_DISTRIBUTIONS",
]

INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"
SIGNATURE_KEY = "serving_default"
TFLITE_MODES = ("float32", "sparse_float32", "dynamic_int8", "int8", "sparse_int8")
INT8_MODES = ("int8", "sparse_int8")
TFLITE_RUNTIMES = ("auto", "ai_edge_litert", "tf.lite")
FLOAT_ATOL = 1e-5
FLOAT_RTOL = 1e-5
INT8_RTOL = 0.1
SAMPLE_DISTRIBUTIONS = ("standard_normal", "uniform(0,1)", "uniform(0,255)")
_DEFAULT_ROWS = 8


class ExportVerificationError(RuntimeError):
    """The reloaded artefact does not reproduce the Keras model within the tolerance (nothing was kept)."""


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how its check went.

    ``path``: the SavedModel version directory or the ``.tflite`` file;
    ``size_bytes``: bytes on disk (all files of a SavedModel); ``gzip_bytes``:
    size after gzip (level 9; for a SavedModel the sum over its files);
    ``max_abs_diff``: largest ``|artefact - keras|`` on the sample inputs,
    ``atol``: the bound it had to meet; ``zeros`` / ``weights``: exact zeros /
    all values in the artefact's weights, ``model_zeros``: exact zeros in the
    model's floating weights (see the module docstring for what is counted);
    ``runtime``: what ran the check; ``sparse_tensors``: TFLite constant
    tensors stored sparse, ``densify_ops``: TFLite ``DENSIFY`` ops (sparse
    weights densified at load); both 0 for a SavedModel.
    ``sample_source``: where the check's inputs came from (``"given"``:
    ``sample_inputs`` or ``representative_data``, else one of
    ``SAMPLE_DISTRIBUTIONS``); ``check_exercised``: False when the Keras
    model's outputs did not vary across those inputs by more than ``2 * atol``,
    so a constant artefact would have passed too: the check could not run (a
    warning says so; see the module docstring), also when an integer input's
    id range is unknown. ``input_ranges``: ``{serving input name: how the check's
    inputs were drawn}`` (``"given"``, ``"floats"``, ``"ids in [0, 100)
    (token_embedding.input_dim)"``, ``"padding masks: ones then zeros"``,
    ``"unknown range: ..."``). ``batch_size``: the TFLite file's fixed batch
    dimension, None when free.
    """

    path: str
    format: str
    mode: str
    size_bytes: int
    gzip_bytes: int
    max_abs_diff: float
    atol: float
    zeros: int
    weights: int
    model_zeros: int
    runtime: str
    sparse_tensors: int = 0
    densify_ops: int = 0
    check_exercised: bool = True
    sample_source: str = "given"
    batch_size: int | None = None
    input_ranges: dict = dataclasses.field(default_factory=dict, hash=False)  # compared, not hashed (a dict)


# ---------------------------------------------------------------- model inspection


def _is_tf_keras(model) -> bool:
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(model, tf_keras.Model)


@dataclasses.dataclass(frozen=True)
class _Signature:
    """The serving inputs: ``specs`` (serving name -> ``tf.TensorSpec`` with a free batch, in the model's input
    order), ``kind`` (``"single"``: one input served as ``INPUT_NAME``, ``"list"`` or ``"dict"``), ``limit``: the
    longest sequence (``(length, source)``, ``inputs_lib.max_sequence_length``) or None; ``model_names`` and
    ``model_kind``: the model's own input names and structure (a one-input model may take a one-key dict)."""

    specs: dict
    kind: str
    limit: tuple | None = None
    model_names: tuple = ()
    model_kind: str = "single"

    @property
    def names(self) -> tuple:
        return tuple(self.specs)

    def keras(self, feeds: dict):
        """``{serving name: array}`` as the model takes it."""
        return self.to_model({n: tf.constant(v) for n, v in feeds.items()})

    def to_model(self, tensors: dict):
        """``{serving name: tensor}`` in the model's structure: a tensor, a list or a dict."""
        values = [tensors[n] for n in self.names]
        if self.model_kind == "dict":
            return dict(zip(self.model_names, values))
        return values if self.model_kind == "list" else values[0]

    def fixed_batch(self, batch_size) -> dict:
        if batch_size is None:
            return self.specs
        return {n: tf.TensorSpec((batch_size,) + tuple(s.shape[1:]), s.dtype, name=n) for n, s in self.specs.items()}

    def feeds(self, x, argument) -> dict:
        """User inputs (an array; a dict keyed by input name or a list in input order for several inputs) as
        ``{serving name: array}`` of the specs' dtypes; ValueError naming ``argument`` when they do not fit."""
        if self.kind == "single":
            if isinstance(x, dict) and len(x) == 1:
                x = next(iter(x.values()))
            feeds = {INPUT_NAME: np.asarray(x)}
        else:
            named = inputs_lib.ModelInputs(
                self.kind, tuple(inputs_lib.ModelInput(n, tuple(s.shape), s.dtype.name) for n, s in self.specs.items())
            )
            feeds = named.feeds(x, argument)
        for name, spec in self.specs.items():
            v = feeds[name]
            bad = v.ndim != len(spec.shape) or not tf.TensorShape(spec.shape[1:]).is_compatible_with(v.shape[1:])
            if bad or not len(v):
                label = f"`{argument}`" if self.kind == "single" else f"`{argument}`: input {name!r}"
                raise ValueError(f"{label} must be a non-empty batch of shape {spec.shape}, got {v.shape}")
            if spec.dtype != tf.string:
                feeds[name] = v.astype(spec.dtype.as_numpy_dtype)
        inputs_lib.check_sequence_length(
            inputs_lib.ModelInputs(
                self.kind, tuple(inputs_lib.ModelInput(n, tuple(s.shape), "int32") for n, s in self.specs.items())
            ),
            self.limit,
            {n: v.shape for n, v in feeds.items()},
            argument,
        )
        return feeds


def _signature(model) -> _Signature:
    """The model's serving inputs; ValueError('model ...') if they cannot be derived."""
    if not (isinstance(model, keras.Model) or _is_tf_keras(model)):
        raise ValueError(f"model must be a Keras 3 or tf_keras Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError("model is not built: build it (call it on data or give it an Input) before exporting")
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(
            "model has no known input (a subclassed model called on data): export a functional or "
            "Sequential model with an Input"
        )
    try:
        outputs = model.outputs
    except AttributeError:
        outputs = None
    if outputs is not None and len(outputs) != 1:
        raise ValueError(f"model must have exactly one output, got {len(outputs)}")
    if _is_tf_keras(model):
        if len(inputs) != 1:
            raise ValueError(f"model: a tf_keras model must have exactly one input, got {len(inputs)}")
        x = inputs[0]
        return _Signature({INPUT_NAME: tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype, name=INPUT_NAME)}, "single")
    described = inputs_lib.model_inputs(model)
    limit = inputs_lib.max_sequence_length(model)
    if len(described.inputs) == 1:
        x = described.inputs[0]
        specs = {INPUT_NAME: tf.TensorSpec((None,) + x.shape[1:], tf.as_dtype(x.dtype), name=INPUT_NAME)}
    else:
        specs = {
            i.name: tf.TensorSpec((None,) + i.shape[1:], tf.as_dtype(i.dtype), name=i.name) for i in described.inputs
        }
    kind = "single" if len(specs) == 1 else described.kind
    return _Signature(specs, kind, limit, described.names, described.kind)


def serving_input_specs(model) -> dict:
    """The serving inputs ``{name: tf.TensorSpec}`` (free batch dimension): ``{"inputs": spec}`` for a model
    with one input, else one entry per input named as the model's inputs (a dict model's keys, else the Input
    names), in the model's order. ValueError('model ...') if they cannot be derived.

    Example:
        >>> import keras
        >>> ids, mask = keras.Input((4,), dtype="int32"), keras.Input((4,), dtype="int32")
        >>> h = keras.layers.Embedding(9, 2)(ids) * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
        >>> model = keras.Model({"ids": ids, "mask": mask}, h)
        >>> {name: spec.shape.as_list() for name, spec in serving_input_specs(model).items()}
        {'ids': [None, 4], 'mask': [None, 4]}
    """
    return dict(_signature(model).specs)


def serving_input_spec(model) -> tf.TensorSpec:
    """The serving input spec of a one-input model (free batch dimension); ValueError('model ...') if it cannot
    be derived or the model has several inputs (see ``serving_input_specs``)."""
    specs = serving_input_specs(model)
    if len(specs) != 1:
        raise ValueError(f"model must have exactly one input, got {len(specs)}: use serving_input_specs")
    return next(iter(specs.values()))


def _check_defaults_possible(signature):
    """Raise ('sample_inputs is required ...') when the default check inputs cannot be drawn."""
    for name, spec in signature.specs.items():
        if not (spec.dtype.is_floating or spec.dtype.is_integer or spec.dtype.is_bool):
            raise ValueError(f"sample_inputs is required for input {name!r} of dtype {spec.dtype.name}")
        if any(d is None for d in spec.shape[1:]) and (signature.limit is None or len(spec.shape) < 2):
            raise ValueError(f"sample_inputs is required: the input shape {spec.shape} has free dimensions")


_STRING_WAY_OUT = (
    "TFLite's builtin ops have no string or tokenizer ops: export the model behind its preprocessor, the part "
    "that takes token ids (for a keras_hub task: the task built with preprocessor=None, or "
    "keras.Model(task.inputs, task.outputs)), and tokenize in the app (feed token ids; keras_hub's tokenizer "
    "or preprocessor runs outside the model)"
)
#: Converter error fragments of string and tokenizer ops (e.g. TextVectorization's 'tf.StaticRegexReplace').
_STRING_OPS = ("String", "Regex", "Lookup", "Tokeniz", "Wordpiece", "SentencePiece", "Unicode")


def _refuse_strings(signature):
    strings = [n for n, s in signature.specs.items() if s.dtype == tf.string]
    if strings:
        raise ValueError(f"model: the inputs {strings} are strings; {_STRING_WAY_OUT}")


def _serve_fn(model, signature):
    def serve(inputs):
        if signature.kind == "single":  # one tensor, as ``loaded.serving_default(x)`` and TFSMLayer call it
            inputs = {INPUT_NAME: inputs}
        y = model(signature.to_model(inputs), training=False)
        if isinstance(y, (list, tuple, dict)):
            raise ValueError("model must have exactly one output tensor")
        return {OUTPUT_NAME: y}

    return serve


def _is_mask(name) -> bool:
    return "mask" in name.lower()


def default_sample_inputs(spec, rows: int = _DEFAULT_ROWS, distribution="standard_normal", ranges=None, length=None):
    """``rows`` deterministic inputs for ``spec`` (seed 0), an array, or a dict of arrays for a dict of specs.

    Floats come from ``distribution`` (one of ``SAMPLE_DISTRIBUTIONS``). Integer
    inputs: ids uniform in ``[0, high)`` where ``ranges`` (``{name: high}``)
    gives ``high``; an input whose name contains ``"mask"`` gets padding masks
    (each row ones then zeros, at least one 1); otherwise {0, 1}. Bool inputs:
    {False, True}. ``length`` fills free non-batch dimensions (e.g. a keras_hub
    model's maximum sequence length); without it they raise ("sample_inputs is
    required").

    Example:
        >>> import tensorflow as tf
        >>> x = default_sample_inputs({"ids": tf.TensorSpec((None, 6), tf.int32)}, ranges={"ids": 50})
        >>> x["ids"].shape, bool(x["ids"].max() < 50)
        ((8, 6), True)
    """
    if distribution not in SAMPLE_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {SAMPLE_DISTRIBUTIONS}, got {distribution!r}")
    if isinstance(spec, dict):
        return {
            name: _sample(s, rows, distribution, (ranges or {}).get(name), _is_mask(name), length, i)
            for i, (name, s) in enumerate(spec.items())
        }
    return _sample(spec, rows, distribution, None, False, length, 0)


def _sample(spec, rows, distribution, high, mask, length, index) -> np.ndarray:
    dims = tuple(spec.shape[1:])
    if any(d is None for d in dims):
        if length is None:
            raise ValueError(f"sample_inputs is required: the input shape {spec.shape} has free dimensions")
        dims = tuple(length if d is None else d for d in dims)
    shape = (rows,) + dims
    rng = np.random.default_rng(0 if index == 0 else [0, index])
    if spec.dtype.is_floating:
        if distribution == "standard_normal":
            x = rng.standard_normal(shape)
        else:
            x = rng.uniform(0.0, 1.0 if distribution == "uniform(0,1)" else 255.0, shape)
        return x.astype(spec.dtype.as_numpy_dtype)
    if spec.dtype.is_integer and mask and len(shape) >= 2:
        lengths = rng.integers(1, shape[1] + 1, rows)
        x = np.arange(shape[1])[None, :] < lengths[:, None]
        return np.broadcast_to(x.reshape((rows, shape[1]) + (1,) * (len(shape) - 2)), shape).astype(
            spec.dtype.as_numpy_dtype
        )
    if spec.dtype.is_integer or spec.dtype.is_bool:
        return rng.integers(0, 2 if high is None else high, shape).astype(spec.dtype.as_numpy_dtype)
    raise ValueError(f"sample_inputs is required for input dtype {spec.dtype.name}")


def _keras_outputs(model, signature, feeds) -> np.ndarray:
    return np.asarray(model(signature.keras(feeds), training=False), dtype=np.float64)


def _exercised(want, bound) -> bool:
    """True when no constant output is within ``bound`` of every row of ``want`` (the check can fail)."""
    return len(want) > 1 and float(np.max(np.ptp(want.reshape(len(want), -1), axis=0))) > 2 * bound


def _integer_ranges(model, signature) -> tuple[dict, dict]:
    """``(ranges, notes)``: ``{name: high}`` of the integer inputs with a known id range and
    ``{name: how its default inputs are drawn}`` for every input."""
    found = {} if _is_tf_keras(model) else inputs_lib.integer_ranges(model)
    ranges, notes = {}, {}
    for (name, spec), model_name in zip(signature.specs.items(), signature.model_names or signature.names):
        if spec.dtype.is_floating:
            notes[name] = "floats"
        elif spec.dtype.is_bool:
            notes[name] = "bools {False, True}"
        elif model_name in found:
            high, source = found[model_name]
            ranges[name] = high
            notes[name] = f"ids in [0, {high}) ({source})"
        elif _is_mask(name):
            notes[name] = "padding masks: ones then zeros"
        else:
            notes[name] = "unknown range: integers {0, 1} (no Embedding reads this input)"
    return ranges, notes


def _check_inputs(model, signature, given, bound_for) -> tuple[dict, str, bool, dict]:
    """The check's inputs ``(feeds, source, exercised, notes)``: ``given`` if not None, else the first of
    ``SAMPLE_DISTRIBUTIONS`` whose Keras outputs vary by more than ``2 * bound_for(outputs)`` (the
    distribution applies to float inputs; integer inputs as ``default_sample_inputs`` draws them).
    Warns when the chosen inputs do not exercise the model, or an integer input's range is unknown."""
    if given is not None:
        candidates, notes, unknown = [("given", given)], {n: "given" for n in signature.names}, []
    else:
        ranges, notes = _integer_ranges(model, signature)
        unknown = [n for n, note in notes.items() if note.startswith("unknown")]
        length = None if signature.limit is None else signature.limit[0]
        floating = any(s.dtype.is_floating for s in signature.specs.values())
        names = SAMPLE_DISTRIBUTIONS if floating else SAMPLE_DISTRIBUTIONS[:1]
        candidates = [
            (
                d if floating else "integers",
                default_sample_inputs(signature.specs, distribution=d, ranges=ranges, length=length),
            )
            for d in names
        ]
    spread, chosen = 0.0, None
    for source, feeds in candidates:
        want = _keras_outputs(model, signature, feeds)
        bound = bound_for(want)
        spread = max(spread, float(np.max(np.ptp(want.reshape(len(want), -1), axis=0))) if len(want) else 0.0)
        if _exercised(want, bound):
            chosen = (feeds, source)
            break
    if chosen is None:
        tried = ", ".join(name for name, _ in candidates)
        warnings.warn(
            f"export check could not run: the Keras model's outputs do not vary across the check's inputs "
            f"({tried}: largest spread {spread:.3g} <= 2 * atol = {2 * bound:.3g}), so an artefact returning a "
            f"constant would pass as well; pass sample_inputs from your data that give different outputs "
            f"(ExportReport.check_exercised is False)",
            UserWarning,
            stacklevel=3,
        )
        source, feeds = candidates[0]
        return feeds, source, False, notes
    if unknown:
        warnings.warn(
            f"export check covers only part of the model: the id range of the integer inputs {unknown} is unknown "
            f"(no Embedding reads them), so the check fed them {{0, 1}}; pass sample_inputs from your data "
            f"(ExportReport.check_exercised is False, ExportReport.input_ranges says how each input was drawn)",
            UserWarning,
            stacklevel=3,
        )
    return chosen[0], chosen[1], not unknown, notes


def _model_zeros(model) -> int:
    return sum(int(np.count_nonzero(np.asarray(w) == 0)) for w in model.weights if tf.as_dtype(w.dtype).is_floating)


# ---------------------------------------------------------------- files


def _tree_sizes(path) -> tuple[int, int]:
    files = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in sorted(fs)]
    size = gz = 0
    for f in files:
        data = open(f, "rb").read()
        size += len(data)
        gz += len(gzip.compress(data, compresslevel=9, mtime=0))
    return size, gz


# ---------------------------------------------------------------- SavedModel


def _write_saved_model(model, signature, directory, batch_size=None):
    """``serving_default`` takes one tensor per serving name (``signature.specs``, batch ``batch_size``)."""
    serve = _serve_fn(model, signature)
    specs = signature.fixed_batch(batch_size)
    specs = [specs[INPUT_NAME]] if signature.kind == "single" else [specs]
    if _is_tf_keras(model):
        fn = tf.function(serve, input_signature=specs)
        tf.saved_model.save(model, directory, signatures={SIGNATURE_KEY: fn.get_concrete_function()})
    else:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_KEY, serve, input_signature=specs)
        archive.write_out(directory, verbose=False)


def _verify_saved_model(directory, model, signature, feeds, atol) -> tuple[float, int, int]:
    loaded = tf.saved_model.load(directory)
    serving = loaded.signatures[SIGNATURE_KEY]
    got = serving(**{n: tf.constant(v) for n, v in feeds.items()})[OUTPUT_NAME].numpy()
    diff = float(np.max(np.abs(got.astype(np.float64) - _keras_outputs(model, signature, feeds))))
    if not diff <= atol:
        raise ExportVerificationError(f"SavedModel output differs from the Keras model by {diff:.3g} > atol={atol:g}")
    seen, zeros, total = set(), 0, 0
    for v in loaded.variables:
        if id(v) in seen or not v.dtype.is_floating:
            continue
        seen.add(id(v))
        value = v.numpy()
        zeros += int(np.count_nonzero(value == 0))
        total += value.size
    return diff, zeros, total


def export_saved_model(
    model, base_dir, model_name, version, overwrite=False, sample_inputs=None, atol=FLOAT_ATOL
) -> ExportReport:
    """Write a TF Serving SavedModel to ``<base_dir>/<model_name>/<version>/`` and verify it.

    Signature ``serving_default``: input ``"inputs"`` (the model's input dtype
    and shape, free batch), or one named input per model input for a
    multi-input model (``serving_input_specs``), output ``"outputs"``. Keras 3 models go through
    ``keras.export.ExportArchive``, tf_keras models through
    ``tf.saved_model.save`` with that signature. ``version``: a non-negative
    integer (TF Serving serves the highest). An existing non-empty version
    directory is refused unless ``overwrite=True``. Returns an ``ExportReport``.
    Raises ValueError for bad arguments (before writing) and
    ExportVerificationError when the reloaded signature differs from
    ``model(x, training=False)`` by more than ``atol`` (nothing is kept).
    """
    if not isinstance(base_dir, (str, os.PathLike)) or not os.fspath(base_dir):
        raise ValueError(f"base_dir must be a path, got {base_dir!r}")
    if (
        not isinstance(model_name, str)
        or not model_name
        or model_name in (".", "..")
        or "/" in model_name
        or (os.sep in model_name)
        or (os.altsep and os.altsep in model_name)
    ):
        raise ValueError(f"model_name must be a non-empty name without path separators, got {model_name!r}")
    if not is_int(version) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    _files.check_overwrite(overwrite)
    if not (isinstance(atol, (int, float)) and not isinstance(atol, bool) and atol >= 0):
        raise ValueError(f"atol must be a non-negative number, got {atol!r}")
    signature = _signature(model)
    given = None if sample_inputs is None else signature.feeds(sample_inputs, "sample_inputs")
    if given is None:
        _check_defaults_possible(signature)
    base_dir = os.fspath(base_dir)
    _files.check_directory(base_dir, "base_dir")
    parent = os.path.join(base_dir, model_name)
    target = os.path.join(parent, str(int(version)))
    _files.check_directory(target, "version:", overwrite, f"version {version} exists and is not empty at {target!r}")

    x, source, exercised, notes = _check_inputs(model, signature, given, lambda want: atol)
    with _files.staging(target) as tmp:
        _write_saved_model(model, signature, tmp)
        diff, zeros, total = _verify_saved_model(tmp, model, signature, x, atol)
        size, gz = _tree_sizes(tmp)
        _files.replace(tmp, target)
    return ExportReport(
        path=target,
        format="saved_model",
        mode="float32",
        size_bytes=size,
        gzip_bytes=gz,
        max_abs_diff=diff,
        atol=float(atol),
        zeros=zeros,
        weights=total,
        model_zeros=_model_zeros(model),
        runtime=f"tf.saved_model.load (tensorflow {tf.__version__})",
        check_exercised=exercised,
        sample_source=source,
        input_ranges=notes,
    )


# ---------------------------------------------------------------- TFLite


def _batches(representative_data, signature) -> list:
    """Representative data as single-row feeds ``{serving name: array}`` (a list): inputs (an array of rows, or
    for several inputs a dict keyed by input name / a list of arrays) or an iterable of such batches."""
    one = signature.kind == "single"
    first_spec = next(iter(signature.specs.values()))
    if (
        isinstance(representative_data, (np.ndarray, tf.Tensor, dict))
        or (not one and isinstance(representative_data, (list, tuple)) and _all_arrays(representative_data))
        or (
            one
            and isinstance(representative_data, (list, tuple))
            and representative_data
            and np.ndim(representative_data[0]) == len(first_spec.shape) - 1
        )
    ):
        chunks = [representative_data]
    else:
        try:
            chunks = list(representative_data)
        except TypeError:
            raise ValueError("representative_data must be an array of inputs or an iterable of input batches") from None
    rows = []
    for c in chunks:
        feeds = signature.feeds(c, "representative_data")
        count = len(next(iter(feeds.values())))
        rows.extend({n: v[i : i + 1] for n, v in feeds.items()} for i in range(count))
    if not rows:
        raise ValueError("representative_data is empty")
    return rows


def _all_arrays(items) -> bool:
    return bool(items) and all(isinstance(i, (np.ndarray, tf.Tensor)) for i in items)


def _concat(rows) -> dict:
    return {n: np.concatenate([r[n] for r in rows]) for n in rows[0]}


def _cyclic_batches(feeds, batch_size):
    """``(batch, n)`` pairs covering the rows of ``feeds`` in order, each ``batch_size`` rows (the last one
    filled up cyclically from the start); ``n``: how many of its rows are new."""
    count = len(next(iter(feeds.values())))
    if batch_size is None:
        return [(feeds, count)]
    return [
        ({name: v[np.arange(i, i + batch_size) % count] for name, v in feeds.items()}, min(batch_size, count - i))
        for i in range(0, count, batch_size)
    ]


def _run_tflite(runner, feeds, batch_size) -> np.ndarray:
    outputs = [runner(**b)[OUTPUT_NAME][:n] for b, n in _cyclic_batches(feeds, batch_size)]
    return np.concatenate(outputs).astype(np.float64)


_NEEDS_STATIC_BATCH = "Lowering tensor list ops is failed"  # the converter's message for LSTM/GRU with a free batch


def _convert(saved_model_dir, mode, rows, batch_size=None) -> bytes:
    try:
        return _convert_once(saved_model_dir, mode, rows, batch_size)
    except Exception as error:  # tf.lite's ConverterError lives in a private module
        if batch_size is None and _NEEDS_STATIC_BATCH in str(error):
            raise ValueError(
                "batch_size: the TFLite converter cannot lower this model's tensor-list ops (LSTM, GRU, RNN loops) "
                "with a free batch dimension; pass batch_size=1 (or your serving batch) to export_tflite for a file "
                "with a fixed batch that runs on TFLite's builtin ops (the converter's own advice, SELECT_TF_OPS, "
                "needs the Flex delegate, which the LiteRT and tf.lite interpreters do not include)"
            ) from error
        ops = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(error))))
        strings = [op for op in ops if any(part in op for part in _STRING_OPS)]
        if strings:
            raise ValueError(f"model: the graph has string/tokenizer ops {strings}; {_STRING_WAY_OUT}") from error
        raise


def _convert_once(saved_model_dir, mode, rows, batch_size) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE_KEY])
    if mode == "sparse_float32":
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    elif mode == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode in INT8_MODES:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "sparse_int8":
            converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        data = _concat(rows)
        single = list(data) == [INPUT_NAME]
        converter.representative_dataset = lambda: (
            [b[INPUT_NAME]] if single else b for b, _ in _cyclic_batches(data, batch_size or 1)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def tflite_runtime(name: str = "auto") -> tuple:
    """The TFLite runtime ``(Interpreter class, OpResolverType enum, description)``.

    ``name``: ``"ai_edge_litert"`` (the LiteRT package), ``"tf.lite"``
    (``tf.lite.Interpreter``, deprecated in favour of LiteRT) or ``"auto"``
    (LiteRT when importable, else ``tf.lite``). ValueError if ``name`` is not one
    of ``TFLITE_RUNTIMES`` or LiteRT is asked for and not installed. Both
    interpreters take ``model_path``/``model_content``, ``num_threads`` and
    ``experimental_op_resolver_type`` (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``:
    XNNPack off).
    """
    if name not in TFLITE_RUNTIMES:
        raise ValueError(f"runtime must be one of {TFLITE_RUNTIMES}, got {name!r}")
    if name != "tf.lite":
        try:
            import ai_edge_litert  # noqa: PLC0415
            from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: PLC0415

            return Interpreter, OpResolverType, f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '?')}"
        except ImportError:
            if name == "ai_edge_litert":
                raise ValueError("runtime='ai_edge_litert' but the ai-edge-litert package is not installed") from None

    def interpreter(**kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (use ai_edge_litert)
            return tf.lite.Interpreter(**kwargs)

    return interpreter, tf.lite.experimental.OpResolverType, f"tf.lite.Interpreter (tensorflow {tf.__version__})"


def _interpreter(content: bytes):
    interpreter, _, runtime = tflite_runtime()
    return interpreter(model_content=content), runtime


def _flatbuffer_zeros(content: bytes) -> tuple[int, int, int, int]:
    """(zeros, values, sparse tensors, DENSIFY ops) over the float/int8 constant tensors of the file.

    Sparse tensors count at their dense size."""
    schema = _compat.schema()
    fb = _compat.read_model(content)
    types = {
        schema.TensorType.FLOAT32: np.float32,
        schema.TensorType.FLOAT16: np.float16,
        schema.TensorType.INT8: np.int8,
    }
    zeros = total = sparse = 0
    for graph in fb.subgraphs:
        for t in graph.tensors:
            data = fb.buffers[t.buffer].data if t.buffer < len(fb.buffers) else None
            if data is None or len(data) == 0 or t.type not in types:
                continue
            values = np.frombuffer(bytes(data), dtype=types[t.type])
            zero = 0
            q = t.quantization
            if t.type == schema.TensorType.INT8 and q is not None and q.zeroPoint is not None and len(q.zeroPoint) == 1:
                zero = int(q.zeroPoint[0])  # per-tensor zero point (per-channel weights are symmetric: 0)
            dense = int(np.prod(t.shape)) if t.shape is not None else values.size
            stored_zeros = int(np.count_nonzero(values == zero))
            implicit = dense - values.size if t.sparsity is not None else 0
            zeros += stored_zeros + implicit
            total += dense if t.sparsity is not None else values.size
            sparse += t.sparsity is not None
    densify = sum(
        1
        for graph in fb.subgraphs
        for op in graph.operators
        if max(fb.operatorCodes[op.opcodeIndex].builtinCode, fb.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
        == schema.BuiltinOperator.DENSIFY
    )
    return zeros, total, sparse, densify


def export_tflite(
    model,
    path,
    mode="float32",
    representative_data=None,
    overwrite=False,
    sample_inputs=None,
    atol=None,
    batch_size=None,
) -> ExportReport:
    """Convert ``model`` to a TFLite file at ``path`` with ``tf.lite.TFLiteConverter`` and verify it.

    The model is first written as a SavedModel (``serving_default``, input
    ``"inputs"`` or the named inputs of a multi-input model, output ``"outputs"``) into a temporary directory
    and converted
    from there (works for Keras 3 and tf_keras models alike); the file keeps
    that signature. Inputs and outputs stay float in every mode.

    Modes: ``"float32"``; ``"sparse_float32"`` (``Optimize.EXPERIMENTAL_SPARSITY``:
    sparse weights stored compressed, densified at load); ``"dynamic_int8"``
    (``Optimize.DEFAULT``: int8 weights, float activations); ``"int8"`` (full
    integer: int8 weights and activations calibrated on ``representative_data``,
    required: an array of inputs or an iterable of input batches from your data (for
    several inputs: dicts keyed by input name), used one row at a time);
    ``"sparse_int8"`` (full integer as ``"int8"``, plus
    ``EXPERIMENTAL_SPARSITY``: int8 weights pruned in 1x16 blocks along the input
    axis stay sparse, no DENSIFY op, see ``tf_selopt.keras.pruning``; with
    unstructured zeros the file fails to prepare under XNNPack (LiteRT 2.3.0:
    "failed to delegate FULLY_CONNECTED"), so the check raises
    ExportVerificationError). ``atol`` defaults to ``FLOAT_ATOL + FLOAT_RTOL *
    max|keras output|`` for the float modes and to ``INT8_RTOL * max|keras output|`` for the int8 modes
    (the Keras outputs on the check's sample inputs).

    ``batch_size``: None (the file's batch dimension is free) or an int >= 1:
    the file takes exactly that many rows (``interpreter.resize_tensor_input``
    does not help: its loops are shaped for it). Recurrent layers (LSTM, GRU,
    SimpleRNN) need it: with a free batch the converter cannot lower their
    tensor-list ops, and its suggested way out (``SELECT_TF_OPS``) produces a
    file that needs the Flex delegate, which the LiteRT and ``tf.lite``
    interpreters do not ship; ``export_tflite`` then raises a ValueError that
    says to pass ``batch_size``. The check runs the sample inputs through the
    file ``batch_size`` rows at a time (the last batch filled up cyclically).
    Raises ValueError for bad arguments (before writing) and
    ExportVerificationError when the check fails (no file is left).
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path must be a file path, got {path!r}")
    if mode not in TFLITE_MODES:
        raise ValueError(f"mode must be one of {TFLITE_MODES}, got {mode!r}")
    _files.check_overwrite(overwrite)
    if atol is not None and not (isinstance(atol, (int, float)) and not isinstance(atol, bool) and atol >= 0):
        raise ValueError(f"atol must be None or a non-negative number, got {atol!r}")
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be None (free) or an int >= 1, got {batch_size!r}")
    batch_size = None if batch_size is None else int(batch_size)
    signature = _signature(model)
    _refuse_strings(signature)
    rows = None
    if representative_data is not None:
        rows = _batches(representative_data, signature)
    elif mode in INT8_MODES:
        raise ValueError(f"representative_data is required for mode={mode!r} (input batches from your data)")
    if sample_inputs is not None:
        given = signature.feeds(sample_inputs, "sample_inputs")
    elif rows is not None:
        given = _concat(rows[:_DEFAULT_ROWS])
    else:
        given = None
        _check_defaults_possible(signature)

    def bound_for(want):
        if atol is not None:
            return atol
        peak = float(np.max(np.abs(want)))
        return FLOAT_ATOL + FLOAT_RTOL * peak if "float" in mode else INT8_RTOL * peak

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory")
    _files.check_file(path, overwrite, f"path {path!r} exists")
    x, source, exercised, notes = _check_inputs(model, signature, given, bound_for)

    with _files.staging(path) as tmp_dir:
        saved = os.path.join(tmp_dir, "saved_model")
        _write_saved_model(model, signature, saved, batch_size)
        content = _convert(saved, mode, rows, batch_size)
        tmp_file = os.path.join(tmp_dir, "model.tflite")
        with open(tmp_file, "wb") as f:
            f.write(content)
        interpreter, runtime = _interpreter(content)
        try:
            runner = interpreter.get_signature_runner(SIGNATURE_KEY)
            got = _run_tflite(runner, x, batch_size)
        except RuntimeError as error:  # e.g. XNNPack fails to prepare unstructured sparse int8 weights
            raise ExportVerificationError(
                f"TFLite ({mode}): {runtime} cannot run the converted file (default delegates): "
                f"{str(error).strip().splitlines()[0][:300]}"
                + (
                    "; sparse int8 runs for weights pruned in 1x16 blocks along the input axis "
                    "(tf_selopt.prune(..., block_size=(1, 16)))"
                    if mode == "sparse_int8"
                    else ""
                )
            ) from error
        want = _keras_outputs(model, signature, x)
        diff = float(np.max(np.abs(got - want)))
        bound = bound_for(want)
        if not diff <= bound:
            raise ExportVerificationError(
                f"TFLite ({mode}) output differs from the Keras model by {diff:.3g} > atol={bound:.3g}"
            )
        zeros, total, sparse, densify = _flatbuffer_zeros(content)
        size, gz = _tree_sizes(tmp_file)
        _files.replace(tmp_file, path)
    return ExportReport(
        path=path,
        format="tflite",
        mode=mode,
        size_bytes=size,
        gzip_bytes=gz,
        max_abs_diff=diff,
        atol=float(bound),
        zeros=zeros,
        weights=total,
        model_zeros=_model_zeros(model),
        runtime=runtime,
        sparse_tensors=sparse,
        densify_ops=densify,
        check_exercised=exercised,
        sample_source=source,
        batch_size=batch_size,
        input_ranges=notes,
    )
