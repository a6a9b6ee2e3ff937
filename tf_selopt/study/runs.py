"""One run of the study: train a model on a bundled data set, measure it, return a row.

Kinds of run (``RunSpec.kind``):

* ``full``: Keras 3 Adam, every parameter trains (the reference line of both figures).
* ``selection``: ``SelectiveOptimizer(Adam, criterion=method, keep=1-level)`` with
  ``warmup_steps`` = warm-up epochs x steps per epoch (figure 1; ``level`` = frozen fraction).
* ``pruning``: gradual pruning of all Dense/Conv kernels to sparsity ``level`` with
  ``PolynomialDecay(0 -> level, power 3)`` (figure 2): ours (``GradualPruning``,
  methods ``global``, ``per_layer``, ``random``) on Keras 3, or ``tfmot``'s
  ``prune_low_magnitude`` on a tf_keras copy of the architecture.

Seeds set initialisation and shuffling (``set_random_seed``) and the random criterion.
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np

from tf_selopt.core import schedules
from tf_selopt.study import data as data_lib
from tf_selopt.study import models as models_lib

__all__ = [
    "RunSpec",
    "schedule_steps",
    "kernel_sparsity",
    "train_pruned_keras3",
    "train_pruned_tfmot",
    "log_test_metrics",
    "write_scalars",
    "run",
]

#: Our pruning methods -> GradualPruning arguments.
OURS = {
    "global": dict(scope="global", criterion="magnitude"),
    "per_layer": dict(scope="per_layer", criterion="magnitude"),
    "random": dict(scope="global", criterion="random"),
}


#: Model names in TensorBoard run names (``RunSpec.run_name``).
SHORT_MODEL_NAMES = {"lenet_300_100": "lenet", "small_cnn": "cnn"}
#: What a run's ``level`` is, in its TensorBoard run name: frozen fraction (selection), sparsity (pruning).
FRACTION_WORDS = {"selection": "frozen", "pruning": "sparse"}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What one run trains: ``kind`` in full/selection/pruning, ``method`` a criterion or pruning method."""

    kind: str
    data: str
    model: str
    method: str
    level: float
    seed: int

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.data}/{self.model}/{self.method}/{self.level:g}/seed{self.seed}"

    @property
    def run_name(self) -> str:
        """TensorBoard run name: method, fraction and seed first, then data and model.

        ``fisher-frozen0.9-s0_mnist_lenet`` (a selection freezing 0.9), ``global-sparse0.9-s0_mnist_lenet``
        (pruning to sparsity 0.9), ``full-s0_mnist_lenet``. The fraction is ``repr`` of the float and a ``-``
        follows it, so TensorBoard's run filter (a case-insensitive regex searched in the run name) ``frozen0.9-``
        matches 0.9 and not 0.99 or 0.995; ``frozen``/``sparse`` tell a selection's ``random`` from a pruning's.
        TensorBoard cards show the start of a run name: the parts that differ come first.
        """
        model = SHORT_MODEL_NAMES.get(self.model, self.model)
        where = f"s{self.seed}_{self.data}_{model}"
        if self.kind == "full":
            return f"full-{where}"
        return f"{self.method}-{FRACTION_WORDS[self.kind]}{float(self.level)!r}-{where}"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def schedule_steps(n_train, batch_size, epochs, begin_epochs, end_fraction, events) -> dict:
    """begin_step, end_step, frequency: ``events`` equal intervals from begin_step to ~end_fraction of all steps.

    end_step = begin_step + events * frequency, so the last pruning event falls on end_step
    and reaches the final sparsity exactly. Raises ValueError if end_step would not be < all steps.
    """
    per_epoch = steps_per_epoch(n_train, batch_size)
    total = epochs * per_epoch
    begin = begin_epochs * per_epoch
    frequency = max(1, (round(end_fraction * total) - begin) // events)
    end = begin + events * frequency
    if end >= total:
        raise ValueError(f"end_step {end} must be < total steps {total}: more epochs or a smaller end_fraction.")
    return dict(
        steps_per_epoch=per_epoch, total_steps=total, begin_step=begin, end_step=end, frequency=frequency, power=3
    )


def kernel_sparsity(model):
    """Exact zeros over all kernels of the model: (fraction, zeros, total, per-layer fractions)."""
    zeros = total = 0
    per_layer = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        w = np.asarray(kernel.numpy() if hasattr(kernel, "numpy") else kernel)
        z = int(np.count_nonzero(w == 0))
        zeros, total = zeros + z, total + w.size
        per_layer[layer.name] = z / w.size
    return zeros / total, zeros, total, per_layer


def _compile(model, optimizer="adam", api=keras):
    model.compile(
        optimizer=optimizer, loss=api.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )


def _fit(model, splits, batch_size, epochs, verbose, callbacks):
    """``model.fit`` on the training split, validated on the validation split every epoch."""
    model.fit(
        splits.x_train,
        splits.y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(splits.x_val, splits.y_val),
        verbose=verbose,
        callbacks=callbacks,
    )


def _build(model_name, splits, api=keras):
    return getattr(models_lib, model_name)(splits.x_train.shape[1:], splits.num_classes, api=api)


def train_pruned_keras3(
    model_name, method, level, seed, splits, epochs, batch_size, learning_rate, steps, callbacks=(), verbose=0
):
    """Our gradual pruning (or none for ``method="dense"``); returns (stripped model, reported sparsity).
    Validation on ``splits.x_val`` after every epoch (Keras' ``val_*`` logs), as in every kind of run."""
    from tf_selopt.keras import pruning

    keras.utils.set_random_seed(seed)
    model = _build(model_name, splits)
    _compile(model, keras.optimizers.Adam(learning_rate))
    callbacks, callback = list(callbacks), None
    if method in OURS:
        schedule = schedules.PolynomialDecay(
            0.0, level, steps["begin_step"], steps["end_step"], power=steps["power"], frequency=steps["frequency"]
        )
        callback = pruning.GradualPruning(schedule, seed=seed, **OURS[method])
        callbacks.insert(0, callback)
    _fit(model, splits, batch_size, epochs, verbose, callbacks)
    if callback is None:
        return model, None
    reported = float(callback.sparsity)
    stripped = pruning.strip_pruning(model)
    return (stripped if stripped is not None else model), reported


def train_pruned_tfmot(
    model_name, method, level, seed, splits, epochs, batch_size, learning_rate, steps, log_dir=None, verbose=0
):
    """tfmot's ``prune_low_magnitude`` on tf_keras (or none for ``method="dense_tf_keras"``); stripped model.

    With ``log_dir``: ``tfmot_bridge.pruning_callbacks(log_dir)`` (tfmot's ``PruningSummaries`` without the
    graph, and the overall ``pruning/sparsity``) and the per-step ``train/loss``; a dense run logs Keras'
    ``epoch_*`` tags (``TensorBoard(write_graph=False)``) and the per-step loss. Validation on ``splits.x_val``
    after every epoch, as in every kind of run."""
    import tensorflow_model_optimization as tfmot

    from tf_selopt.keras2 import _tfmot_compat, tfmot_bridge
    from tf_selopt.keras2.callbacks import StepLoss

    tfk = _tfmot_compat.keras_module()  # what tfmot uses

    tfk.utils.set_random_seed(seed)
    model = _build(model_name, splits, api=tfk)
    callbacks = []
    if method == "tfmot":
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            0.0, level, steps["begin_step"], steps["end_step"], power=steps["power"], frequency=steps["frequency"]
        )
        model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
        callbacks += tfmot_bridge.pruning_callbacks(log_dir)
    elif log_dir is not None:
        callbacks.append(tfk.callbacks.TensorBoard(log_dir, write_graph=False))
    if log_dir is not None:
        callbacks.append(StepLoss(log_dir))
    _compile(model, tfk.optimizers.Adam(learning_rate), api=tfk)
    _fit(model, splits, batch_size, epochs, verbose, callbacks)
    if method == "tfmot":
        model = tfmot.sparsity.keras.strip_pruning(model)
        _compile(model, api=tfk)  # evaluate only
    return model


