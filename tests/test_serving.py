"""The deployment benchmark: rows and files, sizes, latencies, surviving zeros, accuracy, runtimes, refusals."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_selopt
from tf_selopt.deploy import benchmark as serving
from tf_selopt.deploy import export
from tf_selopt.deploy.benchmark import deployment_benchmark
from tf_selopt.study import data

FIELDS = {
    "model",
    "source",
    "target_sparsity",
    "prunable",
    "prunable_zeros",
    "sparsity",
    "artifact",
    "format",
    "path",
    "size_bytes",
    "gzip_bytes",
    "size_vs_float32",
    "max_abs_diff",
    "atol",
    "zeros",
    "weights",
    "model_zeros",
    "sparse_tensors",
    "densify_ops",
    "test_max_abs_diff",
    "accuracy",
    "latency",
}
RUNS = 12
N_PRUNABLE = 64 * 96 + 96 * 10


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """A 64-96-10 MLP trained briefly on the 8x8 digits (biases end up non-zero)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(96, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mlp",
    )
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=2, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def bench(tmp_path_factory, trained, digits):
    out = tmp_path_factory.mktemp("bench")
    before = [w.copy() for w in trained.get_weights()]
    rows = deployment_benchmark(
        out / "report",
        digits.x_test,
        digits.y_test,
        model=trained,
        sparsities=[0.0, 0.9],
        representative_data=digits.x_train[:64],
        runs=RUNS,
        warmup=2,
        threads=[1, 2],
        xnnpack=[True, False],
        artifacts_dir=out / "report" / "artifacts",
    )
    for a, b in zip(before, trained.get_weights()):
        np.testing.assert_array_equal(a, b)  # the benchmark pruned copies, not the model
    return out / "report", rows


def _bias_zeros(model):
    return sum(int(np.sum(layer.bias.numpy() == 0)) for layer in model.layers if hasattr(layer, "bias"))


def _row(rows, model, artifact):
    (row,) = [r for r in rows if r["model"] == model and r["artifact"] == artifact]
    return row


def test_rows_and_files(bench):
    out, rows = bench
    assert sorted(os.listdir(out)) == ["artifacts", "deployment.json", "deployment.md"]
    assert [(r["model"], r["artifact"]) for r in rows] == [
        (m, a) for m in ("mlp-s0", "mlp-s90") for a in serving.DEFAULT_ARTIFACTS
    ]
    for r in rows:
        assert set(r) == FIELDS
        assert r["size_bytes"] == (
            os.path.getsize(r["path"])
            if r["format"] == "tflite"
            else sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(r["path"]) for f in fs)
        )
        assert 0 < r["gzip_bytes"] and r["max_abs_diff"] <= r["atol"]
        if "float32" in r["artifact"] or r["artifact"] == "saved_model":  # over the whole test set too
            assert r["test_max_abs_diff"] <= 1e-5
    result = json.loads((out / "deployment.json").read_text())
    assert result["rows"] == rows
    assert result["runtime"]["tflite"] == export.tflite_runtime()[2]
    assert result["settings"]["tflite_configs"] == [{"threads": t, "xnnpack": b} for t in (1, 2) for b in (True, False)]
    table = (out / "deployment.md").read_text().splitlines()
    assert sum(line.startswith("| mlp-s") for line in table) == len(rows)
    saved = _row(rows, "mlp-s90", "saved_model")["path"]
    assert saved == str(out / "artifacts" / "saved_models" / "mlp-s90" / "1")  # TF Serving layout
    assert tf.saved_model.load(saved).signatures["serving_default"] is not None


