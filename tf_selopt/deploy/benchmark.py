"""Deployment benchmark: every export of a model (or of several), measured side by side.

``deployment_benchmark`` takes either trained Keras 3 models and a list of
global sparsities (each model pruned with ``tf_selopt.prune(copy, s, scope="global")``
on a copy of the weights, no fine-tuning), or a list of saved models (``.keras``
files, or SavedModel directories with a one-output ``serving_default``
signature, benchmarked as they are). Models may have
several inputs (``x_test`` then a dict keyed by input name): every artefact is
called with the named inputs of its ``serving_default`` signature. For each model it
exports the artefacts (``tf_selopt.deploy.export``: a TF Serving SavedModel and the
TFLite modes ``float32``, ``sparse_float32``, ``dynamic_int8``, ``int8``; on request
``sparse_int8``), each
verified against the Keras model on the first 8 test inputs, and reports per
artefact (row ``model``: ``<model name>-s<sparsity in %>``, e.g. ``lenet_300_100-s90``,
or the file / SavedModel name for ``paths``):

* ``size_bytes`` / ``gzip_bytes`` (gzip level 9), ``size_vs_float32``: size over
  the same model's float32 TFLite file;
* ``accuracy``: fraction of the test set whose argmax of the output (last axis)
  equals the label; TFLite in batches of ``ACCURACY_BATCH`` on the runtime's
  default interpreter (1 thread, default delegates), the SavedModel through its
  loaded ``serving_default`` signature;
* ``latency``: batch 1 (the first test input), microseconds, ``p50_us`` /
  ``p95_us`` over ``runs`` timed calls after ``warmup`` untimed ones. TFLite:
  ``Interpreter.invoke()`` alone, for every ``threads`` x ``xnnpack``
  configuration (XNNPack off = ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``); an
  interpreter that fails to prepare records ``error`` instead. SavedModel: a call
  of the loaded signature (TensorFlow's process-wide thread setting, recorded).
  All timers run round-robin in blocks of ``BLOCK`` calls, the start rotating
  each round, so machine load hits every configuration alike; ``p50_vs_float32``
  is the ratio to the same model's float32 file in the same configuration;
* ``max_abs_diff``: largest ``|artefact - keras|`` on the 8 verification
  inputs (``atol``: the export's bound), ``test_max_abs_diff``: the same over
  the whole test set;
* zeros: ``zeros`` in the artefact, ``prunable_zeros`` of ``prunable`` weights in
  the Keras model (``tf_selopt.keras.pruning.prunable_variables``; None for a
  SavedModel input); ``sparse_tensors`` stored sparse in a TFLite file and
  ``densify_ops`` (the runtime densifies that many of them when it loads the
  file; the others are read sparse by the op's sparse kernel).

Writes ``<out_dir>/deployment.json`` (settings, runtime names and versions,
whether sparse weights are densified at load, the rows) and
``<out_dir>/deployment.md`` (a table). Artefacts are kept in ``artifacts_dir``
(TF Serving layout ``saved_models/<model>/1/`` and ``tflite/<model>.<mode>.tflite``)
or, if it is None, in a temporary directory that is removed. Every argument is
checked before anything is written; files are written to temporary names and
moved into place at the end, so a failed run leaves nothing behind.

Examples:
    >>> import keras, numpy as np, tempfile
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)], name="net")
    >>> x, y = np.ones((16, 6), "float32"), np.zeros(16, "int32")
    >>> rows = deployment_benchmark(tempfile.mkdtemp(), x, y, model=model, sparsities=[0.5],
    ...                             artifacts=("saved_model", "float32"), runs=5, warmup=1, threads=[1])
    >>> [(r["model"], r["artifact"], r["prunable_zeros"]) for r in rows]
    [('net-s50', 'saved_model', 36), ('net-s50', 'float32', 36)]
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tf_selopt.core.checks import is_int
from tf_selopt.deploy import _files, export
from tf_selopt.keras import inputs as inputs_lib
from tf_selopt.keras import pruning

__all__ = [
    "deployment_benchmark",
    "tflite_latency",
    "markdown_table",
    "ARTIFACTS",
    "DEFAULT_ARTIFACTS",
    "BLOCK",
    "ACCURACY_BATCH",
    "JSON_NAME",
    "MARKDOWN_NAME",
]

ARTIFACTS = ("saved_model",) + export.TFLITE_MODES
DEFAULT_ARTIFACTS = ("saved_model", "float32", "sparse_float32", "dynamic_int8", "int8")
BLOCK = 10
ACCURACY_BATCH = 250
JSON_NAME = "deployment.json"
MARKDOWN_NAME = "deployment.md"
_SAMPLE_ROWS = 8


@dataclasses.dataclass
class _Variant:
    """One model to export: a name (also the TF Serving model name) and where it came from."""

    name: str
    model: object
    source: str
    target_sparsity: float | None
    prunable: int | None
    prunable_zeros: int | None


@dataclasses.dataclass
class _Timer:
    """Batch-1 calls of one artefact (``rows[row]``) in one configuration; ``times`` in nanoseconds."""

    row: int
    config: dict
    call: object
    times: list = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------- arguments


def _check_number_list(name, values, check, allowed) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of {allowed}, got {values!r}")
    for v in values:
        if not check(v):
            raise ValueError(f"{name} must be a non-empty list of {allowed}, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat values, got {values!r}")
    return list(values)


def _is_sparsity(s) -> bool:
    return isinstance(s, (int, float, np.floating, np.integer)) and not isinstance(s, bool) and 0 <= s < 1


def _check_out(out_dir, overwrite):
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ValueError(f"out_dir must be a directory path, got {out_dir!r}")
    out_dir = os.fspath(out_dir)
    _files.check_directory(out_dir, "out_dir")
    for name in (JSON_NAME, MARKDOWN_NAME):
        _files.check_file(os.path.join(out_dir, name), overwrite, f"out_dir already holds {name}")
    return out_dir


def _check_artifacts_dir(artifacts_dir, overwrite):
    if artifacts_dir is None:
        return None
    if not isinstance(artifacts_dir, (str, os.PathLike)) or not os.fspath(artifacts_dir):
        raise ValueError(f"artifacts_dir must be None or a directory path, got {artifacts_dir!r}")
    artifacts_dir = os.fspath(artifacts_dir)
    _files.check_directory(artifacts_dir, "artifacts_dir", overwrite)
    return artifacts_dir


def _check_test_data(x_test, y_test):
    """``(x, y, n)``: ``x_test`` as an array, or as ``{name: array}`` when it is a dict (named inputs); ``n`` rows."""
    if isinstance(x_test, collections.abc.Mapping):
        x = {str(k): np.asarray(v) for k, v in x_test.items()}
        rows = {k: (v.shape[0] if v.ndim else None) for k, v in x.items()}
        if not x or None in rows.values() or len(set(rows.values())) != 1 or not next(iter(rows.values())):
            raise ValueError(f"x_test: a dict of named inputs needs non-empty arrays with equal rows, got rows {rows}")
        n = next(iter(rows.values()))
    else:
        x = np.asarray(x_test)
        if x.ndim < 2 or not len(x):
            raise ValueError(f"x_test must be a non-empty batch of inputs, got shape {x.shape}")
        n = len(x)
    y = np.asarray(y_test)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_test must be integer class labels of shape ({n},), got {y.dtype} {y.shape}")
    return x, y, n


def _serving_feeds(model, x) -> dict:
    """``x`` (an array, or a dict keyed by the model's input names) as ``{serving input name: array}`` of the
    serving dtypes (``export.serving_input_specs``: ``"inputs"`` for one input); ValueError naming ``x_test``."""
    specs = export.serving_input_specs(model)
    named = inputs_lib.model_inputs(model).feeds(x, "x_test")
    feeds = dict(zip(specs, named.values()))
    for name, spec in specs.items():
        v = feeds[name]
        if v.ndim != len(spec.shape) or not tf.TensorShape(spec.shape[1:]).is_compatible_with(v.shape[1:]):
            label = "x_test rows" if len(specs) == 1 else f"x_test input {name!r} rows"
            raise ValueError(f"{label} have shape {v.shape[1:]}, the model expects {spec.shape[1:]}")
        feeds[name] = v.astype(spec.dtype.as_numpy_dtype)
    return feeds


def _take(feeds, index) -> dict:
    """The rows ``index`` (a slice) of every input."""
    return {name: v[index] for name, v in feeds.items()}


def _keras_call(model):
    """``{serving input name: array} -> model output`` (inference mode), in the structure the model takes."""
    described = inputs_lib.model_inputs(model)

    def call(feeds):
        return model(described.structure(dict(zip(described.names, feeds.values()))), training=False)

    return call


# ---------------------------------------------------------------- models


def _prunable_counts(model) -> tuple:
    """(prunable weights, exact zeros among them), or (None, None) if the model has none."""
    try:
        variables = pruning.prunable_variables(model)
    except ValueError:
        return None, None
    values = [np.asarray(v) for v in variables]
    return sum(v.size for v in values), sum(int(np.count_nonzero(v == 0)) for v in values)


def _keras_models(model) -> list:
    """``model`` (a Keras 3 model, a ``.keras`` path, or a non-empty list of them) as a list of models."""
    given = list(model) if isinstance(model, (list, tuple)) else [model]
    if not given:
        raise ValueError("model must be a Keras 3 model, a .keras path or a non-empty list of them, got []")
    models = []
    for m in given:
        if isinstance(m, (str, os.PathLike)):
            if not (os.path.isfile(m) and os.fspath(m).endswith(".keras")):
                raise ValueError(f"model: {os.fspath(m)!r} is not a .keras file")
            m = keras.saving.load_model(os.fspath(m), compile=False)
        if not isinstance(m, keras.Model):
            raise ValueError(f"model must be a Keras 3 model or a .keras path, got {type(m).__name__}")
        models.append(m)
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model: the models need distinct names (they name the artefacts), got {names}")
    return models


def _pruned_variants(model, sparsities) -> list:
    """Copies of ``model`` pruned globally to each sparsity; the model itself is not changed."""
    variants = []
    for s in sparsities:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        pruning.prune(copy, float(s), scope="global")
        pruning.strip_pruning(copy)
        prunable, zeros = _prunable_counts(copy)
        name = f"{model.name}-s{float(s) * 100:g}"
        variants.append(_Variant(name, copy, f"{model.name} pruned to {float(s):g}", float(s), prunable, zeros))
    return variants


def _load_saved_model(path) -> keras.Model:
    """A SavedModel's one-output ``serving_default`` signature as a Keras model: one input (``"inputs"``)
    or, for several, a dict of named Inputs as the signature names them."""
    signature = tf.saved_model.load(path).signatures.get(export.SIGNATURE_KEY)
    if signature is None:
        raise ValueError(f"paths: SavedModel {path!r} has no {export.SIGNATURE_KEY!r} signature")
    _, inputs = signature.structured_input_signature
    outputs = signature.structured_outputs
    if not inputs or len(outputs) != 1:
        raise ValueError(f"paths: the signature of {path!r} must have named inputs and one output")
    (output_name,) = list(outputs)
    x = {name: keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name, name=name) for name, spec in inputs.items()}
    x = next(iter(x.values())) if len(x) == 1 else x
    layer = keras.layers.TFSMLayer(path, call_endpoint=export.SIGNATURE_KEY)
    return keras.Model(x, layer(x)[output_name])


def _path_variants(paths) -> list:
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, (list, tuple)) or not paths:
        raise ValueError(f"paths must be a non-empty list of .keras files or SavedModel directories, got {paths!r}")
    for p in paths:
        p = os.fspath(p)
        if not (os.path.isfile(p) and p.endswith(".keras")) and not os.path.isfile(os.path.join(p, "saved_model.pb")):
            raise ValueError(f"paths: {p!r} is neither a .keras file nor a SavedModel directory")
    variants, names = [], set()
    for p in map(os.fspath, paths):
        stem = os.path.basename(os.path.normpath(p))
        if p.endswith(".keras"):
            model = keras.saving.load_model(p, compile=False)
            stem = stem[: -len(".keras")]
        else:
            model = _load_saved_model(p)
            if stem.isdigit():  # <base>/<model_name>/<version>
                stem = os.path.basename(os.path.dirname(os.path.normpath(p))) or stem
        name, i = stem, 1
        while name in names:
            i += 1
            name = f"{stem}-{i}"
        names.add(name)
        variants.append(_Variant(name, model, p, None, *_prunable_counts(model)))
    return variants


# ---------------------------------------------------------------- measuring


def _predictions(predict, feeds, n) -> np.ndarray:
    """``predict`` over the ``n`` rows of ``feeds`` (``{name: array}``) in batches of ``ACCURACY_BATCH``, as
    float64."""
    return np.concatenate(
        [
            np.asarray(predict(_take(feeds, slice(i, i + ACCURACY_BATCH))), dtype=np.float64)
            for i in range(0, n, ACCURACY_BATCH)
        ]
    )


def _accuracy(outputs, y) -> float:
    """Fraction of rows whose argmax (last axis) equals the label."""
    return float(np.mean(np.argmax(outputs, axis=-1) == y))


def _saved_model_calls(path, x1):
    """(predict on a batch, one batch-1 call) through the loaded ``serving_default`` signature, called with
    its named inputs (``x1``: ``{name: array}``)."""
    signature = tf.saved_model.load(path).signatures[export.SIGNATURE_KEY]
    x1 = {name: tf.constant(v) for name, v in x1.items()}
    return (
        lambda feeds: signature(**{n: tf.constant(v) for n, v in feeds.items()})[export.OUTPUT_NAME].numpy(),
        lambda: signature(**x1),
    )


def _tflite_predict(runtime, path):
    """``{name: array} -> output`` through the file's ``serving_default`` signature runner."""
    interpreter, _, _ = export.tflite_runtime(runtime)
    runner = interpreter(model_path=path, num_threads=1).get_signature_runner(export.SIGNATURE_KEY)
    return lambda feeds: runner(**feeds)[export.OUTPUT_NAME]


def _input_tensors(it, x1, path) -> list:
    """``[(tensor index, array)]`` to set on interpreter ``it``: ``x1`` an array (a file with one input) or a
    dict keyed by the input names of the file's signature (``serving_default``, or its only signature).
    ValueError naming ``x1`` when they do not match."""
    if not isinstance(x1, collections.abc.Mapping):
        details = it.get_input_details()
        if len(details) != 1:
            raise ValueError(
                f"x1: {os.fspath(path)!r} takes {len(details)} inputs; pass a dict keyed by its signature's input names"
            )
        return [(details[0]["index"], np.asarray(x1).astype(details[0]["dtype"]))]
    signatures = list(it.get_signature_list())
    key = export.SIGNATURE_KEY if export.SIGNATURE_KEY in signatures else signatures[0] if signatures else None
    if key is None or len(signatures) > 1 and key != export.SIGNATURE_KEY:
        raise ValueError(f"x1: {os.fspath(path)!r} has no single signature to take named inputs ({signatures})")
    details = it.get_signature_runner(key).get_input_details()
    if set(details) != set(x1):
        raise ValueError(
            f"x1: the keys {sorted(x1)} must be the input names {sorted(details)} of signature {key!r} of "
            f"{os.fspath(path)!r}"
        )
    return [(d["index"], np.asarray(x1[name]).astype(d["dtype"])) for name, d in details.items()]


def _tflite_invoke(runtime, path, x1, threads, xnnpack):
    """``interpreter.invoke`` with ``x1`` (an array, or ``{name: array}`` by signature input name) set, for one
    configuration; raises if the interpreter cannot prepare."""
    interpreter, resolvers, _ = export.tflite_runtime(runtime)
    kwargs = dict(model_path=path, num_threads=threads)
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = interpreter(**kwargs)
    tensors = _input_tensors(it, x1, path)
    for index, value in tensors:
        it.resize_tensor_input(index, value.shape)
    it.allocate_tensors()
    for index, value in tensors:
        it.set_tensor(index, value)
    it.invoke()
    return it.invoke


def _run_round_robin(timers, runs, warmup):
    """``warmup`` untimed then ``runs`` timed calls of every timer, in blocks of ``BLOCK``, rotating the order."""
    for _ in range(warmup):
        for t in timers:
            t.call()
    rounds = math.ceil(runs / BLOCK)
    for r in range(rounds):
        n = min(BLOCK, runs - r * BLOCK)
        shift = r % len(timers)
        for t in timers[shift:] + timers[:shift]:
            for _ in range(n):
                start = time.perf_counter_ns()
                t.call()
                t.times.append(time.perf_counter_ns() - start)


def _check_timing(runs, warmup, threads, xnnpack):
    """The timing arguments of ``tflite_latency`` and ``deployment_benchmark``: ValueError naming the bad one;
    returns ``(threads, xnnpack)`` as lists."""
    if not is_int(runs) or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    if not is_int(warmup) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    threads = _check_number_list("threads", threads, lambda t: is_int(t) and t >= 1, "integers >= 1")
    xnnpack = _check_number_list("xnnpack", xnnpack, lambda b: isinstance(b, bool), "True/False")
    return threads, xnnpack


def tflite_latency(paths, x1, threads=(1,), xnnpack=(True, False), runs=200, warmup=20, runtime="auto") -> list:
    """Batch-``len(x1)`` latency of TFLite files, timed as ``deployment_benchmark`` times them.

    ``x1``: an array (files with one input) or ``{name: array}`` keyed by the input names of each file's
    signature (``serving_default`` for files from ``export_tflite``; e.g. keras_hub's ``token_ids``,
    ``padding_mask``, ``segment_ids``), set through the signature's tensor indices.

    Every file in every ``threads`` x ``xnnpack`` configuration gets an
    interpreter with ``x1`` set; all of them are timed together round-robin
    (``warmup`` untimed calls, then ``runs`` timed ``invoke()`` calls each, in
    blocks of ``BLOCK``, the start rotating every round), so machine load hits
    every file alike.

    Returns:
        one list per path, in order, of ``{"threads", "xnnpack", "p50_us",
        "p95_us", "runs"}`` per configuration (``"error"`` instead of the
        timings for an interpreter that fails to prepare).

    Raises:
        ValueError: for a bad argument (a path that is not a file, bad
            ``threads``/``xnnpack``/``runs``/``warmup``, ``x1`` that does not fit a file's inputs), before
            anything is timed.
    """
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, (list, tuple)) or not paths:
        raise ValueError(f"paths must be a non-empty list of .tflite files, got {paths!r}")
    for p in paths:
        if not os.path.isfile(p):
            raise ValueError(f"paths: {os.fspath(p)!r} is not a file")
    threads, xnnpack = _check_timing(runs, warmup, threads, xnnpack)
    x1 = {str(k): np.asarray(v) for k, v in x1.items()} if isinstance(x1, collections.abc.Mapping) else np.asarray(x1)
    interpreter, _, _ = export.tflite_runtime(runtime)
    for path in paths:  # the inputs fit every file before anything runs
        _input_tensors(interpreter(model_path=os.fspath(path)), x1, path)
    configs = [{"threads": t, "xnnpack": b} for t in threads for b in xnnpack]
    out, timers = [[] for _ in paths], []
    for i, path in enumerate(paths):
        for config in configs:
            try:
                timers.append(_Timer(i, config, _tflite_invoke(runtime, os.fspath(path), x1, **config)))
            except (RuntimeError, ValueError) as e:
                out[i].append({**config, "error": str(e).strip().splitlines()[0][:300]})
    _run_round_robin(timers, runs, warmup)
    for t in timers:
        out[t.row].append({**t.config, **_latency_stats(t.times)})
    order = [(c["threads"], c["xnnpack"]) for c in configs]
    for entries in out:
        entries.sort(key=lambda e: order.index((e["threads"], e["xnnpack"])))
    return out


