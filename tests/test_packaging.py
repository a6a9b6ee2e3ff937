"""Packaging: the CLI answers --help without TensorFlow and prints no C++ start-up lines; ``import tf_selopt``
is lazy; the library's own use loads none of the extras' packages; a missing extra is named.

(The base install without any extra is tried for real by scripts/smoke_install.sh, CI's `make smoke`.)
"""

import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
STARTUP_LINES = ("I0000", "port.cc", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard", "cuInit", "To enable")
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
        "E0000 00:00:1796641050.574178   27755 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
        "Failed call to cuInit: UNKNOWN ERROR (303)",
    ]
    kept = [
        "W0000 00:00:1796119602.957295   24734 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
        "E0000 00:00:1796119602.957295   24734 cuda_dnn.cc:8310] Unable to register cuDNN factory",
        "Traceback (most recent call last):",
        "ImportError: libfoo.so: cannot open shared object file",
    ]
    assert all(_STARTUP_NOISE.match(line) for line in noise)
    assert not any(_STARTUP_NOISE.match(line) for line in kept)


def test_startup_filter_drops_a_dropped_messages_continuation_lines_only():
    from tf_selopt.cli import startup_output_without_noise

    text = (
        "I0000 00:00:1796643226.3 30439 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to use...\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
        "W0000 00:00:1796643226.3 30439 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n"
        "a continuation of the warning, kept\n"
        "E0000 00:00:1796643226.3 30439 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
        "Traceback (most recent call last):\n"
    )
    assert startup_output_without_noise(text) == (
        "W0000 00:00:1796643226.3 30439 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n"
        "a continuation of the warning, kept\n"
        "Traceback (most recent call last):\n"
    )


def _facts(code, timeout=120):
    """Run ``code`` in a fresh interpreter that ends by printing one JSON object; (that object, the result)."""
    result = _python(code, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), result


# Each fresh interpreter that imports TensorFlow and Keras costs ~11 s here, so the checks that need one share
# it where their import order allows: one process imports tf_selopt before Keras (laziness), one Keras before
# tf_selopt (registration, library use). A check that blocks an extra (`sys.modules[name] = None`, Python's own
# way to make `import name` fail) runs last in its process, after asserting that the package is not loaded yet,
# so that nothing before it ran without the extra. The CLI command of test_command_prints_no_startup_lines keeps
# its own process (its stderr is the check).


def test_import_is_lazy_and_keeps_the_public_names_and_a_missing_tf_keras_is_named():
    """tf_selopt first, then Keras: ``import tf_selopt`` loads neither TensorFlow nor Keras; the public names are
    in ``dir``; the first use of one registers our serializables; subpackages resolve as attributes; an unknown
    name is an AttributeError. Then, with ``tf_keras`` blocked: importing the tfmot bridge names the extra."""
    code = """
import json, sys
facts = {}
import tf_selopt
facts["loaded by import tf_selopt"] = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
facts["public names not in dir"] = sorted(set(tf_selopt.__all__) - set(dir(tf_selopt)))
import keras
facts["registered before first use"] = keras.saving.get_registered_object("tf_selopt>SelectiveOptimizer") is not None
names = {name: getattr(tf_selopt, name) for name in tf_selopt.__all__}
facts["registered after first use"] = (
    keras.saving.get_registered_object("tf_selopt>SelectiveOptimizer") is tf_selopt.SelectiveOptimizer
)
facts["tf_selopt.deploy"] = tf_selopt.deploy.__name__  # subpackages resolve as attributes
facts["tf_selopt.criteria.get"] = bool(tf_selopt.criteria.get)
try:
    tf_selopt.nope
    facts["tf_selopt.nope"] = "no AttributeError"
except AttributeError as e:
    facts["tf_selopt.nope"] = str(e)

facts["loaded before blocking tf_keras"] = sorted(m for m in ("tf_keras", "tf_selopt.keras2") if m in sys.modules)
sys.modules["tf_keras"] = None
try:
    from tf_selopt.keras2 import tfmot_bridge
    facts["tfmot_bridge without tf_keras"] = "imported"
except ImportError as e:
    facts["tfmot_bridge without tf_keras"] = str(e)
print(json.dumps(facts))
"""
    facts, _ = _facts(code)
    assert facts["loaded by import tf_selopt"] == [], facts
    assert facts["public names not in dir"] == [], facts
    assert facts["registered before first use"] is False, facts  # nothing imported yet
    assert facts["registered after first use"] is True, facts
    assert facts["tf_selopt.deploy"] == "tf_selopt.deploy" and facts["tf_selopt.criteria.get"] is True, facts
    assert facts["tf_selopt.nope"] == "module 'tf_selopt' has no attribute 'nope'", facts
    assert facts["loaded before blocking tf_keras"] == [], facts  # else the next check would not be one
    assert "pip install 'tf_selopt[tf_keras]'" in facts["tfmot_bridge without tf_keras"], facts


def test_import_after_keras_registers_and_library_use_loads_no_extra_and_a_missing_study_extra_is_named(tmp_path):
    """Keras first, then tf_selopt: the import registers our serializables; fit, ``prune`` and the deploy module
    load none of the extras' packages that Keras does not load itself. Then, with ``pydantic`` blocked:
    ``selopt study`` exits 1 with an error that names the extra, and writes nothing."""
    out = tmp_path / "out"
    code = f"""
import json, sys
import keras, numpy as np
before = set(sys.modules)
import tf_selopt
facts = {{}}
facts["registered by import after keras"] = (
    keras.saving.get_registered_object("tf_selopt>SelectiveOptimizer") is not None
)

from tf_selopt.deploy import export
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(), keep=0.5, warmup_steps=2, window=2, seed=0)
model.compile(optimizer=optimizer, loss="mse")
model.fit(np.ones((8, 4), "float32"), np.ones((8, 3), "float32"), epochs=2, batch_size=2, verbose=0)
tf_selopt.prune(model, 0.5)
loaded = set(sys.modules) - before
facts["extras loaded by library use"] = sorted(m for m in {EXTRAS_NOT_LOADED_BY_KERAS!r} if m in loaded)

facts["loaded before blocking pydantic"] = sorted(m for m in ("pydantic", "tf_selopt.study.config") if m in sys.modules)
sys.modules["pydantic"] = None
from tf_selopt.cli import CONFIGS, main
print("--- selopt study ---", file=sys.stderr, flush=True)
try:
    main(["study", "--config", str(CONFIGS / "demo.yaml"), "--out", {str(out)!r}], prog_name="selopt")
    facts["selopt study exit code"] = "returned"
except SystemExit as e:
    facts["selopt study exit code"] = e.code
sys.stderr.flush()
print(json.dumps(facts))
"""
    facts, result = _facts(code, timeout=180)
    assert facts["registered by import after keras"] is True, facts
    assert facts["extras loaded by library use"] == [], facts
    assert facts["loaded before blocking pydantic"] == [], facts  # else the next check would not be one
    cli_stderr = result.stderr.split("--- selopt study ---\n", 1)[-1]
    assert facts["selopt study exit code"] == 1, (facts, cli_stderr)
    assert "Error: " in cli_stderr and "pip install 'tf_selopt[study]'" in cli_stderr, cli_stderr
    assert not out.exists()
