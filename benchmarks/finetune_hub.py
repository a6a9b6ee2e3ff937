"""Fine-tune a keras_hub BERT classifier built from config: full, Keras LoRA, SelectiveOptimizer, sparse deltas.

A ``BertTextClassifier`` (no preset, no download) is pretrained on one synthetic token task (which of two marker
tokens is planted in random text), then fine-tuned on another (two other markers). Arms, each in its own process
(peak RSS = the child's ``VmHWM``):

- ``full``: every weight, Adam.
- ``lora4``, ``lora8``: ``backbone.enable_lora(r)`` (Keras LoRA on query and value), head trainable.
- ``selopt``: ``calibrate`` (fisher, ranked in ``--scope``: per variable by default) +
  ``SelectiveOptimizer(Adam, masks=...)`` at LoRA r=4's trainable count.
- ``sparse``: ``calibrate`` (fisher, over the variables sparse deltas cover) + ``sparse_delta`` at that count.
- ``sparse_magnitude``, ``sparse_random``: the same with magnitude / random positions (controls).

Per arm: test accuracy, ms/step in ``model.fit`` (median of per-batch times), optimizer bytes, trainable count,
peak RSS (``peak_rss_mib_prepare``: building, loading and calibration; ``peak_rss_mib_fit``: ``fit`` and the
evaluations alone, the peak reset before them; ``peak_rss_mib``: the whole process),
and the weight-gradient part of a step: bytes of the gradients the step computes for the trainable variables
(for ``selopt`` the dense gradient of every variable it masks) and the median time of a traced forward+backward
against a traced forward alone.

Run: ``python -m benchmarks.finetune_hub --size small --seeds 0 --out results/bench_finetune_hub_small.json``.

Seeds run one after another, the arms of a seed in turn, each in its own process: with several seeds the JSON's
``ratio_to_lora4_per_seed`` gives each arm's times over LoRA r=4's of the same seed (median, min, max over the
seeds), so a per-process spread shows. ``--step-only --seeds 0 1 2 3 4 --arms lora4 sparse``: five alternating
process pairs of the traced step alone.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ARMS = ("sparse", "lora4", "full", "selopt", "lora8", "sparse_magnitude", "sparse_random")  # the order they run in
SIZES = {
    # 2 layers, hidden 32: ~10k parameters, for smoke runs
    "tiny": dict(
        model=dict(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64, vocabulary_size=100),
        seq=16,
        batch=16,
        pretrain_steps=4,
        steps=4,
    ),
    # 3 layers, hidden 256: 1.91M parameters
    "small": dict(
        model=dict(num_layers=3, hidden_dim=256, num_heads=4, intermediate_dim=512, vocabulary_size=1000),
        seq=32,
        batch=32,
        pretrain_steps=150,
        steps=60,
    ),
    # 6 layers, hidden 768: 52.4M parameters
    "large": dict(
        model=dict(num_layers=6, hidden_dim=768, num_heads=12, intermediate_dim=3072, vocabulary_size=12000),
        seq=32,
        batch=8,
        pretrain_steps=150,
        steps=60,
    ),
}
MARKERS = {"pretrain": (1, 2), "finetune": (3, 4)}
FIRST_BACKGROUND_TOKEN = 10


def task(name, n, size, seed):
    """``n`` examples of task ``name``: random tokens with 2 copies of marker ``MARKERS[name][label]`` planted."""
    import numpy as np

    cfg = SIZES[size]
    rng = np.random.default_rng(seed)
    tokens = rng.integers(FIRST_BACKGROUND_TOKEN, cfg["model"]["vocabulary_size"], (n, cfg["seq"])).astype("int32")
    labels = rng.integers(0, 2, n).astype("int32")
    for i, label in enumerate(labels):
        tokens[i, rng.choice(cfg["seq"], 2, replace=False)] = MARKERS[name][label]
    x = {"token_ids": tokens, "segment_ids": np.zeros_like(tokens), "padding_mask": np.ones_like(tokens)}
    return x, labels


def build(size, seed):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    cfg = SIZES[size]
    backbone = keras_hub.models.BertBackbone(max_sequence_length=cfg["seq"], dropout=0.0, **cfg["model"])
    return keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None, dropout=0.0)


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def pretrain(size, seed, path):
    import keras

    cfg = SIZES[size]
    model = build(size, seed)
    x, y = task("pretrain", cfg["pretrain_steps"] * cfg["batch"], size, seed + 1000)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss(), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=cfg["batch"], epochs=1, verbose=0)
    model.save_weights(path)
    return {"pretrain_accuracy": float(history.history["accuracy"][-1]), "parameters": int(model.count_params())}


class _BatchTimes:
    """A Keras callback that keeps each training batch's wall time (seconds)."""

    def __new__(cls):
        import keras

        class BatchTimes(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_train_batch_begin(self, batch, logs=None):
                self._start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self._start)

        return BatchTimes()


