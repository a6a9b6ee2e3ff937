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

import tf_keras

from tf_selopt.core.summaries import StepLossCallback

__all__ = ["StepLoss"]


class StepLoss(StepLossCallback, tf_keras.callbacks.Callback):
    """Log the training loss of every optimizer step as ``train/loss`` at ``model.optimizer.iterations``.

    tf_keras reports the mean since the epoch's start; this is each step's own loss, recovered from that mean
    (``tf_selopt.core.summaries``). Same tag and x axis as the Keras 3 ``tf_selopt.StepLoss``.

    Args:
        log_dir: directory of the event files (str or path-like, not empty).
    """
