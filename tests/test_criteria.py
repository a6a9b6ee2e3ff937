"""Tests of tf_selopt.core.criteria: the criterion contract, numerics vs numpy, and ``get``."""

import numpy as np
import pytest
import tensorflow as tf

from tf_selopt.core import criteria

N_DATA = 1000
EPS = 1e-12


class MaxAbs(criteria.Criterion):
    """A user-defined criterion: running max of ``|g|``."""

    name = "max_abs"
    slots = ("max",)

    def update(self, state, grad, weight, count):
        return {"max": tf.maximum(state["max"], tf.abs(grad))}

    def score(self, state, weight, count, seed):
        return tf.cast(state["max"], tf.float32)


FACTORIES = {
    "gradient_sum": criteria.GradientSum,
    "fisher": criteria.Fisher,
    "preconditioned": lambda: criteria.Preconditioned(num_examples=N_DATA),
    "magnitude": criteria.Magnitude,
    "random": criteria.Random,
    "user": MaxAbs,
}
GRADIENT_BASED = ["gradient_sum", "fisher", "preconditioned", "user"]
SHAPES = [(5,), (3, 4), (2, 2, 3)]
DTYPES = [tf.float32, tf.float16, tf.float64]


def run(criterion, grads, weight, seed=(1, 2)):
    """Fold ``grads`` (a sequence of tensors) into fresh zero state, then score; returns (state, score)."""
    state = {slot: tf.zeros_like(weight) for slot in criterion.slots}
    if criterion.uses_gradients:
        for i, g in enumerate(grads):
            state = criterion.update(state, g, weight, tf.constant(i + 1.0))
    count = tf.constant(float(len(grads)) if criterion.uses_gradients else 0.0)
    return state, criterion.score(state, weight, count, tf.constant(seed, tf.int32))


def random_inputs(shape, dtype=tf.float32, window=4, seed=0):
    rng = np.random.default_rng(seed)
    grads = [tf.constant(rng.normal(0.3, 1.0, size=shape), dtype) for _ in range(window)]
    weight = tf.constant(rng.normal(size=shape), dtype)
    return grads, weight


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", GRADIENT_BASED)
def test_update_keeps_state_shapes_and_dtypes(name, shape, dtype):
    criterion = FACTORIES[name]()
    grads, weight = random_inputs(shape, dtype)
    state = {slot: tf.zeros(shape, dtype) for slot in criterion.slots}
    for i, g in enumerate(grads):
        state = criterion.update(state, g, weight, tf.constant(i + 1.0))
        assert set(state) == set(criterion.slots)
        for value in state.values():
            assert tuple(value.shape) == shape and value.dtype == dtype


@pytest.mark.parametrize("name", ["magnitude", "random"])
def test_weight_only_criteria_have_no_window(name):
    criterion = FACTORIES[name]()
    assert criterion.uses_gradients is False and tuple(criterion.slots) == ()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", FACTORIES)
def test_score_shape_dtype_finite_deterministic(name, shape, dtype):
    """Score has the variable's shape, float32, is finite, and repeats exactly."""
    criterion = FACTORIES[name]()
    grads, weight = random_inputs(shape, dtype)
    _, score = run(criterion, grads, weight)
    _, again = run(FACTORIES[name](), grads, weight)
    assert tuple(score.shape) == shape and score.dtype == tf.float32
    assert np.isfinite(score.numpy()).all() and (score.numpy() >= 0).all()
    np.testing.assert_array_equal(score.numpy(), again.numpy())


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_random_depends_on_seed_only(jit):
    """Same seed -> same scores (whatever the weights); another seed -> other scores; all in [0, 1)."""
    criterion = criteria.Random()

    def scores(weight, seed):
        fn = lambda w, s: criterion.score({}, w, tf.constant(0.0), s)  # noqa: E731
        return (tf.function(fn, jit_compile=True) if jit else fn)(weight, tf.constant(seed, tf.int32))

    weight = tf.zeros([4, 5])
    a, b, c = scores(weight, (3, 7)), scores(tf.ones([4, 5]), (3, 7)), scores(weight, (3, 8))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.any(a.numpy() == c.numpy())
    assert ((a.numpy() >= 0) & (a.numpy() < 1)).all() and np.unique(a.numpy()).size == 20