def _latency_stats(times_ns) -> dict:
    us = np.asarray(times_ns, dtype=np.float64) / 1e3
    return {
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p95_us": round(float(np.percentile(us, 95)), 2),
        "runs": int(us.size),
    }


def _cell(entry) -> str:
    if entry is None:
        return ""
    if "error" in entry:
        return "fails"
    ratio = entry.get("p50_vs_float32")
    return f"{entry['p50_us']:.1f} / {entry['p95_us']:.1f}" + ("" if ratio is None else f" ({ratio:.2f}x)")


def _config_name(config) -> str:
    return f"{config['threads']}t XNNPack {'on' if config['xnnpack'] else 'off'}"


def markdown_table(result: dict) -> str:
    """The Markdown report of a ``deployment.json`` result (header lines and one table row per artefact)."""
    settings = result["settings"]
    configs = settings["tflite_configs"]
    lines = [
        "# Deployment benchmark",
        "",
        f"TFLite runtime: {result['runtime']['tflite']}; SavedModel: {result['runtime']['saved_model']} "
        f"(intra-op threads {result['runtime']['tf_intra_op_threads']}, 0 = TensorFlow's default). "
        f"Latency: batch 1, p50 / p95 in microseconds over {settings['runs']} calls after {settings['warmup']} "
        f"warm-up calls, all configurations interleaved round-robin (blocks of {settings['block']}); "
        "(Nx) = p50 over the same model's float32 file in the same configuration. "
        f"Accuracy on {settings['test_examples']} test examples. Machine: {settings['cpu_count']} CPUs, "
        f"1-minute load average {settings['load_average_1min'][0]} before and {settings['load_average_1min'][1]} "
        "after the timing.",
        "",
        f"Sparse weights: {result['densify']['summary']}.",
        "",
        "| model | artefact | size B | gzip B | size / float32 | accuracy % | max abs diff (test set) | zeros "
        "| sparse tensors (densified) | " + " | ".join(_config_name(c) for c in configs) + " | SavedModel (TF) |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(configs) + "---|",
    ]
    for row in result["rows"]:
        by_config = {(e["threads"], e["xnnpack"]): e for e in row["latency"] if e["threads"] is not None}
        tf_entry = next((e for e in row["latency"] if e["threads"] is None), None)
        ratio = row["size_vs_float32"]
        lines.append(
            f"| {row['model']} | {row['artifact']} | {row['size_bytes']:,} | {row['gzip_bytes']:,} | "
            + ("" if ratio is None else f"{ratio:.3f}")
            + f" | {100 * row['accuracy']:.2f} | {row['test_max_abs_diff']:.1e} | {row['zeros']:,} | "
            + (f"{row['sparse_tensors']} ({row['densify_ops']})" if row["format"] == "tflite" else "")
            + " | "
            + " | ".join(_cell(by_config.get((c["threads"], c["xnnpack"]))) for c in configs)
            + f" | {_cell(tf_entry)} |"
        )
    return "\n".join(lines) + "\n"


