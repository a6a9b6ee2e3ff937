"""Smoke runs of the benchmarks (``--quick``): they finish, their own checks pass, the JSON is complete and sane.

The numbers themselves are not asserted (timings on a shared machine are not
tests); what is: every phase was really reached, selection masks equal the
full-sort reference with exactly k ones, peak RSS and the wrapper's state size
are what they must be.
"""

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_python

from tf_selopt.core import selection

ROOT = Path(__file__).resolve().parents[1]


#: Benchmarks whose smoke runs in the test's own process: they set no TF threads, environment or mixed-precision
#: policy and read no peak RSS, so a fresh process would only add a TensorFlow import.
IN_PROCESS = {"overhead", "selection_cost", "selection_graph", "sparse_delta_layer", "shrink_bert"}


@pytest.fixture
def run_benchmark(monkeypatch, capsys):
    """``run(name, out)``: ``python -m benchmarks.<name> --quick --out <out>`` (in this process for
    ``IN_PROCESS``, as that command line); the parsed JSON and stdout."""

    def run(name, out):
        argv = ["--quick", "--out", str(out)]
        if name in IN_PROCESS:
            monkeypatch.syspath_prepend(str(ROOT))
            monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / f"{name}.py"), *argv])
            capsys.readouterr()
            importlib.import_module(f"benchmarks.{name}").main()
            stdout = capsys.readouterr().out
        else:
            stdout = run_python("-m", f"benchmarks.{name}", *argv)
        result = json.loads(out.read_text())
        assert result["command"] == f"python -m benchmarks.{name} --quick --out {out}"
        assert result["machine"]["cpu_count"] >= 1
        assert result["machine"]["tensorflow"] == tf.__version__
        return result, stdout

    return run


