"""Keras 3: one traced train step per training state, swapped in when a callback changes that state.

``DropFrozenVariables`` (which variables are trainable) and ``TracePerPhase``
(which phase the wrapper's step is traced for, and under XLA the selected-only
layout it is specialized to) change what the train step traces.
``switching_state(model)`` wraps such a change: the step traced before
it is kept under the old state, and afterwards the step for the new state is
installed: reused if that state was seen before, else built (and traced at
its first call). With
reselection the states repeat every cycle, so a fit traces each state once
instead of at every switch. Kept per model, weakly; a recompile starts afresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref

from tf_selopt.keras.callbacks import selective_of

__all__ = ["state_key", "switching_state"]

_TRACES = weakref.WeakKeyDictionary()  # model -> {state_key: train_function}


def state_key(model) -> tuple:
    """What a traced train step depends on that our callbacks change: the ids of the trainable
    variables, in order, the ``SelectiveOptimizer``'s traced phase and its frozen selected-only layout
    (``frozen_layout``; both None without one)."""
    optimizer = selective_of(getattr(model, "optimizer", None))
    phase = None if optimizer is None else optimizer.phase
    layout = getattr(optimizer, "frozen_layout", None)  # the tf_keras front end has none
    return tuple(id(v) for v in model.trainable_variables), phase, layout


@dataclasses.dataclass
class Switch:
    """What ``switching_state`` did: ``built`` a new step (traced at its first call) or ``reused`` a kept one."""

    built: bool = False
    reused: bool = False


@contextlib.contextmanager
def switching_state(model, forget_others=False, keep_current=True):
    """Change the train step's state inside the block; on exit ``model.train_function`` fits the new state.

    Yields a ``Switch``. A model whose step is not traced yet is left alone (``fit`` traces the
    current state). A step that is not one this cache installed (first switch, or after
    ``compile``) starts a new cache. ``forget_others``: drop every kept step (they hold variables
    the block released) and build the new one. ``keep_current=False``: the current step no longer
    fits the state it was traced for (that state changed before the block): do not keep it.
    """
    switch = Switch()
    current = getattr(model, "train_function", None)
    if current is None:
        yield switch
        return
    traces = _TRACES.get(model)
    if traces is None or not any(step is current for step in traces.values()):
        traces = _TRACES[model] = {}
    old = state_key(model)
    if keep_current:
        traces[old] = current
    yield switch
    new = state_key(model)
    if forget_others:
        traces.clear()
        model.train_function = None
    elif new == old:
        return
    if new in traces:
        model.train_function = traces[new]
        switch.reused = True
    else:
        model.make_train_function(force=True)
        traces[new] = model.train_function
        switch.built = True