def _prepare(arm, model, data, k, lr, scope):
    """The optimizer for ``arm`` (changing ``model`` as the arm needs); ``scope``: calibrate's ranking scope."""
    import keras

    import tf_selopt
    from tf_selopt.keras import sparse_delta as sd

    adam = keras.optimizers.Adam(lr)
    if arm == "full":
        return adam
    if arm.startswith("lora"):
        model.backbone.enable_lora(int(arm[4:]))
        return adam
    if arm == "selopt":
        masks = tf_selopt.calibrate(model, data, loss=_loss(), keep=k, steps=10, scope=scope)
        return tf_selopt.SelectiveOptimizer(adam, masks=masks)
    covered = {id(v) for v in sd.covered_variables(model)}
    for v in model.trainable_variables:  # positions among the variables sparse deltas train, so exactly k train
        if id(v) not in covered:
            v.trainable = False
    criterion = {"sparse": "fisher", "sparse_magnitude": "magnitude", "sparse_random": "random"}[arm]
    masks = tf_selopt.calibrate(model, data, loss=_loss(), keep=k, steps=10, criterion=criterion, scope=scope)
    tf_selopt.sparse_delta(model, masks)
    return adam


def _gradient_part(model, x, y, reps, jit_compile=True):
    """(gradient bytes, median ms of a traced forward+backward, median ms of a traced forward) on one batch."""
    import numpy as np
    import tensorflow as tf

    variables = model.trainable_variables
    loss_fn = _loss()

    @tf.function(jit_compile=jit_compile)
    def forward(x, y):
        return loss_fn(y, model(x, training=True))

    @tf.function(jit_compile=jit_compile)
    def backward(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, variables)

    def dense_part(g):  # an embedding's gradient is IndexedSlices: its values are what is computed
        return g.values if isinstance(g, tf.IndexedSlices) else g

    grads = [dense_part(g) for g in backward(x, y) if g is not None]
    grad_bytes = sum(int(np.prod(g.shape)) * g.dtype.size for g in grads)

    def median_ms(fn):
        fn(x, y)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            out = fn(x, y)
            [dense_part(t).numpy() for t in tf.nest.flatten(out) if t is not None]
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    return grad_bytes, median_ms(backward), median_ms(forward)


def _step_times(model, batch, reps):
    """Gradient bytes and the traced forward+backward / forward medians (ms), under XLA and in graph mode."""
    grad_bytes, backward_ms, forward_ms = _gradient_part(model, *batch, reps=reps)
    graph_backward_ms, graph_forward_ms = _gradient_part(model, *batch, reps=reps, jit_compile=False)[1:]
    return {
        "gradient_bytes": grad_bytes,
        "forward_backward_ms": backward_ms,
        "forward_ms": forward_ms,
        "forward_backward_ms_graph": graph_backward_ms,
        "forward_ms_graph": graph_forward_ms,
    }


