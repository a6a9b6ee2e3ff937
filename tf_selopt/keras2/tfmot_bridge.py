"""tfmot bridge: a global magnitude plan, carried out by tfmot's per-layer pruning (tf_keras models).

tfmot prunes each layer to its own target sparsity; the note ranks all weights
together. This module computes the global plan (which weights of the whole model
have the smallest ``|w|``) and turns it into one tfmot schedule per layer, so that
tfmot's own per-layer pruning ends at exactly the planned counts:

1. ``global_magnitude_plan``: the weights tfmot would prune (its prune registry,
   or a layer's ``get_prunable_weights``) are ranked together by ``|w|`` with the
   project's exact top-k (``tf_selopt.core.selection``: ties to the lowest flat index,
   the flat index running over the layers in ``model.layers`` order, nested
   models depth-first, then over each layer's prunable weights). ``N`` weights at
   sparsity ``s`` lose exactly ``floor(s * N + 0.5)``, as in ``tf_selopt.prune``.
   Each layer's target is its share of the pruned weights.
2. ``prune_low_magnitude_global``: wraps the layers with a non-zero target in
   ``tfmot.sparsity.keras.prune_low_magnitude`` with a per-layer
   ``ConstantSparsity`` or ``PolynomialDecay``. Train with the callbacks of
   ``pruning_callbacks`` (``UpdatePruningStep``, optionally ``PruningSummaries``)
   and finish with ``strip_pruning`` (tfmot's, re-exported here). The result is
   an ordinary tf_keras model: compile it with any tf_keras optimizer, also
   ``tf_selopt.keras2.SelectiveOptimizer``, and train it in one ``fit``.

How the per-layer float is chosen. tfmot (``pruning_impl.Pruning._update_mask``)
keeps ``k = max(round(float32(n) * (1 - sparsity)), 1)`` weights of a tensor of
``n`` weights, in float32 with round-half-to-even, where ``sparsity`` is the
schedule's float32 value (``ConstantSparsity``: the target; ``PolynomialDecay``:
exactly ``final_sparsity`` from ``end_step`` on). Each target here is a float
for which that formula gives exactly the planned count: ``pruned / n`` when it
does (it does for every count of tensors below 2**22 weights), else a float32
value found by bisection. Limits of what tfmot can express: it keeps at least
one weight per tensor, so the plan keeps each tensor's largest ``|w|`` (the plan
is the global top-k under that constraint; it differs from the plain global
top-k only when a tensor would lose all its weights); a layer with several
prunable tensors (RNN, MultiHeadAttention) gets one sparsity for all of them;
and above 2**22 kept weights float32 steps by 0.5, so round-half-to-even skips
some counts. When no float gives a layer's exact count, the nearest reachable
count is planned instead (``LayerPlan.pruned`` says which), with a warning.

Ties. tfmot keeps every weight with ``|w| >=`` the k-th largest ``|w|`` (plus
that one): on ties at the threshold it keeps **more than k**, and when the k-th
largest is 0 it keeps every weight. With trained float weights and a
non-decreasing schedule this does not happen in practice (exact zeros come from
earlier masks, which zeroed no more weights than the current target; this holds
also when an optimizer freezes masked weights at 0), but it can with hand-set or
quantized weights; the final count is then below the plan (or, with more exact
zeros than planned, the zeros stay). The counts are guaranteed for weights
without ties at the final pruning step. Which weights end up pruned is decided
by tfmot from the weights at its pruning steps, not by the plan: the plan fixes
how many per layer.

Structured pruning (``block_size=``, ``sparsity_m_by_n=``, passed to tfmot's
``prune_low_magnitude``; ``pruning_impl.Pruning._maybe_update_block_mask``):

* **Blocks**: ``block_size=(r, c)`` means what it means in ``tf_selopt.prune``
  (``tf_selopt.core.sparsity``): ``r`` consecutive output units times ``c``
  consecutive inputs, so ``(1, 4)`` is LiteRT's float block of four consecutive
  inputs. tfmot's own ``block_size`` runs over the kernel as stored,
  ``(rows, cols) = (inputs, outputs)``: it is given ``(c, r)``. tfmot pools
  ``|w|`` per block (``AVG``, which ranks as the sum for blocks of one size)
  and applies its count formula to the pooled tensor: it keeps
  ``max(round(blocks * (1 - s)), 1)`` whole blocks. So the plan counts
  **blocks**: the ``B`` blocks of all pruned tensors are ranked together by
  summed ``|w|`` and exactly ``floor(s * B + 0.5)`` are pruned (each tensor
  keeps its best block); ``LayerPlan.pruned`` and ``size`` stay in weights
  (blocks times ``r * c``). tfmot accepts only rank-2 weights for blocks
  (Dense, Embedding, RNN kernels; not Conv), squeezes them first (a dimension of
  1 breaks it) and pads partial blocks at the edges; the bridge refuses all three
  before building anything: every pruned tensor must be 2-D, without a
  dimension of 1, and divide into whole blocks.
* **N:M**: ``sparsity_m_by_n=(m, n)`` (``m`` zeros in every ``n`` consecutive
  inputs, per output unit; tfmot's convention and ``tf_selopt.prune``'s).
  tfmot decides this per tensor, not by count: it computes the mask **once, at
  the first training step** (``conditional_mask_update``: ``step == 1``) and
  ignores the pruning schedule entirely; afterwards the mask only keeps the
  pruned weights at zero. There is no global plan to make: every layer gets
  ``m / n`` (``sparsity`` must be None or ``m / n``), and the schedule
  arguments (``end_step``, ``begin_step``, ``frequency``, ``initial_sparsity``,
  ``power``) are refused rather than silently ignored. Its top-k per group keeps
  exactly ``n - m`` positions, so every group has at least ``m`` zeros, with no
  tie problem. The first ``fit`` must start from step 1 (a fresh optimizer, as
  after compiling the returned model). tfmot pads a group cut by the tensor's
  end, which then gets fewer zeros, and handles rank 2 and 4 only: the bridge
  requires rank 2 or 4 and the input axis (``-2``) divisible by ``n``.
  tfmot's ``PruneLowMagnitude.get_config`` leaves ``sparsity_m_by_n`` out:
  ``strip_pruning`` before saving.

Import. tfmot picks Keras 2 by setting ``TF_USE_LEGACY_KERAS=1`` when it is
first imported; if ``tf.keras`` has not been resolved yet, that switches
``tf.keras`` to tf_keras for the whole process. This module resolves ``tf.keras``
first and restores the variable afterwards, so tfmot uses tf_keras while
``import keras`` and ``tf.keras`` stay Keras 3. No environment variable needed.
(If tfmot was imported before this module, that switch has already happened; see
``tf_selopt.keras2._tfmot_compat``, the home of every private tfmot API used here.)

Examples:
    >>> import numpy as np, tf_keras
    >>> from tf_selopt.keras2 import tfmot_bridge
    >>> tf_keras.utils.set_random_seed(0)
    >>> model = tf_keras.Sequential([tf_keras.Input((8,)), tf_keras.layers.Dense(16, name="a"),
    ...                              tf_keras.layers.Dense(2, name="b")])
    >>> plan = tfmot_bridge.global_magnitude_plan(model, 0.75)  # 160 weights: 120 pruned in total
    >>> sum(p.pruned for p in plan.values()), sorted(plan)
    (120, ['a', 'b'])
    >>> pruned, plan = tfmot_bridge.prune_low_magnitude_global(
    ...     model, 0.75, "constant", begin_step=0, end_step=4, frequency=2)
    >>> pruned.compile(optimizer="adam", loss="mse")
    >>> x, y = np.random.default_rng(0).normal(size=(32, 8)), np.zeros((32, 2))
    >>> _ = pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=tfmot_bridge.pruning_callbacks())
    >>> final = tfmot_bridge.strip_pruning(pruned)
    >>> [int((final.get_layer(n).kernel.numpy() == 0).sum()) == plan[n].pruned for n in ("a", "b")]
    [True, True]
"""

