"""SelectiveOptimizer (+ pruning) under tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy.

MirroredStrategy runs over 2 logical CPU devices (``model.fit`` with
GradualPruning, and a custom ``strategy.run`` loop), MultiWorkerMirroredStrategy
over 2 worker processes on 127.0.0.1 (TF_CONFIG; custom loop with one-shot
``prune``: Keras 3.15's own ``model.fit`` fails under it, see
``test_multi_worker_model_fit_works_whenever_keras_does``). Devices and cluster
must be set before TensorFlow starts, so each runs in a subprocess: this file
run as a script (``python tests/test_distributed.py CONFIG_JSON``) trains the
scenarios and prints one JSON line of per-replica read-outs. The tests compare
them across replicas and workers (bit for bit) and with a single-device run in
this process on the same global batches (masks equal, scores and weights within
float32 tolerance: the all-reduced gradient sums in another order).

The model is a Dense MLP without BatchNormalization: BN normalizes each
replica's half batch on its own, so its gradients are not the global batch's.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest

from tf_selopt.core.selection import resolve_count

TIMEOUT = 300  # seconds per subprocess run (TF import + a few tiny fits; generous for a loaded 2-core machine)
GLOBAL_BATCH = 16
EPOCHS = 3  # 64 examples -> 4 steps per epoch, 12 steps
WARMUP, WINDOW, KEEP = 5, 3, 0.25
SPARSITY = 0.5
SCENARIOS = {
    "fit_gradient_sum_adam": dict(criterion="gradient_sum", inner="adam", pruning=False, driver="fit"),
    "fit_preconditioned_sgd": dict(criterion="preconditioned", inner="sgd_momentum", pruning=False, driver="fit"),
    "fit_gradient_sum_pruning": dict(criterion="gradient_sum", inner="adam", pruning=True, driver="fit"),
    "fit_per_phase_pruning": dict(criterion="gradient_sum", inner="adam", pruning=True, driver="fit_per_phase"),
    "loop_gradient_sum_adam": dict(criterion="gradient_sum", inner="adam", pruning=False, driver="loop"),
    "loop_preconditioned_pruning": dict(criterion="preconditioned", inner="sgd_momentum", pruning=True, driver="loop"),
    # the other restricted-phase path (every scenario above runs selected-only, the default where it is exact)
    "fit_masked_adam": dict(criterion="gradient_sum", inner="adam", pruning=False, driver="fit", update="masked"),
}
# Under MirroredStrategy, fit with pruning runs once, with per-phase traces (on one device those equal the general
# step bit for bit: test_per_phase_traces_change_nothing_on_one_device); the general step runs without pruning.
MIRRORED = [n for n in SCENARIOS if n.startswith("fit_") and n != "fit_gradient_sum_pruning"] + [
    "loop_gradient_sum_adam",
    "calibrate_fit",
]
MULTI_WORKER = [name for name in SCENARIOS if name.startswith("loop_")]
SCORE_TOL = dict(rtol=1e-4, atol=1e-6)
WEIGHT_TOL = dict(rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------- the training run
def _data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=(64,)).astype("int32")
    return x, y


def _model():
    """Dense(16, relu) -> Dense(3) with weights from a fixed numpy seed (the same in every process)."""
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _local(variable) -> list:
    """Each replica's copy of a variable on this process, flattened (one entry without a strategy)."""
    import tensorflow as tf

    value = getattr(variable, "value", variable)
    return [np.asarray(x).ravel() for x in tf.distribute.get_strategy().experimental_local_results(value)]


def _concat(variables) -> list:
    """Per replica: all ``variables`` flattened and concatenated."""
    per_variable = [_local(v) for v in variables]
    return [np.concatenate([copies[r] for copies in per_variable]) for r in range(len(per_variable[0]))]


def _fit(model, optimizer, x, y, pruning, snapshot, per_phase=False):
    """``model.fit`` on the global batches; GradualPruning prunes the kernels at step 2 (in warm-up);
    ``per_phase``: with ``TracePerPhase``."""
    import keras

    import tf_selopt
    from tf_selopt.core.schedules import ConstantSparsity
    from tf_selopt.keras import pruning as pruning_lib

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if int(optimizer.iterations.numpy()) == WARMUP:
                snapshot.append(_concat(model.trainable_variables))

    callbacks = [Snapshot()]
    if pruning:
        callbacks.append(pruning_lib.GradualPruning(ConstantSparsity(SPARSITY, begin_step=2, frequency=100)))
    if per_phase:
        callbacks.append(tf_selopt.TracePerPhase(keep_scores=True))
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)


