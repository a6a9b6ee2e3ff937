"""Keras 3 structured pruning that removes channels for real: ``shrink`` returns a new, smaller model.

Three steps, each its own piece:

1. **Groups** (``channel_graph``): the model's layer graph, read from ``model.get_config()`` (public: each
   layer's ``inbound_nodes``) and the layer objects, is described as ``tf_selopt.core.channels.Node`` s and
   analysed by ``tf_selopt.core.channels.analyze`` (Keras-free): which kernels' output channels are coupled
   (through ``Add`` and the other elementwise merges, which unite them; through BatchNormalization,
   activations, pooling, padding and depthwise convolutions, which carry them), and which axis of every
   consumer follows (Dense / convolution kernels' input axis, BatchNormalization's parameters, a depthwise
   kernel, the rows after a ``Flatten``, the parts of a ``Concatenate``).
2. **Scores** (``group_scores``): one score per channel of each group: ``"magnitude"`` = the L1 norm of
   the channel's output slice of every producing kernel of the group, summed over the group; ``"random"``
   (seeded); or a callable ``criterion(kernels) -> scores`` receiving the group's kernels reshaped to
   ``(fan_in, channels)``. ``tf_selopt.core.channels.choose`` picks the channels to remove.
3. **Rebuild** (``rebuild``): the model is re-created from its config with smaller ``units`` / ``filters``
   (same layer names, same inputs and outputs) and every weight's kept slices are copied in: kernels,
   biases, BatchNormalization ``gamma`` / ``beta`` / ``moving_mean`` / ``moving_variance``, depthwise
   kernels; layers without removed channels get their weights unchanged.

Supported layers (exact classes; a subclass is treated as unknown): Dense, Conv1D/2D/3D (``groups=1``,
channels-last, no LoRA or quantization), DepthwiseConv1D/2D, BatchNormalization (last axis), Activation and
ReLU / LeakyReLU / ELU (elementwise), Dropout and its variants, pooling (incl. global), ZeroPadding,
Cropping, UpSampling, Flatten, Add / Subtract / Multiply / Average / Maximum / Minimum, Concatenate. A
Softmax, a softmax activation or a LayerNormalization keeps the channels it sees (they mix them). Any other
layer (Reshape, LSTM, an Embedding, PReLU, a custom layer) is fine where nothing it receives can shrink
(e.g. right after the model's input); after a shrinkable kernel ``shrink`` raises a ValueError naming it,
before any work. Model inputs and outputs keep their shapes (the last kernel's units stay).

Inside a layer: attention layers (``keras.layers.MultiHeadAttention``, keras_hub ``CachedMultiHeadAttention``
and ``TransformerEncoder``) lose whole heads, an encoder its feed-forward intermediate units too; their input
and output width stays, so they are locked in the channel graph. Nested functional and Sequential models
are read as parts of their own (their inputs and outputs locked) and rebuilt inside the new model. Layers
with weights that stay whole are named in a UserWarning; a model with nothing to remove is a ValueError.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings

import keras
import numpy as np

from tf_selopt.core import channels as channels_lib
from tf_selopt.core.checks import fraction as check_fraction
from tf_selopt.core.checks import is_int
from tf_selopt.core.selection import count_of
from tf_selopt.keras import _compat, batch_norm

L = keras.layers
CRITERIA = ("magnitude", "random")
SCOPES = channels_lib.SCOPES
PRODUCERS = {L.Dense: "units", L.Conv1D: "filters", L.Conv2D: "filters", L.Conv3D: "filters"}
DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
FOLLOW = (
    L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
)  # fmt: skip
UNITE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
LOCK = (L.Softmax, L.LayerNormalization)
#: activations applied to each channel on its own
ELEMENTWISE = {
    "linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "swish", "softplus",
    "softsign", "exponential", "hard_sigmoid", "hard_silu", "hard_swish", "mish", "leaky_relu",
    "log_sigmoid", "celu", "sparse_plus", "squareplus", "hard_tanh", "tanh_shrink", "soft_shrink",
    "hard_shrink", "threshold",
}  # fmt: skip
MIXING = {"softmax", "log_softmax", "sparsemax"}  # activations over the channels: they keep what they see
SUPPORTED = (
    "Dense, Conv1D/2D/3D (groups=1, channels_last), DepthwiseConv1D/2D, BatchNormalization (last axis), "
    "elementwise Activation/ReLU/LeakyReLU/ELU, Dropout, pooling, ZeroPadding, Cropping, UpSampling, Flatten, "
    "Add/Subtract/Multiply/Average/Maximum/Minimum, Concatenate"
)


def _activation_kind(name) -> str:
    if name in MIXING:
        return "lock"
    return "follow" if name in ELEMENTWISE else "opaque"


def _channels_last(config) -> bool:
    return config.get("data_format", "channels_last") in (None, "channels_last")


def _rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def _size(layer) -> int:
    try:
        last = layer.output.shape[-1]
    except (AttributeError, ValueError, IndexError, TypeError):
        return 0
    return int(last) if last is not None else 0


def _node(layer, name, inputs) -> channels_lib.Node:
    """``layer`` (called on the nodes named ``inputs``) as a ``channels_lib.Node``."""
    cls, config, what = type(layer), layer.get_config(), type(layer).__name__
    kind, extra = "opaque", {}
    if cls in PRODUCERS:
        plain = len(layer.weights) == 1 + bool(config.get("use_bias", True)) and config.get("groups", 1) == 1
        if plain and _channels_last(config) and config.get("activation", "linear") not in ("glu",):
            act = config.get("activation", "linear")
            if isinstance(act, str) and (act in ELEMENTWISE or act in MIXING):
                kind, extra = "produce", dict(size=int(config[PRODUCERS[cls]]), lock_output=act in MIXING)
    elif cls in DEPTHWISE:
        act = config.get("activation", "linear")
        if _channels_last(config) and isinstance(act, str) and act in ELEMENTWISE:
            kind, extra = "depthwise", dict(repeat=int(config.get("depth_multiplier", 1)))
    elif cls is L.BatchNormalization:
        axis, rank = config.get("axis", -1), _rank(layer)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if axis == -1 or (rank is not None and axis == rank - 1):
            kind = "follow"
    elif cls is L.Activation:
        act = config.get("activation")
        kind = _activation_kind(act) if isinstance(act, str) else "opaque"
    elif cls in FOLLOW:
        kind = "follow" if _channels_last(config) else "opaque"
    elif cls in UNITE:
        kind = "unite"
    elif cls is L.Concatenate:
        axis, rank = config.get("axis", -1), _rank(layer)
        kind = "concat" if axis == -1 or (rank is not None and axis == rank - 1) else "unite"
    elif cls is L.Flatten:
        if _channels_last(config):
            kind = "flatten"
            extra = dict(repeat=int(math.prod(int(d) for d in layer.input.shape[1:-1])))
    elif cls in LOCK:
        kind = "lock"
    if kind == "opaque":
        extra = dict(size=_size(layer))
    return channels_lib.Node(name, kind, tuple(inputs), what=what, **extra)


def _histories(value, found):
    """The ``keras_history`` layer names in a serialized call's arguments, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            found.append(value["config"]["keras_history"][0])
        else:
            for v in value.values():
                _histories(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _histories(v, found)
    return found


def _output_names(structure, found):
    """Layer names in a functional config's ``output_layers`` (``[name, node, tensor]`` leaves, nested)."""
    if isinstance(structure, dict):
        for v in structure.values():
            _output_names(v, found)
    elif isinstance(structure, (list, tuple)) and len(structure) == 3 and isinstance(structure[0], str):
        found.append(structure[0])
    elif isinstance(structure, (list, tuple)):
        for v in structure:
            _output_names(v, found)
    return found


def _readable(model):
    """``model`` as a model whose config lists its layers: a Sequential or plain functional model as is, a
    functional subclass (a keras_hub backbone or task) as ``keras.Model(model.input, model.output)`` over the
    same layers. Raises ValueError for anything else (a subclassed or unbuilt model, not a model)."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a built Keras 3 Sequential or functional model; received a {type(model).__name__}."
        )
    if not (isinstance(model, keras.Sequential) or _compat.is_functional(model)):
        raise ValueError(
            f"`model` must be a Keras 3 Sequential or functional model (a graph of layers); "
            f"{model.name!r} ({type(model).__name__}) is a subclassed model."
        )
    if not model.built or (isinstance(model, keras.Sequential) and not model.inputs):
        raise ValueError(
            f"`model` must be built (Sequential with an Input or built with an input shape); "
            f"{model.name!r} is not built: call it on data or build it first."
        )
    if _has_layer_config(model):
        return model
    return keras.Model(model.input, model.output, name=model.name)


def _has_layer_config(model) -> bool:
    try:
        config = model.get_config()
    except NotImplementedError:
        return False
    return isinstance(config, dict) and "layers" in config


def _operations(model) -> dict:
    """Name -> layer or operation (``GetItem`` and other ops of a functional graph are not in ``model.layers``)."""
    found = {layer.name: layer for layer in model.layers}
    for op in getattr(model, "operations", []):
        found.setdefault(op.name, op)
    return found


def channel_graph(model):
    """``(graph, nodes, config)``: the channel groups of a built Sequential or functional ``model``
    (``tf_selopt.core.channels.ChannelGraph``), the nodes it was built from and the model config read.

    Raises ValueError for a model it cannot read (subclassed, unbuilt, shared layers) or a layer that would
    receive shrinkable channels without being supported.
    """
    return _analyze(_readable(model))


def _analyze(model):
    config = model.get_config()
    nodes, previous = [], None
    sequential = isinstance(model, keras.Sequential)
    ops = _operations(model)
    for entry in config["layers"]:
        layer_config = entry["config"]
        name = entry.get("name") or layer_config["name"]
        if entry["class_name"] == "InputLayer":
            shape = layer_config.get("batch_shape") or [None, 0]
            last = shape[-1] if len(shape) > 1 else 1
            nodes.append(channels_lib.Node(name, "input", (), size=int(last or 0), what="InputLayer"))
            previous = name
            continue
        layer = ops[name]
        if sequential:
            inputs = [previous] if previous is not None else []
        else:
            calls = entry.get("inbound_nodes", [])
            if len(calls) != 1:
                raise ValueError(
                    f"`model`: layer {name!r} ({type(layer).__name__}) is called {len(calls)} times; shrink "
                    "supports layers called once (no shared layers)."
                )
            inputs = _histories(calls[0], [])
        if not inputs:  # a Sequential built without an InputLayer entry
            shape = model.inputs[0].shape
            nodes.append(channels_lib.Node("__input__", "input", (), size=int(shape[-1] or 0), what="input"))
            inputs = ["__input__"]
        nodes.append(_node(layer, name, inputs))
        previous = name
    outputs = [nodes[-1].name] if sequential else _output_names(config["output_layers"], [])
    try:
        graph = channels_lib.analyze(nodes, outputs)
    except ValueError as error:
        raise ValueError(
            f"`model` has layers shrink cannot follow: {error}. Supported after a shrinkable kernel: {SUPPORTED}."
        ) from None
    return graph, nodes, config


def _kernels(model, group):
    """The group's producing kernels as ``(fan_in, channels)`` arrays."""
    out = []
    for name in group.producers:
        kernel = np.asarray(model.get_layer(name).get_weights()[0])
        out.append(kernel.reshape(-1, kernel.shape[-1]))
    return out


def _score(criterion, rng, kernels, size, what):
    """One score per channel of a group of ``size`` whose producing kernels are ``kernels`` ((fan_in, size))."""
    if criterion == "random":
        return rng.random(size)
    if criterion == "magnitude":
        return sum(np.abs(k.astype(np.float64)).sum(axis=0) for k in kernels)
    s = np.asarray(criterion(kernels), np.float64).reshape(-1)
    if s.shape != (size,):
        raise ValueError(
            f"`criterion` returned {s.shape[0]} scores for {what} ({size} channels): it must return one per channel."
        )
    return s


def group_scores(model, graph, criterion="magnitude", seed=0) -> list:
    """One 1-D array of channel scores per group of ``graph`` (higher = kept first)."""
    rng = np.random.default_rng(seed)
    return [
        _score(
            criterion, rng, [] if criterion == "random" else _kernels(model, g), g.size, f"the group of {g.producers}"
        )
        for g in graph.groups
    ]


# ---------------------------------------------------------------- attention: whole heads, feed-forward units

#: The sub-layers (first of a weight's last two path components) of keras.layers.MultiHeadAttention
MHA_PARTS = ("query", "key", "value", "attention_output")
#: ... and of keras_hub's TransformerEncoder (around its MultiHeadAttention)
ENCODER_PARTS = MHA_PARTS + (
    "feedforward_intermediate_dense", "feedforward_output_dense", "self_attention_layer_norm", "feedforward_layer_norm"
)  # fmt: skip
PLAIN_WEIGHTS = ("kernel", "bias", "gamma", "beta")


def _hub():
    return sys.modules.get("keras_hub")


def _attention_classes():
    """``(mha classes, encoder classes)``, exact classes (keras_hub's only when it is imported)."""
    hub = _hub()
    if hub is None:
        return (L.MultiHeadAttention,), ()
    from tf_selopt.keras import hub_layers

    return (L.MultiHeadAttention, hub.layers.CachedMultiHeadAttention), (
        hub.layers.TransformerEncoder,
        hub_layers.TransformerEncoderHeads,
    )


def _weight_key(variable) -> str:
    """``"query/kernel"``, ``"feedforward_output_dense/bias"``, ...: a variable's last two path components."""
    return "/".join(variable.path.split("/")[-2:])


@dataclasses.dataclass
class _Attention:
    """An attention layer whose heads (and, in an encoder, feed-forward units) can go."""

    name: str
    kind: str  # "mha" or "encoder"
    heads: int
    key_dim: int
    units: int  # feed-forward intermediate units (an encoder), else 0
    weights: dict  # _weight_key -> array


def _attention(layer, name):
    """``(_Attention, None)`` for a supported attention layer, ``(None, reason)`` for an unsupported one,
    ``(None, None)`` for any other layer."""
    mha, encoders = _attention_classes()
    parts = MHA_PARTS if type(layer) in mha else ENCODER_PARTS if type(layer) in encoders else None
    if parts is None:
        return None, None
    weights = {_weight_key(w): np.asarray(w.numpy()) for w in layer.weights}
    unknown = sorted(k for k in weights if k.split("/")[0] not in parts or k.split("/")[1] not in PLAIN_WEIGHTS)
    if unknown or len(weights) != len(layer.weights) or "query/kernel" not in weights:
        return None, f"weights shrink does not know how to slice (LoRA, quantized?): {unknown or 'duplicates'}"
    config = layer.get_config()
    kind = "encoder" if parts is ENCODER_PARTS else "mha"
    units = int(config["intermediate_dim"]) if kind == "encoder" else 0
    query = weights["query/kernel"]  # (hidden, heads, key_dim)
    return _Attention(name, kind, int(query.shape[1]), int(query.shape[2]), units, weights), None


def _head_kernels(att):
    """The query / key / value kernels as ``(fan_in, heads)`` arrays (a head's columns: its output slice)."""
    return [np.moveaxis(att.weights[f"{p}/kernel"], -2, -1).reshape(-1, att.heads) for p in ("query", "key", "value")]


def _sliced_attention_weight(key, array, heads, units):
    """``array`` (the weight ``key`` of an attention layer) keeping heads ``heads`` and feed-forward units
    ``units`` (index arrays)."""
    part, what = key.split("/")
    if part in ("query", "key", "value"):  # kernel (in, heads, dim), bias (heads, dim)
        return np.take(array, heads, axis=array.ndim - 2)
    if part == "attention_output" and what == "kernel":  # (heads, dim, out)
        return np.take(array, heads, axis=0)
    if part == "feedforward_intermediate_dense":  # kernel (hidden, units), bias (units,)
        return np.take(array, units, axis=array.ndim - 1)
    if part == "feedforward_output_dense" and what == "kernel":  # (units, hidden)
        return np.take(array, units, axis=0)
    return array


def _attention_entry(entry, att, heads, units):
    """A functional config entry of ``att`` rebuilt with ``len(heads)`` heads and ``len(units)`` units."""
    config = dict(entry["config"], num_heads=len(heads))
    if att.kind == "mha":
        return dict(entry, config=config)
    from tf_selopt.keras import hub_layers

    cls = hub_layers.TransformerEncoderHeads
    config.update(intermediate_dim=len(units), key_dim=att.key_dim)
    return dict(
        entry,
        config=config,
        module=cls.__module__,
        class_name=cls.__name__,
        registered_name=keras.saving.get_registered_name(cls),
    )


def _copy_attention(att, layer, heads, units):
    for variable in layer.weights:
        key = _weight_key(variable)
        variable.assign(_sliced_attention_weight(key, att.weights[key], heads, units))


# ---------------------------------------------------------------- a model and its nested models


@dataclasses.dataclass
class _Part:
    """A (nested) model read for shrinking: its graph, attention layers, nested models and what stays whole."""

    model: keras.Model  # Sequential or a functional model whose config lists its layers
    graph: channels_lib.ChannelGraph
    nodes: list
    config: dict
    attention: dict  # name -> _Attention
    parts: dict  # name -> _Part of a nested model
    whole: list  # "'name' (Class): reason" for layers with weights shrink leaves whole
    kept: dict = dataclasses.field(default_factory=dict)  # ("group", id) / ("heads", name) / ("units", name)


def _read(model) -> _Part:
    readable = _readable(model)
    graph, nodes, config = _analyze(readable)
    ops = _operations(readable)
    attention, parts, whole = {}, {}, []
    for node in nodes:
        if node.kind != "opaque":
            continue
        layer = ops[node.name]
        if isinstance(layer, keras.Model):
            if isinstance(layer, keras.Sequential) or _compat.is_functional(layer):
                try:
                    parts[node.name] = _read(layer)
                except ValueError as error:
                    raise ValueError(f"in the nested model {node.name!r}: {error}") from None
            elif layer.weights:
                whole.append(f"{node.name!r} ({type(layer).__name__}): a subclassed model, not a graph of layers")
            continue
        att, reason = _attention(layer, node.name)
        if att is not None:
            attention[node.name] = att
        elif getattr(layer, "weights", None):
            reason = reason or "not a layer shrink removes channels from"
            whole.append(f"{node.name!r} ({type(layer).__name__}): {reason}")
    return _Part(readable, graph, nodes, config, attention, parts, whole)


def _walk(part):
    yield part
    for sub in part.parts.values():
        yield from _walk(sub)


def _keepable(root) -> set:
    """Names ``keep`` may give: every producing kernel of a channel group and every attention layer."""
    return {
        name for part in _walk(root) for name in [*(n for g in part.graph.groups for n in g.producers), *part.attention]
    }


def _check_keep(keep, root) -> frozenset:
    names = [keep] if isinstance(keep, str) else keep
    try:
        names = list(names)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ValueError(f"`keep` must be a layer name or a list of layer names; received keep={keep!r}.")
    allowed = _keepable(root)
    unknown = sorted(set(names) - allowed)
    if unknown:
        shown = sorted(allowed)
        more = f" ... ({len(shown)} in all)" if len(shown) > 12 else ""
        raise ValueError(
            f"`keep` names {unknown}, which are not shrinkable kernels or attention layers of `model`; "
            f"allowed: {shown[:12]}{more}."
        )
    return frozenset(names)


def _plan(root, fraction, heads_fraction, heads_argument, criterion, scope, seed, keep=frozenset()):
    """Sets ``kept`` of every part: channel groups and feed-forward units counted together (``scope``),
    heads per attention layer; groups with a producer in ``keep`` and attention layers in ``keep`` whole."""
    rng = np.random.default_rng(seed)
    items, head_items = [], []
    for part in _walk(root):
        for group in part.graph.groups:
            if keep.intersection(group.producers):
                part.kept[("group", group.id)] = np.arange(group.size)
                continue
            kernels = [] if criterion == "random" else _kernels(part.model, group)
            scores = _score(criterion, rng, kernels, group.size, f"the group of {group.producers}")
            items.append((part, ("group", group.id), scores))
        for name, att in part.attention.items():
            if name in keep:
                part.kept[("heads", name)] = np.arange(att.heads)
                if att.units:
                    part.kept[("units", name)] = np.arange(att.units)
                continue
            scores = _score(criterion, rng, _head_kernels(att), att.heads, f"the heads of {name!r}")
            head_items.append((part, name, scores))
            if att.units:
                kernel = att.weights["feedforward_intermediate_dense/kernel"]
                scores = _score(criterion, rng, [kernel], att.units, f"the feed-forward units of {name!r}")
                items.append((part, ("units", name), scores))
    for (part, key, _), kept in zip(items, channels_lib.choose([s for *_, s in items], fraction, scope)):
        part.kept[key] = kept
    for part, name, scores in head_items:
        n = len(scores)
        removed = count_of(heads_fraction, n)
        if removed >= n:
            raise ValueError(
                f"`{heads_argument}`={heads_fraction!r} would remove all {n} heads of {name!r} "
                f"(floor({heads_argument} * {n} + 0.5) = {removed}): use a value below {(n - 0.5) / n:.4g}, or "
                "heads=0 to keep every head."
            )
        part.kept[("heads", name)] = np.sort(np.argsort(scores, kind="stable")[removed:])


def _serialized(model) -> dict:
    config = keras.saving.serialize_keras_object(model)
    return {k: v for k, v in config.items() if k in ("module", "class_name", "config", "registered_name")}


def _rebuild(part) -> keras.Model:
    """A new model of ``part``'s architecture keeping what ``part.kept`` (and its nested parts') says."""
    model, graph, nodes, config = part.model, part.graph, part.nodes, part.config
    subs = {name: _rebuild(sub) for name, sub in part.parts.items()}
    kept = [part.kept[("group", g.id)] for g in graph.groups]
    units = {name: len(kept[group.id]) for group in graph.groups for name in group.producers}
    new_config = dict(config, layers=[])
    for entry in config["layers"]:
        entry = {k: v for k, v in entry.items() if k != "build_config"}  # shapes change: built when called
        name = entry.get("name") or entry["config"]["name"]
        if name in units:
            key = PRODUCERS[type(model.get_layer(name))]
            entry["config"] = dict(entry["config"], **{key: units[name]})
        elif name in subs:
            entry = dict(entry, **_serialized(subs[name]))
        elif name in part.attention:
            heads, ffn = part.kept[("heads", name)], part.kept.get(("units", name), np.zeros(0, np.int64))
            entry = _attention_entry(entry, part.attention[name], heads, ffn)
        new_config["layers"].append(entry)
    custom = {type(layer).__name__: type(layer) for layer in model.layers}
    try:
        with keras.saving.custom_object_scope(custom):
            if isinstance(model, keras.Sequential):
                new = keras.Sequential.from_config(new_config)
            else:
                new = keras.Model.from_config(new_config)
    except Exception as error:  # a layer whose config does not re-create it (e.g. a subclassed nested model)
        raise ValueError(
            f"`model`: shrink re-creates every layer from its config and {model.name!r} could not be: "
            f"{type(error).__name__}: {error}. Layers kept whole: {'; '.join(part.whole) or 'none'} "
            "(give a custom layer or model get_config / from_config)."
        ) from None

    def index(layout):
        if all(graph.group_of.get(space) is None for space, _ in layout):
            return None
        return graph.kept_indices(layout, dict(enumerate(kept)))

    ops = _operations(model)
    for node in nodes:
        if node.kind == "input":
            continue
        if node.name in subs:
            new.get_layer(node.name).set_weights(subs[node.name].get_weights())
            continue
        if node.name in part.attention:
            heads, ffn = part.kept[("heads", node.name)], part.kept.get(("units", node.name))
            _copy_attention(part.attention[node.name], new.get_layer(node.name), heads, ffn)
            continue
        old_layer = ops[node.name]
        weights = old_layer.get_weights() if hasattr(old_layer, "get_weights") else []
        if not weights:
            continue
        if node.kind in ("produce", "depthwise"):
            in_index = index(graph.input_layouts[node.name][0])
            out_index = index(graph.layouts[node.name])
            kernel = _take(weights[0], weights[0].ndim - 2, in_index)
            if node.kind == "produce":
                kernel = _take(kernel, kernel.ndim - 1, out_index)
            weights = [kernel] + [_take(w, 0, out_index) for w in weights[1:]]
        elif node.kind == "follow":
            in_index = index(graph.input_layouts[node.name][0])
            weights = [_take(w, 0, in_index) for w in weights]
        new.get_layer(node.name).set_weights(weights)
    return new


def _take(array, axis, index):
    return array if index is None else np.take(array, index, axis=axis)


def rebuild(model, graph, nodes, config, kept) -> keras.Model:
    """A new model of ``model``'s architecture where group ``g`` of ``graph`` keeps channels ``kept[g]`` (a
    model without nested models or attention layers)."""
    part = _Part(model, graph, nodes, config, {}, {}, [])
    part.kept = {("group", g.id): k for g, k in zip(graph.groups, kept)}
    return _rebuild(part)


def _report(root, model, new, fraction, heads_fraction, keep=frozenset()):
    """Warns (UserWarning) naming the layers with weights that stay whole, and when nothing was removed."""
    whole = [w for part in _walk(root) for w in part.whole]
    if whole:
        warnings.warn(
            f"shrink keeps these layers whole (their inputs and outputs keep their width): {'; '.join(whole)}.",
            UserWarning,
            stacklevel=3,
        )
    removed = model.count_params() - new.count_params()
    if removed == 0 and (fraction > 0 or heads_fraction > 0):
        warnings.warn(
            f"shrink removed no parameter at fraction={fraction!r}, heads={heads_fraction!r}: every group rounds "
            "to 0 channels (floor(fraction * n + 0.5))"
            + (f" or is kept whole by keep={sorted(keep)}" if keep else "")
            + "; the returned model is a copy.",
            UserWarning,
            stacklevel=3,
        )


def _nothing_to_shrink(root) -> str | None:
    """Why nothing in ``root`` can shrink (no channel group, no attention layer anywhere), or None."""
    if any(part.graph.groups or part.attention for part in _walk(root)):
        return None
    whole = [w for part in _walk(root) for w in part.whole]
    why = f"layers with weights it cannot shrink: {'; '.join(whole)}" if whole else "no layer with weights to shrink"
    return (
        f"`model` {root.model.name!r} has nothing shrink can remove: every kernel feeds a model output or a "
        f"layer that mixes channels, and {why}. Supported: {SUPPORTED}, MultiHeadAttention heads, keras_hub "
        "TransformerEncoder heads and feed-forward units, nested functional / Sequential models."
    )


def shrink(
    model,
    fraction,
    criterion="magnitude",
    scope="global",
    seed=0,
    recalibrate=None,
    recalibrate_batches=batch_norm.BATCHES,
    heads=None,
    keep=(),
) -> keras.Model:
    """A new, smaller ``keras.Model`` of ``model``'s architecture with whole units / filters / attention heads
    removed.

    Channels coupled through the graph go together (a residual ``Add``'s channel leaves every branch; a
    BatchNormalization, depthwise convolution or pooling after a kernel loses the same channels; the next
    kernel loses the matching input rows, ``Flatten`` included). ``model`` itself is not changed. Inputs
    and outputs keep their shapes: kernels feeding a model output keep their units. See the module doc for
    the supported layers; anything else receiving shrinkable channels raises before any work.

    Attention: a ``keras.layers.MultiHeadAttention`` (or keras_hub ``CachedMultiHeadAttention``) loses whole
    heads (the head's query / key / value slices and its rows of the output kernel); a keras_hub
    ``TransformerEncoder`` loses whole heads and feed-forward intermediate units (columns of the first Dense,
    rows of the second), and comes back as ``tf_selopt.keras.hub_layers.TransformerEncoderHeads`` (same
    weights layout, head size kept). Their input and output width stays. Nested functional and Sequential
    models (a keras_hub backbone inside a task) are shrunk inside, their own inputs and outputs kept.

    Counting: ``scope="per_layer"``: each group of n channels (feed-forward units of an encoder: one group)
    loses ``floor(fraction * n + 0.5)``; ``scope="global"``: ``floor(fraction * N + 0.5)`` of all N shrinkable
    channels go, ranked across groups by score divided by its group's mean score (Torch-Pruning's
    ``normalizer="mean"``). Either way every group keeps at least one channel. Each attention layer of H
    heads loses ``floor(heads * H + 0.5)`` heads, the lowest-scored; removing all of them is an error. Ties:
    lower group, then lower channel first.

    Never silent: layers with weights that stay whole (an Embedding, an LSTM, a subclassed nested model, an
    attention layer with LoRA) are named in a UserWarning with the reason; a model where nothing can shrink
    raises a ValueError saying why; a shrink that rounds to removing nothing warns.

    Args:
        model: a built Keras 3 Sequential or functional model (a functional subclass such as a keras_hub
            backbone or task comes back as a plain ``keras.Model`` over its inputs and outputs, without its
            preprocessor), no shared layers.
        fraction: float in [0, 1): fraction of the shrinkable channels to remove (0: a copy).
        criterion: ``"magnitude"`` (L1 norm of each channel's output slice of the producing kernels, summed
            over the group; a head: its query, key and value slices), ``"random"`` (``seed``), or a callable
            ``f(kernels) -> scores``: ``kernels`` the group's kernels as ``(fan_in, n)`` arrays, ``scores`` n
            floats, the lowest removed.
        scope: ``"global"`` or ``"per_layer"`` (per group of coupled channels).
        seed: int in [0, 2**31), for ``"random"``.
        recalibrate: None (the kept channels' BatchNormalization statistics are copied), or data to re-estimate
            every BatchNormalization's moving mean / variance on after the channels are removed
            (``tf_selopt.keras.batch_norm.recalibrate_batch_norm``: exact mean and variance of each layer's
            input, layer by layer in inference mode): a ``tf.data.Dataset`` of batches (``x`` or ``(x, y)``) or
            arrays (read in batches of 32). Checked before any work.
        recalibrate_batches: int >= 1, how many batches of ``recalibrate`` are read (default 100).
        heads: None (= ``fraction``) or a float in [0, 1): fraction of each attention layer's heads to remove.
        keep: a layer name or a list of them (Torch-Pruning's ``ignored_layers``): a channel group with a
            producing kernel named here keeps every channel, and so does an attention layer named here (heads
            and feed-forward units); kept channels are not counted in ``fraction``. Names of nested models'
            layers count. Default: nothing kept.

    Returns:
        A new, uncompiled ``keras.Model`` (Sequential stays Sequential), same layer names, weights copied.

    Raises:
        ValueError: a bad argument (``heads`` or ``fraction`` that would remove every head of a layer included),
            an unbuilt or subclassed model, a shared layer, an unsupported layer receiving shrinkable channels
            (named), or a model with nothing to remove; nothing is built then.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(8, 3, name="conv"),
        ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(), keras.layers.Flatten(),
        ...     keras.layers.Dense(6, name="hidden"), keras.layers.Dense(2, name="out")])
        >>> small = shrink(model, 0.5, scope="per_layer")  # half of each group (global: by normalized score)
        >>> [tuple(small.get_layer(n).weights[0].shape) for n in ("conv", "bn", "hidden", "out")]
        [(3, 3, 3, 4), (4,), (16, 3), (3, 2)]
        >>> tuple(small(np.zeros((1, 4, 4, 3), "float32")).shape)  # hidden: 2*2*4 rows, 3 of 6 units
        (1, 2)
    """
    fraction = check_fraction("fraction", fraction)
    heads_argument = "fraction" if heads is None else "heads"
    heads_fraction = fraction if heads is None else check_fraction("heads", heads)
    if not (criterion in CRITERIA if isinstance(criterion, str) else callable(criterion)):
        raise ValueError(
            f"`criterion` must be one of {CRITERIA} or a callable kernels -> scores; received criterion={criterion!r}."
        )
    if not isinstance(scope, str) or scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}; received scope={scope!r}.")
    if not is_int(seed) or not 0 <= seed < 2**31:
        raise ValueError(f"`seed` must be an int in [0, 2**31); received seed={seed!r}.")
    root = _read(model)
    kept = _check_keep(keep, root)
    xs = None
    if recalibrate is not None:
        xs = batch_norm.batches_of(root.model, recalibrate, recalibrate_batches, "recalibrate", "recalibrate_batches")
    why = _nothing_to_shrink(root)
    if why is not None and (fraction > 0 or heads_fraction > 0):
        raise ValueError(why)
    _plan(root, fraction, heads_fraction, heads_argument, criterion, scope, int(seed), kept)
    new = _rebuild(root)
    if xs is not None:
        batch_norm.recalibrate_batch_norm_on(new, xs)
    _report(root, model, new, fraction, heads_fraction, kept)
    return new
