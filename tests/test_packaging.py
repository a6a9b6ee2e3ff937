"""Packaging: the CLI answers --help without TensorFlow and prints no C++ start-up lines; ``import tf_selopt``
is lazy; the library's own use loads none of the extras' packages; a missing extra is named.

(The base install without any extra is tried for real by scripts/smoke_install.sh, CI's `make smoke`.)
"""

import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
STARTUP_LINES = ("I0000", "port.cc", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard")
# packages of the extras that `import keras` does not load by itself (it loads matplotlib and sklearn when
# they are installed, so those two are checked only by the base-install smoke test)
EXTRAS_NOT_LOADED_BY_KERAS = (
    "mlxtend",
    "pydantic",
    "yaml",
    "tqdm",
    "ai_edge_litert",
    "tf_keras",
    "tensorflow_model_optimization",
)


def _python(code, *args, env=None, timeout=120):
    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must silence TensorFlow by itself
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        cwd=ROOT,
    )


def test_help_does_not_import_tensorflow():
    code = """
import sys, time
start = time.perf_counter()
from tf_selopt.cli import main
for args in (["--help"], ["demo", "--help"], ["study", "--help"], ["export", "--help"], ["bench", "--help"]):
    try:
        main(args, prog_name="selopt")
    except SystemExit as e:
        assert e.code == 0, (args, e.code)
print("seconds", time.perf_counter() - start)
print("loaded", sorted(m for m in ("tensorflow", "keras", "numpy") if m in sys.modules))
"""
    start = time.perf_counter()
    result = _python(code)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert "loaded []" in result.stdout, result.stdout
    assert "Usage: selopt export" in result.stdout
    assert elapsed < 2.5, elapsed  # importing TensorFlow alone takes ~3 s here


def test_command_prints_no_startup_lines(tmp_path):
    result = _python(None, "-m", "tf_selopt", "plot", str(tmp_path))
    assert result.returncode == 1
    assert "holds no finished runs" in result.stderr
    assert not [line for line in result.stderr.splitlines() if any(s in line for s in STARTUP_LINES)], result.stderr


def test_startup_filter_keeps_warnings_and_errors():
    from tf_selopt.cli import _STARTUP_NOISE

    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796119602.956971   24734 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796119602.957295   24734 cudart_stub.cc:31] Could not find cuda drivers on your machine",
    ]
    kept = [
        "W0000 00:00:1796119602.957295   24734 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
        "E0000 00:00:1796119602.957295   24734 cuda_dnn.cc:8310] Unable to register cuDNN factory",
        "Traceback (most recent call last):",
        "ImportError: libfoo.so: cannot open shared object file",
    ]
    assert all(_STARTUP_NOISE.match(line) for line in noise)
    assert not any(_STARTUP_NOISE.match(line) for line in kept)


def test_import_is_lazy_and_keeps_the_public_names():
    code = """
import sys
import tf_selopt
assert "tensorflow" not in sys.modules and "keras" not in sys.modules
assert set(tf_selopt.__all__) <= set(dir(tf_selopt))
import keras
assert keras.saving.get_registered_object("tf_selopt>SelectiveOptimizer") is None  # nothing imported yet
names = {name: getattr(tf_selopt, name) for name in tf_selopt.__all__}
assert keras.saving.get_registered_object("tf_selopt>SelectiveOptimizer") is tf_selopt.SelectiveOptimizer
assert tf_selopt.deploy.__name__ == "tf_selopt.deploy" and tf_selopt.criteria.get  # subpackages resolve as attributes
try:
    tf_selopt.nope
except AttributeError as e:
    print("ok", e)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "ok module 'tf_selopt' has no attribute 'nope'" in result.stdout


def test_import_after_keras_registers_serializables():
    code = """
import keras
import tf_selopt
assert keras.saving.get_registered_object("tf_selopt>SelectiveOptimizer") is not None
print("ok")
"""
    result = _python(code)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_library_use_loads_no_extra():
    code = f"""
import sys
import keras, numpy as np
before = set(sys.modules)
import tf_selopt
from tf_selopt.deploy import export
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(), keep=0.5, warmup_steps=2, window=2, seed=0)
model.compile(optimizer=optimizer, loss="mse")
model.fit(np.ones((8, 4), "float32"), np.ones((8, 3), "float32"), epochs=2, batch_size=2, verbose=0)
tf_selopt.prune(model, 0.5)
loaded = sorted(m for m in {EXTRAS_NOT_LOADED_BY_KERAS!r} if m in set(sys.modules) - before)
print("extras", loaded)
"""
    result = _python(code, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "extras []" in result.stdout, result.stdout


# `sys.modules[name] = None` is Python's own way to make `import name` fail (ModuleNotFoundError)
def test_missing_extra_is_named_by_the_package():
    code = """
import sys
sys.modules["tf_keras"] = None
import tf_selopt
try:
    from tf_selopt.keras2 import tfmot_bridge
except ImportError as e:
    print(e)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "pip install 'tf_selopt[tf_keras]'" in result.stdout, result.stdout


def test_missing_extra_is_named_by_the_cli(tmp_path):
    code = f"""
import sys
sys.modules["pydantic"] = None
from tf_selopt.cli import CONFIGS, main
main(["study", "--config", str(CONFIGS / "demo.yaml"), "--out", {str(tmp_path / "out")!r}], prog_name="selopt")
"""
    result = _python(code)
    assert result.returncode == 1, result.stderr
    assert "Error: " in result.stderr and "pip install 'tf_selopt[study]'" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