from __future__ import annotations

import typing
import warnings

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from tf_selopt.core import masks as masks_lib
from tf_selopt.core import selection
from tf_selopt.core import sparsity as sparsity_lib
from tf_selopt.core.checks import fraction, is_int, positive
from tf_selopt.core.summaries import checked_log_dir
from tf_selopt.keras2 import _compat, _tfmot_compat

__all__ = [
    "LayerPlan",
    "OverallSparsity",
    "SCHEDULES",
    "global_magnitude_plan",
    "prune_low_magnitude_global",
    "pruning_callbacks",
    "strip_pruning",
    "tfmot_masks",
]

SCHEDULES = ("polynomial", "constant")


tfmot = _tfmot_compat.tfmot

#: tfmot's ``strip_pruning``: the trained model without the wrappers (the masked weights stay zero).
strip_pruning = tfmot.sparsity.keras.strip_pruning


class LayerPlan(typing.NamedTuple):
    """One layer's share of a global plan.

    Attributes:
        sparsity: the float to give tfmot's schedule for this layer.
        pruned: number of weights tfmot will zero in this layer (without ties).
        size: number of prunable weights of the layer.
    """

    sparsity: float
    pruned: int
    size: int


# ---------------------------------------------------------------- argument checks


def _check_model(model, where: str):
    if isinstance(model, keras.layers.Layer):
        raise ValueError(
            f"{where}: `model` is a Keras 3 model ({type(model).__name__}); tfmot prunes tf_keras (Keras 2) "
            "models only. For Keras 3 use `tf_selopt.prune` (one-shot) or the callback "
            "`tf_selopt.keras.pruning.GradualPruning` (during training); or build the model with `tf_keras`."
        )
    if not isinstance(model, tf_keras.Model):
        raise ValueError(f"{where}: `model` must be a tf_keras.Model; received {type(model).__name__}.")
    if not (isinstance(model, tf_keras.Sequential) or _compat.is_functional(model)):
        raise ValueError(
            f"{where}: `model` must be a tf_keras Sequential or functional model (tfmot cannot wrap the layers "
            f"of a subclassed model); received {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(f"{where}: `model` is not built; give it an Input or call `model.build(input_shape)`.")


# ---------------------------------------------------------------- what tfmot prunes


def _prunable_weights(layer):
    """What tfmot's ``PruneLowMagnitude(layer)`` masks, or None when it cannot wrap the layer."""
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    if _tfmot_compat.registry_supports(layer):
        return _tfmot_compat.registry_weights(layer)
    return None


def _walk(model):
    """Layers of a Sequential/functional model in ``model.layers`` order, nested models depth-first."""
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            yield from _walk(layer)
        else:
            yield layer


def _collect(model, layers, where: str) -> dict:
    """Layer name -> its prunable weights (non-empty lists), restricted to ``layers`` if given."""
    found, names = {}, set()
    for layer in _walk(model):
        if layer.name in names:
            raise ValueError(f"{where}: two layers are named {layer.name!r}; the plan is keyed by layer name.")
        names.add(layer.name)
        weights = _prunable_weights(layer)
        if weights:
            found[layer.name] = weights
    if layers is not None:
        if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"`layers` must be None or a non-empty list of layer names; received layers={layers!r}.")
        for name in layers:
            if name not in found:
                reason = "has no weights tfmot can prune" if name in names else "is not a layer of the model"
                raise ValueError(f"`layers`: {name!r} {reason}; layers tfmot can prune: {sorted(found)}.")
        found = {name: weights for name, weights in found.items() if name in set(layers)}
    if not found:
        raise ValueError(
            f"{where}: `model` has no weights tfmot can prune (kernels of Dense/Conv*, embeddings, ... "
            "or layers with `get_prunable_weights`)."
        )
    return found


