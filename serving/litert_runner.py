"""Run a ``.tflite`` file on the device with LiteRT and time it: p50/p90 of the signature runner's calls.

Uses ``ai_edge_litert``'s ``Interpreter`` only (the ``[export]`` extra; no TensorFlow import, so it runs where
only LiteRT is installed). The file's signature runner (``serving_default`` for files from
``tf_selopt.deploy.export.export_tflite``) is called ``--warmup`` times untimed, then ``--runs`` times timed;
each call sets the inputs, invokes and copies the outputs out, as an application calls it. Inputs: ``--inputs``
(a ``.npy`` file for a one-input signature, a ``.npz`` with one array per input name) or generated with seed 0
(float: standard normal; int8/uint8: uniform over the type; other integers: {0, 1}; a free dimension: 1).

    python -m serving.litert_runner model.tflite --runs 50
    python -m serving.litert_runner model.tflite --runs 200 --threads 2 --no-xnnpack --json timing.json

Prints the signature, the output shapes and ``p50`` / ``p90`` in microseconds with the 1-minute load average
before and after (a loaded machine slows every call); ``--json`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _interpreter(model_path, threads, xnnpack):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: PLC0415  (the [export] extra)

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_path=model_path, num_threads=threads, experimental_op_resolver_type=resolver)


def _spec_text(detail) -> str:
    shape = tuple(int(d) if d >= 0 else None for d in detail.get("shape_signature", detail["shape"]))
    return f"{np.dtype(detail['dtype']).name} {shape}"


def generated_inputs(input_details: dict, seed: int = 0) -> dict:
    """Inputs for a signature runner's ``get_input_details()``: ``{name: array}`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, detail in sorted(input_details.items()):
        shape = [int(d) if d >= 0 else 1 for d in detail.get("shape_signature", detail["shape"])]
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            out[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype in (np.int8, np.uint8):
            info = np.iinfo(dtype)
            out[name] = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        elif dtype.kind in "iub":
            out[name] = rng.integers(0, 1, shape, endpoint=True).astype(dtype)
        else:
            raise ValueError(f"input {name!r} ({_spec_text(detail)}): pass --inputs, cannot generate {dtype}")
    return out


def _check_inputs(inputs, input_details) -> dict:
    if not isinstance(inputs, dict):
        if len(input_details) != 1:
            raise TypeError(f"inputs must be a dict of input name -> array for inputs {sorted(input_details)}")
        inputs = {next(iter(input_details)): inputs}
    if set(inputs) != set(input_details):
        specs = {k: _spec_text(d) for k, d in input_details.items()}
        raise ValueError(f"inputs: got names {sorted(inputs)}; the signature takes {specs}")
    out = {}
    for name, detail in input_details.items():
        array = np.asarray(inputs[name])
        want = detail.get("shape_signature", detail["shape"])
        fits = array.ndim == len(want) and all(w < 0 or w == g for w, g in zip(want, array.shape))
        if array.dtype != np.dtype(detail["dtype"]) or not fits:
            raise ValueError(
                f"input {name!r} is {array.dtype.name} {array.shape}; the signature wants {_spec_text(detail)}"
            )
        out[name] = array
    return out


def run(
    model_path, runs: int = 50, warmup: int = 5, threads: int = 1, xnnpack: bool = True, signature_key=None, inputs=None
):
    """Time ``runs`` calls of the file's signature runner; a dict with ``p50_us``, ``p90_us`` and the outputs.

    Args:
        model_path: the ``.tflite`` file.
        runs: timed calls (>= 1); warmup: untimed calls before them (>= 0).
        threads: the interpreter's thread count (>= 1).
        xnnpack: False runs the built-in kernels only (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``).
        signature_key: the signature to run (``None``: the file's only one).
        inputs: ``{name: array}`` or one array for a one-input signature (dtype and shape as the signature's);
            ``None``: ``generated_inputs``.

    Returns:
        ``{"model", "signature", "inputs", "outputs", "threads", "xnnpack", "runs", "warmup", "p50_us",
        "p90_us", "load_average_1min": [before, after], "output_values"}`` (``inputs``/``outputs``: name -> spec
        text; ``output_values``: name -> array of the last call).
    """
    for name, value, low in (("runs", runs, 1), ("warmup", warmup, 0), ("threads", threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(xnnpack, bool):
        raise ValueError(f"xnnpack must be True or False, got {xnnpack!r}")
    if not isinstance(model_path, (str, os.PathLike)) or not os.path.isfile(model_path):
        raise ValueError(f"model_path must be a .tflite file, got {model_path!r}")
    interpreter = _interpreter(os.fspath(model_path), threads, xnnpack)
    signatures = interpreter.get_signature_list()
    if signature_key is None and len(signatures) == 1:
        signature_key = next(iter(signatures))
    if signature_key not in signatures:
        raise ValueError(
            f"signature_key must be one of {sorted(signatures)} (the file's signatures), got {signature_key!r}"
        )
    runner = interpreter.get_signature_runner(signature_key)
    input_details = runner.get_input_details()
    inputs = generated_inputs(input_details) if inputs is None else _check_inputs(inputs, input_details)
    load_before = os.getloadavg()[0]
    for _ in range(warmup):
        runner(**inputs)
    times = np.empty(runs, np.int64)
    for i in range(runs):
        start = time.perf_counter_ns()
        outputs = runner(**inputs)
        times[i] = time.perf_counter_ns() - start
    load_after = os.getloadavg()[0]
    us = times / 1e3
    return {
        "model": os.fspath(model_path),
        "signature": signature_key,
        "inputs": {k: _spec_text(d) for k, d in sorted(input_details.items())},
        "outputs": {k: _spec_text(d) for k, d in sorted(runner.get_output_details().items())},
        "threads": threads,
        "xnnpack": xnnpack,
        "runs": runs,
        "warmup": warmup,
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p90_us": round(float(np.percentile(us, 90)), 2),
        "load_average_1min": [load_before, load_after],
        "output_values": {k: np.asarray(v) for k, v in sorted(outputs.items())},
    }


def _load_inputs(path):
    if path is None:
        return None
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    return np.load(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("--runs", type=int, default=50, help="timed calls (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--no-xnnpack", action="store_true", help="built-in kernels only")
    parser.add_argument("--signature", default=None, help="signature key (default: the file's only one)")
    parser.add_argument("--inputs", default=None, help=".npy (one input) or .npz (by input name); default random")
    parser.add_argument("--json", default=None, help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    try:
        result = run(
            args.model,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            xnnpack=not args.no_xnnpack,
            signature_key=args.signature,
            inputs=_load_inputs(args.inputs),
        )
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    values = result.pop("output_values")
    result["output_shapes"] = {k: list(v.shape) for k, v in values.items()}
    before, after = result["load_average_1min"]
    print(
        f"{result['model']}: signature {result['signature']!r}, inputs {result['inputs']}, outputs {result['outputs']}"
    )
    xnnpack = "on" if result["xnnpack"] else "off"
    print(
        f"{result['threads']} thread(s), XNNPack {xnnpack}: p50 {result['p50_us']:.1f} us, "
        f"p90 {result['p90_us']:.1f} us over {result['runs']} runs (1-minute load average {before:.2f} before, "
        f"{after:.2f} after)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
