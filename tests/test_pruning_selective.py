"""Pruning and SelectiveOptimizer in one fit: pruned entries are never selected and stay zero."""

import keras
import numpy as np
import pytest
from conftest import make_data, make_model

import tf_selopt
from tf_selopt.core.schedules import ConstantSparsity, PolynomialDecay
from tf_selopt.keras.pruning import GradualPruning, prunable_variables, prune, pruning_mask

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


pytestmark = pytest.mark.usefixtures("fresh_keras_names")


def compile_selective(model, keep, warmup_steps=4, jit_compile=False, criterion="gradient_sum"):
    optimizer = tf_selopt.SelectiveOptimizer(
        keras.optimizers.Adam(1e-2), criterion=criterion, keep=keep, warmup_steps=warmup_steps, window=2, seed=0
    )
    model.compile(optimizer=optimizer, loss=LOSS, jit_compile=jit_compile)
    return optimizer


def fit(model, x, y, epochs, callbacks=()):
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))


def state(model, optimizer):
    """Per trainable variable: weights, selected mask, kept (not pruned) mask."""
    out = []
    for v, m in zip(model.trainable_variables, optimizer.masks):
        kept = pruning_mask(v)
        kept = np.ones(v.shape, bool) if kept is None else kept.numpy()
        out.append((v.numpy().copy(), m.numpy(), kept))
    return out


def assert_consistent(optimizer, rows, pruned_count):
    selected = sum(int(np.sum(m & k)) for _, m, k in rows)
    pruned = sum(int(np.sum(~k)) for _, _, k in rows)
    assert int(optimizer.selected_count) == selected
    assert int(optimizer.pruned_count) == pruned == pruned_count
    for w, _, k in rows:
        assert np.all(w[~k] == 0.0)
    frozen = optimizer.num_parameters - selected
    assert np.isclose(float(optimizer.frozen_fraction), frozen / optimizer.num_parameters)


# Both kinds in graph mode; under XLA the subclassed model (its Embedding's IndexedSlices gradient densified).
@pytest.mark.parametrize("kind, jit_compile", [("functional", False), ("subclassed", False), ("subclassed", True)])
def test_one_shot_pruned_entries_are_never_selected(kind, jit_compile):
    x, y = make_data(kind)
    model = make_model(kind)
    masks = prune(model, 0.5)
    pruned_count = sum(int(np.sum(~m)) for m in masks.values())
    optimizer = compile_selective(model, keep=0.2, jit_compile=jit_compile)
    fit(model, x, y, epochs=2)  # selection at step 4
    before = state(model, optimizer)
    fit(model, x, y, epochs=2)
    after = state(model, optimizer)
    assert int(optimizer.selections) == 1
    for _, m, k in after:
        assert not np.any(m & ~k)  # no pruned entry selected
    assert int(optimizer.selected_count) == optimizer.k  # enough unpruned entries to select k
    assert_consistent(optimizer, after, pruned_count)
    for (w0, m, _), (w1, _, _) in zip(before, after):
        np.testing.assert_array_equal(w1[~m], w0[~m])  # frozen and pruned: bit-identical
    moved = sum(int(np.sum(w1[m] != w0[m])) for (w0, m, _), (w1, _, _) in zip(before, after))
    assert moved > 0.9 * optimizer.k


def test_gradual_pruning_after_selection_takes_entries_out_of_training():
    x, y = make_data("functional", n=128)
    model = make_model("functional")
    optimizer = compile_selective(model, keep=0.5, warmup_steps=4)
    pruning = GradualPruning(PolynomialDecay(0.0, 0.8, begin_step=2, end_step=20, frequency=3))
    fit(model, x[:80], y[:80], epochs=1, callbacks=[pruning])  # steps 0..4, selection at 4
    before = state(model, optimizer)
    fit(model, x, y, epochs=3, callbacks=[pruning])  # steps 5..28: pruning continues to 80%
    after = state(model, optimizer)
    n_prunable = sum(int(np.prod(v.shape)) for v in prunable_variables(model))
    assert pruning.pruned_count == int(np.floor(0.8 * n_prunable + 0.5))
    assert_consistent(optimizer, after, pruning.pruned_count)
    # Selected once; entries pruned after selection stop training, so fewer than k train now.
    assert int(optimizer.selections) == 1 and int(optimizer.selected_count) < optimizer.k
    for (w0, m, _), (w1, _, k1) in zip(before, after):
        frozen = ~m & k1
        np.testing.assert_array_equal(w1[frozen], w0[frozen])


def test_keep_larger_than_the_unpruned_set_selects_all_unpruned():
    x, y = make_data("sequential")
    model = make_model("sequential")
    masks = prune(model, 0.9)
    unpruned_prunable = sum(int(m.sum()) for m in masks.values())
    optimizer = compile_selective(model, keep=0.5, criterion="magnitude")
    fit(model, x, y, epochs=2)
    rows = state(model, optimizer)
    n_other = optimizer.num_parameters - sum(m.size for m in masks.values())  # biases, BatchNorm
    assert int(optimizer.selected_count) == unpruned_prunable + n_other < optimizer.k
    assert_consistent(optimizer, rows, sum(int(np.sum(~m)) for m in masks.values()))


def test_constant_sparsity_with_selection_in_one_fit_under_xla():
    x, y = make_data("functional", n=128)
    model = make_model("functional")
    optimizer = compile_selective(model, keep=0.1, warmup_steps=3, jit_compile=True)
    pruning = GradualPruning(ConstantSparsity(0.6, begin_step=1, frequency=2))
    fit(model, x, y, epochs=2, callbacks=[pruning])
    rows = state(model, optimizer)
    n_prunable = sum(int(np.prod(v.shape)) for v in prunable_variables(model))
    assert pruning.pruned_count == int(np.floor(0.6 * n_prunable + 0.5))
    assert_consistent(optimizer, rows, pruning.pruned_count)
    assert int(optimizer.selected_count) == optimizer.k
