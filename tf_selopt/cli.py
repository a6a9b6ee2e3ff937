"""``selopt``: the study, its figures and report, export and the deployment benchmark from the shell.

    selopt demo                       # short study on bundled MNIST: table, figures, TensorBoard logs, export
    selopt study --config FILE        # a study from a YAML config (resumable), then figures and report
    selopt plot DIR | selopt report DIR
    selopt export MODEL.keras OUT ...
    selopt bench OUT --model m.keras --sparsity 0 --sparsity 0.9   # deployment benchmark
    selopt finetune --out results/finetune   # transfer benchmark: calibrate + SelectiveOptimizer vs full, LoRA

A thin front end: the work is in ``tf_selopt.study`` and ``tf_selopt.deploy.export``. TensorFlow is
imported inside the commands (``selopt --help`` does not load it), through ``_import_tensorflow``,
which keeps TensorFlow's C++ start-up lines off the terminal.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
import tempfile

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONFIGS = pathlib.Path(__file__).parent / "study" / "configs"
#: TensorBoard's page with smoothing 0 (its URL parameter), on the Time Series tab: a selection's 0 -> 0.9
#: step is drawn as the exact step that was logged, not the ramp of the default smoothing 0.6.
TENSORBOARD_URL = "http://localhost:6006/?smoothing=0#timeseries"

# What `import tensorflow` and its first device query print on fd 2 from C++ even with TF_CPP_MIN_LOG_LEVEL=2
# (absl logs INFO lines before absl::InitializeLog, and no environment variable reaches that): the banner
# and INFO lines (`I0000 00:00:... port.cc:153] oneDNN ...`, `cudart_stub.cc`) and, on a machine without a
# GPU, the one error that says so (`E0000 ... cuda_platform.cc:52] failed call to cuInit: ...`). Other
# warnings and errors (W/E/F) pass.
_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit"
)
#: The start of a line that is not a continuation: an absl log line, or anything Python writes.
_LOG_LINE = re.compile(r"[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |WARNING: |Traceback |\S+(Error|Warning)\b")


def _import_tensorflow() -> None:
    """Import TensorFlow and list its GPUs with fd 2 captured, then replay what they printed minus the
    start-up noise (``_STARTUP_NOISE``)."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices("GPU")  # CUDA's initialisation logs here, not at import
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(startup_output_without_noise(captured.read().decode(errors="replace")))
            sys.stderr.flush()


def startup_output_without_noise(text: str) -> str:
    """``text`` without the lines of ``_STARTUP_NOISE`` and their continuation lines (a message logged on two
    lines, e.g. ``cpu_feature_guard.cc``'s ``To enable the following instructions: ...``)."""
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        if _STARTUP_NOISE.match(line):
            dropping = True
        elif dropping and not _LOG_LINE.match(line):
            continue  # a continuation of the dropped message
        else:
            dropping = False
            kept.append(line)
    return "".join(kept)


def _finish(out_dir, rows) -> None:
    from tf_selopt.study import plots, report

    figures = plots.plot(rows, out_dir)
    path = report.write_report(rows, out_dir)
    click.echo(report.tables(rows))
    click.echo("")
    for f in figures:
        click.echo(f"figure:      {f}")
    click.echo(f"report:      {path}")
    _print_tensorboard(out_dir)
    click.echo(f"results in   {pathlib.Path(out_dir).resolve()}")


def _print_tensorboard(out_dir) -> None:
    """The command that opens ``OUT/tensorboard`` and the URL with smoothing 0."""
    click.echo(f"TensorBoard: tensorboard --logdir {pathlib.Path(out_dir) / 'tensorboard'}")
    click.echo(f"             then open {TENSORBOARD_URL}  (smoothing 0: steps drawn as logged)")


def _run(config, out_dir, quiet, verbose=None) -> None:
    from tf_selopt.study import runner
    from tf_selopt.study.config import ConfigError

    try:
        rows = runner.run_study(config, out_dir, quiet=quiet, verbose=verbose)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    _finish(out_dir, rows)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as error:  # a package of an extra that is not installed: say which extra
            from tf_selopt import missing_extra

            message = missing_extra(error)
            if message is error:
                raise
            raise click.ClickException(str(message)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tf_selopt")
def main():
    """tf_selopt: selective optimization and pruning for Keras, and the study of the note."""


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=pathlib.Path("runs/demo"),
    show_default=True,
    help="Output directory (re-running resumes it).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--keras-progress", is_flag=True, help="Also Keras' own progress, one line per epoch of every run.")
