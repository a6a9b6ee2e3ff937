"""Benchmark: what the exact top-k's search for the k-th largest key costs to trace, compile and run.

``tf_selopt.core.selection`` finds the threshold with a ``tf.while_loop`` over the 32 bits of the sortable
key (``loop``). Its reference here is the same 32 rounds unrolled in Python (``unrolled``: the code before the
loop), patched in for the measurement; both give the same masks (asserted). Side by side in one process:

* ``per_variable``: ``select(scores, k, scope="per_variable")`` over ``--variables`` variables of 64x64 in
  a ``tf.function``: graph ops, seconds to trace, seconds of the first call (graph optimisation + run);
* ``compile``: seconds of the first call of ``top_k_mask`` under ``jit_compile=True`` (N = ``--n``);
* ``run``: median seconds of ``--repeats`` calls of ``top_k_mask`` over N scores, with and without XLA.

    python -m benchmarks.selection_graph --out results/bench_selection_graph.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from tf_selopt.core import selection  # noqa: E402


def _kth_largest_key_unrolled(keys, k: int):
    """The reference: the 32 rounds of ``selection._kth_largest_key`` unrolled."""
    t = tf.constant(tf.int32.min, tf.int32)
    for bit in range(31, -1, -1):
        candidate = tf.zeros_like(t) if bit == 31 else tf.bitwise.bitwise_or(t, 1 << bit)
        count = tf.reduce_sum(tf.cast(keys >= candidate, tf.int32))
        t = tf.where(count >= k, candidate, t)
    return t


@contextlib.contextmanager
def _search(kind):
    loop = selection._kth_largest_key
    if kind == "unrolled":
        selection._kth_largest_key = _kth_largest_key_unrolled
    try:
        yield
    finally:
        selection._kth_largest_key = loop


def _per_variable(variables):
    scores = [tf.random.stateless_normal([64, 64], seed=[i, 0]) for i in range(variables)]
    k = int(0.1 * 64 * 64 * variables)
    fn = tf.function(lambda s: selection.select(s, k, scope="per_variable"))
    start = time.perf_counter()
    concrete = fn.get_concrete_function(scores)
    trace = time.perf_counter() - start
    start = time.perf_counter()
    masks = [m.numpy() for m in fn(scores)]
    first = time.perf_counter() - start
    return {"graph_ops": len(concrete.graph.get_operations()), "trace_s": trace, "first_call_s": first}, masks


def _top_k(n, repeats, jit):
    scores = tf.random.stateless_normal([n], seed=[1, 2])
    fn = tf.function(lambda s: selection.top_k_mask(s, n // 100), jit_compile=jit)
    start = time.perf_counter()
    mask = fn(scores).numpy()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(scores).numpy()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), mask


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variables", type=int, default=100)
    parser.add_argument("--n", type=int, default=5_800_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_selection_graph.json"))
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 variables, N = 10,000, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.variables, args.n, args.repeats = 3, 10_000, 1

    rows, masks = {}, {}
    for kind in ("unrolled", "loop"):
        with _search(kind):
            row, masks[kind, "per_variable"] = _per_variable(args.variables)
            for jit in (False, True):
                first, median, masks[kind, jit] = _top_k(args.n, args.repeats, jit)
                row[f"top_k_{'xla' if jit else 'graph'}"] = {"first_call_s": first, "median_s": median}
        rows[kind] = row
        print(kind, row)
    pairs = list(zip(masks["unrolled", "per_variable"], masks["loop", "per_variable"]))
    pairs += [(masks["unrolled", jit], masks["loop", jit]) for jit in (False, True)]
    same = all(np.array_equal(a, b) for a, b in pairs)
    assert same, "the loop and the unrolled search gave different masks"
    config = {"variables": args.variables, "n": args.n, "k_top_k": args.n // 100, "repeats": args.repeats}
    config["quick"] = args.quick
    write_result(args.out, {"config": config, "same_masks": same, "rows": rows})


if __name__ == "__main__":
    main()
