"""Resume: a run interrupted in the warm-up window or in the masked phase and restored from
``tf.train.Checkpoint``, a ``.keras`` file or Keras' ``BackupAndRestore`` ends bit-identical to an
uninterrupted run (every model weight, every optimizer variable: inner state, masks, scores,
criterion state, ``iterations``, ``selections``, ``window_count``, ``skipped_steps``; pruning masks).

TensorFlow op determinism is process-global, so the runs happen in one Python process of their own
(``python -c``: this module's ``_run``, every mechanism after a fresh Keras session), which writes the
final states to an ``.npz`` file; the assertions run here. One run = 32 batches of 16 (4 per epoch, no
shuffle) on conftest's sequential model (Dense+BatchNorm+Dense, N = 99), ``SelectiveOptimizer(Adam)`` with
``warmup_steps=10, window=4, reselect_every=5`` (selections at steps 10, 15, 20). The second
batch of every epoch has a NaN sample weight, so it is skipped (8 skipped, 24 finite steps; the
window of step 10 spans a skipped batch). The ``fit`` runs add ``GradualPruning`` with
``PolynomialDecay(0 -> 0.5)`` pruning at steps 4, 8, ..., 20.

Interruptions (batches done when the run stops; what is restored):

* ``checkpoint`` (custom loop, ``tf.train.Checkpoint(model, optimizer)`` after any batch): after
  11 batches (warm-up, step 8, window of step 10 started) and after 25 (masked, step 19, two
  selections done, window of step 20 half full); the loop resumes at batch
  ``iterations + skipped_steps``.
* ``keras_file`` (``model.save`` at an epoch end, ``keras.saving.load_model``, then
  ``tf_selopt.mask_zeros`` for the pruning masks, which are not saved): after epochs 3 and 6.
* ``backup_and_restore`` (a callback raises before batch 14 or 26; a *new* model, optimizer and
  callbacks ``fit`` again with the same backup dir): Keras 3.15 restores the last epoch-end
  backup (``save_freq="epoch"``) and replays the interrupted epoch from its start.
  ``GradualPruning`` must be listed after ``BackupAndRestore``: it re-derives its masks from the
  restored zeros at ``on_train_begin``.
"""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, PER_EPOCH, EPOCHS = 16, 4, 8
BATCHES = PER_EPOCH * EPOCHS
NAN_BATCH = 1  # of each epoch
# mechanism -> {point: batches done before the interruption is restored}
POINTS = {
    "checkpoint": {"warmup": 11, "masked": 25},
    "keras_file": {"warmup": 12, "masked": 24},
    "backup_and_restore": {"warmup": 12, "masked": 24},
}
RAISE_AT = {"warmup": 14, "masked": 26}  # backup_and_restore: the batch that raises


# ------------------------------------------------------- the runs (subprocess)
def _setup():
    import keras
    import tensorflow as tf
    from conftest import make_data, make_model

    import tf_selopt

    x, y = make_data("sequential", n=BATCH * PER_EPOCH)
    sample_weight = np.ones(len(y), np.float32)
    sample_weight[NAN_BATCH * BATCH + 3] = np.nan

    def new_model(seed=0):
        model = make_model("sequential", seed=seed)
        optimizer = tf_selopt.SelectiveOptimizer(
            keras.optimizers.Adam(1e-2), keep=0.2, warmup_steps=10, window=4, reselect_every=5, seed=0
        )
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def pruning():
        schedule = tf_selopt.core.schedules.PolynomialDecay(0.0, 0.5, begin_step=4, end_step=20, frequency=4)
        return tf_selopt.GradualPruning(schedule)

    return tf, keras, tf_selopt, x, y, sample_weight, new_model, pruning


def _state(model):
    """Positional snapshot: model weights, optimizer variables, pruning masks, counters."""
    from tf_selopt.keras.pruning import pruning_mask

    opt = model.optimizer
    out = {f"model/{i}": v.numpy() for i, v in enumerate(model.weights)}
    out.update({f"opt/{i}": v.numpy() for i, v in enumerate(opt.variables)})
    out.update(
        {f"prune/{i}": pruning_mask(v).numpy() for i, v in enumerate(model.weights) if pruning_mask(v) is not None}
    )
    for name in ("iterations", "selections", "window_count", "skipped_steps"):
        out[f"count/{name}"] = np.array(getattr(opt, name).numpy())
    return out


