"""Deployment benchmark of structured pruning: 1x4 blocks, 1x16 int8 blocks and 2:4 against unstructured.

On the bundled MNIST subset (3,500 train / 1,000 test), for LeNet-300-100 and an MLP 784-1024-1024-10:

1. train the dense model (Adam 1e-3, batch 64, ``--epochs`` epochs);
2. from copies of it, fine-tune every variant for the same budget (``--finetune`` epochs, Adam 1e-3, batch
   64) with ``tf_selopt.GradualPruning`` (``PolynomialDecay`` 0 -> 90% over the first half of the
   fine-tuning steps, pruning every 10 steps; N:M prunes at step 0 and keeps its mask):
   ``dense`` (fine-tuned, no pruning), ``unstructured90`` (global), ``block1x4-90`` (global, blocks of 4
   consecutive inputs), ``block1x16-90`` (global, MLP only: LeNet's 300- and 100-input kernels are not
   divisible by 16), ``nm2of4`` (2 zeros in every 4 consecutive inputs);
3. save each as ``.keras`` (in ``--models-dir``; ``--reuse`` skips training when they are there) and run
   ``tf_selopt.deploy.benchmark.deployment_benchmark(paths=...)`` twice, each timing session interleaved
   round-robin: ``float/`` with the ``float32`` and ``sparse_float32`` files of every variant, ``int8/``
   with the ``int8`` and ``sparse_int8`` files of ``dense`` and ``block1x16-90`` (unstructured sparse int8
   does not prepare under XNNPack). 1 thread, XNNPack on and off, batch 1. The float export check uses
   ``--float-atol`` (default 1e-4: the trained MLP-1024 float32 file differs from Keras by 1.1e-5, over
   the default 1e-5).

Writes ``<out>/float/deployment.{json,md}``, ``<out>/int8/deployment.{json,md}`` and ``<out>/summary.json``
(per model: Keras accuracy of each variant, and for each artefact p50 over the **dense** model's float32
p50 in the same configuration, plus the ratio to the same model's float32 file), and the figure
``<out>/structured.png`` (``tf_selopt.study.plots.structured_figure``: accuracy against the pruned fraction
per method, and against the measured 1-thread p50 with XNNPack of the file each method deploys).
``--threads 1 2`` times every file at 1 and 2 threads as well (default: 1).

    python -m serving.structured_deployment --out results/structured_deployment
    python -m serving.structured_deployment --quick --out /tmp/structured   # smoke: 1 epoch, 50 runs
    python -m serving.structured_deployment --plot-only   # the figure from an existing summary.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_selopt.core.schedules import PolynomialDecay  # noqa: E402
from tf_selopt.deploy import benchmark as deploy_benchmark  # noqa: E402
from tf_selopt.keras.pruning import GradualPruning, strip_pruning  # noqa: E402
from tf_selopt.study import data, models, plots  # noqa: E402

FIGURE = "structured.png"

BATCH = 64
SPARSITY = 0.9


def _compile(model):
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _variants(name):
    """(variant name, GradualPruning kwargs or None)."""
    out = [
        ("dense", None),
        ("unstructured90", dict(scope="global")),
        ("block1x4-90", dict(scope="global", block_size=(1, 4))),
    ]
    if name != "lenet_300_100":
        out.append(("block1x16-90", dict(scope="global", block_size=(1, 16))))
    out.append(("nm2of4", dict(sparsity_m_by_n=(2, 4))))
    return out


def _finetune(base, kwargs, splits, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = keras.models.clone_model(base)
    model.set_weights(base.get_weights())
    _compile(model)
    steps = epochs * int(np.ceil(len(splits.x_train) / BATCH))
    callbacks = []
    if kwargs is not None:
        schedule = PolynomialDecay(0.0, SPARSITY, begin_step=0, end_step=max(1, steps // 2), frequency=10)
        callbacks.append(GradualPruning(schedule, **kwargs))
    model.fit(splits.x_train, splits.y_train, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=callbacks)
    strip_pruning(model)
    accuracy = float(model.evaluate(splits.x_test, splits.y_test, verbose=0)[1])
    return model, accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/structured_deployment")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--finetune", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "mlp_1024"])
    parser.add_argument("--quick", action="store_true", help="1 + 1 epochs, 50 runs (smoke test)")
    parser.add_argument(
        "--float-atol",
        type=float,
        default=1e-4,
        help="export check bound for float files (MLP-1024 logits differ by ~1.1e-5 in float32)",
    )
    parser.add_argument(
        "--models-dir",
        default="runs/structured_deployment_models",
        help="where the fine-tuned .keras files go (not committed)",
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the .keras files and accuracies in --models-dir")
    parser.add_argument("--threads", nargs="+", type=int, default=[1], help="TFLite thread counts to time")
    parser.add_argument(
        "--plot-only", action="store_true", help=f"only draw <out>/{FIGURE} from <out>/summary.json (no runs)"
    )
    args = parser.parse_args(argv)
    if args.plot_only:
        with open(os.path.join(args.out, "summary.json")) as f:
            print("wrote", plots.structured_figure(json.load(f), os.path.join(args.out, FIGURE)))
        return
    if 1 not in args.threads:
        parser.error("--threads must include 1 (the figure and the summary ratios are at 1 thread)")
    if args.quick:
        args.epochs, args.finetune, args.runs, args.warmup = 1, 1, 50, 5

    splits = data.load("mnist")
    builders = {
        "lenet_300_100": models.lenet_300_100,
        "mlp_1024": lambda: models.mlp((1024, 1024), name="mlp_1024"),
    }
    summary = {"settings": vars(args) | {"sparsity": SPARSITY, "batch": BATCH}, "models": {}}
    start = time.time()
    tmp = args.models_dir
    os.makedirs(tmp, exist_ok=True)
    accuracy_file = os.path.join(tmp, "keras_accuracy.json")
    known = json.load(open(accuracy_file)) if args.reuse and os.path.exists(accuracy_file) else {}
    float_paths, int8_paths = [], []
    for name in args.models:
        base = None
        accuracies = {}
        for variant, kwargs in _variants(name):
            path = os.path.join(tmp, f"{name}.{variant}.keras")
            if f"{name}.{variant}" in known and os.path.exists(path):
                accuracy = known[f"{name}.{variant}"]
            else:
                if base is None:
                    keras.utils.set_random_seed(args.seed)
                    base = _compile(builders[name]())
                    base.fit(splits.x_train, splits.y_train, epochs=args.epochs, batch_size=BATCH, verbose=0)
                model, accuracy = _finetune(base, kwargs, splits, args.finetune, args.seed)
                model.save(path)
                known[f"{name}.{variant}"] = accuracy
                with open(accuracy_file, "w") as f:
                    json.dump(known, f, indent=1)
            accuracies[variant] = accuracy
            float_paths.append(path)
            if variant in ("dense", "block1x16-90"):
                int8_paths.append(path)
            print(f"{name} {variant}: test accuracy {accuracy:.4f} ({time.time() - start:.0f} s)", flush=True)
        summary["models"][name] = {"keras_accuracy": accuracies}
    common = dict(
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        xnnpack=[True, False],
        overwrite=True,
        float_atol=args.float_atol,
    )
    float_rows = deploy_benchmark.deployment_benchmark(
        os.path.join(args.out, "float"),
        splits.x_test,
        splits.y_test,
        paths=float_paths,
        artifacts=("float32", "sparse_float32"),
        **common,
    )
    int8_rows = deploy_benchmark.deployment_benchmark(
        os.path.join(args.out, "int8"),
        splits.x_test,
        splits.y_test,
        paths=int8_paths,
        artifacts=("int8", "sparse_int8"),
        representative_data=splits.x_train,
        **common,
    )
    print(f"done in {time.time() - start:.0f} s", flush=True)
    for rows, session in ((float_rows, "float"), (int8_rows, "int8")):
        for row in rows:
            name, variant = row["model"].split(".", 1)
            dense = next(r for r in float_rows if r["model"] == f"{name}.dense" and r["artifact"] == "float32")
            dense_p50 = {(e["threads"], e["xnnpack"]): e["p50_us"] for e in dense["latency"] if "p50_us" in e}
            entry = {
                "session": session,
                "accuracy": row["accuracy"],
                "size_bytes": row["size_bytes"],
                "sparse_tensors": row["sparse_tensors"],
                "densify_ops": row["densify_ops"],
                "prunable_zeros": row["prunable_zeros"],
                "prunable": row["prunable"],
                "latency": [
                    {
                        **{k: e[k] for k in ("threads", "xnnpack") if k in e},
                        **(
                            {"error": e["error"]}
                            if "error" in e
                            else {
                                "p50_us": e["p50_us"],
                                "p95_us": e["p95_us"],
                                "p50_vs_same_model_float32": e.get("p50_vs_float32"),
                                # int8 rows come from another timing session: this ratio mixes sessions
                                "p50_vs_dense_float32": round(e["p50_us"] / dense_p50[(e["threads"], e["xnnpack"])], 3),
                            }
                        ),
                    }
                    for e in row["latency"]
                ],
            }
            summary["models"][name].setdefault("artifacts", {})[f"{variant}.{row['artifact']}"] = entry
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("wrote", plots.structured_figure(summary, os.path.join(args.out, FIGURE)))
    for name, result in summary["models"].items():
        print(name, json.dumps(result["keras_accuracy"]))
        for key, entry in result["artifacts"].items():
            cells = [
                f"xnnpack={e['xnnpack']}: "
                + ("fails" if "error" in e else f"{e['p50_us']:.1f}us ({e['p50_vs_dense_float32']:.2f}x dense)")
                for e in entry["latency"]
            ]
            print(
                f"  {key}: acc {entry['accuracy']:.4f} sparse {entry['sparse_tensors']} "
                f"densify {entry['densify_ops']} | " + " | ".join(cells)
            )


if __name__ == "__main__":
    main()
