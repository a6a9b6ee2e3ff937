"""Benchmark 3: real savings from freezing (``granularity`` + ``DropFrozenVariables``).

Two measurements on the bundled MNIST subset (3,500 train / 1,000 test), Adam
1e-3, gradient-sum selection, for the small CNN (batch 64) and an MLP
784-512-512-10 (batch 128), at 50/80/90% of parameters frozen (keep 0.5/0.2/0.1)
with ``granularity`` "variable" and "unit":

1. Step time, interleaved in one process: three arms of the same model are
   trained past the selection, then run in rotating order for ``--rounds``
   blocks of ``--steps`` steps each (the first block is discarded): ``full``
   (plain Adam), ``masked`` (SelectiveOptimizer, masks only), ``dropped``
   (SelectiveOptimizer + DropFrozenVariables) and ``dropped_per_phase`` (the
   same + TracePerPhase). A step is timed from the start of
   ``on_train_batch_begin`` to ``on_train_batch_end`` (the callbacks' overhead
   included). Reported: medians, minima and ratios arm/full.
2. Wall-clock training time in one ``fit`` (evaluation excluded; selection
   and the retrace of the dropping switch included) until the test accuracy,
   checked after every epoch, first reaches the full run's final accuracy
   minus 1 point.

The CPU is shared: medians and minima of the step times are both reported.

    python -m benchmarks.savings --out results/bench_savings.json
    python -m benchmarks.savings --quick --out /tmp/savings_quick.json   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tf_selopt  # noqa: E402
from tf_selopt.keras.freezing import DropFrozenVariables  # noqa: E402
from tf_selopt.study import data, models  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BATCH = {"cnn": 64, "mlp": 128}
ARMS = ("full", "masked", "dropped", "dropped_per_phase")


def build(kind, seed):
    keras.utils.set_random_seed(seed)
    return models.small_cnn() if kind == "cnn" else models.mlp((512, 512), name="mlp_512")


class StepTimer(keras.callbacks.Callback):
    """Seconds per train step (``on_train_batch_begin`` to ``on_train_batch_end``); list it first."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def compiled(kind, arm, granularity, frozen, warmup, window, seed, jit_compile):
    """(model, optimizer, callbacks) of one arm, compiled."""
    model = build(kind, seed)
    optimizer = keras.optimizers.Adam(1e-3)
    callbacks = []
    if arm != "full":
        optimizer = tf_selopt.SelectiveOptimizer(
            optimizer,
            keep=round(1.0 - frozen, 6),
            warmup_steps=warmup,
            window=window,
            granularity=granularity,
            seed=seed,
        )
        if arm.startswith("dropped"):
            callbacks.append(DropFrozenVariables())
        if arm == "dropped_per_phase":
            callbacks.append(tf_selopt.TracePerPhase())
    model.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"], jit_compile=jit_compile)
    return model, optimizer, callbacks


def selection_summary(optimizer, callbacks):
    n = optimizer.num_parameters
    drop = next((c for c in callbacks if isinstance(c, DropFrozenVariables)), None)
    return {
        "selected": int(optimizer.selected_count),
        "k": optimizer.k,
        "frozen_fraction_actual": 1.0 - int(optimizer.selected_count) / n,
        "frozen_variables": [v.path for v in optimizer.frozen_variables],
        "dropped_at_end_of_last_fit": None if drop is None else drop.dropped_count,
    }