def demo(out, quiet, keras_progress):
    """Short study on the bundled MNIST subset (about 10 minutes on 2 CPU cores)."""
    _import_tensorflow()
    _run(CONFIGS / "demo.yaml", out, quiet, verbose=2 if keras_progress and not quiet else 0)


@main.command()
@click.option(
    "--config",
    "config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
    help="Study config (YAML; see tf_selopt/study/configs/study.yaml).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=None,
    help="Output directory [default: runs/<config name>]. Finished runs in it are skipped.",
)
@click.option("--quiet", is_flag=True, help="No progress bar, no Keras progress.")
def study(config, out, quiet):
    """Run a study from a config file, then write figures and the report."""
    _import_tensorflow()
    if out is None:
        from tf_selopt.study.config import ConfigError, load_config

        try:
            out = pathlib.Path("runs") / load_config(config).name
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
    _run(config, out, quiet)


def _rows(directory):
    from tf_selopt.study import runner

    rows = runner.read_rows(directory)
    if not rows:
        raise click.ClickException(f"{directory} holds no finished runs (no runs.jsonl rows).")
    return rows


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path))
def plot(directory):
    """Draw figure1.png / figure2.png from the finished runs in DIRECTORY."""
    _import_tensorflow()
    from tf_selopt.study import plots

    for path in plots.plot(_rows(directory), directory):
        click.echo(str(path))


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path))
def report(directory):
    """Write report.md (tables, figures, versions, config) from the finished runs in DIRECTORY."""
    _import_tensorflow()
    from tf_selopt.study import report as report_lib

    click.echo(str(report_lib.write_report(_rows(directory), directory)))


