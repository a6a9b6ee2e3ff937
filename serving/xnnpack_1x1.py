"""Does LiteRT's XNNPack run pruned 1x1 convolutions sparse here? Dense vs ``prune(..., policy="xnnpack_1x1")``.

XNNPack can run a float NHWC graph's 1x1 convolutions as sparse matrix products (NCHW) when at least 2/3 of
their weights are zero (tfmot's ``PruneForLatencyOnXNNPack``; Google, 2021: 1.2-2.4x on MediaPipe models).
The LiteRT XNNPack delegate asks for it by itself: when a delegated node reads a static sparse float weight
through a ``DENSIFY`` op (the ``sparse_float32`` export, ``Optimize.EXPERIMENTAL_SPARSITY``), it sets
``XNN_FLAG_HINT_SPARSE_INFERENCE``; there is no interpreter or delegate option for it. XNNPack then switches
the compatible subgraph to NCHW only where its hardware check allows: on x86 only without AVX
(``xnn_is_chw_compatible_config`` in XNNPack's ``src/xnnpack/hardware-config.h``: "on processors with AVX ISA
dense inference is expected to be faster than sparse").

Per model (untrained weights, BatchNormalization statistics drawn at random so that outputs vary; latency
only, no accuracy): the dense model and copies pruned by ``tf_selopt.prune(copy, s, scope="per_layer",
policy="xnnpack_1x1")`` for each ``--sparsities``, saved as ``.keras`` and benchmarked together by
``tf_selopt.deploy.benchmark.deployment_benchmark(paths=...)``: ``float32`` and ``sparse_float32`` files,
XNNPack on and off, ``--threads``, batch 1, all timers round-robin in one process. Models:

* ``mobilenetv2_035_32``: ``keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3),
  classes=10)``;
* ``mobilenetv2_035_96``: the same at 96x96;
* ``mnv2like_96``: a MobileNetV2-shaped net (widths of alpha 1.0, 96x96) built the way XNNPack's NCHW path
  wants it (tfmot's checks): ``ZeroPadding2D(1)`` + 3x3 stride-2 ``valid`` stem over 3 channels,
  ``ZeroPadding2D(1)`` before every stride-2 depthwise convolution, ``GlobalAveragePooling2D(keepdims=True)``.

Writes ``<out>/<H>x<W>/deployment.{json,md}`` (the benchmark's rows, one timing session per input size) and
``<out>/summary.json``: per model and variant the TFLite op counts of each file (``DENSIFY`` included), the
pruned kernels' zero fractions, and the p50/p95 of each file with its ratio to the dense float32 file in the
same configuration. The dense model's ``sparse_float32`` file is the same model converted with the sparsity
option (nothing to encode): its ratio shows the timing noise. ``verdict`` says whether any pruned
``sparse_float32`` file ran faster than both dense files with XNNPack on (p50 below ``SPEEDUP`` times the
faster one), and if not, why not.

    python -m serving.xnnpack_1x1 --out results/xnnpack_1x1
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from tf_selopt.deploy import _compat  # noqa: E402
from tf_selopt.deploy import benchmark as deploy_benchmark  # noqa: E402
from tf_selopt.keras.pruning import prune, strip_pruning  # noqa: E402

SPEEDUP = 0.9  # p50 ratio below which a pruned file counts as faster than dense


def mnv2like(size=96, classes=10):
    """MobileNetV2 (widths of alpha 1.0) in the layer pattern of XNNPack's sparse NCHW path (tfmot's checks)."""
    layers = keras.layers
    x = inputs = keras.Input((size, size, 3))
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(32, 3, strides=2, use_bias=False, name="stem")(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2)]:
        for i in range(n):
            stride = s if i == 0 else 1
            y = x
            if t != 1:
                y = layers.Conv2D(cin * t, 1, use_bias=False)(y)
                y = layers.ReLU(6.0)(layers.BatchNormalization()(y))
            if stride == 2:
                y = layers.DepthwiseConv2D(3, strides=2, use_bias=False)(layers.ZeroPadding2D(1)(y))
            else:
                y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
            y = layers.ReLU(6.0)(layers.BatchNormalization()(y))
            y = layers.BatchNormalization()(layers.Conv2D(c, 1, use_bias=False)(y))
            x = layers.Add()([x, y]) if stride == 1 and cin == c else y
            cin = c
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(1280, 1, use_bias=False)(x)))
    x = layers.Flatten()(layers.GlobalAveragePooling2D(keepdims=True)(x))
    return keras.Model(inputs, layers.Dense(classes)(x), name=f"mnv2like_{size}")


def build(name):
    if name == "mnv2like_96":
        return mnv2like(96)
    size = int(name.rsplit("_", 1)[1])
    return keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(size, size, 3), classes=10, name=name)


def randomize_batchnorm(model, rng):
    """BatchNormalization scales/offsets/statistics drawn at random: an untrained model whose outputs vary."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.1, beta.shape),
                    rng.normal(0, 0.1, mean.shape),
                    rng.uniform(0.5, 1.5, var.shape),
                ]
            )