# ---------------------------------------------------------------- tfmot's rounding


def _tfmot_kept(size: int, sparsity) -> int:
    """Weights tfmot keeps of a tensor of ``size`` at ``sparsity`` (its float32 formula, ``pruning_impl``)."""
    kept = np.float32(size) * (np.float32(1.0) - np.float32(sparsity))
    return max(int(np.rint(kept)), 1)  # np.rint and tf.math.round both round half to even


def _layer_sparsity(sizes: list, pruned: int) -> tuple[float, int]:
    """A float for tfmot's schedule giving ``pruned`` zeros over tensors of ``sizes``; and the count it gives."""
    target_kept = sum(sizes) - pruned

    def kept(s) -> int:
        return sum(_tfmot_kept(n, s) for n in sizes)

    natural = pruned / sum(sizes)
    if kept(natural) == target_kept:
        return natural, pruned
    # kept(s) does not increase with s; float32 values in [0, 1) are ordered like their bit patterns.
    lo, hi = 0, int(np.float32(np.nextafter(np.float32(1), np.float32(0))).view(np.uint32))
    as_float = lambda bits: np.uint32(bits).view(np.float32)  # noqa: E731
    while lo < hi:  # smallest s with kept(s) <= target_kept
        mid = (lo + hi) // 2
        if kept(as_float(mid)) <= target_kept:
            hi = mid
        else:
            lo = mid + 1
    candidates = [bits for bits in (lo - 1, lo) if 0 <= bits]
    best = min(candidates, key=lambda bits: (abs(kept(as_float(bits)) - target_kept), bits))
    s = as_float(best)
    return float(s), sum(sizes) - kept(s)


