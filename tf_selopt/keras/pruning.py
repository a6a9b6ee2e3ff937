"""Keras 3 front end of pruning (beta in the note): zero the weights that matter least, keep them zero.

``prune`` is one-shot and eager: it scores the prunable weights with a
criterion, keeps exactly the top ones (``tf_selopt.core.masks.masks_from_scores``: exact counts,
ties to the lowest flat index), sets the others to exactly ``0.0`` in place and
installs a ``PruningMask`` on each variable so that they stay ``0.0`` through
further training. Kept weights are not touched (bit for bit).
``GradualPruning`` is a callback that prunes during ``fit`` on a
``tf_selopt.core.schedules`` schedule (tfmot's ``ConstantSparsity`` and
``PolynomialDecay``, tfmot's timing). ``strip_pruning`` removes the masks,
``mask_zeros`` re-creates them from the zeros of a loaded model.

Prunable weights: the ``kernel`` of every layer that has one (Dense, Conv*,
DepthwiseConv*, EinsumDense, ...) and the ``embeddings`` of Embedding layers,
when that attribute is a floating ``keras.Variable`` (LoRA-enabled and quantized
layers expose tensors there and are skipped); also a floating variable *named*
``kernel`` or ``embeddings`` that a layer owns under another attribute when the
layer has no attribute of that name (keras_hub's ``PositionEmbedding`` keeps its
table, named ``embeddings``, as ``position_embeddings``). Never biases or
normalization parameters. With ``include_recurrent=True`` also the
``recurrent_kernel`` of recurrent cells (LSTM, GRU, SimpleRNN; default False:
unchanged). Order: the order of ``model.weights``. Embedding-like tables these
rules leave out (a floating variable of rank >= 2 with ``embed`` in its name or
attribute: e.g. a LoRA-enabled Embedding's table, keras_hub DeBERTa's
``rel_embeddings``) are listed with the reason by ``left_out_tables``; ``prune``
and ``GradualPruning`` warn naming them (``UserWarning``) and ``prune``'s result
carries them in ``left_out``.

Counting (one rule everywhere): a set of ``N`` weights at sparsity ``s`` loses
``floor(s * N + 0.5)`` weights (``s * N`` rounded half up, in float64) and keeps
the rest. ``scope="global"`` applies it once to all prunable weights of the
model (the note's setting); ``scope="per_layer"`` to each prunable variable on
its own. A variable may end up fully zeroed (global scope, or per-layer when
``s >= 1 - 0.5 / N_i``): global pruning at 0.8 zeroes 10 of MobileNetV2's 53
kernels (depthwise ones) entirely. A ``UserWarning`` names the variables each
call zeroes entirely. ``min_kept_per_variable=m`` (default 0: none) keeps at
least ``min(m, n_i)`` weights of each variable (its best-scoring ones still
kept; tfmot keeps one per tensor). In global scope they come out of the same
budget: the total pruned stays exactly ``floor(s * N + 0.5)``, other variables
lose more (ValueError when the floors alone exceed the weights kept). In
per-layer scope the floor wins over the count of that variable. Masks are monotone: an entry already pruned stays
pruned (it ranks below every other), so asking for less sparsity than reached
changes nothing, and ``prune(model, 0.0)`` re-applies the installed masks.

Structured sparsity (``tf_selopt.core.sparsity``), for a runtime that can use
it: LiteRT runs a FULLY_CONNECTED layer sparse (no DENSIFY op at load) when
its weight is pruned in 1x4 blocks (float) or 1x16 blocks (int8) along the
input axis, which is axis -2 of a Keras kernel ``(..., in, out)`` and the last
axis of the TFLite weight ``(out, in)``.

* ``block_size=(r, c)`` (TFLite's ``(out, in)`` orientation: ``r`` consecutive
  output units x ``c`` consecutive inputs; ``(1, 4)``, ``(1, 16)``): whole
  blocks are pruned; the counting rule above applies to the number of blocks
  (``scope`` as above; ``min_kept_per_variable`` counts blocks). A block's
  score is the sum of its entries' criterion scores (``magnitude``: the summed
  ``|w|``; already-pruned entries count 0; a block whose entries are all pruned
  is pruned). Entries pruned before (e.g. by an unstructured call) stay pruned,
  so a block may be partly zero; exactly ``floor(s * B + 0.5)`` blocks are
  entirely zero after a call on a model without masks.
* ``sparsity_m_by_n=(m, n)`` (tfmot's convention, ``(2, 4)``: 2 zeros in every
  4): in every group of ``n`` consecutive inputs (one output unit, one
  position of the leading axes of a Conv kernel) the ``n - m`` best-scoring
  weights are kept and the others zeroed: exactly ``m`` zeros per group
  (at least ``m`` where earlier masks pruned more of the group).

Both apply along axis -2 of **every** pruned variable: Dense kernels
``(in, out)``, Conv kernels ``(h, w, in, out)`` (groups of input channels at
each kernel position and output channel, as tfmot's N:M does), also
DepthwiseConv ``(h, w, channels, multiplier)`` (groups of channels) and
Embedding tables ``(vocab, dim)`` (groups of consecutive tokens), which no
runtime speeds up: restrict ``layers=`` to the layers you deploy sparse.
A variable whose axis -2 is not divisible by ``c`` (or ``n``), or axis -1 by
``r``, raises a ValueError naming it, before anything changes: a partial
structure would not run sparse, and leaving the variable out silently would
change the counts (``layers=`` leaves it out explicitly). Biases are never
pruned (as above).

Policies (``policy=``): which layers to prune, for a runtime that speeds them
up. ``"xnnpack_1x1"`` (tfmot's ``PruneForLatencyOnXNNPack``) prunes only the
kernels of ``Conv2D`` layers with a 1x1 kernel, stride 1, no dilation, one
group, ``channels_last`` (NHWC) and a float kernel: the convolutions XNNPack
can run sparse (as a sparse matrix times the NCHW activations) once at least
``XNNPACK_SPARSE_FRACTION`` = 2/3 of their weights are zero. Every other
weight stays bit for bit. ``sparsity`` and ``scope`` count over those kernels
only; a ``UserWarning`` names the pruned kernels left below 2/3 zeros (use
``scope="per_layer"`` with ``sparsity >= 2/3``). ``layers=`` may narrow the
choice (each named layer must qualify). A model without such a layer raises
a ValueError naming its kernel layers and why each does not qualify. What the
policy does not check, and XNNPack needs as well: the convolutions must lie in
a subgraph XNNPack can switch to NCHW (a 3x3 stride-2 first convolution over
3 channels with padding 1, then 1x1 / depthwise 3x3 or 5x5 / add / clamp
nodes, ending in a global average pooling), the file must keep the zeros
encoded (``sparse_float32`` export: a ``DENSIFY`` op per kernel, which the
XNNPack delegate takes over and marks sparse), and the CPU must be ARM (or an
x86 without AVX): on x86 with AVX, XNNPack never runs sparse
(``docs/results.md``, "XNNPack sparse 1x1 convolutions": measured, no speed-up).

Enforcement: a mask is the variable's ``constraint``, which every Keras 3
optimizer applies after each update inside ``apply`` (after momentum, Adam
moments and weight decay), in ``fit`` and custom loops, with or without XLA.
Constraints are read when the train step is traced: the functions here rebuild
``model.train_function`` when they add or remove masks; a custom loop must
install masks before tracing its ``tf.function`` (and retrace after
``strip_pruning``). Later mask updates need no retrace (masks are variables).
Masks are not in the layer config and not saved; zeros are: after
``keras.saving.load_model`` call ``mask_zeros`` to keep training a pruned model.
Caveat: with ``use_ema=True`` Keras overwrites the weights with their averages
at the end of ``fit`` without the constraint; ``GradualPruning`` re-zeroes
after that, otherwise call ``prune(model, 0.0)``.

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
    >>> model.compile(keras.optimizers.Adam(0.1), "mse")
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    >>> model.get_layer("a").kernel.numpy()[0, 0]  # stays exactly zero
    np.float32(0.0)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.Dense(2)])
    >>> [int(m.sum()) for m in prune(model, 0.5, scope="per_layer").values()]  # 20 -> 10, 10 -> 5
    [10, 5]

    Blocks of 4 consecutive inputs, and 2:4 (2 zeros in every 4 consecutive inputs):

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(3)])
    >>> masks = prune(model, 0.45, block_size=(1, 4))  # 8 + 3 = 11 blocks: floor(4.95 + 0.5) = 5 pruned
    >>> sum(int((~m).sum()) for m in masks.values()) // 4
    5
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3), keras.layers.Dense(4)])
    >>> kernel = prune(model, None, layers=[model.layers[0].name], sparsity_m_by_n=(2, 4))
    >>> next(iter(kernel.values())).reshape(2, 4, 3).sum(axis=1).tolist()  # kept per group of 4 inputs
    [[2, 2, 2], [2, 2, 2]]
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_selopt.core import criteria as criteria_lib
from tf_selopt.core import masks as masks_lib
from tf_selopt.core import schedules, selection
from tf_selopt.core import sparsity as sparsity_lib
from tf_selopt.core.checks import is_int
from tf_selopt.keras import _compat

__all__ = [
    "SCOPES",
    "POLICIES",
    "XNNPACK_SPARSE_FRACTION",
    "PRUNABLE_ATTRIBUTES",
    "RECURRENT_ATTRIBUTES",
    "prunable_variables",
    "left_out_tables",
    "PruneResult",
    "prune",
    "PruningMask",
    "pruning_mask",
    "GradualPruning",
    "strip_pruning",
    "mask_zeros",
]

SCOPES = ("global", "per_layer")
POLICIES = ("xnnpack_1x1",)
XNNPACK_SPARSE_FRACTION = 2 / 3  # XNNPack runs a 1x1 convolution sparse from this fraction of zero weights
PRUNABLE_ATTRIBUTES = ("kernel", "embeddings")
RECURRENT_ATTRIBUTES = ("recurrent_kernel",)
LORA_PREFIX = "lora_"  # Keras names a LoRA adapter's factors lora_kernel_a / lora_embeddings_b / ...

for _cls in (schedules.ConstantSparsity, schedules.PolynomialDecay):
    keras.saving.register_keras_serializable(package="tf_selopt")(_cls)


class PruningMask(keras.constraints.Constraint):
    """The constraint that keeps a variable's pruned entries at exactly ``0.0``.

    Args:
        mask: non-trainable bool ``keras.Variable`` of the weight's shape,
            True = kept.
        inner: the variable's previous constraint (applied first) or None.

    Not saved (run-time state, not in any layer config): see the module doc.
    """

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return keras.ops.where(self.mask, w, keras.ops.zeros_like(w))

    def get_config(self):
        raise NotImplementedError(
            "PruningMask is run-time state and is not saved; after loading a pruned model call "
            "`tf_selopt.keras.pruning.mask_zeros(model)`."
        )


def pruning_mask(variable):
    """The bool ``keras.Variable`` (variable's shape, True = kept) installed on ``variable``, or None."""
    constraint = variable.constraint
    return constraint.mask if isinstance(constraint, PruningMask) else None


def retrace_train_step(model):
    """Rebuild ``model.train_function`` (if traced) so that it reads the current constraints and trainable flags."""
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


_ABSENT = object()


def _attribute(layer, name):
    """``layer``'s attribute ``name``; ``_ABSENT`` when it has none; None when reading it raises (e.g. a
    property that needs a built layer)."""
    try:
        return getattr(layer, name, _ABSENT)
    except Exception:
        return None


def _is_float_variable(value) -> bool:
    return isinstance(value, keras.Variable) and keras.backend.is_float_dtype(value.dtype)


def _owned_variables(model) -> dict:
    """Layer id -> the variables the layer itself creates (not its sublayers'), for ``model`` and every layer
    nested in it. A variable belongs to the deepest layer that lists it in ``weights``."""
    owner = {}
    for layer in _compat.flatten_layers(model):  # a parent comes before its sublayers
        for v in layer.weights:
            owner[id(v)] = (layer, v)
    owned = {}
    for layer, v in owner.values():
        owned.setdefault(id(layer), []).append(v)
    return owned


def _layer_prunables(layer, own=(), include_recurrent=False) -> list:
    """The prunable variables ``layer`` owns (see the module doc): the floating ``keras.Variable`` at an
    attribute named in ``PRUNABLE_ATTRIBUTES`` (and ``RECURRENT_ATTRIBUTES``), and any variable of ``own``
    (the layer's own variables) named so when the layer has no attribute of that name."""
    names = PRUNABLE_ATTRIBUTES + (RECURRENT_ATTRIBUTES if include_recurrent else ())
    found = [value for value in (_attribute(layer, name) for name in names) if _is_float_variable(value)]
    for v in own:
        if v.name in names and _is_float_variable(v) and _attribute(layer, v.name) is _ABSENT:
            found.append(v)
    return found


def _prunables_by_layer(model, include_recurrent=False) -> dict:
    """Layer name -> its prunable variables, for the model and all nested layers."""
    owned = _owned_variables(model)
    by_layer = {}
    for layer in _compat.flatten_layers(model):
        variables = _layer_prunables(layer, owned.get(id(layer), ()), include_recurrent)
        if variables:
            by_layer.setdefault(layer.name, []).extend(variables)
    return by_layer


def _attribute_names(layer, variable) -> list:
    """The names under which ``layer`` holds ``variable`` directly (its instance attributes)."""
    return [name for name, value in vars(layer).items() if value is variable]


def _left_out_reason(layer, variable) -> str:
    """Why the prunable-variable rules (module doc) do not cover ``variable``, a table ``layer`` owns."""
    where = f"{type(layer).__name__} {layer.name!r}"
    if variable.name in PRUNABLE_ATTRIBUTES:  # the layer exposes that name as something else
        return (
            f"{where} exposes `{variable.name}` as a computed tensor, not this variable (LoRA or quantization): "
            "zeroing the stored table would not zero what the layer computes with"
        )
    held = ", ".join(f"`{name}`" for name in _attribute_names(layer, variable)) or "an unnamed attribute"
    return (
        f"{where} holds it as {held}, named {variable.name!r}: prune covers variables named "
        f"{' or '.join(repr(n) for n in PRUNABLE_ATTRIBUTES)} only"
    )


def left_out_tables(model, include_recurrent=False) -> dict:
    """The embedding-like tables of ``model`` that ``prune`` does not cover, with the reason.

    A table: a floating variable of rank >= 2 with ``embed`` in its name or in the attribute its layer holds it
    under (not a LoRA adapter's factor, ``lora_*``). Those not in ``prunable_variables(model)`` are listed
    (tables that a ``layers=`` or ``policy`` choice leaves out are not: ``prune`` does not report them).

    Returns:
        dict: variable path -> the reason (a phrase naming the layer), in the order of ``model.weights``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4, name="e")],
        ...                          name="net")
        >>> model.get_layer("e").enable_lora(2)
        >>> left_out_tables(model)["net/e/embeddings"][:60]
        "Embedding 'e' exposes `embeddings` as a computed tensor, not"
    """
    owned = _owned_variables(model)
    covered = {id(v) for vs in _prunables_by_layer(model, include_recurrent).values() for v in vs}
    layers = {id(layer): layer for layer in _compat.flatten_layers(model)}
    owner = {id(v): layers[layer_id] for layer_id, vs in owned.items() for v in vs}
    left_out = {}
    for v in model.weights:
        if id(v) in covered or id(v) not in owner or len(v.shape) < 2 or not _is_float_variable(v):
            continue
        layer = owner[id(v)]
        if v.name.startswith(LORA_PREFIX):  # a LoRA adapter factor: reported with its table
            continue
        if "embed" in v.name.lower() or any("embed" in n.lower() for n in _attribute_names(layer, v)):
            left_out.setdefault(v.path, _left_out_reason(layer, v))
    return left_out


def _warn_left_out(left_out: dict, stacklevel: int = 3):
    """UserWarning naming the tables ``left_out`` (path -> reason), if any."""
    if left_out:
        listed = "; ".join(f"{path!r}: {why}" for path, why in left_out.items())
        warnings.warn(
            f"pruning leaves {len(left_out)} embedding table(s) out, unpruned: {listed}",
            UserWarning,
            stacklevel=stacklevel,
        )


class PruneResult(dict):
    """What ``prune`` returns: dict variable path -> bool ``np.ndarray`` (True = kept), plus ``left_out``:
    dict path -> reason for the embedding-like tables it did not cover (``left_out_tables``; empty when
    ``layers`` or ``policy`` chose the variables)."""

    def __init__(self, masks, left_out):
        super().__init__(masks)
        self.left_out = dict(left_out)


def _check_layers(layers):
    if layers is not None and (isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers):
        raise ValueError(f"`layers` must be None or a non-empty list of layer names; received layers={layers!r}.")


def _check_include_recurrent(include_recurrent):
    if not isinstance(include_recurrent, bool):
        raise ValueError(
            f"`include_recurrent` must be True or False; received include_recurrent={include_recurrent!r}."
        )


def _check_min_kept(min_kept_per_variable):
    if not is_int(min_kept_per_variable) or min_kept_per_variable < 0:
        raise ValueError(
            "`min_kept_per_variable` must be an int >= 0 (weights kept in each variable; 0: no floor); "
            f"received min_kept_per_variable={min_kept_per_variable!r}."
        )


def _check_policy(policy):
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"`policy` must be None or one of {POLICIES}; received policy={policy!r}.")


