"""Keras 3: trace the train step for one phase at a time, so ordinary steps carry only their update.

A ``SelectiveOptimizer`` step decides in-graph which phase it is in (warm-up,
gradient window, selection, restricted), and every ``tf.cond`` of that decision
costs each step (``benchmarks/overhead.py``). ``TracePerPhase`` reads the step
counter before each batch and, while every step of the coming execution is an
ordinary warm-up or an ordinary restricted step, swaps in a train step traced
with only the NaN guard and that phase's update; around windows and selections
it swaps the general step back. Results are bit-identical to training without it
(tested). An in-graph assertion stops a step traced for one phase from running
in another. Each phase's step is traced once per ``fit`` and reused at later
switches (``tf_selopt.keras.traces``): with ``reselect_every`` the cycles cost no
further traces. Without it, on the selected-only path, the warm-up's N-sized
state is released at the selection: by the selection step itself outside XLA
and ``tf.distribute`` strategies, otherwise at the switch to the restricted
phase (``SelectiveOptimizer.release_warmup_state``), which then drops the steps
traced before.

Under XLA (``jit_compile``) the guarding assertion is compiled away (XLA ignores
assertions); and in the restricted phase of a run without ``reselect_every`` (no
selection follows) the step is traced for the selection's layout
(``SelectiveOptimizer.freeze_selected_layout``): each variable gathers and
scatters exactly its selected entries instead of k from each variable. The
layout is part of the traced state (``tf_selopt.keras.traces.state_key``): each
batch of that phase reads the held layout (a few ints) and retraces if it
changed (e.g. weights loaded by another callback); a step that still runs with
a stale layout writes nothing to the model variables
(``tf_selopt.core.selected_only``). At the end of ``fit`` the layout is thawed
and the general step restored.

Examples:
    >>> import keras, numpy as np, tf_selopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> opt = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-3), keep=3, warmup_steps=4, window=2)
    >>> model.compile(optimizer=opt, loss="mse")
    >>> phases = TracePerPhase()
    >>> _ = model.fit(np.ones((16, 4)), np.ones((16, 2)), batch_size=2, callbacks=[phases], verbose=0)
    >>> phases.switches, phases.rebuilds, int(opt.selections)
    (4, 2, 1)
    >>> opt.warmup_state_released, phases.released_bytes  # Adam's m and v, scores, window sums of 10 params
    (True, 160)
"""

from __future__ import annotations

import keras

from tf_selopt.core import _compat
from tf_selopt.keras.callbacks import required_selective
from tf_selopt.keras.traces import switching_state

__all__ = ["TracePerPhase"]


class TracePerPhase(keras.callbacks.Callback):
    """During ``fit``, trace ordinary warm-up and restricted steps without the other phases' code.

    Needs a ``tf_selopt.SelectiveOptimizer``. One read of ``iterations`` per
    batch; at the end of ``fit`` the general step is restored.

    ``release_warmup_state``: at the switch to the restricted phase on the
    selected-only path without ``reselect_every``, if the selection step did not
    release the warm-up state itself (under XLA or a strategy), call the
    optimizer's ``release_warmup_state(keep_scores)`` and drop every step traced
    before (they hold the released variables), so the warm-up's N-sized state
    leaves memory. ``keep_scores`` is passed to the optimizer at ``on_train_begin``
    too. ``released_bytes`` says how much was released. Under ``jit_compile`` the
    restricted phase of a run without ``reselect_every`` is traced for the
    selection's layout (``SelectiveOptimizer.frozen_layout`` while it runs). Read-outs:
    ``phase`` (None, ``"warmup"`` or ``"restricted"``: what the current trace holds),
    ``switches`` (changes of the traced phase so far), ``rebuilds`` (train steps built
    for them; the others were reused).
    """

    def __init__(self, release_warmup_state=True, keep_scores=False):
        super().__init__()
        if not isinstance(release_warmup_state, bool) or not isinstance(keep_scores, bool):
            raise ValueError(
                "`release_warmup_state` and `keep_scores` must be True or False; received "
                f"release_warmup_state={release_warmup_state!r}, keep_scores={keep_scores!r}."
            )
        self.release_warmup_state = release_warmup_state
        self.keep_scores = keep_scores
        self.released_bytes = 0
        self.rebuilds = 0
        self.switches = 0
        self._optimizer = None
        self._frozen_layout = None  # the layout this callback froze last (None: none)

    @property
    def phase(self):
        return None if self._optimizer is None else self._optimizer.phase

    def on_train_begin(self, logs=None):
        self._optimizer = required_selective(self)
        if self.keep_scores and hasattr(self._optimizer, "keep_scores"):
            self._optimizer.keep_scores = True

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self._optimizer
        if optimizer.model_variables is None:  # not built yet: the first step is traced generally
            return
        step = int(optimizer.iterations.numpy())
        last = step + int(self.model.steps_per_execution) - 1
        phase = optimizer.plan.ordinary_phase(step, last)
        if phase == "restricted" and self.release_warmup_state and optimizer.warmup_state_released:
            self.released_bytes = optimizer.released_bytes  # released by the selection step itself
        if phase == "restricted" and self._can_release(optimizer):
            with switching_state(self.model, forget_others=True) as switch:
                optimizer.release_warmup_state(self.keep_scores)
                optimizer.phase = phase
                self._set_layout(phase)
            self.released_bytes = optimizer.released_bytes
            _compat.return_freed_memory()  # the old traces are gone: the released variables with them
            self.switches += 1
            self.rebuilds += switch.built
            return
        self._set_phase(phase)

    def _can_release(self, optimizer) -> bool:
        """Whether the switch releases something: the warm-up state, or the scores the selection step kept
        for another callback (``SelectionMonitor``) when ``keep_scores`` is False."""
        if optimizer.warmup_state_released:
            return self.release_warmup_state and not self.keep_scores and optimizer.scores is not None
        return (
            self.release_warmup_state
            and optimizer.update_path == "selected_only"
            and optimizer.reselect_every is None
            and int(optimizer.selections.numpy()) > 0
        )

    def on_train_end(self, logs=None):
        self._set_phase(None)

    def _set_phase(self, phase):
        optimizer = self._optimizer
        old = self.phase
        if phase == old and optimizer.frozen_layout == self._wanted_layout(phase):
            return
        # a layout frozen here and thawed or changed since (a selection): the current step was traced for it
        stale = optimizer.frozen_layout != self._frozen_layout
        with switching_state(self.model, keep_current=not stale) as switch:
            optimizer.phase = phase
            self._set_layout(phase)
        self.switches += phase != old
        self.rebuilds += switch.built

    def _wanted_layout(self, phase):
        """The selected-only layout the step of ``phase`` is traced for: under XLA, in the restricted phase of a
        run without ``reselect_every`` (no selection follows), the held one (an eager read of the offsets,
        each batch of that phase: a traced step must never outlive its layout); else None."""
        optimizer = self._optimizer
        if phase != "restricted" or not self.model.jit_compile or optimizer.update_path != "selected_only":
            return None
        if optimizer.reselect_every is not None:
            return None
        if optimizer.frozen_layout is None and int(optimizer.selections.numpy()) == 0:  # frozen: selected
            return None
        return optimizer.held_selected_layout()

    def _set_layout(self, phase):
        if self._wanted_layout(phase) is None:
            self._optimizer.thaw_selected_layout()
        else:
            self._optimizer.freeze_selected_layout()
        self._frozen_layout = self._optimizer.frozen_layout