# ---------------------------------------------------------------- the plan


def _check_tfmot_structure(tensors, block_size, m_by_n):
    """ValueError naming the first weight tfmot cannot prune in this structure (nothing built yet)."""
    if m_by_n is None and block_size == (1, 1):
        return
    what = f"`sparsity_m_by_n`={m_by_n}" if m_by_n else f"`block_size`={block_size}"
    for name, w in tensors:
        shape, label = tuple(w.shape), f"weight {w.name!r} of layer {name!r}"
        if m_by_n and len(shape) not in (2, 4):
            raise ValueError(
                f"{what}: {label} has shape {shape}; tfmot's N:M pruning handles rank-2 (Dense) and rank-4 (Conv2D) "
                "weights only. Leave the layer out with `layers=[...]`."
            )
        if not m_by_n and (len(shape) != 2 or 1 in shape):
            raise ValueError(
                f"{what}: {label} has shape {shape}; tfmot prunes blocks only in 2-D weights with no dimension of 1 "
                "(Dense, Embedding, RNN kernels; it squeezes the weight first). Leave the layer out with "
                "`layers=[...]`."
            )
        rows, cols = (1, m_by_n[1]) if m_by_n else block_size
        sparsity_lib.check_divisible(shape, rows, cols, what, label)


def _plan(found: dict, sparsity: float, where: str, block_size=(1, 1), m_by_n=None) -> dict:
    tensors = [(name, w) for name, weights in found.items() for w in weights]
    values = [np.asarray(tf.convert_to_tensor(w)) for _, w in tensors]
    for (name, w), v in zip(tensors, values):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{where}: weight {w.name!r} of layer {name!r} has NaN or infinite values.")
    _check_tfmot_structure(tensors, block_size, m_by_n)
    if m_by_n is not None:  # tfmot prunes m of every n in each tensor: no choice left to plan
        m, n = m_by_n
        return {
            name: LayerPlan(
                sparsity=m / n,
                pruned=sum(w.shape.num_elements() for w in ws) * m // n,
                size=sum(w.shape.num_elements() for w in ws),
            )
            for name, ws in found.items()
        }
    per_block = block_size[0] * block_size[1]
    if per_block > 1:  # rank whole blocks: tfmot's count formula runs on the pooled tensor
        values = [sparsity_lib.block_scores(np.abs(v), block_size).numpy() for v in values]
    unit = "blocks" if per_block > 1 else "weights"
    sizes = [int(v.size) for v in values]
    total = sum(sizes)
    n_pruned = selection.count_of(sparsity, total)
    keep = total - n_pruned
    if keep < len(values):
        raise ValueError(
            f"`sparsity`={sparsity!r} prunes {n_pruned} of {total} {unit} and keeps {keep}, but tfmot keeps at "
            f"least one of them in each of the {len(values)} prunable tensors; use sparsity < "
            f"{(total - len(values) + 0.5) / total:.6g}."
        )
    # tfmot keeps each tensor's largest |w| (block): a floor of 1 per tensor, out of the global top-k.
    scores = [tf.constant(np.abs(v).astype(np.float32).reshape(-1)) for v in values]
    masks = masks_lib.masks_from_scores(scores, keep, floor=1)  # keep >= len(scores) >= 1
    pruned_per_tensor = [n - int(tf.reduce_sum(tf.cast(m, tf.int32))) for n, m in zip(sizes, masks)]

    plan, i = {}, 0
    for name, weights in found.items():
        layer_sizes = sizes[i : i + len(weights)]
        planned = sum(pruned_per_tensor[i : i + len(weights)])
        i += len(weights)
        target, reached = _layer_sparsity(layer_sizes, planned) if planned else (0.0, 0)
        if reached != planned:
            warnings.warn(
                f"Layer {name!r} (prunable tensors of sizes {layer_sizes}): no sparsity makes tfmot prune "
                f"exactly the planned {planned} {unit} (one float32 sparsity per layer, rounded per tensor); "
                f"the closest it can reach is {reached}, so the total is off by {reached - planned}.",
                stacklevel=3,
            )
        plan[name] = LayerPlan(sparsity=target, pruned=reached * per_block, size=sum(layer_sizes) * per_block)
    return plan


