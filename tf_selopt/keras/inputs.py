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
        return np.dtype(self.dtype).kind in "iub"


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
                missing, extra = sorted(set(expected) - set(keys)), sorted(set(map(str, keys)) - set(expected))
                raise ValueError(
                    f"`{argument}`: the dict's keys must be the model's inputs {expected}; received keys "
                    f"{sorted(map(str, keys))} (missing {missing}, unknown {extra})."
                )
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


def model_inputs(model) -> ModelInputs:
    """The inputs of a built Keras 3 ``model`` (ValueError when it has no known inputs)."""
    try:
        structure, flat = model.input, list(model.inputs)
    except (AttributeError, ValueError):
        structure, flat = None, []
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
    inputs = tuple(ModelInput(str(n), tuple(t.shape), str(np.dtype(t.dtype).name), t) for n, t in items)
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
        if not spec.is_integer or np.dtype(spec.dtype).kind == "b":
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
