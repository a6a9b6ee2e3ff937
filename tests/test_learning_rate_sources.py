"""Keras' learning-rate setter tests, run on every update path of ``SelectiveOptimizer``.

Adapted from keras 3.15.1, ``keras/src/optimizers/optimizer_test.py`` (``test_callable_learning_rate``,
``test_setting_lr_to_callable_untracks_lr_var``) and ``keras/src/callbacks/learning_rate_scheduler_test.py``
(``test_schedule_dependent_on_previous_learning_rate``): the learning rate is set to a float, a
``LearningRateSchedule`` or a callable after ``build``, or after the selection, on

* ``masked_restore``: the masked path that restores frozen entries after each update (AdamW's decay);
* ``masked_zeroed_motion``: the masked path where zeroed momentum keeps frozen entries in place (Adam);
* ``selected_only``: the inner optimizer on the k selected entries (AdamW: the decay reads the rate too);
* ``given_masks``: masks given before training, on the selected-only path.

After the selection the trained entries equal, bit for bit, a plain Keras optimizer of the same class
and learning rate whose gradient is zero outside them; frozen entries keep their values at the selection
bit for bit. Eagerly, in a ``tf.function`` and in ``model.fit``.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BATCH, fit, make_data, make_model
from test_keras_contract import assert_bits
from test_selected_only import SHAPES, gradients, model_variables

import tf_selopt

O = keras.optimizers  # noqa: E741

#: Selection of 12 of the 47 entries of ``test_selected_only.SHAPES`` at step 2 (from a 2-step window).
SELECTION = dict(keep=12, warmup_steps=2, window=2, seed=0)
STEPS = 6
GIVEN = [np.random.default_rng(i).uniform(size=s) < 0.3 for i, s in enumerate(SHAPES)]

ADAMW = functools.partial(O.AdamW, weight_decay=0.1)
#: path -> (inner optimizer for a learning rate, SelectiveOptimizer arguments, update_path, restores_frozen)
PATHS = {
    "masked_restore": (ADAMW, dict(SELECTION, update="masked"), "masked", True),
    "masked_zeroed_motion": (O.Adam, dict(SELECTION, update="masked"), "masked", False),
    "selected_only": (ADAMW, dict(SELECTION, update="selected_only"), "selected_only", False),
    "given_masks": (O.Adam, dict(masks=GIVEN, update="selected_only"), "selected_only", False),
}

#: How the learning rate is set: ``optimizer.learning_rate = RATES[kind][i]()``, a new object for each
#: optimizer; ``i`` 0 after ``build``, 1 after the selection (Keras refuses a float once a schedule or
#: callable is set).
RATES = {
    "float": (lambda: 0.05, lambda: 0.02),
    "schedule": (
        lambda: O.schedules.ExponentialDecay(0.05, 1, 0.6),
        lambda: O.schedules.PiecewiseConstantDecay([4], [0.04, 0.01]),
    ),
    "callable": (lambda: lambda: 0.03, lambda: lambda: 0.02),
}


def masked(grads, masks):
    return [tf.where(m, g, tf.zeros_like(g)) for g, m in zip(grads, masks)]


class Run:
    """A ``SelectiveOptimizer`` on ``path`` and the plain optimizer it must equal, stepped on the same gradients
    (``apply``: how each step runs, e.g. ``tf.function``); the plain one's gradient is zero outside the
    trained entries from the selection on."""

    def __init__(self, path, apply=None):
        make, kwargs, self.update_path, self.restores_frozen = PATHS[path]
        self.optimizer, self.plain = tf_selopt.SelectiveOptimizer(make(0.01), **kwargs), make(0.01)
        self.variables, self.reference = model_variables(), model_variables()
        self.optimizer.build(self.variables)
        self.plain.build(self.reference)
        self.masks = GIVEN if "masks" in kwargs else None
        self.at_selection = [v.numpy().copy() for v in self.variables] if self.masks else None
        self.apply = apply or (lambda f: f)
        self._wrap()

    def _wrap(self):
        self.step = self.apply(lambda grads: self.optimizer.apply(grads, self.variables))
        self.plain_step = self.apply(lambda grads: self.plain.apply(grads, self.reference))

    def set_learning_rate(self, kind, i):
        self.optimizer.learning_rate = RATES[kind][i]()
        self.plain.learning_rate = RATES[kind][i]()
        self._wrap()  # a traced step keeps the learning rate it was traced with, as Keras' does: trace again

    def __call__(self, grads):
        """One step of each; returns whether the selection has been made."""
        before = [v.numpy().copy() for v in self.variables]
        self.step(grads)
        if self.masks is None and int(self.optimizer.selections) == 1:
            self.masks = [self.optimizer.trains(i).numpy() for i in range(len(self.variables))]
            self.at_selection = before
        self.plain_step(grads if self.masks is None else masked(grads, self.masks))
        return self.masks is not None

    def run(self, kind, steps=STEPS):
        """``steps`` steps; the learning rate set after ``build`` and again after the selection."""
        self.set_learning_rate(kind, 0)
        set_after_selection = False
        for grads in gradients(steps):
            if self(grads) and not set_after_selection:
                self.set_learning_rate(kind, 1)
                set_after_selection = True
        return self

    def check(self, restores_frozen=None):
        restores_frozen = self.restores_frozen if restores_frozen is None else restores_frozen
        assert (self.optimizer.update_path, self.optimizer.restores_frozen) == (self.update_path, restores_frozen)
        assert int(self.optimizer.iterations) == int(self.plain.iterations)
        assert float(self.optimizer.learning_rate) == float(self.plain.learning_rate)
        for v, r, m, s in zip(self.variables, self.reference, self.masks, self.at_selection):
            assert_bits(v.numpy()[m], r.numpy()[m], "trained entries")
            assert_bits(v.numpy()[~m], s[~m], "frozen entries")
        assert sum(int(np.sum(m)) for m in self.masks) == int(self.optimizer.selected_count) > 0


@pytest.mark.parametrize("kind", sorted(RATES))
@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_trained_entries_step_with_the_learning_rate_set_after_build_and_after_the_selection(path, kind):
    Run(path).run(kind).check()


def test_in_a_tf_function():
    """Given masks (selected-only; a step that also selects traces for long)."""
    Run("given_masks", apply=tf.function).run("schedule").check()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_loss_scale_step_count_and_weight_decay_set_after_the_selection_are_the_ones_used(path):
    run = Run(path)
    changed = False
    for grads in gradients(STEPS):
        if run(grads) and not changed:
            for optimizer in (run.optimizer.inner_optimizer, run.plain):
                optimizer.loss_scale_factor = 4.0
                optimizer.iterations.assign(50)
                optimizer.weight_decay = 0.3
            changed = True
    run.check(restores_frozen=run.update_path == "masked")  # frozen entries would decay: restored
    assert int(run.optimizer.iterations) == 50 + STEPS - (1 if path == "given_masks" else 3)


def test_setting_a_schedule_untracks_only_the_inner_learning_rate_variable():
    """optimizer_test.py::test_setting_lr_to_callable_untracks_lr_var: the inner optimizer's learning-rate
    variable leaves ``variables``; the k-sized state keeps its layout."""
    optimizer = tf_selopt.SelectiveOptimizer(O.Adam(0.001), **SELECTION)
    optimizer.build(model_variables())
    inner, before, variable = optimizer.inner_optimizer, optimizer.variables, optimizer.learning_rate
    assert optimizer.update_path == "selected_only" and len(inner.variables) == 2 + 2 * len(SHAPES)
    optimizer.learning_rate = O.schedules.PolynomialDecay(optimizer.learning_rate, 4)
    assert len(inner.variables) == 1 + 2 * len(SHAPES)
    assert [id(v) for v in optimizer.variables] == [id(v) for v in before if v is not variable]


class MaskedGradients(keras.Sequential):
    """The reference for ``fit``: Keras' train step with a plain optimizer and the gradient zero outside
    ``masks``."""

    def __init__(self, layers, masks):
        super().__init__(layers)
        self.gradient_masks = tuple(tf.constant(m) for m in masks)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True), training=True)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(masked(grads, self.gradient_masks), self.trainable_weights)
        return {"loss": loss}


@pytest.mark.usefixtures("same_graph_rewrites")
def test_in_model_fit():
    """Given masks (selected-only): ``LearningRateScheduler`` halves the float rate each epoch
    (learning_rate_scheduler_test.py::test_schedule_dependent_on_previous_learning_rate), then a schedule
    is set (``fit`` traces its step again when asked: ``make_train_function(force=True)``)."""
    x, y = make_data("sequential")
    model = make_model("sequential")
    rng = np.random.default_rng(0)
    masks = [rng.uniform(size=v.shape) < 0.3 for v in model.trainable_variables]
    reference = MaskedGradients(make_model("sequential").layers, masks)
    start = [v.numpy().copy() for v in model.trainable_variables]
    optimizer = tf_selopt.SelectiveOptimizer(O.Adam(0.04), masks=masks)
    plain = O.Adam(0.04)
    for m, opt in ((model, optimizer), (reference, plain)):
        halve = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2)
        fit(m, opt, x, y, epochs=2, callbacks=[halve])
        assert np.float32(opt.learning_rate) == np.float32(0.01)
        opt.learning_rate = RATES["schedule"][1]()
        m.make_train_function(force=True)
        fit(m, opt, x, y, epochs=1)
    assert optimizer.update_path == "selected_only" and int(optimizer.iterations) == 3 * len(x) // BATCH
    for v, r, s, m in zip(model.trainable_variables, reference.trainable_variables, start, masks):
        assert_bits(v.numpy()[m], r.numpy()[m], "trained entries")
        assert_bits(v.numpy()[~m], s[~m], "frozen entries")