@main.command()
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.argument("out", type=click.Path(path_type=pathlib.Path))
@click.option("--format", "fmt", type=click.Choice(["saved_model", "tflite"]), default="saved_model", show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["float32", "sparse_float32", "dynamic_int8", "int8", "sparse_int8"]),
    default="sparse_float32",
    show_default=True,
    help="TFLite encoding.",
)
@click.option("--name", default=None, help="SavedModel: model name directory [default: the file's stem].")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="SavedModel: version directory.",
)
@click.option(
    "--representative-data",
    type=click.Choice(["mnist", "digits"]),
    default=None,
    help="int8, sparse_int8: calibrate on this bundled data set's training split.",
)
@click.option("--overwrite", is_flag=True)
def export(model_path, out, fmt, mode, name, version, representative_data, overwrite):
    """Export a .keras model: SavedModel in TF Serving layout (OUT/<name>/<version>) or a .tflite file (OUT)."""
    _import_tensorflow()
    import keras

    import tf_selopt  # noqa: F401  (registers our serializables)
    from tf_selopt.deploy import export as export_lib

    model = keras.models.load_model(model_path)
    try:
        if fmt == "saved_model":
            result = export_lib.export_saved_model(model, out, name or model_path.stem, version, overwrite=overwrite)
        else:
            rep = None
            if representative_data is not None:
                from tf_selopt.study import data

                rep = data.load(representative_data).x_train[:256]
            result = export_lib.export_tflite(model, out, mode=mode, representative_data=rep, overwrite=overwrite)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"{result.path}: {result.size_bytes:,} B (gzip {result.gzip_bytes:,} B), "
        f"max |exported - keras| = {result.max_abs_diff:.2e}, zeros {result.zeros:,} of {result.weights:,}"
    )


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=pathlib.Path))
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A trained .keras model, pruned globally to each --sparsity on a copy (repeatable).",
)
@click.option("--sparsity", "sparsities", multiple=True, type=float, help="Global sparsity in [0, 1) (repeatable).")
@click.option(
    "--saved",
    "paths",
    multiple=True,
    type=click.Path(exists=True),
    help="A .keras file or SavedModel directory benchmarked as it is (repeatable).",
)
@click.option(
    "--data",
    type=click.Choice(["mnist", "digits"]),
    default="mnist",
    show_default=True,
    help="Bundled data set: test split for accuracy and latency, training split for int8 calibration.",
)
@click.option(
    "--artifact",
    "artifacts",
    multiple=True,
    help="Artefacts to build [default: all but sparse_int8]: "
    "saved_model, float32, sparse_float32, dynamic_int8, int8, sparse_int8 (repeatable).",
)
@click.option("--runs", type=int, default=200, show_default=True, help="Timed batch-1 calls per configuration.")
@click.option("--warmup", type=int, default=20, show_default=True, help="Untimed calls first.")
@click.option("--threads", "threads", multiple=True, type=int, help="TFLite thread counts [default: 1 and 2].")
@click.option(
    "--xnnpack",
    "xnnpack",
    multiple=True,
    type=click.Choice(["on", "off"]),
    help="XNNPack delegate settings [default: on and off].",
)
@click.option("--runtime", type=click.Choice(["auto", "ai_edge_litert", "tf.lite"]), default="auto", show_default=True)
@click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=None,
    help="Keep the exported files here [default: a temporary directory, removed].",
)
@click.option("--overwrite", is_flag=True, help="Replace existing reports in OUT.")
def bench(
    out, models, sparsities, paths, data, artifacts, runs, warmup, threads, xnnpack, runtime, artifacts_dir, overwrite
):
    """Deployment benchmark: size, gzip size, TFLite and SavedModel latency, accuracy -> OUT/deployment.{json,md}."""
    _import_tensorflow()
    from tf_selopt.deploy import benchmark as serving
    from tf_selopt.study import data as data_lib

    splits = data_lib.load(data)
    try:
        serving.deployment_benchmark(
            out,
            splits.x_test,
            splits.y_test,
            model=list(models) or None,
            sparsities=list(sparsities) or None,
            paths=list(paths) or None,
            representative_data=splits.x_train,
            artifacts=tuple(artifacts) or serving.DEFAULT_ARTIFACTS,
            runs=runs,
            warmup=warmup,
            threads=tuple(threads) or (1, 2),
            xnnpack=tuple(x == "on" for x in xnnpack) or (True, False),
            runtime=runtime,
            artifacts_dir=artifacts_dir,
            overwrite=overwrite,
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo((out / serving.MARKDOWN_NAME).read_text())


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=pathlib.Path("runs/finetune"),
    show_default=True,
    help="Output directory: finetune.json, finetune.md, finetune.png, pretrained/ "
    "(the pretrained weights, reused when present).",
)
@click.option("--quick", is_flag=True, help="Test-sized: LeNet only, 50 examples, 1 seed, 5 steps, no RSS processes.")
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Choice(["small_cnn", "lenet_300_100"]),
    help="Models [default: both] (repeatable).",
)
@click.option(
    "--size",
    "sizes",
    multiple=True,
    type=click.IntRange(min=5, max=1500),
    help="Labelled fine-tuning examples [default: 50, 200, 1000] (repeatable).",
)
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Seeds per arm [default: 3].")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Fine-tuning steps per arm [default: 80].")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def finetune(out, quick, models, sizes, seeds, steps, quiet):
    """Transfer benchmark (MNIST 0-4 -> 5-9): full, last layer, Keras LoRA and calibrate + SelectiveOptimizer
    at equal trainable parameters -> OUT/finetune.{json,md,png}."""
    _import_tensorflow()
    import dataclasses

    from tf_selopt.study import finetune as finetune_lib

    config = finetune_lib.FinetuneConfig.quick() if quick else finetune_lib.FinetuneConfig()
    changes = {
        "models": tuple(models),
        "sizes": tuple(sizes),
        "seeds": tuple(range(seeds)) if seeds else (),
        "steps": steps,
    }
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v})
    finetune_lib.run_finetune(out, config, quiet=quiet, command=" ".join(["selopt"] + sys.argv[1:]))
    click.echo((out / "finetune.md").read_text())
    _print_tensorboard(out)
    click.echo(f"results in   {out.resolve()}")


if __name__ == "__main__":
    main()
