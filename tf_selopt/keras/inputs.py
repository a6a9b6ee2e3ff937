"""A Keras 3 model's inputs: names and structure, the id range of token inputs, the longest sequence it takes.

``calibrate`` and ``tf_selopt.deploy.export`` take data for models with one input
(an array), several (a list or tuple of arrays, in ``model.inputs`` order) or
named ones (a dict, e.g. keras_hub's ``{"token_ids", "padding_mask",
"segment_ids"}``). ``model_inputs(model)`` reads what the model takes;
``ModelInputs.feeds(x, argument)`` checks user data against it and returns it
as ``{name: array}`` (ValueError naming ``argument`` and the expected keys when
the keys, the count or the row counts do not match); ``ModelInputs.structure``
turns feeds back into what ``model(...)`` takes.

``integer_ranges(model)``: for each integer input read by a
``keras.layers.Embedding`` (also a subclass such as keras_hub's
``ReversibleEmbedding``, or one Embedding inside the reading layer such as
keras_hub's ``TokenAndPositionEmbedding``; through nested functional models),
the exclusive upper bound of its ids: the smallest ``input_dim`` of those
embeddings. ``max_sequence_length(model)``: the smallest ``sequence_length`` of
keras_hub ``PositionEmbedding`` layers in the model (longer inputs fail in
``PositionEmbedding``'s slice); ``check_sequence_length`` refuses longer data.

Example:
    >>> import keras, numpy as np
    >>> from tf_selopt.keras.inputs import model_inputs, integer_ranges
    >>> ids = keras.Input((5,), dtype="int32", name="ids")
    >>> mask = keras.Input((5,), dtype="int32", name="mask")
    >>> h = keras.layers.Embedding(50, 4)(ids) * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    >>> model = keras.Model({"ids": ids, "mask": mask}, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    >>> spec = model_inputs(model)
    >>> spec.kind, spec.names, integer_ranges(model)["ids"][0]
    ('dict', ('ids', 'mask'), 50)
    >>> sorted(spec.feeds({"ids": np.zeros((3, 5)), "mask": np.ones((3, 5))}, "x"))
    ['ids', 'mask']
"""

from __future__ import annotations

import collections.abc
import dataclasses
import sys

import keras
import numpy as np

from tf_selopt.keras import _compat

__all__ = ["ModelInput", "ModelInputs", "model_inputs", "integer_ranges", "max_sequence_length"]


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """One input: ``name``, ``shape`` (batch dimension first, None where free) and ``dtype`` (a string)."""

    name: str
    shape: tuple
    dtype: str
    tensor: object = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def is_integer(self) -> bool:
        return self.dtype.startswith(("int", "uint"))


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """What a model takes: ``kind`` ``"single"`` (one array), ``"list"`` (arrays in ``inputs`` order) or
    ``"dict"`` (named arrays); ``inputs``: one ``ModelInput`` each."""

    kind: str
    inputs: tuple

    @property
    def names(self) -> tuple:
        return tuple(i.name for i in self.inputs)

    def structure(self, feeds: dict):
        """``{name: array}`` as ``model(...)`` takes it: the array, a list or a dict."""
        if self.kind == "single":
            return feeds[self.inputs[0].name]
        if self.kind == "list":
            return [feeds[n] for n in self.names]
        return {n: feeds[n] for n in self.names}

    def feeds(self, x, argument: str, rows_equal: bool = True) -> dict:
        """``x`` (an array, a list/tuple of arrays in input order or a dict keyed by input name) as
        ``{name: np.ndarray}``. ValueError naming ``argument`` when it does not fit the model's inputs or
        (``rows_equal``) the arrays' first dimensions differ."""
        expected = list(self.names)
        if isinstance(x, collections.abc.Mapping):
            keys = list(x)
            if self.kind == "single" and len(keys) == 1:
                feeds = {expected[0]: x[keys[0]]}
            elif set(keys) != set(expected):
                _refuse_keys(expected, keys, argument)
            else:
                feeds = {n: x[n] for n in expected}
        elif isinstance(x, (list, tuple)) and self.kind != "single":
            if len(x) != len(expected):
                raise ValueError(
                    f"`{argument}`: the model takes {len(expected)} inputs {expected}; received a "
                    f"{type(x).__name__} of {len(x)} arrays (pass one array per input, or a dict keyed by name)."
                )
            feeds = dict(zip(expected, x))
        elif self.kind == "single":
            feeds = {expected[0]: x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x}
        else:
            raise ValueError(
                f"`{argument}`: the model takes {len(expected)} inputs: pass a dict with the keys {expected} "
                f"(or a list of arrays in that order); received {type(x).__name__}."
            )
        feeds = {n: np.asarray(v) for n, v in feeds.items()}
        rows = {n: (v.shape[0] if v.ndim else None) for n, v in feeds.items()}
        if rows_equal and (None in rows.values() or len(set(rows.values())) != 1):
            raise ValueError(f"`{argument}`: every input needs the same number of rows; received {rows}.")
        return feeds


