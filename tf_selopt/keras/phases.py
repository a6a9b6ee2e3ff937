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
further traces.

Examples:
    >>> import keras, numpy as np, tf_selopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> opt = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-3), keep=3, warmup_steps=4, window=2)
    >>> model.compile(optimizer=opt, loss="mse")
    >>> phases = TracePerPhase()
    >>> _ = model.fit(np.ones((16, 4)), np.ones((16, 2)), batch_size=2, callbacks=[phases], verbose=0)
    >>> phases.switches, phases.rebuilds, int(opt.selections)
    (4, 2, 1)
"""

from __future__ import annotations

import keras

from tf_selopt.keras.callbacks import required_selective
from tf_selopt.keras.traces import switching_state

__all__ = ["TracePerPhase"]


class TracePerPhase(keras.callbacks.Callback):
    """During ``fit``, trace ordinary warm-up and restricted steps without the other phases' code.

    Needs a ``tf_selopt.SelectiveOptimizer``. One read of ``iterations`` per
    batch; at the end of ``fit`` the general step is restored. Read-outs:
    ``phase`` (None, ``"warmup"`` or ``"restricted"``: what the current trace holds),
    ``switches`` (changes of the traced phase so far), ``rebuilds`` (train steps built
    for them; the others were reused).
    """

    def __init__(self):
        super().__init__()
        self.rebuilds = 0
        self.switches = 0
        self._optimizer = None

    @property
    def phase(self):
        return None if self._optimizer is None else self._optimizer.phase

    def on_train_begin(self, logs=None):
        self._optimizer = required_selective(self)

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self._optimizer
        if optimizer.model_variables is None:  # not built yet: the first step is traced generally
            return
        step = int(optimizer.iterations.numpy())
        last = step + int(self.model.steps_per_execution) - 1
        self._set_phase(optimizer.plan.ordinary_phase(step, last))

    def on_train_end(self, logs=None):
        self._set_phase(None)

    def _set_phase(self, phase):
        if phase == self.phase:
            return
        with switching_state(self.model) as switch:
            self._optimizer.phase = phase
        self.switches += 1
        self.rebuilds += switch.built
