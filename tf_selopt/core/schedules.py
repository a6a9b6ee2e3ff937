"""Pruning schedules: step -> (whether to prune now, target sparsity).

The names, parameters and meaning are those of tfmot's
``tensorflow_model_optimization.sparsity.keras`` schedules, and the returned
values match theirs step for step:

* pruning happens at ``step`` when ``begin_step <= step``, ``step <= end_step``
  (unless ``end_step == -1``: no end, ``ConstantSparsity`` only) and
  ``(step - begin_step) % frequency == 0``;
* ``PolynomialDecay`` returns ``final + (initial - final) * (1 - p) ** power``
  with ``p = clip((step - begin_step) / (end_step - begin_step), 0, 1)`` in
  float32, at every step (also those where ``should_prune`` is False).

Unlike tfmot's, ``get_config`` returns the plain constructor arguments and
``from_config`` is ``cls(**config)``, so any schedule (also a user's) loads back;
``PolynomialDecay`` refuses ``end_step == begin_step`` (tfmot divides by zero).

A schedule is called with an integer step (Python int or integer tensor, e.g.
an optimizer's ``iterations``) and returns ``(should_prune, sparsity)``: a bool
scalar tensor and a float32 scalar tensor (fraction of weights to zero, in
[0, 1)). It works eagerly, in ``tf.function`` and under XLA.

This module imports TensorFlow only, never a Keras front end.

Examples:
    >>> s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=50)
    >>> [(bool(p), round(float(x), 4)) for p, x in (s(0), s(50), s(60), s(100), s(150))]
    [(True, 0.0), (True, 0.7), (False, 0.7488), (True, 0.8), (False, 0.8)]
    >>> ConstantSparsity.from_config(ConstantSparsity(0.5, 10).get_config())
    ConstantSparsity(target_sparsity=0.5, begin_step=10, end_step=-1, frequency=100)
"""

from __future__ import annotations

import inspect

import tensorflow as tf

from tf_selopt.core.checks import fraction, is_int, positive
from tf_selopt.core.configurable import Configurable

__all__ = ["PruningSchedule", "ConstantSparsity", "PolynomialDecay", "latest_pruning_step"]


def _check_steps(cls_name: str, begin_step, end_step, frequency, allow_no_end: bool):
    """Validate step arguments; ``end_step == -1`` means "no end" if ``allow_no_end``."""
    if not is_int(begin_step) or begin_step < 0:
        raise ValueError(f"{cls_name}: `begin_step` must be an int >= 0; received begin_step={begin_step!r}.")
    if allow_no_end:
        if not is_int(end_step) or not (end_step == -1 or end_step >= begin_step):
            raise ValueError(
                f"{cls_name}: `end_step` must be -1 (no end) or an int >= begin_step ({begin_step}); "
                f"received end_step={end_step!r}."
            )
    elif not is_int(end_step) or end_step <= begin_step:
        raise ValueError(
            f"{cls_name}: `end_step` must be an int > begin_step ({begin_step}); received end_step={end_step!r}."
        )
    if not is_int(frequency) or frequency < 1:
        raise ValueError(f"{cls_name}: `frequency` must be an int >= 1; received frequency={frequency!r}.")
    return int(begin_step), int(end_step), int(frequency)


def _as_step(step):
    """Python int or integer tensor -> int64 scalar tensor."""
    if isinstance(step, bool):
        raise ValueError(f"`step` must be an integer (Python int or integer tensor); received step={step!r}.")
    if is_int(step):
        return tf.constant(int(step), tf.int64)
    step = tf.convert_to_tensor(step)
    if not step.dtype.is_integer:
        raise ValueError(f"`step` must be an integer tensor; received dtype {step.dtype.name}.")
    return tf.cast(step, tf.int64)