def _xnnpack_1x1_reason(layer):
    """None when XNNPack can run ``layer`` as a sparse 1x1 convolution; else why not (a phrase)."""
    if not isinstance(layer, keras.layers.Conv2D):
        return f"is a {type(layer).__name__}, not a Conv2D"
    kernel = getattr(layer, "kernel", None)
    checks = [
        (tuple(layer.kernel_size) == (1, 1), f"has a {'x'.join(map(str, layer.kernel_size))} kernel, not 1x1"),
        (tuple(layer.strides) == (1, 1), f"has strides {tuple(layer.strides)}, not (1, 1)"),
        (tuple(layer.dilation_rate) == (1, 1), f"has dilation_rate {tuple(layer.dilation_rate)}, not (1, 1)"),
        (layer.groups == 1, f"has groups={layer.groups}, not 1"),
        (layer.data_format == "channels_last", f"is {layer.data_format}, not channels_last (NHWC)"),
        (
            isinstance(kernel, keras.Variable) and keras.backend.is_float_dtype(kernel.dtype),
            "has no float kernel variable",
        ),
    ]
    return next((why for ok, why in checks if not ok), None)


def _policy_layers(model, policy, layers):
    """The layer names ``policy`` prunes (``layers`` narrowed to them); ``layers`` itself without a policy.

    Raises ValueError naming a layer of ``layers`` that the policy excludes, or
    naming the model's kernel layers when none qualifies. Changes nothing.
    """
    if policy is None:
        return layers
    _check_layers(layers)
    by_layer = _prunables_by_layer(model)
    candidates = {}
    for layer in _compat.flatten_layers(model):
        if layer.name in by_layer:
            candidates.setdefault(layer.name, layer)
    if layers is not None:
        for name in layers:
            reason = _xnnpack_1x1_reason(candidates[name]) if name in candidates else None
            if reason is not None:
                raise ValueError(
                    f"`policy`={policy!r} prunes only 1x1 Conv2D kernels (stride 1, no dilation, groups 1, NHWC); "
                    f"`layers` names {name!r}, which {reason}."
                )
        return layers
    chosen = [name for name, layer in candidates.items() if _xnnpack_1x1_reason(layer) is None]
    if not chosen:
        why = [f"{name!r} {_xnnpack_1x1_reason(layer)}" for name, layer in candidates.items()]
        shown = "; ".join(why[:6]) + (f"; ... ({len(why) - 6} more)" if len(why) > 6 else "")
        raise ValueError(
            f"`policy`={policy!r}: model {model.name!r} has no layer to prune under it (a Conv2D with a 1x1 kernel, "
            f"stride 1, no dilation, groups 1, channels_last and a float kernel); its layers with kernels: "
            f"{shown or 'none'}."
        )
    return chosen


