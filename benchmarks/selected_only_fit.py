"""Selected-only path through ``model.fit`` (issue 16): resident memory and whole-``fit`` time against Adam.

Each run is its own process (RSS is per process) and trains one model with
``model.fit`` (batch 128, ``--steps`` steps, one epoch):

* ``adam``: ``keras.optimizers.Adam(1e-3)``;
* ``masked``: ``tf_selopt.SelectiveOptimizer(Adam, keep, update="masked")``;
* ``selected_only``: ``tf_selopt.SelectiveOptimizer(Adam, keep)`` (``update="auto"``);

the two wrappers with warm-up 10% of the steps (window 3, ``gradient_sum``) and
``tf_selopt.TracePerPhase``, which on the selected-only path releases the
warm-up's N-sized state at the switch to the restricted phase. After every
batch the process reads its RSS (``VmRSS``); reported per mode (median over
``--repeats`` processes, alternating): the median RSS over the batches after
the selection (for ``adam``: the same batches), the peak RSS
(``VmHWM``), ``fit``'s wall time, and the optimizer's bytes per model
parameter at the end (``optimizer.variables``).

Models: ``mlp`` 784-2048-2048-10 (5,824,522 parameters) and ``embedding``, an
``Embedding(200_000, 100)`` over 8 token ids, averaged, then Dense 256 and 10
(20,028,426 parameters; the embedding's gradient is ``IndexedSlices``).

    python -m benchmarks.selected_only_fit --out results/bench_selected_only_fit.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

from benchmarks.common import MIB, ROOT, rss_bytes, write_result

MODES = ("adam", "masked", "selected_only")
MODELS = ("mlp", "embedding")
BATCH = 128


def build(name: str, steps: int, seed: int = 0):
    import keras
    import numpy as np

    from tf_selopt.study import models

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    if name == "mlp":
        model = models.mlp((2048, 2048), input_shape=(784,))
        x = rng.uniform(size=(steps * BATCH, 784)).astype("float32")
    else:
        model = keras.Sequential(
            [
                keras.Input((8,), dtype="int32"),
                keras.layers.Embedding(200_000, 100),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        x = rng.integers(0, 200_000, size=(steps * BATCH, 8)).astype("int32")
    y = rng.integers(0, 10, size=steps * BATCH).astype("int32")
    return model, x, y


def child(mode: str, model_name: str, steps: int, keep: float) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import tf_selopt

    model, x, y = build(model_name, steps)
    optimizer = keras.optimizers.Adam(1e-3)
    warmup = max(3, steps // 10)
    callbacks = []
    if mode != "adam":
        optimizer = tf_selopt.SelectiveOptimizer(
            optimizer, keep=keep, warmup_steps=warmup, window=3, seed=0, update="auto" if mode != "masked" else mode
        )
        callbacks.append(tf_selopt.TracePerPhase())
    samples = []

    class Sample(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            samples.append(rss_bytes())

    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = rss_bytes()
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=callbacks + [Sample()])
    seconds = time.perf_counter() - start
    restricted = samples[warmup + 1 :]  # batches after the selection step (warmup - 1) and the switch
    held = model.optimizer.variables
    result = {
        "num_parameters": model.count_params(),
        "rss_before_fit_bytes": before,
        "rss_restricted_median_bytes": statistics.median(restricted),
        "rss_last_bytes": samples[-1],
        "peak_rss_bytes": max(rss_bytes("VmHWM"), max(samples)),
        "fit_seconds": seconds,
        "optimizer_bytes_per_parameter": sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in held)
        / model.count_params(),
    }
    if mode != "adam":
        if int(optimizer.selections) != 1 or int(optimizer.selected_count) != optimizer.k:
            raise AssertionError(f"expected one selection of k={optimizer.k}")
        if optimizer.update_path != ("masked" if mode == "masked" else "selected_only"):
            raise AssertionError(f"{mode}: update_path {optimizer.update_path} ({optimizer.update_path_reason})")
        result["released"] = optimizer.warmup_state_released
        result["k"] = optimizer.k
    return result


def run_child(mode, model_name, steps, keep) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.selected_only_fit",
        "--child",
        mode,
        "--models",
        model_name,
        "--steps",
        str(steps),
        "--keep",
        str(keep),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(model_name, steps, keep, repeats) -> dict:
    runs = {mode: [] for mode in MODES}
    for r in range(repeats):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for mode in order:
            runs[mode].append(run_child(mode, model_name, steps, keep))

    def median(key, scale=1.0):
        return {mode: statistics.median(run[key] for run in runs[mode]) / scale for mode in MODES}

    restricted = median("rss_restricted_median_bytes", MIB)
    peak = median("peak_rss_bytes", MIB)
    seconds = median("fit_seconds")
    return {
        "model": model_name,
        "num_parameters": runs["adam"][0]["num_parameters"],
        "k": runs["selected_only"][0]["k"],
        "keep": keep,
        "steps": steps,
        "warmup_steps": max(3, steps // 10),
        "released": runs["selected_only"][0]["released"],
        "rss_restricted_mib": restricted,
        "peak_rss_mib": peak,
        "fit_seconds": seconds,
        "fit_ratio_to_adam": {mode: seconds[mode] / seconds["adam"] for mode in MODES},
        "optimizer_bytes_per_parameter": median("optimizer_bytes_per_parameter"),
        "goal_rss_below_adam": restricted["selected_only"] < restricted["adam"],
        "runs": runs,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--keep", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=2, help="processes per mode and model")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_selected_only_fit.json"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.models[0], args.steps, args.keep)))
        return
    rows = []
    print("| model | parameters | mode | RSS after selection MiB | peak RSS MiB | fit s (/ Adam) | optimizer B/param |")
    print("|---|---|---|---|---|---|---|")
    for model_name in args.models:
        row = measure(model_name, args.steps, args.keep, args.repeats)
        rows.append(row)
        for mode in MODES:
            print(
                f"| {model_name} | {row['num_parameters']:,} | {mode} | {row['rss_restricted_mib'][mode]:.0f} | "
                f"{row['peak_rss_mib'][mode]:.0f} | {row['fit_seconds'][mode]:.1f} "
                f"({row['fit_ratio_to_adam'][mode]:.2f}) | {row['optimizer_bytes_per_parameter'][mode]:.2f} |",
                flush=True,
            )
    write_result(args.out, {"config": vars(args) | {"out": str(args.out)}, "rows": rows})


if __name__ == "__main__":
    main()
