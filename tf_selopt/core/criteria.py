"""Selection criteria: how a per-parameter score is accumulated and read.

A criterion is a small stateless object with one job, in the spirit of optax's
``GradientTransformation``. For every model variable of shape ``S`` it keeps the
state tensors named in ``slots`` (each of shape ``S``, dtype of the variable,
initialised to zeros by whoever holds the state) and exposes two pure functions:

* ``update(state, grad, weight, count) -> state``: fold one step's gradient into
  the state. ``count`` is the number of gradients in the window *including* this
  one (a float32 scalar >= 1).
* ``score(state, weight, count, seed) -> scores``: read the per-parameter score
  (shape ``S``, float32, larger means "keep optimizing"). ``count`` is the number
  of gradients in the window, ``seed`` an int32 ``[2]`` tensor for stateless RNG.

Criteria whose ``uses_gradients`` is False (``magnitude``, ``random``) have no
window: their score only reads the weights (or a seed) at selection time.

This module imports TensorFlow only, never a Keras front end.

Examples:
    >>> import tensorflow as tf
    >>> c = GradientSum()
    >>> state = {"sum": tf.zeros([2])}
    >>> state = c.update(state, tf.constant([1.0, -3.0]), None, tf.constant(1.0))
    >>> c.score(state, None, tf.constant(1.0), None).numpy().tolist()
    [1.0, 3.0]
"""

from __future__ import annotations

import tensorflow as tf

from tf_selopt.core.checks import is_int
from tf_selopt.core.configurable import Configurable

__all__ = [
    "Criterion",
    "GradientSum",
    "Preconditioned",
    "Fisher",
    "Magnitude",
    "Random",
    "BUILTIN",
    "ONE_SHOT",
    "get",
    "seeds",
]


class Criterion(Configurable):
    """Base class and protocol of a selection criterion (see the module doc).

    Subclasses set ``name``, ``slots`` and ``uses_gradients`` and implement
    ``update`` and ``score``. ``get_config`` returns the constructor arguments;
    ``from_config`` is ``cls(**config)``.
    """

    name: str = ""
    slots: tuple[str, ...] = ()
    uses_gradients: bool = True

    def update(self, state, grad, weight, count):
        raise NotImplementedError

    def score(self, state, weight, count, seed):
        raise NotImplementedError


class _WindowSum(Criterion):
    """Score = the sum over the window of ``term(g)``, kept in the one slot ``slots[0]``."""

    @staticmethod
    def term(grad):
        raise NotImplementedError

    def update(self, state, grad, weight, count):
        slot = self.slots[0]
        return {slot: state[slot] + self.term(grad)}

    def score(self, state, weight, count, seed):
        return tf.cast(state[self.slots[0]], tf.float32)


class GradientSum(_WindowSum):
    """The note's criterion: sum of ``|g|`` over the window (O(N) memory)."""

    name = "gradient_sum"
    slots = ("sum",)
    term = staticmethod(tf.abs)


class Fisher(_WindowSum):
    """Empirical Fisher diagonal: sum of ``g**2`` over the window (FISH masks)."""

    name = "fisher"
    slots = ("sum_sq",)
    term = staticmethod(tf.square)


class Preconditioned(Criterion):
    """The note's preconditioned criterion: score ``= |H g|``.

    Over the window, Welford's online algorithm keeps the mean ``g`` and the
    sum of squared deviations ``m2`` of each parameter's minibatch gradient;
    ``Var(g) = m2 / (count - 1)`` (sample variance, 0 for a one-step window).
    With the per-example gradient covariance ``C = S * Var(g)`` (Mandt et al.
    2017), ``H = 2 S / (N_data C) = 2 / (N_data * (Var(g) + epsilon))``: the
    minibatch size ``S`` cancels, so only ``num_examples`` (``N_data``) is needed.

    Args:
        num_examples: ``N_data``, the number of training examples (int >= 1).
        epsilon: added to the variance so that zero-variance parameters get a
            finite ``H`` (units of gradient squared; default 1e-12). A parameter
            with a constant non-zero gradient then ranks at the top, one with an
            always-zero gradient at the bottom.
    """

    name = "preconditioned"
    slots = ("mean", "m2")

    def __init__(self, num_examples: int, epsilon: float = 1e-12):
        if not is_int(num_examples) or num_examples < 1:
            raise ValueError(
                "Preconditioned: `num_examples` (N_data, the training-set size) must be "
                f"an int >= 1; received num_examples={num_examples!r}."
            )
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"Preconditioned: `epsilon` must be a float > 0; received epsilon={epsilon!r}.")
        self.num_examples = int(num_examples)
        self.epsilon = float(epsilon)

    def update(self, state, grad, weight, count):
        mean, m2 = state["mean"], state["m2"]
        delta = grad - mean
        mean = mean + delta / tf.cast(count, grad.dtype)
        m2 = m2 + delta * (grad - mean)
        return {"mean": mean, "m2": m2}

    def preconditioner(self, state, count):
        """Diagonal ``H`` (shape of the variable, float32, units 1/gradient^2)."""
        m2 = tf.cast(state["m2"], tf.float32)
        var = m2 / tf.maximum(tf.cast(count, tf.float32) - 1.0, 1.0)
        return 2.0 / (float(self.num_examples) * (var + self.epsilon))

    def score(self, state, weight, count, seed):
        mean = tf.cast(state["mean"], tf.float32)
        return tf.abs(self.preconditioner(state, count) * mean)

    def get_config(self):
        return {"num_examples": self.num_examples, "epsilon": self.epsilon}


