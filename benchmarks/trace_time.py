"""Benchmark: wall time of the first ``fit`` (mostly tracing) with SelectiveOptimizer(Adam) vs plain Adam.

keras.applications.MobileNetV2 (weights=None, alpha and input size below, 10
classes) trains one short ``fit`` (``--steps`` batches of ``--batch``) from a
fresh model: that first call traces and compiles Keras' train function, which
dominates its time. Side by side in one process, in rounds whose order flips
each round: a fresh model with ``keras.optimizers.Adam(1e-3)``, one with
``SelectiveOptimizer(Adam(1e-3), keep=0.1, warmup_steps=100, window=20)``
(gradient_sum, global; the steps stay in the warm-up, the trace is the same
at every step), and each of the two after ``model.save`` +
``keras.saving.load_model`` (the loaded model's first ``fit`` traces again).
Reported: every timing, how many times each ``fit`` traced the train step, the
medians, and the ratios selective / plain of the medians (the target of issue
14: at most 1.5). Timings on a shared machine are noisy: compare the ratios,
and read ``machine.load_average_1min``.

With ``--breakdown`` it also traces the pieces of the wrapper's step on their
own, each in a ``tf.function`` over the model's variables, and reports the
trace seconds and the graph's ops (cond branches and loop bodies included):
the inner Adam update, the criterion's accumulation, the selection (scores +
exact top-k + the selected-only state's selection), the selected-only
selection alone, the restricted update and the whole ``apply_gradients``.

    python -m benchmarks.trace_time --out results/bench_trace_time.json
    python -m benchmarks.trace_time --metrics accuracy --out results/bench_trace_time_accuracy.json
    python -m benchmarks.trace_time --breakdown-only --out results/bench_trace_breakdown.json
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import tf_selopt
from benchmarks.common import write_result

KINDS = ("plain", "selective")


def build(kind: str, alpha: float, size: int, seed: int, metrics=()) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None, classes=10)
    inner = keras.optimizers.Adam(1e-3)
    optimizer = (
        inner
        if kind == "plain"
        else tf_selopt.SelectiveOptimizer(inner, keep=0.1, warmup_steps=100, window=20, seed=seed)
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=list(metrics) or None)
    return model


def first_fit(model, x, y, batch: int) -> tuple:
    """Seconds of the first ``fit`` and how many times it traced the train step (``train_step`` runs in Python
    only while being traced)."""
    traces, train_step = [], model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    del model.train_step
    return seconds, len(traces)


def breakdown(alpha: float, size: int, seed: int) -> dict:
    """Trace + first-call seconds of the wrapper's pieces, each in its own tf.function."""
    model = build("selective", alpha, size, seed)
    variables = model.trainable_variables
    optimizer = model.optimizer
    optimizer.build(variables)
    selective = optimizer._selective  # the shared core (tf_selopt.core.selective.Selective)
    grads = [tf.ones_like(v) * 1e-3 for v in variables]
    indices = list(range(len(variables)))
    inner = optimizer.inner_optimizer
    pieces = {
        "inner_adam_update": lambda: inner.apply(grads, variables),
        "criterion_accumulate": lambda: selective._accumulate(grads, variables, indices),
        "selection": selective._select,
        "selected_only_selection": lambda: selective.path.updater.select(
            [tf.convert_to_tensor(m) for m in selective.masks], tf.constant(True)
        ),  # (the default update path, "selected_only", where Adam's is exact)
        "restricted_update": lambda: selective.path.apply(grads, variables, indices, lambda g, v: inner.apply(g, v)),
        "apply_gradients_whole_step": lambda: optimizer.apply_gradients(zip(grads, variables)),
    }
    out = {}
    for name, fn in pieces.items():
        start = time.perf_counter()
        graph = tf.function(lambda fn=fn: (fn(), 0)[1]).get_concrete_function().graph
        out[name] = {"trace_s": round(time.perf_counter() - start, 2), "graph_ops": graph_ops(graph)}
    return out


def graph_ops(graph) -> int:
    """Nodes of ``graph``, those of the functions it calls (cond branches, while bodies) included."""
    graph_def = graph.as_graph_def()
    return len(graph_def.node) + sum(len(f.node_def) for f in graph_def.library.function)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_trace_time.json"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--no-load", action="store_true", help="skip the after-load_model timings")
    parser.add_argument(
        "--metrics",
        nargs="*",
        default=[],
        help="compile metrics, e.g. accuracy (Keras builds them in the first trace: the step is traced twice)",
    )
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--breakdown-only", action="store_true", help="only the pieces (no fits)")
    args = parser.parse_args(argv)
    model_name = f"MobileNetV2(alpha={args.alpha}, input {args.size}x{args.size}x3, weights=None, classes=10)"
    if args.breakdown_only:
        result = {"model": model_name, "breakdown": breakdown(args.alpha, args.size, seed=0)}
        print(result)
        write_result(args.out, result)
        return
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.uniform(-1, 1, (n, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, n)
    times = {kind: [] for kind in KINDS}
    loaded = {kind: [] for kind in KINDS}
    traces = {kind: [] for kind in KINDS}
    traces_after_load = {kind: [] for kind in KINDS}
    work = tempfile.mkdtemp()
    for r in range(args.rounds):
        for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
            model = build(kind, args.alpha, args.size, seed=r, metrics=args.metrics)
            seconds, count = first_fit(model, x, y, args.batch)
            times[kind].append(round(seconds, 2))
            traces[kind].append(count)
            print(f"round {r} {kind}: first fit {times[kind][-1]} s, train step traced {count}x", flush=True)
            if args.no_load:
                continue
            path = f"{work}/{kind}_{r}.keras"
            model.save(path)
            again = keras.saving.load_model(path)
            seconds, count = first_fit(again, x, y, args.batch)
            loaded[kind].append(round(seconds, 2))
            traces_after_load[kind].append(count)
            print(f"round {r} {kind}: first fit after load_model {loaded[kind][-1]} s, traced {count}x", flush=True)
    result = {
        "model": model_name,
        "fit": f"{args.steps} steps of batch {args.batch}, fresh model each time",
        "jit_compile": bool(model.jit_compile),
        "metrics": args.metrics,
        "first_fit_s": times,
        "train_step_traces": traces,
        "median_first_fit_s": {k: statistics.median(v) for k, v in times.items()},
        "ratio_selective_over_plain": round(
            statistics.median(times["selective"]) / statistics.median(times["plain"]), 2
        ),
    }
    if not args.no_load:
        result["first_fit_after_load_model_s"] = loaded
        result["train_step_traces_after_load_model"] = traces_after_load
        result["median_first_fit_after_load_model_s"] = {k: statistics.median(v) for k, v in loaded.items()}
        result["ratio_after_load_selective_over_plain"] = round(
            statistics.median(loaded["selective"]) / statistics.median(loaded["plain"]), 2
        )
    if args.breakdown:
        result["breakdown"] = breakdown(args.alpha, args.size, seed=0)
    print(result)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
