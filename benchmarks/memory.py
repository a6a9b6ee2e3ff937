"""Benchmark 4: peak resident memory (RSS) of training with and without the wrapper.

Each run is its own process (RSS is per process): it builds an MLP
784-H-H-10, trains it with ``model.fit`` for ``--steps`` steps (batch 128) with
``keras.optimizers.Adam(1e-3)`` alone (``adam``) or wrapped in
``SelectiveOptimizer`` (``ours``: keep 10%, selection half-way, so the run has
warm-up, window, selection and masked steps), and reports its peak RSS
(``VmHWM``) and its RSS before and after training. The runs
alternate (adam, ours, adam, ...); the medians are compared with the extra
state the wrapper keeps during the warm-up: masks (1 byte per parameter), scores
(4) and the criterion's slots (4 each: one for ``gradient_sum``, two for
``preconditioned``). ``optimizer_bytes_after_fit``: what the optimizer holds at
the end (on the selected-only path the selection released the N-sized warm-up
state).

    python -m benchmarks.memory --out results/bench_memory.json
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import subprocess
import sys

from benchmarks.common import MIB, ROOT, rss_bytes, write_result

MODES = ("adam", "ours")
CRITERIA = ("gradient_sum", "preconditioned", "fisher", "magnitude", "random")
BATCH = 128


def child(mode: str, hidden: int, steps: int, criterion: str) -> dict:
    """Train once in this process; peak and pre-training RSS, and the wrapper's state in bytes."""
    import keras
    import numpy as np
    import tensorflow as tf

    import tf_selopt  # imported by both modes, so that both hold the same code
    from tf_selopt.study import models

    keras.utils.set_random_seed(0)
    model = models.mlp((hidden, hidden), input_shape=(784,))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(steps * BATCH, 784)).astype("float32")
    y = rng.integers(0, 10, size=steps * BATCH).astype("int32")
    optimizer = keras.optimizers.Adam(1e-3)
    if mode == "ours":
        optimizer = tf_selopt.SelectiveOptimizer(
            optimizer,
            criterion=criterion,
            keep=0.1,
            warmup_steps=steps // 2,
            window=max(1, min(20, steps // 2)),
            num_examples=len(x),
            seed=0,
        )
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = rss_bytes()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    after = rss_bytes()
    # Linux syncs per-thread RSS counters lazily: the peak (KiB) can lag the current VmRSS by a few hundred KiB.
    peak = max(rss_bytes("VmHWM"), after)
    result = {
        "peak_rss_bytes": peak,
        "rss_before_fit_bytes": before,
        "rss_after_fit_bytes": after,
        "num_parameters": model.count_params(),
    }
    if mode == "ours":
        if int(optimizer.selections) != 1 or int(optimizer.selected_count) != optimizer.k:
            raise AssertionError(f"expected one selection of k={optimizer.k}: {int(optimizer.selections)} selections")
        # its warm-up peak: masks (1 B/param), scores (4) and window slots (4 each); the selection releases
        # the scores and the window on this path (``optimizer_bytes_after_fit`` is what stays)
        n = sum(math.prod(v.shape) for v in model.trainable_variables)
        result["wrapper_state_bytes"] = n * (1 + 4 + 4 * len(optimizer.criterion.slots))
        result["warmup_state_released"] = optimizer.warmup_state_released
    result["optimizer_bytes_after_fit"] = sum(
        math.prod(v.shape) * tf.as_dtype(v.dtype).size for v in model.optimizer.variables
    )
    return result


def run_child(mode: str, hidden: int, steps: int, criterion: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--child",
        mode,
        "--hidden",
        str(hidden),
        "--steps",
        str(steps),
        "--criterion",
        criterion,
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(hidden: int, steps: int, repeats: int, criterion: str) -> dict:
    runs = {mode: [] for mode in MODES}
    for r in range(repeats):
        for mode in MODES[:: 1 if r % 2 == 0 else -1]:
            runs[mode].append(run_child(mode, hidden, steps, criterion))
    peak = {mode: statistics.median(run["peak_rss_bytes"] for run in runs[mode]) for mode in MODES}
    before = {mode: statistics.median(run["rss_before_fit_bytes"] for run in runs[mode]) for mode in MODES}
    after = {mode: statistics.median(run["rss_after_fit_bytes"] for run in runs[mode]) for mode in MODES}
    n = runs["ours"][0]["num_parameters"]
    state = runs["ours"][0]["wrapper_state_bytes"]
    return {
        "hidden": hidden,
        "num_parameters": n,
        "steps": steps,
        "criterion": criterion,
        "peak_rss_mib": {mode: peak[mode] / MIB for mode in MODES},
        "peak_rss_mib_all_runs": {mode: [run["peak_rss_bytes"] / MIB for run in runs[mode]] for mode in MODES},
        "rss_before_fit_mib": {mode: before[mode] / MIB for mode in MODES},
        "rss_after_fit_mib": {mode: after[mode] / MIB for mode in MODES},
        "peak_difference_mib": (peak["ours"] - peak["adam"]) / MIB,
        "expected_state_mib": state / MIB,
        "expected_state_bytes_per_parameter": state / n,
        "model_and_adam_state_mib": 3 * 4 * n / MIB,  # weights + Adam's two moments, float32
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 2048], help="MLP widths H")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="processes per optimizer and width")
    parser.add_argument("--criterion", default="gradient_sum", choices=CRITERIA)
    parser.add_argument("--quick", action="store_true", help="smoke run: H = 64, 6 steps, 1 process each")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_memory.json"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.hidden[0], args.steps, args.criterion)))
        return
    if args.quick:
        args.hidden, args.steps, args.repeats = [64], 6, 1

    rows = []
    print(
        "| MLP | parameters | Adam peak MiB | ours peak MiB | difference MiB | difference after fit MiB "
        "| wrapper state MiB | weights+Adam MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for hidden in args.hidden:
        row = measure(hidden, args.steps, args.repeats, args.criterion)
        rows.append(row)
        peak, after = row["peak_rss_mib"], row["rss_after_fit_mib"]
        print(
            f"| 784-{hidden}-{hidden}-10 | {row['num_parameters']:,} | {peak['adam']:.1f} | {peak['ours']:.1f} | "
            f"{row['peak_difference_mib']:+.1f} | {after['ours'] - after['adam']:+.1f} | "
            f"{row['expected_state_mib']:.1f} | "
            f"{row['model_and_adam_state_mib']:.1f} |",
            flush=True,
        )
    write_result(args.out, {"config": vars(args) | {"out": str(args.out)}, "rows": rows})


if __name__ == "__main__":
    main()
