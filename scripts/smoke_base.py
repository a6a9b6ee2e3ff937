"""Smoke test of a base install (``pip install tf_selopt``, no extras), run by scripts/smoke_install.sh.

Trains a small MLP with SelectiveOptimizer on random data, prunes it, exports a SavedModel, and checks
that none of the extras' packages was imported (nor is installed, in the fresh venv of the smoke test).
"""

import importlib.util
import math
import sys
import tempfile

EXTRAS = (
    "matplotlib",
    "sklearn",
    "mlxtend",
    "pydantic",
    "yaml",
    "tqdm",
    "ai_edge_litert",
    "tf_keras",
    "tensorflow_model_optimization",
)

import tf_selopt  # noqa: E402

assert "tensorflow" not in sys.modules, "import tf_selopt loaded TensorFlow"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_selopt.deploy import export  # noqa: E402

keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(256, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), keep=0.25, warmup_steps=8, window=4, seed=0)
model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, batch_size=32, epochs=3, verbose=0)
assert int(optimizer.selected_count) == math.floor(0.25 * optimizer.num_parameters + 0.5), int(optimizer.selected_count)
tf_selopt.prune(model, sparsity=0.5)
with tempfile.TemporaryDirectory() as tmp:
    result = export.export_saved_model(model, tmp, "m", 1)
loaded = sorted(m for m in EXTRAS if m in sys.modules)
installed = sorted(m for m in EXTRAS if importlib.util.find_spec(m) is not None)
print(
    f"python {sys.version.split()[0]}: trained, selected {int(optimizer.selected_count)} of "
    f"{optimizer.num_parameters}, pruned, exported {result.size_bytes:,} B; "
    f"extras loaded {loaded}, installed {installed}"
)
assert not loaded, loaded
