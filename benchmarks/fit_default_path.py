"""What a user runs: ``model.fit`` with the default ``compile``, SelectiveOptimizer against plain Adam.

Model: MLP 784-2048-2048-10 (5,824,522 parameters), batch 128, synthetic data
(timing only), one epoch of ``--steps`` steps. Arms, each in its own process and
with the same ``compile`` flags (``loss=SparseCategoricalCrossentropy(from_logits=True)``,
no metrics, ``jit_compile`` either the default ``"auto"``, which is False on a
CPU-only machine, or ``True``):

* ``adam``: ``keras.optimizers.Adam(1e-3)``;
* ``selective``: ``tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-3), keep=K,
  warmup_steps=steps // 10, window=3, seed=0)``, no callback (the default path);
* ``selective_trace`` (``--trace-per-phase``): the same with ``tf_selopt.TracePerPhase()``;
* ``sgd`` (``--floor``): ``keras.optimizers.SGD(1e-3)``, the cheapest update Keras has (one
  multiply-subtract per parameter): forward and backward pass plus next to no update, the floor
  no restricted step can go below.

For every (pair, XLA setting, keep) the arms run one after the other, the
first arm rotating from pair to pair, so slow drift of the machine falls on
all arms alike; the ratios selective / Adam are taken within a pair, then
summarised (median, min, max over pairs).

Per process: ``fit``'s wall time and the process's CPU time over it; every
batch's wall and CPU time between ``on_train_batch_begin`` and
``on_train_batch_end``; the restricted step = the median over the batches from
``warmup_steps + SKIP`` on (plain Adam: the same batch indices); the first
batch (trace, for XLA also the compile, and one step); peak RSS (``VmHWM``);
the optimizer's bytes per model parameter at the end (``optimizer.variables``);
and what else ran on the machine meanwhile: the load average before and
after, the system-wide CPU ticks of ``/proc/stat`` over the ``fit``
(busy, idle and *steal*, the time the hypervisor gave this VM's CPUs to
someone else) and the process's context switches and page faults.

Settings applied identically to every arm (recorded in the JSON, ``child_env``):

* ``GLIBC_TUNABLES`` = ``MALLOC_SETTING``: fixed malloc thresholds (freed buffers stay
  in the heap) and transparent huge pages for what malloc maps. Why: with glibc's
  defaults and TensorFlow's two intra-op threads, plain Adam's step on this
  model unmaps and re-faults its largest buffers every step, and how much
  differs between processes of the same arm (8,194 or 4,097 page faults per
  step, 0-1 with one intra-op thread: which thread frees a buffer moves
  glibc's dynamic mmap threshold). On the 2-vCPU KVM guest these benchmarks
  ran on, a fresh page costs about 5 us of CPU (8,192 of them: 44-52 ms), so
  the same arm's step moved by tens of ms between processes for the same
  work. With the setting: 0 faults per step on both arms without XLA; under
  XLA the selective step still maps buffers above glibc's 32 MiB cap, on
  2 MiB pages (417 faults per step instead of 8,749). ``step_minor_faults``
  in every run shows it. ``--glibc-defaults`` runs without it (a user's
  default; the faults then count against whichever arm has them).
* ``TF_NUM_INTRAOP_THREADS`` = ``TF_NUM_INTEROP_THREADS`` = ``OMP_NUM_THREADS`` =
  the usable CPU count: TensorFlow's own defaults made explicit, so that a
  shell setting cannot differ between arms. oneDNN is left as TensorFlow sets
  it (off on an AVX2-only CPU; ``TF_ENABLE_ONEDNN_OPTS=1`` changes the
  kernels measured, not only the noise).

``--env KEY=VALUE`` adds or overrides variables for every child. What the
rest of the spread is (docs/results.md, "Default-path fit"): other tenants
(other processes' busy time and the hypervisor's ``steal`` are in every run);
read the ratios within pairs, their spread over pairs and the CPU-time ratios
next to the wall-time ones, and run on an idle machine (``load_before`` near 0).

    python -m benchmarks.fit_default_path --out results/bench_fit_default_path.json
    python -m benchmarks.fit_default_path --quick --out /tmp/fit_default_path.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.common import MIB, ROOT, rss_bytes, write_result

BATCH = 128
HIDDEN = (2048, 2048)
SKIP = 5  # restricted batches skipped after the first restricted one (its retrace with TracePerPhase, caches)
ARMS = ("adam", "selective", "selective_trace", "sgd")
JIT = {"off": "auto", "on": True}
MALLOC_SETTING = (
    "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432"
    ":glibc.malloc.trim_threshold=4294967296:glibc.malloc.top_pad=268435456"
)


def child_settings(extra: dict[str, str], glibc_defaults: bool = False) -> dict[str, str]:
    """What every child's environment sets on top of this one's: threads made explicit, the malloc setting
    (unless ``glibc_defaults``), then ``extra``."""
    threads = str(len(os.sched_getaffinity(0)))
    settings = {} if glibc_defaults else {"GLIBC_TUNABLES": MALLOC_SETTING}
    settings |= {
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONHASHSEED": "0",
    }
    return settings | extra


def proc_stat_ticks() -> dict[str, int]:
    """System-wide CPU ticks (all CPUs) from ``/proc/stat``: busy, idle (with iowait) and steal."""
    fields = pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}


def child(arm: str, steps: int, keep: float, jit: str) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import tf_selopt
    from tf_selopt.study import models

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = models.mlp(HIDDEN, input_shape=(784,))
    x = rng.uniform(size=(steps * BATCH, 784)).astype("float32")
    y = rng.integers(0, 10, size=steps * BATCH).astype("int32")
    warmup = max(3, steps // 10)
    optimizer = keras.optimizers.SGD(1e-3) if arm == "sgd" else keras.optimizers.Adam(1e-3)
    callbacks = []
    if arm.startswith("selective"):
        optimizer = tf_selopt.SelectiveOptimizer(optimizer, keep=keep, warmup_steps=warmup, window=3, seed=0)
        if arm == "selective_trace":
            callbacks.append(tf_selopt.TracePerPhase())
    walls, cpus, faults = [], [], []

    marks = {}  # perf_counter at fit's callback events: where the time outside the batches goes

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            marks["train_begin"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            marks["epoch_end"] = time.perf_counter()

        def on_train_end(self, logs=None):
            marks["train_end"] = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            marks.setdefault("first_batch_begin", time.perf_counter())
            self.start = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        def on_train_batch_end(self, batch, logs=None):
            marks["last_batch_end"] = time.perf_counter()
            walls.append(time.perf_counter() - self.start[0])
            cpus.append(time.process_time() - self.start[1])
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.start[2])

    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=JIT[jit]
    )
    load_before = os.getloadavg()[0]
    ticks, usage = proc_stat_ticks(), resource.getrusage(resource.RUSAGE_SELF)
    wall, cpu = time.perf_counter(), time.process_time()
    fit_start = wall
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=callbacks + [Clock()])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ticks = {key: value - ticks[key] for key, value in proc_stat_ticks().items()}
    after = resource.getrusage(resource.RUSAGE_SELF)
    restricted = slice(warmup + SKIP, steps)
    tick = os.sysconf("SC_CLK_TCK")
    n = model.count_params()
    result = {
        "arm": arm,
        "keep": keep,
        "jit": jit,
        "steps": steps,
        "warmup_steps": warmup,
        "num_parameters": n,
        "fit_wall_s": wall,
        "fit_cpu_s": cpu,
        # the batches alone (what ``fit`` spends outside them: data set-up, end of epoch, pauses of the VM)
        "batches_wall_s": sum(walls),
        "batches_cpu_s": sum(cpus),
        "step_ms": 1e3 * statistics.median(walls[restricted]),
        "step_cpu_ms": 1e3 * statistics.median(cpus[restricted]),
        "step_minor_faults": statistics.median(faults[restricted]),
        "warmup_step_ms": 1e3 * statistics.median(walls[1 : warmup - 1]),
        "first_step_s": walls[0],
        "first_step_cpu_s": cpus[0],
        "selection_step_s": walls[warmup - 1],
        "switch_step_s": walls[warmup],
        "peak_rss_mib": rss_bytes("VmHWM") / MIB,
        "rss_after_fit_mib": rss_bytes() / MIB,
        "optimizer_bytes_per_parameter": sum(
            int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in model.optimizer.variables
        )
        / n,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        # Machine-wide over the fit, in CPU-seconds: everything busy (this process included), idle, stolen.
        "system_busy_s": ticks["busy"] / tick,
        "system_idle_s": ticks["idle"] / tick,
        "system_steal_s": ticks["steal"] / tick,
        "others_cpu_s": max(0.0, ticks["busy"] / tick - cpu),  # what other processes used (about: ticks are 10 ms)
        "voluntary_switches": after.ru_nvcsw - usage.ru_nvcsw,
        "involuntary_switches": after.ru_nivcsw - usage.ru_nivcsw,
        "minor_faults": after.ru_minflt - usage.ru_minflt,
        "batch_ms": [round(1e3 * w, 2) for w in walls],
        "batch_cpu_ms": [round(1e3 * c, 2) for c in cpus],
        # seconds from the start of ``fit`` to each event; ``fit_wall_s`` is its end
        "fit_events_s": {key: round(value - fit_start, 3) for key, value in marks.items()},
    }
    if arm.startswith("selective"):
        if int(optimizer.selections) != 1 or int(optimizer.selected_count) != optimizer.k:
            raise AssertionError(f"expected one selection of k={optimizer.k}")
        result |= {
            "k": optimizer.k,
            "update_path": optimizer.update_path,
            "warmup_state_released": optimizer.warmup_state_released,
        }
    return result


def run_child(arm: str, steps: int, keep: float, jit: str, env: dict[str, str]) -> dict:
    """One process; ``env`` is added to this process's environment."""
    cmd = [sys.executable, "-m", "benchmarks.fit_default_path", "--child", arm, "--steps", str(steps)]
    cmd += ["--keep", str(keep), "--jit", jit]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ) | env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values) -> dict:
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


