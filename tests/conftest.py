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


# Modules whose tests share expensive module-scoped fixtures (subprocess runs, a trained model and its deployment
# benchmark, a study). Under xdist each of these modules runs on one worker, its tests back to back: spread
# over both workers and interleaved with other modules' tests (--dist load), a worker tears a module fixture
# down whenever its next test is from another module and builds it again when it comes back.
ONE_WORKER_MODULES = (
    "tests/test_distributed.py",
    "tests/test_resume.py",
    "tests/test_serving.py",
    "tests/test_serving_client.py",
    "tests/test_study.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` (``make test``): each module of ``ONE_WORKER_MODULES`` is one unit of work, every
    other test its own unit (as with ``--dist load``); units with more tests are sent first. (xdist 3.8's own
    ``xdist_group`` marks have no effect under pytest 9.2: it renames ``item._nodeid``, which pytest 9.2 no
    longer reads, so the grouping is done here, from the node ids.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            if nodeid.rfind("@") > nodeid.rfind("]"):  # an xdist_group suffix, should xdist set one again
                return nodeid.split("@")[-1]
            path = nodeid.split("::", 1)[0]
            return path if path in ONE_WORKER_MODULES else nodeid

    return ModuleGroups(config, log)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, tests marked ``slow`` are handed out first (a stable sort: the order of the rest
    is kept), so the last minutes do not leave one worker waiting on a long test started late. Every worker
    collects and sorts the same list, as xdist requires. Without xdist the order is untouched (a
    module-scoped fixture stays built for its module's tests)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def run_python(*args, timeout=600) -> str:
    """``python *args`` from the project's root in a new process (it must exit 0); its stdout."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=True, cwd=root
    )
    return done.stdout


def tensors(log_dir) -> dict:
    """tag -> tensor events of the event files in ``log_dir`` (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return {tag: acc.Tensors(tag) for tag in acc.Tags()["tensors"]}


def docstring_examples(module, request) -> tuple:
    """``(attempted, failed)`` of ``doctest.testmod(module)``, run once per session: when this session also runs
    the module's docstrings as doctest items (``make test``: ``--doctest-modules tf_selopt``), a failing example
    fails that item, so they are not run a second time here; only counted (``failed`` 0)."""
    import doctest
    import pathlib

    path = pathlib.Path(module.__file__).resolve()
    if any(type(item).__name__ == "DoctestItem" and item.path.resolve() == path for item in request.session.items):
        return sum(len(test.examples) for test in doctest.DocTestFinder().find(module)), 0
    result = doctest.testmod(module)
    return result.attempted, result.failed


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
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH = 16  # make_data's 64 examples -> 4 steps per epoch


def fit(model, optimizer, x, y, epochs, callbacks=(), jit_compile=False):
    """``model.fit`` in batches of ``BATCH``, unshuffled; compiled with ``optimizer`` and ``LOSS`` first unless it
    already is (``optimizer`` then keeps its state and step count across calls)."""
    if not model.compiled or model.optimizer is not optimizer:
        model.compile(optimizer=optimizer, loss=LOSS, jit_compile=jit_compile)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))


INNER = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-2),
}


class AdamWithOwnUpdateStep(keras.optimizers.Adam):
    """A user subclass of Adam that overrides ``update_step`` (here only to call Adam's): tf_selopt cannot know
    what it does, so it gets no profile (``tf_selopt.keras.profiles``) and runs masked, with a restore."""

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(gradient, variable, learning_rate)


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
def fresh_keras_names():
    """``keras.backend.clear_session`` before the test, so that layer and variable names start from scratch
    (without its ``gc.collect()``: 1-3 s in a grown worker). Modules that compare names or build many models
    use it for every test: ``pytestmark = pytest.mark.usefixtures("fresh_keras_names")``."""
    keras.backend.clear_session(free_memory=False)


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
