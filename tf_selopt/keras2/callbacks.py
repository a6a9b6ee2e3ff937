"""tf_keras callbacks: the training loss of every optimizer step in TensorBoard (as ``tf_selopt.StepLoss``).

Examples:
    >>> import numpy as np, tempfile, tf_keras
    >>> from tf_selopt.keras2.callbacks import StepLoss
    >>> model = tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)])
    >>> model.compile(tf_keras.optimizers.SGD(0.0), "mse")  # nothing trains: every step's loss is its batch's
    >>> x, y = np.arange(8.0).reshape(4, 2), np.zeros((4, 1))
    >>> log = StepLoss(tempfile.mkdtemp())
    >>> _ = model.fit(x, y, batch_size=2, shuffle=False, verbose=0, callbacks=[log])
    >>> np.allclose(log.losses, [model.evaluate(x[i:i + 2], y[i:i + 2], verbose=0) for i in (0, 2)], rtol=1e-6)
    True
"""

from __future__ import annotations

import os

import tf_keras

from tf_selopt.core.summaries import StepLossWriter, loss_tracker

__all__ = ["StepLoss"]


class StepLoss(tf_keras.callbacks.Callback):
    """Log the training loss of every optimizer step as ``train/loss`` at ``model.optimizer.iterations``.

    tf_keras reports the mean since the epoch's start; this is each step's own loss, recovered from that mean
    (``tf_selopt.core.summaries``). Same tag and x axis as the Keras 3 ``tf_selopt.StepLoss``.

    Args:
        log_dir: directory of the event files (str or path-like, not empty).
    """

    def __init__(self, log_dir):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise ValueError(f"`log_dir` must be a non-empty str or path-like; received log_dir={log_dir!r}.")
        self.log_dir = os.fspath(log_dir)
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
