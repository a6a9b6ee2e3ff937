"""Pruning benchmark: ours (Keras 3) vs tfmot's ``prune_low_magnitude`` (tf_keras), side by side.

LeNet-300-100 and the small CNN on the bundled MNIST subset (3,500 train /
1,000 test), Adam 1e-3, batch 64, the same epoch budget and the same gradual
schedule for every method: ``PolynomialDecay(0 -> s, power 3)`` from
``begin_step`` (after --begin-epochs) to ``end_step`` (about --end-fraction of
all steps) with --events pruning events, then fine-tuning at ``s`` to the end.

Methods (prunable weights = the kernels of Dense/Conv2D layers, for all):

* ``dense``: Keras 3, no pruning (once per model and seed; reference).
* ``global``: ours, ``tf_selopt.keras.pruning.GradualPruning(schedule, scope="global",
  criterion="magnitude")`` as a ``model.fit`` callback (the note's setting).
* ``per_layer``: ours, ``scope="per_layer"`` (every kernel at ``s``).
* ``random``: ours, ``scope="global", criterion="random"`` (control).
* ``tfmot``: ``tfmot.sparsity.keras.prune_low_magnitude`` on a tf_keras copy of
  the architecture with tfmot's ``PolynomialDecay`` (the same numbers),
  ``UpdatePruningStep``, then ``strip_pruning``. tfmot prunes every layer to
  ``s`` on its own (per-layer magnitude).
* ``dense_tf_keras``: the tf_keras architecture trained without pruning: a
  control for the front end (Keras 3 vs tf_keras) under the tfmot row.

Seeds set model initialisation and the shuffling of the data
(``keras.utils.set_random_seed`` / ``tf_keras.utils.set_random_seed``) and the
random criterion's seed. After training, every run reports the test accuracy
and the *measured* sparsity: exact zeros over all kernels.

tfmot and tf_keras: tfmot's ``python/core/keras/compat.py`` sets
``TF_USE_LEGACY_KERAS=1`` on import and uses ``tf.keras`` if that is Keras 2,
else ``import tf_keras``; either way its models are tf_keras models. The
script builds the tfmot models from that same module; ``import keras`` stays
Keras 3 in the same process (checked at start-up).

    python -m benchmarks.pruning --out results/pruning_benchmark.json
"""

import argparse
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402  (Keras 3)
import tf_keras  # noqa: E402
from tensorflow_model_optimization.python.core.keras.compat import keras as tfk  # noqa: E402  (what tfmot uses)

from tf_selopt.study import (
    data,  # noqa: E402
    runs,  # noqa: E402  (the training code, shared with `selopt study`)
)

assert keras.__version__.startswith("3."), keras.__version__
assert tfk.Model is tf_keras.Model, tfk  # tfmot's models are tf_keras (Keras 2) models

MODELS = {"lenet": "lenet_300_100", "cnn": "small_cnn"}
METHODS = ("dense", "global", "per_layer", "random", "tfmot", "dense_tf_keras")
UNPRUNED = ("dense", "dense_tf_keras")


def run(model_name, method, level, seed, splits, args, steps):
    start = time.perf_counter()
    common = dict(epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3, steps=steps)
    if method in ("tfmot", "dense_tf_keras"):
        model, reported = runs.train_pruned_tfmot(MODELS[model_name], method, level, seed, splits, **common), None
    else:
        model, reported = runs.train_pruned_keras3(MODELS[model_name], method, level, seed, splits, **common)
    _, accuracy = model.evaluate(splits.x_test, splits.y_test, batch_size=256, verbose=0)
    seconds = time.perf_counter() - start
    sparsity, zeros, total, per_layer = runs.kernel_sparsity(model)
    return {
        "model": model_name,
        "method": method,
        "level": level,
        "seed": seed,
        "test_accuracy": float(accuracy),
        "measured_sparsity": sparsity,
        "kernel_zeros": zeros,
        "kernel_total": total,
        "per_layer_sparsity": per_layer,
        "reported_sparsity": reported,
        "seconds": seconds,
    }


