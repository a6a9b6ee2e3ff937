"""One layer's backward: the dense kernel gradient against sparse deltas and Keras LoRA, with and without XLA.

``--layer dense`` (default): a BERT-base feed-forward ``Dense`` (768 -> 3072) on ``rows`` = batch x sequence rows.
``--layer conv2d``: a ``Conv2D`` 3x3, 64 -> 64 channels, padding same, on 32x32 images, ``rows`` = images per
batch (32); its sparse deltas' backward holds the input's patches (kh*kw = 9 times the input).
Each arm times a traced ``tape.gradient`` of ``sum(y * dy)`` with respect to its trainable variables (the kernel;
the k deltas; LoRA's A and B), median over ``--runs`` calls after a warm-up, arms interleaved. It isolates what
``tf_selopt.sparse_delta`` changes in a fine-tuning step: the weight-gradient part.

    python -m benchmarks.sparse_delta_layer --out results/bench_sparse_delta_layer.json
    python -m benchmarks.sparse_delta_layer --layer conv2d --out results/bench_sparse_delta_conv.json
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


def _make(kind, inp, out, size):
    """A fresh layer of ``kind`` ("dense" | "conv2d") without bias, and its input shape without the batch."""
    if kind == "dense":
        return keras.layers.Dense(out, use_bias=False), (inp,)
    return keras.layers.Conv2D(out, 3, padding="same", use_bias=False), (size, size, inp)


def _arms(kind, inp, out, size, keep, rank, seed):
    rng = np.random.default_rng(seed)
    dense, shape = _make(kind, inp, out, size)
    dense.build((None, *shape))
    n = int(np.prod(dense.kernel.shape))
    delta_model = keras.Sequential([keras.Input(shape), _make(kind, inp, out, size)[0]])
    k = int(keep * n)
    positions = np.sort(rng.choice(n, size=k, replace=False))
    tf_selopt.sparse_delta(delta_model, {delta_model.layers[0]: positions})
    lora = _make(kind, inp, out, size)[0]
    lora.build((None, *shape))
    lora.enable_lora(rank)
    delta_model.layers[0].base_kernel().assign(dense.kernel)
    return {"dense": dense, "sparse_delta": delta_model.layers[0], f"lora_r{rank}": lora}, positions, shape


def _step(layer, jit):
    @tf.function(jit_compile=jit)
    def step(x, dy):
        with tf.GradientTape() as tape:
            y = layer(x)
        return tape.gradient(y, layer.trainable_variables, output_gradients=dy)

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", choices=["dense", "conv2d"], default="dense")
    p.add_argument("--inp", type=int, default=None, help="input features / channels (768 / 64)")
    p.add_argument("--units", type=int, default=None, help="output features / channels (3072 / 64)")
    p.add_argument("--size", type=int, default=32, help="conv2d: image height and width")
    p.add_argument("--rows", type=int, nargs="+", default=None, help="batch x sequence (256 1024 4096) / images (32)")
    p.add_argument("--keep", type=float, default=0.01, help="fraction of the kernel with a delta")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument(
        "--quick",
        action="store_true",
        help="16 -> 32 on 8 rows (conv2d: 4 -> 32 channels, 8 images of 6x6), 2 runs (tests)",
    )
    p.add_argument("--out", type=pathlib.Path, required=True)
    args = p.parse_args(argv)
    conv = args.layer == "conv2d"
    args.inp = args.inp or (64 if conv else 768)
    args.units = args.units or (64 if conv else 3072)
    args.rows = args.rows or ([32] if conv else [256, 1024, 4096])
    if args.quick:
        args.inp, args.units, args.rows, args.keep, args.runs, args.size = 4 if conv else 16, 32, [8], 0.1, 2, 6
    load_before = os.getloadavg()
    layers, positions, shape = _arms(args.layer, args.inp, args.units, args.size, args.keep, args.rank, 0)
    k = len(positions)
    positions_per_row = args.size * args.size if conv else 1  # output positions per row of the batch
    patch = 9 * args.inp if conv else args.inp  # the width each position reads: kh*kw*cin / inp
    rows_out = []
    for rows in args.rows:
        x = tf.random.normal((rows, *shape), seed=1)
        dy = tf.random.normal((rows, *shape[:-1], args.units), seed=2)
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
                    * min(
                        k * rows * positions_per_row,
                        sparse_delta_module.CHUNK_POSITIONS * sparse_delta_module.TILE_ROWS,
                    ),
                    "unchunked_gather_bytes": 2 * rows * positions_per_row * k * 4,
                    "input_patches_bytes": rows * positions_per_row * patch * 4 if conv else 0,
                    "input_bytes": int(np.prod(x.shape)) * 4,
                    "dense_gradient_bytes": int(np.prod(layers["dense"].kernel.shape)) * 4,
                    "delta_gradient_max_abs_diff": float(np.max(np.abs(delta_grad - dense_grad))),
                    "dense_gradient_max_abs": float(np.max(np.abs(dense_grad))),
                }
            )
            print(rows, "xla" if jit else "eager-graph", {n: round(m, 2) for n, m in med.items()})
    write_result(
        args.out,
        {
            "machine": machine_info(),
            "layer": args.layer,
            "shape": [int(d) for d in layers["dense"].kernel.shape],
            "input_shape": list(shape),
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