def _make_artifact(variant, artifact, work, runtime, sample, x1, configs, representative_data, float_atol):
    """Export one artefact into ``work``; return its ExportReport, a batch predictor, the batch-1
    ``(config, call)`` timers and the latency entries of configurations that failed to prepare."""
    if artifact == "saved_model":
        report = export.export_saved_model(
            variant.model,
            os.path.join(work, "saved_models"),
            variant.name,
            1,
            sample_inputs=sample,
            atol=export.FLOAT_ATOL if float_atol is None else float_atol,
        )
        predict, call = _saved_model_calls(report.path, x1)
        return report, predict, [({"threads": None, "xnnpack": None}, call)], []
    path = os.path.join(work, "tflite", f"{variant.name}.{artifact}.tflite")
    report = export.export_tflite(
        variant.model,
        path,
        mode=artifact,
        sample_inputs=sample,
        representative_data=representative_data if artifact in export.INT8_MODES else None,
        atol=None if artifact in export.INT8_MODES or artifact == "dynamic_int8" else float_atol,
    )
    calls, failed = [], []
    for config in configs:
        try:
            calls.append((config, _tflite_invoke(runtime, path, x1, **config)))
        except (RuntimeError, ValueError) as e:
            failed.append({**config, "error": str(e).strip().splitlines()[0][:300]})
    return report, _tflite_predict(runtime, path), calls, failed


