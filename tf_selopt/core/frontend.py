"""What the Keras 3 and tf_keras optimizer front ends share: ``SelectiveFrontEnd``.

The front ends (``tf_selopt.keras.optimizer``, ``tf_selopt.keras2.optimizer``)
differ only in how they create variables, call the inner optimizer and which
framework (de)serializes (four class attributes: ``_serialize``,
``_deserialize``, ``_serialize_inner``, ``_deserialize_inner``). Everything a
user reads off a ``SelectiveOptimizer`` and everything it forwards to the
inner optimizer is here, computed from ``tf_selopt.core.selective.Selective``
and its ``SelectionConfig``. No Keras import.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tf_selopt.core.config import FIELDS, SelectionConfig
from tf_selopt.core.plan import PHASES
from tf_selopt.core.selective import Selective

__all__ = ["SelectiveFrontEnd", "MASKS_FROM_WEIGHTS", "new_selective", "inner_attribute"]

#: ``masks`` of an optimizer saved with given masks, as ``from_config`` rebuilds it: the masks (and the
#: selected-only state) come from the weights loaded after ``build`` (a ``.keras`` file, ``set_weights``,
#: a checkpoint). A step before they are loaded raises, as nothing would train.
MASKS_FROM_WEIGHTS = "from_weights"

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SelectionConfig)}
#: Arguments that given masks replace: they must keep their defaults.
_SCHEDULE_ARGUMENTS = ("keep", "warmup_steps", "window", "reselect_every")


def new_selective(masks=None, **arguments) -> Selective:
    """The ``Selective`` of a front end's constructor arguments (``SelectionConfig``'s fields), checked.

    ``masks``: None (a criterion selects during training), a list of bool arrays (one per trainable variable,
    in ``model.trainable_variables`` order, e.g. from ``tf_selopt.calibrate``: these entries train from
    step 0; ``keep`` becomes their count), or ``MASKS_FROM_WEIGHTS`` (``from_config``).
    """
    if masks is None:
        return Selective(SelectionConfig(**arguments))
    if isinstance(masks, str) and masks == MASKS_FROM_WEIGHTS:
        return Selective(SelectionConfig(**{**arguments, "preselected": True}))
    if isinstance(masks, (str, bytes, dict, np.ndarray, tf.Tensor, tf.Variable)) or not hasattr(masks, "__len__"):
        raise ValueError(
            "`masks` must be None or a list of bool arrays, one per trainable variable in "
            f"model.trainable_variables order (e.g. from tf_selopt.calibrate); received {type(masks).__name__}."
        )
    given = []
    for i, mask in enumerate(masks):
        array = np.asarray(mask)
        if array.dtype != np.bool_:
            raise ValueError(f"`masks`[{i}] must be a bool array (True = trains); received dtype {array.dtype}.")
        given.append(array)
    count = int(sum(int(m.sum()) for m in given))
    if count == 0:
        raise ValueError("`masks` select no entry (no True anywhere): nothing would train.")
    changed = [a for a in _SCHEDULE_ARGUMENTS if arguments.get(a, _DEFAULTS[a]) != _DEFAULTS[a]]
    if changed:
        raise ValueError(
            f"With `masks` the selection is given and trains from step 0: do not pass {changed} "
            f"(received {', '.join(f'{a}={arguments[a]!r}' for a in changed)})."
        )
    config = SelectionConfig(**{**arguments, "keep": count, "warmup_steps": 0, "preselected": True})
    return Selective(config, masks=given)


def _selective_attribute(name, doc):
    """A read-only property: ``self._selective.<name>``."""
    return property(lambda self: getattr(self._selective, name), doc=doc)


def inner_attribute(name):
    """A property forwarded to ``self.inner_optimizer.<name>`` (read and set)."""

    def set_attribute(self, value):
        setattr(self.inner_optimizer, name, value)

    return property(
        lambda self: getattr(self.inner_optimizer, name), set_attribute, doc=f"The inner optimizer's ``{name}``."
    )


class SelectiveFrontEnd:
    """The part of ``SelectiveOptimizer`` both front ends share (a mixin before the framework's optimizer class);
    the front end sets ``self._selective`` and ``self.inner_optimizer``.

    Each field of ``SelectionConfig`` (``FIELDS``: ``criterion``, ``keep``,
    ``warmup_steps``, ...) is a read-only property; ``phase`` says which phase
    the next traced step is specialized for (see ``tf_selopt.keras.phases``).
    """

    _phase = None
    _selective = None  # set by the front end's constructor

    @property
    def phase(self):
        """None (the general step: every phase in-graph) or one of ``PHASES`` ("warmup", "restricted"):
        the next traced step runs only that phase's ordinary steps (an in-graph assertion guards it).
        Set it before the step is traced; ``tf_selopt.keras.phases.TracePerPhase`` does this in ``fit``."""
        return self._phase

    @phase.setter
    def phase(self, phase):
        if phase is not None and phase not in PHASES:
            raise ValueError(f"`phase` must be None or one of {PHASES}; received phase={phase!r}.")
        self._phase = phase

    plan = _selective_attribute("plan", "The ``SelectionPlan``: when windows and selections happen (ints, tensors).")
    k = _selective_attribute("k", "Parameters selected at each selection (int; set by ``build``).")
    num_parameters = _selective_attribute("num_parameters", "N, the number of trainable parameters (int; ``build``).")
    model_variables = _selective_attribute("variables", "The model variables built for, in build order (or None).")
    skipped_steps = _selective_attribute("skipped_steps", "int64 variable: steps skipped for a NaN/Inf gradient.")
    selections = _selective_attribute("selections", "int64 variable: selections done.")
    window_count = _selective_attribute("window_count", "float32 variable: gradients in the current window.")

    def trains(self, i):
        """Bool tensor: the entries of ``model_variables[i]`` that train (selected and not pruned)."""
        return self._selective.trains(i)

    @property
    def masks(self):
        """One bool variable per trainable variable, in build order (True = selected). With given masks on the
        selected-only path (``update_path``), which holds no N-sized state, bool tensors derived from the
        selected positions instead (read-only)."""
        selective = self._selective
        if selective.variables is not None and selective.masks is None:
            return [selective.selection_mask(i) for i in range(len(selective.variables))]
        return selective.masks

    def _sync_release(self):
        """Bring what this object holds in line with state the step released in-graph (a front end's hook)."""

    @property
    def scores(self):
        """float32 variables: the criterion's scores at the last selection (None once released)."""
        self._sync_release()
        return self._selective.scores

    @property
    def criterion_state(self):
        self._sync_release()
        return self._selective.criterion_state

    def window_scores(self) -> list:
        """The criterion's scores over the window so far (float32 tensors of the variables' shapes), seeded as
        the next selection is: what it will rank. During a window, after ``build``."""
        self._sync_release()
        return self._selective.window_scores()

    @property
    def selected_count(self):
        """Parameters that train (int64 scalar): exactly ``k`` after selection
        (fewer only if pruning left fewer than ``k``; at most ``k`` for
        ``granularity`` "unit" / "variable"), N - pruned before."""
        return self._selective.selected_count()

    @property
    def pruned_count(self):
        """Parameters held at zero by pruning (int64 scalar; 0 without pruning)."""
        return self._selective.pruned_count()

    @property
    def update_path(self):
        """How the restricted phase updates: ``"selected_only"`` (the inner optimizer on the k selected
        entries only) or ``"masked"`` (on all N entries, masked gradient); None before ``build``. Why a
        masked path runs: ``update_path_reason``."""
        return None if self._selective.path is None else self._selective.path.name

    _update_path_reason = None

    @property
    def update_path_reason(self):
        """Why the restricted phase does not take the selected-only path ("" when it does; None before the
        Keras 3 front end is built), e.g. "MyAdam overrides update_step (its update or slots may differ from
        Adam's)" (``tf_selopt.keras.profiles.why_not``)."""
        return self._update_path_reason

    @property
    def masked_reason(self):
        """Another name for ``update_path_reason``."""
        return self._update_path_reason

    @property
    def restores_frozen(self):
        """Whether frozen entries are restored after each inner update (masked path); False when the inner
        optimizer leaves them exactly in place (their momentum is zeroed at selection, see
        ``tf_selopt.core.update_paths.MaskedZeroedMotion``) and on the selected-only path (frozen entries are
        never written). Read after ``build``."""
        return self._selective.path.restores_frozen

    @property
    def frozen_variables(self):
        """The model variables with no entry that trains (all frozen or pruned), in build order ([] before
        ``build``)."""
        if self._selective.variables is None:
            return []
        return [self._selective.variables[i] for i in self._selective.frozen_indices()]

    def needs_every_variable(self, steps=1) -> bool:
        """Whether one of the next ``steps`` steps (from ``iterations`` on) needs every
        variable's gradient: a warm-up, gradient-window or selection step (True before ``build``)."""
        if self._selective.variables is None:
            return True
        step = int(self.iterations.numpy())
        return self._selective.plan.needs_every_variable(step, step + steps - 1)

    def trainable_subset(self, variables, steps=1):
        """The ``variables`` whose gradients the next ``steps`` steps need (from ``iterations`` on).

        All of them during warm-up, a gradient window and at a selection step
        (and if none trains); otherwise all but ``frozen_variables``. Computing gradients for this
        subset only gives the same updates of the trained entries (the inner
        optimizer's state of a left-out variable is not touched meanwhile).
        Custom loop::

            subset = optimizer.trainable_subset(model.trainable_variables)
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, subset), subset))

        (A ``tf.function`` taking ``subset`` as an argument traces once per subset.)
        """
        variables = list(variables)
        if self.needs_every_variable(steps):
            return variables
        frozen = {id(v) for v in self.frozen_variables}
        subset = [v for v in variables if id(v) not in frozen]
        return subset or variables  # nothing trains: keep the step (and its counter) going

    @property
    def frozen_fraction(self):
        """Fraction of parameters that do not train, pruned ones included (float32 in [0, 1])."""
        return 1.0 - tf.cast(self.selected_count, tf.float32) / float(self.num_parameters)

    # ------------------------------------------------- forwarded to the inner
    learning_rate = inner_attribute("learning_rate")

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Forwarded to the inner optimizer (which applies the weight decay); call before ``build``."""
        self.inner_optimizer.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    def finalize_variable_values(self, var_list):
        """The inner optimizer's (with ``use_ema``: the model takes the moving averages), frozen entries
        excepted: they keep their values bit for bit (``tf_selopt.core.update_paths.MaskedRestore``)."""
        self._sync_release()
        finalize_inner = lambda: self.inner_optimizer.finalize_variable_values(var_list)  # noqa: E731
        if self._selective.path is None:
            return finalize_inner()
        self._selective.path.finalize(finalize_inner, int(tf.convert_to_tensor(self.selections)) > 0)

    def get_weights(self):
        """The values of ``variables`` (own state, then the inner optimizer's), as numpy arrays."""
        return [v.numpy() for v in self.variables]

    def set_weights(self, weights):
        """Set ``variables`` (own state, then the inner optimizer's) from ``get_weights``' list; checked
        (count, then every shape) before any variable changes."""
        if self._selective.variables is None:
            raise ValueError("Call `optimizer.build(trainable_variables)` before `set_weights`.")
        weights = list(weights)
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"`weights` must hold {len(variables)} arrays (optimizer.variables); received {len(weights)}."
            )
        for variable, weight in zip(variables, weights):
            if tuple(variable.shape) != tuple(weight.shape):
                raise ValueError(
                    f"`weights`: optimizer variable {getattr(variable, 'path', variable.name)} has shape "
                    f"{tuple(variable.shape)}, received {tuple(weight.shape)}."
                )
        for variable, weight in zip(variables, weights):
            variable.assign(weight)

    # --------------------------------------------------------- serialization
    def get_config(self):
        """``name``, the serialized ``inner`` optimizer and the ``SelectionConfig`` fields."""
        config = self._selective.config.to_dict()
        config["criterion"] = self._serialize(config["criterion"])
        return {"name": self.name, "inner": self._serialize_inner(self.inner_optimizer), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config.setdefault("update", "masked")  # a config without `update` has the masked path's layout
        if config.pop("preselected", False):  # given masks: they are in the weights, loaded after build
            config["masks"] = MASKS_FROM_WEIGHTS
        config["inner"] = cls._deserialize_inner(config["inner"], custom_objects=custom_objects)
        config["criterion"] = cls._deserialize(config["criterion"], custom_objects=custom_objects)
        return cls(**config)


def _config_field(name):
    return property(lambda self: getattr(self._selective.config, name), doc=f"``{name}`` (see ``SelectionConfig``).")


for _name in FIELDS:
    setattr(SelectiveFrontEnd, _name, _config_field(_name))
