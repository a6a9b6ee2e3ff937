"""The README's main job and the custom-loop example run end to end on the bundled data; a smoke run of the
pruning benchmark (``python -m benchmarks.pruning``)."""

import re
import runpy
import sys
from pathlib import Path

import pytest
from conftest import run_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_example(monkeypatch, capsys):
    """``run(name, *args)``: ``python examples/<name> *args`` as ``__main__`` in this process (the examples set
    no TF threads or environment; a fresh process would add a TensorFlow import); its stdout."""

    def run_in_process(name, *args):
        path = str(ROOT / "examples" / name)
        monkeypatch.setattr(sys, "argv", [path, *args])
        capsys.readouterr()
        runpy.run_path(path, run_name="__main__")
        return capsys.readouterr().out

    return run_in_process


@pytest.mark.slow
def test_quickstart_freezes_ninety_percent_and_learns(run_example):
    # 2 epochs is the fewest that test the switch: the warm-up is one whole epoch (55 steps) and the selection
    # comes 20 steps (its window) into the second; after 1 epoch nothing is selected yet (frozen 0.0000, test
    # accuracy 0.816). Seen with 2 epochs: test accuracy 0.883. The second epoch costs ~5 s of the ~30 s run
    # (import, data, tracing and the first epoch are the rest).
    out = run_example("quickstart.py", "--epochs", "2")
    accuracy = float(re.search(r"test accuracy:\s+([\d.]+)", out).group(1))
    selected, total = map(int, re.search(r"selected count:\s+(\d+) of (\d+)", out).groups())
    assert selected == round(0.1 * total)
    assert re.search(r"frozen fraction: 0\.9000", out)
    assert accuracy > 0.8  # one warm-up epoch alone reaches ~0.83 on this split


@pytest.mark.slow
def test_custom_loop_reselects(run_example):
    # 300 steps is the fewest that show 2 selections: the first comes after warm-up 100 + window 50 (step 150),
    # the reselection 100 steps later (step 250), and the script prints every 100 steps (step 200 shows
    # "selections 1"). Seen: test accuracy 0.923 (0.920 at 200 steps). The steps are not the cost: 10 steps take
    # ~33 s of CPU, 300 steps ~37 s; import, data and the XLA compile of the train step are the rest.
    out = run_example("custom_loop.py", "--steps", "300")
    assert "selections 2, frozen 0.800" in out
    assert float(re.search(r"test accuracy: ([\d.]+)", out).group(1)) > 0.8


@pytest.mark.slow
def test_pruning_benchmark_smoke(tmp_path):
    """Every method once (LeNet, seed 0, 90%, 2 epochs): exact sparsity, sane accuracy, table and goal lines."""
    import json

    # The cheapest configuration that keeps these assertions: one model (LeNet), one seed, one level;
    # 2 epochs because pruning begins after the first (--begin-epochs 1, the schedule asserted below). The six
    # runs take ~38 s in all (dense 3.6, global 8.8, per_layer 8.3, random 6.6, tfmot 8.5, dense_tf_keras
    # 2.5 s), the process ~50 s.
    out_json = tmp_path / "pruning_benchmark.json"
    out = run_python(
        "-m",
        "benchmarks.pruning",
        "--models",
        "lenet",
        "--seeds",
        "0",
        "--levels",
        "0.9",
        "--epochs",
        "2",
        "--out",
        str(out_json),
    )
    result = json.loads(out_json.read_text())
    # 2 epochs x 55 steps; begin after 1 epoch, 15 events up to ~65% of 110 steps.
    assert result["config"]["schedule"] == {
        "steps_per_epoch": 55,
        "total_steps": 110,
        "begin_step": 55,
        "end_step": 70,
        "frequency": 1,
        "power": 3,
    }
    runs = {r["method"]: r for r in result["runs"]}
    assert sorted(runs) == sorted(["dense", "global", "per_layer", "random", "tfmot", "dense_tf_keras"])
    total = 784 * 300 + 300 * 100 + 100 * 10
    for method in ("global", "per_layer", "random", "tfmot"):
        r = runs[method]
        assert r["kernel_total"] == total
        # floor(0.9 * N + 0.5) zeroed: over all kernels (global) or per kernel (per_layer, tfmot); same here.
        assert r["kernel_zeros"] == 239580, method
    assert runs["per_layer"]["per_layer_sparsity"] == {name: 0.9 for name in runs["per_layer"]["per_layer_sparsity"]}
    assert runs["dense"]["kernel_zeros"] == runs["dense_tf_keras"]["kernel_zeros"] == 0
    # After 2 epochs (15 pruning steps, 40 fine-tuning steps) seen: dense 91.2, tf_keras dense 90.7, global 89.5,
    # per_layer 81.1, tfmot 80.1 (per-layer magnitude as well), random 47.5.
    for method, floor in [
        ("dense", 0.85),
        ("dense_tf_keras", 0.85),
        ("global", 0.85),
        ("per_layer", 0.7),
        ("tfmot", 0.7),
        ("random", 0.3),
    ]:
        assert runs[method]["test_accuracy"] > floor, (method, runs[method]["test_accuracy"])
    assert re.search(r"^\| lenet \| global \| \d+\.\d\d ± 0\.00 \|$", out, re.M)
    assert re.search(r"^- lenet: global >= tfmot at 90%: (met|MISSED) \(", out, re.M)
    assert re.search(r"^- lenet: global within 1 point of dense at 90%: (met|MISSED) \(", out, re.M)
    assert [c["check"] for c in result["goal_checks"]] == [
        "global >= tfmot at 90%",
        "global within 1 point of dense at 90%",
    ]
