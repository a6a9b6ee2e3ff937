"""Profiles of inner optimizers: what tf_selopt knows about an optimizer class, and the rule that finds it.

A front end keeps a registry, ``{optimizer class: Profile}`` (Keras 3:
``tf_selopt.keras._compat.PROFILES``, tf_keras: ``tf_selopt.keras2._compat.PROFILES``),
and looks an optimizer up with ``find``: along its class's MRO, so a subclass of
Adam takes Adam's profile, unless a class on the way overrides ``update_step`` or
``build`` (``OVERRIDES``): its update or its slots may then differ from what the
profile describes, and it gets none.

No Keras import: the rows name their optimizers' attributes as strings.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

__all__ = ["OVERRIDES", "Profile", "find", "motion_lookup"]

#: Methods whose override in a subclass voids its base class's profile: the update and the slots it creates.
OVERRIDES = ("update_step", "build")


@dataclasses.dataclass(frozen=True)
class Profile:
    """What tf_selopt knows about one optimizer class (one row of a front end's registry).

    Attributes:
        slots: the attributes holding its per-variable slot lists (one variable per model variable, in
            ``build`` order), every one the selected-only path carries over to its k-sized state.
        motion: the slots that must be zero for an entry with a zero gradient to stay exactly in place
            (e.g. Adam's first moment; ``()``: none needed, as for plain SGD or Adagrad); None: a zero
            gradient may move an entry whatever its slots hold.
        breaks_motion: boolean options of the optimizer under which ``motion`` does not hold (RMSprop's
            ``centered``: the square root of a difference that rounding can make negative).
        scalars: attributes holding its scalar state (one variable, not one per model variable; Nadam's
            running product of momentum factors).
        initial: ``(slot, option)`` pairs: the slot starts at the value of the optimizer's option (Adagrad's
            ``initial_accumulator_value``); the other slots start at 0. A newly selected entry's slot starts
            there too.
        not_exact: why the selected-only path is not bit-identical to the masked one ("" where it is).
        graph_rounding: why it is exact eagerly but not in a ``tf.function`` ("" where it is exact there too).
        reselection_exact: whether a reselection keeps the selected-only path exact: the masked path zeroes
            every slot of an entry that stops training (all ``slots`` are ``motion`` slots), as the
            selected-only path starts a newly selected entry from ``initial``.

    A front end that runs the masked path only (tf_keras) fills in ``motion`` and ``breaks_motion``; the other
    fields keep their defaults there.
    """

    optimizer_class: type
    slots: tuple[str, ...] = ()
    motion: tuple[str, ...] | None = None
    breaks_motion: tuple[str, ...] = ()
    scalars: tuple[str, ...] = ()
    initial: tuple[tuple[str, str], ...] = ()
    not_exact: str = ""
    graph_rounding: str = ""
    reselection_exact: bool = False

    def initial_value(self, optimizer, slot: str) -> float:
        """The value ``slot`` of ``optimizer`` (an instance of this class or a subclass) starts from."""
        option = dict(self.initial).get(slot)
        return 0.0 if option is None else float(getattr(optimizer, option))

    def motion_slots(self, optimizer) -> tuple[str, ...] | None:
        """``motion`` for ``optimizer``'s options: None where a zero gradient may move an entry."""
        if any(getattr(optimizer, option, False) for option in self.breaks_motion):
            return None
        return self.motion


def find(cls: type, profiles: Mapping[type, object]) -> tuple[object | None, str]:
    """``(row, "")``: the row of ``profiles`` for ``cls``, the first along its MRO; ``(None, reason)`` when there
    is none, or when ``cls`` or a class between it and the row's overrides a method of ``OVERRIDES``.

    Example:
        >>> class Base: ...
        >>> class Kept(Base): ...
        >>> class Changed(Base):
        ...     def update_step(self, gradient, variable, learning_rate): ...
        >>> rows = {Base: Profile(Base, slots=("m",), motion=("m",), reselection_exact=True)}
        >>> find(Kept, rows)[0] is rows[Base]
        True
        >>> print(find(Changed, rows)[1])
        Changed overrides update_step (its update or slots may differ from Base's)
    """
    mro = cls.__mro__
    base = next((b for b in mro if b in profiles), None)
    if base is None:
        known = ", ".join(sorted(b.__name__ for b in profiles))
        return None, f"{cls.__name__} is not one of the profiled optimizers ({known}) or a subclass of one"
    for between in mro[: mro.index(base)]:
        overridden = [method for method in OVERRIDES if method in vars(between)]
        if overridden:
            where = "" if between is cls else f" (in {between.__name__})"
            return None, (
                f"{cls.__name__} overrides {' and '.join(overridden)}{where} "
                f"(its update or slots may differ from {base.__name__}'s)"
            )
    return profiles[base], ""


def motion_lookup(profiles: Mapping[type, Profile]) -> Callable[[object], tuple[str, ...] | None]:
    """``lookup(optimizer)``: its profile's motion slots (``Profile.motion_slots``), None without a profile
    (``tf_selopt.core.update_paths.masked`` takes it)."""

    def lookup(optimizer):
        profile, _ = find(type(optimizer), profiles)
        return None if profile is None else profile.motion_slots(optimizer)

    return lookup