def _loop(model, optimizer, x, y, pruning, snapshot):
    """A custom loop: ``strategy.run`` of a step that calls ``optimizer.apply``, on the same global
    batches (split across replicas, DATA auto-sharding across workers); ``prune`` once before training."""
    import keras
    import tensorflow as tf

    from tf_selopt.keras import pruning as pruning_lib

    strategy = tf.distribute.get_strategy()
    if pruning:
        pruning_lib.prune(model, SPARSITY)
    optimizer.build(model.trainable_variables)  # in the strategy's scope, not inside the tf.function
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).with_options(options)
    dataset = strategy.experimental_distribute_dataset(dataset)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(loss_fn(yb, model(xb, training=True)), global_batch_size=GLOBAL_BATCH)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    train_step = tf.function(lambda batch: strategy.run(replica_step, args=batch))
    for _ in range(EPOCHS):
        for batch in dataset:
            if int(optimizer.iterations.numpy()) == WARMUP:
                snapshot.append(_concat(model.trainable_variables))
            train_step(batch)


def train(criterion: str, inner: str, pruning: bool, driver: str, update: str = "auto") -> dict:
    """Train under the current strategy (``driver`` "fit" or "loop"); returns JSON-able read-outs:
    per replica on this process, masks, scores, weights, the weights before the selection step and, on the
    selected-only path, the selected positions and values."""
    import keras
    import tensorflow as tf

    import tf_selopt
    from tf_selopt.keras import pruning as pruning_lib

    x, y = _data()
    strategy = tf.distribute.get_strategy()
    inners = {
        "adam": lambda: keras.optimizers.Adam(1e-2),
        "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    }
    with strategy.scope():
        model = _model()
        optimizer = tf_selopt.SelectiveOptimizer(
            inners[inner](),
            criterion=criterion,
            keep=KEEP,
            warmup_steps=WARMUP,
            window=WINDOW,
            seed=0,
            num_examples=len(x),
            update=update,
        )
        optimizer.keep_scores = True  # compared below (the selection releases them otherwise)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        snapshot = []
        drivers = {"fit": _fit, "fit_per_phase": functools.partial(_fit, per_phase=True), "loop": _loop}
        drivers[driver](model, optimizer, x, y, pruning, snapshot)
    out = {
        "replicas": strategy.num_replicas_in_sync,
        "path": optimizer.update_path,
        "selected": _concat(_selected_state(optimizer)) if optimizer.update_path == "selected_only" else [],
        "k": optimizer.k,
        "iterations": int(optimizer.iterations.numpy()),
        "selections": int(optimizer.selections.numpy()),
        "selected_count": int(optimizer.selected_count),
        "masks": _concat(optimizer.masks),
        "scores": _concat(optimizer.scores),
        "weights": _concat(model.trainable_variables),
        "snapshot": snapshot[0],
    }
    if pruning:
        kernels = pruning_lib.prunable_variables(model)
        out["pruned_count"] = int(optimizer.pruned_count)
        out["prunable"] = sum(int(np.prod(v.shape)) for v in kernels)
        out["kernels"] = _concat(kernels)
        out["pruning_masks"] = _concat([pruning_lib.pruning_mask(v) for v in kernels])
    return {key: [a.tolist() for a in value] if isinstance(value, list) else value for key, value in out.items()}


def _selected_state(optimizer) -> list:
    """The selected-only state's positions and values (one of each per dtype: here float32)."""
    return [v for v in optimizer.variables if v.name.startswith(("selected_positions", "selected_values"))]


def calibrate_fit() -> dict:
    """``tf_selopt.calibrate`` (fisher, 2 global batches) under the current strategy, then ``fit`` with the
    masks (``SelectiveOptimizer(masks=...)``): the masks, per replica the weights, and the update path."""
    import keras
    import tensorflow as tf

    import tf_selopt

    x, y = _data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = _model()
        before = _concat(model.trainable_variables)
        masks = tf_selopt.calibrate(model, (x, y), loss=loss, keep=KEEP, steps=2, batch_size=GLOBAL_BATCH)
        unchanged = all(np.array_equal(a, b) for a, b in zip(before, _concat(model.trainable_variables)))
        optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), masks=masks)
        model.compile(optimizer=optimizer, loss=loss)
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "unchanged": unchanged,
        "path": optimizer.update_path,
        "selected": [a.tolist() for a in _concat(_selected_state(optimizer))],
        "masks": np.concatenate([m.ravel() for m in masks]).tolist(),
        "before": before[0].tolist(),
        "weights": [a.tolist() for a in _concat(model.trainable_variables)],
    }


