"""Argument checks shared by the core and the front ends (no Keras import)."""

from __future__ import annotations

import math
import numbers

__all__ = ["fraction", "is_int", "is_real", "positive"]


def is_int(x) -> bool:
    """True for Python and NumPy integers, False for bools and everything else."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x) -> bool:
    """True for finite Python and NumPy reals, False for bools, NaN, infinities and everything else."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def fraction(name: str, value, *, upper: float = 1.0, closed: bool = False, owner: str = "") -> float:
    """``value`` as a float in [0, upper) ([0, upper] if ``closed``); else a ValueError naming ``name`` and
    the range, prefixed by ``owner`` (e.g. ``"ConstantSparsity: "``)."""
    if not (is_real(value) and 0.0 <= value and (value <= upper if closed else value < upper)):
        bound = f"{upper:.10g}" + ("]" if closed else ")")
        raise ValueError(f"{owner}`{name}` must be a float in [0, {bound}; received {name}={value!r}.")
    return float(value)


def positive(name: str, value, *, owner: str = ""):
    """``value`` unchanged if it is a finite number > 0; else a ValueError naming ``name``."""
    if not (is_real(value) and value > 0):
        raise ValueError(f"{owner}`{name}` must be a finite number > 0; received {name}={value!r}.")
    return value
