"""Keras 3: choose the entries to fine-tune before the first update (``calibrate``).

``calibrate(model, data, loss=..., keep=...)`` runs ``steps`` batches of
``data`` through ``model``, folds each batch's gradient into a criterion's
state (``tf_selopt.core.criteria``: by default ``"fisher"``, the sum of squared
gradients, as FISH Mask, Sung et al. 2021), scores every trainable entry and
selects exactly ``k`` of them (``tf_selopt.core.masks.masks_from_scores``). The masks
go to ``SelectiveOptimizer(inner, masks=masks)``, which trains those entries
from step 0 on k-sized state only.

The model is not changed: no optimizer is built, no weight moves, and with
``training=True`` the non-trainable variables (e.g. BatchNormalization's moving
statistics, dropout seeds) are put back bit for bit afterwards. Entries held at
zero by a pruning mask (``tf_selopt.keras.pruning``) are never selected.

Under a ``tf.distribute`` strategy (the model created, and ``calibrate``
called, in ``strategy.scope()``) each batch is split over the replicas and the replicas' gradients are summed,
so the criterion sees the global batch's gradient, as in ``fit``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_selopt.core import criteria as criteria_lib
from tf_selopt.core import masks as masks_lib
from tf_selopt.core import selection
from tf_selopt.core.checks import is_int
from tf_selopt.keras import inputs as inputs_lib
from tf_selopt.keras import pruning

__all__ = ["calibrate"]

#: ``verbose="auto"`` shows a progress bar from this many steps on.
PROGRESS_FROM_STEPS = 50


def _check(model, loss, criterion, keep, steps, scope, granularity, num_examples, seed, batch_size, training, verbose):
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model (Keras 3); received {type(model).__name__}.")
    if not model.built or not model.trainable_variables:
        raise ValueError(
            "`model` must be built and have trainable variables (call it on a batch or give it an Input); "
            f"model {model.name!r} has {len(model.trainable_variables) if model.built else 'no'} trainable variables."
        )
    criterion = criteria_lib.get(criterion, num_examples=num_examples)
    if not (is_int(steps) and steps >= 1):
        raise ValueError(f"`steps` must be an int >= 1 (batches to score); received steps={steps!r}.")
    selection.check_scope_and_granularity(scope, granularity)
    if not (is_int(seed) and 0 <= seed < 2**31):
        raise ValueError(f"`seed` must be an int in [0, 2**31); received seed={seed!r}.")
    if not (is_int(batch_size) and batch_size >= 1):
        raise ValueError(f"`batch_size` must be an int >= 1; received batch_size={batch_size!r}.")
    if not isinstance(training, bool):
        raise ValueError(f"`training` must be True or False; received training={training!r}.")
    if verbose not in ("auto", 0, 1):
        raise ValueError(f"`verbose` must be 'auto', 0 or 1; received verbose={verbose!r}.")
    try:
        loss_fn = keras.losses.get(loss)
    except (ValueError, TypeError) as error:
        raise ValueError(f"`loss` must be a Keras loss name, a Loss or a callable; received loss={loss!r}.") from error
    if loss_fn is None:
        raise ValueError("`loss` is required: a Keras loss name, a Loss or a callable (y_true, y_pred) -> loss.")
    total = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    k = selection.resolve_count(keep, total)
    return criterion, loss_fn, k


def _mean_loss(loss_fn, y, y_pred, sample_weight):
    """The batch's mean loss (a ``Loss`` reduces itself; a function's per-example values are weighted and
    averaged over the batch, as Keras' default "sum_over_batch_size" does)."""
    if isinstance(loss_fn, keras.losses.Loss):
        return loss_fn(y, y_pred, sample_weight=sample_weight)
    values = tf.convert_to_tensor(loss_fn(y, y_pred))
    if sample_weight is not None:
        weight = tf.cast(sample_weight, values.dtype)
        trailing = tf.ones(tf.rank(values) - tf.rank(weight), tf.int32)  # (batch,) weights over (batch, ...) values
        weight = tf.reshape(weight, tf.concat([tf.shape(weight), trailing], 0))
        values = values * weight
    return tf.reduce_mean(values)