def test_sparse_file_smaller_and_zeros_survive(bench, trained):
    _, rows = bench
    pruned = int(0.9 * N_PRUNABLE + 0.5)
    bias_zeros = _bias_zeros(trained)
    for model, expected in (("mlp-s0", 0), ("mlp-s90", pruned)):
        for artifact in ("saved_model", "float32", "sparse_float32"):
            r = _row(rows, model, artifact)
            assert (r["prunable"], r["prunable_zeros"]) == (N_PRUNABLE, expected)
            # every pruned zero survives; the other zeros are biases of dead ReLU units (pruning leaves biases)
            assert r["zeros"] == r["model_zeros"] == expected + bias_zeros
        for artifact in ("dynamic_int8", "int8"):  # rounding adds zeros, never revives one
            assert _row(rows, model, artifact)["zeros"] >= expected
    sparse, dense = _row(rows, "mlp-s90", "sparse_float32"), _row(rows, "mlp-s90", "float32")
    assert sparse["size_bytes"] < 0.5 * dense["size_bytes"]
    assert sparse["size_vs_float32"] == sparse["size_bytes"] / dense["size_bytes"]
    assert sparse["sparse_tensors"] >= sparse["densify_ops"] > 0 and dense["sparse_tensors"] == 0
    densify = json.loads((bench[0] / "deployment.json").read_text())["densify"]
    assert densify["sparse_tensors"] == sum(r["sparse_tensors"] for r in rows) > 0
    assert densify["densified_at_load"] == sum(r["densify_ops"] for r in rows) > 0


def test_latency_entries(bench):
    out, rows = bench
    for r in rows:
        entries = r["latency"]
        if r["artifact"] == "saved_model":
            assert [(e["threads"], e["xnnpack"]) for e in entries] == [(None, None)]
        else:
            configs = sorted((e["threads"], e["xnnpack"]) for e in entries)
            assert configs == [(1, False), (1, True), (2, False), (2, True)]
        for e in entries:
            if "error" in e:
                continue
            assert e["runs"] == RUNS and 0 < e["p50_us"] <= e["p95_us"]
            if r["format"] == "tflite":
                ref = next(
                    x
                    for x in _row(rows, r["model"], "float32")["latency"]
                    if (x["threads"], x["xnnpack"]) == (e["threads"], e["xnnpack"])
                )
                assert e["p50_vs_float32"] == round(e["p50_us"] / ref["p50_us"], 3)
    assert any("error" not in e for r in rows for e in r["latency"])


def test_accuracy_equals_artifact_predictions(bench, digits):
    _, rows = bench
    interpreter, _, _ = export.tflite_runtime()
    chunks = range(0, len(digits.x_test), serving.ACCURACY_BATCH)  # the benchmark's batches: same arithmetic
    for r in rows:
        if r["format"] == "tflite":
            runner = interpreter(model_path=r["path"]).get_signature_runner("serving_default")
            predict = lambda x: runner(inputs=x)["outputs"]  # noqa: E731
        else:
            signature = tf.saved_model.load(r["path"]).signatures["serving_default"]
            predict = lambda x: signature(inputs=tf.constant(x))["outputs"].numpy()  # noqa: E731
        outputs = np.concatenate([predict(digits.x_test[i : i + serving.ACCURACY_BATCH]) for i in chunks])
        assert outputs.shape == (len(digits.x_test), 10)
        assert r["accuracy"] == np.mean(np.argmax(outputs, axis=-1) == digits.y_test)
    assert _row(rows, "mlp-s0", "float32")["accuracy"] > 0.8  # trained: not chance


def test_both_runtimes_agree(tmp_path, trained, digits):
    litert = pytest.importorskip("ai_edge_litert")
    results = {}
    for runtime in ("tf.lite", "ai_edge_litert"):
        rows = deployment_benchmark(
            tmp_path / runtime,
            digits.x_test,
            digits.y_test,
            model=trained,
            sparsities=[0.9],
            artifacts=("float32", "sparse_float32"),
            runs=3,
            warmup=0,
            threads=[1],
            xnnpack=[True],
            runtime=runtime,
        )
        results[runtime] = json.loads((tmp_path / runtime / "deployment.json").read_text())
        assert sorted(os.listdir(tmp_path / runtime)) == ["deployment.json", "deployment.md"]  # artefacts removed
        assert all(r["path"] is None for r in rows)
    assert results["tf.lite"]["runtime"]["tflite"] == f"tf.lite.Interpreter (tensorflow {tf.__version__})"
    assert results["ai_edge_litert"]["runtime"]["tflite"] == f"ai_edge_litert {litert.__version__}"
    for a, b in zip(results["tf.lite"]["rows"], results["ai_edge_litert"]["rows"]):
        assert (a["accuracy"], a["size_bytes"], a["zeros"]) == (b["accuracy"], b["size_bytes"], b["zeros"])


