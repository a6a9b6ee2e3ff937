"""Quick timing of exact top-k selection vs a full sort (the full benchmark is issue 6).

    python examples/selection_timing.py
"""

import time

import tensorflow as tf

from tf_selopt.selection import top_k_mask


def best_of(fn, x, repeats=3):
    fn(x).numpy()  # trace and compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x).numpy()
        times.append(time.perf_counter() - start)
    return min(times)


for n in (10**5, 10**6, 10**7):
    scores = tf.random.stateless_uniform([n], seed=[0, 0])
    k = n // 10
    ours = best_of(tf.function(lambda s: top_k_mask(s, k), jit_compile=True), scores)
    top_k = best_of(tf.function(lambda s: tf.math.top_k(s, k, sorted=False).indices, jit_compile=True), scores)
    sort = best_of(tf.function(tf.sort), scores)
    print(f"N={n:>9,}: ours {ours:.3f} s, top_k {top_k:.3f} s, sort {sort:.3f} s, sort/ours {sort / ours:.1f}x")
