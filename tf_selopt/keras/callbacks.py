"""Keras 3 callbacks: watch selection and pruning in TensorBoard during ``fit``.

``SelectionMonitor`` is a plain ``keras.callbacks.Callback`` that writes with
``tf.summary.create_file_writer``; its step axis is ``model.optimizer.iterations``.
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_selopt.core.checks import is_int
from tf_selopt.keras.pruning import pruning_mask
from tf_selopt.core.frontend import SelectiveReadouts

__all__ = ["SelectionMonitor", "QUANTILES"]

#: Score quantiles logged after a selection: tag suffix -> quantile.
QUANTILES = {"min": 0.0, "p10": 0.1, "p50": 0.5, "p90": 0.9, "max": 1.0}


def selective_of(optimizer):
    """The ``SelectiveReadouts`` optimizer in ``optimizer``'s ``inner_optimizer`` chain, or None."""
    while optimizer is not None:
        if isinstance(optimizer, SelectiveReadouts):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


def required_selective(callback):
    """``selective_of(callback.model.optimizer)``; ValueError naming ``callback`` if there is none."""
    optimizer = selective_of(callback.model.optimizer)
    if optimizer is None:
        raise ValueError(
            f"{type(callback).__name__} needs a model compiled with tf_selopt.SelectiveOptimizer; "
            f"received optimizer {callback.model.optimizer!r}."
        )
    return optimizer


def _path(variable):
    return getattr(variable, "path", None) or variable.name


def _fraction_false(mask):
    """Fraction of False entries of a bool variable (float32 scalar tensor)."""
    return 1.0 - tf.reduce_mean(tf.cast(tf.convert_to_tensor(mask), tf.float32))