def _checkpoint_runs(tmp, tf, keras, tf_selopt, x, y, sample_weight, new_model, pruning):
    """Custom loop; one batch = ``x[b % 4]``; checkpoint after ``stop`` batches, restore into a new model."""

    def train(model, start, stop):
        opt = model.optimizer
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(xb, yb, wb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True), sample_weight=wb)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

        for b in range(start, stop):
            i = (b % PER_EPOCH) * BATCH
            step(x[i : i + BATCH], y[i : i + BATCH], sample_weight[i : i + BATCH])

    reference = new_model()
    train(reference, 0, BATCHES)
    results = {"reference": _state(reference)}
    for point, stop in POINTS["checkpoint"].items():
        first = new_model()
        train(first, 0, stop)
        path = tf.train.Checkpoint(model=first, optimizer=first.optimizer).write(os.path.join(tmp, point))
        results[f"{point}/at_interruption"] = _state(first)
        resumed = new_model(seed=7)  # other initial weights: everything must come from the checkpoint
        resumed.optimizer.build(resumed.trainable_variables)
        tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).read(path).assert_consumed()
        opt = resumed.optimizer
        train(resumed, int(opt.iterations) + int(opt.skipped_steps), BATCHES)
        results[f"{point}/resumed"] = _state(resumed)
    return results