def _warn_below_xnnpack(variables, masks, sparsity, scope):
    """UserWarning naming the policy-pruned kernels with fewer than 2/3 zeros (XNNPack runs them dense)."""
    thin = [v.path for v, m in zip(variables, masks) if np.sum(~m) < XNNPACK_SPARSE_FRACTION * m.size]
    if thin:
        warnings.warn(
            f"policy 'xnnpack_1x1' at sparsity {sparsity:g} ({scope}): {len(thin)} of {len(variables)} pruned 1x1 "
            f"kernels keep more than 1/3 of their weights, and XNNPack runs those dense: {thin}; use "
            "scope='per_layer' with sparsity >= 2/3",
            UserWarning,
            stacklevel=3,
        )


def prunable_variables(model, layers=None, include_recurrent=False) -> list:
    """The variables ``prune`` may zero, in the order of ``model.weights``.

    Args:
        model: a built Keras 3 model (or layer).
        layers: None (all prunable layers) or a list of layer names to
            restrict to; each must name a layer with prunable weights.
        include_recurrent: also the ``recurrent_kernel`` of recurrent cells
            (LSTM, GRU, SimpleRNN); default False.

    Returns:
        list of ``keras.Variable``, each once, with distinct paths.

    Raises:
        ValueError: for an unknown or non-prunable layer name, or when there
            is nothing to prune (e.g. an unbuilt model).
    """
    _check_layers(layers)
    _check_include_recurrent(include_recurrent)
    by_layer = _prunables_by_layer(model, include_recurrent)
    if not by_layer:
        raise ValueError(
            f"Model {model.name!r} has no prunable weights (kernels or embeddings); "
            "is it built? Call it on data or `model.build(input_shape)` first."
        )
    if layers is None:
        wanted = [v for vs in by_layer.values() for v in vs]
    else:
        all_names = {layer.name for layer in _compat.flatten_layers(model)}
        wanted = []
        for name in layers:
            if name not in by_layer:
                reason = "has no prunable weights" if name in all_names else "is not a layer of the model"
                raise ValueError(f"`layers`: {name!r} {reason}; layers with prunable weights: {sorted(by_layer)}.")
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
    paths = [v.path for v in ordered]
    if len(set(paths)) != len(paths):
        raise ValueError(f"Prunable variables have duplicate paths {paths}; cannot key the masks by path.")
    return ordered