def _refuse_keys(expected, keys, argument):
    missing, extra = sorted(set(expected) - set(keys)), sorted(set(map(str, keys)) - set(expected))
    raise ValueError(
        f"`{argument}`: the dict's keys must be the model's inputs {expected}; received keys "
        f"{sorted(map(str, keys))} (missing {missing}, unknown {extra})."
    )


def model_inputs(model) -> ModelInputs:
    """The inputs of a built Keras 3 ``model`` (ValueError when it has no known inputs)."""
    try:
        flat = list(model.inputs or [])
    except (AttributeError, ValueError):
        flat = []
    try:
        structure = model.input
    except (AttributeError, ValueError):
        structure = None
    if not flat:
        raise ValueError(
            f"`model` {model.name!r} has no known inputs (a subclassed model called on data): use a functional "
            "or Sequential model with Input layers."
        )
    if isinstance(structure, collections.abc.Mapping):
        items, kind = list(structure.items()), "dict"
    else:
        names = [getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(flat)]
        if len(set(names)) != len(names):
            names = [f"input_{i}" for i in range(len(flat))]
        items, kind = list(zip(names, flat)), "single" if len(flat) == 1 else "list"
    inputs = tuple(ModelInput(str(n), tuple(t.shape), keras.backend.standardize_dtype(t.dtype), t) for n, t in items)
    return ModelInputs(kind, inputs)


def _embedding_in(layer):
    """The Embedding that ``layer`` looks ids up in: itself, or its only nested Embedding; else None."""
    if isinstance(layer, keras.layers.Embedding):
        return layer
    if isinstance(layer, keras.Model):
        return None
    nested = [s for s in _compat.flatten_layers(layer)[1:] if isinstance(s, keras.layers.Embedding)]
    return nested[0] if len(nested) == 1 else None


def _readers(model) -> dict:
    """``id(KerasTensor) -> [(layer, position in the call's flat inputs)]`` over every layer in ``model``."""
    readers = {}
    for layer in _compat.flatten_layers(model)[1:]:
        for call in _compat.call_inputs(layer):
            for position, tensor in enumerate(call):
                readers.setdefault(id(tensor), []).append((layer, position, len(call)))
    return readers


def integer_ranges(model) -> dict:
    """``{input name: (high, source)}`` for integer inputs read by an Embedding: ids in ``[0, high)``, ``source``
    names the embedding (``"<layer path>.input_dim"``). Inputs read by no Embedding are left out."""
    readers = _readers(model)
    found = {}
    for spec in model_inputs(model).inputs:
        if not spec.is_integer:
            continue
        best, seen, todo = None, set(), [spec.tensor]
        while todo:
            tensor = todo.pop()
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            for layer, position, count in readers.get(id(tensor), []):
                inner = list(getattr(layer, "inputs", None) or []) if isinstance(layer, keras.Model) else []
                if len(inner) == count:  # a nested functional model: follow the tensor inside
                    todo.append(inner[position])
                    continue
                embedding = _embedding_in(layer)
                if embedding is not None and (best is None or embedding.input_dim < best[0]):
                    best = (int(embedding.input_dim), f"{embedding.path}.input_dim")
        if best is not None:
            found[spec.name] = best
    return found


def max_sequence_length(model):
    """``(length, source)``: the smallest ``sequence_length`` of keras_hub ``PositionEmbedding`` layers in
    ``model`` (``source``: ``"<layer path>.sequence_length"``), or None (no such layer, or keras_hub not
    imported)."""
    hub = sys.modules.get("keras_hub")
    position = getattr(getattr(hub, "layers", None), "PositionEmbedding", None)
    if position is None:
        return None
    lengths = [
        (int(layer.sequence_length), f"{layer.path}.sequence_length")
        for layer in _compat.flatten_layers(model)
        if isinstance(layer, position) and getattr(layer, "sequence_length", None)
    ]
    return min(lengths) if lengths else None


