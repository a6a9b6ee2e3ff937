"""The study runner, its config errors, figures, report and the `selopt` CLI (real training, tiny config)."""

import json
import math
import re
import shutil
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from conftest import tensors

from tf_selopt import cli
from tf_selopt.study import data, plots, report, runner
from tf_selopt.study.config import ConfigError, StudyConfig, config_hash, load_config

TINY = cli.CONFIGS / "tiny.yaml"


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------ config errors name the key and the line


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: x\nselection:\n  window: 5\n  bogus: 1\n", "c.yaml:4: selection.bogus: unknown key"),
        (
            "name: x\nselection: {}\ntraining:\n  epochs: '8'\n",
            "c.yaml:4: training.epochs: Input should be a valid integer",
        ),
        (
            "name: x\nselection:\n  criteria: [gradient_sum, magic]\n",
            "c.yaml:3: selection.criteria[1]: Input should be",
        ),
        ("name: x\nselection:\n  frozen: [0.5, 1.0]\n", "c.yaml:3: selection.frozen[1]: Input should be less than 1"),
        ("name: x\npruning:\n  methods: [tfmot, snip]\n", "c.yaml:3: pruning.methods[1]: Input should be 'global'"),
        ("name: x\nseeds: [0, -1]\nselection: {}\n", "c.yaml:2: seeds[1]: Input should be greater than or equal to 0"),
        ("name: x\nselection: 5\n", "c.yaml:2: selection: Input should be a valid dictionary"),
        ("name: x\nmodels: [resnet]\nselection: {}\n", "c.yaml:2: models[0]: Input should be 'lenet_300_100'"),
        ("name: x\nselection: {}\nexport_sparsity: 0.9\n", "c.yaml:3: export_sparsity: Value error, must be one of"),
        ("name: x\n", "nothing to run"),
        ("- a\n- b\n", "c.yaml:1: the config must be a mapping"),
        ("name: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_key_and_line(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)


def test_all_errors_are_reported_at_once(tmp_path):
    path = write(tmp_path, "name: x\nbogus: 1\nselection:\n  window: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "c.yaml:2: bogus: unknown key" in str(info.value)
    assert "c.yaml:4: selection.window: Input should be greater than or equal to 1" in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_configs_are_valid_and_the_study_is_the_notes():
    study = load_config(cli.CONFIGS / "study.yaml")
    assert study.selection.frozen == [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]
    assert set(study.selection.criteria) == {"gradient_sum", "preconditioned", "fisher", "magnitude", "random"}
    assert set(study.pruning.methods) == {"global", "per_layer", "random", "tfmot"}
    assert set(study.data) == {"mnist", "digits"} and set(study.models) == {"lenet_300_100", "small_cnn"}
    assert len(study.seeds) >= 3
    demo = load_config(cli.CONFIGS / "demo.yaml")
    assert len(demo.seeds) >= 3 and demo.export_sparsity == 0.9


def value(event) -> np.float32:
    return np.float32(tf.make_ndarray(event.tensor_proto))


@pytest.mark.parametrize("name", ["study.yaml", "demo.yaml"])
def test_run_names_are_short_and_a_fraction_filter_matches_that_fraction_only(name):
    """TensorBoard's run filter is ``new RegExp(filter, "i").test(run name)``: the fraction token of a run name
    (``frozen0.9-``, with its delimiter) matches the runs of that kind and fraction, never 0.99 or 0.995."""
    specs = runner.expand(load_config(cli.CONFIGS / name))
    names = [s.run_name for s in specs]
    assert len(set(names)) == len(names) and max(map(len, names)) <= 45
    for spec in specs:
        assert spec.run_name.startswith(f"{spec.method}-" if spec.kind != "full" else f"full-s{spec.seed}_")
        if spec.kind == "full":
            continue
        token = spec.run_name.split("-")[1] + "-"  # e.g. "frozen0.9-": the fraction and the delimiter after it
        matched = {s for s in specs if re.search(token, s.run_name, re.IGNORECASE)}
        assert matched == {s for s in specs if (s.kind, s.level) == (spec.kind, spec.level)}, token
        first = f"{spec.method}-{token}s{spec.seed}_"  # criterion, fraction and seed: one run per data and model
        matched = {s for s in specs if re.search(first, s.run_name, re.IGNORECASE)}
        assert matched == {
            s for s in specs if (s.kind, s.method, s.level, s.seed) == (spec.kind, spec.method, spec.level, spec.seed)
        }


def test_config_hash_ignores_name_only():
    a = StudyConfig(name="a", selection={})
    assert config_hash(a) == config_hash(StudyConfig(name="b", selection={}))
    assert config_hash(a) != config_hash(StudyConfig(name="a", selection={"window": 7}))


def test_expand_counts_every_run_once():
    config = load_config(cli.CONFIGS / "study.yaml")
    specs = runner.expand(config)
    per_cell = 1 + 5 * 7 + 4 * 5  # full + criteria x nonzero frozen levels + pruning methods x levels
    assert len(specs) == len({s.id for s in specs}) == per_cell * 2 * 2 * 3


@pytest.mark.parametrize(
    "text, expected",
    [
        ("selection: {window: 21, warmup_epochs: 1}", "selection.window (21) must be <= the warm-up steps on 'digits'"),
        ("selection: {warmup_epochs: 3}", "selection.warmup_epochs (3) must be < training.epochs (3)"),
        ("pruning: {begin_epochs: 3, events: 2}", "pruning schedule on 'digits'"),
    ],
)
def test_infeasible_config_is_refused_before_writing(tmp_path, text, expected):
    path = write(tmp_path, f"name: x\ndata: [digits]\ntraining: {{epochs: 3}}\n{text}\n")
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        runner.run_study(path, out, quiet=True)
    assert expected in str(info.value)
    assert not out.exists()


# ------------------------------------------------------------------ a real tiny study


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """`selopt demo --quiet` on the tiny config (copied in as demo.yaml): the tiny study, run once for the
    module through the CLI (run_study + figures + report + the printed table); the output and the rows as
    they were when the command returned."""
    tmp = tmp_path_factory.mktemp("study")
    configs = tmp / "configs"
    configs.mkdir()
    shutil.copyfile(TINY, configs / "demo.yaml")
    out = tmp / "tiny"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(cli, "CONFIGS", configs)
        result = CliRunner().invoke(cli.main, ["demo", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out, runner.read_rows(out), result


@pytest.fixture
def tiny_study(tiny_demo):
    """The tiny study's directory and rows (`run_study`'s return value is `read_rows(out)`)."""
    out, rows, _ = tiny_demo
    return out, rows


@pytest.mark.slow
def test_tiny_study_rows(tiny_study):
    out, rows = tiny_study
    config = load_config(TINY)
    assert [r["id"] for r in rows] == [s.id for s in runner.expand(config)]
    for r in rows:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and math.isfinite(r["test_loss"])
        if r["kind"] == "selection":  # exactly k parameters train
            n = r["num_parameters"]
            assert r["selected_count"] == r["k"] == max(1, math.floor((1 - r["level"]) * n + 0.5))
            assert r["frozen_fraction"] == pytest.approx(1 - r["k"] / n, abs=1e-7)
            assert r["selections"] == 1 and r["skipped_steps"] == 0
        if r["kind"] == "pruning":  # exact zeros over all kernels
            assert r["kernel_zeros"] == math.floor(r["level"] * r["kernel_total"] + 0.5) or r["method"] == "tfmot"
            assert r["sparsity"] == pytest.approx(r["level"], abs=2e-3)
        if r["kind"] == "full":
            assert r["sparsity"] == 0.0 and r["frozen_fraction"] == 0.0
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("id,kind,data,model,method,level,seed")
    meta = json.loads((out / "study.json").read_text())
    assert meta["config_hash"] == config_hash(config) and meta["versions"]["tensorflow"] == "2.21.0"


@pytest.mark.slow
def test_tiny_study_exports_and_logs(tiny_study):
    out, rows = tiny_study
    (exported,) = [r["export"] for r in rows if r.get("export")]
    tflite = out / exported["tflite"]
    assert tflite.stat().st_size == exported["tflite_bytes"] and exported["max_abs_diff"] <= 1e-5
    assert (out / exported["saved_model"] / "saved_model.pb").exists()
    logs = sorted(p.name for p in (out / "tensorboard").iterdir())
    specs = runner.expand(load_config(TINY))
    assert logs == sorted(s.run_name for s in specs)  # one seed: every run logged, under its run name
    # Every kind of run (full, selection, ours and tfmot pruning) logs the same: Keras' epoch_* on train and
    # validation, the loss of every optimizer step and the test metrics at the last step; pruning runs (ours and
    # tfmot's) the overall pruning/sparsity; no run writes a graph.
    config = load_config(TINY)
    last = config.training.epochs * math.ceil(len(data.load("digits").x_train) / config.training.batch_size)
    by_name = {s.run_name: r for s, r in zip(specs, rows)}
    for name, row in by_name.items():
        p = out / "tensorboard" / name
        for split in ("train", "validation"):
            assert [e.step for e in tensors(p / split)["epoch_accuracy"]] == [0, 1, 2], (name, split)
        ours = tensors(p)
        assert [e.step for e in ours["train/loss"]] == list(range(1, last + 1)), name
        assert [(e.step, value(e)) for e in ours["test/accuracy"]] == [(last, np.float32(row["test_accuracy"]))]
        assert [(e.step, value(e)) for e in ours["test/loss"]] == [(last, np.float32(row["test_loss"]))]
        if row["kind"] == "pruning":
            assert (ours["pruning/sparsity"][-1].step, value(ours["pruning/sparsity"][-1])) == (last, 0.9), name
        graphs = [
            e
            for f in p.rglob("events.out.tfevents.*")
            for e in tf.compat.v1.train.summary_iterator(str(f))
            if e.HasField("graph_def") or e.HasField("meta_graph_def")
        ]
        assert graphs == [], name


@pytest.mark.slow
def test_tiny_study_resumes_without_rerunning(tiny_study):
    out, rows = tiny_study
    before = (out / "runs.jsonl").read_bytes()
    again = runner.run_study(TINY, out, quiet=True)
    assert (out / "runs.jsonl").read_bytes() == before and again == rows
    # A missing row is run again, and only that one.
    lines = before.decode().splitlines()
    (out / "runs.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    again = runner.run_study(TINY, out, quiet=True)
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    assert (out / "runs.jsonl").read_text().splitlines()[:-1] == lines[:-1]


@pytest.mark.slow
def test_other_config_in_the_same_directory_is_refused(tiny_study, tmp_path):
    out, _ = tiny_study
    before = {p: p.read_bytes() for p in out.glob("*.*") if p.is_file()}
    other = write(tmp_path, TINY.read_text().replace("seeds: [0]", "seeds: [1]"))
    with pytest.raises(ConfigError, match="holds results of a different config"):
        runner.run_study(other, out, quiet=True)
    assert {p: p.read_bytes() for p in out.glob("*.*") if p.is_file()} == before


def test_non_empty_directory_without_a_study_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not empty and holds no study"):
        runner.run_study(TINY, out, quiet=True)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


# ------------------------------------------------------------------ figures and report from rows


def fake_rows():
    rows = []
    for seed, acc in enumerate([0.90, 0.92, 0.94]):
        rows.append(
            dict(
                kind="full",
                data="mnist",
                model="m",
                method="adam",
                level=0.0,
                seed=seed,
                test_accuracy=acc + 0.02,
                test_loss=0.3,
                seconds=1.0,
            )
        )
        for level, drop in [(0.5, 0.0), (0.9, 0.1)]:
            rows.append(
                dict(
                    kind="selection",
                    data="mnist",
                    model="m",
                    method="gradient_sum",
                    level=level,
                    seed=seed,
                    test_accuracy=acc - drop,
                    test_loss=0.5,
                    seconds=1.0,
                )
            )
            rows.append(
                dict(
                    kind="pruning",
                    data="mnist",
                    model="m",
                    method="global",
                    level=level,
                    seed=seed,
                    test_accuracy=acc - 2 * drop,
                    test_loss=0.6,
                    seconds=1.0,
                )
            )
    return rows


def test_grouped_means_and_stds_match_numpy():
    g = plots.grouped(fake_rows(), "selection")
    (lv, mean, std, n), (lv2, mean2, std2, n2) = g[("mnist", "m")]["gradient_sum"]
    assert (lv, lv2, n, n2) == (0.5, 0.9, 3, 3)
    assert mean == pytest.approx(0.92) and std == pytest.approx(np.std([0.9, 0.92, 0.94], ddof=1))
    assert mean2 == pytest.approx(0.82)


def test_tables_and_figures(tmp_path):
    rows = fake_rows()
    text = report.tables(rows)
    assert "| gradient_sum | 92.00 ± 2.00 | 82.00 ± 2.00 |" in text
    assert "| global | 92.00 ± 2.00 | 72.00 ± 2.00 |" in text
    assert "full training: 94.00 ± 2.00" in text
    paths = plots.plot(rows, tmp_path)
    assert [p.name for p in paths] == ["figure1.png", "figure2.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in paths)


def test_structured_figure_from_a_deployment_summary(tmp_path):
    def entry(zeros, accuracy, p50):
        latency = [{"threads": 1, "xnnpack": True, "p50_us": p50}, {"threads": 1, "xnnpack": False, "p50_us": p50}]
        return {"prunable_zeros": zeros, "prunable": 100, "accuracy": accuracy, "latency": latency}

    artifacts = {
        "dense.float32": entry(0, 0.93, 30.0),
        "unstructured90.sparse_float32": entry(90, 0.92, 29.0),
        "block1x4-90.sparse_float32": entry(90, 0.93, 7.0),
        "nm2of4.sparse_float32": entry(50, 0.93, 28.0),
        "dense.int8": entry(0, 0.93, 5.0),
    }
    accuracy = {"dense": 0.93, "unstructured90": 0.92, "block1x4-90": 0.93, "nm2of4": 0.931}
    summary = {"models": {"a": {"keras_accuracy": accuracy, "artifacts": artifacts}}}
    path = plots.structured_figure(summary, tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert plots.structured_figure({"models": {}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


# ------------------------------------------------------------------ the CLI


def test_cli_reports_config_errors_with_exit_code(tmp_path):
    path = write(tmp_path, "name: x\nselection:\n  criteria: [magic]\n")
    result = CliRunner().invoke(cli.main, ["study", "--config", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "c.yaml:3: selection.criteria[0]" in result.output and not (tmp_path / "o").exists()


def test_cli_plot_and_report_refuse_a_directory_without_runs(tmp_path):
    for command in ("plot", "report"):
        result = CliRunner().invoke(cli.main, [command, str(tmp_path)])
        assert result.exit_code == 1 and "holds no finished runs" in result.output


@pytest.mark.slow
def test_cli_plot_report_and_export(tiny_study, tmp_path):
    out, rows = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("report.md", "figure1.png", "figure2.png"):  # the demo wrote them: these commands must again
        (copy / name).unlink()
    result = CliRunner().invoke(cli.main, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    text = (copy / "report.md").read_text()
    assert report.tables(rows) in text and "config hash" in text
    result = CliRunner().invoke(cli.main, ["plot", str(copy)])
    assert result.exit_code == 0 and (copy / "figure1.png").exists() and (copy / "figure2.png").exists()


@pytest.mark.slow
def test_cli_export_tflite_and_saved_model(tmp_path):
    import keras

    from tf_selopt.study import models

    model = models.lenet_300_100((8, 8, 1))
    model.save(tmp_path / "m.keras")
    result = CliRunner().invoke(
        cli.main,
        ["export", str(tmp_path / "m.keras"), str(tmp_path / "m.tflite"), "--format", "tflite", "--mode", "float32"],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.tflite").stat().st_size > 50_000 and "max |exported - keras|" in result.output
    result = CliRunner().invoke(
        cli.main, ["export", str(tmp_path / "m.keras"), str(tmp_path / "serve"), "--version", "3"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "serve" / "m" / "3" / "saved_model.pb").exists()
    again = CliRunner().invoke(
        cli.main, ["export", str(tmp_path / "m.keras"), str(tmp_path / "serve"), "--version", "3"]
    )
    assert again.exit_code == 1 and "overwrite" in again.output
    assert keras.__version__.startswith("3.")


def test_cli_bench_writes_the_deployment_report(tmp_path):
    from tf_selopt.study import models

    model = models.lenet_300_100((8, 8, 1))
    model.save(tmp_path / "m.keras")
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        cli.main,
        [
            "bench",
            str(out),
            "--model",
            str(tmp_path / "m.keras"),
            "--sparsity",
            "0",
            "--sparsity",
            "0.9",
            "--data",
            "digits",
            "--artifact",
            "float32",
            "--artifact",
            "sparse_float32",
            "--runs",
            "5",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--xnnpack",
            "on",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "deployment.json").read_text())["rows"]
    assert [(r["model"], r["artifact"]) for r in rows] == [
        ("lenet_300_100-s0", "float32"),
        ("lenet_300_100-s0", "sparse_float32"),
        ("lenet_300_100-s90", "float32"),
        ("lenet_300_100-s90", "sparse_float32"),
    ]
    sparse90 = rows[3]
    assert sparse90["size_bytes"] < 0.3 * rows[2]["size_bytes"] and sparse90["prunable_zeros"] == round(0.9 * 50200)
    assert "| lenet_300_100-s90 | sparse_float32 |" in result.output


def test_cli_bench_refuses_bad_sparsity(tmp_path):
    from tf_selopt.study import models

    models.lenet_300_100((8, 8, 1)).save(tmp_path / "m.keras")
    result = CliRunner().invoke(
        cli.main,
        ["bench", str(tmp_path / "o"), "--model", str(tmp_path / "m.keras"), "--sparsity", "1.5", "--data", "digits"],
    )
    assert result.exit_code == 1 and "sparsit" in result.output and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_demo_prints_table_and_leaves_figures_report_logs_and_export(tiny_demo):
    out, rows, result = tiny_demo  # the module's tiny study is this demo command's run
    assert [r["id"] for r in rows] == [s.id for s in runner.expand(load_config(TINY))]
    assert report.tables(rows) in result.output and f"results in   {out.resolve()}" in result.output
    assert f"tensorboard --logdir {out / 'tensorboard'}" in result.output
    assert "http://localhost:6006/?smoothing=0#timeseries" in result.output
    assert (out / "figure1.png").exists() and (out / "figure2.png").exists() and (out / "report.md").exists()
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert any((out / "export").rglob("*.tflite")) and any((out / "export").rglob("saved_model.pb"))