class PruningSchedule(Configurable):
    """Base class: holds ``begin_step``, ``end_step``, ``frequency``; subclasses add the sparsity.

    Subclasses implement ``__call__(step) -> (should_prune, sparsity)`` and keep each constructor argument
    in the attribute of the same name (``get_config`` reads them; or override it); ``from_config`` is
    ``cls(**config)``.
    """

    begin_step: int
    end_step: int
    frequency: int

    def prunes_at(self, step):
        """The pruning-step rule (see the module doc), written once: a Python int gives a bool, an integer
        tensor a bool tensor."""
        in_range = (step >= self.begin_step) & ((step <= self.end_step) | (self.end_step < 0))
        return in_range & ((step - self.begin_step) % self.frequency == 0)

    def should_prune(self, step):
        """Bool scalar tensor: True at the pruning steps (``prunes_at``)."""
        return tf.convert_to_tensor(self.prunes_at(_as_step(step)))

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self) -> dict:
        """The constructor arguments, in the constructor's order, from the attributes of the same names."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self), tuple(self.get_config().items())))


class ConstantSparsity(PruningSchedule):
    """The same sparsity at every pruning step.

    Args:
        target_sparsity: fraction of weights to zero, a float in [0, 1).
        begin_step: first pruning step (int >= 0).
        end_step: last step at which pruning may happen (int >= begin_step), or
            -1 (default): no end.
        frequency: prune every ``frequency`` steps from ``begin_step`` (int >= 1).
    """

    def __init__(self, target_sparsity: float, begin_step: int, end_step: int = -1, frequency: int = 100):
        target_sparsity = fraction("target_sparsity", target_sparsity, owner="ConstantSparsity: ")
        steps = _check_steps("ConstantSparsity", begin_step, end_step, frequency, allow_no_end=True)
        self.target_sparsity = target_sparsity
        self.begin_step, self.end_step, self.frequency = steps

    def __call__(self, step):
        return self.should_prune(step), tf.constant(self.target_sparsity, tf.float32)


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity`` (Zhu & Gupta 2017).

    ``sparsity(step) = final + (initial - final) * (1 - p) ** power`` with
    ``p = clip((step - begin_step) / (end_step - begin_step), 0, 1)``: fast at
    first, then levelling off; ``initial`` before ``begin_step``, ``final`` from
    ``end_step`` on.

    Args:
        initial_sparsity: sparsity at ``begin_step``, a float in [0, 1).
        final_sparsity: sparsity from ``end_step`` on, a float in [0, 1).
        begin_step: first pruning step (int >= 0).
        end_step: step at which ``final_sparsity`` is reached, also the last
            step at which pruning may happen (int > begin_step).
        power: exponent of the decay (a finite number > 0; default 3).
        frequency: prune every ``frequency`` steps from ``begin_step`` (int >= 1).
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ):
        initial_sparsity = fraction("initial_sparsity", initial_sparsity, owner="PolynomialDecay: ")
        final_sparsity = fraction("final_sparsity", final_sparsity, owner="PolynomialDecay: ")
        steps = _check_steps("PolynomialDecay", begin_step, end_step, frequency, allow_no_end=False)
        positive("power", power, owner="PolynomialDecay: ")
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.begin_step, self.end_step, self.frequency = steps
        self.power = power

    def __call__(self, step):
        step = _as_step(step)
        # Same float32 operations, in the same order, as tfmot's schedule.
        span = tf.constant(self.end_step - self.begin_step, tf.float32)
        p = tf.minimum(1.0, tf.maximum(0.0, tf.cast(step - self.begin_step, tf.float32) / span))
        sparsity = tf.constant(self.initial_sparsity - self.final_sparsity, tf.float32) * tf.pow(
            1.0 - p, tf.constant(self.power, tf.float32)
        ) + tf.constant(self.final_sparsity, tf.float32)
        return self.should_prune(step), sparsity


def latest_pruning_step(schedule, after: int, through: int):
    """Largest step in ``(after, through]`` (Python ints) at which ``schedule(step)`` prunes, or None.

    ``ConstantSparsity`` and ``PolynomialDecay`` answer in closed form (checked by
    ``PruningSchedule.prunes_at``); any other schedule, e.g. a user's with its own
    ``should_prune`` or ``__call__``, is called eagerly for each step, latest first.
    """
    if type(schedule) in (ConstantSparsity, PolynomialDecay):  # the latest step ``prunes_at`` allows
        last = through if schedule.end_step < 0 else min(through, schedule.end_step)
        step = last - (last - schedule.begin_step) % schedule.frequency
        return step if step > after and schedule.prunes_at(step) else None
    for step in range(through, after, -1):
        if bool(schedule(step)[0]):
            return step
    return None