def global_magnitude_plan(model, sparsity, layers=None, *, block_size=None, sparsity_m_by_n=None) -> dict:
    """Per-layer tfmot targets that together prune the globally smallest ``|w|``.

    Args:
        model: a built tf_keras Sequential or functional model (its weights are
            read, nothing is changed).
        sparsity: fraction of the prunable weights to zero, a float in [0, 1);
            ``floor(sparsity * N + 0.5)`` of the ``N`` prunable weights
            (blocks, with ``block_size``). With ``sparsity_m_by_n``: None or ``m / n``.
        layers: None (every layer tfmot can prune) or a list of layer names;
            ``N`` then counts only their weights.
        block_size: None or ``(r, c)``: prune whole blocks of ``r`` output
            units x ``c`` consecutive inputs (``tf_selopt.prune``'s
            convention); the plan counts blocks (module docstring).
        sparsity_m_by_n: None or ``(m, n)``: ``m`` zeros in every ``n``
            consecutive inputs; every layer's target is ``m / n`` (tfmot
            decides per tensor, there is nothing global to plan).

    Returns:
        dict: layer name -> ``LayerPlan(sparsity, pruned, size)``, in layer
        order, for every layer with prunable weights (``pruned`` may be 0).

    Raises:
        ValueError: for a Keras 3 or subclassed or unbuilt model, a sparsity
            outside [0, 1) or too high to keep one weight per tensor, an unknown
            or non-prunable layer name, nothing prunable, non-finite weights, a
            bad ``block_size``/``sparsity_m_by_n`` or a weight they do not fit.
    """
    where = "global_magnitude_plan"
    _check_model(model, where)
    sparsity, block, m_by_n = sparsity_lib.check_structure(sparsity, block_size, sparsity_m_by_n)
    return _plan(_collect(model, layers, where), sparsity, where, block, m_by_n)


