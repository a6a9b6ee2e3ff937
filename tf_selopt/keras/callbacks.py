"""Keras 3 callbacks: watch selection, pruning and the training loss in TensorBoard during ``fit``.

``SelectionMonitor`` and ``StepLoss`` are plain ``keras.callbacks.Callback`` s that write with
``tf.summary.create_file_writer``; their step axis is ``model.optimizer.iterations``.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_selopt.core.checks import is_int
from tf_selopt.core.frontend import SelectiveFrontEnd
from tf_selopt.core.summaries import StepLossCallback, checked_log_dir
from tf_selopt.keras.pruning import pruning_mask

__all__ = ["SelectionMonitor", "StepLoss", "QUANTILES"]

#: Score quantiles logged after a selection: tag suffix -> quantile.
QUANTILES = {"min": 0.0, "p10": 0.1, "p50": 0.5, "p90": 0.9, "max": 1.0}


#: What marks a summary as a histogram for TensorBoard (its histograms plugin, data version 0).
_HISTOGRAM_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="histograms")
)


def histogram_buckets(data, bucket_count=30) -> np.ndarray:
    """TensorBoard's histogram of ``data`` (1-D float array): a ``[bucket_count, 3]`` float64 array of rows
    ``[left edge, right edge, count]``, buckets of equal width from min to max (the last one closed).

    The buckets of ``tf.summary.histogram``, counted with ``np.bincount`` in O(n) (TensorBoard's op builds an
    ``n x buckets`` one-hot tensor: 64 MB for a 266k-weight kernel). Empty data: all zeros; one distinct
    value: every edge at it, all counts in the last bucket.

    Examples:
        >>> histogram_buckets(np.array([0.0, 1.0, 1.0, 3.0]), bucket_count=3).tolist()
        [[0.0, 1.0, 1.0], [1.0, 2.0, 2.0], [2.0, 3.0, 1.0]]
    """
    data = np.asarray(data, np.float64).ravel()
    if data.size == 0:
        return np.zeros((bucket_count, 3))
    low, high = float(data.min()), float(data.max())
    if low == high:
        counts = np.zeros(bucket_count)
        counts[-1] = data.size
        return np.stack([np.full(bucket_count, high), np.full(bucket_count, high), counts], axis=1)
    index = np.minimum(np.floor((data - low) / ((high - low) / bucket_count)).astype(np.int64), bucket_count - 1)
    edges = np.linspace(low, high, bucket_count + 1)
    edges[-1] = high
    counts = np.bincount(index, minlength=bucket_count).astype(np.float64)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def selective_of(optimizer):
    """The ``SelectiveFrontEnd`` optimizer in ``optimizer``'s ``inner_optimizer`` chain, or None."""
    while optimizer is not None:
        if isinstance(optimizer, SelectiveFrontEnd):
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


def _masked_weights(model) -> list:
    """(variable, keep-mask) for each weight of ``model`` with a pruning mask, each once."""
    found = {}
    for v in model.weights:
        mask = pruning_mask(v)
        if mask is not None:
            found.setdefault(id(v), (v, mask))
    return list(found.values())


def _pruned_count(masked) -> tf.Tensor:
    """Entries held at zero (int64 scalar) over ``(variable, keep-mask)`` pairs."""
    return tf.add_n([tf.reduce_sum(tf.cast(tf.logical_not(m), tf.int64)) for _, m in masked])


