"""Reference models of the study (built, not trained), for Keras 3 or tf_keras.

``api`` is the Keras module to build with: ``keras`` (Keras 3, the default) or
``tf_keras`` (Keras 2, e.g. for tfmot); the layers and their defaults
(glorot-uniform kernels, zero biases) are the same in both.

Layers get fixed names (``conv_0``, ``pool_0``, ``dense_0``, ...; numbered per
kind in order), so the variable paths (``mlp/dense_0/kernel``) and the
per-variable TensorBoard tags derived from them are the same for every model a
builder makes, in any process. Names do not affect initialisation (seeds do).
"""

from __future__ import annotations

import keras

__all__ = ["small_cnn", "lenet_300_100", "mlp"]


def small_cnn(input_shape=(28, 28, 1), num_classes=10, api=keras):
    """conv16-conv32-dense64 CNN (3x3 convolutions, 2x2 max-pooling); logits out."""
    return api.Sequential(
        [
            api.Input(input_shape),
            api.layers.Conv2D(16, 3, activation="relu", padding="same", name="conv_0"),
            api.layers.MaxPooling2D(name="pool_0"),
            api.layers.Conv2D(32, 3, activation="relu", padding="same", name="conv_1"),
            api.layers.MaxPooling2D(name="pool_1"),
            api.layers.Flatten(name="flatten"),
            api.layers.Dense(64, activation="relu", name="dense_0"),
            api.layers.Dense(num_classes, name="dense_1"),
        ],
        name="small_cnn",
    )


def mlp(hidden, input_shape=(28, 28, 1), num_classes=10, api=keras, name="mlp"):
    """Flatten, then ReLU Dense layers of widths ``hidden`` (e.g. ``(512, 512)``); logits out."""
    return api.Sequential(
        [api.Input(input_shape), api.layers.Flatten(name="flatten")]
        + [api.layers.Dense(width, activation="relu", name=f"dense_{i}") for i, width in enumerate(hidden)]
        + [api.layers.Dense(num_classes, name=f"dense_{len(hidden)}")],
        name=name,
    )


def lenet_300_100(input_shape=(28, 28, 1), num_classes=10, api=keras):
    """LeNet-300-100 MLP (784-300-100-10 on MNIST); logits out."""
    return mlp((300, 100), input_shape, num_classes, api=api, name="lenet_300_100")
