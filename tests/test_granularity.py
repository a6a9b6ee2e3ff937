"""Granularity ("parameter", "unit", "variable") and dropping fully frozen variables from the gradient computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from conftest import LOSS, fit, make_data, make_model

import tf_selopt
from tf_selopt.core.selection import group_size, select
from tf_selopt.keras.freezing import DropFrozenVariables
from tf_selopt.keras2 import SelectiveOptimizer as TfKerasSelectiveOptimizer

GROUPED = ("unit", "variable")


pytestmark = pytest.mark.usefixtures("fresh_keras_names")


def selective(granularity, **kwargs):
    defaults = dict(criterion="gradient_sum", keep=0.3, warmup_steps=4, window=3, seed=0, granularity=granularity)
    return tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), **(defaults | kwargs))


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


# --------------------------------------------------------- numpy reference
def ref_select_groups(scores, k, scope, granularity, kept=None):
    """numpy reference of grouped ``select``: float64 group sums of kept scores, greedy fill, best first."""
    kept = kept or [None] * len(scores)
    group_scores, costs = [], []
    for s, m in zip(scores, kept):
        m = np.ones(s.shape, bool) if m is None else m
        view = s.astype(np.float64).reshape(group_size(s.shape, granularity), -1)
        kept_view = m.reshape(view.shape)
        group_scores.append(np.where(kept_view, view, 0.0).sum(axis=0).astype(np.float32))
        costs.append(kept_view.sum(axis=0))

    def greedy(g, c, budget):
        taken, total = np.zeros(g.size, bool), 0
        for i in np.argsort(-g, kind="stable"):  # NaN last, ties: lowest index first
            if c[i] > 0 and total + c[i] <= budget:
                taken[i], total = True, total + c[i]
        return taken

    if scope == "global":
        taken = np.split(
            greedy(np.concatenate(group_scores), np.concatenate(costs), k),
            np.cumsum([g.size for g in group_scores])[:-1],
        )
    else:
        shares = tf_selopt.core.selection.per_variable_counts([s.size for s in scores], k)
        taken = [greedy(g, c, k_i) for g, c, k_i in zip(group_scores, costs, shares)]
    return [
        np.broadcast_to(t[None, :], (group_size(s.shape, granularity), t.size)).reshape(s.shape)
        for t, s in zip(taken, scores)
    ]


def assert_group_structure(masks, granularity):
    """Unit masks are constant along every axis but the last; variable masks are all-or-nothing."""
    for m in masks:
        if granularity == "variable" or m.ndim == 0:
            assert m.all() or not m.any()
        else:
            flat = m.reshape(-1, m.shape[-1])
            assert (flat == flat[:1]).all()


# -------------------------------------------------------------- selection
CASES = [
    ([(3, 4), (4,), (2, 2)], 7),
    ([(3, 3, 2, 5), (5,), (10, 3), (3,)], 40),
    ([(6,), (2, 3, 4), ()], 9),
]


@pytest.mark.parametrize("shapes, k", CASES)
@pytest.mark.parametrize("scope, granularity", [("global", "unit"), ("per_variable", "unit"), ("global", "variable")])
def test_grouped_select_matches_numpy_greedy_and_counts_exactly(shapes, k, scope, granularity):
    rng = np.random.default_rng(k)
    scores = [rng.random(s).astype(np.float32) for s in shapes]
    scores[0].flat[:2] = [np.nan, 0.0]  # NaN ranks last; a zero is a plain score
    kept = [rng.random(s) > 0.3 for s in shapes]
    for kept_arg in (None, kept):
        expected = ref_select_groups(scores, k, scope, granularity, kept_arg)
        tf_kept = None if kept_arg is None else [tf.constant(m) for m in kept_arg]
        got = [m.numpy() for m in select([tf.constant(s) for s in scores], k, scope, granularity, tf_kept)]
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
        assert_group_structure(got, granularity)
        selected = sum(int((g & (True if kept_arg is None else m)).sum()) for g, m in zip(got, kept))
        assert selected == sum(int((e & (True if kept_arg is None else m)).sum()) for e, m in zip(expected, kept))
        assert selected <= k


def test_grouped_select_fills_k_exactly_when_a_small_group_is_left():
    """Kernel columns of 4 and bias entries of 1: the greedy fill reaches k exactly."""
    scores = [tf.constant(np.arange(12, dtype=np.float32).reshape(4, 3)), tf.constant([0.5, 0.1, 0.2])]
    masks = select(scores, 6, "global", "unit")
    # columns sum to 18, 22, 26: column 2 (4) fits, column 1 (4) does not, column 0 neither, then 2 bias entries.
    np.testing.assert_array_equal(masks[0].numpy(), np.tile([False, False, True], (4, 1)))
    np.testing.assert_array_equal(masks[1].numpy(), [True, False, True])


@pytest.mark.parametrize("granularity", GROUPED)
def test_grouped_select_under_xla_matches_eager(granularity):
    rng = np.random.default_rng(3)
    scores = [tf.constant(rng.random(s).astype(np.float32)) for s in [(3, 3, 2, 8), (8,), (72, 10), (10,)]]
    compiled = tf.function(lambda s: select(s, 300, "global", granularity), jit_compile=True)(scores)
    for c, e in zip(compiled, select(scores, 300, "global", granularity)):
        np.testing.assert_array_equal(c.numpy(), e.numpy())


# ------------------------------------------------------ optimizer under fit
# Every pair of (model kind, granularity, XLA) values once: 4 runs, not 8.
@pytest.mark.parametrize(
    "kind, granularity, jit_compile",
    [
        ("sequential", "unit", False),
        ("sequential", "variable", True),
        ("functional", "unit", True),
        ("functional", "variable", False),
    ],
)
def test_fit_selects_whole_groups_exactly_and_freezes_them_bit_for_bit(kind, granularity, jit_compile):
    x, y = make_data(kind)
    model = make_model(kind)
    optimizer = selective(granularity)
    optimizer.keep_scores = True  # read after the selection
    fit(model, optimizer, x, y, epochs=2, jit_compile=jit_compile)  # selection at step 4
    masks = [m.numpy() for m in optimizer.masks]
    expected = ref_select_groups([s.numpy() for s in optimizer.scores], optimizer.k, "global", granularity)
    for m, e in zip(masks, expected):
        np.testing.assert_array_equal(m, e)
    assert_group_structure(masks, granularity)
    assert int(optimizer.selected_count) == sum(int(m.sum()) for m in masks) <= optimizer.k
    before = weights(model)
    fit(model, optimizer, x, y, epochs=2, jit_compile=jit_compile)
    after = weights(model)
    for b, a, m in zip(before, after, masks):
        np.testing.assert_array_equal(a[~m], b[~m])
    assert sum(int(np.sum(a[m] != b[m])) for b, a, m in zip(before, after, masks)) > 0.9 * sum(m.sum() for m in masks)


def test_unit_granularity_counts_only_unpruned_entries():
    """Pruned entries are never selected: a unit's cost and score are those of its unpruned entries."""
    x, y = make_data("functional")
    model = make_model("functional")
    tf_selopt.prune(model, 0.5)
    optimizer = selective("unit", keep=0.4)
    optimizer.keep_scores = True  # read after the selection
    fit(model, optimizer, x, y, epochs=2)
    kept = [
        None if tf_selopt.keras.pruning.pruning_mask(v) is None else tf_selopt.keras.pruning.pruning_mask(v).numpy()
        for v in model.trainable_variables
    ]
    expected = ref_select_groups([s.numpy() for s in optimizer.scores], optimizer.k, "global", "unit", kept)
    for m, e in zip(optimizer.masks, expected):
        np.testing.assert_array_equal(m.numpy(), e)
    trains = sum(int(np.sum(e & (True if k is None else k))) for e, k in zip(expected, kept))
    assert int(optimizer.selected_count) == trains <= optimizer.k
    assert int(optimizer.pruned_count) > 0