def _check_structure(sparsity, block_size, sparsity_m_by_n, min_kept_per_variable):
    """Validate the sparsity structure; returns ``(sparsity, block_size, m_by_n)`` (see ``prune``).

    ``sparsity`` may be None only with ``sparsity_m_by_n`` (it is then ``m / n``);
    given with it, it must equal ``m / n``.
    """
    sparsity, block, m_by_n = sparsity_lib.check_structure(sparsity, block_size, sparsity_m_by_n)
    if m_by_n is None:
        return sparsity, block, None
    if min_kept_per_variable:
        raise ValueError(
            f"`min_kept_per_variable`={min_kept_per_variable!r} does not apply with `sparsity_m_by_n` (every group of "
            "n keeps n - m weights, no variable is emptied); leave it at 0."
        )
    return sparsity, block, m_by_n


def _check_options(scope, criterion, seed):
    """Validate ``scope``, ``criterion`` and ``seed``; returns the criterion object."""
    selection.check_scope_and_granularity(scope, "parameter", SCOPES)
    if not is_int(seed) or not 0 <= seed < 2**31:
        raise ValueError(f"`seed` must be an int in [0, 2**31); received seed={seed!r}.")
    return criteria_lib.get(criterion, one_shot=True)


def _structure_name(block_size, m_by_n) -> str:
    return f"`sparsity_m_by_n`={tuple(m_by_n)}" if m_by_n else f"`block_size`={tuple(block_size)}"