def step_times(kind, granularity, frozen, splits, args):
    """Interleaved step times of the three arms after the selection."""
    batch = BATCH[kind]
    x, y = splits.x_train, splits.y_train
    arms = {
        a: compiled(kind, a, granularity, frozen, args.timing_warmup, args.timing_window, 0, args.jit) for a in ARMS
    }
    prep = (args.timing_warmup + 2) * batch  # past the selection; the dropping arm has rebuilt its step
    for model, _, callbacks in arms.values():
        model.fit(x[:prep], y[:prep], batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    times = {a: [] for a in ARMS}
    block_medians = {a: [] for a in ARMS}
    order = list(ARMS)
    for r in range(args.rounds + 1):
        for arm in order:
            model, _, callbacks = arms[arm]
            timer = StepTimer()
            model.fit(
                x[: args.steps * batch],
                y[: args.steps * batch],
                batch_size=batch,
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=[timer, *callbacks],
            )
            if r > 0:  # round 0 warms up every arm
                times[arm] += timer.times
                block_medians[arm].append(statistics.median(timer.times))
        order = order[1:] + order[:1]
    medians = {a: statistics.median(t) for a, t in times.items()}
    minima = {a: min(t) for a, t in times.items()}
    _, optimizer, callbacks = arms["dropped"]
    return {
        "model": kind,
        "granularity": granularity,
        "frozen_target": frozen,
        **selection_summary(optimizer, callbacks),
        "median_step_ms": {a: 1e3 * m for a, m in medians.items()},
        "min_step_ms": {a: 1e3 * m for a, m in minima.items()},
        "ratio_masked_over_full": medians["masked"] / medians["full"],
        "ratio_dropped_over_full": medians["dropped"] / medians["full"],
        "ratio_dropped_per_phase_over_full": medians["dropped_per_phase"] / medians["full"],
        "min_ratio_dropped_over_full": minima["dropped"] / minima["full"],
        "block_ratios_dropped_over_full": [d / f for d, f in zip(block_medians["dropped"], block_medians["full"])],
        "steps_timed_per_arm": len(times["full"]),
    }


class TrainingClock(keras.callbacks.Callback):
    """Cumulative training seconds and test accuracy at each epoch end (evaluation not timed)."""

    def __init__(self, x_test, y_test):
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.seconds, self.curve = 0.0, []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._start
        accuracy = self.model.evaluate(self.x_test, self.y_test, verbose=0, return_dict=True)["accuracy"]
        self.curve.append((self.seconds, float(accuracy)))


def train_to_accuracy(kind, arm, granularity, frozen, splits, args, seed=0):
    """One ``fit``: cumulative training seconds and test accuracy after each epoch."""
    batch = BATCH[kind]
    steps_per_epoch = math.ceil(len(splits.x_train) / batch)
    model, optimizer, callbacks = compiled(
        kind, arm, granularity, frozen, steps_per_epoch * args.warmup_epochs, args.window, seed, args.jit
    )
    keras.utils.set_random_seed(seed)  # the shuffling
    clock = TrainingClock(splits.x_test, splits.y_test)
    model.fit(
        splits.x_train, splits.y_train, batch_size=batch, epochs=args.epochs, verbose=0, callbacks=[clock, *callbacks]
    )
    result = {"model": kind, "arm": arm, "granularity": granularity, "frozen_target": frozen, "curve": clock.curve}
    if arm != "full":
        result.update(selection_summary(optimizer, callbacks))
    return result


def seconds_to(curve, target):
    return next((s for s, acc in curve if acc >= target), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp"], choices=["cnn", "mlp"])
    parser.add_argument(
        "--granularities", nargs="+", default=["variable", "unit"], choices=["parameter", "unit", "variable"]
    )
    parser.add_argument("--frozen", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    parser.add_argument("--rounds", type=int, default=10, help="timed blocks per arm (after one warm-up block)")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--timing-warmup", type=int, default=20)
    parser.add_argument("--timing-window", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--jit", action="store_true", help="jit_compile=True (default: False, Keras' CPU default)")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test: CNN only, tiny budgets")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_savings.json"))
    args = parser.parse_args()
    if args.quick:
        args.models, args.frozen, args.rounds, args.steps = ["cnn"], [0.8], 1, 3
        args.timing_warmup, args.timing_window, args.epochs, args.window = 3, 2, 2, 5
    splits = data.load("mnist")
    started = time.perf_counter()

    timing = []
    for kind in args.models:
        for granularity in args.granularities:
            for frozen in args.frozen:
                row = step_times(kind, granularity, frozen, splits, args)
                timing.append(row)
                print(
                    f"{kind} {granularity:8s} frozen {frozen:.0%} (actual {row['frozen_fraction_actual']:.1%}, "
                    f"{len(row['frozen_variables'])} variables dropped): step ms full "
                    f"{row['median_step_ms']['full']:.1f} masked {row['median_step_ms']['masked']:.1f} dropped "
                    f"{row['median_step_ms']['dropped']:.1f}; dropped/full {row['ratio_dropped_over_full']:.2f}x, "
                    f"+ per-phase {row['ratio_dropped_per_phase_over_full']:.2f}x, "
                    f"masked/full {row['ratio_masked_over_full']:.2f}x; min-based dropped/full "
                    f"{row['min_ratio_dropped_over_full']:.2f}x",
                    flush=True,
                )

    accuracy = []
    if not args.skip_accuracy:
        for kind in args.models:
            full = train_to_accuracy(kind, "full", None, 0.0, splits, args)
            target = full["curve"][-1][1] - 0.01
            full["seconds_to_target"] = seconds_to(full["curve"], target)
            accuracy.append(full)
            print(
                f"{kind} full: final {full['curve'][-1][1]:.4f}, target {target:.4f} reached after "
                f"{full['seconds_to_target']:.1f} s of training",
                flush=True,
            )
            for granularity in args.granularities:
                for frozen in args.frozen:
                    run = train_to_accuracy(kind, "dropped", granularity, frozen, splits, args)
                    run["target"] = target
                    run["seconds_to_target"] = seconds_to(run["curve"], target)
                    accuracy.append(run)
                    reached = run["seconds_to_target"]
                    print(
                        f"{kind} {granularity:8s} frozen {frozen:.0%} (actual {run['frozen_fraction_actual']:.1%}): "
                        f"final {run['curve'][-1][1]:.4f}, "
                        + ("target not reached" if reached is None else f"target after {reached:.1f} s")
                        + f" (full: {full['seconds_to_target']:.1f} s)",
                        flush=True,
                    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
    result = {
        "config": config,
        "cpu_count": os.cpu_count(),
        "seconds": time.perf_counter() - started,
        "step_time": timing,
        "time_to_accuracy": accuracy,
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