def _train_selective(spec, splits, training, selection, callbacks, verbose):
    import tf_selopt

    keras.utils.set_random_seed(spec.seed)
    model = _build(spec.model, splits)
    inner = keras.optimizers.Adam(training.learning_rate)
    optimizer = inner
    if spec.kind == "selection":
        optimizer = tf_selopt.SelectiveOptimizer(
            inner,
            criterion=spec.method,
            keep=1.0 - spec.level,
            warmup_steps=selection.warmup_epochs * steps_per_epoch(len(splits.x_train), training.batch_size),
            window=selection.window,
            scope=selection.scope,
            num_examples=len(splits.x_train),
            seed=spec.seed,
        )
    _compile(model, optimizer)
    _fit(model, splits, training.batch_size, training.epochs, verbose, list(callbacks))
    row = {"num_parameters": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))}
    if spec.kind == "selection":
        row |= {
            "frozen_fraction": float(optimizer.frozen_fraction),
            "selected_count": int(optimizer.selected_count),
            "k": int(optimizer.k),
            "selections": int(optimizer.selections),
            "skipped_steps": int(optimizer.skipped_steps),
        }
    else:
        row |= {"frozen_fraction": 0.0}
    return model, row


def _loggers(log_dir, monitor):
    """TensorBoard callbacks of a Keras 3 run: Keras' own (``epoch_loss``, ``epoch_accuracy`` in ``train/`` and
    ``validation/``, at 0-based epochs, as the tfmot runs log them), ``StepLoss`` (``train/loss`` at every
    optimizer step) and, if ``monitor``, ``SelectionMonitor``."""
    from tf_selopt.keras.callbacks import SelectionMonitor, StepLoss

    if log_dir is None:
        return []
    callbacks = [keras.callbacks.TensorBoard(log_dir, write_graph=False), StepLoss(log_dir)]
    return callbacks + [SelectionMonitor(log_dir)] if monitor else callbacks