def plain_fit() -> str:
    """``model.fit`` with a plain Keras Adam under the current strategy: "ok" or the error's last line."""
    import keras
    import tensorflow as tf

    x, y = _data()
    with tf.distribute.get_strategy().scope():
        model = _model()
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    try:
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    except Exception as error:  # reported, for the upstream-status test
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return "ok"


def _worker_main(config: dict) -> None:
    """Subprocess entry: set up devices or the cluster, pick the strategy, run the scenarios, print JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tf_config" in config:
        os.environ["TF_CONFIG"] = json.dumps(config["tf_config"])
    import keras
    import tensorflow as tf

    keras.config.disable_traceback_filtering()  # full tracebacks in the reports
    if config["strategy"] == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    results = {}
    with strategy.scope():
        for name in config["scenarios"]:
            try:
                special = {"plain_fit": plain_fit, "calibrate_fit": calibrate_fit}
                results[name] = special[name]() if name in special else train(**SCENARIOS[name])
            except Exception:  # reported per scenario; the others still run
                results[name] = {"error": traceback.format_exc()}
    print("RESULT " + json.dumps(results), flush=True)


# ------------------------------------------------------------ the subprocesses
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_workers(configs: list) -> tuple:
    """Start one subprocess per config, wait at most TIMEOUT s, kill leftovers; returns (results, seconds)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for config in configs
    ]
    outputs = []
    try:
        for proc in procs:
            remaining = max(1.0, TIMEOUT - (time.monotonic() - start))
            outputs.append(proc.communicate(timeout=remaining))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    results = []
    for proc, (stdout, stderr) in zip(procs, outputs):
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"worker failed (rc={proc.returncode}):\n{stderr[-4000:]}"
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    return results, time.monotonic() - start


@pytest.fixture(scope="module")
def reference():
    """Single-device runs in this process (no strategy), same data and global batches."""
    return {name: train(**scenario) for name, scenario in SCENARIOS.items()}


@pytest.fixture(scope="module")
def mirrored():
    (result,), seconds = _run_workers([{"strategy": "mirrored", "scenarios": MIRRORED}])
    print(f"MirroredStrategy run: {seconds:.1f} s")
    return result


@pytest.fixture(scope="module")
def multi_worker():
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    names = MULTI_WORKER + ["plain_fit", "fit_gradient_sum_adam"]
    configs = [
        {
            "strategy": "multi_worker",
            "scenarios": names,
            "tf_config": {"cluster": cluster, "task": {"type": "worker", "index": i}},
        }
        for i in range(2)
    ]
    results, seconds = _run_workers(configs)
    print(f"MultiWorkerMirroredStrategy run (2 workers): {seconds:.1f} s")
    return results


# ------------------------------------------------------------------ the checks
def _check_consistent(run: dict, replicas: int, scenario: dict) -> None:
    """All replicas hold bit-identical masks, scores, weights and selected-only state (positions and values);
    the scenario's update path; exactly k selected; frozen entries kept."""
    assert "error" not in run, run.get("error")
    assert run["replicas"] == replicas and len(run["masks"]) == len(run["weights"]) >= 1
    assert run["iterations"] == EPOCHS * 64 // GLOBAL_BATCH and run["selections"] == 1
    assert run["path"] == ("masked" if scenario.get("update") == "masked" else "selected_only")
    assert len(run["selected"]) == (0 if run["path"] == "masked" else len(run["weights"]))
    for key in ("masks", "scores", "weights") + (("selected",) if run["selected"] else ()):
        first = np.asarray(run[key][0])
        for other in run[key][1:]:
            np.testing.assert_array_equal(np.asarray(other), first, err_msg=key)
    masks = np.asarray(run["masks"][0], bool)
    assert run["selected_count"] == run["k"] == int(masks.sum()) == resolve_count(KEEP, masks.size)
    snapshot = np.asarray(run["snapshot"][0])
    for weights in run["weights"]:
        weights = np.asarray(weights)
        assert np.array_equal(weights[~masks], snapshot[~masks])  # frozen: bit-identical
        assert np.any(weights[masks] != snapshot[masks])  # selected ones did train


def _check_matches_reference(run: dict, ref: dict) -> None:
    for key in ("scores", "weights"):
        print(f"max |{key} - single device| = {np.max(np.abs(np.subtract(run[key][0], ref[key][0]))):.3g}")
    np.testing.assert_array_equal(np.asarray(run["masks"][0]), np.asarray(ref["masks"][0]))
    np.testing.assert_allclose(run["scores"][0], ref["scores"][0], **SCORE_TOL)
    np.testing.assert_allclose(run["weights"][0], ref["weights"][0], **WEIGHT_TOL)