def check_sequence_length(spec: ModelInputs, limit, shapes: dict, argument: str):
    """ValueError naming ``argument`` when an input whose second dimension the model leaves free gets a
    sequence longer than ``limit`` (``(length, source)`` from ``max_sequence_length``; None: no limit).
    ``shapes``: ``{name: shape}`` of the data."""
    if limit is None:
        return
    for i in spec.inputs:
        shape = shapes.get(i.name)
        if len(i.shape) >= 2 and i.shape[1] is None and shape is not None and len(shape) >= 2:
            if shape[1] is not None and int(shape[1]) > limit[0]:
                raise ValueError(
                    f"`{argument}`: input {i.name!r} has sequence length {int(shape[1])}, over the model's "
                    f"maximum {limit[0]} ({limit[1]}): truncate or split the sequences."
                )


def _known_inputs(model):
    try:
        return model_inputs(model)
    except ValueError:
        return None  # a subclassed model called on data: its inputs are whatever it takes


def _check_x_spec(spec, limit, x_spec, argument):
    """Checks a dataset's ``x`` element spec (a TensorSpec, a tuple/list or a dict of them) against ``spec``."""
    if spec is None:
        return
    if isinstance(x_spec, collections.abc.Mapping) and spec.kind == "dict":
        if set(x_spec) != set(spec.names):
            _refuse_keys(list(spec.names), list(x_spec), argument)
        check_sequence_length(spec, limit, {n: tuple(s.shape) for n, s in x_spec.items()}, argument)
    elif spec.kind == "single" and hasattr(x_spec, "shape"):
        check_sequence_length(spec, limit, {spec.names[0]: tuple(x_spec.shape)}, argument)


def dataset(model, data, batch_size: int, argument: str = "data"):
    """``data`` as a ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, sample_weight)`` batches for ``model``.

    ``data``: such a dataset (its ``x`` dict keys checked against the model's inputs), a
    ``keras.utils.PyDataset`` of such batches, or an ``(x, y)`` / ``(x, y, sample_weight)`` tuple of arrays
    with ``x`` an array, a list/tuple of arrays or a dict keyed by input name (batched by ``batch_size``,
    repeated). ValueError naming ``argument`` for data that does not fit: the wrong structure, dict keys other
    than the model's inputs, different row counts, sequences longer than ``max_sequence_length(model)``.
    """
    import tensorflow as tf  # noqa: PLC0415  (the TensorFlow backend's data pipeline)

    spec, limit = _known_inputs(model), max_sequence_length(model)
    if isinstance(data, keras.utils.PyDataset):
        data = _from_py_dataset(data, argument, tf)
    if isinstance(data, tf.data.Dataset):
        element = data.element_spec
        if not isinstance(element, tuple) or len(element) not in (2, 3):
            raise ValueError(
                f"`{argument}` must yield (x, y) or (x, y, sample_weight) batches; its elements are "
                f"{type(element).__name__} {element!r}."
            )
        _check_x_spec(spec, limit, element[0], argument)
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        x, *rest = data
        if spec is not None:
            feeds = spec.feeds(x, argument, rows_equal=False)
            check_sequence_length(spec, limit, {n: v.shape for n, v in feeds.items()}, argument)
            x = spec.structure(feeds)
        x = tuple(x) if isinstance(x, list) else x
        parts = (x, *(np.asarray(p) for p in rest))
        sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else 0 for leaf in tf.nest.flatten(parts)}
        if len(sizes) != 1:
            raise ValueError(
                f"`{argument}`: x, y (and sample_weight) must have the same length; received lengths {sizes}."
            )
        return tf.data.Dataset.from_tensor_slices(parts).batch(batch_size).repeat()
    raise ValueError(
        f"`{argument}` must be a tf.data.Dataset of (x, y) batches, a keras.utils.PyDataset of them or an (x, y) "
        f"tuple of arrays (x: an array, a list of arrays or a dict keyed by input name); received "
        f"{type(data).__name__}."
    )


def _from_py_dataset(data, argument, tf):
    """A ``keras.utils.PyDataset`` as a ``tf.data.Dataset`` of its batches (shapes from its first batch)."""
    count = data.num_batches
    if not count:
        raise ValueError(f"`{argument}`: the PyDataset has no batches (num_batches={count!r}).")
    first = _tuples(data[0])

    def spec(a):
        a = np.asarray(a)
        return tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype))

    signature = tf.nest.map_structure(spec, first)

    def batches():
        for i in range(count):
            yield tf.nest.map_structure(np.asarray, _tuples(data[i]))

    return tf.data.Dataset.from_generator(batches, output_signature=signature)


def _tuples(structure):
    """Lists as tuples, recursively (``tf.data`` takes a list for one tensor, a tuple for a structure)."""
    if isinstance(structure, (list, tuple)):
        return tuple(_tuples(s) for s in structure)
    if isinstance(structure, collections.abc.Mapping):
        return {k: _tuples(v) for k, v in structure.items()}
    return structure
