"""Train LeNet-300-100 and the small CNN briefly on the bundled MNIST subset, then run the deployment benchmark.

    .venv/bin/python -m serving.deployment                  # writes results/deployment.{json,md}
    .venv/bin/python -m serving.deployment --runs 200 --epochs 1 --out /tmp/bench   # quicker
    .venv/bin/python -m serving.deployment --model bert --out /tmp/bert   # a keras_hub BERT: named inputs

``--model bert``: a keras_hub ``BertTextClassifier`` built from config (``benchmarks.finetune_hub``'s
``--bert-size``, default ``tiny``: 2 layers, hidden 32; no preset, no download) trained for ``--epochs`` on that
benchmark's marker-token task; its inputs are the dict ``{"token_ids", "padding_mask", "segment_ids"}``, and
so are ``x_test`` and the calibration data. Artefacts: the SavedModel, ``float32`` and ``dynamic_int8``.

Each model is trained with Adam 1e-3, batch 64, on the 3,500 training images,
then ``tf_selopt.deploy.benchmark.deployment_benchmark`` prunes copies of it globally to
each sparsity (one-shot, no fine-tuning) and exports, times and scores every
artefact on the 1,000 test images. int8 is calibrated on all 3,500 training
images (256 were too few: test activations beyond the calibrated range were
clipped, up to 3.7 logits off on LeNet, failing the export check).
Artefacts (SavedModels in TF Serving layout, .tflite files) go to
``--artifacts`` (default ``runs/deployment_artifacts``, not committed).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tf_selopt.deploy import benchmark as deploy_benchmark  # noqa: E402
from tf_selopt.study import data, models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def _trained(build, splits, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(splits.x_train, splits.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def _bert(size, epochs, seed):
    """(trained BertTextClassifier, x_test dict, y_test, x_train dict) on the marker-token task."""
    from benchmarks.finetune_hub import SIZES, build, task  # noqa: PLC0415  (keras_hub: the [hub] extra)

    cfg = SIZES[size]
    model = build(size, seed)
    x, y = task("finetune", cfg["pretrain_steps"] * cfg["batch"] * 4, size, seed + 1000)
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    model.fit(x, y, epochs=epochs, batch_size=cfg["batch"], verbose=0)
    x_test, y_test = task("finetune", 256, size, seed + 2000)
    return model, x_test, y_test, x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="default: results/ (mnist), results/deployment_bert/ (bert)")
    parser.add_argument("--artifacts", default=None, help="default: runs/deployment_artifacts[_bert]")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9, 0.95])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--runtime", default="auto", choices=["auto", "ai_edge_litert", "tf.lite"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=["mnist", "bert"], default="mnist", help="mnist: LeNet + CNN")
    parser.add_argument("--bert-size", default="tiny", help="benchmarks.finetune_hub.SIZES key (--model bert)")
    args = parser.parse_args(argv)
    bert = args.model == "bert"
    args.out = args.out or os.path.join(ROOT, "results", "deployment_bert" if bert else "")
    args.artifacts = args.artifacts or "runs/deployment_artifacts" + ("_bert" if bert else "")
    if bert:
        start = time.time()
        model, x_test, y_test, x_train = _bert(args.bert_size, args.epochs, args.seed)
        print(f"trained in {time.time() - start:.0f} s")
        deploy_benchmark.deployment_benchmark(
            args.out,
            x_test,
            y_test,
            model=model,
            sparsities=args.sparsities,
            artifacts=("saved_model", "float32", "dynamic_int8"),
            runs=args.runs,
            warmup=args.warmup,
            runtime=args.runtime,
            artifacts_dir=args.artifacts,
            overwrite=True,
        )
        print(open(os.path.join(args.out, deploy_benchmark.MARKDOWN_NAME)).read())
        return

    splits = data.load("mnist")
    start = time.time()
    trained = [_trained(build, splits, args.epochs, args.seed) for build in (models.lenet_300_100, models.small_cnn)]
    print(f"trained in {time.time() - start:.0f} s")
    start = time.time()
    deploy_benchmark.deployment_benchmark(
        args.out,
        splits.x_test,
        splits.y_test,
        model=trained,
        sparsities=args.sparsities,
        representative_data=splits.x_train,
        runs=args.runs,
        warmup=args.warmup,
        runtime=args.runtime,
        artifacts_dir=args.artifacts,
        overwrite=True,
    )
    print(f"benchmark in {time.time() - start:.0f} s")
    print(open(os.path.join(args.out, deploy_benchmark.MARKDOWN_NAME)).read())


if __name__ == "__main__":
    main()
