"""``tf_selopt.shrink`` on a keras_hub BERT classifier built from config: accuracy after fine-tuning, TFLite latency.

The model and data are ``benchmarks.finetune_hub``'s (``build``, ``task``): a ``BertTextClassifier`` (no preset,
no download, dropout 0) pretrained on one synthetic token task (which of two marker tokens is planted in random
text), then fine-tuned on another (two other markers). From the pretrained weights, per arm ``ffn:heads``:
``shrink(model, ffn, heads=heads, scope="per_layer")`` removes ``ffn`` of every encoder's feed-forward
intermediate units and ``heads`` of its attention heads (lowest L1 magnitude); the shrunk model and the dense
model are each fine-tuned for the same steps on the same batches with a fresh Adam, then scored on held-out
examples of the fine-tuning task. All float32 TFLite files (``export_tflite``, named inputs ``token_ids``,
``padding_mask``, ``segment_ids``) are timed together with ``tf_selopt.deploy.benchmark.tflite_latency``
(batch 1, 1 thread, XNNPack on and off, round robin: every file and configuration in blocks of
``deploy.benchmark.BLOCK`` calls, the start rotated every round, so machine load hits all of them alike).

    python -m benchmarks.shrink_bert --out results/bench_shrink_bert.json
    python -m benchmarks.shrink_bert --quick --out /tmp/shrink_bert.json   # smoke: tiny BERT, a few steps

``--exactness``: instead, the removed heads and units of a ``BertBackbone`` are zeroed first, so the shrunk
backbone must reproduce the zeroed dense one (both outputs, float32 rounding only); records parameter counts.

    python -m benchmarks.shrink_bert --exactness --out results/bench_shrink_bert_tiny.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from benchmarks.finetune_hub import SIZES, build, task  # noqa: E402
from tf_selopt.deploy.benchmark import tflite_latency  # noqa: E402
from tf_selopt.deploy.export import export_tflite  # noqa: E402
from tf_selopt.keras.shrink import shrink  # noqa: E402

QUICK = dict(size="tiny", pretrain_steps=4, steps=4, test=64, runs=10, warmup=2, arms=["0.5:0.5"])


def zero_removable(backbone, fraction, rng):
    """Zero ``round(fraction * heads)`` heads and ``round(fraction * units)`` units of every encoder."""
    for layer in backbone.layers:
        if type(layer).__name__ != "TransformerEncoder":
            continue
        heads, units = layer.num_heads, layer.intermediate_dim
        gone_heads = rng.choice(heads, int(np.floor(fraction * heads + 0.5)), replace=False)
        gone_units = rng.choice(units, int(np.floor(fraction * units + 0.5)), replace=False)
        for variable in layer.weights:
            part, what = variable.path.split("/")[-2:]
            value = variable.numpy()
            if part in ("query", "key", "value"):
                value[..., gone_heads, :] = 0.0
            elif part == "attention_output" and what == "kernel":
                value[gone_heads] = 0.0
            elif part == "feedforward_intermediate_dense":
                value[..., gone_units] = 0.0
            variable.assign(value)


def exactness(args) -> dict:
    """Shrink a backbone whose removable heads and units are zeroed: outputs must match the zeroed dense one."""
    import keras_hub

    keras.utils.set_random_seed(args.seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=args.vocab,
        num_layers=args.layers,
        num_heads=args.heads,
        hidden_dim=args.hidden,
        intermediate_dim=args.intermediate,
        max_sequence_length=args.seq,
    )
    rng = np.random.default_rng(args.seed)
    zero_removable(backbone, args.fraction, rng)
    start = time.perf_counter()
    small = shrink(backbone, args.fraction, heads=args.fraction, scope="per_layer")
    seconds = time.perf_counter() - start
    x = {
        "token_ids": rng.integers(0, args.vocab, (8, args.seq)).astype("int32"),
        "segment_ids": rng.integers(0, 2, (8, args.seq)).astype("int32"),
        "padding_mask": (np.arange(args.seq)[None, :] < rng.integers(args.seq // 2, args.seq + 1, (8, 1))).astype(
            "int32"
        ),
    }
    dense_out, small_out = backbone(x), small(x)
    diffs = {k: float(np.max(np.abs(np.asarray(dense_out[k]) - np.asarray(small_out[k])))) for k in dense_out}
    encoders = [layer for layer in small.layers if "transformer_layer" in layer.name]
    keys = ("fraction", "layers", "hidden", "heads", "intermediate", "vocab", "seq", "seed")
    return {
        "settings": {k: getattr(args, k) for k in keys},
        "params_dense": int(backbone.count_params()),
        "params_shrunk": int(small.count_params()),
        "params_shrunk_vs_dense": round(small.count_params() / backbone.count_params(), 4),
        "encoder_params_dense": int(
            sum(layer.count_params() for layer in backbone.layers if "transformer" in layer.name)
        ),
        "encoder_params_shrunk": int(sum(layer.count_params() for layer in encoders)),
        "heads_dense_shrunk": [args.heads, encoders[0].num_heads],
        "units_dense_shrunk": [args.intermediate, encoders[0].intermediate_dim],
        "max_abs_diff_vs_zeroed_dense": diffs,
        "shrink_seconds": round(seconds, 2),
    }


# ---------------------------------------------------------------- accuracy after fine-tuning, TFLite latency


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fit(model, x, y, batch, lr, seed) -> float:
    """One epoch over ``(x, y)`` in order (the same batches for every arm); seconds."""
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=_loss(), metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - start


def _accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=128, verbose=0), axis=-1) == y))


def _arm_name(ffn, heads) -> str:
    return f"ffn{ffn * 100:g}_heads{heads * 100:g}"


def accuracy_and_latency(args, work) -> dict:
    cfg = SIZES[args.size]
    batch, seed = cfg["batch"], args.seed
    model = build(args.size, seed)
    x_pre, y_pre = task("pretrain", args.pretrain_steps * batch, args.size, seed + 1000)
    pretrain_s = _fit(model, x_pre, y_pre, batch, 1e-3, seed)
    x_ft, y_ft = task("finetune", args.steps * batch, args.size, seed + 2000)
    x_test, y_test = task("finetune", args.test, args.size, seed + 3000)
    x_pre_test, y_pre_test = task("pretrain", args.test, args.size, seed + 4000)
    pretrained = model.get_weights()
    result = {
        "model": {**cfg["model"], "seq": cfg["seq"], "params": int(model.count_params())},
        "pretrain": {
            "steps": args.pretrain_steps,
            "seconds": round(pretrain_s, 1),
            "pretrain_task_test_accuracy": round(_accuracy(model, x_pre_test, y_pre_test), 4),
        },
        "arms": {},
    }
    models = {}
    for spec in args.arms:
        ffn, heads = (float(v) for v in spec.split(":"))
        start = time.perf_counter()
        small = shrink(model, ffn, heads=heads, scope="per_layer")
        models[_arm_name(ffn, heads)] = (small, time.perf_counter() - start, ffn, heads)
    models["dense"] = (model, None, 0.0, 0.0)
    for name, (m, shrink_s, ffn, heads) in models.items():
        if name == "dense":
            model.set_weights(pretrained)
        before = _accuracy(m, x_pre_test, y_pre_test)
        seconds = _fit(m, x_ft, y_ft, batch, args.lr, seed + 1)
        path = work / f"{name}.tflite"
        report = export_tflite(m, path, sample_inputs={k: v[:64] for k, v in x_test.items()})
        result["arms"][name] = {
            "ffn_fraction_removed": ffn,
            "heads_fraction_removed": heads,
            "heads_and_units_per_encoder": _widths(m),
            "params": int(m.count_params()),
            "shrink_seconds": None if shrink_s is None else round(shrink_s, 2),
            "pretrain_task_test_accuracy_before_finetune": round(before, 4),
            "finetune_seconds": round(seconds, 1),
            "test_accuracy": round(_accuracy(m, x_test, y_test), 4),
            "tflite_bytes": report.size_bytes,
            "tflite_max_abs_diff": report.max_abs_diff,
            "path": path,
        }
        print(name, {k: v for k, v in result["arms"][name].items() if k != "path"}, flush=True)
    names = list(result["arms"])
    x1 = {k: v[:1] for k, v in x_test.items()}
    timings = tflite_latency(
        [result["arms"][n].pop("path") for n in names], x1, threads=[1], runs=args.runs, warmup=args.warmup
    )
    dense = result["arms"]["dense"]
    for name, entries in zip(names, timings):
        arm = result["arms"][name]
        arm["latency"] = entries
        arm["params_vs_dense"] = round(arm["params"] / dense["params"], 4)
        arm["accuracy_points_vs_dense"] = round(100 * (arm["test_accuracy"] - dense["test_accuracy"]), 2)
    for name in names:
        for entry, ref in zip(result["arms"][name]["latency"], timings[names.index("dense")]):
            if "p50_us" in entry and "p50_us" in ref:
                entry["p50_vs_dense"] = round(entry["p50_us"] / ref["p50_us"], 3)
    return result


def _widths(model) -> dict:
    """``{encoder name: [heads, feed-forward units]}`` (the encoders sit in the nested backbone)."""
    return {
        layer.name: [int(layer.num_heads), int(layer.intermediate_dim)]
        for layer in _layers(model)
        if hasattr(layer, "intermediate_dim") and not isinstance(layer, keras.Model)
    }


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="benchmarks.finetune_hub.SIZES")
    parser.add_argument(
        "--arms", nargs="+", default=["0.25:0.25", "0.5:0.5"], help="ffn:heads fractions removed per encoder"
    )
    parser.add_argument("--pretrain-steps", type=int, default=None, help="default: the size's")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the size's)")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (Adam)")
    parser.add_argument("--test", type=int, default=2048, help="held-out fine-tuning examples")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"smoke: {QUICK}")
    parser.add_argument("--exactness", action="store_true", help="zeroed heads/units: shrunk == dense, no training")
    parser.add_argument("--fraction", type=float, default=0.25, help="--exactness: heads and units removed")
    parser.add_argument("--layers", type=int, default=4, help="--exactness backbone")
    parser.add_argument("--hidden", type=int, default=128, help="--exactness backbone")
    parser.add_argument("--heads", type=int, default=4, help="--exactness backbone")
    parser.add_argument("--intermediate", type=int, default=512, help="--exactness backbone")
    parser.add_argument("--vocab", type=int, default=1000, help="--exactness backbone")
    parser.add_argument("--seq", type=int, default=64, help="--exactness backbone")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_shrink_bert.json"))
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    args.pretrain_steps = args.pretrain_steps or SIZES[args.size]["pretrain_steps"]
    args.steps = args.steps or SIZES[args.size]["steps"]
    load_before = os.getloadavg()
    if args.exactness:
        result = exactness(args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = accuracy_and_latency(args, pathlib.Path(tmp))
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "exactness") and k not in _EXACT_ONLY}
        result = {"settings": settings, **result}
    result["load_average_before"] = [round(v, 2) for v in load_before]
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print({k: v for k, v in result.items() if k != "arms"}, flush=True)
    write_result(args.out, result)


_EXACT_ONLY = ("fraction", "layers", "hidden", "heads", "intermediate", "vocab", "seq")

if __name__ == "__main__":
    main()