def run_arm(arm, size, seed, weights, k, lr, scope, fit=True):
    """One arm's measurements; ``fit=False``: the traced step times only (no pretrained weights, no training)."""
    import numpy as np
    import tensorflow as tf

    from benchmarks.common import reset_peak_rss, rss_bytes

    cfg = SIZES[size]
    model = build(size, seed)
    if weights:
        model.load_weights(weights)
    x, y = task("finetune", cfg["steps"] * cfg["batch"], size, seed + 2000)
    x_test, y_test = task("finetune", 512, size, seed + 3000)
    x_val, y_val = task("finetune", 512, size, seed + 4000)  # for choosing a learning rate, never the test draw
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(cfg["batch"])
    optimizer = _prepare(arm, model, data, k, lr, scope)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if arm == "selopt":
        trainable = k
    batch = ({key: value[: cfg["batch"]] for key, value in x.items()}, y[: cfg["batch"]])
    if not fit:
        return {"arm": arm, "seed": seed, "trainable": trainable, **_step_times(model, batch, reps=10)}
    model.compile(optimizer=optimizer, loss=_loss(), metrics=["accuracy"])
    prepare_peak = rss_bytes("VmHWM")  # building, loading, and the arm's calibration
    reset_peak_rss()
    times = _BatchTimes()
    start = time.perf_counter()
    model.fit(x, y, batch_size=cfg["batch"], epochs=1, verbose=0, shuffle=False, callbacks=[times])
    fit_s = time.perf_counter() - start
    accuracy = float(model.evaluate(x_test, y_test, batch_size=64, verbose=0, return_dict=True)["accuracy"])
    validation = float(model.evaluate(x_val, y_val, batch_size=64, verbose=0, return_dict=True)["accuracy"])
    fit_peak = rss_bytes("VmHWM")  # fit and the evaluations, before the gradient-part measurement traces its steps
    optimizer_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.optimizer.variables)
    return {
        "arm": arm,
        "seed": seed,
        "lr": lr,
        "test_accuracy": accuracy,
        "validation_accuracy": validation,
        "ms_per_step_median": 1000 * float(np.median(times.times[1:])),
        "fit_seconds": fit_s,
        "optimizer_bytes": optimizer_bytes,
        "trainable": trainable,
        **_step_times(model, batch, reps=5),
        "peak_rss_mib_prepare": prepare_peak / 2**20,
        "peak_rss_mib_fit": fit_peak / 2**20,
        "peak_rss_mib": max(prepare_peak, rss_bytes("VmHWM")) / 2**20,
    }


def _child(args):
    result = run_arm(args.arm, args.size, args.seed, args.weights, args.k, args.lr, args.scope, not args.step_only)
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(*argv):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.finetune_hub", *argv], capture_output=True, text=True, env=env
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{argv} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _lora_count(size):
    import numpy as np

    model = build(size, 0)
    model.backbone.enable_lora(4)
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--arm-lr",
        nargs="+",
        default=[],
        metavar="ARM=LR",
        help="a learning rate per arm (e.g. full=1e-4 lora4=3e-3); the others take --lr",
    )
    parser.add_argument(
        "--scope",
        choices=("per_variable", "global"),
        default="per_variable",
        help="calibrate's ranking scope for the selopt and sparse arms: global fisher puts the whole budget in the "
        "pooler and head of a pretrained transformer, which cannot learn a task that needs new input features",
    )
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the size's)")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument(
        "--step-only",
        action="store_true",
        help="only the traced forward+backward times, graph and XLA, on the model as built (no pretraining, no fit)",
    )
    parser.add_argument("--child", choices=("pretrain", "arm", "count"), help=argparse.SUPPRESS)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.arm_lr = _arm_lrs(parser, args.arm_lr)
    if args.steps:
        SIZES[args.size]["steps"] = args.steps
    if args.child == "pretrain":
        print("RESULT " + json.dumps(pretrain(args.size, args.seed, args.weights)), flush=True)
        return
    if args.child == "count":
        print("RESULT " + json.dumps({"k": _lora_count(args.size)}), flush=True)
        return
    if args.child == "arm":
        _child(args)
        return
    from benchmarks.common import write_result

    load_before = os.getloadavg()
    start = time.perf_counter()
    k = _spawn("--child", "count", "--size", args.size)["k"]
    runs, pretrained = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            weights = os.path.join(tmp, f"pretrained_{seed}.weights.h5")
            if not args.step_only:
                pretrained[seed] = _spawn(
                    "--child", "pretrain", "--size", args.size, "--seed", str(seed), "--weights", weights
                )
            for arm in args.arms:
                common = ["--size", args.size, "--seed", str(seed), "--k", str(k)]
                common += ["--step-only"] if args.step_only else ["--weights", weights]
                common += ["--steps", str(args.steps)] if args.steps else []
                flags = ["--scope", args.scope, *common]
                try:
                    runs.append(
                        _spawn("--child", "arm", "--arm", arm, "--lr", str(args.arm_lr.get(arm, args.lr)), *flags)
                    )
                except RuntimeError as error:  # recorded; the other arms still run
                    runs.append({"arm": arm, "seed": seed, "error": str(error)[-1500:]})
                print(json.dumps(runs[-1]), flush=True)
                if args.out:  # after each arm, so a stopped run keeps what it measured
                    write_result(args.out, _result(args, k, pretrained, runs, start, load_before))


