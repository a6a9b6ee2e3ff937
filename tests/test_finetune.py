"""The transfer benchmark (``tf_selopt.study.finetune``, ``selopt finetune``) at its ``--quick`` size."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tensors

from tf_selopt.cli import main
from tf_selopt.study import finetune


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    result = CliRunner().invoke(main, ["finetune", "--quick", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "finetune.json").read_text()), result.output


def test_quick_writes_json_table_figure_and_cached_weights(quick_run):
    out, result, output = quick_run
    keys = {"command", "commit", "config", "arms", "data", "models", "runs", "summary", "goals", "versions"}
    assert keys <= set(result)
    assert (out / "finetune.png").stat().st_size > 0
    assert (out / "pretrained" / "lenet_300_100.weights.h5").exists()
    table = (out / "finetune.md").read_text()
    assert "| lora_r4 |" in table and "| fisher@0.5% |" in table and table in output
    assert result["data"] == {"pretrain": 1750, "pretrain_test": 500, "pool": 1750, "val": 250, "test": 500}
    names = [a["name"] for a in result["arms"]]
    assert names == ["full", "last_layer", "lora_r4", "fisher", "preconditioned", "fisher@0.5%"]
    assert [r["arm"] for r in result["runs"]] == names  # one model, size, seed
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in result["runs"])
    assert {g["model"] for g in result["goals"]} == {"lenet_300_100"}


def test_trainable_counts_equal_budget_and_masks_are_exact(quick_run):
    _, result, _ = quick_run
    entry = result["models"]["lenet_300_100"]
    N, P = entry["N"], entry["P"]
    assert N == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 5 + 5
    # LoRA r=4 on the three Dense layers (A: in x 4, B: 4 x out) plus the biases Keras leaves trainable
    assert P == sum(i * 4 + 4 * o for i, o in ((784, 300), (300, 100), (100, 5))) + 300 + 100 + 5
    rows = {r["arm"]: r for r in result["runs"]}
    assert rows["full"]["trainable"] == N
    assert rows["last_layer"]["trainable"] == 100 * 5 + 5
    assert rows["lora_r4"]["trainable"] == P
    for name in ("fisher", "preconditioned"):
        r = rows[name]
        # exactly k: calibrate's masks and the optimizer's own read-out after training agree with the budget
        assert r["keep"] == r["mask_true"] == r["selected_count"] == r["trainable"] == P, r
        assert r["update_path"] == "selected_only"
    small = rows["fisher@0.5%"]
    assert small["keep"] == small["selected_count"] == small["mask_true"] == round(0.005 * N)


def test_optimizer_bytes_follow_what_trains(quick_run):
    _, result, _ = quick_run
    N = result["models"]["lenet_300_100"]["N"]
    rows = {r["arm"]: r for r in result["runs"]}
    # Adam: two float32 slots per trained parameter (+ iterations and learning rate)
    assert 8 * rows["full"]["trainable"] <= rows["full"]["optimizer_bytes"] < 8 * rows["full"]["trainable"] + 64
    assert 8 * rows["lora_r4"]["trainable"] <= rows["lora_r4"]["optimizer_bytes"]
    for name in ("fisher", "preconditioned", "fisher@0.5%"):
        r = rows[name]
        assert r["optimizer_bytes"] < rows["full"]["optimizer_bytes"] / 4, name
        # nothing N-sized, not even bool masks: k-sized values, positions and Adam slots (16 B per entry),
        # one offset per variable and scalar counters
        assert r["optimizer_mask_bytes"] == 0 < N
        assert 16 * r["keep"] <= r["optimizer_bytes"] < 16 * r["keep"] + 1024, r
    steps = result["models"]["lenet_300_100"]["step_seconds"]
    assert set(steps) == set(rows) and all(s > 0 for s in steps.values())


def test_subset_is_stratified_and_seeded():
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.repeat(np.arange(5), 20).astype(np.int32)
    xs, ys = finetune.subset((x, y), 12, seed=3)
    assert np.bincount(ys, minlength=5).tolist() == [3, 3, 2, 2, 2]
    assert np.array_equal(xs, finetune.subset((x, y), 12, seed=3)[0])
    assert not np.array_equal(xs, finetune.subset((x, y), 12, seed=4)[0])
    assert np.array_equal(y[xs[:, 0].astype(int)], ys)


def test_goals_compare_one_criterion_for_every_size():
    def arm(acc, bytes_, step):
        return {
            "trainable": 1,
            "optimizer_bytes": bytes_,
            "optimizer_mask_bytes": 0,
            "step_ms": step,
            "peak_rss_mib": None,
            "arm_rss_growth_mib": None,
            "accuracy": {"50": [acc[0], 0, 3], "1000": [acc[1], 0, 3]},
        }

    result = {
        "config": {"lora_rank": 4},
        "summary": {
            "m": {
                "full": arm((80, 95), 900, 2.0),
                "lora_r4": arm((70, 90), 100, 1.0),
                "fisher": arm((75, 94.5), 120, 0.9),
                "gradient_sum": arm((60, 99), 50, 0.5),
            }
        },
    }
    goals = {g["goal"]: g["met"] for g in finetune.goals(result)}
    # fisher has the best mean over sizes (84.75 vs 79.5): it is judged everywhere, not the best per cell
    assert goals == {
        "fisher >= lora_r4 accuracy at n=50": True,
        "fisher >= lora_r4 accuracy at n=1000": True,
        "fisher within 1 point of full at n=1000": True,
        "fisher optimizer bytes <= lora_r4": False,
        "fisher step time <= lora_r4": True,
    }


def test_tensorboard_runs_per_arm_with_step_loss_validation_and_test_accuracy(quick_run):
    """``OUT/tensorboard/<arm>-n<size>-s<seed>_<model>``: ``train/loss`` at every optimizer step, the validation
    accuracy, and ``test/accuracy`` equal to the JSON's; the command prints the smoothing-0 URL."""
    import tensorflow as tf

    from tf_selopt.cli import TENSORBOARD_URL

    out, result, output = quick_run
    steps = result["config"]["steps"]
    names = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert names == sorted(f"{a['name']}-n50-s0_lenet" for a in result["arms"])
    for row in result["runs"]:
        log_dir = out / "tensorboard" / f"{row['arm']}-n50-s0_lenet"
        logged = tensors(log_dir)
        assert [e.step for e in logged["train/loss"]] == list(range(1, steps + 1))  # after each step
        (test,) = logged["test/accuracy"]
        assert test.step == steps and np.float32(tf.make_ndarray(test.tensor_proto)) == np.float32(row["test_accuracy"])
        (val,) = tensors(log_dir / "validation")["epoch_accuracy"]
        assert 0.0 <= float(tf.make_ndarray(val.tensor_proto)) <= 1.0
        assert "epoch_loss" in tensors(log_dir / "train")
    assert f"tensorboard --logdir {out / 'tensorboard'}" in output and TENSORBOARD_URL in output