def test_saved_models_and_keras_files_as_paths(tmp_path, trained, digits):
    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    tf_selopt.prune(model, 0.8)
    tf_selopt.strip_pruning(model)
    model.save(tmp_path / "pruned.keras")
    saved = export.export_saved_model(model, tmp_path / "serving", "pruned_sm", 7).path
    rows = deployment_benchmark(
        tmp_path / "out",
        digits.x_test,
        digits.y_test,
        paths=[tmp_path / "pruned.keras", saved],
        artifacts=("saved_model", "sparse_float32"),
        runs=2,
        warmup=0,
        threads=[1],
        xnnpack=[False],
    )
    assert [(r["model"], r["artifact"]) for r in rows] == [
        ("pruned", "saved_model"),
        ("pruned", "sparse_float32"),
        ("pruned_sm", "saved_model"),
        ("pruned_sm", "sparse_float32"),
    ]
    zeros = int(0.8 * N_PRUNABLE + 0.5)
    assert rows[0]["prunable_zeros"] == zeros and rows[0]["target_sparsity"] is None
    assert rows[2]["prunable"] is None and rows[2]["source"] == saved  # a SavedModel has no Keras layers
    for a, b in ((rows[0], rows[2]), (rows[1], rows[3])):  # same weights, two ways in
        assert a["zeros"] == b["zeros"] == zeros + _bias_zeros(model) and a["accuracy"] == b["accuracy"]
        assert a["size_vs_float32"] is None  # no float32 artefact asked for


def _unbuilt():
    return keras.Sequential([keras.layers.Dense(3)])


BAD = [
    (dict(sparsities=[]), "sparsities"),
    (dict(sparsities=[1.0]), "sparsities"),
    (dict(sparsities=[-0.1]), "sparsities"),
    (dict(sparsities=[0.5, 0.5]), "sparsities"),
    (dict(sparsities=None), "sparsities"),
    (dict(runs=0), "runs"),
    (dict(runs=2.0), "runs"),
    (dict(warmup=-1), "warmup"),
    (dict(threads=[0]), "threads"),
    (dict(threads=[]), "threads"),
    (dict(xnnpack=["on"]), "xnnpack"),
    (dict(artifacts=["float16"]), "artifacts"),
    (dict(artifacts=["int8"]), "representative_data"),
    (dict(artifacts=["sparse_int8"]), "representative_data"),
    (dict(float_atol=-1e-5), "float_atol"),
    (dict(float_atol=True), "float_atol"),
    (dict(runtime="litert"), "runtime"),
    (dict(paths=["missing.keras"], model=None, sparsities=None), "paths"),
    (dict(paths=["missing.keras"]), "paths"),
    (dict(model=_unbuilt), "model"),
    (dict(model=[]), "model"),
    (dict(model="missing.keras"), "model"),
    (dict(y_test=np.zeros((5,), "int32")), "y_test"),
    (dict(x_test=np.zeros((4, 7, 7, 1), "float32"), y_test=np.zeros(4, "int32")), "x_test"),
    (dict(overwrite="yes"), "overwrite"),
]


@pytest.mark.parametrize("bad,word", BAD)
def test_bad_arguments_write_nothing(tmp_path, trained, digits, bad, word):
    kwargs = dict(
        out_dir=tmp_path / "out",
        x_test=digits.x_test[:8],
        y_test=digits.y_test[:8],
        model=trained,
        sparsities=[0.5],
        artifacts=("float32",),
        artifacts_dir=tmp_path / "art",
    )
    kwargs.update({k: (v() if k == "model" and callable(v) else v) for k, v in bad.items()})
    with pytest.raises(ValueError, match=word):
        deployment_benchmark(**kwargs)
    assert os.listdir(tmp_path) == []