def op_counts(path) -> dict:
    """TFLite builtin operator name -> count in the file."""
    schema = _compat.schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    fb = _compat.read_model(pathlib.Path(path).read_bytes())
    codes = [fb.operatorCodes[op.opcodeIndex] for g in fb.subgraphs for op in g.operators]
    return dict(collections.Counter(names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in codes))


def cpu_flags() -> list:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "sse", "fma")))
    except OSError:
        pass
    return []


def measure(args, work) -> tuple[dict, list]:
    """Build, prune, export and time every model in ``work``; (per-model summary, pruned files faster than dense)."""
    rng = np.random.default_rng(args.seed)
    by_shape, pruned_info = collections.defaultdict(list), {}  # input shape -> .keras paths
    for name in args.models:
        keras.utils.set_random_seed(args.seed)
        model = build(name)
        randomize_batchnorm(model, rng)
        paths = by_shape[tuple(model.input_shape[1:])]
        model.save(os.path.join(work, f"{name}.dense.keras"))
        paths.append(os.path.join(work, f"{name}.dense.keras"))
        for s in args.sparsities:
            copy = keras.models.clone_model(model)
            copy.set_weights(model.get_weights())
            masks = prune(copy, s, scope="per_layer", policy="xnnpack_1x1")
            strip_pruning(copy)
            variant = f"{name}.xnnpack1x1-{round(s * 100)}"
            pruned_info[variant] = {
                "pruned_kernels": len(masks),
                "pruned_weights": int(sum((~m).sum() for m in masks.values())),
                "min_zero_fraction": round(min(float((~m).mean()) for m in masks.values()), 4),
                "all_kernels": sum(1 for layer in copy.layers if getattr(layer, "kernel", None) is not None),
            }
            copy.save(os.path.join(work, f"{variant}.keras"))
            paths.append(os.path.join(work, f"{variant}.keras"))

    rows = []
    for shape, paths in by_shape.items():  # one timing session (round-robin) per input shape
        x = rng.normal(size=(16, *shape)).astype("float32")
        rows += deploy_benchmark.deployment_benchmark(
            os.path.join(args.out, f"{shape[0]}x{shape[1]}"),
            x,
            np.zeros(len(x), "int32"),
            paths=paths,
            artifacts=("float32", "sparse_float32"),
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            xnnpack=[True, False],
            overwrite=True,
            float_atol=1e-3,
            artifacts_dir=os.path.join(work, f"artifacts-{shape[0]}"),
        )

    summary = {"models": {}}
    faster = []
    for row in rows:
        name, variant = row["model"].split(".", 1)
        dense = {r["artifact"]: r for r in rows if r["model"] == f"{name}.dense"}
        dense_p50 = {
            (artifact, e["threads"], e["xnnpack"]): e["p50_us"]
            for artifact, r in dense.items()
            for e in r["latency"]
            if "p50_us" in e
        }
        latency = []
        for e in row["latency"]:
            entry = {k: e.get(k) for k in ("threads", "xnnpack", "p50_us", "p95_us", "error") if k in e}
            if "p50_us" in e:
                config = (e["threads"], e["xnnpack"])
                entry["p50_vs_dense_float32"] = round(e["p50_us"] / dense_p50[("float32", *config)], 3)
                best = min(dense_p50[(a, *config)] for a in ("float32", "sparse_float32"))
                entry["p50_vs_faster_dense_file"] = round(e["p50_us"] / best, 3)
                if variant != "dense" and row["artifact"] == "sparse_float32" and e["xnnpack"]:
                    if entry["p50_vs_faster_dense_file"] < SPEEDUP:
                        faster.append(f"{row['model']}.{row['artifact']} {e['threads']}t")
            latency.append(entry)
        summary["models"].setdefault(name, {})[f"{variant}.{row['artifact']}"] = {
            **pruned_info.get(row["model"], {}),
            "size_bytes": row["size_bytes"],
            "sparse_tensors": row["sparse_tensors"],
            "densify_ops": row["densify_ops"],
            "ops": op_counts(row["path"]),
            "max_abs_diff": row["max_abs_diff"],
            "latency": latency,
        }
    return summary, faster


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/xnnpack_1x1")
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_035_32", "mobilenetv2_035_96", "mnv2like_96"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.9])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="xnnpack_1x1-") as work:
        summary, faster = measure(args, work)
    flags = cpu_flags()
    summary["cpu_flags"] = flags
    summary["verdict"] = (
        f"faster than dense with XNNPack (p50 < {SPEEDUP}x): {faster}"
        if faster
        else (
            f"no pruned sparse_float32 file ran faster than the dense files with XNNPack (p50 >= {SPEEDUP}x "
            "the faster dense file in every configuration): XNNPack ran the 1x1 convolutions dense. The files keep "
            "the zeros encoded (one DENSIFY op per pruned kernel, which the XNNPack delegate takes over and marks "
            "sparse), but XNNPack's sparse (NCHW) path is off on x86 CPUs with AVX (xnn_is_chw_compatible_config, "
            "src/xnnpack/hardware-config.h)" + ("; this CPU has AVX" if "avx" in flags else "")
        )
    )
    print(summary["verdict"])
    write_result(pathlib.Path(args.out) / "summary.json", {"settings": vars(args), **summary})


if __name__ == "__main__":
    main()
