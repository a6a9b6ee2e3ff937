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
layer (Reshape, LSTM, attention, PReLU, a nested model, a custom layer) is fine where nothing it receives
can shrink (e.g. right after the model's input); after a shrinkable kernel ``shrink`` raises a ValueError
naming it, before any work. Model inputs and outputs keep their shapes (the last kernel's units stay).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tf_selopt.core import channels as channels_lib
from tf_selopt.core.checks import fraction as check_fraction
from tf_selopt.core.checks import is_int
from tf_selopt.keras import batch_norm

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


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a built Keras 3 Sequential or functional model; received a {type(model).__name__}."
        )
    config = model.get_config() if _has_layer_config(model) else None
    if config is None:
        raise ValueError(
            f"`model` must be a Keras 3 Sequential or functional model (a config listing its layers); "
            f"{model.name!r} ({type(model).__name__}) is a subclassed model."
        )
    if not model.built or (isinstance(model, keras.Sequential) and not model.inputs):
        raise ValueError(
            f"`model` must be built (Sequential with an Input or built with an input shape); "
            f"{model.name!r} is not built: call it on data or build it first."
        )
    return config


def _has_layer_config(model) -> bool:
    try:
        config = model.get_config()
    except NotImplementedError:
        return False
    return isinstance(config, dict) and "layers" in config


def channel_graph(model):
    """``(graph, nodes, config)``: the channel groups of a built Sequential or functional ``model``
    (``tf_selopt.core.channels.ChannelGraph``), the nodes it was built from and the model config read.

    Raises ValueError for a model it cannot read (subclassed, unbuilt, shared layers) or a layer that would
    receive shrinkable channels without being supported.
    """
    config = _check_model(model)
    nodes, previous = [], None
    sequential = isinstance(model, keras.Sequential)
    for entry in config["layers"]:
        layer_config = entry["config"]
        name = layer_config["name"]
        if entry["class_name"] == "InputLayer":
            shape = layer_config.get("batch_shape") or [None, 0]
            last = shape[-1] if len(shape) > 1 else 1
            nodes.append(channels_lib.Node(name, "input", (), size=int(last or 0), what="InputLayer"))
            previous = name
            continue
        layer = model.get_layer(name)
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


def group_scores(model, graph, criterion="magnitude", seed=0) -> list:
    """One 1-D array of channel scores per group of ``graph`` (higher = kept first)."""
    rng = np.random.default_rng(seed)
    scores = []
    for group in graph.groups:
        if criterion == "random":
            scores.append(rng.random(group.size))
            continue
        kernels = _kernels(model, group)
        if criterion == "magnitude":
            scores.append(sum(np.abs(k.astype(np.float64)).sum(axis=0) for k in kernels))
        else:
            s = np.asarray(criterion(kernels), np.float64).reshape(-1)
            if s.shape != (group.size,):
                raise ValueError(
                    f"`criterion` returned {s.shape[0]} scores for the group of {group.producers} "
                    f"({group.size} channels): it must return one per channel."
                )
            scores.append(s)
    return scores


def _take(array, axis, index):
    return array if index is None else np.take(array, index, axis=axis)


def rebuild(model, graph, nodes, config, kept) -> keras.Model:
    """A new model of ``model``'s architecture where group ``g`` of ``graph`` keeps channels ``kept[g]``."""
    units = {}
    for group in graph.groups:
        for name in group.producers:
            units[name] = len(kept[group.id])
    new_config = dict(config, layers=[])
    for entry in config["layers"]:
        entry = {k: v for k, v in entry.items() if k != "build_config"}  # shapes change: built when called
        name = entry["config"]["name"]
        if name in units:
            key = PRODUCERS[type(model.get_layer(name))]
            entry["config"] = dict(entry["config"], **{key: units[name]})
        new_config["layers"].append(entry)
    custom = {type(layer).__name__: type(layer) for layer in model.layers}
    with keras.saving.custom_object_scope(custom):
        if isinstance(model, keras.Sequential):
            new = keras.Sequential.from_config(new_config)
        else:
            new = keras.Model.from_config(new_config)

    def index(layout):
        if all(graph.group_of.get(space) is None for space, _ in layout):
            return None
        return graph.kept_indices(layout, dict(enumerate(kept)))

    for node in nodes:
        if node.kind == "input":
            continue
        old_layer = model.get_layer(node.name)
        weights = old_layer.get_weights()
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


def shrink(
    model,
    fraction,
    criterion="magnitude",
    scope="global",
    seed=0,
    recalibrate=None,
    recalibrate_batches=batch_norm.BATCHES,
) -> keras.Model:
    """A new, smaller ``keras.Model`` of ``model``'s architecture with whole units / filters removed.

    Channels coupled through the graph go together (a residual ``Add``'s channel leaves every branch; a
    BatchNormalization, depthwise convolution or pooling after a kernel loses the same channels; the next
    kernel loses the matching input rows, ``Flatten`` included). ``model`` itself is not changed. Inputs
    and outputs keep their shapes: kernels feeding a model output keep their units. See the module doc for
    the supported layers; anything else raises before any work.

    Counting: ``scope="per_layer"``: each group of n channels loses ``floor(fraction * n + 0.5)``;
    ``scope="global"``: ``floor(fraction * N + 0.5)`` of all N shrinkable channels go, ranked across groups
    by score divided by its group's mean score (Torch-Pruning's ``normalizer="mean"``: raw L1 norms of
    kernels of different fan-in do not compare). Either way every layer keeps at least one channel (so
    ``"global"`` may remove fewer near ``fraction`` = 1). Ties: lower group, then lower channel first.
    A channel is a unit of a Dense or a filter of a convolution: the parameter count falls faster than
    ``fraction`` (a kernel loses rows and columns).

    Args:
        model: a built Keras 3 Sequential or functional model (no shared layers, not subclassed).
        fraction: float in [0, 1): fraction of the shrinkable channels to remove (0: a copy).
        criterion: ``"magnitude"`` (L1 norm of each channel's output slice of the producing kernels, summed
            over the group: channels whose kernels are all zero go first), ``"random"`` (``seed``), or a
            callable ``f(kernels) -> scores``: ``kernels`` the group's kernels as ``(fan_in, n)`` arrays,
            ``scores`` n floats, the lowest removed.
        scope: ``"global"`` or ``"per_layer"`` (per group of coupled channels).
        seed: int in [0, 2**31), for ``"random"``.
        recalibrate: None (the kept channels' BatchNormalization statistics are copied), or data to re-estimate
            every BatchNormalization's moving mean / variance on after the channels are removed
            (``tf_selopt.keras.batch_norm.recalibrate_batch_norm``: exact mean and variance of each layer's
            input, layer by layer in inference mode): a ``tf.data.Dataset`` of batches (``x`` or ``(x, y)``) or
            arrays (read in batches of 32). Checked before any work.
        recalibrate_batches: int >= 1, how many batches of ``recalibrate`` are read (default 100).

    Returns:
        A new, uncompiled ``keras.Model`` (Sequential stays Sequential), same layer names, weights copied.

    Raises:
        ValueError: a bad argument, an unbuilt or subclassed model, a shared layer, or an unsupported layer
            receiving shrinkable channels, naming it (nothing is built then).

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
    if not (criterion in CRITERIA if isinstance(criterion, str) else callable(criterion)):
        raise ValueError(
            f"`criterion` must be one of {CRITERIA} or a callable kernels -> scores; received criterion={criterion!r}."
        )
    if not isinstance(scope, str) or scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}; received scope={scope!r}.")
    if not is_int(seed) or not 0 <= seed < 2**31:
        raise ValueError(f"`seed` must be an int in [0, 2**31); received seed={seed!r}.")
    xs = None
    if recalibrate is not None:
        xs = batch_norm.batches_of(model, recalibrate, recalibrate_batches, "recalibrate", "recalibrate_batches")
    graph, nodes, config = channel_graph(model)
    scores = group_scores(model, graph, criterion, int(seed))
    kept = channels_lib.choose(scores, fraction, scope)
    new = rebuild(model, graph, nodes, config, kept)
    if xs is not None:
        batch_norm.recalibrate_batch_norm_on(new, xs)
    return new
