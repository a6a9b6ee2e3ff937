"""Quickstart: a small CNN on the bundled MNIST subset, compiled with SelectiveOptimizer.

One epoch of full Adam training (warm-up), then only the 10% of parameters with
the largest gradient sum over the last 20 steps keep training; the other 90%
are frozen bit for bit.

    python examples/quickstart.py [--epochs 4] [--keep 0.1] [--criterion gradient_sum]
"""

import argparse
import math

import keras

import tf_selopt
from tf_selopt.study import data, models


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--criterion", default="gradient_sum", choices=sorted(tf_selopt.core.criteria.BUILTIN))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    splits = data.load("mnist")
    steps_per_epoch = math.ceil(len(splits.x_train) / args.batch_size)
    model = models.small_cnn()
    optimizer = tf_selopt.SelectiveOptimizer(
        keras.optimizers.Adam(1e-3),
        criterion=args.criterion,
        keep=args.keep,
        warmup_steps=steps_per_epoch,  # eta0: one epoch of full training
        window=20,  # t: gradients summed before the switch
        num_examples=len(splits.x_train),  # N_data, used by "preconditioned"
        seed=args.seed,
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        splits.x_train,
        splits.y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(splits.x_val, splits.y_val),
        verbose=2,
    )
    _, accuracy = model.evaluate(splits.x_test, splits.y_test, verbose=0)
    print(f"test accuracy:   {accuracy:.4f}")
    print(f"selected count:  {int(optimizer.selected_count)} of {optimizer.num_parameters} parameters")
    print(f"frozen fraction: {float(optimizer.frozen_fraction):.4f}")
    print(f"selections:      {int(optimizer.selections)}, skipped non-finite steps: {int(optimizer.skipped_steps)}")


if __name__ == "__main__":
    main()