def calibrate(
    model,
    data,
    *,
    loss,
    keep,
    criterion="fisher",
    steps=10,
    scope="global",
    granularity="parameter",
    num_examples=None,
    seed=0,
    batch_size=32,
    training=False,
    verbose="auto",
) -> list:
    """Masks of the ``k`` entries of ``model`` to fine-tune, scored on ``steps`` batches of ``data``.

    Args:
        model: a built Keras 3 model (TensorFlow backend).
        data: a ``tf.data.Dataset`` (or ``keras.utils.PyDataset``) of ``(x, y)``
            or ``(x, y, sample_weight)`` batches (at least ``steps`` of them), or
            an ``(x, y)`` / ``(x, y, sample_weight)`` tuple of arrays (batched by
            ``batch_size``, repeated as needed). ``x``: an array, a list of arrays
            (one per input) or a dict keyed by input name (keras_hub's
            ``{"token_ids", "padding_mask", "segment_ids"}``), checked against the
            model's inputs (``tf_selopt.keras.inputs``).
        loss: the training loss: a Keras loss name, ``keras.losses.Loss`` or
            callable ``(y_true, y_pred) -> loss``; the model's own losses
            (regularizers) are added, as in ``fit``.
        keep: how many entries train: a fraction in (0, 1] or a count in [1, N]
            (N = trainable parameters; the rounding rule of ``tf_selopt.core.selection``).
        criterion: ``"fisher"`` (sum of g**2 over the batches), ``"gradient_sum"``
            (sum of |g|), ``"preconditioned"`` (needs ``num_examples``),
            ``"magnitude"`` (|w|; reads no batch), ``"random"`` (reads no batch),
            or a criterion object (``tf_selopt.core.criteria``).
        steps: batches to accumulate the criterion over (int >= 1).
        scope: ``"global"`` (top-k over the network) or ``"per_variable"`` (each variable keeps the same
            fraction). For fine-tuning a pretrained transformer on a task that needs new input features, prefer
            ``"per_variable"``: global gradient scores are largest near the output, and a global budget can
            land entirely in the pooler and head (docs/guides/finetuning.md).
        granularity: ``"parameter"``, ``"unit"`` or ``"variable"`` (as in ``SelectiveOptimizer``).
        num_examples: N_data for ``"preconditioned"``.
        seed: int seed of the ``random`` criterion (``tf_selopt.core.criteria.seeds``: the seeds of the
            optimizer's first selection and of ``prune``). Ties never use it: lowest index first.
        batch_size: rows per batch when ``data`` is arrays.
        training: call the model in training mode (dropout on, BatchNormalization
            on batch statistics); its non-trainable variables are restored after.
        verbose: ``"auto"`` (a progress bar from ``PROGRESS_FROM_STEPS`` steps), 0 or 1.

    Returns:
        A list of bool ``np.ndarray``, one per ``model.trainable_variables``
        entry and of its shape, True = trains; exactly ``k`` True in total for
        ``granularity="parameter"`` (fewer only if pruning left fewer than ``k``
        entries), at most ``k`` for "unit" and "variable".

    Raises:
        ValueError: for a bad argument (naming it) before any batch runs; if
            ``data`` runs out before ``steps`` batches; if a variable gets no
            gradient from the loss (a gradient criterion could not score it).

    Example:
        >>> import keras, numpy as np, tf_selopt
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x, y = np.random.rand(64, 4).astype("float32"), np.random.rand(64, 3).astype("float32")
        >>> masks = tf_selopt.calibrate(model, (x, y), loss="mse", keep=5, steps=4, batch_size=16)
        >>> [m.shape for m in masks], int(sum(m.sum() for m in masks))
        ([(4, 3), (3,)], 5)
        >>> opt = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-3), masks=masks)
    """
    criterion, loss_fn, k = _check(
        model, loss, criterion, keep, steps, scope, granularity, num_examples, seed, batch_size, training, verbose
    )
    variables = list(model.trainable_variables)
    state = [{slot: tf.zeros(v.shape, v.dtype) for slot in criterion.slots} for v in variables]
    count = 0.0
    if criterion.uses_gradients:
        dataset = inputs_lib.dataset(model, data, batch_size)
        state, count = _accumulate(model, dataset, loss_fn, criterion, state, steps, training, verbose)
    scores = []
    for i, (v, seed_pair) in enumerate(zip(variables, criteria_lib.seeds(seed, len(variables)))):
        score = criterion.score(state[i], tf.convert_to_tensor(v), tf.constant(count, tf.float32), seed_pair)
        scores.append(tf.ensure_shape(tf.cast(score, tf.float32), v.shape))
    kept = [pruning.pruning_mask(v) for v in variables]
    kept = [None if m is None else tf.convert_to_tensor(m) for m in kept]
    masks = masks_lib.masks_from_scores(scores, k, scope=scope, granularity=granularity, kept=kept)
    masks = [m if keep is None else tf.logical_and(m, keep) for m, keep in zip(masks, kept)]  # a unit's pruned entries
    return [np.asarray(m.numpy(), dtype=bool) for m in masks]


def _accumulate(model, dataset, loss_fn, criterion, state, steps, training, verbose):
    variables = list(model.trainable_variables)
    strategy = tf.distribute.get_strategy()  # the default (one device) outside a strategy's scope
    replicas = strategy.num_replicas_in_sync

    def replica_gradients(batch):
        x, y, *rest = batch
        sample_weight = rest[0] if rest else None
        with tf.GradientTape() as tape:
            y_pred = model(x, training=training)
            value = _mean_loss(loss_fn, y, y_pred, sample_weight)
            if model.losses:
                value += tf.add_n(model.losses)
            value = value / replicas  # the global batch's mean loss, as Keras scales it per replica
        grads = tape.gradient(value, variables)
        missing = [v.path for v, g in zip(variables, grads) if g is None]
        if missing:
            raise ValueError(
                f"`loss` gives no gradient for the trainable variables {missing}: a gradient criterion cannot "
                "score them (freeze them with `trainable=False`, or use criterion='magnitude')."
            )
        grads = [tf.convert_to_tensor(g) for g in grads]
        if replicas > 1:
            grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        return grads

    @tf.function
    def fold(batch, state, count):
        if replicas > 1:
            per_replica = strategy.run(replica_gradients, args=(batch,))
            grads = [strategy.experimental_local_results(g)[0] for g in per_replica]
        else:
            grads = replica_gradients(batch)
        return [
            criterion.update(s, tf.cast(g, v.dtype), tf.convert_to_tensor(v), count)
            for s, g, v in zip(state, grads, variables)
        ]

    snapshot = [(v, tf.identity(v.value)) for v in model.non_trainable_variables] if training else []
    if replicas > 1:
        dataset = strategy.experimental_distribute_dataset(dataset)
    show = verbose == 1 or (verbose == "auto" and steps >= PROGRESS_FROM_STEPS)
    progress = keras.utils.Progbar(steps, unit_name="batch") if show else None
    done = 0
    try:
        for batch in dataset:
            done += 1
            state = fold(batch, state, tf.constant(float(done), tf.float32))
            if progress is not None:
                progress.update(done)
            if done == steps:
                break
    finally:
        for v, value in snapshot:
            v.assign(value)
    if done < steps:
        raise ValueError(f"`data` ran out after {done} batches; `steps`={steps} asks for {steps}.")
    return state, float(done)
