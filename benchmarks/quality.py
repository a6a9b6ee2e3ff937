"""First quality number: full training vs keep=10% after one epoch of warm-up.

Small CNN on the bundled MNIST subset (3,500 train / 1,000 test), Adam 1e-3,
batch 64, the same epoch budget for every method; selection after one epoch
(warmup_steps = steps per epoch; --warmup-epochs changes it) from a 20-step window. Prints a Markdown table
(mean +- std over seeds) and writes every run to JSON.

    python -m benchmarks.quality --seeds 0 1 2 --epochs 8 --out results/quality.json
"""

import argparse
import json
import math
import pathlib
import statistics

import keras

import tf_selopt
from tf_selopt.study import data, models

METHODS = ("full", "gradient_sum", "preconditioned", "fisher", "magnitude", "random")


def run(method, seed, splits, epochs, batch_size, keep, window, scope, warmup_epochs):
    keras.utils.set_random_seed(seed)
    model = models.small_cnn()
    inner = keras.optimizers.Adam(1e-3)
    if method == "full":
        optimizer = inner
    else:
        optimizer = tf_selopt.SelectiveOptimizer(
            inner,
            criterion=method,
            keep=keep,
            warmup_steps=warmup_epochs * math.ceil(len(splits.x_train) / batch_size),
            window=window,
            scope=scope,
            num_examples=len(splits.x_train),
            seed=seed,
        )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(splits.x_train, splits.y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    loss, accuracy = model.evaluate(splits.x_test, splits.y_test, verbose=0)
    frozen = 0.0 if method == "full" else float(optimizer.frozen_fraction)
    return {"method": method, "seed": seed, "test_accuracy": accuracy, "test_loss": loss, "frozen_fraction": frozen}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--scope", default="global", choices=["global", "per_variable"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/quality.json"))
    args = parser.parse_args()

    splits = data.load("mnist")
    rows = []
    for method in args.methods:
        for seed in args.seeds:
            row = run(
                method,
                seed,
                splits,
                args.epochs,
                args.batch_size,
                args.keep,
                args.window,
                args.scope,
                args.warmup_epochs,
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)}, "runs": rows}, indent=1))

    print(f"\n| method | test accuracy % (mean +- std, seeds {args.seeds}) | frozen |\n|---|---|---|")
    for method in args.methods:
        acc = [100 * r["test_accuracy"] for r in rows if r["method"] == method]
        frozen = [r["frozen_fraction"] for r in rows if r["method"] == method][0]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        print(f"| {method} | {statistics.mean(acc):.2f} +- {spread:.2f} | {frozen:.0%} |")


if __name__ == "__main__":
    main()