def _arm_lrs(parser, pairs) -> dict:
    out = {}
    for pair in pairs:
        arm, _, value = pair.partition("=")
        try:
            lr = float(value)
        except ValueError:
            lr = -1.0
        if arm not in ARMS or not lr > 0:
            parser.error(f"--arm-lr takes ARM=LR with ARM one of {ARMS} and LR > 0; got {pair!r}")
        out[arm] = lr
    return out


def pair_ratios(runs, reference="lora4", keys=("forward_backward_ms", "forward_backward_ms_graph")) -> dict:
    """Per seed (one process per arm, arms alternating), each arm's ``keys`` over ``reference``'s in the same
    seed: ``{arm: {key: {"median", "min", "max", "pairs"}}}``; runs with an error or no reference are skipped.

    >>> runs = [{"arm": "lora4", "seed": 0, "t": 2.0}, {"arm": "sparse", "seed": 0, "t": 1.0},
    ...         {"arm": "lora4", "seed": 1, "t": 4.0}, {"arm": "sparse", "seed": 1, "t": 3.0}]
    >>> pair_ratios(runs, keys=("t",))["sparse"]["t"]
    {'median': 0.625, 'min': 0.5, 'max': 0.75, 'pairs': 2}
    """
    import statistics

    ref = {r["seed"]: r for r in runs if r["arm"] == reference and "error" not in r}
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in runs if r["arm"] != reference):
        rows = [r for r in runs if r["arm"] == arm and "error" not in r and r["seed"] in ref]
        for key in keys:
            ratios = [r[key] / ref[r["seed"]][key] for r in rows if key in r and key in ref[r["seed"]]]
            if ratios:
                out.setdefault(arm, {})[key] = {
                    "median": round(statistics.median(ratios), 4),
                    "min": round(min(ratios), 4),
                    "max": round(max(ratios), 4),
                    "pairs": len(ratios),
                }
    return out


def _result(args, k, pretrained, runs, start, load_before):
    keys = ("forward_backward_ms", "forward_backward_ms_graph")
    if not args.step_only:
        keys += ("ms_per_step_median", "peak_rss_mib_prepare", "peak_rss_mib_fit", "peak_rss_mib")
    return {
        "ratio_to_lora4_per_seed": pair_ratios(runs, keys=keys),
        "size": args.size,
        "config": SIZES[args.size],
        "lora4_trainable": k,
        "lr": args.lr,
        "arm_lr": args.arm_lr,
        "scope": args.scope,
        "step_only": args.step_only,
        "pretrain": pretrained,
        "runs": runs,
        "wall_seconds": time.perf_counter() - start,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


if __name__ == "__main__":
    main()
