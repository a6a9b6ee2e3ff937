"""Reference Keras 3 models of the study (built, not trained)."""

from __future__ import annotations

import keras

__all__ = ["small_cnn", "lenet_300_100"]


def small_cnn(input_shape=(28, 28, 1), num_classes=10) -> keras.Model:
    """conv16-conv32-dense64 CNN (3x3 convolutions, 2x2 max-pooling); logits out."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name="small_cnn",
    )


def lenet_300_100(input_shape=(28, 28, 1), num_classes=10) -> keras.Model:
    """LeNet-300-100 MLP (784-300-100-10 on MNIST); logits out."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name="lenet_300_100",
    )