def write_scalars(log_dir, step, scalars):
    """Write ``scalars`` (tag -> float) once, at ``step``, into ``log_dir``, and close the writer."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=int(step)):
        for tag, value in scalars.items():
            tf.summary.scalar(tag, float(value))
    writer.close()


def log_test_metrics(log_dir, step, metrics):
    """Write ``metrics`` (name -> float, e.g. ``{"accuracy": 0.97, "loss": 0.1}``) as scalars ``test/<name>``
    at ``step`` (the run's last optimizer step) into ``log_dir``."""
    write_scalars(log_dir, step, {f"test/{name}": value for name, value in metrics.items()})


def run(spec: RunSpec, training, selection=None, pruning=None, log_dir=None, verbose=0, splits=None) -> tuple:
    """Train and measure one run; returns (row dict, trained Keras model). ``log_dir``: TensorBoard, or None."""
    splits = splits if splits is not None else data_lib.load(spec.data)
    start = time.perf_counter()
    row = dict(dataclasses.asdict(spec), id=spec.id)
    if spec.kind in ("full", "selection"):
        callbacks = _loggers(log_dir, monitor=spec.kind == "selection")
        model, extra = _train_selective(spec, splits, training, selection, callbacks, verbose)
        row |= extra
    elif spec.kind == "pruning":
        steps = schedule_steps(
            len(splits.x_train),
            training.batch_size,
            training.epochs,
            pruning.begin_epochs,
            pruning.end_fraction,
            pruning.events,
        )
        common = dict(
            epochs=training.epochs,
            batch_size=training.batch_size,
            learning_rate=training.learning_rate,
            steps=steps,
            verbose=verbose,
        )
        if spec.method == "tfmot":
            model = train_pruned_tfmot(
                spec.model, spec.method, spec.level, spec.seed, splits, log_dir=log_dir, **common
            )
            row["reported_sparsity"] = None
        else:
            callbacks = _loggers(log_dir, monitor=True)
            model, row["reported_sparsity"] = train_pruned_keras3(
                spec.model, spec.method, spec.level, spec.seed, splits, callbacks=callbacks, **common
            )
        row["schedule"] = steps
    else:
        raise ValueError(f"unknown run kind {spec.kind!r}")
    row["sparsity"], row["kernel_zeros"], row["kernel_total"], _ = kernel_sparsity(model)
    test_loss, test_accuracy = model.evaluate(splits.x_test, splits.y_test, batch_size=256, verbose=0)
    if log_dir is not None:
        last_step = training.epochs * steps_per_epoch(len(splits.x_train), training.batch_size)
        log_test_metrics(log_dir, last_step, {"accuracy": test_accuracy, "loss": test_loss})
    row |= {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "seconds": time.perf_counter() - start,
    }
    return row, model
