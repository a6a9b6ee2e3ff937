"""The selection hyperparameters: one frozen, checked object that everything else derives from.

``SelectionConfig`` checks every argument at construction (``ValueError``
naming the argument and the allowed values), resolves the criterion and draws
a seed when none is given. The optimizer front ends take their constructor
arguments, ``get_config`` and read-outs from its fields (``FIELDS``), and the
step schedule from ``plan``. No Keras import.

Examples:
    >>> config = SelectionConfig(keep=0.01, warmup_steps=10, window=5, seed=0)
    >>> config.criterion.name, config.k(1000), config.plan.next_selection(3)
    ('gradient_sum', 10, 10)
    >>> SelectionConfig(keep=0)
    Traceback (most recent call last):
    ...
    ValueError: `keep` must be a fraction in (0, 1] or an int count in [1, N]; received keep=0.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import random

from tf_selopt.core import criteria as criteria_lib
from tf_selopt.core import masks, selection
from tf_selopt.core.checks import is_int
from tf_selopt.core.plan import SelectionPlan

__all__ = ["SelectionConfig", "FIELDS", "ARGUMENTS", "config_arguments", "UPDATES", "BASE_ARGUMENTS", "BASE_DEFAULTS"]

#: How the restricted phase updates (``update``): ``"auto"`` (selected-only wherever it is exact, else
#: masked), ``"selected_only"`` (the inner optimizer on the k selected entries only; an error where it is
#: not exact), ``"masked"`` (the inner optimizer on all N entries with a masked gradient).
UPDATES = ("auto", "selected_only", "masked")

#: Base-optimizer arguments (Keras 3 and tf_keras) the front ends refuse: they belong on the inner optimizer.
BASE_ARGUMENTS = (
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)

#: The base arguments' defaults that are not None / False (Keras 3 and tf_keras alike): a config that carries
#: them (as ``keras.optimizers.Optimizer(...).get_config()`` does) loads.
BASE_DEFAULTS = {"ema_momentum": 0.99}


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """What is selected, how many, and when (see ``tf_selopt.SelectiveOptimizer`` for each argument).

    Fields: ``criterion`` (a name or criterion object; resolved to an object),
    ``keep`` (a fraction in (0, 1] or a count in [1, N]), ``warmup_steps``
    (int >= 0), ``window`` (int in [1, warmup_steps] for gradient criteria),
    ``scope`` (``selection.SCOPES``), ``reselect_every`` (None or an int >=
    window), ``seed`` (None draws one; int in [0, 2**31)), ``num_examples``
    (N_data for ``"preconditioned"``; only used to resolve the criterion), and
    ``granularity`` (``selection.GRANULARITIES``), ``update`` (``UPDATES``) and
    ``preselected`` (True: the masks were given before training, e.g. by
    ``tf_selopt.calibrate``; then ``warmup_steps`` is 0, ``keep`` their count,
    and ``criterion``, ``window`` and ``scope`` describe nothing that runs).
    """

    criterion: object = "gradient_sum"
    keep: float = 0.1
    warmup_steps: int = 100
    window: int = 20
    scope: str = "global"
    reselect_every: int | None = None
    seed: int | None = None
    num_examples: int | None = None
    granularity: str = "parameter"
    update: str = "auto"
    preselected: bool = False

    def __post_init__(self):
        criterion = criteria_lib.get(self.criterion, num_examples=self.num_examples)
        warmup_steps, window, reselect_every = self.warmup_steps, self.window, self.reselect_every
        if not (is_int(warmup_steps) and warmup_steps >= 0):
            raise ValueError(f"`warmup_steps` must be an int >= 0; received warmup_steps={warmup_steps!r}.")
        if not isinstance(self.preselected, bool):
            raise ValueError(f"`preselected` must be True or False; received preselected={self.preselected!r}.")
        if self.preselected and (warmup_steps != 0 or reselect_every is not None or not is_int(self.keep)):
            raise ValueError(
                "Given masks (`preselected`) train from step 0 and are never reselected: warmup_steps=0, "
                "reselect_every=None and `keep` the int count of selected entries; received "
                f"warmup_steps={warmup_steps!r}, reselect_every={reselect_every!r}, keep={self.keep!r}."
            )
        if criterion.uses_gradients and not self.preselected and not (is_int(window) and 1 <= window <= warmup_steps):
            raise ValueError(
                f"`window` must be an int in [1, warmup_steps={warmup_steps}] for criterion "
                f"{getattr(criterion, 'name', criterion)!r}; received window={window!r}."
            )
        if reselect_every is not None:
            low = window if criterion.uses_gradients else 1
            if not (is_int(reselect_every) and reselect_every >= low):
                raise ValueError(
                    f"`reselect_every` must be None or an int >= {low}"
                    + (" (the window, so windows do not overlap)" if low > 1 else "")
                    + f"; received reselect_every={reselect_every!r}."
                )
        masks.check_scope_and_granularity(self.scope, self.granularity, selection.SCOPES, selection.GRANULARITIES)
        if self.update not in UPDATES:
            raise ValueError(f"`update` must be one of {UPDATES}; received update={self.update!r}.")
        keep = self.keep
        if (
            isinstance(keep, bool)
            or not isinstance(keep, numbers.Real)
            or not math.isfinite(keep)
            or keep <= 0
            or (not is_int(keep) and keep > 1)
        ):
            raise ValueError(f"`keep` must be a fraction in (0, 1] or an int count in [1, N]; received keep={keep!r}.")
        seed = self.seed
        if seed is None:
            seed = random.SystemRandom().randrange(2**31 - 1)
        elif not (is_int(seed) and 0 <= seed < 2**31):
            raise ValueError(f"`seed` must be None or an int in [0, 2**31); received seed={seed!r}.")
        set_field = object.__setattr__.__get__(self)
        set_field("criterion", criterion)
        set_field("warmup_steps", int(warmup_steps))
        set_field("reselect_every", None if reselect_every is None else int(reselect_every))
        set_field("seed", int(seed))

    @property
    def window_steps(self) -> int:
        """Gradients accumulated per selection: ``window``, or 0 for criteria that read no gradients."""
        return int(self.window) if self.criterion.uses_gradients and not self.preselected else 0

    @property
    def plan(self) -> SelectionPlan:
        """When windows and selections happen."""
        return SelectionPlan(self.warmup_steps, self.window_steps, self.reselect_every, self.preselected)

    def k(self, num_parameters: int) -> int:
        """Parameters selected at each selection, for ``num_parameters`` trainable parameters."""
        return selection.resolve_count(self.keep, num_parameters)

    def to_dict(self) -> dict:
        """The arguments that rebuild this config (the criterion as an object; ``num_examples`` lives in it)."""
        return {f: getattr(self, f) for f in FIELDS}


#: The fields a front end's ``get_config`` writes and its read-outs expose, in constructor order.
FIELDS = tuple(f.name for f in dataclasses.fields(SelectionConfig) if f.name != "num_examples")
#: The front ends' constructor arguments that go into the config, in signature order, with their defaults
#: (``preselected`` is set by ``masks``, not passed): both signatures must list exactly these
#: (``tests/test_plan.py``), and hand them over with ``config_arguments(locals())``.
ARGUMENTS = {f.name: f.default for f in dataclasses.fields(SelectionConfig) if f.name != "preselected"}


def config_arguments(scope: dict) -> dict:
    """The ``ARGUMENTS`` in a front-end constructor's ``locals()``: what it passes on to the config."""
    return {name: scope[name] for name in ARGUMENTS}
