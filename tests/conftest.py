"""Shared test setup: quiet TensorFlow, one thread per xdist worker, small models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Bind tf.keras to Keras 3 before any test imports tfmot (its import sets TF_USE_LEGACY_KERAS=1).
assert tf.keras.__name__.startswith("keras")
# Import tfmot once, through the bridge, which leaves TF_USE_LEGACY_KERAS as it was: a test that imported
# tfmot directly first would leave it set to 1 in os.environ, and the subprocesses that later tests start
# (test_resume, test_distributed) would then get Keras 2 as tf.keras.
import tf_selopt.keras2.tfmot_bridge  # noqa: E402, F401

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, tests marked ``slow`` are handed out first (a stable sort: the order of the rest
    is kept), so the last minutes do not leave one worker waiting on a long test started late. Every worker
    collects and sorts the same list, as xdist requires. Without xdist the order is untouched (a
    module-scoped fixture stays built for its module's tests)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class SubclassedNet(keras.Model):
    """Embedding -> mean over tokens -> Dense: a subclassed model with sparse gradients."""

    def __init__(self):
        super().__init__()
        self.embed = keras.layers.Embedding(20, 4)
        self.head = keras.layers.Dense(3)

    def call(self, x):
        return self.head(keras.ops.mean(self.embed(x), axis=1))


def make_model(kind: str, seed: int = 0) -> keras.Model:
    """Small real models: 'sequential' (Dense+BatchNorm), 'functional' (Conv2D+BatchNorm+Dense),
    'subclassed' (Embedding+Dense)."""
    keras.utils.set_random_seed(seed)
    if kind == "sequential":
        return keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(3),
            ]
        )
    if kind == "functional":
        inputs = keras.Input((6, 6, 1))
        h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Flatten()(h)
        return keras.Model(inputs, keras.layers.Dense(3)(h))
    if kind == "subclassed":
        model = SubclassedNet()
        model(np.zeros((1, 5), np.int32))
        return model
    raise ValueError(kind)


def make_data(kind: str, n: int = 64, seed: int = 1):
    rng = np.random.default_rng(seed)
    if kind == "sequential":
        x = rng.normal(size=(n, 6)).astype("float32")
    elif kind == "functional":
        x = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    else:
        x = rng.integers(0, 20, size=(n, 5)).astype("int32")
    y = rng.integers(0, 3, size=(n,)).astype("int32")
    return x, y


MODEL_KINDS = ("sequential", "functional", "subclassed")

INNER = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-2),
}


# Bad SelectiveOptimizer arguments (both front ends) and a word the error must contain.
BAD_ARGUMENTS = [
    (dict(keep=0.0), "keep"),
    (dict(keep=1.5), "keep"),
    (dict(keep=-3), "keep"),
    (dict(keep=True), "keep"),
    (dict(window=0), "window"),
    (dict(window=5, warmup_steps=4), "window"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(warmup_steps=2.5), "warmup_steps"),
    (dict(criterion="gradient_summ"), "criterion"),
    (dict(reselect_every=0), "reselect_every"),
    (dict(reselect_every=2, window=3), "reselect_every"),
    (dict(scope="layer"), "scope"),
    (dict(seed=-1), "seed"),
    (dict(criterion="preconditioned", num_examples=None), "num_examples"),
    (dict(weight_decay=0.1), "inner optimizer"),
    (dict(granularity="layer"), "granularity"),
    (dict(granularity="variable", scope="per_variable"), "granularity"),
    (dict(keep=float("nan")), "keep"),
    (dict(update="fast"), "update"),
]


@pytest.fixture
def same_graph_rewrites():
    """Turn off grappler's arithmetic optimizer for the test.

    The wrapper reads every gradient a second time (its finite check); with a
    second consumer, grappler's arithmetic optimizer rewrites the gradient
    computation of ``model.fit`` differently than for the bare optimizer (seen:
    1 ULP in a BatchNormalization gamma after 3 steps). Bit-for-bit comparisons
    of two *different* train graphs therefore run with that rewrite off; the
    eager tests compare the same gradients with no graph rewriting at all.
    """
    options = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    yield
    tf.config.optimizer.set_experimental_options(
        {"arithmetic_optimization": options.get("arithmetic_optimization", True)}
    )
