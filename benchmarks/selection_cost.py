"""Benchmark 2: exact top-k selection (``tf_selopt.core.selection.select``) vs a full sort.

k = 10% of N float32 scores, split over 4 variables of 40/30/20/10% of N, for
``scope="global"`` and ``"per_variable"``. The reference sorts all scores
(``tf.argsort(..., direction="DESCENDING", stable=True)``: on ties the lower
flat index first, the tie rule of ``select``) and takes the first k (per
variable: each variable's count from ``selection.per_variable_counts``). Both
are ``tf.function``s, timed with and without XLA; the masks must be identical
and hold exactly k ones, or the benchmark fails. Scores are
``tf.random.stateless_uniform`` (multiples of 2**-23: at N = 1e7 values
repeat, and ``ties_at_threshold`` counts the scores equal to the k-th largest). For the global scope
``tf.math.top_k(sorted=False)`` is timed too (a partial sort; its mask is
compared, not required to match). The growth exponent is the least-squares
slope of log(time) against log(N).

    python -m benchmarks.selection_cost --out results/bench_selection.json
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics

import numpy as np
import tensorflow as tf

from benchmarks.common import timed, write_result
from tf_selopt.core import selection

SHARES = (0.4, 0.3, 0.2, 0.1)  # the N scores split over 4 variables
KEEP = 0.1


def split_sizes(n: int) -> list[int]:
    sizes = [int(n * share) for share in SHARES[:-1]]
    return sizes + [n - sum(sizes)]


def sort_select(scores, k: int, scope: str):
    """Reference: sort every score (descending, stable) and keep the first k (per variable: k_i)."""

    def first(flat, count):
        order = tf.argsort(flat, direction="DESCENDING", stable=True)
        return tf.scatter_nd(order[:count, None], tf.ones([count], tf.bool), tf.shape(flat))

    sizes = [int(s.shape.num_elements()) for s in scores]
    if scope == "per_variable":
        return [first(s, k_i) for s, k_i in zip(scores, selection.per_variable_counts(sizes, k))]
    return tf.split(first(tf.concat(scores, 0), k), sizes)


def top_k_select(scores, k: int):
    """``tf.math.top_k(sorted=False)`` over all scores (global), as masks."""
    flat = tf.concat(scores, 0)
    indices = tf.math.top_k(flat, k, sorted=False).indices
    mask = tf.scatter_nd(indices[:, None], tf.ones([k], tf.bool), tf.shape(flat))
    return tf.split(mask, [s.shape[0] for s in scores])


def _run(fn, scores) -> list[np.ndarray]:
    return [m.numpy() for m in fn(*scores)]


def time_methods(methods: dict, scores, repeats: int) -> dict:
    """Median (wall s, CPU s) per method; the methods take turns, ``repeats`` times."""
    times = {name: [] for name in methods}
    for r in range(repeats):
        for name in list(methods)[:: 1 if r % 2 == 0 else -1]:
            times[name].append(timed(_run, methods[name], scores))
    return {name: tuple(statistics.median(t[c] for t in ts) for c in (0, 1)) for name, ts in times.items()}


def measure(n: int, scope: str, jit: bool, repeats: int, seed: int) -> dict:
    sizes = split_sizes(n)
    k = selection.resolve_count(KEEP, n)
    scores = [tf.random.stateless_uniform([size], seed=[seed, i]) for i, size in enumerate(sizes)]
    methods = {
        "ours": tf.function(lambda *s: selection.select(list(s), k, scope), jit_compile=jit),
        "sort": tf.function(lambda *s: sort_select(list(s), k, scope), jit_compile=jit),
    }
    if scope == "global":
        methods["top_k"] = tf.function(lambda *s: top_k_select(list(s), k), jit_compile=jit)
    masks = {name: _run(fn, scores) for name, fn in methods.items()}  # also traces and compiles
    same = all(np.array_equal(a, b) for a, b in zip(masks["ours"], masks["sort"]))
    count = sum(int(m.sum()) for m in masks["ours"])
    if not same or count != k:
        raise AssertionError(f"N={n} {scope} jit={jit}: masks differ from the sort ({same}) or count {count} != k={k}")
    times = time_methods(methods, scores, repeats)
    row = {
        "n": n,
        "k": k,
        "scope": scope,
        "jit_compile": jit,
        "variable_sizes": sizes,
        "same_mask_as_sort": same,
        "selected": count,
        "ties_at_threshold": _ties(scores, masks["ours"]),
        "seconds": {name: t[0] for name, t in times.items()},
        "cpu_seconds": {name: t[1] for name, t in times.items()},
        "sort_over_ours": times["sort"][0] / times["ours"][0],
    }
    if "top_k" in masks:
        row["top_k_same_mask"] = all(np.array_equal(a, b) for a, b in zip(masks["ours"], masks["top_k"]))
        row["top_k_over_ours"] = times["top_k"][0] / times["ours"][0]
    return row


def _ties(scores, masks) -> int:
    """Scores equal to the smallest selected score (over all variables): how many the tie rule had to order."""
    flat = np.concatenate([s.numpy() for s in scores])
    threshold = flat[np.concatenate(masks)].min()
    return int((flat == threshold).sum())


def growth_exponent(rows, method: str) -> float:
    """Least-squares slope of log(seconds) against log(N) over ``rows``: 1.0 is linear."""
    x = [math.log(r["n"]) for r in rows]
    y = [math.log(r["seconds"][method]) for r in rows]
    return float(np.polyfit(x, y, 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7], help="N, number of scores")
    parser.add_argument("--scopes", nargs="+", default=list(selection.SCOPES), choices=selection.SCOPES)
    parser.add_argument("--jit", nargs="+", default=["off", "on"], choices=["off", "on"], help="XLA off/on")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 1e4 and 1e5, no XLA, 2 repeats")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_selection.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.jit, args.repeats = [1e4, 1e5], ["off"], 2

    rows, summary = [], []
    print("| scope | XLA | N | ours s | sort s | sort/ours | top_k(sorted=False) s |")
    print("|---|---|---|---|---|---|---|")
    for scope in args.scopes:
        for jit in args.jit:
            group = []
            for n in args.sizes:
                row = measure(int(n), scope, jit == "on", args.repeats, args.seed)
                group.append(row)
                s = row["seconds"]
                top_k = f"{s['top_k']:.4f}" if "top_k" in s else ""
                print(
                    f"| {scope} | {jit} | {int(n):,} | {s['ours']:.4f} | {s['sort']:.4f} | "
                    f"{row['sort_over_ours']:.1f}x | {top_k} |",
                    flush=True,
                )
            rows += group
            largest = group[-1]
            summary.append(
                {
                    "scope": scope,
                    "jit_compile": jit == "on",
                    "growth_exponent": {m: growth_exponent(group, m) for m in group[0]["seconds"]},
                    "growth_exponent_last_two_n": {m: growth_exponent(group[-2:], m) for m in group[0]["seconds"]},
                    "largest_n": largest["n"],
                    "sort_over_ours_at_largest_n": largest["sort_over_ours"],
                    "goal_3x_at_largest_n_met": largest["sort_over_ours"] >= 3.0,
                }
            )
    print(
        "\ngrowth exponent (log-log slope of seconds vs N, 1 = linear; in brackets over the two largest N)"
        " and sort/ours at the largest N (goal >= 3x):"
    )
    for s in summary:
        last_two = s["growth_exponent_last_two_n"]
        exps = ", ".join(f"{m} {e:.2f} ({last_two[m]:.2f})" for m, e in s["growth_exponent"].items())
        print(
            f"- {s['scope']}, XLA {'on' if s['jit_compile'] else 'off'}: {exps}; "
            f"sort/ours {s['sort_over_ours_at_largest_n']:.1f}x "
            f"({'met' if s['goal_3x_at_largest_n_met'] else 'MISSED'})"
        )
    write_result(args.out, {"config": vars(args) | {"out": str(args.out)}, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
