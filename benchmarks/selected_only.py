"""Selected-only restricted phase (issue 16): step time and optimizer bytes per model parameter.

MLP 784-2048-2048-10 (5,824,522 parameters), Adam(1e-3), keep 1% and 10%
(global, granularity "parameter"), batch 16 and 128. Three copies of the model
(same weights) train side by side in one process, each with its own
``tf.function`` custom step (GradientTape, same batch, no XLA):

* ``adam``: plain ``keras.optimizers.Adam``;
* ``masked``: ``tf_selopt.SelectiveOptimizer(Adam, update="masked")`` after its
  selection (masked gradients; Adam without a restore);
* ``selected_only``: ``tf_selopt.SelectiveOptimizer(Adam)`` (``update="auto"``:
  the selected-only path) after its selection and ``release_warmup_state`` (gather
  the selected gradients, Adam on the (k,) buffer, scatter back);
* the same three with ``jit_compile=True`` (``*_xla``; ratios to ``adam_xla``).
  Without it the selected-only scatter is compiled by XLA on its own
  (``tf_selopt.core.selected_only._compiled_scatter``): TensorFlow's CPU kernel
  of ``ResourceScatterNdUpdate`` writes one entry at a time. With it every shape
  is static, so the scatter writes all k slots into each of the m variables.

Repetitions are interleaved (the order rotates each round); each block of
``--steps`` steps is timed (wall and process CPU) after a host read-back, and
the median per-step time over rounds is reported with the ratio to ``adam``.
Bytes: everything each optimizer holds (``optimizer.variables``: for
``selected_only`` after the release the bool masks, 1 B/param, values,
positions, offsets, Adam's k-sized slots and counters) over the model's
parameter count.

    python -m benchmarks.selected_only --out results/bench_selected_only.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics

import keras
import numpy as np
import tensorflow as tf

import tf_selopt
from benchmarks.common import timed, write_result
from tf_selopt.study import models

VARIANTS = ("adam", "masked", "selected_only", "adam_xla", "masked_xla", "selected_only_xla")
GOALS = {0.01: 0.9, 0.1: 1.0}  # keep -> selected_only / adam step time


def _bytes(variables) -> int:
    return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in variables)


def _reference(name):
    return "adam_xla" if name.endswith("_xla") else "adam"


def setup(keep, batch, seed=0):
    keras.utils.set_random_seed(seed)
    template = models.mlp((2048, 2048), input_shape=(784,))
    weights = template.get_weights()
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, 784)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=(batch,)))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def model_copy():
        model = models.mlp((2048, 2048), input_shape=(784,))
        model.set_weights(weights)
        return model

    def gradient_step(model, apply, xla):
        @tf.function(jit_compile=xla)
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            apply(tape.gradient(loss, model.trainable_variables))
            return loss

        return step

    runs = {}
    held = {}
    for xla in (False, True):
        suffix = "_xla" if xla else ""
        model = model_copy()
        adam = keras.optimizers.Adam(1e-3)
        runs["adam" + suffix] = gradient_step(model, lambda g, m=model, o=adam: o.apply(g, m.trainable_variables), xla)
        held.setdefault("adam", adam)
        for update in ("masked", "selected_only"):
            model = model_copy()
            selective = tf_selopt.SelectiveOptimizer(
                keras.optimizers.Adam(1e-3), keep=keep, warmup_steps=2, window=1, seed=0, update=update
            )
            step = gradient_step(model, lambda g, m=model, o=selective: o.apply(g, m.trainable_variables), xla)
            for _ in range(3):  # warm-up, selection at step 1, one restricted step
                step()
            assert int(selective.selections) == 1 and int(selective.selected_count) == selective.k
            assert selective.update_path == update
            if update == "selected_only":
                selective.release_warmup_state()  # what TracePerPhase does in fit
                step = gradient_step(model, lambda g, m=model, o=selective: o.apply(g, m.trainable_variables), xla)
            runs[update + suffix] = step
            held.setdefault(update, selective)
            k = selective.k
    num = template.count_params()
    runs["adam"]()  # builds Adam
    bytes_per_param = {name: _bytes(optimizer.variables) / num for name, optimizer in held.items()}
    return runs, bytes_per_param, num, k


def measure(keep, batch, rounds, steps):
    runs, bytes_per_param, num, k = setup(keep, batch)
    for name in VARIANTS:  # trace and settle
        for _ in range(3):
            runs[name]().numpy()
    times = {name: {"wall": [], "cpu": []} for name in VARIANTS}
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for name in order:
            step = runs[name]

            def block(step=step):
                for _ in range(steps - 1):
                    step()
                step().numpy()

            wall, cpu = timed(block)
            times[name]["wall"].append(wall / steps)
            times[name]["cpu"].append(cpu / steps)
    median = {n: {kind: statistics.median(t[kind]) for kind in t} for n, t in times.items()}
    return {
        "keep": keep,
        "batch": batch,
        "num_parameters": num,
        "k": k,
        "median_step_ms": {n: {kind: 1e3 * m[kind] for kind in m} for n, m in median.items()},
        "ratio_to_adam": {
            n: {kind: median[n][kind] / median[_reference(n)][kind] for kind in median[n]} for n in VARIANTS
        },
        "bytes_per_parameter": bytes_per_param,
        "goal_step_ratio": GOALS[keep],
        "goal_bytes_per_parameter": 1.5 if keep == 0.01 else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_selected_only.json"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    load_before = os.getloadavg()
    cases = []
    for keep in (0.01, 0.1):
        for batch in (16, 128):
            case = measure(keep, batch, args.rounds, args.steps)
            print(
                f"keep {keep} batch {batch}: "
                + ", ".join(f"{n} {case['ratio_to_adam'][n]['wall']:.3f}x" for n in VARIANTS)
                + " | B/param "
                + ", ".join(f"{n} {b:.3f}" for n, b in case["bytes_per_parameter"].items()),
                flush=True,
            )
            cases.append(case)
    result = {"load_average_before": load_before, "load_average_after": os.getloadavg()}
    write_result(args.out, {**result, "rounds": args.rounds, "steps_per_block": args.steps, "cases": cases})


if __name__ == "__main__":
    main()
