"""One layer's backward: the dense kernel gradient against sparse deltas and Keras LoRA, with and without XLA.

A BERT-base feed-forward ``Dense`` (768 -> 3072 by default) on ``rows`` = batch x sequence rows; each arm times
a traced ``tape.gradient`` of ``sum(y * dy)`` with respect to its trainable variables (the kernel; the k
deltas; LoRA's A and B), median over ``--runs`` calls after a warm-up, arms interleaved. It isolates what
``tf_selopt.sparse_delta`` changes in a fine-tuning step: the weight-gradient part.

    python -m benchmarks.sparse_delta_layer --out results/bench_sparse_delta_layer.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_selopt  # noqa: E402
from benchmarks.common import machine_info, write_result  # noqa: E402
from tf_selopt.keras import sparse_delta as sparse_delta_module  # noqa: E402


def _arms(inp, out, keep, rank, seed):
    rng = np.random.default_rng(seed)
    dense = keras.layers.Dense(out, use_bias=False)
    dense.build((None, inp))
    delta_model = keras.Sequential([keras.Input((inp,)), keras.layers.Dense(out, use_bias=False)])
    k = int(keep * inp * out)
    positions = np.sort(rng.choice(inp * out, size=k, replace=False))
    tf_selopt.sparse_delta(delta_model, {delta_model.layers[0]: positions})
    lora = keras.layers.Dense(out, use_bias=False)
    lora.build((None, inp))
    lora.enable_lora(rank)
    delta_model.layers[0].base_kernel().assign(dense.kernel)
    return {"dense": dense, "sparse_delta": delta_model.layers[0], f"lora_r{rank}": lora}, positions


def _step(layer, jit):
    @tf.function(jit_compile=jit)
    def step(x, dy):
        with tf.GradientTape() as tape:
            y = layer(x)
        return tape.gradient(y, layer.trainable_variables, output_gradients=dy)

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inp", type=int, default=768)
    p.add_argument("--units", type=int, default=3072)
    p.add_argument("--rows", type=int, nargs="+", default=[256, 1024, 4096], help="batch x sequence")
    p.add_argument("--keep", type=float, default=0.01, help="fraction of the kernel with a delta")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="a 16 -> 32 layer on 8 rows, 2 runs (tests)")
    p.add_argument("--out", type=pathlib.Path, required=True)
    args = p.parse_args(argv)
    if args.quick:
        args.inp, args.units, args.rows, args.keep, args.runs = 16, 32, [8], 0.1, 2
    load_before = os.getloadavg()
    layers, positions = _arms(args.inp, args.units, args.keep, args.rank, 0)
    k = len(positions)
    rows_out = []
    for rows in args.rows:
        x = tf.random.normal((rows, args.inp), seed=1)
        dy = tf.random.normal((rows, args.units), seed=2)
        for jit in (False, True):
            steps = {name: _step(layer, jit) for name, layer in layers.items()}
            times = {name: [] for name in steps}
            for name, step in steps.items():
                for _ in range(3):
                    [g.numpy() for g in step(x, dy)]
            for _ in range(args.runs):
                for name, step in steps.items():
                    t = time.perf_counter()
                    [g.numpy() for g in step(x, dy)]
                    times[name].append((time.perf_counter() - t) * 1e3)
            med = {name: statistics.median(v) for name, v in times.items()}
            dense_grad = np.ravel(steps["dense"](x, dy)[0].numpy())[positions]
            delta_grad = steps["sparse_delta"](x, dy)[0].numpy()
            rows_out.append(
                {
                    "rows": rows,
                    "jit_compile": jit,
                    "ms_median": med,
                    "ratio_to_dense": {n: m / med["dense"] for n, m in med.items()},
                    "sparse_delta_largest_gathered_block_bytes": 2
                    * 4
                    * min(k * rows, sparse_delta_module.CHUNK_POSITIONS * sparse_delta_module.TILE_ROWS),
                    "unchunked_gather_bytes": 2 * rows * k * 4,
                    "dense_gradient_bytes": args.inp * args.units * 4,
                    "delta_gradient_max_abs_diff": float(np.max(np.abs(delta_grad - dense_grad))),
                    "dense_gradient_max_abs": float(np.max(np.abs(dense_grad))),
                }
            )
            print(rows, "xla" if jit else "eager-graph", {n: round(m, 2) for n, m in med.items()})
    write_result(
        args.out,
        {
            "machine": machine_info(),
            "shape": [args.inp, args.units],
            "k": k,
            "keep": args.keep,
            "runs": args.runs,
            "results": rows_out,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