def test_sort_reference_follows_the_tie_rule(monkeypatch):
    """The full-sort reference breaks ties by the lowest flat index, as ``select`` does, in both scopes."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.selection_cost import sort_select

    scores = [tf.constant([1.0, 0.5, 1.0]), tf.constant([1.0, 2.0, 1.0, 0.0])]
    for scope, expected in [
        ("global", [[True, False, True], [True, True, False, False]]),
        # per_variable_counts([3, 4], 4) == [2, 2]: the first two ties in each variable
        ("per_variable", [[True, False, True], [True, True, False, False]]),
    ]:
        ours = [m.numpy().tolist() for m in selection.select(scores, 4, scope)]
        reference = [m.numpy().tolist() for m in sort_select(scores, 4, scope)]
        assert ours == reference == expected, scope
    # Many ties (multiples of 2**-8): still the same masks, exactly k.
    many = [tf.constant(np.random.default_rng(0).integers(0, 256, n) / 256.0, tf.float32) for n in (700, 300)]
    for scope in selection.SCOPES:
        ours = np.concatenate([m.numpy() for m in selection.select(many, 101, scope)])
        reference = np.concatenate([m.numpy() for m in sort_select(many, 101, scope)])
        assert ours.sum() == 101 and np.array_equal(ours, reference), scope


@pytest.mark.slow
def test_overhead_quick(tmp_path, run_benchmark):
    result, stdout = run_benchmark("overhead", tmp_path / "overhead.json")
    (run,) = result["runs"]
    assert (run["model"], run["kind"], run["batch_size"]) == ("mlp", "fit", 128)
    assert run["num_parameters"] == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert run["k"] == math.floor(0.1 * run["num_parameters"] + 0.5)
    assert run["steps_per_phase"] == 6  # 2 blocks of 3 steps, each checked to be in its phase
    assert sorted(run["phases"]) == ["masked", "warmup", "window"]
    for phase in run["phases"].values():
        assert phase["ratio"] > 0 and phase["cpu_ratio"] > 0 and phase["ours_median_ms"] > 0
        assert phase["guard_ratio"] > 0 and phase["guard_cpu_ratio"] > 0
        assert phase["goal_met"] == (phase["ratio"] <= phase["goal"])
    assert run["selection_step_ms"] > 0
    assert "| mlp | fit |" in stdout


@pytest.mark.slow
def test_selection_cost_quick(tmp_path, run_benchmark):
    result, stdout = run_benchmark("selection_cost", tmp_path / "selection.json")
    rows = result["rows"]
    assert [(r["scope"], r["n"]) for r in rows] == [
        ("global", 10_000),
        ("global", 100_000),
        ("per_variable", 10_000),
        ("per_variable", 100_000),
    ]
    for r in rows:
        assert r["same_mask_as_sort"] is True
        assert r["selected"] == r["k"] == selection.resolve_count(0.1, r["n"])
        assert sum(r["variable_sizes"]) == r["n"] and len(r["variable_sizes"]) == 4
        assert r["ties_at_threshold"] >= 1
        assert all(t > 0 for t in r["seconds"].values())
        assert r["sort_over_ours"] == r["seconds"]["sort"] / r["seconds"]["ours"]
    assert set(rows[0]["seconds"]) == {"ours", "sort", "top_k"}
    for s in result["summary"]:
        assert all(math.isfinite(e) for e in s["growth_exponent"].values())
    assert "growth exponent" in stdout


@pytest.mark.slow
def test_sparse_delta_layer_quick(tmp_path, run_benchmark):
    result, _ = run_benchmark("sparse_delta_layer", tmp_path / "sdl.json")
    assert result["shape"] == [16, 32] and result["k"] == math.floor(0.1 * 16 * 32)
    assert [(r["rows"], r["jit_compile"]) for r in result["results"]] == [(8, False), (8, True)]
    for r in result["results"]:
        assert sorted(r["ms_median"]) == ["dense", "lora_r4", "sparse_delta"]
        assert all(ms > 0 for ms in r["ms_median"].values())
        # the deltas' gradient is the dense kernel gradient at the k positions
        assert r["delta_gradient_max_abs_diff"] <= 1e-5 * max(1.0, r["dense_gradient_max_abs"])


def test_memory_quick(tmp_path, run_benchmark):
    result, _ = run_benchmark("memory", tmp_path / "memory.json")
    (row,) = result["rows"]
    n = 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert row["num_parameters"] == n
    # gradient_sum: bool mask (1 byte) + float32 score (4) + one float32 slot (4) per parameter.
    assert row["expected_state_bytes_per_parameter"] == 9
    for mode in ("adam", "ours"):
        assert row["peak_rss_mib"][mode] >= row["rss_after_fit_mib"][mode] > 100  # TensorFlow alone is larger
        assert row["peak_rss_mib"][mode] >= row["rss_before_fit_mib"][mode] > 100
    assert row["peak_difference_mib"] == row["peak_rss_mib"]["ours"] - row["peak_rss_mib"]["adam"]


@pytest.mark.slow
def test_shrink_quick(tmp_path, run_benchmark):
    result, stdout = run_benchmark("shrink", tmp_path / "shrink.json")
    (name,) = result["models"]
    run = result["models"][name]
    assert name == "small_cnn" and result["settings"]["quick"] is True
    assert run["shrunk"]["params"] < run["dense"]["params"] and run["params_shrunk_vs_dense"] < 1
    assert run["shrunk"]["tflite_bytes"] < run["dense"]["tflite_bytes"]
    assert all(0 <= run[arm]["test_accuracy"] <= 1 for arm in ("dense", "shrunk"))
    assert [(e["threads"], e["xnnpack"]) for e in run["latency"]] == [(1, True), (1, False)]
    for e in run["latency"]:
        assert all(0 < e[arm]["p50_us"] <= e[arm]["p95_us"] for arm in ("dense", "shrunk"))
        assert e["p50_shrunk_vs_dense"] == round(e["shrunk"]["p50_us"] / e["dense"]["p50_us"], 3)
    assert "small_cnn" in stdout


@pytest.mark.slow
def test_shrink_bert_quick(tmp_path, run_benchmark):
    pytest.importorskip("keras_hub")
    result, _ = run_benchmark("shrink_bert", tmp_path / "shrink_bert.json")
    arms = result["arms"]
    assert list(arms) == ["ffn50_heads50", "dense"] and result["settings"]["size"] == "tiny"
    small, dense = arms["ffn50_heads50"], arms["dense"]
    assert set(map(tuple, small["heads_and_units_per_encoder"].values())) == {(1, 32)}
    assert set(map(tuple, dense["heads_and_units_per_encoder"].values())) == {(2, 64)}
    assert small["params"] < dense["params"] and small["tflite_bytes"] < dense["tflite_bytes"]
    assert small["accuracy_points_vs_dense"] == round(100 * (small["test_accuracy"] - dense["test_accuracy"]), 2)
    for arm in arms.values():
        assert [(e["threads"], e["xnnpack"]) for e in arm["latency"]] == [(1, True), (1, False)]
        assert all(0 < e["p50_us"] <= e["p95_us"] and e["runs"] == 10 for e in arm["latency"])
    assert [e["p50_vs_dense"] for e in dense["latency"]] == [1.0, 1.0]


def test_selection_graph_quick(tmp_path, run_benchmark):
    result, _ = run_benchmark("selection_graph", tmp_path / "graph.json")
    assert result["same_masks"] is True and result["config"]["quick"] is True
    loop, unrolled = result["rows"]["loop"], result["rows"]["unrolled"]
    assert loop["graph_ops"] < unrolled["graph_ops"] / 4  # ~15 ops per variable's search instead of ~200
    for row in (loop, unrolled):
        assert row["trace_s"] > 0 and row["top_k_xla"]["median_s"] > 0


@pytest.mark.slow
def test_fit_default_path_quick(tmp_path, run_benchmark):
    result, stdout = run_benchmark("fit_default_path", tmp_path / "fit.json")
    assert result["config"]["quick"] is True and result["nproc"] >= 1 and len(result["load_before"]) == 3
    assert result["child_env"]["TF_NUM_INTRAOP_THREADS"] == str(result["nproc"])
    adam, selective = sorted(result["runs"], key=lambda run: run["arm"])
    assert (adam["arm"], selective["arm"]) == ("adam", "selective")
    n = 784 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10
    for run in (adam, selective):
        assert (run["jit"], run["keep"], run["steps"], run["warmup_steps"], run["pair"]) == ("off", 0.01, 40, 4, 0)
        assert run["num_parameters"] == n and len(run["batch_ms"]) == len(run["batch_cpu_ms"]) == 40
        assert 0 < run["step_ms"] < 1e3 * run["first_step_s"] and run["step_cpu_ms"] > 0
        assert run["fit_wall_s"] > run["first_step_s"] and run["fit_cpu_s"] > 0 and run["peak_rss_mib"] > 100
        assert run["first_step_s"] < run["batches_wall_s"] <= run["fit_wall_s"]
        events = run["fit_events_s"]
        assert list(events) == ["train_begin", "first_batch_begin", "last_batch_end", "epoch_end", "train_end"]
        assert sorted(events.values()) == list(events.values()) and events["train_end"] <= run["fit_wall_s"]
    assert adam["optimizer_bytes_per_parameter"] == pytest.approx(8, abs=1e-5)  # m and v, float32; 2 scalars
    assert selective["update_path"] == "selected_only" and selective["k"] == round(0.01 * n)
    (row,) = result["rows"]
    assert (row["jit"], row["keep"], row["pairs"]) == ("off", 0.01, 1)
    ratio = row["selective"]["ratio_to_adam"]
    assert ratio["step_ms"]["median"] == selective["step_ms"] / adam["step_ms"]
    assert ratio["fit_cpu_s"]["min"] == ratio["fit_cpu_s"]["max"] == selective["fit_cpu_s"] / adam["fit_cpu_s"]
    assert "| off | 0.01 | selective |" in stdout


def test_finetune_hub_takes_a_learning_rate_per_arm_and_names_bad_ones(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))
    import argparse

    from benchmarks.finetune_hub import ARMS, _arm_lrs

    parser = argparse.ArgumentParser()
    assert _arm_lrs(parser, ["full=1e-4", "lora4=3e-3"]) == {"full": 1e-4, "lora4": 3e-3}
    assert _arm_lrs(parser, []) == {}
    for bad in ["full", "full=0", "full=-1e-3", "full=x", "dense=1e-3"]:
        with pytest.raises(SystemExit):
            _arm_lrs(parser, [bad])
        err = capsys.readouterr().err
        assert f"--arm-lr takes ARM=LR with ARM one of {ARMS} and LR > 0; got {bad!r}" in err


def test_reset_peak_rss_brings_the_peak_down_to_what_is_resident(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.common import reset_peak_rss, rss_bytes

    block = np.ones(64 * 2**20 // 8)  # 64 MiB resident
    block[::512] = 2.0
    peak = rss_bytes("VmHWM")
    del block
    reset_peak_rss()
    assert rss_bytes("VmHWM") <= peak - 48 * 2**20
    assert rss_bytes("VmHWM") >= rss_bytes("VmRSS") - 2**20
