"""Benchmark 1: train-step time of SelectiveOptimizer(Adam) / Adam alone, per phase.

Two copies of each model (same weights) train side by side in one process, one
with ``keras.optimizers.Adam(1e-3)``, one with ``SelectiveOptimizer`` around the
same Adam (gradient_sum, keep 10%, global). The two take turns step by step
(which one goes first flips every block), every step is timed on its own (the
call returns host values, so the step has finished), and the ratio of the
median step times (wall clock; also process CPU time, which other sessions on
a shared machine disturb less) is reported per phase of the wrapper:

* ``warmup``: a full step outside the window (inner optimizer + finite check),
* ``window``: a full step inside the window (+ the criterion's accumulation),
* ``masked``: a restricted step after selection (masked gradients, restore),

plus the one-off ``selection`` step (window end: scores + exact top-k).

A third copy trains with ``GuardedAdam`` (Adam that skips a step with a NaN/Inf
gradient, nothing else) in the same rounds: its ratio to Adam is the floor any
wrapper pays for the all-or-nothing NaN guard (the update must wait for every
gradient, so it no longer overlaps the backward pass).
The phase is a function of ``optimizer.iterations``, which the benchmark sets
before each block; after each block it checks the wrapper's read-outs
(``window_count``, ``selections``) to prove the steps were in that phase.

Step kinds: ``fit`` (Keras' compiled train function, the one ``model.fit``
runs, via ``train_on_batch``), ``fit_xla`` (the same with
``jit_compile=True``), ``fit_per_phase`` (``fit`` with the per-phase traces
``tf_selopt.TracePerPhase`` makes: before each block the wrapper's step is
rebuilt for that block's phase, as the callback does before a batch),
``custom_loop`` (a ``tf.function`` step with a GradientTape and
``apply_gradients``).

    python -m benchmarks.overhead --out results/bench_overhead.json
"""

from __future__ import annotations

import argparse
import pathlib
import statistics

import keras
import numpy as np
import tensorflow as tf

import tf_selopt
from benchmarks.common import timed, write_result
from tf_selopt.keras import traces
from tf_selopt.study import models

PHASES = ("warmup", "window", "masked")
GOALS = {"warmup": 1.05, "window": 1.15, "masked": 1.05}
MODELS = {"mlp": 128, "cnn": 64}  # model -> batch size
KINDS = ("fit", "fit_xla", "fit_per_phase", "custom_loop")
WARMUP_STEPS = 100_000  # eta0: far away, so any phase is reached by setting `iterations`


def build_model(name: str) -> keras.Model:
    """``mlp``: 784-512-512-10 (669,706 parameters); ``cnn``: tf_selopt.study.models.small_cnn (105,866)."""
    return models.mlp((512, 512), input_shape=(784,)) if name == "mlp" else models.small_cnn()