class SelectionMonitor(keras.callbacks.Callback):
    """Log selective training and pruning to TensorBoard during ``fit``.

    Works with a ``tf_selopt.SelectiveOptimizer`` (also inside a wrapper that
    has an ``inner_optimizer``) and with any Keras 3 optimizer when pruning
    masks are installed (``tf_selopt.prune``, ``GradualPruning``); then only
    the pruning part is logged. Masks installed after this callback's
    ``on_train_begin`` (e.g. by a ``GradualPruning`` listed after it) are found.

    **x axis.** Every tag is written at ``step = model.optimizer.iterations``
    after a batch, i.e. the number of optimizer steps done; in a model's first
    ``fit`` that is the step of Keras' ``TensorBoard(update_freq=n)`` ``batch_*``
    tags (Keras' ``epoch_*`` tags use the 0-based epoch instead).

    **Step functions.** Selections and pruning events are detected after every
    batch (a read of ``selections`` and of the masks' pruned counts): at an
    event seen at step ``s`` the state before it is written at ``s - 1`` and
    the new state at ``s``, so a selection or pruning event shows as an exact
    step in TensorBoard with smoothing 0. The state at the start of ``fit`` is
    written before its first batch (after it if that batch builds the optimizer).

    Scalars (selective optimizer): ``selection/frozen_fraction``,
    ``selection/selected_count``, ``selection/k``, ``selection/selections``,
    ``selection/skipped_steps``, ``frozen_fraction/<variable path>`` and, once a
    selection happened, ``scores/min``, ``scores/p10``, ``scores/p50``,
    ``scores/p90``, ``scores/max`` (over the last selection's scores of all
    variables; numpy's linear quantiles, written once per selection, at its step).
    Scalars (pruning masks present): ``pruning/pruned_count``,
    ``pruning/sparsity`` (pruned fraction of the masked weights) and
    ``sparsity/<variable path>``. Masks are logged as these counts and
    fractions, not as 0/1 histograms.
    Histograms: ``scores_log10/<path>``, log10 of the positive scores (scores
    are heavy-tailed; zeros are left out): for a gradient criterion at every
    ``histogram_freq``-th step of its window, the scores the window's gradients
    so far give (``criterion.score`` on the window state, read after the step),
    and at each selection step the selection's scores. TensorBoard's
    Distributions and Histograms tabs then show the ranking forming over the
    window. Criteria without a window (``magnitude``, ``random``) have the
    selection's histogram only. None with masks given before training.

    Args:
        log_dir: directory of the event files (str or path-like, not empty).
        update_freq: ``"epoch"`` (scalars at each epoch's end) or an int
            ``n >= 1``: scalars whenever ``iterations`` has passed a multiple
            of ``n``; events are written when they happen either way.
        histogram_freq: int ``>= 0``: score histograms at every that many
            window steps (counted from the window's first) and at each selection;
            0 = none.

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

    #: Tags that change only at selections and pruning events (written again at the step before one).
    _NOT_STEP_FUNCTIONS = ("selection/skipped_steps",)

    def __init__(self, log_dir, update_freq="epoch", histogram_freq=1):
        super().__init__()
        log_dir = checked_log_dir(log_dir)
        if update_freq != "epoch" and not (is_int(update_freq) and update_freq >= 1):
            raise ValueError(
                f"`update_freq` must be 'epoch' or an int number of steps >= 1; received update_freq={update_freq!r}."
            )
        if not (is_int(histogram_freq) and histogram_freq >= 0):
            raise ValueError(
                f"`histogram_freq` must be an int >= 0 (window steps; 0 = off); "
                f"received histogram_freq={histogram_freq!r}."
            )
        self.log_dir = log_dir
        self.update_freq = update_freq if update_freq == "epoch" else int(update_freq)
        self.histogram_freq = int(histogram_freq)
        #: tag -> float: the scalars of the latest write, as logged (float32 values).
        self.last_scalars = {}
        self._writer = None
        self._last_step = None
        self._written_step = None  # step of the latest scalar write
        self._events = None  # (selections, pruned count) at the latest check
        self._quantiles = (None, None)  # (selections, {tag: value})
        self._histogram_selections = 0  # selections whose score histograms are written
        self._warned = False

    # ------------------------------------------------------------ callbacks
    def on_train_begin(self, logs=None):
        optimizer = selective_of(self.model.optimizer)
        if hasattr(optimizer, "keep_scores"):  # before the step is traced: the selection then keeps the scores
            optimizer.keep_scores = True
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._last_step = self._step()
        self._written_step = None
        self._events = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._events is None:  # first batch: every callback's on_train_begin has run (masks installed)
            self._events = self._event_counts()  # None while the optimizer is not built (its first step builds it)
            if self._events is not None:
                self._write_scalars(self._step())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        events = self._event_counts()
        if self._events is None:  # first point after the step that built the optimizer
            self._events = events
            self._write_scalars(step)
        elif events != self._events:
            if self._written_step is not None and step - 1 > self._written_step:
                before = {t: v for t, v in self.last_scalars.items() if t not in self._NOT_STEP_FUNCTIONS}
                self._write(step - 1, before)
            self._events = events
            self._write_scalars(step)
        elif self.update_freq != "epoch" and step // self.update_freq > self._last_step // self.update_freq:
            self._write_scalars(step)
        if self.histogram_freq:
            self._write_histograms(step)
        self._last_step = step

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        if self.update_freq == "epoch" and step != self._written_step:
            self._write_scalars(step)
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

    def _event_counts(self) -> tuple:
        """(selections, pruned count), a change means a selection or pruning event; None if not built yet."""
        optimizer = selective_of(self.model.optimizer)
        if optimizer is not None and optimizer.model_variables is None:
            return None  # not built yet
        pruned = _masked_weights(self.model)
        return (
            int(optimizer.selections.numpy()) if optimizer is not None else None,
            int(_pruned_count(pruned)) if pruned else None,
        )

    def _score_quantiles(self, optimizer) -> dict:
        """Quantiles of the last selection's scores, recomputed only when ``selections`` changed."""
        selections = int(optimizer.selections.numpy())
        if self._quantiles[0] != selections and optimizer.scores is None:
            return {}  # released (``release_warmup_state``) before this selection's quantiles were read
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
            if int(optimizer.selections.numpy()) > 0 and int(optimizer.selections.numpy()) != self._quantiles[0]:
                scalars.update(self._score_quantiles(optimizer))  # once per selection: they change only then
        pruned = _masked_weights(self.model)
        if pruned:
            total = sum(int(np.prod(m.shape)) for _, m in pruned)
            count = _pruned_count(pruned)
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

    def _write(self, step: int, scalars: dict):
        with self._writer.as_default(step=step):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, tf.cast(value, tf.float32))
        self._written_step = step

    def _write_scalars(self, step: int):
        scalars = self._scalars()
        self._write(step, scalars)
        self.last_scalars = {tag: float(np.float32(value)) for tag, value in scalars.items()}

    def _write_histograms(self, step: int):
        """After the step that ends at ``step``: the selection's score histograms if it selected, else the
        window's scores so far at every ``histogram_freq``-th window step."""
        optimizer = self._selective()
        if optimizer is None or optimizer.plan.preselected:
            return
        selections = int(optimizer.selections.numpy())
        if selections != self._histogram_selections:
            self._histogram_selections = selections
            if optimizer.scores is None:  # released (``release_warmup_state``) before this callback ran
                warnings.warn(
                    "SelectionMonitor: no score histograms for this selection: the scores were released "
                    "(release_warmup_state) before the monitor saw them; list the monitor before TracePerPhase.",
                    stacklevel=2,
                )
                return
            self._histograms(step, optimizer, optimizer.scores)
            return
        count = int(optimizer.window_count.numpy())
        if count < 1 or count % self.histogram_freq or not optimizer.criterion_state[0]:
            return
        self._histograms(step, optimizer, optimizer.window_scores())

    def _histograms(self, step, optimizer, scores):
        with self._writer.as_default(step=step):
            for v, score in zip(optimizer.model_variables, scores):
                score = np.ravel(np.asarray(score, np.float64))
                buckets = histogram_buckets(np.log10(score[score > 0]))
                tf.summary.write(f"scores_log10/{_path(v)}", tf.constant(buckets), metadata=_HISTOGRAM_METADATA)


class StepLoss(StepLossCallback, keras.callbacks.Callback):
    """Log the training loss of every optimizer step as ``train/loss`` at ``model.optimizer.iterations``.

    The x axis of ``SelectionMonitor``'s tags, so the loss lines up with a selection or pruning event. Keras'
    own ``TensorBoard(update_freq=n)`` writes ``batch_loss``, the mean since the epoch's start, which restarts
    at every epoch; this is each step's own loss, recovered from that mean (``tf_selopt.core.summaries``).
    With ``steps_per_execution = n``: every ``n`` steps, the mean of those ``n``.

    Args:
        log_dir: directory of the event files (str or path-like, not empty).

    Examples:
        >>> import keras, numpy as np, tempfile
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(0.0), "mse")  # nothing trains: every step's loss is its batch's
        >>> x, y = np.arange(8.0).reshape(4, 2), np.zeros((4, 1))
        >>> log = StepLoss(tempfile.mkdtemp())
        >>> _ = model.fit(x, y, batch_size=2, shuffle=False, verbose=0, callbacks=[log])
        >>> np.allclose(log.losses, [model.evaluate(x[i:i + 2], y[i:i + 2], verbose=0) for i in (0, 2)], rtol=1e-6)
        True
    """