def _fit(model, x, y, sample_weight, epochs, initial_epoch=0, callbacks=()):
    model.fit(
        x,
        y,
        sample_weight=sample_weight,
        batch_size=BATCH,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def _keras_file_runs(tmp, tf, keras, tf_selopt, x, y, sample_weight, new_model, pruning):
    reference = new_model()
    _fit(reference, x, y, sample_weight, EPOCHS, callbacks=[pruning()])
    results = {"reference": _state(reference)}
    for point, stop in POINTS["keras_file"].items():
        first = new_model()
        _fit(first, x, y, sample_weight, stop // PER_EPOCH, callbacks=[pruning()])
        path = os.path.join(tmp, f"{point}.keras")
        first.save(path)
        results[f"{point}/at_interruption"] = _state(first)
        resumed = keras.saving.load_model(path)
        tf_selopt.mask_zeros(resumed)
        _fit(resumed, x, y, sample_weight, EPOCHS, stop // PER_EPOCH, callbacks=[pruning()])
        results[f"{point}/resumed"] = _state(resumed)
    return results


def _backup_and_restore_runs(tmp, tf, keras, tf_selopt, x, y, sample_weight, new_model, pruning):
    class Interrupt(keras.callbacks.Callback):
        def __init__(self, at_batch):
            super().__init__()
            self.at_batch, self.done = at_batch, 0

        def on_train_batch_begin(self, batch, logs=None):
            if self.done == self.at_batch:
                raise KeyboardInterrupt(f"interrupted before batch {self.at_batch}")
            self.done += 1

    reference = new_model()
    _fit(reference, x, y, sample_weight, EPOCHS, callbacks=[pruning()])
    results = {"reference": _state(reference)}
    for point, restored_at in POINTS["backup_and_restore"].items():
        backup_dir = os.path.join(tmp, point)
        first = new_model()
        backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch")
        try:
            _fit(first, x, y, sample_weight, EPOCHS, callbacks=[backup, pruning(), Interrupt(RAISE_AT[point])])
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the first run was not interrupted")
        results[f"{point}/at_interruption"] = _state(first)
        resumed = new_model(seed=7)
        backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch")
        resumed_at = []

        class Where(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                resumed_at.append(int(self.model.optimizer.iterations) + int(self.model.optimizer.skipped_steps))

        _fit(resumed, x, y, sample_weight, EPOCHS, callbacks=[backup, pruning(), Where()])
        results[f"{point}/resumed"] = _state(resumed)
        results[f"{point}/resumed"]["count/resumed_at_batch"] = np.array(resumed_at[0])
    return results


RUNS = {"checkpoint": _checkpoint_runs, "keras_file": _keras_file_runs, "backup_and_restore": _backup_and_restore_runs}


def _run(out):
    """Subprocess entry point: op determinism on, every mechanism's runs (a fresh Keras session each), states
    to ``out`` (npz)."""
    import tempfile

    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    results = {}
    for mechanism, runs in RUNS.items():
        keras.backend.clear_session()
        with tempfile.TemporaryDirectory() as tmp:
            results.update({f"{mechanism}:{run}": state for run, state in runs(tmp, *_setup()).items()})
    np.savez(out, **{f"{run}|{key}": value for run, state in results.items() for key, value in state.items()})


# ---------------------------------------------------------------- the tests
@functools.cache
def _results(tmp_dir):
    """{mechanism: {run: state}} from one Python process (one TensorFlow start-up for all three)."""
    out = os.path.join(tmp_dir, "resume.npz")
    code = f"import sys; sys.path.insert(0, {HERE!r}); import test_resume; test_resume._run({out!r})"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = {}
    with np.load(out) as data:
        for name in data.files:
            where, key = name.split("|")
            mechanism, run = where.split(":")
            results.setdefault(mechanism, {}).setdefault(run, {})[key] = data[name]
    return results


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("resume"))


def _count(state, name):
    return int(state[f"count/{name}"])


@pytest.mark.slow  # one Python process for all mechanisms: ~35 s alone on a loaded 2-core machine
@pytest.mark.parametrize("point", ["warmup", "masked"])
@pytest.mark.parametrize("mechanism", sorted(RUNS))
def test_interrupted_run_resumes_bit_identical(mechanism, point, results_dir):
    runs = _results(results_dir)[mechanism]
    reference, resumed, at = runs["reference"], runs[f"{point}/resumed"], runs[f"{point}/at_interruption"]
    # The uninterrupted run did what the scenario says: 24 finite steps, 3 selections, 8 skipped.
    counts = [_count(reference, name) for name in ("iterations", "selections", "skipped_steps")]
    assert counts == [24, 3, 8]
    # The interruption is where it should be: inside the warm-up window, or masked mid-window.
    if point == "warmup":
        assert _count(at, "selections") == 0 and _count(at, "window_count") > 0
    else:
        assert _count(at, "selections") == 2
    assert _count(at, "skipped_steps") > 0
    assert _count(at, "iterations") < 20  # at least one selection happens after the resume
    if mechanism == "backup_and_restore":  # restored at the last epoch end before the raise
        assert int(resumed["count/resumed_at_batch"]) == POINTS[mechanism][point]
    keys = sorted(k for k in reference if not k.startswith("count/resumed"))
    assert keys == sorted(k for k in resumed if not k.startswith("count/resumed"))
    if mechanism != "checkpoint":
        assert any(k.startswith("prune/") for k in keys)  # GradualPruning masks are part of the state
        assert sum(int((~m).sum()) for k, m in reference.items() if k.startswith("prune/")) == 36  # 72 * 0.5
    for key in keys:
        a, b = reference[key], resumed[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        np.testing.assert_array_equal(np.atleast_1d(a).view(np.uint8), np.atleast_1d(b).view(np.uint8), err_msg=key)


@pytest.mark.parametrize("iterations, resumed", [(4, False), (5, True)])
def test_gradual_pruning_resumed_past_begin_step_takes_the_zeros_as_pruned(iterations, resumed):
    """What BackupAndRestore needs: a new GradualPruning on a restored model re-derives the masks."""
    import keras
    from conftest import make_model

    import tf_selopt
    from tf_selopt.keras.pruning import prunable_variables, pruning_mask

    keras.backend.clear_session(free_memory=False)  # names reset; no gc.collect() (1-3 s in a grown worker)
    model = make_model("sequential")
    kernel = prunable_variables(model)[0]
    zeroed = np.arange(48).reshape(kernel.shape) % 5 == 0
    kernel.assign(np.where(zeroed, 0.0, kernel.numpy()))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(iterations)
    pruning = tf_selopt.GradualPruning(tf_selopt.core.schedules.ConstantSparsity(0.5, begin_step=4))
    pruning.set_model(model)
    pruning.on_train_begin()
    np.testing.assert_array_equal(pruning_mask(kernel).numpy(), ~zeroed if resumed else np.ones_like(zeroed))
    assert pruning.pruned_count == (int(zeroed.sum()) if resumed else 0)