def _check_structured_variables(variables, block_size, m_by_n):
    """ValueError naming the first variable that the structure does not divide (no state changes)."""
    if m_by_n is None and block_size == (1, 1):
        return
    rows, cols = (1, m_by_n[1]) if m_by_n else block_size
    for v in variables:
        sparsity_lib.check_divisible(v.shape, rows, cols, _structure_name(block_size, m_by_n), repr(v.path))


def _new_masks(
    variables, sparsity: float, scope: str, criterion, seed: int, min_kept: int = 0, block_size=(1, 1), m_by_n=None
) -> list:
    """Keep-masks at ``sparsity`` (bool tensors of the variables' shapes), monotone in the installed ones.

    Entries already pruned score ``-inf`` and stay pruned, so exactly
    ``floor(sparsity * N + 0.5)`` entries are pruned (``N`` per variable or over
    all, by ``scope``) unless more already are: then the masks do not change.
    ``min_kept``: each variable keeps its best ``min(min_kept, kept_i)`` entries
    (global: out of the same total; per-layer: the floor wins). Warns naming the
    variables that this call zeroes entirely. Raises ValueError for scores of
    the wrong shape or floors above the total kept; changes no state.

    ``block_size`` other than ``(1, 1)``: the same rule over blocks
    (``tf_selopt.core.sparsity``): ``N`` counts blocks, a block scores the sum of
    its kept entries' scores, a block with no kept entry is already pruned,
    ``min_kept`` counts blocks. ``m_by_n``: ``sparsity`` and ``scope`` are not
    used; every group of ``n`` consecutive inputs keeps its ``n - m`` best entries.
    """
    _check_structured_variables(variables, block_size, m_by_n)
    scores, old = [], []
    for v, seed_pair in zip(variables, criteria_lib.seeds(int(seed), len(variables))):
        score = tf.convert_to_tensor(criterion.score({}, v.value, tf.constant(0.0), seed_pair))
        if score.shape != tuple(v.shape):
            raise ValueError(
                f"criterion {criterion!r} returned scores of shape {tuple(score.shape)} for {v.path!r} "
                f"of shape {tuple(v.shape)}; they must match."
            )
        kept = pruning_mask(v)
        scores.append(tf.cast(score, tf.float32))
        old.append(tf.ones(v.shape, tf.bool) if kept is None else kept.value)
    masks = _keep_masks(scores, old, sparsity, scope, min_kept, block_size, m_by_n)
    masks = [tf.logical_and(m, k) for m, k in zip(masks, old)]
    emptied = [
        v.path for v, m, k in zip(variables, masks, old) if bool(tf.reduce_any(k)) and not bool(tf.reduce_any(m))
    ]
    if emptied:
        warnings.warn(
            f"pruning at sparsity {sparsity:g} ({scope}) zeroes {len(emptied)} of {len(variables)} prunable "
            f"variables entirely (those layers no longer pass on their input): {emptied}; pass "
            "min_kept_per_variable=1 (or more) to keep the best weights of each (global scope: taken from the "
            "same budget, the total stays exact)",
            UserWarning,
            stacklevel=3,
        )
    return masks