def _refuse_schedule_arguments(sparsity_m_by_n, **given):
    """ValueError for a schedule argument given with N:M, which tfmot ignores (its masks are set at step 1)."""
    defaults = dict(end_step=None, begin_step=0, frequency=100, initial_sparsity=0.0, power=3)
    for name, value in given.items():
        if value is not defaults[name] and (isinstance(value, bool) or value != defaults[name]):
            raise ValueError(
                f"`{name}`={value!r} does not apply with `sparsity_m_by_n`={sparsity_m_by_n!r}: tfmot sets the N:M "
                f"masks once, at the first training step, and ignores the pruning schedule; leave `{name}` out."
            )


def _check_schedule(schedule, sparsity, end_step, begin_step, frequency, initial_sparsity, power) -> float:
    """Validate the schedule arguments of ``prune_low_magnitude_global``; returns ``initial_sparsity``."""
    if not is_int(begin_step) or begin_step < 0:
        raise ValueError(f"`begin_step` must be an int >= 0; received begin_step={begin_step!r}.")
    if not is_int(frequency) or frequency < 1:
        raise ValueError(f"`frequency` must be an int >= 1; received frequency={frequency!r}.")
    if schedule == "polynomial":
        if not is_int(end_step) or end_step <= begin_step or (end_step - begin_step) % frequency:
            raise ValueError(
                f"`end_step` must be an int > begin_step ({begin_step}) of the form begin_step + m * frequency "
                f"({frequency}): tfmot prunes only at those steps, so the final sparsity is applied at end_step "
                f"only then; received end_step={end_step!r}."
            )
        initial_sparsity = fraction("initial_sparsity", initial_sparsity, upper=sparsity, closed=True)
        positive("power", power)
        return initial_sparsity
    first = begin_step if begin_step >= 1 else frequency  # the wrapper sees steps 1, 2, ...
    if not is_int(end_step) or not (end_step == -1 or end_step >= first):
        raise ValueError(
            f"`end_step` must be -1 (no end) or an int >= {first}, the first step at which tfmot prunes "
            f"with begin_step={begin_step}, frequency={frequency}; received end_step={end_step!r}."
        )
    return initial_sparsity


