"""BatchNormalization statistics re-estimated on data: ``recalibrate_batch_norm``.

After channels are removed (``tf_selopt.shrink``) the moving mean and variance of every BatchNormalization
describe inputs the layer no longer sees. ``recalibrate_batch_norm`` sets them to the exact statistics of the
layer's input over a fixed number of batches: the mean and the (biased, as Keras' BatchNormalization uses)
variance over every example and position, per channel, accumulated in float64 (Chan et al.'s pairwise
combination of per-batch means and sums of squares: the result does not depend on how the data is batched,
unlike an exponential moving average or an average of per-batch variances). The layers before a
BatchNormalization run in inference mode with their own statistics already re-estimated: layers are done
in order of depth (one forward pass over the data per depth level), so each one gets the statistics it
will see at inference. Nested functional models are recursed into. No other weight changes.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_selopt.core.checks import is_int

#: Default number of batches ``recalibrate_batch_norm`` reads.
BATCHES = 100
#: Batch size used to split arrays (the statistics are exact whatever the split).
ARRAY_BATCH_SIZE = 32


def _has_batch_norm(model) -> bool:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            return True
        if isinstance(layer, keras.Model) and _has_batch_norm(layer):
            return True
    return False


def _describe(structure) -> str:
    return repr(keras.tree.map_structure(lambda a: tuple(np.shape(a)), structure))


def model_input(model):
    """The structure of ``model``'s input tensors (a Sequential's one tensor; a functional model's as built)."""
    return model.inputs[0] if isinstance(model, keras.Sequential) else model.input


def check_batch(model, x, argument="data"):
    """Raises ValueError naming ``argument`` unless ``x`` (one batch) matches ``model``'s inputs in structure,
    rank and known dimensions."""
    expected = model_input(model)
    if isinstance(expected, dict):
        if not isinstance(x, dict) or set(x) != set(expected):
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                f"`{argument}` must yield batches of the model's input, a dict with keys {sorted(expected)}; got {got}."
            )
        pairs = [(k, expected[k], x[k]) for k in sorted(expected)]
    else:
        flat_expected = keras.tree.flatten(expected)
        flat_x = keras.tree.flatten(x) if isinstance(x, (list, tuple)) else [x]
        if len(flat_x) != len(flat_expected):
            raise ValueError(
                f"`{argument}` must yield batches of the model's {len(flat_expected)} input(s) "
                f"{[tuple(t.shape) for t in flat_expected]}; got {len(flat_x)} array(s): {_describe(x)}."
            )
        pairs = [(i, t, a) for i, (t, a) in enumerate(zip(flat_expected, flat_x))]
    for key, tensor, array in pairs:
        shape, want = np.shape(array), tuple(tensor.shape)
        ok = len(shape) == len(want) and all(w is None or w == s for w, s in zip(want[1:], shape[1:]))
        if not ok or np.asarray(array).dtype.kind not in "biuf":
            raise ValueError(
                f"`{argument}` must yield batches of the model's input: input {key!r} has shape {want} (a batch "
                f"axis first), got an array of shape {shape} and dtype {np.asarray(array).dtype}."
            )


def batches_of(model, data, batches=BATCHES, argument="data", batches_argument="batches") -> list:
    """The first ``batches`` batches of ``data`` as the model's input structures of NumPy arrays (labels and
    sample weights dropped), each checked with ``check_batch``.

    ``data``: a ``tf.data.Dataset`` of batches (``x`` or ``(x, y[, w])``) or arrays (an array, or a list /
    dict of arrays for several inputs, or a tuple ``(x, y[, w])``) split into batches of ``ARRAY_BATCH_SIZE``.
    """
    import tensorflow as tf

    if not is_int(batches) or batches < 1:
        raise ValueError(f"`{batches_argument}` must be an int >= 1; received {batches_argument}={batches!r}.")
    if isinstance(data, tf.data.Dataset):
        out = []
        for element in data.take(int(batches)):
            x = keras.utils.unpack_x_y_sample_weight(element)[0] if isinstance(element, tuple) else element
            x = keras.tree.map_structure(lambda t: np.asarray(t), x)
            check_batch(model, x, argument)
            out.append(x)
    elif isinstance(data, (np.ndarray, list, dict, tuple)) or hasattr(data, "__array__"):
        x = keras.utils.unpack_x_y_sample_weight(data)[0] if isinstance(data, tuple) else data
        x = keras.tree.map_structure(lambda t: np.asarray(t), x)
        check_batch(model, x, argument)
        n = len(keras.tree.flatten(x)[0])
        starts = range(0, n, ARRAY_BATCH_SIZE)[: int(batches)]
        out = [keras.tree.map_structure(lambda a, s=s: a[s : s + ARRAY_BATCH_SIZE], x) for s in starts]
    else:
        raise TypeError(
            f"`{argument}` must be a tf.data.Dataset of batches or arrays (an array, a list or dict of arrays); "
            f"received a {type(data).__name__}."
        )
    if not out or len(keras.tree.flatten(out[0])[0]) == 0:
        raise ValueError(f"`{argument}` is empty: it must hold at least one batch of the model's input.")
    return out