def _row(variant, artifact, report, path, outputs, keras_outputs, y, latency) -> dict:
    """One result row (latency entries are added after the timing)."""
    return {
        "model": variant.name,
        "source": variant.source,
        "target_sparsity": variant.target_sparsity,
        "prunable": variant.prunable,
        "prunable_zeros": variant.prunable_zeros,
        "sparsity": None if not variant.prunable else variant.prunable_zeros / variant.prunable,
        "artifact": artifact,
        "format": report.format,
        "path": path,
        "size_bytes": report.size_bytes,
        "gzip_bytes": report.gzip_bytes,
        "max_abs_diff": report.max_abs_diff,
        "atol": report.atol,
        "zeros": report.zeros,
        "weights": report.weights,
        "model_zeros": report.model_zeros,
        "sparse_tensors": report.sparse_tensors,
        "densify_ops": report.densify_ops,
        "test_max_abs_diff": float(np.max(np.abs(outputs - keras_outputs))),
        "accuracy": _accuracy(outputs, y),
        "latency": latency,
    }


# ---------------------------------------------------------------- the benchmark


def deployment_benchmark(
    out_dir,
    x_test,
    y_test,
    model=None,
    sparsities=None,
    paths=None,
    representative_data=None,
    artifacts=DEFAULT_ARTIFACTS,
    runs=200,
    warmup=20,
    threads=(1, 2),
    xnnpack=(True, False),
    runtime="auto",
    artifacts_dir=None,
    overwrite=False,
    float_atol=None,
) -> list:
    """Export, time and score every artefact; write ``deployment.json`` and ``deployment.md``; return the rows.

    Args:
        out_dir: directory for ``deployment.json`` and ``deployment.md``
            (created if missing; existing reports are refused unless ``overwrite``).
        x_test, y_test: test inputs ``[n, ...]`` (the model's input shape; for a
            model with several inputs a dict keyed by its input names, e.g.
            keras_hub's ``{"token_ids", "padding_mask", "segment_ids"}``, each
            ``[n, ...]``, read through ``tf_selopt.keras.inputs``) and integer
            labels ``[n]``; the first row is the batch-1 latency input and the
            first 8 verify each export. Artefacts are called with named inputs:
            the SavedModel's ``serving_default`` and the TFLite signature runner
            by ``export.serving_input_specs`` names, ``invoke()`` with each
            signature input's tensor set.
        model: a built Keras 3 model, a ``.keras`` path, or a list of them
            (distinct names), each pruned globally to each of ``sparsities`` (a
            list of distinct floats in [0, 1)) on copies of its weights.
        paths: instead of ``model``: a list of ``.keras`` files or SavedModel
            directories, benchmarked as they are.
        representative_data: inputs ``[m, ...]`` (a dict of them for named inputs) from your (training) data
            to calibrate ``int8``; required when ``"int8"`` is in ``artifacts``.
        artifacts: which of ``ARTIFACTS`` to make (``"saved_model"`` and the
            TFLite modes of ``tf_selopt.deploy.export``); default
            ``DEFAULT_ARTIFACTS``, all but ``"sparse_int8"`` (for weights
            pruned in 1x16 blocks: unstructured sparse int8 files do not
            prepare under XNNPack, so their export check fails).
        runs: timed batch-1 calls per configuration (int >= 1); ``warmup``:
            untimed calls before (int >= 0).
        threads: TFLite thread counts (ints >= 1); ``xnnpack``: a list of
            True/False (default delegates on/off).
        runtime: ``"auto"``, ``"ai_edge_litert"`` or ``"tf.lite"`` (see
            ``tf_selopt.deploy.export.tflite_runtime``).
        artifacts_dir: None (artefacts in a temporary directory, removed) or a
            directory to keep them in (replaced as a whole; refused if not empty
            unless ``overwrite``).
        overwrite: replace existing reports / artefacts.
        float_atol: None (the exports' defaults: ``export.FLOAT_ATOL``, 1e-5, for
            the SavedModel; ``FLOAT_ATOL + FLOAT_RTOL * max|keras output|`` for
            ``float32`` and ``sparse_float32``) or one bound, a number >= 0, for
            those three float artefacts.

    Returns:
        list of dicts, one per model and artefact (fields in the module docstring).

    Raises:
        ValueError: for any invalid argument, before anything is written.
        tf_selopt.deploy.export.ExportVerificationError: an artefact does not reproduce
            its Keras model (nothing is kept).
    """
    _files.check_overwrite(overwrite)
    out_dir = _check_out(out_dir, overwrite)
    artifacts_dir = _check_artifacts_dir(artifacts_dir, overwrite)
    x, y, n = _check_test_data(x_test, y_test)
    artifacts = _check_number_list("artifacts", artifacts, lambda a: a in ARTIFACTS, f"names from {ARTIFACTS}")
    if float_atol is not None and (
        isinstance(float_atol, bool) or not isinstance(float_atol, (int, float)) or not float_atol >= 0
    ):
        raise ValueError(f"float_atol must be None (the exports' defaults) or a number >= 0, got {float_atol!r}")
    threads, xnnpack = _check_timing(runs, warmup, threads, xnnpack)
    _, _, runtime_name = export.tflite_runtime(runtime)
    if set(export.INT8_MODES) & set(artifacts) and representative_data is None:
        raise ValueError(
            f"representative_data is required for the {export.INT8_MODES} artefacts (inputs from your data)"
        )
    if (model is None) == (paths is None):
        raise ValueError("give either model (with sparsities) or paths, not both and not neither")
    if model is not None:
        if sparsities is None:
            raise ValueError("sparsities is required with model: a non-empty list of floats in [0, 1)")
        sparsities = _check_number_list("sparsities", sparsities, _is_sparsity, "floats in [0, 1)")
        models = _keras_models(model)
        variants = None
    elif sparsities is not None:
        raise ValueError("sparsities applies to model only; paths are benchmarked as they are")
    else:
        variants = _path_variants(paths)
        models = [v.model for v in variants]
    for m in models:
        _serving_feeds(m, x)
    if variants is None:
        variants = [v for m in models for v in _pruned_variants(m, sparsities)]

    rows, timers = [], []
    configs = [{"threads": t, "xnnpack": b} for t in threads for b in xnnpack]
    with contextlib.ExitStack() as stack:
        if artifacts_dir is None:
            work = stack.enter_context(tempfile.TemporaryDirectory(prefix="deployment-"))
        else:
            work = stack.enter_context(_files.staging(artifacts_dir))
        for variant in variants:
            feeds = _serving_feeds(variant.model, x)
            sample, x1 = _take(feeds, slice(_SAMPLE_ROWS)), _take(feeds, slice(1))
            keras_outputs = _predictions(_keras_call(variant.model), feeds, n)
            for artifact in artifacts:
                report, predict, calls, latency = _make_artifact(
                    variant, artifact, work, runtime, sample, x1, configs, representative_data, float_atol
                )
                timers.extend(_Timer(len(rows), config, call) for config, call in calls)
                outputs = _predictions(predict, feeds, n)
                kept = artifacts_dir and os.path.join(artifacts_dir, os.path.relpath(report.path, work))
                rows.append(_row(variant, artifact, report, kept, outputs, keras_outputs, y, latency))
        load_before = os.getloadavg()[0]
        _run_round_robin(timers, runs, warmup)
        load_after = os.getloadavg()[0]
        order = [(None, None)] + [(c["threads"], c["xnnpack"]) for c in configs]
        for t in timers:
            rows[t.row]["latency"].append({**t.config, **_latency_stats(t.times)})
        for row in rows:
            row["latency"].sort(key=lambda e: order.index((e["threads"], e["xnnpack"])))
        _add_ratios(rows)
        if artifacts_dir is not None:
            _files.replace(work, artifacts_dir)
    result = {
        "runtime": {
            "tflite": runtime_name,
            "saved_model": f"tensorflow {tf.__version__}",
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        },
        "settings": {
            "runs": runs,
            "warmup": warmup,
            "block": BLOCK,
            "batch": 1,
            "latency_unit": "microseconds",
            "tflite_configs": configs,
            "test_examples": n,
            "accuracy_batch": ACCURACY_BATCH,
            "load_average_1min": [round(load_before, 2), round(load_after, 2)],
            "cpu_count": os.cpu_count(),
        },
        "densify": _densify_summary(rows),
        "rows": rows,
    }
    os.makedirs(out_dir, exist_ok=True)
    _files.write_text(os.path.join(out_dir, JSON_NAME), json.dumps(result, indent=1) + "\n")
    _files.write_text(os.path.join(out_dir, MARKDOWN_NAME), markdown_table(result))
    return rows