# ------------------------------------------------------ dropping variables
class RecordingOptimizer(tf_selopt.SelectiveOptimizer):
    """Records, each time the train step is traced, how many variables the optimizer receives."""

    def apply(self, grads, trainable_variables=None):
        self.received = getattr(self, "received", []) + [len(list(trainable_variables))]
        super().apply(grads, trainable_variables)


class TrainableCounts(keras.callbacks.Callback):
    """Step -> number of trainable variables of the model when the step starts (after DropFrozenVariables)."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def on_train_batch_begin(self, batch, logs=None):
        self.counts[int(self.model.optimizer.iterations)] = len(self.model.trainable_variables)


# Every granularity in graph mode; under XLA (two compiles of ~10 s each per case) one representative:
# which variables end up frozen is the granularity's business (covered here in graph mode and, under XLA,
# by test_fit_selects_whole_groups_exactly_and_freezes_them_bit_for_bit); what XLA adds is the retrace and
# recompile without the frozen variables, the same code for every granularity ("variable": most dropped).
@pytest.mark.usefixtures("same_graph_rewrites")
@pytest.mark.parametrize(
    "granularity, jit_compile",
    [(g, False) for g in ("parameter", "unit", "variable")] + [pytest.param("variable", True, marks=pytest.mark.slow)],
)
def test_dropping_frozen_variables_equals_the_elementwise_path(granularity, jit_compile):
    x, y = make_data("sequential")
    keep = 0.3 if granularity != "parameter" else 0.05
    reference, model = make_model("sequential"), make_model("sequential")
    ref_opt = selective(granularity, keep=keep)
    fit(reference, ref_opt, x, y, epochs=3, jit_compile=jit_compile)
    opt = RecordingOptimizer(
        keras.optimizers.Adam(1e-2),
        criterion="gradient_sum",
        keep=keep,
        warmup_steps=4,
        window=3,
        seed=0,
        granularity=granularity,
    )
    drop = DropFrozenVariables()
    fit(model, opt, x, y, epochs=3, callbacks=[drop], jit_compile=jit_compile)
    for a, b in zip(ref_opt.masks, opt.masks):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(weights(reference), weights(model)):  # trained entries: same updates; frozen: unmoved
        np.testing.assert_array_equal(a, b)
    n = len(model.trainable_variables)
    frozen = len(opt.frozen_variables)
    assert frozen > 0 and drop.dropped_count == frozen
    # traced with all variables, then without the frozen ones
    assert set(opt.received[:-1]) == {n} and opt.received[-1] == n - frozen
    assert drop.switches == 2 and drop.rebuilds == 1  # dropped (built), then restored at the end (kept step)
    assert len(model.trainable_variables) == n


@pytest.mark.usefixtures("same_graph_rewrites")
def test_reselection_brings_dropped_variables_back():
    x, y = make_data("sequential", n=96)
    reference, model = make_model("sequential"), make_model("sequential")
    kwargs = dict(keep=0.3, warmup_steps=4, window=3, reselect_every=6)  # selections at steps 4 and 10
    ref_opt, opt = selective("variable", **kwargs), selective("variable", **kwargs)
    fit(reference, ref_opt, x[:80], y[:80], epochs=1)  # steps 0..4
    fit(model, opt, x[:80], y[:80], epochs=1, callbacks=[DropFrozenVariables()])
    first_frozen = len(opt.frozen_variables)
    counts, drop = TrainableCounts(), DropFrozenVariables()
    fit(reference, ref_opt, x[:96], y[:96], epochs=1)  # steps 5..10
    fit(model, opt, x[:96], y[:96], epochs=1, callbacks=[drop, counts])
    n = len(model.trainable_variables)
    # steps 5..7 without the frozen variables; the window (8, 9) and the selection step (10) with all
    assert counts.counts == {5: n - first_frozen, 6: n - first_frozen, 7: n - first_frozen, 8: n, 9: n, 10: n}
    assert first_frozen > 0 and int(opt.selections) == 2
    for a, b in zip(ref_opt.masks, opt.masks):  # same masks at the reselection
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(weights(reference), weights(model)):
        np.testing.assert_array_equal(a, b)


def test_custom_loop_with_trainable_subset_equals_the_elementwise_loop():
    x, y = make_data("sequential", n=128)
    models = [make_model("sequential"), make_model("sequential")]
    optimizers = [selective("variable"), selective("variable")]
    subset_sizes = []
    for s in range(8):
        xb, yb = x[s * 16 : (s + 1) * 16], y[s * 16 : (s + 1) * 16]
        for use_subset, model, optimizer in zip((False, True), models, optimizers):
            variables = model.trainable_variables
            if use_subset:
                variables = optimizer.trainable_subset(variables)
                subset_sizes.append(len(variables))
            with tf.GradientTape() as tape:
                loss = LOSS(yb, model(xb, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    n, frozen = len(models[0].trainable_variables), len(optimizers[1].frozen_variables)
    assert frozen > 0 and subset_sizes == [n] * 5 + [n - frozen] * 3  # steps 0..4 all (warm-up, selection)
    for a, b in zip(weights(models[0]), weights(models[1])):
        np.testing.assert_array_equal(a, b)


def test_drop_callback_needs_a_selective_optimizer():
    x, y = make_data("sequential")
    model = make_model("sequential")
    model.compile(optimizer=keras.optimizers.Adam(), loss=LOSS)
    with pytest.raises(ValueError, match="SelectiveOptimizer"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[DropFrozenVariables()])


# ------------------------------------------------ arguments, config, layout
BAD_GRANULARITY = [
    (dict(granularity="layer"), r"`granularity` must be one of \('parameter', 'unit', 'variable'\)"),
    (dict(granularity=None), "`granularity` must be one of"),
    (dict(granularity="Unit"), "`granularity` must be one of"),
    (dict(granularity="variable", scope="per_variable"), r"`granularity`='variable'.*scope='global'"),
]


@pytest.mark.parametrize("front_end", ["keras", "tf_keras"])
@pytest.mark.parametrize("kwargs, match", BAD_GRANULARITY)
def test_bad_granularity_raises_naming_the_argument(front_end, kwargs, match):
    with pytest.raises(ValueError, match=match):
        if front_end == "keras":
            tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(), **kwargs)
        else:
            TfKerasSelectiveOptimizer(tf_keras.optimizers.Adam(), **kwargs)


def test_k_below_the_smallest_group_raises_at_build_and_creates_nothing():
    model = make_model("sequential")  # smallest variable: the 3-entry output bias
    optimizer = selective("variable", keep=2)
    before = len(optimizer.variables)
    with pytest.raises(ValueError, match=r"`keep`=2 gives k=2 parameters, fewer than the smallest variable \(3"):
        optimizer.build(model.trainable_variables)
    assert len(optimizer.variables) == before and not optimizer.built


@pytest.mark.parametrize("granularity", ["parameter", "unit", "variable"])
def test_config_round_trip_and_unchanged_checkpoint_layout(granularity):
    optimizer = selective(granularity)
    config = optimizer.get_config()
    assert config["granularity"] == granularity
    assert tf_selopt.SelectiveOptimizer.from_config(config).get_config() == config
    tk = TfKerasSelectiveOptimizer(
        tf_keras.optimizers.Adam(), keep=0.3, warmup_steps=4, window=3, seed=0, granularity=granularity
    )
    assert TfKerasSelectiveOptimizer.from_config(tk.get_config()).granularity == granularity
    model = make_model("sequential")
    optimizer.build(model.trainable_variables)
    plain = selective("parameter")
    plain.build(model.trainable_variables)

    def layout(o):  # the k-sized slots are named after the wrapper's (unique) name
        return [(v.name.replace(o.name, "<name>"), v.shape, v.dtype) for v in o.variables]

    assert layout(optimizer) == layout(plain)


@pytest.mark.parametrize("granularity", GROUPED)
def test_both_front_ends_select_the_same_groups(granularity):
    """Identical variables and gradients: identical masks, scores and weights, bit for bit."""
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 1, 4), (4,), (5, 4), (4,)]
    init = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(9)]
    kwargs = dict(keep=0.3, warmup_steps=4, window=3, reselect_every=3, seed=0, granularity=granularity)
    fronts = []
    for make_var, optimizer in (
        (
            lambda v, i: tf.Variable(v, name=f"w{i}"),
            TfKerasSelectiveOptimizer(tf_keras.optimizers.Adam(1e-2), **kwargs),
        ),
        (
            lambda v, i: keras.Variable(v, name=f"w{i}"),
            tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), **kwargs),
        ),
    ):
        variables = [make_var(v, i) for i, v in enumerate(init)]
        for step in grads:
            optimizer.apply_gradients(zip([tf.constant(g) for g in step], variables))
        fronts.append((optimizer, variables))
    (a, va), (b, vb) = fronts
    assert int(a.selections) == int(b.selections) == 2
    assert int(a.selected_count) == int(b.selected_count) <= a.k
    assert_group_structure([m.numpy() for m in a.masks], granularity)
    for x, y in zip(va + a.masks + a.scores, vb + b.masks + b.scores):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
