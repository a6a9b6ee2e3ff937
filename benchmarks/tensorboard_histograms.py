"""What the score histograms at every window step cost: ``SelectionMonitor`` in a run of the demo.

The demo's selection run (LeNet-300-100, bundled MNIST subset, Adam 1e-3, batch 64, 55 steps per epoch,
``warmup_steps`` 55, ``window`` 20, ``gradient_sum``, keep 10%) for ``--epochs`` epochs with
``SelectionMonitor(histogram_freq=1)`` (histograms at the 19 window steps and at the selection) and
``histogram_freq=0`` (none), alternating ``--pairs`` times in one process. Measured: ``fit``'s wall time
per arm, the time spent in the monitor's histogram writes (timed around ``_write_histograms``) and the
bytes of the event files. The load average before and after is recorded: the machine is shared.

    python -m benchmarks.tensorboard_histograms --out results/bench_tensorboard_histograms.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import tempfile
import time


def run(histogram_freq, epochs, splits):
    import keras

    import tf_selopt
    from tf_selopt.keras.callbacks import SelectionMonitor
    from tf_selopt.study import models

    spent = []

    class Timed(SelectionMonitor):
        def _write_histograms(self, step):
            start = time.perf_counter()
            super()._write_histograms(step)
            spent.append(time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    model = models.lenet_300_100()
    opt = tf_selopt.SelectiveOptimizer(
        keras.optimizers.Adam(1e-3), criterion="gradient_sum", keep=0.1, warmup_steps=55, window=20, seed=0
    )
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with tempfile.TemporaryDirectory() as log_dir:
        monitor = Timed(log_dir, histogram_freq=histogram_freq)
        start = time.perf_counter()
        model.fit(splits.x_train, splits.y_train, batch_size=64, epochs=epochs, verbose=0, callbacks=[monitor])
        fit = time.perf_counter() - start
        size = sum(p.stat().st_size for p in pathlib.Path(log_dir).rglob("events.out.tfevents.*"))
    histogram_seconds = sum(spent) if histogram_freq else 0.0
    return {"fit_seconds": fit, "histogram_seconds": histogram_seconds, "event_bytes": size}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench_tensorboard_histograms.json")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    from tf_selopt.study import data

    splits = data.load("mnist")
    load_before = os.getloadavg()
    rows = []
    for pair in range(args.pairs):
        for freq in (1, 0) if pair % 2 == 0 else (0, 1):
            rows.append({"pair": pair, "histogram_freq": freq, **run(freq, args.epochs, splits)})
            print(rows[-1], flush=True)
    on = [r for r in rows if r["histogram_freq"] == 1]
    off = [r for r in rows if r["histogram_freq"] == 0]
    summary = {
        "histogram_seconds_median": statistics.median(r["histogram_seconds"] for r in on),
        "fit_seconds_median_on": statistics.median(r["fit_seconds"] for r in on),
        "fit_seconds_median_off": statistics.median(r["fit_seconds"] for r in off),
        "event_bytes_on": on[0]["event_bytes"],
        "event_bytes_off": off[0]["event_bytes"],
    }
    result = {
        "command": "python -m benchmarks.tensorboard_histograms "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "rows": rows,
        "summary": summary,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