def make_step(model: keras.Model, kind: str):
    """A callable ``step(x, y)`` that trains one batch and returns once the step is done."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if kind != "custom_loop":  # fit, fit_xla, fit_per_phase
        model.compile(optimizer=model.optimizer, loss=loss_fn, jit_compile=kind == "fit_xla")
        return lambda x, y: model.train_on_batch(x, y)

    @tf.function
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return lambda x, y: train(x, y).numpy()


def time_steps(steps, x, y, n: int) -> list[list[tuple[float, float]]]:
    """Run ``n`` rounds of ``steps`` (callables), one step each in turn; (wall s, process CPU s) per step."""
    times = [[] for _ in steps]
    for _ in range(n):
        for step, out in zip(steps, times):
            out.append(timed(step, x, y))
    return times


class GuardedAdam(keras.optimizers.Adam):
    """Adam that skips a step with a non-finite gradient (build it before the first step)."""

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        apply = super().apply
        tf.cond(finite, lambda: (apply(grads, trainable_variables), None)[1], lambda: None)


class Pair:
    """The same model three times (same weights): ``plain`` with Adam, ``ours`` with
    SelectiveOptimizer(Adam), ``guarded`` with GuardedAdam."""

    def __init__(self, model_name: str, kind: str, block: int, seed: int):
        keras.utils.set_random_seed(seed)
        self.plain = build_model(model_name)
        self.ours = build_model(model_name)
        self.guarded = build_model(model_name)
        self.ours.set_weights(self.plain.get_weights())
        self.guarded.set_weights(self.plain.get_weights())
        self.plain.optimizer = keras.optimizers.Adam(1e-3)
        self.guarded.optimizer = GuardedAdam(1e-3)
        self.guarded.optimizer.build(self.guarded.trainable_variables)
        self.opt = tf_selopt.SelectiveOptimizer(
            keras.optimizers.Adam(1e-3),
            keep=0.1,
            warmup_steps=WARMUP_STEPS,
            window=block + 1,
            seed=seed,
            update="masked",  # this benchmark's restricted phase; the selected-only one: benchmarks/selected_only.py
        )
        self.ours.optimizer = self.opt
        self.opt.build(self.ours.trainable_variables)
        self.window = block + 1
        self.per_phase = kind == "fit_per_phase"
        self.step_plain = make_step(self.plain, kind)
        self.step_ours = make_step(self.ours, kind)
        self.step_guarded = make_step(self.guarded, kind)

    def start_of(self, phase: str) -> int:
        """First step of a block of ``window - 1`` steps that lies entirely in ``phase``."""
        return {"warmup": 0, "window": WARMUP_STEPS - self.window + 1, "masked": WARMUP_STEPS + 1}[phase]

    def trace_for(self, first_step: int, n: int):
        """``fit_per_phase``: rebuild our step for the phase of steps ``first_step .. first_step + n - 1``
        (what ``tf_selopt.TracePerPhase`` does before a batch); other kinds: nothing."""
        phase = self.opt.plan.ordinary_phase(first_step, first_step + n - 1) if self.per_phase else None
        with traces.switching_state(self.ours):
            self.opt.phase = phase

    def readouts(self) -> tuple[int, float]:
        return int(self.opt.selections), float(self.opt.window_count)

    def time_block(self, phase: str, x, y, n: int, ours_first: bool):
        """``n`` steps of each model in ``phase``, taking turns step by step; returns (ours, plain,
        guarded) lists of (wall s, CPU s). Checks the read-outs say the wrapper's steps were in ``phase``."""
        self.opt.iterations.assign(self.start_of(phase))
        self.trace_for(self.start_of(phase), n)
        selections, count = self.readouts()
        steps = [self.step_ours, self.step_plain, self.step_guarded]
        order = 1 if ours_first else -1
        ours, plain, guarded = time_steps(steps[::order], x, y, n)[::order]
        expected_count = count + n if phase == "window" else count
        if self.readouts() != (selections, expected_count) or int(self.opt.iterations) != self.start_of(phase) + n:
            raise AssertionError(f"steps were not in phase {phase!r}: {self.readouts()}, {int(self.opt.iterations)}")
        return ours, plain, guarded

    def time_selection(self, x, y) -> float:
        """Wall seconds of one selection step (step ``warmup_steps``); checks that it selected exactly k."""
        self.opt.iterations.assign(WARMUP_STEPS)
        self.trace_for(WARMUP_STEPS, 1)
        selections, _ = self.readouts()
        ((seconds, _),) = time_steps([self.step_ours], x, y, 1)[0]
        if self.readouts() != (selections + 1, 0.0) or int(self.opt.selected_count) != self.opt.k:
            raise AssertionError(f"selection step did not select k={self.opt.k}: {self.readouts()}")
        return seconds


def _median(times, clock: int) -> float:
    return statistics.median(t[clock] for t in times)


