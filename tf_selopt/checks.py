"""Argument checks shared by the core and the front ends (no Keras import)."""

from __future__ import annotations

import numbers

__all__ = ["is_int"]


def is_int(x) -> bool:
    """True for Python and NumPy integers, False for bools and everything else."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)