class SelectionMonitor(keras.callbacks.Callback):
    """Log selective training and pruning to TensorBoard during ``fit``.

    Works with a ``tf_selopt.SelectiveOptimizer`` (also inside a wrapper that
    has an ``inner_optimizer``) and with any Keras 3 optimizer when pruning
    masks are installed (``tf_selopt.prune``, ``GradualPruning``); then only
    the pruning part is logged. Masks installed after this callback's
    ``on_train_begin`` (e.g. by a ``GradualPruning`` listed after it) are found.

    Scalars (selective optimizer): ``selection/frozen_fraction``,
    ``selection/selected_count``, ``selection/k``, ``selection/selections``,
    ``selection/skipped_steps``, ``frozen_fraction/<variable path>`` and, once a
    selection happened, ``scores/min``, ``scores/p10``, ``scores/p50``,
    ``scores/p90``, ``scores/max`` (over the last selection's scores of all
    variables; numpy's linear quantiles, computed once per selection).
    Scalars (pruning masks present): ``pruning/pruned_count``,
    ``pruning/sparsity`` (pruned fraction of the masked weights) and
    ``sparsity/<variable path>``.
    Histograms: ``selection_mask/<path>`` (0/1), ``scores/<path>`` (after a
    selection) and ``pruning_mask/<path>`` (0/1, 1 = kept).

    Args:
        log_dir: directory of the event files (str or path-like, not empty).
        update_freq: ``"epoch"`` (scalars at each epoch's end) or an int
            ``n >= 1``: scalars whenever ``iterations`` has passed a multiple
            of ``n`` (checked after each batch, so it costs a few small
            reductions per variable every ``n`` steps).
        histogram_freq: int ``>= 0``: histograms every that many epochs (at the
            epoch's end); 0 = none.

    Examples:
        >>> import keras, numpy as np, tempfile, tf_selopt
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> opt = tf_selopt.SelectiveOptimizer(keras.optimizers.SGD(0.1), keep=3, warmup_steps=2, window=2)
        >>> model.compile(opt, "mse")
        >>> monitor = SelectionMonitor(tempfile.mkdtemp(), update_freq=2)
        >>> _ = model.fit(np.ones((16, 4)), np.ones((16, 2)), batch_size=4, callbacks=[monitor], verbose=0)
        >>> logged = monitor.last_scalars  # tag -> value last written (at step 4)
        >>> logged["selection/selected_count"], round(logged["selection/frozen_fraction"], 6)  # N = 10, k = 3
        (3.0, 0.7)
    """

    def __init__(self, log_dir, update_freq="epoch", histogram_freq=1):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise ValueError(f"`log_dir` must be a non-empty str or path-like; received log_dir={log_dir!r}.")
        if update_freq != "epoch" and not (is_int(update_freq) and update_freq >= 1):
            raise ValueError(
                f"`update_freq` must be 'epoch' or an int number of steps >= 1; received update_freq={update_freq!r}."
            )
        if not (is_int(histogram_freq) and histogram_freq >= 0):
            raise ValueError(
                f"`histogram_freq` must be an int >= 0 (epochs; 0 = off); received histogram_freq={histogram_freq!r}."
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq if update_freq == "epoch" else int(update_freq)
        self.histogram_freq = int(histogram_freq)
        #: tag -> float: the scalars of the latest write, as logged (float32 values).
        self.last_scalars = {}
        self._writer = None
        self._last_step = None
        self._quantiles = (None, None)  # (selections, {tag: value})
        self._warned = False

    # ------------------------------------------------------------ callbacks
    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._last_step = self._step()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        step = self._step()
        if step // self.update_freq > self._last_step // self.update_freq:
            self._write_scalars(step)
        self._last_step = step

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        if self.update_freq == "epoch":
            self._write_scalars(step)
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            self._write_histograms(step)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -------------------------------------------------------------- helpers
    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _selective(self):
        optimizer = selective_of(self.model.optimizer)
        if optimizer is None or optimizer.model_variables is None:
            return None  # not selective, or not built yet
        return optimizer

    def _pruned(self):
        """(variable, mask) for each model weight with a pruning mask, each once."""
        found, seen = [], set()
        for v in self.model.weights:
            mask = pruning_mask(v)
            if mask is not None and id(v) not in seen:
                seen.add(id(v))
                found.append((v, mask))
        return found

    def _score_quantiles(self, optimizer) -> dict:
        """Quantiles of the last selection's scores, recomputed only when ``selections`` changed."""
        selections = int(optimizer.selections)
        if self._quantiles[0] != selections:
            scores = np.concatenate([np.ravel(s.numpy()) for s in optimizer.scores])
            values = np.quantile(scores, list(QUANTILES.values()))
            self._quantiles = (selections, {f"scores/{q}": float(x) for q, x in zip(QUANTILES, values)})
        return self._quantiles[1]

    def _scalars(self) -> dict:
        scalars = {}
        optimizer = self._selective()
        if optimizer is not None:
            scalars["selection/frozen_fraction"] = optimizer.frozen_fraction
            scalars["selection/selected_count"] = optimizer.selected_count
            scalars["selection/k"] = optimizer.k
            scalars["selection/selections"] = optimizer.selections
            scalars["selection/skipped_steps"] = optimizer.skipped_steps
            for i, v in enumerate(optimizer.model_variables):
                trains = optimizer.trains(i)
                scalars[f"frozen_fraction/{_path(v)}"] = _fraction_false(trains)
            if int(optimizer.selections) > 0:
                scalars.update(self._score_quantiles(optimizer))
        pruned = self._pruned()
        if pruned:
            counts = [tf.reduce_sum(tf.cast(tf.logical_not(m), tf.int64)) for _, m in pruned]
            total = sum(int(np.prod(m.shape)) for _, m in pruned)
            count = tf.add_n(counts)
            scalars["pruning/pruned_count"] = count
            scalars["pruning/sparsity"] = tf.cast(count, tf.float64) / total
            for v, m in pruned:
                scalars[f"sparsity/{_path(v)}"] = _fraction_false(m)
        if not scalars and not self._warned:
            self._warned = True
            warnings.warn(
                "SelectionMonitor: the optimizer is not a tf_selopt.SelectiveOptimizer and no pruning "
                "masks are installed; nothing to log.",
                stacklevel=2,
            )
        return scalars

    def _write_scalars(self, step: int):
        scalars = self._scalars()
        with self._writer.as_default(step=step):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, tf.cast(value, tf.float32))
        self.last_scalars = {tag: float(np.float32(value)) for tag, value in scalars.items()}

    def _write_histograms(self, step: int):
        optimizer = self._selective()
        with self._writer.as_default(step=step):
            if optimizer is not None:
                selected = int(optimizer.selections) > 0
                for v, mask, score in zip(optimizer.model_variables, optimizer.masks, optimizer.scores):
                    tf.summary.histogram(f"selection_mask/{_path(v)}", tf.cast(tf.convert_to_tensor(mask), tf.float32))
                    if selected:
                        tf.summary.histogram(f"scores/{_path(v)}", tf.convert_to_tensor(score))
            for v, mask in self._pruned():
                tf.summary.histogram(f"pruning_mask/{_path(v)}", tf.cast(tf.convert_to_tensor(mask), tf.float32))
