"""The Keras 3 inner optimizers' profiles: which restricted-update path each can take, and why not.

The rows are ``tf_selopt.keras._compat.PROFILES`` (one per built-in optimizer
class, ``tf_selopt.core.profiles.Profile``); ``profile_of`` finds an optimizer's
along its class's MRO (a subclass of Adam that keeps ``update_step`` and ``build``
is profiled as Adam). ``why_not`` says why the selected-only path is not taken
("" where it is); ``motion_slots`` is the masked path's lookup
(``tf_selopt.core.update_paths.masked``).

Example:
    >>> import keras
    >>> class MyAdam(keras.optimizers.Adam):
    ...     pass
    >>> why_not(MyAdam())
    ''
    >>> why_not(keras.optimizers.RMSprop())
    'RMSprop: in a tf.function Grappler rewrites its x / sqrt(y) as x * rsqrt(y), which rounds by lane (1 ulp)'
    >>> why_not(keras.optimizers.RMSprop(), exact=False)  # eagerly it is exact
    ''
"""

from __future__ import annotations

from tf_selopt.core import profiles
from tf_selopt.core.profiles import Profile
from tf_selopt.keras import _compat

__all__ = ["profile_of", "why_not", "motion_slots", "per_variable_state"]


def profile_of(optimizer) -> tuple[Profile | None, str]:
    """``(profile, "")`` of ``optimizer`` (its class's, along the MRO), or ``(None, reason)``."""
    return profiles.find(type(optimizer), _compat.PROFILES)


#: ``lookup(optimizer)`` -> the slots that must be zero for a zero-gradient entry to stay in place, or None.
motion_slots = profiles.motion_lookup(_compat.PROFILES)


def per_variable_state(optimizer) -> list[str]:
    """The attributes of ``optimizer``'s per-variable state lists: its profile's slots, and with ``use_ema``
    the moving averages ([] without a profile)."""
    profile, _ = profile_of(optimizer)
    slots = list(profile.slots) if profile is not None else []
    return slots + ([_compat.EMA_ATTRIBUTE] if optimizer.use_ema else [])


def why_not(optimizer, variables=(), constraint_allowed=lambda constraint: False, exact=True, reselects=False) -> str:
    """Why ``optimizer`` (and the model ``variables``) cannot train on the selected entries only; "" if it can.

    It can where its profile (``profile_of``) says the selected-only path is exact; with ``exact`` (a
    ``tf.function`` must be exact too) not where it rounds differently in a graph (``Profile.graph_rounding``),
    and with ``exact`` and ``reselects`` (a ``reselect_every``) only where the masked path zeroes every slot
    of an entry that stops training (``Profile.reselection_exact``; not with weight decay), as the
    selected-only path starts newly selected entries from their initial value. Never with ``clipnorm`` /
    ``global_clipnorm`` (a norm over the k entries sums in another order than over N with zeros: equal up to
    rounding only), gradient accumulation, a variable constraint that ``constraint_allowed`` does not accept
    (the front end accepts a bare pruning mask, whose effect the selected-only step reproduces) or an
    ``overwrite_with_gradient`` variable (both act on whole tensors).

    Example:
        >>> import keras
        >>> why_not(keras.optimizers.Adam(clipnorm=1.0))
        'clipnorm/global_clipnorm: the norm over k entries is not bit-identical to the one over N'
    """
    profile, reason = profile_of(optimizer)
    if profile is None:
        return reason
    if profile.not_exact:
        return profile.not_exact
    if exact and profile.graph_rounding:
        return f"{type(optimizer).__name__}: {profile.graph_rounding}"
    if exact and reselects and (optimizer.weight_decay or not profile.reselection_exact):
        kept = sorted(set(profile.slots) - set(profile.motion or ())) or sorted(profile.slots)
        return (
            f"reselect_every with {type(optimizer).__name__}: the masked path keeps updating frozen entries' "
            f"slots {kept} with zero gradients, the selected-only path starts newly selected entries from the "
            "initial value"
        )
    if optimizer.clipnorm or optimizer.global_clipnorm:
        return "clipnorm/global_clipnorm: the norm over k entries is not bit-identical to the one over N"
    if optimizer.gradient_accumulation_steps:
        return "gradient_accumulation_steps is set"
    return _why_not_variables(variables, constraint_allowed)


def _why_not_variables(variables, constraint_allowed) -> str:
    for v in variables:
        name = v.path if hasattr(v, "path") else v.name
        constraint = getattr(v, "constraint", None)
        if constraint is not None and not constraint_allowed(constraint):
            return f"variable {name} has a constraint"
        if getattr(v, "overwrite_with_gradient", False):
            return f"variable {name} is overwritten with its gradient"
    return ""