SUMMARISED = (
    "fit_wall_s",
    "fit_cpu_s",
    "batches_wall_s",
    "batches_cpu_s",
    "step_ms",
    "step_cpu_ms",
    "first_step_s",
    "peak_rss_mib",
    "optimizer_bytes_per_parameter",
    "system_steal_s",
    "step_minor_faults",
)
RATIOS = ("fit_wall_s", "fit_cpu_s", "batches_wall_s", "batches_cpu_s", "step_ms", "step_cpu_ms")


def summarise(runs: list[dict], arms: tuple[str, ...]) -> list[dict]:
    """Per (jit, keep): each arm's median / min / max; per pair ratios to Adam, then their median / min / max."""
    groups = sorted({(run["jit"], run["keep"]) for run in runs})
    rows = []
    for jit, keep in groups:
        group = [run for run in runs if (run["jit"], run["keep"]) == (jit, keep)]
        by_arm = {arm: sorted((r for r in group if r["arm"] == arm), key=lambda r: r["pair"]) for arm in arms}
        row = {"jit": jit, "keep": keep, "pairs": len(by_arm["adam"])}
        for arm in arms:
            row[arm] = {key: spread(r[key] for r in by_arm[arm]) for key in SUMMARISED}
            if arm != "adam":
                row[arm]["ratio_to_adam"] = {
                    key: spread(s[key] / a[key] for s, a in zip(by_arm[arm], by_arm["adam"])) for key in RATIOS
                }
            if arm.startswith("selective"):
                row[arm]["k"] = by_arm[arm][0]["k"]
                row[arm]["update_path"] = by_arm[arm][0]["update_path"]
                row[arm]["peak_rss_over_adam_mib"] = spread(
                    s["peak_rss_mib"] - a["peak_rss_mib"] for s, a in zip(by_arm[arm], by_arm["adam"])
                )
        rows.append(row)
    return rows