def _keep_masks(scores, old, sparsity: float, scope: str, min_kept: int, block_size, m_by_n) -> list:
    """The module doc's counts handed to ``masks_from_scores``: keep-masks over entries, blocks or N:M groups.

    A unit is an entry, or a block of ``block_size``; each set of ``N`` units keeps ``N - count_of(sparsity,
    N)``, once over all variables (``"global"``) or per variable (``"per_layer"``), with ``min_kept`` as
    the per-variable floor. ``old``: the installed masks (pruned entries rank last).
    """
    if m_by_n is not None:
        return masks_lib.masks_from_scores(scores, None, granularity=masks_lib.MByN(*m_by_n), kept=old)
    per_unit = block_size[0] * block_size[1]
    granularity = "parameter" if per_unit == 1 else masks_lib.Block(*block_size)
    units = [int(np.prod(s.shape)) // per_unit for s in scores]
    if scope == "global":
        keep = sum(units) - selection.count_of(sparsity, sum(units))
    else:
        keep = [n - selection.count_of(sparsity, n) for n in units]
    return masks_lib.masks_from_scores(
        scores,
        keep,
        scope="global" if scope == "global" else "per_variable",
        granularity=granularity,
        kept=old,
        floor=min_kept,
        floor_name="min_kept_per_variable",
    )


def _install_masks(model, variables) -> list:
    """Install an all-True ``PruningMask`` on each variable that has none; returns the mask variables."""
    added = False
    for v in variables:
        if pruning_mask(v) is None:
            mask = keras.Variable(np.ones(v.shape, bool), dtype="bool", trainable=False, name=f"{v.name}_pruning_mask")
            v.constraint = PruningMask(mask, v.constraint)
            added = True
    if added:
        retrace_train_step(model)
    return [pruning_mask(v) for v in variables]


def _apply_masks(model, variables, masks) -> list:
    """Install ``masks`` (bool tensors) on ``variables`` and zero the pruned weights; returns the mask variables."""
    mask_vars = _install_masks(model, variables)
    for v, mask_var, m in zip(variables, mask_vars, masks):
        mask_var.assign(m)
        v.assign(tf.where(m, v.value, tf.zeros_like(v.value)))
    return mask_vars


def _zero_masks(variables) -> list:
    """Keep-masks ``w != 0`` (bool tensors of the variables' shapes): the zeros are taken as pruned."""
    return [tf.not_equal(v.value, 0) for v in variables]


def prune(
    model,
    sparsity,
    scope="global",
    criterion="magnitude",
    layers=None,
    seed=0,
    min_kept_per_variable=0,
    include_recurrent=False,
    block_size=None,
    sparsity_m_by_n=None,
    policy=None,
) -> dict:
    """Zero the lowest-scoring prunable weights of ``model`` in place and keep them zero from now on.

    Installs (or updates, monotonically) a ``PruningMask`` on each prunable
    variable: pruned weights stay exactly ``0.0`` through further training.

    Args:
        model: a built Keras 3 model.
        sparsity: fraction of the prunable weights to zero, a float in [0, 1);
            counts follow the module doc's rounding rule.
        scope: ``"global"`` (rank all prunable weights together, the note's
            setting) or ``"per_layer"`` (each prunable variable at ``sparsity``).
        criterion: ``"magnitude"`` (keep the largest ``|w|``), ``"random"``, or
            a criterion object with ``score(state, weight, count, seed)`` and
            ``uses_gradients`` False; it is called with ``state={}``,
            ``count=0.0`` and ``seed=[seed mod (2**31 - 1), i]`` (int32, ``i`` = variable
            index; ``tf_selopt.core.criteria.seeds``, as ``calibrate`` and the first selection).
            Already-pruned weights score ``-inf``; a criterion's own ``-inf`` or
            NaN scores may then prune more than the count.
        layers: None or a list of layer names to restrict pruning to.
        seed: int in [0, 2**31), for ``"random"``.
        min_kept_per_variable: int >= 0; each variable keeps at least its
            ``min(m, size)`` best weights (see the module doc; 0: no floor).
        include_recurrent: also prune ``recurrent_kernel`` of recurrent cells.
        block_size: None (or ``(1, 1)``: single weights) or ``(r, c)``: prune
            whole blocks of ``r`` consecutive output units x ``c`` consecutive
            inputs (TFLite's ``(out, in)`` orientation; ``(1, 4)``: 4
            consecutive input weights of one output unit, the block LiteRT's
            float FULLY_CONNECTED runs sparse; ``(1, 16)``: its int8 one).
            ``sparsity`` is then the fraction of **blocks** pruned, exactly
            ``floor(sparsity * B + 0.5)`` of the ``B`` blocks (global or per
            variable by ``scope``), a block scored by the sum of its entries'
            criterion scores; ``min_kept_per_variable`` counts blocks. See the
            module doc ("Structured sparsity").
        sparsity_m_by_n: None or ``(m, n)`` (tfmot's convention): exactly
            ``m`` zeros in every ``n`` consecutive input weights of every
            pruned variable (each group keeps its ``n - m`` best-scoring
            weights). ``sparsity`` is implied (``m / n``): pass None or that
            value; ``scope`` does not matter; excludes ``block_size`` and
            ``min_kept_per_variable``.
        policy: None (all prunable weights, or ``layers``) or one of
            ``POLICIES``: ``"xnnpack_1x1"`` prunes only the kernels of 1x1
            ``Conv2D`` layers (stride 1, no dilation, groups 1, NHWC), the
            ones XNNPack can run sparse at >= 2/3 zeros; ``sparsity`` and
            ``scope`` count over them (see the module doc, "Policies").

    Returns:
        ``PruneResult``: dict variable path -> bool ``np.ndarray`` of the
        variable's shape, True = kept (a copy of the installed mask); its
        ``left_out`` (dict path -> reason) names the embedding-like tables the
        prunable-variable rules did not cover (``left_out_tables``; a
        ``UserWarning`` names them too), empty with ``layers`` or ``policy``.

    Raises:
        ValueError: for any invalid argument (including a variable the block or
            group does not divide, named in the message), before any weight or
            constraint changes.
    """
    sparsity, block, m_by_n = _check_structure(sparsity, block_size, sparsity_m_by_n, min_kept_per_variable)
    criterion = _check_options(scope, criterion, seed)
    _check_min_kept(min_kept_per_variable)
    _check_policy(policy)
    variables = prunable_variables(model, _policy_layers(model, policy, layers), include_recurrent)
    new = _new_masks(variables, sparsity, scope, criterion, seed, int(min_kept_per_variable), block, m_by_n)
    masks = {v.path: m.numpy() for v, m in zip(variables, _apply_masks(model, variables, new))}
    if policy == "xnnpack_1x1":
        _warn_below_xnnpack(variables, list(masks.values()), sparsity, scope)
    left_out = left_out_tables(model, include_recurrent) if layers is None and policy is None else {}
    _warn_left_out(left_out)
    return PruneResult(masks, left_out)


class GradualPruning(keras.callbacks.Callback):
    """Prune during ``fit`` on a schedule; pruned weights stay exactly zero.

    The step counter is ``model.optimizer.iterations`` (steps applied so far).
    At ``on_train_batch_begin``, with ``step = iterations``: if the schedule
    prunes at any step since the last check, the prunable weights are pruned
    to the schedule's sparsity at the latest such step, before step ``step``
    trains (tfmot's timing: its wrapper updates the mask in the forward pass of
    the step). With ``steps_per_execution = n`` the callback runs every ``n``
    steps, so a pruning step inside an execution takes effect at the start of
    the next one; ``on_train_end`` applies any left in the last one (and
    re-zeroes after Keras' EMA finalization). Pruning steps before ``fit``
    starts are not replayed. Counting, scope, criterion and
    monotone masks are those of ``prune``. Masks are installed at
    ``on_train_begin``: all True, except on variables without a mask when the
    run resumes past ``begin_step`` (``iterations > begin_step``): then, as
    with ``mask_zeros``, their zeros are taken as pruned, so a run restored by
    ``keras.callbacks.BackupAndRestore`` (listed before this callback) goes on
    with its pruned entries.

    Args:
        schedule: a ``tf_selopt.core.schedules.PruningSchedule`` (e.g.
            ``ConstantSparsity``, ``PolynomialDecay``, or a subclass with its own
            ``should_prune`` / ``__call__``); it prunes where ``schedule(step)``
            says so (``schedules.latest_pruning_step``).
        scope: ``"global"`` or ``"per_layer"``, as in ``prune``.
        criterion: ``"magnitude"``, ``"random"`` or a criterion object, as in ``prune``.
        layers: None or a list of layer names (checked at ``on_train_begin``).
        seed: int in [0, 2**31), for ``"random"``.
        min_kept_per_variable: int >= 0, as in ``prune`` (a floor above the
            weights a step keeps raises ValueError at that step).
        include_recurrent: also prune ``recurrent_kernel``, as in ``prune``.
        block_size: None or ``(r, c)``, as in ``prune``: the schedule's
            sparsity is then the fraction of blocks pruned.
        sparsity_m_by_n: None or ``(m, n)``, as in ``prune``: the schedule
            gives the timing only; its first pruning step prunes ``m`` of every
            ``n`` consecutive input weights and later steps keep that mask
            (tfmot uses its schedule the same way).
        policy: None or one of ``POLICIES``, as in ``prune`` (the layers are
            chosen at ``on_train_begin``).

    Read-outs: ``masks`` (dict path -> bool ``keras.Variable``, True = kept),
    ``pruned_count`` (int), ``sparsity`` (pruned fraction of the prunable set)
    and ``left_out`` (dict path -> reason: the embedding-like tables left out,
    as in ``prune``; set at ``on_train_begin``, which warns naming them).

    Examples:
        >>> import keras, numpy as np
        >>> from tf_selopt.core.schedules import PolynomialDecay
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
        >>> pruning = GradualPruning(PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=2))
        >>> _ = model.fit(np.ones((16, 4)), np.ones((16, 1)), batch_size=2, callbacks=[pruning], verbose=0)
        >>> pruning.pruned_count, pruning.sparsity  # 40 weights: floor(0.75 * 40 + 0.5) = 30 zeroed
        (30, 0.75)
    """

    def __init__(
        self,
        schedule,
        scope="global",
        criterion="magnitude",
        layers=None,
        seed=0,
        min_kept_per_variable=0,
        include_recurrent=False,
        block_size=None,
        sparsity_m_by_n=None,
        policy=None,
    ):
        super().__init__()
        if not isinstance(schedule, schedules.PruningSchedule):
            raise ValueError(
                "`schedule` must be a tf_selopt.core.schedules.PruningSchedule (e.g. ConstantSparsity, "
                f"PolynomialDecay); received schedule={schedule!r}."
            )
        _, self.block_size, self.sparsity_m_by_n = _check_structure(
            None if sparsity_m_by_n else 0.0, block_size, sparsity_m_by_n, min_kept_per_variable
        )
        self._criterion = _check_options(scope, criterion, seed)
        _check_layers(layers)
        _check_min_kept(min_kept_per_variable)
        _check_include_recurrent(include_recurrent)
        _check_policy(policy)
        self.policy = policy
        self.schedule, self.scope, self.layers, self.seed = schedule, scope, layers, seed
        self.min_kept_per_variable, self.include_recurrent = int(min_kept_per_variable), include_recurrent
        self.masks = {}
        self.left_out = {}
        self._variables = []
        self._last_step = -1

    def on_train_begin(self, logs=None):
        layers = _policy_layers(self.model, self.policy, self.layers)
        self._variables = prunable_variables(self.model, layers, self.include_recurrent)
        if self.layers is None and self.policy is None:
            self.left_out = left_out_tables(self.model, self.include_recurrent)
            _warn_left_out(self.left_out)
        _check_structured_variables(self._variables, self.block_size, self.sparsity_m_by_n)
        step = int(self.model.optimizer.iterations.numpy())
        unmasked = [v for v in self._variables if pruning_mask(v) is None]
        if step > self.schedule.begin_step and unmasked:  # resumed after pruning began: zeros are the pruned
            _apply_masks(self.model, unmasked, _zero_masks(unmasked))
        self.masks = {v.path: m for v, m in zip(self._variables, _install_masks(self.model, self._variables))}
        self._last_step = step - 1

    def on_train_batch_begin(self, batch, logs=None):
        self._prune_through(int(self.model.optimizer.iterations.numpy()))

    def on_train_end(self, logs=None):
        self._prune_through(int(self.model.optimizer.iterations.numpy()) - 1, reapply=True)

    def _prune_through(self, step: int, reapply: bool = False):
        """Prune for the schedule's steps up to ``step``; ``reapply``: re-zero the pruned weights anyway."""
        latest = schedules.latest_pruning_step(self.schedule, self._last_step, step)
        self._last_step = max(self._last_step, step)
        if latest is None and not reapply:
            return
        if latest is None and self.sparsity_m_by_n:  # re-zero with the masks as they are
            masks = [pruning_mask(v).value for v in self._variables]
            _apply_masks(self.model, self._variables, masks)
            return
        sparsity = 0.0 if latest is None else float(self.schedule(latest)[1])  # 0.0: the masks as they are
        masks = _new_masks(
            self._variables,
            sparsity,
            self.scope,
            self._criterion,
            self.seed,
            self.min_kept_per_variable,
            self.block_size,
            self.sparsity_m_by_n,
        )
        _apply_masks(self.model, self._variables, masks)

    @property
    def pruned_count(self) -> int:
        return sum(int(np.sum(~m.numpy())) for m in self.masks.values())

    @property
    def sparsity(self) -> float:
        total = sum(int(np.prod(m.shape)) for m in self.masks.values())
        return self.pruned_count / total if total else 0.0


def strip_pruning(model):
    """Remove the ``PruningMask`` constraints (restoring the previous ones); the zeros stay. Returns ``model``."""
    removed = False
    for v in model.weights:
        if isinstance(v.constraint, PruningMask):
            v.constraint = v.constraint.inner
            removed = True
    if removed:
        retrace_train_step(model)
    return model


def mask_zeros(model, layers=None, include_recurrent=False) -> dict:
    """Install masks ``w != 0`` on the prunable variables: the zeros stay zero through further training.

    For a pruned model after ``keras.saving.load_model`` (masks are not saved,
    zeros are; pass the ``include_recurrent`` used for pruning). Returns dict:
    variable path -> bool ``np.ndarray``, True = kept.
    """
    variables = prunable_variables(model, layers, include_recurrent)
    return apply_zero_masks(model, variables)


def apply_zero_masks(model, variables) -> dict:
    """``mask_zeros`` on the given variables of ``model`` (prunable ones): returns dict path -> bool mask."""
    masks = _apply_masks(model, variables, _zero_masks(variables))
    return {v.path: m.numpy() for v, m in zip(variables, masks)}