def _add_ratios(rows):
    """``size_vs_float32`` and each latency entry's ``p50_vs_float32`` against the same model's float32 row."""
    dense = {r["model"]: r for r in rows if r["artifact"] == "float32"}
    for row in rows:
        ref = dense.get(row["model"])
        row["size_vs_float32"] = None if ref is None else row["size_bytes"] / ref["size_bytes"]
        ref_p50 = (
            {} if ref is None else {(e["threads"], e["xnnpack"]): e["p50_us"] for e in ref["latency"] if "p50_us" in e}
        )
        for entry in row["latency"]:
            p50 = ref_p50.get((entry["threads"], entry["xnnpack"]))
            if "p50_us" in entry and p50:
                entry["p50_vs_float32"] = round(entry["p50_us"] / p50, 3)


def _densify_summary(rows) -> dict:
    """How many sparse weight tensors the TFLite runtime densifies at load (DENSIFY ops) and which it reads sparse."""
    tflite = [r for r in rows if r["format"] == "tflite"]
    sparse = sum(r["sparse_tensors"] for r in tflite)
    densified = sum(r["densify_ops"] for r in tflite)
    kept = {
        f"{r['model']}.{r['artifact']}": r["sparse_tensors"] - r["densify_ops"]
        for r in tflite
        if r["sparse_tensors"] > r["densify_ops"]
    }
    summary = (
        (
            f"{densified} of {sparse} sparse weight tensors are densified at load (a DENSIFY op each: they save file "
            "size, not memory or compute)"
            + (
                f"; read sparse by the op's sparse kernel: {', '.join(f'{k} ({n})' for k, n in kept.items())}"
                if kept
                else ""
            )
        )
        if sparse
        else "no TFLite file holds a sparse tensor"
    )
    return {"sparse_tensors": sparse, "densified_at_load": densified, "read_sparse": kept, "summary": summary}