def print_table(rows, arms):
    print(
        "| XLA | keep | arm | fit s | fit / Adam (CPU) | batches / Adam (CPU) | step ms | step / Adam (CPU) | "
        "first step s | peak MiB | B/param |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def fmt(s, digits=2):
        return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"

    def ratio_of(ratio, wall, cpu):
        return f"{fmt(ratio[wall])} ({ratio[cpu]['median']:.2f})" if ratio else "1"

    for row in rows:
        for arm in arms:
            a = row[arm]
            ratio = a.get("ratio_to_adam")
            print(
                f"| {row['jit']} | {row['keep']:g} | {arm} | {fmt(a['fit_wall_s'], 1)} | "
                f"{ratio_of(ratio, 'fit_wall_s', 'fit_cpu_s')} | "
                f"{ratio_of(ratio, 'batches_wall_s', 'batches_cpu_s')} | "
                f"{fmt(a['step_ms'], 1)} | {ratio_of(ratio, 'step_ms', 'step_cpu_ms')} | "
                f"{a['first_step_s']['median']:.1f} | {a['peak_rss_mib']['median']:.0f} | "
                f"{a['optimizer_bytes_per_parameter']['median']:.2f} |",
                flush=True,
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=5, help="processes per arm and setting, arms alternating")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--jit", choices=("off", "on", "both"), default="both")
    parser.add_argument("--trace-per-phase", action="store_true", help="add the arm with TracePerPhase")
    parser.add_argument("--floor", action="store_true", help="add the arm with SGD (forward, backward, ~no update)")
    parser.add_argument("--glibc-defaults", action="store_true", help="without the malloc setting (see above)")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE", help="set for every child")
    parser.add_argument("--quick", action="store_true", help="40 steps, 1 pair, keep 1%%, no XLA (a smoke test)")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_fit_default_path.json"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.keep[0], args.jit)))
        return
    if args.quick:
        args.steps, args.pairs, args.keep, args.jit = 40, 1, [0.01], "off"
    env = child_settings(dict(item.split("=", 1) for item in args.env), args.glibc_defaults)
    arms = ARMS[:2] + (("selective_trace",) if args.trace_per_phase else ()) + (("sgd",) if args.floor else ())
    jits = ("off", "on") if args.jit == "both" else (args.jit,)
    load_before, ticks, start = os.getloadavg(), proc_stat_ticks(), time.perf_counter()
    runs = []
    for pair in range(args.pairs):
        for jit in jits:
            for keep in args.keep:
                for i in range(len(arms)):
                    arm = arms[(pair + i) % len(arms)]
                    run = run_child(arm, args.steps, keep, jit, env) | {"pair": pair, "position": i}
                    runs.append(run)
                    print(
                        f"pair {pair} jit {jit} keep {keep:g} {arm}: fit {run['fit_wall_s']:.1f} s "
                        f"(CPU {run['fit_cpu_s']:.1f}), step {run['step_ms']:.1f} ms (CPU {run['step_cpu_ms']:.1f}), "
                        f"steal {run['system_steal_s']:.1f} s, load {run['load_before']:.2f}",
                        flush=True,
                    )
    ticks = {key: (value - ticks[key]) / os.sysconf("SC_CLK_TCK") for key, value in proc_stat_ticks().items()}
    rows = summarise(runs, arms)
    print_table(rows, arms)
    write_result(
        args.out,
        {
            "config": vars(args) | {"out": str(args.out), "arms": list(arms), "skip": SKIP},
            "child_env": env,
            "load_before": list(load_before),
            "load_after": list(os.getloadavg()),
            "nproc": len(os.sched_getaffinity(0)),
            "seconds": time.perf_counter() - start,
            "system_cpu_s": ticks,
            "rows": rows,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
