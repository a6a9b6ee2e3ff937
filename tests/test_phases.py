"""TracePerPhase: per-phase traces of the train step give bit-identical training."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import INNER

import tf_selopt
from tf_selopt.core.config import SelectionConfig
from tf_selopt.core.plan import SelectionPlan

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def data(n=240, nan_batch=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    if nan_batch is not None:
        x[nan_batch * 8] = np.nan  # that batch's loss and gradients are NaN: a skipped step
    return x, y


def train(callbacks, inner, steps_per_execution, reselect_every, nan_batch):
    model = make_model()
    optimizer = tf_selopt.SelectiveOptimizer(
        INNER[inner](), keep=0.25, warmup_steps=6, window=3, reselect_every=reselect_every, seed=0
    )
    model.compile(optimizer=optimizer, loss=LOSS, steps_per_execution=steps_per_execution)
    x, y = data(nan_batch=nan_batch)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)
    return model, optimizer


# Three two-valued factors, every pair of values once (a pairwise design: 4 runs, not 8): Adam and AdamW (restore-free
# and restore paths), 1 and 3 steps per execution, no reselection and reselection every 7 steps.
@pytest.mark.parametrize(
    "inner, steps_per_execution, reselect_every",
    [("adam", 1, None), ("adam", 3, 7), ("adamw", 1, 7), ("adamw", 3, None)],
)
def test_bit_identical_to_the_general_step(inner, steps_per_execution, reselect_every):
    runs = []
    for callbacks in ([], [tf_selopt.TracePerPhase()]):
        runs.append((*train(callbacks, inner, steps_per_execution, reselect_every, nan_batch=12), callbacks))
    (model_a, opt_a, _), (model_b, opt_b, (phases,)) = runs
    assert int(opt_a.skipped_steps) == int(opt_b.skipped_steps) == 1
    assert int(opt_a.iterations) == int(opt_b.iterations) == 29  # 30 batches, one skipped
    assert int(opt_a.selections) == int(opt_b.selections) == (1 if reselect_every is None else 4)
    # selected-only Adam/AdamW without reselection: the selection step releases the warm-up state, traced per
    # phase or not
    released = reselect_every is None
    assert opt_a.warmup_state_released == opt_b.warmup_state_released == released
    assert phases.released_bytes == (opt_a.released_bytes if released else 0)
    assert len(opt_a.variables) == len(opt_b.variables)
    for a, b in zip(model_a.trainable_variables + opt_a.variables, model_b.trainable_variables + opt_b.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=getattr(a, "path", ""))
    assert phases.phase is None and opt_b.phase is None  # the general step is back after fit
    assert phases.switches >= (4 if steps_per_execution == 1 else 2)  # at least into and out of "restricted"
    # warm-up (1 step with 3 per call), restricted; the general step traced first is reused at the end
    assert phases.rebuilds == (2 if steps_per_execution == 1 else 1)


def restricted_graph(model):
    """The graph of the XLA-compiled step ``fit`` runs inside the current ``model.train_function`` (Keras 3's
    ``one_step_on_data``, a ``tf.function`` held in the train function's closure)."""
    one_step = inspect.getclosurevars(model.train_function).nonlocals["one_step_on_data"]
    while not hasattr(one_step, "_list_all_concrete_functions"):  # Keras' wrapper around the tf.function
        one_step = next(f for f in inspect.getclosurevars(one_step).nonlocals.values() if callable(f))
    (concrete,) = one_step._list_all_concrete_functions()
    return concrete.graph


def ops_of(graph, types):
    """Ops of ``types`` in ``graph`` and the branches of its conditionals."""
    found = [op for op in graph.get_operations() if op.type in types]
    for op in graph.get_operations():
        if op.type in ("If", "StatelessIf"):
            for branch in ("then_branch", "else_branch"):
                found += ops_of(graph._get_function(op.get_attr(branch).name).graph, types)
    return found


def test_under_xla_the_restricted_step_gathers_and_scatters_each_variables_own_entries():
    """With ``jit_compile=True`` the restricted phase's step is traced for the selection's layout: variable i's
    gradient and value gathers and its scatter have exactly its k_i selected entries (k in all, not k per
    variable), the step reads no warm-up, window or selection state, and the weights equal the masked path's
    compiled the same way bit for bit."""
    x, y = data()
    runs = {}
    for update in ("masked", "auto"):
        model = make_model()
        optimizer = tf_selopt.SelectiveOptimizer(
            INNER["adam"](), keep=0.25, warmup_steps=6, window=3, seed=0, update=update
        )
        model.compile(optimizer=optimizer, loss=LOSS, jit_compile=True)
        seen = {}

        class Grab(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None, seen=seen, optimizer=optimizer):
                if optimizer.phase == "restricted" and "graph" not in seen:
                    seen["graph"], seen["layout"] = restricted_graph(self.model), optimizer.frozen_layout

        callbacks = [tf_selopt.TracePerPhase(), Grab()] if update == "auto" else []
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)
        runs[update] = model, optimizer, seen
    (masked, _, _), (model, optimizer, seen) = runs["masked"], runs["auto"]
    assert optimizer.update_path == "selected_only" and optimizer.frozen_layout is None  # thawed at the end
    for a, b in zip(model.trainable_variables, masked.trainable_variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    counts = [int(np.sum(np.asarray(optimizer.trains(i)))) for i in range(4)]
    assert seen["layout"] == ((0, *np.cumsum(counts).tolist()),) and sum(counts) == optimizer.k
    graph = seen["graph"]
    gathered = [op.inputs[1].shape.as_list() for op in ops_of(graph, {"GatherV2"})]
    assert gathered == [[c] for c in counts] * 2  # the gradients, then the values
    scattered = [op.inputs[1].shape.as_list() for op in ops_of(graph, {"ResourceScatterNdUpdate"})]
    assert scattered == [[c, len(v.shape)] for c, v in zip(counts, model.trainable_variables)]
    read = {v.name.split("/")[-1] for v in graph.variables}
    assert not read & {"selections:0", "window_count:0"} and not any("score" in name for name in read)


def test_under_xla_a_layout_changed_mid_phase_is_traced_for():
    """Another callback moves the selection in the restricted phase (here: two entries from the first kernel to
    the second): TracePerPhase sees the held layout change before the step and traces for the new one, so the
    run equals, bit for bit, the same run whose step reads the layout in-graph (no callback)."""
    x, y = data()
    runs = []
    for phases in ([], [tf_selopt.TracePerPhase()]):
        model = make_model()
        optimizer = tf_selopt.SelectiveOptimizer(INNER["adam"](), keep=0.25, warmup_steps=6, window=3, seed=0)
        model.compile(optimizer=optimizer, loss=LOSS, jit_compile=True)
        layouts = []

        class Move(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None, optimizer=optimizer, layouts=layouts):
                if batch == 15:
                    masks = [np.asarray(optimizer.trains(i)).copy() for i in range(4)]
                    masks[0].flat[np.flatnonzero(masks[0])[:2]] = False
                    masks[2].flat[np.flatnonzero(~masks[2])[:2]] = True
                    optimizer._selective.path.updater.select([tf.constant(m) for m in masks], first=False)
                    layouts.append(optimizer.frozen_layout)  # a selection thaws it

            def on_train_batch_end(self, batch, logs=None, optimizer=optimizer, layouts=layouts):
                if batch in (14, 15):
                    layouts.append(optimizer.frozen_layout)

        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=[Move(), *phases], verbose=0)
        runs.append((model, layouts, phases))
    (reference, in_graph, _), (model, layouts, (phases,)) = runs
    assert in_graph == [None, None, None]
    before, thawed, after = layouts
    assert thawed is None and before != after and after[0][-1] == before[0][-1]  # moved, not more
    assert phases.rebuilds == 4  # warm-up, restricted, restricted for the new layout, the general step at the end
    for a, b in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_phases_switch_where_expected():
    plan = SelectionPlan(warmup_steps=6, window=3, reselect_every=7)
    # windows: 4..6 (selection 6), 11..13 (13), 18..20 (20)
    expected = {
        (0, 0): "warmup",
        (0, 3): "warmup",
        (3, 3): "warmup",
        (3, 4): None,
        (4, 4): None,
        (6, 6): None,
        (5, 7): None,
        (7, 7): "restricted",
        (7, 10): "restricted",
        (10, 11): None,
        (14, 17): "restricted",
        (17, 18): None,
    }
    for (first, last), phase in expected.items():
        assert plan.ordinary_phase(first, last) == phase, (first, last)
    magnitude = SelectionConfig(criterion="magnitude", keep=0.5, warmup_steps=6, seed=0).plan  # no window: step 6
    assert [magnitude.ordinary_phase(s, s) for s in (5, 6, 7, 100)] == ["warmup", None, "restricted", "restricted"]


def test_a_step_traced_for_one_phase_refuses_to_run_in_another():
    model = make_model()
    optimizer = tf_selopt.SelectiveOptimizer(INNER["adam"](), keep=0.25, warmup_steps=6, window=3, seed=0)
    model.compile(optimizer=optimizer, loss=LOSS)
    x, y = data(n=16)
    model.train_on_batch(x[:8], y[:8])  # builds; step 0 done
    before = [v.numpy().copy() for v in model.trainable_variables + optimizer.variables]
    optimizer.phase = "restricted"  # wrong: step 1 is a warm-up step
    tf_selopt.keras.pruning.retrace_train_step(model)
    with pytest.raises(tf.errors.InvalidArgumentError, match="is not an ordinary step of phase"):
        model.train_on_batch(x[8:], y[8:])
    for b, a in zip(before, model.trainable_variables + optimizer.variables):
        np.testing.assert_array_equal(b, np.asarray(a))


def test_needs_a_selective_optimizer():
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(), loss=LOSS)
    x, y = data(n=16)
    with pytest.raises(ValueError, match="TracePerPhase needs a model compiled with tf_selopt.SelectiveOptimizer"):
        model.fit(x, y, batch_size=8, callbacks=[tf_selopt.TracePerPhase()], verbose=0)
