"""The study's config file: schema, loading, and errors that name the key and the line.

A config is YAML (a mapping; see ``configs/study.yaml`` for the note's study
and every key). Unknown keys, wrong types and out-of-range values raise
``ConfigError`` whose message names the file, the line and the dotted key, e.g.
``study.yaml:12: selection.criteria[1]: Input should be 'gradient_sum', ...``.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Annotated, Literal

import pydantic
import yaml

__all__ = ["ConfigError", "StudyConfig", "load_config", "config_hash", "CRITERIA", "PRUNING_METHODS"]

CRITERIA = ("gradient_sum", "preconditioned", "fisher", "magnitude", "random")
PRUNING_METHODS = ("global", "per_layer", "random", "tfmot")

Criterion = Literal["gradient_sum", "preconditioned", "fisher", "magnitude", "random"]
PruningMethod = Literal["global", "per_layer", "random", "tfmot"]
Fraction = Annotated[float, pydantic.Field(ge=0.0, lt=1.0)]
OpenFraction = Annotated[float, pydantic.Field(gt=0.0, lt=1.0)]


class ConfigError(ValueError):
    """A config that cannot be run; the message names the file, line and key."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class Training(_Strict):
    """Every run: Adam(learning_rate), ``epochs`` over the training split, batches of ``batch_size``."""

    epochs: Annotated[int, pydantic.Field(ge=1)] = 8
    batch_size: Annotated[int, pydantic.Field(ge=1)] = 64
    learning_rate: Annotated[float, pydantic.Field(gt=0.0)] = 1e-3


class Selection(_Strict):
    """Figure 1: freeze a fraction of parameters after ``warmup_epochs`` (0 = full training, the reference)."""

    criteria: Annotated[list[Criterion], pydantic.Field(min_length=1)] = list(CRITERIA)
    frozen: Annotated[list[Fraction], pydantic.Field(min_length=1)] = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]
    warmup_epochs: Annotated[int, pydantic.Field(ge=1)] = 1
    window: Annotated[int, pydantic.Field(ge=1)] = 20
    scope: Literal["global", "per_variable"] = "global"


class Pruning(_Strict):
    """Figure 2: gradual pruning to each sparsity (PolynomialDecay 0 -> s, power 3, ``events`` steps)."""

    methods: Annotated[list[PruningMethod], pydantic.Field(min_length=1)] = list(PRUNING_METHODS)
    sparsity: Annotated[list[OpenFraction], pydantic.Field(min_length=1)] = [0.5, 0.8, 0.9, 0.95, 0.98]
    begin_epochs: Annotated[int, pydantic.Field(ge=0)] = 1
    end_fraction: OpenFraction = 0.65
    events: Annotated[int, pydantic.Field(ge=1)] = 15


class StudyConfig(_Strict):
    """The whole study: data sets x models x seeds x (selection runs + pruning runs)."""

    name: Annotated[str, pydantic.Field(min_length=1)]
    data: Annotated[list[Literal["mnist", "digits"]], pydantic.Field(min_length=1)] = ["mnist"]
    models: Annotated[list[Literal["lenet_300_100", "small_cnn"]], pydantic.Field(min_length=1)] = ["lenet_300_100"]
    seeds: Annotated[list[Annotated[int, pydantic.Field(ge=0)]], pydantic.Field(min_length=1)] = [0, 1, 2]
    training: Training = Training()
    selection: Selection | None = None
    pruning: Pruning | None = None
    #: TensorBoard logs (SelectionMonitor) for the runs of the first seed, of all seeds, or none.
    tensorboard: Literal["none", "first_seed", "all"] = "first_seed"
    #: Export the first seed's global-magnitude model pruned to this sparsity (one of pruning.sparsity), or none.
    export_sparsity: OpenFraction | None = None

    @pydantic.field_validator("export_sparsity")
    @classmethod
    def _export_is_a_pruning_run(cls, value, info):
        pruning = info.data.get("pruning")
        if value is not None and (pruning is None or "global" not in pruning.methods or value not in pruning.sparsity):
            raise ValueError("must be one of pruning.sparsity, with 'global' in pruning.methods")
        return value

    @pydantic.model_validator(mode="after")
    def _something_to_run(self):
        if self.selection is None and self.pruning is None:
            raise ValueError("nothing to run: give a `selection` and/or a `pruning` section")
        return self


def _line_of(node, loc) -> int | None:
    """1-based line of the YAML node at ``loc`` (keys and list indices), or of its nearest ancestor."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _dotted(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_config(path) -> StudyConfig:
    """Read and validate a YAML study config; ``ConfigError`` names file, line and key of every problem."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config: {path} is not a file.")
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path.name}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}:1: the config must be a mapping of keys to values.")
    try:
        return StudyConfig.model_validate(raw)
    except pydantic.ValidationError as e:
        lines = []
        for err in e.errors():
            loc = err["loc"]
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{path.name}:{_line_of(node, loc)}: {_dotted(loc)}: {what}")
        raise ConfigError("invalid study config:\n  " + "\n  ".join(lines)) from None


def config_hash(config: StudyConfig) -> str:
    """Stable hash of everything that determines the runs' results (``name`` excluded)."""
    data = config.model_dump(mode="json", exclude={"name"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