def fmt(values, scale=100.0, digits=2):
    values = [scale * v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def cell(rows, model, method, level, key="test_accuracy"):
    return [
        r[key]
        for r in rows
        if r["model"] == model and r["method"] == method and (method in UNPRUNED or r["level"] == level)
    ]


def report(rows, args, steps):
    levels = args.levels
    print(
        f"\nTest accuracy % (mean ± std over seeds {args.seeds}); {args.epochs} epochs x "
        f"{steps['steps_per_epoch']} steps, Adam 1e-3, batch {args.batch_size}; PolynomialDecay(0 -> s, power "
        f"{steps['power']}) begin_step {steps['begin_step']}, end_step {steps['end_step']}, frequency "
        f"{steps['frequency']} ({args.events} events), then fine-tuning to step {steps['total_steps']}. "
        "Unpruned rows repeat their one value under every level.\n"
    )
    print("| model | method | " + " | ".join(f"{lv:.0%}" for lv in levels) + " |")
    print("|---|---|" + "---|" * len(levels))
    for model in args.models:
        for method in args.methods:
            cells = [cell(rows, model, method, lv) for lv in levels]
            if any(cells):
                print(f"| {model} | {method} | " + " | ".join(fmt(c) if c else "-" for c in cells) + " |")

    print("\nMeasured kernel sparsity % (min..max over seeds; exact zeros / all kernel weights):\n")
    print("| model | method | " + " | ".join(f"{lv:.0%}" for lv in levels) + " |")
    print("|---|---|" + "---|" * len(levels))
    for model in args.models:
        for method in args.methods:
            if method in UNPRUNED:
                continue
            cells = [cell(rows, model, method, lv, "measured_sparsity") for lv in levels]
            if any(cells):
                print(
                    f"| {model} | {method} | "
                    + " | ".join(f"{100 * min(c):.3f}..{100 * max(c):.3f}" if c else "-" for c in cells)
                    + " |"
                )

    print("\nMean seconds per run (fit + evaluate):\n")
    for model in args.models:
        parts = []
        for method in args.methods:
            secs = [r["seconds"] for r in rows if r["model"] == model and r["method"] == method]
            if secs:
                parts.append(f"{method} {statistics.mean(secs):.1f}")
        print(f"- {model}: " + ", ".join(parts))

    checks = []
    print("\nGoal check (on means over seeds):")
    for model in args.models:
        if "global" in args.methods and "tfmot" in args.methods:
            for lv in levels:
                ours, theirs = cell(rows, model, "global", lv), cell(rows, model, "tfmot", lv)
                if ours and theirs:
                    a, b = 100 * statistics.mean(ours), 100 * statistics.mean(theirs)
                    met = a >= b
                    checks.append(
                        {"model": model, "check": f"global >= tfmot at {lv:.0%}", "global": a, "other": b, "met": met}
                    )
                    print(
                        f"- {model}: global >= tfmot at {lv:.0%}: {'met' if met else 'MISSED'} "
                        f"({a:.2f} vs {b:.2f}, {a - b:+.2f})"
                    )
        if "global" in args.methods and "dense" in args.methods and 0.9 in levels:
            ours, dense = cell(rows, model, "global", 0.9), cell(rows, model, "dense", 0.9)
            if ours and dense:
                a, b = 100 * statistics.mean(ours), 100 * statistics.mean(dense)
                met = b - a <= 1.0
                checks.append(
                    {
                        "model": model,
                        "check": "global within 1 point of dense at 90%",
                        "global": a,
                        "other": b,
                        "met": met,
                    }
                )
                print(
                    f"- {model}: global within 1 point of dense at 90%: {'met' if met else 'MISSED'} "
                    f"({a:.2f} vs dense {b:.2f}, {a - b:+.2f})"
                )
    return checks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95, 0.98])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--begin-epochs", type=int, default=1, help="pruning starts after this many epochs")
    parser.add_argument("--end-fraction", type=float, default=0.65, help="end_step ~ this fraction of all steps")
    parser.add_argument("--events", type=int, default=15, help="pruning events between begin_step and end_step")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/pruning_benchmark.json"))
    args = parser.parse_args()

    splits = data.load("mnist")
    steps = runs.schedule_steps(
        len(splits.x_train), args.batch_size, args.epochs, args.begin_epochs, args.end_fraction, args.events
    )
    config = vars(args) | {
        "out": str(args.out),
        "schedule": steps,
        "optimizer": "Adam(1e-3)",
        "n_train": len(splits.x_train),
        "n_test": len(splits.x_test),
        "keras": keras.__version__,
        "tf_keras": tf_keras.__version__,
    }
    print(json.dumps({"schedule": steps}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.perf_counter()
    for model in args.models:
        for seed in args.seeds:
            for method in args.methods:
                for level in [0.0] if method in UNPRUNED else args.levels:
                    row = run(model, method, level, seed, splits, args, steps)
                    print(json.dumps({k: v for k, v in row.items() if k != "per_layer_sparsity"}), flush=True)
                    rows.append(row)
                    # Written after every run, so an interrupted benchmark keeps what it measured.
                    args.out.write_text(json.dumps({"config": config, "runs": rows}, indent=1))
    wall = time.perf_counter() - start
    checks = report(rows, args, steps)
    print(f"\nWall time: {wall:.0f} s for {len(rows)} runs.")
    args.out.write_text(
        json.dumps({"config": config, "runs": rows, "goal_checks": checks, "wall_seconds": wall}, indent=1)
    )


if __name__ == "__main__":
    main()