def prune_low_magnitude_global(
    model,
    sparsity,
    schedule: str = "polynomial",
    *,
    end_step: int | None = None,
    begin_step: int = 0,
    frequency: int = 100,
    initial_sparsity: float = 0.0,
    power: float = 3,
    layers=None,
    block_size=None,
    sparsity_m_by_n=None,
):
    """Wrap ``model``'s layers with tfmot pruning, per-layer targets from the global plan.

    Like tfmot's ``prune_low_magnitude(model)``, the returned model wraps the
    model's own layers (the two share weights) and has no optimizer: compile it,
    train with ``pruning_callbacks(...)`` for at least ``end_step`` batches
    (``UpdatePruningStep`` numbers the batches 1, 2, ...), then
    ``tfmot.sparsity.keras.strip_pruning``. Layers whose target is 0 stay unwrapped.

    Args:
        model: a built tf_keras Sequential or functional model.
        sparsity: final fraction of the prunable weights (blocks, with
            ``block_size``) to zero, in [0, 1); with ``sparsity_m_by_n``, None
            or ``m / n``.
        schedule: ``"polynomial"``: per layer a ``PolynomialDecay`` from
            ``initial_sparsity`` to the layer's target, both scaled by
            ``target / sparsity`` so that every layer follows the same curve
            and the total follows the global one; ``"constant"``: per layer a
            ``ConstantSparsity`` at its target.
        end_step: ``"polynomial"``: the step at which the targets are reached,
            ``> begin_step`` and ``begin_step + m * frequency`` (tfmot only
            prunes at those steps, so any other value never applies the final
            sparsity). ``"constant"``: the last step at which pruning may
            happen, or -1 (no end); it must allow at least one pruning step.
            Required, except with ``sparsity_m_by_n`` (where it must be left out).
        begin_step: first pruning step, an int >= 0.
        frequency: prune every ``frequency`` steps from ``begin_step``, an int >= 1.
        initial_sparsity: ``"polynomial"`` only: the global sparsity at
            ``begin_step``, a float in [0, sparsity].
        power: ``"polynomial"`` only: exponent of the decay, a finite number > 0.
        layers: None or a list of layer names to restrict pruning to.
        block_size: None or ``(r, c)``: tfmot prunes whole blocks of ``r``
            output units x ``c`` consecutive inputs (passed to tfmot as its
            ``block_size=(c, r)``); ``(1, 4)`` is LiteRT's float sparse block.
            The plan is exact in blocks per layer (module docstring). Every
            pruned weight must be 2-D, with no dimension of 1, divisible into blocks.
        sparsity_m_by_n: None or ``(m, n)``, passed to tfmot: ``m`` zeros in
            every ``n`` consecutive inputs of every pruned weight, set once at
            the first training step; tfmot ignores the schedule, so
            ``end_step``, ``begin_step``, ``frequency``, ``initial_sparsity``
            and ``power`` must be left out. Excludes ``block_size``.

    Returns:
        ``(pruned_model, plan)``: a tf_keras model with ``PruneLowMagnitude``
        wrappers, and the plan of ``global_magnitude_plan``.

    Raises:
        ValueError: for any invalid argument, before anything is built.
    """
    where = "prune_low_magnitude_global"
    _check_model(model, where)
    sparsity, block, m_by_n = sparsity_lib.check_structure(sparsity, block_size, sparsity_m_by_n)
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}; received schedule={schedule!r}.")
    if m_by_n is not None:
        _refuse_schedule_arguments(
            sparsity_m_by_n,
            end_step=end_step,
            begin_step=begin_step,
            frequency=frequency,
            initial_sparsity=initial_sparsity,
            power=power,
        )
    else:
        initial_sparsity = _check_schedule(schedule, sparsity, end_step, begin_step, frequency, initial_sparsity, power)
    plan = _plan(_collect(model, layers, where), sparsity, where, block, m_by_n)

    sparsity_module = tfmot.sparsity.keras

    def make_schedule(target: float):
        if m_by_n is not None:  # not read by tfmot for N:M masks (pruning_impl.Pruning.conditional_mask_update)
            return sparsity_module.ConstantSparsity(target, 0, end_step=-1, frequency=1)
        if schedule == "constant":
            return sparsity_module.ConstantSparsity(target, begin_step, end_step=end_step, frequency=frequency)
        initial = min(target, initial_sparsity * target / sparsity)
        return sparsity_module.PolynomialDecay(initial, target, begin_step, end_step, power=power, frequency=frequency)

    def clone(layer):
        if isinstance(layer, tf_keras.Model):
            return tf_keras.models.clone_model(layer, clone_function=clone)
        entry = plan.get(layer.name)
        if entry is None or entry.pruned == 0:
            return layer
        return sparsity_module.prune_low_magnitude(
            layer,
            pruning_schedule=make_schedule(entry.sparsity),
            block_size=(block[1], block[0]),  # tfmot's (rows, cols) of the kernel as stored: (inputs, outputs)
            sparsity_m_by_n=m_by_n,
        )

    pruned = tf_keras.models.clone_model(model, clone_function=clone)
    _check_wrappers(pruned, plan, model, layers)
    return pruned, plan


def _check_wrappers(pruned, plan: dict, model, layers):
    """The wrappers mask exactly the weights the plan counted (tfmot and this module agree)."""
    expected = {name: [w.ref() for w in ws] for name, ws in _collect(model, layers, "").items()}
    wrapped = {}
    for layer in _walk(pruned):
        if _tfmot_compat.is_pruning_wrapper(layer):
            wrapped[layer.layer.name] = [w.ref() for w, _ in _tfmot_compat.wrapper_masks(layer)]
    planned = {name: expected[name] for name, entry in plan.items() if entry.pruned}
    if wrapped != planned:
        raise RuntimeError(f"tfmot wraps other weights than planned: {sorted(wrapped)} vs {sorted(planned)}.")