class Magnitude(Criterion):
    """``|w|`` at selection time (no window)."""

    name = "magnitude"
    uses_gradients = False

    def score(self, state, weight, count, seed):
        return tf.cast(tf.abs(weight), tf.float32)


def _hash32(x):
    """lowbias32 integer hash (C. Wellons) on uint32; wraps identically in TF and XLA."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


class Random(Criterion):
    """Uniform random scores in [0, 1) (multiples of 2**-24) from a counter hash (no window).

    ``score`` hashes each parameter's flat index with the int32 ``[2]`` seed, so a
    run is reproducible, bit-identical with and without XLA (TensorFlow's
    stateless RNG is not), and every (seed, call) pair draws anew.
    """

    name = "random"
    uses_gradients = False

    def score(self, state, weight, count, seed):
        seed = tf.cast(seed, tf.uint32)
        key = _hash32(tf.bitwise.bitwise_xor(_hash32(seed[0] ^ tf.constant(0x9E3779B9, tf.uint32)), seed[1]))
        index = tf.range(tf.size(weight, out_type=tf.int64), dtype=tf.int64)
        bits = _hash32(tf.bitwise.bitwise_xor(tf.cast(index, tf.uint32), key))
        uniform = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * (2.0**-24)
        return tf.reshape(uniform, tf.shape(weight))


BUILTIN = {c.name: c for c in (GradientSum, Preconditioned, Fisher, Magnitude, Random)}


#: Built-in criteria that score without a gradient window (all pruning can use).
ONE_SHOT = tuple(name for name, c in BUILTIN.items() if not c.uses_gradients)


def seeds(seed: int, count: int, call=0) -> list:
    """The ``seed`` argument of ``score`` for each of ``count`` variables: int32 ``[2]`` tensors.

    Variable ``i`` gets ``[seed, call * 65536 + i] mod (2**31 - 1)``. ``call`` (a Python int or an integer
    tensor) is the selection's index: 0 for the first selection, ``calibrate`` and ``prune``, so the three
    score a ``"random"`` criterion alike for the same ``seed``; each reselection draws anew.

    Examples:
        >>> [s.numpy().tolist() for s in seeds(7, 2)]
        [[7, 0], [7, 1]]
        >>> [s.numpy().tolist() for s in seeds(2**31 - 1, 1, call=1)]
        [[0, 65536]]
    """
    streams = tf.cast(call, tf.int64) * 65536 + tf.range(count, dtype=tf.int64)
    pairs = tf.stack([tf.fill([count], tf.constant(seed, tf.int64)), streams], axis=1)
    return tf.unstack(tf.cast(pairs % (2**31 - 1), tf.int32), num=count)


def get(identifier, num_examples=None, one_shot=False) -> Criterion:
    """Return a criterion from a built-in name or a criterion object.

    ``num_examples`` is passed to ``Preconditioned`` when it is named by string.
    Any object with ``slots``, ``uses_gradients``, ``update`` and ``score`` is
    accepted as a user criterion. ``one_shot=True`` (pruning, which has no
    gradient window): only ``ONE_SHOT`` names, or an object with a ``score``
    method and ``uses_gradients`` False.
    """
    if one_shot:
        return _get_one_shot(identifier)
    if isinstance(identifier, str) and identifier in BUILTIN:
        if identifier == Preconditioned.name:
            if num_examples is None:
                raise ValueError(
                    "criterion='preconditioned' needs N_data for H = 2S/(N_data C): pass "
                    "`num_examples` (the training-set size, an int >= 1), or "
                    "criterion=tf_selopt.core.criteria.Preconditioned(num_examples=...)."
                )
            return Preconditioned(num_examples)
        return BUILTIN[identifier]()
    if not isinstance(identifier, type) and all(
        hasattr(identifier, a) for a in ("slots", "uses_gradients", "update", "score")
    ):
        return identifier
    raise ValueError(
        f"Unknown `criterion`={identifier!r}; expected one of {sorted(BUILTIN)} "
        "or an instance of an object with `slots`, `uses_gradients`, `update` and `score`."
    )


def _get_one_shot(criterion) -> Criterion:
    """``get(criterion, one_shot=True)``: a criterion that needs no gradient window."""
    if isinstance(criterion, str):
        if criterion in ONE_SHOT:
            return BUILTIN[criterion]()
        if criterion in BUILTIN:
            raise ValueError(
                f"criterion={criterion!r} scores gradients over a training window; pruning "
                f"supports {ONE_SHOT} or a criterion object with uses_gradients=False."
            )
    elif not isinstance(criterion, type) and callable(getattr(criterion, "score", None)):
        if getattr(criterion, "uses_gradients", False):
            raise ValueError(
                f"criterion={criterion!r} uses gradients (uses_gradients=True); pruning has no "
                f"gradient window: use {ONE_SHOT} or a criterion with uses_gradients=False."
            )
        return criterion
    raise ValueError(
        f"Unknown `criterion`={criterion!r}; expected one of {ONE_SHOT} or an object with a "
        "`score(state, weight, count, seed)` method (see tf_selopt.core.criteria)."
    )