def run_pair(model_name: str, kind: str, block: int, rounds: int, selections: int, seed: int) -> dict:
    batch = MODELS[model_name]
    rng = np.random.default_rng(seed)
    shape = (batch, 784) if model_name == "mlp" else (batch, 28, 28, 1)
    x = tf.constant(rng.uniform(size=shape).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=batch).astype("int32"))
    pair = Pair(model_name, kind, block, seed)

    # Trace/compile both, then select once so that the masked phase has real masks.
    for phase in PHASES:
        pair.time_block(phase, x, y, 2, ours_first=True)
    pair.time_selection(x, y)

    ours = {p: [] for p in PHASES}
    plain = {p: [] for p in PHASES}
    guarded = {p: [] for p in PHASES}
    per_round = {p: [] for p in PHASES}
    for r in range(rounds):
        for phase in PHASES:
            b_ours, b_plain, b_guarded = pair.time_block(phase, x, y, block, ours_first=r % 2 == 0)
            ours[phase] += b_ours
            plain[phase] += b_plain
            guarded[phase] += b_guarded
            per_round[phase].append(_median(b_ours, 0) / _median(b_plain, 0))
    selection_times = [pair.time_selection(x, y) for _ in range(selections)]

    all_plain = [t for p in PHASES for t in plain[p]]
    result = {
        "model": model_name,
        "kind": kind,
        "batch_size": batch,
        "num_parameters": pair.opt.num_parameters,
        "k": pair.opt.k,
        "steps_per_phase": block * rounds,
        "plain_median_ms": 1e3 * _median(all_plain, 0),
        "phases": {},
        "selection_step_ms": 1e3 * statistics.median(selection_times),
        "selection_step_ratio": statistics.median(selection_times) / _median(all_plain, 0),
    }
    for phase in PHASES:
        q = statistics.quantiles(per_round[phase], n=4, method="inclusive") if rounds > 1 else per_round[phase] * 3
        ratio = _median(ours[phase], 0) / _median(plain[phase], 0)
        result["phases"][phase] = {
            "ratio": ratio,
            "cpu_ratio": _median(ours[phase], 1) / _median(plain[phase], 1),
            "guard_ratio": _median(guarded[phase], 0) / _median(plain[phase], 0),
            "guard_cpu_ratio": _median(guarded[phase], 1) / _median(plain[phase], 1),
            "ours_median_ms": 1e3 * _median(ours[phase], 0),
            "plain_median_ms": 1e3 * _median(plain[phase], 0),
            "ours_cpu_median_ms": 1e3 * _median(ours[phase], 1),
            "plain_cpu_median_ms": 1e3 * _median(plain[phase], 1),
            "block_ratio_quartiles": [q[0], statistics.median(per_round[phase]), q[2]],
            "goal": GOALS[phase],
            "goal_met": ratio <= GOALS[phase],
            "goal_met_cpu": _median(ours[phase], 1) / _median(plain[phase], 1) <= GOALS[phase],
        }
    return result


def _cell(phase: dict) -> str:
    miss = "" if phase["goal_met"] and phase["goal_met_cpu"] else " miss"
    return f"{phase['ratio']:.3f} ({phase['cpu_ratio']:.3f}){miss}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--block", type=int, default=20, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=15, help="blocks per phase")
    parser.add_argument("--selections", type=int, default=5, help="selection steps timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: mlp, fit, 2 rounds of 3 steps")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_overhead.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.kinds, args.block, args.rounds, args.selections = ["mlp"], ["fit"], 3, 2, 1

    runs = []
    print("ours / Adam, median step time: wall clock (process CPU time); guard = GuardedAdam / Adam (wall)")
    print("| model | step | Adam ms | warmup | window | masked | guard | selection step |")
    print("|---|---|---|---|---|---|---|---|")
    for model_name in args.models:
        for kind in args.kinds:
            r = run_pair(model_name, kind, args.block, args.rounds, args.selections, args.seed)
            runs.append(r)
            cells = [_cell(r["phases"][p]) for p in PHASES]
            print(
                f"| {model_name} | {kind} | {r['plain_median_ms']:.2f} | "
                + " | ".join(cells)
                + f" | {statistics.median(r['phases'][p]['guard_ratio'] for p in PHASES):.3f}"
                + f" | {r['selection_step_ms']:.1f} ms ({r['selection_step_ratio']:.1f}x) |",
                flush=True,
            )
    print(
        f"goals (ours / Adam, median step): warmup <= {GOALS['warmup']}, window <= {GOALS['window']}, "
        f"masked <= {GOALS['masked']}"
    )
    write_result(args.out, {"config": vars(args) | {"out": str(args.out)}, "runs": runs})


if __name__ == "__main__":
    main()
