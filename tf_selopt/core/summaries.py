"""TensorBoard scalars shared by the Keras 3 and tf_keras callbacks (TensorFlow only, no Keras import).

``StepLossWriter`` turns the training loss Keras reports after each batch, the mean since the epoch's start,
back into the loss of each optimizer step. Keras (3 and tf_keras) keeps that mean in a metric named ``"loss"``
whose variables ``total`` (sum of the batches' losses, each weighted by its batch) and ``count`` (sum of the
weights) restart at every epoch; the loss of the steps since the previous read is the change of ``total``
over the change of ``count``. With ``steps_per_execution = n`` a callback sees every ``n``-th step, and the
value is the mean loss of those ``n`` steps.

Examples:
    >>> import tempfile, types, tensorflow as tf
    >>> mean = types.SimpleNamespace(total=tf.Variable(0.0), count=tf.Variable(0.0))  # as Keras' "loss" metric
    >>> writer = StepLossWriter(tempfile.mkdtemp())
    >>> writer.epoch_begin(mean)
    >>> _ = mean.total.assign_add(2.0 * 4), mean.count.assign_add(4)   # a batch of 4 examples, loss 2.0
    >>> writer.batch_end(mean, step=1)
    2.0
    >>> _ = mean.total.assign_add(0.5 * 4), mean.count.assign_add(4)   # Keras' mean is now 1.25; this step 0.5
    >>> writer.batch_end(mean, step=2)
    0.5
    >>> writer.close()
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

__all__ = ["StepLossCallback", "StepLossWriter", "checked_log_dir", "loss_tracker"]


def checked_log_dir(log_dir) -> str:
    """``log_dir`` as a str; a ValueError naming it unless it is a non-empty str or path-like."""
    if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
        raise ValueError(f"`log_dir` must be a non-empty str or path-like; received log_dir={log_dir!r}.")
    return os.fspath(log_dir)


def loss_tracker(metrics):
    """The metric named ``"loss"`` among ``metrics`` (a compiled model's ``metrics``), with ``total`` and
    ``count`` variables; ValueError if there is none."""
    for metric in metrics:
        if metric.name == "loss" and hasattr(metric, "total") and hasattr(metric, "count"):
            return metric
    raise ValueError(
        "StepLoss needs a model compiled with a loss (its `metrics` hold the 'loss' mean); "
        f"received metrics {[m.name for m in metrics]}."
    )


class StepLossWriter:
    """Write the loss of each optimizer step as the scalar ``tag`` into ``log_dir`` (see the module doc).

    Args:
        log_dir: directory of the event files (str or path-like).
        tag: the scalar's tag (default ``"train/loss"``).
    """

    def __init__(self, log_dir, tag="train/loss"):
        self.log_dir = str(log_dir)
        self.tag = tag
        self._writer = None
        self._previous = (0.0, 0.0)

    def epoch_begin(self, tracker=None):
        """At an epoch's start (Keras has reset the mean): the ``total`` and ``count`` of ``tracker`` (the loss
        metric; None while the first step has not built it: 0) are where the next step's difference starts."""
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        self._previous = (0.0, 0.0) if tracker is None else (float(tracker.total.numpy()), float(tracker.count.numpy()))

    def batch_end(self, tracker, step):
        """Write the loss of the steps since the last call at ``step`` (int), read from ``tracker`` (the loss
        metric); returns it (float32), or None when no example was counted."""
        total, count = float(tracker.total.numpy()), float(tracker.count.numpy())
        if count < self._previous[1]:  # the mean restarted without an epoch_begin
            self._previous = (0.0, 0.0)
        weight = count - self._previous[1]
        value = None
        if weight > 0:
            value = float(np.float32((total - self._previous[0]) / weight))
            with self._writer.as_default(step=int(step)):
                tf.summary.scalar(self.tag, value)
        self._previous = (total, count)
        return value

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class StepLossCallback:
    """The methods of a ``StepLoss`` callback, for either front end: mixed in before its ``Callback`` class
    (``tf_selopt.keras.callbacks.StepLoss``, ``tf_selopt.keras2.callbacks.StepLoss``), which sets ``model``.
    Writes ``train/loss`` at ``model.optimizer.iterations`` with a ``StepLossWriter``."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = checked_log_dir(log_dir)
        #: float: the losses written in the latest ``fit``, in order.
        self.losses = []
        self._writer = None
        self._tracker = None

    def on_train_begin(self, logs=None):
        self._writer = StepLossWriter(self.log_dir)
        self._tracker = None
        self.losses = []

    def on_epoch_begin(self, epoch, logs=None):
        self._writer.epoch_begin(self._tracker)  # None before the first step: the metrics are built by it

    def on_train_batch_end(self, batch, logs=None):
        if self._tracker is None:
            self._tracker = loss_tracker(self.model.metrics)
        value = self._writer.batch_end(self._tracker, int(self.model.optimizer.iterations.numpy()))
        if value is not None:
            self.losses.append(value)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