def tfmot_masks(model) -> dict:
    """``{weight.ref(): mask}`` of every tfmot ``PruneLowMagnitude`` wrapper in ``model`` (mask: float 0/1,
    1 = kept; tfmot updates it in place)."""
    return {
        weight.ref(): mask
        for layer in _walk(model)
        if _tfmot_compat.is_pruning_wrapper(layer)
        for weight, mask in _tfmot_compat.wrapper_masks(layer)
    }


class _ShowMasksToSelection(tf_keras.callbacks.Callback):
    """At the start of ``fit``: hand tfmot's masks to a ``tf_selopt.keras2.SelectiveOptimizer``, so that
    entries tfmot pruned take no selection slot; rebuilds the train step if that changed what it reads."""

    def on_train_begin(self, logs=None):
        from tf_selopt.keras2 import SelectiveOptimizer

        optimizer = self.model.optimizer
        if not isinstance(optimizer, SelectiveOptimizer):
            return
        masks = tfmot_masks(self.model)
        if masks.keys() != optimizer._pruning_masks.keys():
            optimizer.watch_pruning_masks(masks)
            self.model.make_train_function(force=True)


class OverallSparsity(tf_keras.callbacks.Callback):
    """Log the pruned fraction of all of tfmot's masked weights as ``pruning/sparsity`` (and their count as
    ``pruning/pruned_count``) at ``model.optimizer.iterations``: the tags, x axis and step convention of
    ``tf_selopt.SelectionMonitor``'s pruning scalars, so tfmot and our pruning runs share a card.

    Written at the start of ``fit``, at each epoch's end and at each pruning event: an event seen after the
    batch that ends at step ``s`` writes the state before it at ``s - 1`` and the new one at ``s`` (an exact
    step in TensorBoard with smoothing 0). tfmot's ``PruningSummaries`` logs per-layer sparsity only.

    Args:
        log_dir: directory of the event files (str or path-like, not empty).
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = checked_log_dir(log_dir)
        #: (step, pruned count, sparsity) of every point written in the latest ``fit``.
        self.points = []
        self._writer = None
        self._count = None

    def on_train_begin(self, logs=None):
        masks = list(tfmot_masks(self.model).values())
        if not masks:
            raise ValueError("OverallSparsity needs a model with tfmot pruning wrappers (prune_low_magnitude).")
        self._masks = masks
        self._total = sum(int(np.prod(m.shape)) for m in masks)
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self.points = []
        self._count = None

    def _pruned(self) -> int:
        return int(sum(int(tf.reduce_sum(tf.cast(tf.equal(m, 0), tf.int64))) for m in self._masks))

    def _write(self, step, count):
        with self._writer.as_default(step=step):
            tf.summary.scalar("pruning/pruned_count", float(count))
            tf.summary.scalar("pruning/sparsity", count / self._total)
        self.points.append((step, count, count / self._total))

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        if self._count is None:
            self._count = self._pruned()
            self._write(self._step(), self._count)

    def on_train_batch_end(self, batch, logs=None):
        count, step = self._pruned(), self._step()
        if count != self._count:
            if step - 1 > self.points[-1][0]:
                self._write(step - 1, self._count)
            self._write(step, count)
            self._count = count

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        if step != self.points[-1][0]:
            self._write(step, self._count)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def pruning_callbacks(log_dir=None) -> list:
    """The callbacks tfmot pruning needs in ``fit``: ``UpdatePruningStep``, plus, if ``log_dir`` is given,
    ``PruningSummaries(log_dir, write_graph=False)`` (per-layer sparsity and threshold at each epoch's
    start, in ``<log_dir>/metrics``; Keras' ``epoch_*`` tags in ``train/`` and ``validation/``; no graph:
    TensorBoard cannot draw the graph of a pruned tf_keras model) and ``OverallSparsity(log_dir)``.
    With a ``tf_selopt.keras2.SelectiveOptimizer`` they also show it tfmot's masks: pruned entries take
    no selection slot and do not train."""
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), _ShowMasksToSelection()]
    if log_dir is not None:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir), write_graph=False))
        callbacks.append(OverallSparsity(log_dir))
    return callbacks
