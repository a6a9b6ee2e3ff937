"""The deployment benchmark and ``tflite_latency`` on a model with named inputs (a dict of an int and a float)."""

import os

import keras
import numpy as np
import pytest

from tf_selopt.deploy import export
from tf_selopt.deploy.benchmark import deployment_benchmark, tflite_latency

N = 16


@pytest.fixture(scope="module")
def two_inputs():
    """``{"ids": int32 (n, 6), "extra": float32 (n, 3)} -> 3 logits``, random weights."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32", name="ids")
    extra = keras.Input((3,), name="extra")
    h = keras.layers.Flatten()(
        keras.layers.Embedding(20, 4, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0))(ids)
    )
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([h, extra]))
    model = keras.Model({"ids": ids, "extra": extra}, keras.layers.Dense(3)(h), name="two")
    rng = np.random.default_rng(0)
    x = {"ids": rng.integers(0, 20, (N, 6)).astype("int32"), "extra": rng.standard_normal((N, 3)).astype("float32")}
    return model, x, rng.integers(0, 3, N).astype("int32")


@pytest.fixture(scope="module")
def bench(tmp_path_factory, two_inputs):
    model, x, y = two_inputs
    tmp = tmp_path_factory.mktemp("multi")
    rows = deployment_benchmark(
        tmp / "report",
        x,
        y,
        model=model,
        sparsities=[0.0, 0.5],
        artifacts=("saved_model", "float32"),
        runs=4,
        warmup=1,
        threads=[1],
        xnnpack=[True],
        artifacts_dir=tmp / "art",
    )
    return rows, tmp


def test_named_inputs_run_end_to_end(bench, two_inputs):
    model, x, y = two_inputs
    rows, tmp = bench
    assert [(r["model"], r["artifact"]) for r in rows] == [
        ("two-s0", "saved_model"),
        ("two-s0", "float32"),
        ("two-s50", "saved_model"),
        ("two-s50", "float32"),
    ]
    dense = rows[0]
    want = float(np.mean(np.argmax(np.asarray(model(x, training=False)), axis=-1) == y))
    assert dense["accuracy"] == rows[1]["accuracy"] == want
    for row in rows:
        assert row["test_max_abs_diff"] <= 1e-4
        assert [e["p50_us"] > 0 for e in row["latency"]] == [True]
    assert rows[2]["prunable_zeros"] == rows[2]["prunable"] // 2
    assert os.path.isfile(tmp / "report" / "deployment.json")


def test_tflite_latency_takes_named_inputs(bench, two_inputs):
    _, x, _ = two_inputs
    rows, _ = bench
    path = rows[1]["path"]
    x1 = {name: v[:1] for name, v in x.items()}
    (entries,) = tflite_latency([path], x1, threads=[1], xnnpack=[True], runs=3, warmup=1)
    assert entries[0]["runs"] == 3 and entries[0]["p50_us"] > 0
    assert list(export.serving_input_specs(two_inputs[0])) == ["ids", "extra"]


@pytest.mark.parametrize(
    "bad,word",
    [
        ({"ids": np.zeros((1, 6), "int32")}, "x1: the keys"),
        (np.zeros((1, 6), "float32"), "x1: .* takes 2 inputs"),
    ],
)
def test_tflite_latency_refuses_inputs_that_do_not_fit(bench, bad, word):
    rows, _ = bench
    with pytest.raises(ValueError, match=word):
        tflite_latency([rows[1]["path"]], bad, threads=[1], xnnpack=[True], runs=1, warmup=0)


@pytest.mark.parametrize(
    "bad,word",
    [
        (lambda x: {"ids": x["ids"]}, "`x_test`: the dict's keys"),
        (lambda x: {**x, "extra": x["extra"][:, :2]}, "x_test input 'extra' rows have shape"),
        (lambda x: {**x, "extra": x["extra"][:4]}, "x_test: a dict of named inputs needs"),
        (lambda x: x["ids"], "`x_test`: the model takes 2 inputs"),
    ],
)
def test_x_test_that_does_not_fit_is_refused_before_writing(tmp_path, two_inputs, bad, word):
    model, x, y = two_inputs
    with pytest.raises(ValueError, match=word):
        deployment_benchmark(
            tmp_path / "out", bad(x), y, model=model, sparsities=[0.5], artifacts=("float32",), runs=1, warmup=0
        )
    assert os.listdir(tmp_path) == []


def test_a_saved_model_with_named_inputs_is_benchmarked_as_it_is(bench, two_inputs, tmp_path):
    model, x, y = two_inputs
    rows, tmp = bench
    saved = rows[0]["path"]
    assert saved.endswith(os.path.join("two-s0", "1"))
    (row,) = deployment_benchmark(
        tmp_path, x, y, paths=[saved], artifacts=("float32",), runs=2, warmup=0, threads=[1], xnnpack=[True]
    )
    assert row["model"] == "two-s0"
    assert row["accuracy"] == rows[1]["accuracy"] and row["test_max_abs_diff"] <= 1e-4
