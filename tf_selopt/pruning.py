"""Keras 3 front end of pruning (beta in the note): zero the weights that matter least.

``prune`` is one-shot and eager: it scores the prunable weights with a
criterion, keeps exactly the top ones (``tf_selopt.selection``: exact counts,
ties to the lowest flat index) and sets the others to exactly ``0.0`` in place.
Kept weights are not touched (bit for bit). The masks are returned, not
enforced: further training moves zeroed weights again.

Prunable weights: the ``kernel`` of every layer that has one (Dense, Conv*,
DepthwiseConv*, EinsumDense, ...) and the ``embeddings`` of Embedding layers,
when that attribute is a floating ``keras.Variable`` (LoRA-enabled and quantized
layers expose tensors there and are skipped). Never biases or normalization
parameters. Order: the order of ``model.weights``.

Counting (one rule everywhere): a set of ``N`` weights at sparsity ``s`` loses
``floor(s * N + 0.5)`` weights (``s * N`` rounded half up, in float64) and keeps
the rest. ``scope="global"`` applies it once to all prunable weights of the
model (the note's setting); ``scope="per_layer"`` to each prunable variable on
its own. A variable may end up fully zeroed (global scope, or per-layer when
``s >= 1 - 0.5 / N_i``).

Examples:
    >>> import keras, numpy as np
    >>> model = keras.Sequential(
    ...     [keras.Input((2,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(1, name="b")], name="net")
    >>> _ = model.get_layer("a").kernel.assign([[0.1, -0.6, 0.2], [0.5, -0.3, 0.4]])
    >>> _ = model.get_layer("b").kernel.assign([[0.05], [-0.9], [0.25]])
    >>> masks = prune(model, 0.5)  # 9 weights: floor(4.5 + 0.5) = 5 zeroed, the 4 largest |w| kept
    >>> {path: m.ravel().tolist() for path, m in masks.items()}
    {'net/a/kernel': [False, True, False, True, False, True], 'net/b/kernel': [False, True, False]}
    >>> model.get_layer("a").kernel.numpy().tolist()
    [[0.0, -0.6000000238418579, 0.0], [0.5, 0.0, 0.4000000059604645]]
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.Dense(2)])
    >>> [int(m.sum()) for m in prune(model, 0.5, scope="per_layer").values()]  # 20 -> 10, 10 -> 5
    [10, 5]
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_selopt import criteria as criteria_lib
from tf_selopt import schedules, selection
from tf_selopt.checks import is_int

__all__ = ["SCOPES", "PRUNABLE_ATTRIBUTES", "prunable_variables", "prune"]

SCOPES = ("global", "per_layer")
PRUNABLE_ATTRIBUTES = ("kernel", "embeddings")

for _cls in (schedules.ConstantSparsity, schedules.PolynomialDecay):
    keras.saving.register_keras_serializable(package="tf_selopt")(_cls)


def _layer_prunables(layer) -> list:
    """The prunable variables a layer owns (see the module doc)."""
    found = []
    for attr in PRUNABLE_ATTRIBUTES:
        try:
            value = getattr(layer, attr, None)
        except Exception:  # e.g. a property that needs a built layer
            value = None
        if isinstance(value, keras.Variable) and keras.backend.is_float_dtype(value.dtype):
            found.append(value)
    return found


def _prunables_by_layer(model) -> dict:
    """Layer name -> its prunable variables, for the model and all nested layers."""
    by_layer = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        variables = _layer_prunables(layer)
        if variables:
            by_layer.setdefault(layer.name, []).extend(variables)
    return by_layer


def prunable_variables(model, layers=None) -> list:
    """The variables ``prune`` may zero, in the order of ``model.weights``.

    Args:
        model: a built Keras 3 model (or layer).
        layers: None (all prunable layers) or a list of layer names to
            restrict to; each must name a layer with prunable weights.

    Returns:
        list of ``keras.Variable``, each once.

    Raises:
        ValueError: for an unknown or non-prunable layer name, or when there
            is nothing to prune (e.g. an unbuilt model).
    """
    by_layer = _prunables_by_layer(model)
    if not by_layer:
        raise ValueError(
            f"Model {model.name!r} has no prunable weights (kernels or embeddings); "
            "is it built? Call it on data or `model.build(input_shape)` first."
        )
    if layers is None:
        wanted = [v for vs in by_layer.values() for v in vs]
    else:
        if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"`layers` must be None or a non-empty list of layer names; received layers={layers!r}.")
        all_names = {layer.name for layer in model._flatten_layers(include_self=True, recursive=True)}
        wanted = []
        for name in layers:
            if name not in by_layer:
                reason = "has no prunable weights" if name in all_names else "is not a layer of the model"
                raise ValueError(
                    f"`layers`: {name!r} {reason}; layers with prunable weights: {sorted(by_layer)}."
                )
            wanted.extend(by_layer[name])
    wanted_ids = {id(v) for v in wanted}
    ordered, seen = [], set()
    for v in model.weights:
        if id(v) in wanted_ids and id(v) not in seen:
            seen.add(id(v))
            ordered.append(v)
    # Anything not listed in model.weights (should not happen) goes last, in layer order.
    for v in wanted:
        if id(v) not in seen:
            seen.add(id(v))
            ordered.append(v)
    return ordered


def _resolve_criterion(criterion):
    one_shot = ("magnitude", "random")
    if isinstance(criterion, str):
        if criterion in one_shot:
            return criteria_lib.BUILTIN[criterion]()
        if criterion in criteria_lib.BUILTIN:
            raise ValueError(
                f"criterion={criterion!r} scores gradients over a training window; one-shot `prune` "
                f"supports {one_shot} or a criterion object with uses_gradients=False."
            )
    elif not isinstance(criterion, type) and callable(getattr(criterion, "score", None)):
        if getattr(criterion, "uses_gradients", False):
            raise ValueError(
                f"criterion={criterion!r} uses gradients (uses_gradients=True); one-shot `prune` has no "
                f"gradient window: use {one_shot} or a criterion with uses_gradients=False."
            )
        return criterion
    raise ValueError(
        f"Unknown `criterion`={criterion!r}; expected one of {one_shot} or an object with a "
        "`score(state, weight, count, seed)` method (see tf_selopt.criteria)."
    )


def _num_pruned(sparsity: float, n: int) -> int:
    """Weights zeroed out of ``n`` at ``sparsity``: ``floor(sparsity * n + 0.5)``."""
    return min(n, int(math.floor(sparsity * n + 0.5)))


def prune(model, sparsity, scope="global", criterion="magnitude", layers=None, seed=0) -> dict:
    """Zero the lowest-scoring prunable weights of ``model`` in place (one-shot, eager).

    Args:
        model: a built Keras 3 model.
        sparsity: fraction of the prunable weights to zero, a float in [0, 1);
            counts follow the module doc's rounding rule.
        scope: ``"global"`` (rank all prunable weights together, the note's
            setting) or ``"per_layer"`` (each prunable variable at ``sparsity``).
        criterion: ``"magnitude"`` (keep the largest ``|w|``), ``"random"``, or
            a criterion object with ``score(state, weight, count, seed)`` and
            ``uses_gradients`` False; it is called with ``state={}``,
            ``count=0.0`` and ``seed=[seed, i]`` (int32, ``i`` = variable index).
        layers: None or a list of layer names to restrict pruning to.
        seed: int in [0, 2**31), for ``"random"``.

    Returns:
        dict: variable path -> bool ``np.ndarray`` of the variable's shape,
        True = kept.

    Raises:
        ValueError: for any invalid argument, before any weight changes.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not (
        math.isfinite(sparsity) and 0.0 <= sparsity < 1.0
    ):
        raise ValueError(f"`sparsity` must be a float in [0, 1); received sparsity={sparsity!r}.")
    sparsity = float(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}; received scope={scope!r}.")
    if not is_int(seed) or not 0 <= seed < 2**31:
        raise ValueError(f"`seed` must be an int in [0, 2**31); received seed={seed!r}.")
    criterion = _resolve_criterion(criterion)
    variables = prunable_variables(model, layers)

    # Everything is computed before the first assignment, so a failure leaves the model intact.
    scores = []
    for i, v in enumerate(variables):
        score = criterion.score({}, v.value, tf.constant(0.0), tf.constant([int(seed), i], tf.int32))
        score = tf.convert_to_tensor(score)
        if score.shape != tuple(v.shape):
            raise ValueError(
                f"criterion {criterion!r} returned scores of shape {tuple(score.shape)} for {v.path!r} "
                f"of shape {tuple(v.shape)}; they must match."
            )
        scores.append(tf.cast(score, tf.float32))
    sizes = [int(np.prod(v.shape)) for v in variables]
    if scope == "global":
        total = sum(sizes)
        masks = selection.select(scores, total - _num_pruned(sparsity, total), "global")
    else:
        masks = [selection.top_k_mask(s, n - _num_pruned(sparsity, n)) for s, n in zip(scores, sizes)]
    paths = [v.path for v in variables]
    if len(set(paths)) != len(paths):
        raise ValueError(f"Prunable variables have duplicate paths {paths}; cannot key the masks by path.")

    for v, m in zip(variables, masks):
        v.assign(tf.where(m, v.value, tf.zeros_like(v.value)))
    return {p: m.numpy() for p, m in zip(paths, masks)}
