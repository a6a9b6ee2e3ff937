"""Keras 3: leave variables with nothing to train out of the gradient computation.

Masks alone save no compute: every gradient is still computed, then zeroed.
``DropFrozenVariables`` marks the variables of ``optimizer.frozen_variables``
non-trainable (Keras 3 ``Variable.trainable``) and rebuilds the model's train
step, so their weight gradients are not computed and backpropagation stops at
the earliest layer that still trains. Before a gradient window and at a
selection step it makes them trainable again (every gradient is needed there)
and drops them again after the selection. The trained entries get the same
updates as with masks alone; a dropped variable's inner-optimizer state (e.g.
Adam moments) is not touched while it is dropped, where masks alone would let
it decay under zero gradients: this matters only if a reselection brings the
variable back. Custom loops use ``optimizer.trainable_subset``.

Each switch swaps the train step (``tf_selopt.keras.traces``): a state seen before
reuses its traced step, a new one is traced once (a single selection: one
trace; with ``reselect_every``, one per distinct dropped set, not one per
period); with ``steps_per_execution=n`` the switch happens at the first
execution that needs it.

Examples:
    >>> import keras, numpy as np, tf_selopt
    >>> keras.utils.set_random_seed(0)  # which whole variables fit the budget depends on the start
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    >>> opt = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-3), keep=18, warmup_steps=2,
    ...                                    window=2, granularity="variable")
    >>> model.compile(optimizer=opt, loss="mse")
    >>> drop = DropFrozenVariables()
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=2, callbacks=[drop], verbose=0)
    >>> int(opt.selected_count), len(opt.frozen_variables), drop.dropped_count
    (18, 2, 2)
"""

from __future__ import annotations

import keras

from tf_selopt.keras.callbacks import required_selective
from tf_selopt.keras.traces import switching_state

__all__ = ["DropFrozenVariables"]


class DropFrozenVariables(keras.callbacks.Callback):
    """During ``fit``, compute no gradient for variables with no entry that trains.

    Needs a ``tf_selopt.SelectiveOptimizer`` (any granularity; ``"variable"`` and
    ``"unit"`` leave whole variables frozen far more often than ``"parameter"``).
    At the end of ``fit`` every variable it dropped is trainable again.

    Read-outs: ``dropped`` (the variables currently left out), ``dropped_count``
    (the most left out at once during the last ``fit``), ``switches`` (changes of the
    dropped set so far), ``rebuilds`` (train steps built for them; the others were reused).
    """

    def __init__(self):
        super().__init__()
        self.dropped = []
        self.dropped_count = 0
        self.rebuilds = 0
        self.switches = 0
        self._needs_all = None

    def on_train_begin(self, logs=None):
        self._optimizer = required_selective(self)
        self._needs_all = None
        self.dropped_count = 0

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self._optimizer
        if optimizer.model_variables is None:  # not built yet: step 0, every variable trains
            return
        steps = int(self.model.steps_per_execution)
        # Masks change only at selection steps, where every variable is needed: the subset can change only
        # when this flag does (one read of `iterations` per batch, no other TF op).
        needs_all = optimizer.needs_every_variable(steps)
        if needs_all == self._needs_all:
            return
        self._needs_all = needs_all
        variables = optimizer.model_variables
        subset = {id(v) for v in optimizer.trainable_subset(variables, steps)}
        self._set_dropped([v for v in variables if id(v) not in subset])
        self.dropped_count = max(self.dropped_count, len(self.dropped))

    def on_train_end(self, logs=None):
        self._set_dropped([])
        self._needs_all = None

    def _set_dropped(self, variables):
        """Make exactly ``variables`` (of the optimizer's) non-trainable; rebuild the step if that changed."""
        if [id(v) for v in variables] == [id(v) for v in self.dropped]:
            return
        with switching_state(self.model) as switch:
            for v in self.dropped:
                v.trainable = True
            for v in variables:
                v.trainable = False
        self.dropped = list(variables)
        self.switches += 1
        self.rebuilds += switch.built
