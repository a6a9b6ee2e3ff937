"""When windows and selections happen: one rule, for Python ints and for int64 tensors alike.

The note's procedure runs ``warmup_steps`` (eta0) full steps, then restricted
ones. A gradient criterion accumulates the ``window`` (t) gradients that end
with a selection step; the first selection is at step ``warmup_steps``
(0-based), and with ``reselect_every`` = n again at ``warmup_steps + j * n``.
With ``preselected`` the selection was made before training (masks given, e.g.
by ``tf_selopt.calibrate``): every step is an ordinary restricted one.

Each rule below is written once, over a tiny set of operations (``_INT`` for
Python ints, ``_TENSOR`` for int64 tensors), so callbacks that plan in Python
(which phase to trace, which variables need gradients) and the in-graph step
cannot disagree. This module imports TensorFlow only.

Examples:
    >>> plan = SelectionPlan(warmup_steps=10, window=3, reselect_every=5)
    >>> [plan.next_selection(s) for s in (0, 10, 11, 15, 16)]
    [10, 10, 15, 15, 20]
    >>> [s for s in range(20) if plan.in_window(s)]
    [8, 9, 10, 13, 14, 15, 18, 19]
    >>> int(plan.next_selection(tf.constant(11, tf.int64)))
    15
    >>> plan.ordinary_phase(0, 7), plan.ordinary_phase(11, 12), plan.ordinary_phase(7, 8)
    ('warmup', 'restricted', None)
    >>> given = SelectionPlan(warmup_steps=0, window=0, preselected=True)
    >>> given.next_selection(0), given.in_window(0), given.ordinary_phase(0, 5)
    (-1, False, 'restricted')
"""

from __future__ import annotations

import dataclasses
import types

import tensorflow as tf

__all__ = ["SelectionPlan", "PHASES"]

#: Phases a step can be traced for: ordinary warm-up steps, ordinary restricted steps.
PHASES = ("warmup", "restricted")

_INT = types.SimpleNamespace(
    maximum=max,
    where=lambda condition, a, b: a if condition else b,
    logical_and=lambda a, b: a and b,
    constant=int,
)
_TENSOR = types.SimpleNamespace(
    maximum=tf.maximum,
    where=tf.where,
    logical_and=tf.logical_and,
    constant=lambda value: tf.constant(value, tf.int64),
)


def _ops(step):
    return _INT if isinstance(step, int) else _TENSOR


@dataclasses.dataclass(frozen=True)
class SelectionPlan:
    """The step schedule of selective training (0-based steps).

    Attributes:
        warmup_steps: eta0, full steps before the first selection (int >= 0).
        window: gradients a criterion accumulates per selection (int >= 0; 0
            for criteria that read no gradients).
        reselect_every: None (select once) or the steps between selections.
        preselected: True when the masks were given before training: no
            selection, no window, every step restricted (needs
            ``warmup_steps`` 0 and no ``reselect_every``).

    ``next_selection``, ``in_window`` and ``restricted`` take a Python int or an
    int64 scalar tensor and answer in kind; the others take Python ints.
    """

    warmup_steps: int
    window: int
    reselect_every: int | None = None
    preselected: bool = False

    def __post_init__(self):
        if self.preselected and (self.warmup_steps != 0 or self.reselect_every is not None):
            raise ValueError(
                "A preselected plan has no warm-up and no reselection: warmup_steps=0, reselect_every=None; "
                f"received warmup_steps={self.warmup_steps!r}, reselect_every={self.reselect_every!r}."
            )

    def next_selection(self, step):
        """Step of the next selection at or after ``step``, or -1 if there is none."""
        ops = _ops(step)
        if self.preselected:
            return ops.constant(-1)
        eta0 = ops.constant(self.warmup_steps)
        if self.reselect_every is None:
            return ops.where(step <= eta0, eta0, ops.constant(-1))
        n = ops.constant(self.reselect_every)
        return eta0 + (ops.maximum(step - eta0, ops.constant(0)) + n - 1) // n * n

    def in_window(self, step):
        """Whether ``step`` is a gradient-window step or a selection step (the selection step is the
        window's last; criteria without a window have only the selection step)."""
        ops = _ops(step)
        selection = self.next_selection(step)
        return ops.logical_and(selection >= 0, selection - step < max(self.window, 1))

    def is_selection(self, step):
        """Whether ``step`` is a selection step."""
        return self.next_selection(step) == step

    def restricted(self, step):
        """Whether ``step`` is after the warm-up (only selected entries train)."""
        return step >= self.warmup_steps

    def meets_window(self, first: int, last: int) -> bool:
        """Whether a window or selection step lies in ``[first, last]``."""
        return any(self.in_window(step) for step in self._window_candidates(first, last))

    def _window_candidates(self, first: int, last: int):
        """The steps of ``[first, last]`` that could be window steps: those of the first selection at or
        after ``first`` (a window ends at its selection), clipped to the range."""
        selection = self.next_selection(first)
        if selection < 0:
            return range(0)
        return range(max(first, selection - max(self.window, 1) + 1), min(last, selection) + 1)

    def ordinary_phase(self, first: int, last: int):
        """``"warmup"`` / ``"restricted"`` if every step in ``[first, last]`` is an ordinary step of that
        phase (no window, no selection), else None."""
        if self.meets_window(first, last):
            return None
        if last < self.warmup_steps:
            return "warmup"
        return "restricted" if first >= self.warmup_steps else None

    def needs_every_variable(self, first: int, last: int) -> bool:
        """Whether a step in ``[first, last]`` needs every variable's gradient: a warm-up, window or
        selection step."""
        return first < self.warmup_steps or self.meets_window(first, last)