def _check_pruning(run: dict) -> None:
    planned = int(np.floor(SPARSITY * run["prunable"] + 0.5))
    assert run["pruned_count"] == planned
    for kernels, keep in zip(run["kernels"], run["pruning_masks"]):
        keep = np.asarray(keep, bool)
        assert int((~keep).sum()) == planned
        assert np.all(np.asarray(kernels)[~keep] == 0.0)  # pruned: exactly zero


@pytest.mark.slow
def test_calibrate_and_given_masks_under_mirrored_match_single_device(mirrored):
    run, ref = mirrored["calibrate_fit"], calibrate_fit()
    assert "error" not in run, run.get("error")
    assert run["replicas"] == 2 and run["unchanged"] and run["path"] == "selected_only"
    for selected in run["selected"][1:]:  # the k selected positions and values: the same on every replica
        np.testing.assert_array_equal(np.asarray(selected), np.asarray(run["selected"][0]))
    masks = np.asarray(run["masks"], bool)
    np.testing.assert_array_equal(masks, np.asarray(ref["masks"], bool))
    assert int(masks.sum()) == resolve_count(KEEP, masks.size)
    before = np.asarray(run["before"])
    for weights in run["weights"]:  # every replica: frozen bit-identical, selected trained, as one device
        weights = np.asarray(weights)
        np.testing.assert_array_equal(weights, np.asarray(run["weights"][0]))
        assert np.array_equal(weights[~masks], before[~masks]) and np.all(weights[masks] != before[masks])
    np.testing.assert_allclose(run["weights"][0], ref["weights"][0], **WEIGHT_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in MIRRORED if name in SCENARIOS])
def test_mirrored_two_devices_matches_single_device(mirrored, reference, name):
    run = mirrored[name]
    _check_consistent(run, replicas=2, scenario=SCENARIOS[name])
    assert len(run["masks"]) == 2  # both replicas' copies were compared
    _check_matches_reference(run, reference[name])
    if SCENARIOS[name]["pruning"]:
        _check_pruning(run)


def test_per_phase_traces_change_nothing_on_one_device(reference):
    general, per_phase = reference["fit_gradient_sum_pruning"], reference["fit_per_phase_pruning"]
    assert general.keys() == per_phase.keys()
    for key, value in general.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(per_phase[key]), err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("name", MULTI_WORKER)
def test_multi_worker_two_processes_matches_single_device(multi_worker, reference, name):
    runs = [worker[name] for worker in multi_worker]
    for run in runs:
        _check_consistent(run, replicas=2, scenario=SCENARIOS[name])
        _check_matches_reference(run, reference[name])
        if SCENARIOS[name]["pruning"]:
            _check_pruning(run)
    for key in ("masks", "scores", "weights", "selected"):  # across workers: bit for bit (the loops: selected-only)
        np.testing.assert_array_equal(np.asarray(runs[0][key][0]), np.asarray(runs[1][key][0]), err_msg=key)


@pytest.mark.slow
def test_multi_worker_model_fit_works_whenever_keras_does(multi_worker, reference):
    """Keras 3.15's own ``model.fit`` fails under MultiWorkerMirroredStrategy with 2 workers
    (keras-team/keras#20585: its symbolic build reduces a nest of PerReplica batches); ours must
    then fail the same way (not in tf_selopt), and must pass every check once Keras' fit works."""
    for worker in multi_worker:
        plain, ours = worker["plain_fit"], worker["fit_gradient_sum_adam"]
        if plain == "ok":
            _check_consistent(ours, replicas=2, scenario=SCENARIOS["fit_gradient_sum_adam"])
            _check_matches_reference(ours, reference["fit_gradient_sum_adam"])
        else:
            assert plain.startswith("ValueError: Attempt to convert a value (PerReplica"), plain
            assert "error" in ours and plain in ours["error"] and "_maybe_symbolic_build" in ours["error"]
            assert "tf_selopt" not in ours["error"].split("_maybe_symbolic_build")[1]


def test_apply_outside_a_replica_context_is_refused_before_any_change():
    """Under a strategy, ``apply`` from cross-replica context (not in ``fit``/``strategy.run``) raises."""
    import keras
    import tensorflow as tf

    import tf_selopt

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _model()
        optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), keep=KEEP, warmup_steps=2, window=1)
        optimizer.build(model.trainable_variables)
        before = [v.numpy() for v in model.trainable_variables]
        grads = [tf.ones_like(v) for v in model.trainable_variables]
        with pytest.raises(ValueError, match="replica context"):
            optimizer.apply(grads, model.trainable_variables)
    assert int(optimizer.iterations.numpy()) == 0 and int(optimizer.window_count.numpy()) == 0
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), b)


if __name__ == "__main__":
    _worker_main(json.loads(sys.argv[1]))
