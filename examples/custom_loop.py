"""SelectiveOptimizer in a custom training loop (no model.fit).

LeNet-300-100 on the bundled MNIST subset; selection by the preconditioned
criterion (needs N_data) after 100 steps, reselection every 100 steps, the train
step compiled with XLA.

    python examples/custom_loop.py [--steps 400]
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

import tf_selopt
from tf_selopt.study import data, models


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    splits = data.load("mnist")
    model = models.lenet_300_100()
    optimizer = tf_selopt.SelectiveOptimizer(
        keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
        criterion="preconditioned",
        num_examples=len(splits.x_train),
        keep=0.2,
        warmup_steps=100,
        window=50,
        reselect_every=100,
    )
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    batches = (
        tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
        .shuffle(len(splits.x_train), seed=args.seed)
        .repeat()
        .batch(args.batch_size, drop_remainder=True)
    )
    for step, (x, y) in enumerate(batches.take(args.steps)):
        loss = train_step(x, y)
        if step % 100 == 99:
            print(
                f"step {step + 1}: loss {float(loss):.4f}, selections {int(optimizer.selections)}, "
                f"frozen {float(optimizer.frozen_fraction):.3f}"
            )
    logits = model.predict(splits.x_test, verbose=0)
    print(f"test accuracy: {np.mean(np.argmax(logits, axis=1) == splits.y_test):.4f}")
    print(f"selected count: {int(optimizer.selected_count)} of {optimizer.num_parameters}")


if __name__ == "__main__":
    main()