class _Moments:
    """Exact per-channel mean and biased variance over batches (float64, pairwise combination)."""

    def __init__(self, axis):
        self.axis, self.count, self.mean, self.m2 = axis, 0, 0.0, 0.0

    def add(self, x):
        x = np.asarray(x, np.float64)
        axes = tuple(a for a in range(x.ndim) if a != self.axis % x.ndim)
        n = int(np.prod([x.shape[a] for a in axes]))
        if n == 0:
            return
        mean = x.mean(axis=axes)
        m2 = ((x - np.expand_dims(mean, axes)) ** 2).sum(axis=axes)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def variance(self):
        return self.m2 / self.count


def _parents(model) -> dict:
    """Layer name -> the names of the layers it reads (a Sequential: the previous layer)."""
    from tf_selopt.keras.shrink import _histories  # the functional config's inbound nodes

    if isinstance(model, keras.Sequential):
        names = [layer.name for layer in model.layers]
        return {name: names[i - 1 : i] for i, name in enumerate(names)}
    parents = {}
    for entry in keras.Model(model_input(model), model.output).get_config()["layers"]:
        calls = entry.get("inbound_nodes", [])
        parents[entry.get("name") or entry["config"]["name"]] = _histories(calls, [])
    return parents


def _input_of(model, layer):
    """What ``layer`` reads in ``model``'s graph (``layer.input`` of a nested model is its own inner input, so
    its first call argument is read from the functional config: the producing layers' output tensors)."""
    if isinstance(model, keras.Sequential) or not isinstance(layer, keras.Model):
        return layer.input
    from tf_selopt.keras.shrink import _operations

    entry = next(
        e for e in keras.Model(model_input(model), model.output).get_config()["layers"] if e["name"] == layer.name
    )
    ops = _operations(model)

    def tensor(value):
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            name, _, index = value["config"]["keras_history"]
            return keras.tree.flatten(ops[name].output)[index]
        if isinstance(value, dict):
            return {k: tensor(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(tensor(v) for v in value)
        return value

    return tensor(entry["inbound_nodes"][0]["args"][0])


def _levels(model, targets) -> list:
    """``targets`` (layers of ``model``) grouped by how many targets lie upstream of them, shallowest first."""
    parents, depth = _parents(model), {}
    names = {t.name for t in targets}

    def level(name):  # targets strictly upstream of ``name`` along the deepest path
        if name not in depth:
            depth[name] = max((level(p) + (p in names) for p in parents.get(name, [])), default=0)
        return depth[name]

    grouped = {}
    for target in targets:
        grouped.setdefault(level(target.name), []).append(target)
    return [grouped[k] for k in sorted(grouped)]


def recalibrate_batch_norm_on(model, xs):
    """``recalibrate_batch_norm`` on ``xs``, a list of checked input batches (``batches_of``)."""
    bn, nested = keras.layers.BatchNormalization, keras.Model
    targets = [t for t in model.layers if isinstance(t, bn) or (isinstance(t, nested) and _has_batch_norm(t))]
    for level in _levels(model, targets):
        probe = keras.Model(model_input(model), [_input_of(model, t) for t in level])
        seen = [[] for _ in level]
        moments = [_Moments(t.axis) if isinstance(t, keras.layers.BatchNormalization) else None for t in level]
        for x in xs:
            outs = probe(x, training=False)
            outs = outs if len(level) > 1 else [outs]
            for i, out in enumerate(outs):
                out = keras.tree.map_structure(lambda t: keras.ops.convert_to_numpy(t), out)
                if moments[i] is not None:
                    moments[i].add(out)
                else:
                    seen[i].append(out)
        for target, m, inputs in zip(level, moments, seen):
            if m is None:
                recalibrate_batch_norm_on(target, inputs)
            else:
                target.moving_mean.assign(m.mean.astype(target.moving_mean.dtype))
                target.moving_variance.assign(m.variance.astype(target.moving_variance.dtype))


def recalibrate_batch_norm(model, data, batches=BATCHES) -> int:
    """Sets the moving mean / variance of every BatchNormalization of ``model`` (nested functional models
    included) to the exact statistics of its input over the first ``batches`` batches of ``data`` (see the
    module doc). Returns the number of BatchNormalization layers set. Nothing else changes.

    Args:
        model: a built Sequential or functional Keras 3 model.
        data: a ``tf.data.Dataset`` of batches (``x`` or ``(x, y[, w])``), or arrays (an array, a list or dict
            of arrays, or a tuple ``(x, y[, w])``) read in batches of ``ARRAY_BATCH_SIZE`` (32).
        batches: int >= 1, the number of batches read (default ``BATCHES`` = 100; fewer if the data ends).

    Raises:
        ValueError / TypeError naming ``data`` or ``batches`` when the data is not batches of the model's input
        (structure, rank, known dimensions, numeric dtype), before anything changes.

    Examples:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(name="bn")])
        >>> x = np.arange(12.0, dtype="float32").reshape(4, 3)
        >>> recalibrate_batch_norm(model, x)
        1
        >>> model.get_layer("bn").moving_mean.numpy().tolist(), model.get_layer("bn").moving_variance.numpy().tolist()
        ([4.5, 5.5, 6.5], [11.25, 11.25, 11.25])
    """
    xs = batches_of(model, data, batches)
    recalibrate_batch_norm_on(model, xs)
    return _count(model)


def _count(model) -> int:
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n += 1
        elif isinstance(layer, keras.Model):
            n += _count(layer)
    return n