@pytest.mark.parametrize("name", list(FACTORIES))
def test_xla_matches_eager(name):
    """The whole window + score under tf.function(jit_compile=True) equals eager."""
    criterion = FACTORIES[name]()
    grads, weight = random_inputs((3, 4), window=5, seed=1)
    compiled = tf.function(lambda g, w: run(criterion, tf.unstack(g), w), jit_compile=True)
    state_x, score_x = compiled(tf.stack(grads), weight)
    state_e, score_e = run(criterion, grads, weight)
    np.testing.assert_allclose(score_x.numpy(), score_e.numpy(), rtol=1e-6)
    for slot in criterion.slots:
        np.testing.assert_allclose(state_x[slot].numpy(), state_e[slot].numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, slot, fn", [("gradient_sum", "sum", np.abs), ("fisher", "sum_sq", np.square)])
def test_sum_criteria_match_numpy(name, slot, fn):
    grads, weight = random_inputs((3, 4), window=7, seed=2)
    state, score = run(FACTORIES[name](), grads, weight)
    expected = fn(np.stack([g.numpy() for g in grads]).astype(np.float64)).sum(axis=0)
    np.testing.assert_allclose(state[slot].numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(score.numpy(), state[slot].numpy())


@pytest.mark.parametrize("window", [2, 3, 10, 40])
def test_preconditioned_matches_numpy(window):
    """Welford mean / sample variance vs numpy (ddof=1), and score = 2|mean| / (N_data (var + eps))."""
    criterion = criteria.Preconditioned(num_examples=N_DATA)
    grads, weight = random_inputs((4, 6), window=window, seed=window)
    state, score = run(criterion, grads, weight)
    g = np.stack([x.numpy() for x in grads]).astype(np.float64)
    mean, var = g.mean(axis=0), g.var(axis=0, ddof=1)
    np.testing.assert_allclose(state["mean"].numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["m2"].numpy() / (window - 1), var, rtol=1e-5)
    h = criterion.preconditioner(state, tf.constant(float(window))).numpy()
    np.testing.assert_allclose(h, 2.0 / (N_DATA * (var + EPS)), rtol=1e-5)
    expected = 2.0 * np.abs(mean) / (N_DATA * (var + EPS))
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-5, atol=1e-5 * expected.max())


@pytest.mark.parametrize("window", [1, 4])
def test_preconditioned_zero_variance(window):
    """Constant non-zero gradient: finite, huge score 2|g|/(N eps); always-zero gradient: score 0."""
    rng = np.random.default_rng(3)
    grads = [tf.constant([0.1, 0.0, rng.normal(), -2.5], tf.float32) for _ in range(window)]
    _, score = run(criteria.Preconditioned(num_examples=N_DATA), grads, tf.zeros([4]))
    s = score.numpy()
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s[[0, 3]], 2.0 * np.array([0.1, 2.5]) / (N_DATA * EPS), rtol=1e-6)
    assert s[1] == 0.0
    if window > 1:
        assert s[0] > 1e6 * s[2]


def test_magnitude_is_abs_weight():
    weight = tf.constant([[-1.5, 0.0], [-0.0, 2.25]], tf.float16)
    _, score = run(criteria.Magnitude(), [], weight)
    np.testing.assert_array_equal(score.numpy(), [[1.5, 0.0], [0.0, 2.25]])
    assert not np.signbit(score.numpy()).any()


@pytest.mark.parametrize(
    "name, cls",
    [
        ("gradient_sum", criteria.GradientSum),
        ("fisher", criteria.Fisher),
        ("magnitude", criteria.Magnitude),
        ("random", criteria.Random),
    ],
)
def test_get_builtin_by_name(name, cls):
    assert type(criteria.get(name)) is cls


def test_get_preconditioned_and_objects():
    c = criteria.get("preconditioned", num_examples=77)
    assert type(c) is criteria.Preconditioned and c.num_examples == 77 and c.epsilon == EPS
    user = MaxAbs()
    assert criteria.get(user) is user
    assert criteria.Preconditioned.from_config(c.get_config()).get_config() == {"num_examples": 77, "epsilon": EPS}


@pytest.mark.parametrize("identifier", ["nope", "GradientSum", "", None, 3, object()])
def test_get_unknown_raises(identifier):
    with pytest.raises(ValueError, match="Unknown `criterion`"):
        criteria.get(identifier)


def test_get_one_shot_is_the_pruning_resolution():
    """One home for resolving a criterion: pruning asks ``get(..., one_shot=True)`` (no gradient window)."""
    assert criteria.ONE_SHOT == ("magnitude", "random")
    assert type(criteria.get("random", one_shot=True)) is criteria.Random
    user = criteria.Magnitude()
    assert criteria.get(user, one_shot=True) is user
    for name in ("gradient_sum", "fisher", "preconditioned"):
        with pytest.raises(ValueError, match="training window"):
            criteria.get(name, one_shot=True)
    with pytest.raises(ValueError, match="uses gradients"):
        criteria.get(MaxAbs(), one_shot=True)
    with pytest.raises(ValueError, match="Unknown `criterion`"):
        criteria.get("nope", one_shot=True)


def test_get_preconditioned_without_num_examples_raises():
    with pytest.raises(ValueError, match="num_examples"):
        criteria.get("preconditioned")


@pytest.mark.parametrize("num_examples", [0, -3, 2.5, True, "100"])
@pytest.mark.parametrize("via", ["class", "get"])
def test_preconditioned_invalid_num_examples(via, num_examples):
    with pytest.raises(ValueError, match="num_examples"):
        if via == "class":
            criteria.Preconditioned(num_examples=num_examples)
        else:
            criteria.get("preconditioned", num_examples=num_examples)


@pytest.mark.parametrize("epsilon", [0.0, -1e-3, "1e-12", None])
def test_preconditioned_invalid_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        criteria.Preconditioned(num_examples=10, epsilon=epsilon)