def test_two_models_in_one_run_and_distinct_names(tmp_path, trained, digits):
    kwargs = dict(
        x_test=digits.x_test[:16],
        y_test=digits.y_test[:16],
        sparsities=[0.5],
        artifacts=("float32",),
        runs=2,
        warmup=0,
        threads=[1],
        xnnpack=[True],
    )
    with pytest.raises(ValueError, match="distinct names"):
        deployment_benchmark(tmp_path / "a", model=[trained, trained], **kwargs)
    assert os.listdir(tmp_path) == []
    other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)], name="linear")
    rows = deployment_benchmark(tmp_path / "b", model=[trained, other], **kwargs)
    assert [(r["model"], r["prunable_zeros"]) for r in rows] == [("mlp-s50", N_PRUNABLE // 2), ("linear-s50", 320)]


def test_existing_report_refused_unless_overwrite(tmp_path, trained, digits):
    (tmp_path / "deployment.json").write_text("old")
    kwargs = dict(
        x_test=digits.x_test[:8],
        y_test=digits.y_test[:8],
        model=trained,
        sparsities=[0.5],
        artifacts=("float32",),
        runs=1,
        warmup=0,
        threads=[1],
        xnnpack=[True],
    )
    with pytest.raises(ValueError, match="overwrite"):
        deployment_benchmark(tmp_path, **kwargs)
    assert (tmp_path / "deployment.json").read_text() == "old"
    deployment_benchmark(tmp_path, overwrite=True, **kwargs)
    assert json.loads((tmp_path / "deployment.json").read_text())["rows"][0]["model"] == "mlp-s50"
    assert sorted(os.listdir(tmp_path)) == ["deployment.json", "deployment.md"]


@pytest.mark.slow
def test_deployment_benchmark_script(tmp_path):
    """``python -m serving.deployment ...``, run through its ``main`` in this process (it sets no TF threads)."""
    from serving import deployment

    deployment.main(
        [
            "--out",
            str(tmp_path / "results"),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--epochs",
            "1",
            "--sparsities",
            "0.9",  # one sparsity: the script's wiring (every sparsity runs the same code)
            "--runs",
            "3",
            "--warmup",
            "0",
        ]
    )
    rows = json.loads((tmp_path / "results" / "deployment.json").read_text())["rows"]
    assert {(r["model"], r["artifact"]) for r in rows} == {
        (f"{m}-s90", a) for m in ("lenet_300_100", "small_cnn") for a in serving.DEFAULT_ARTIFACTS
    }
    for r in rows:
        if r["artifact"] == "sparse_float32" and r["target_sparsity"] == 0.9:
            assert r["size_vs_float32"] <= 0.2 and r["test_max_abs_diff"] <= 1e-5  # the size target
    assert os.path.isfile(tmp_path / "artifacts" / "saved_models" / "small_cnn-s90" / "1" / "saved_model.pb")


def test_tflite_latency_times_files_side_by_side(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    paths = [export.export_tflite(model, tmp_path / f"{i}.tflite").path for i in range(2)]
    x1 = np.ones((1, 6), "float32")
    timings = serving.tflite_latency(paths, x1, threads=[1, 2], xnnpack=[True, False], runs=5, warmup=1)
    assert len(timings) == 2
    for entries in timings:
        assert [(e["threads"], e["xnnpack"]) for e in entries] == [(1, True), (1, False), (2, True), (2, False)]
        assert all(e["runs"] == 5 and 0 < e["p50_us"] <= e["p95_us"] for e in entries)
    for bad, word in [
        (dict(paths=[]), "paths must be a non-empty list"),
        (dict(paths=[tmp_path / "missing.tflite"]), "is not a file"),
        (dict(runs=0), "runs must be an integer >= 1"),
        (dict(threads=[0]), "threads must be a non-empty list of integers >= 1"),
    ]:
        with pytest.raises(ValueError, match=word):
            serving.tflite_latency(**{"paths": paths, "x1": x1, **bad})
