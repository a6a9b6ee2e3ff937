"""Run a study config into an output directory: one row per run, resumable.

Layout of ``out_dir``::

    config.yaml        the config as given (copied on the first run)
    study.json         config hash, versions, the config as validated
    runs.jsonl         one JSON row per finished run, appended as runs finish
    results.csv        the same rows as a table (rewritten after every run)
    tensorboard/<run name>/  TensorBoard logs (``RunSpec.run_name``, e.g. fisher-frozen0.9-s0_mnist_lenet)
    export/            the pruned model exported for serving (if ``export_sparsity``)

A re-run skips runs whose id is already in ``runs.jsonl``. An output directory
that holds results of a different config (other hash) is refused before
anything is written.
"""

from __future__ import annotations

import csv
import json
import pathlib
import platform
import shutil

from tf_selopt.study import data as data_lib
from tf_selopt.study import runs as runs_lib
from tf_selopt.study.config import ConfigError, StudyConfig, config_hash, load_config

__all__ = ["expand", "run_study", "read_rows", "versions"]

ROW_FIELDS = (
    "id",
    "kind",
    "data",
    "model",
    "method",
    "level",
    "seed",
    "test_accuracy",
    "test_loss",
    "frozen_fraction",
    "selected_count",
    "k",
    "num_parameters",
    "sparsity",
    "kernel_zeros",
    "kernel_total",
    "selections",
    "skipped_steps",
    "reported_sparsity",
    "seconds",
)


def expand(config: StudyConfig) -> list[runs_lib.RunSpec]:
    """All runs of ``config`` in execution order (data, model, seed, then methods); ids are unique."""
    specs = []
    for data in config.data:
        for model in config.models:
            for seed in config.seeds:
                specs.append(runs_lib.RunSpec("full", data, model, "adam", 0.0, seed))
                if config.selection is not None:
                    for method in config.selection.criteria:
                        for level in config.selection.frozen:
                            if level > 0.0:
                                specs.append(runs_lib.RunSpec("selection", data, model, method, level, seed))
                if config.pruning is not None:
                    for method in config.pruning.methods:
                        for level in config.pruning.sparsity:
                            specs.append(runs_lib.RunSpec("pruning", data, model, method, level, seed))
    return specs


def check_feasible(config: StudyConfig, splits: dict) -> None:
    """Per data set (``splits``: name -> ``data.Splits``): the window fits in the warm-up, pruning ends in time."""
    t = config.training
    for name in config.data:
        n_train = len(splits[name].x_train)
        per_epoch = runs_lib.steps_per_epoch(n_train, t.batch_size)
        if config.selection is not None:
            s = config.selection
            if s.warmup_epochs >= t.epochs:
                raise ConfigError(
                    f"selection.warmup_epochs ({s.warmup_epochs}) must be < training.epochs ({t.epochs})."
                )
            if s.window > s.warmup_epochs * per_epoch:
                raise ConfigError(
                    f"selection.window ({s.window}) must be <= the warm-up steps on {name!r} "
                    f"({s.warmup_epochs} epochs x {per_epoch} steps)."
                )
        if config.pruning is not None:
            p = config.pruning
            try:
                runs_lib.schedule_steps(n_train, t.batch_size, t.epochs, p.begin_epochs, p.end_fraction, p.events)
            except ValueError as e:
                raise ConfigError(
                    f"pruning schedule on {name!r} (pruning.begin_epochs/end_fraction/events, training.epochs): {e}"
                ) from None


def versions() -> dict:
    from importlib import metadata

    packages = ("tensorflow", "keras", "tf_keras", "tensorflow-model-optimization", "numpy", "tf_selopt")
    return {
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in packages},
        "machine": platform.machine(),
        "platform": platform.platform(),
    }


def read_rows(out_dir) -> list[dict]:
    """Rows of the finished runs in ``out_dir`` (``runs.jsonl``), in finishing order."""
    path = pathlib.Path(out_dir) / "runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_csv(out_dir, rows):
    tmp = out_dir / "results.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out_dir / "results.csv")


def _prepare(config_path, config, out_dir) -> None:
    """Claim ``out_dir`` for this config, or refuse if it holds another config's results."""
    digest = config_hash(config)
    meta = out_dir / "study.json"
    if meta.exists():
        held = json.loads(meta.read_text())
        if held.get("config_hash") != digest:
            raise ConfigError(
                f"output directory {out_dir} holds results of a different config (hash {held.get('config_hash')}, "
                f"this config {digest}); use another directory or delete it. Nothing was changed."
            )
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"output directory {out_dir} is not empty and holds no study; refusing to write into it.")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_path, out_dir / "config.yaml")
    tmp = out_dir / "study.json.tmp"
    tmp.write_text(
        json.dumps({"config_hash": digest, "config": config.model_dump(mode="json"), "versions": versions()}, indent=1)
    )
    tmp.replace(meta)


def _export(model, out_dir, spec, splits) -> dict:
    from tf_selopt.deploy import export

    base = out_dir / "export"
    name = f"{spec.data}_{spec.model}_pruned{round(100 * spec.level)}"
    saved = export.export_saved_model(
        model, base / "saved_model", name, version=1, overwrite=True, sample_inputs=splits.x_test[:32]
    )
    lite = export.export_tflite(
        model, base / f"{name}.tflite", mode="sparse_float32", overwrite=True, sample_inputs=splits.x_test[:32]
    )
    return {
        "saved_model": str(pathlib.Path(saved.path).relative_to(out_dir)),
        "tflite": str(pathlib.Path(lite.path).relative_to(out_dir)),
        "tflite_bytes": lite.size_bytes,
        "tflite_gzip_bytes": lite.gzip_bytes,
        "max_abs_diff": lite.max_abs_diff,
    }


def run_study(config_path, out_dir, quiet=False, verbose=None) -> list[dict]:
    """Run every unfinished run of the config at ``config_path`` into ``out_dir``; return all rows.

    ``verbose``: Keras' ``fit`` verbosity inside a run (default 2 = one line per epoch; 0 if ``quiet``).
    """
    from tqdm import tqdm

    config = load_config(config_path)
    splits = {name: data_lib.load(name) for name in config.data}
    check_feasible(config, splits)
    out_dir = pathlib.Path(out_dir)
    _prepare(config_path, config, out_dir)
    verbose = (0 if quiet else 2) if verbose is None else verbose
    done = {row["id"] for row in read_rows(out_dir)}
    specs = expand(config)
    todo = [s for s in specs if s.id not in done]
    first_seed = config.seeds[0]
    with tqdm(total=len(specs), initial=len(specs) - len(todo), desc=config.name, unit="run", disable=quiet) as bar:
        for spec in todo:
            bar.set_postfix_str(spec.id)
            log = config.tensorboard == "all" or (config.tensorboard == "first_seed" and spec.seed == first_seed)
            log_dir = str(out_dir / "tensorboard" / spec.run_name) if log else None
            row, model = runs_lib.run(
                spec,
                config.training,
                config.selection,
                config.pruning,
                log_dir=log_dir,
                verbose=verbose,
                splits=splits[spec.data],
            )
            if (
                spec.kind == "pruning"
                and spec.method == "global"
                and spec.seed == first_seed
                and config.export_sparsity == spec.level
            ):
                row["export"] = _export(model, out_dir, spec, splits[spec.data])
            with (out_dir / "runs.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            _write_csv(out_dir, read_rows(out_dir))
            bar.update(1)
    rows = read_rows(out_dir)
    _write_csv(out_dir, rows)
    return rows
