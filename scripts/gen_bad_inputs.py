"""Generate docs/bad_inputs.md from the tests' tables.

The source of every row is a parametrized case of a test listed in SECTIONS below (the tests own the bad
values; this script owns none). The script runs those tests with pytest and a small plugin that records each
exception a ``pytest.raises`` block catches; each recorded exception is a row: the case's parameters, the
exception type and the first line of its message as raised (addresses, temporary paths, Keras' numbered
layer names and over-long messages shortened). A test that fails, or catches nothing under ``pytest.raises``,
is an error here.

    python scripts/gen_bad_inputs.py           # rewrite docs/bad_inputs.md (make docs)
    python scripts/gen_bad_inputs.py --check   # exit 1 with a diff when docs/bad_inputs.md is stale (CI)

A new refusal: add its case to a test's parametrize table; a new test: add it to SECTIONS; then re-run.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import math
import os
import pathlib
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from _pytest.raises import RaisesExc  # noqa: E402  (the context manager pytest.raises returns)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad_inputs.md"
MESSAGE_CHARS = 150

# section title -> the tests (tests/FILE::FUNCTION) whose parametrized cases are its rows
SECTIONS = {
    "SelectiveOptimizer (Keras 3 and tf_keras)": [
        "test_tf_keras.py::test_both_front_ends_refuse_the_same_arguments",
        "test_bad_inputs.py::test_selective_optimizer",
        "test_bad_inputs.py::test_selective_optimizer_keep_at_build",
        "test_optimizer.py::test_keep_above_n_raises_at_build_and_creates_nothing",
        "test_tf_keras.py::test_keep_above_n_raises_at_build_and_creates_nothing",
        "test_optimizer_contract_fixes.py::test_none_gradient_warns_and_all_none_raise_as_keras",
        "test_optimizer_contract_fixes.py::test_none_gradient_tf_keras",
        "test_optimizer_contract_fixes.py::test_get_and_set_weights_cover_the_inner_state",
        "test_optimizer_contract_fixes.py::test_config_with_keras_base_defaults_loads",
    ],
    "SelectiveOptimizer (Keras 3)": [
        "test_mixed_precision.py::test_loss_scale_optimizer_inside_is_refused",
        "test_stay_put.py::test_an_inner_optimizer_that_accumulates_gradients_is_refused",
        "test_optimizer.py::test_inner_must_be_a_keras3_optimizer",
        "test_selected_only_fit.py::test_selected_only_where_it_is_not_exact_raises_at_build_before_any_state",
        "test_profiles.py::test_selected_only_where_it_is_not_exact_raises_naming_the_reason",
        "test_selected_only_fit.py::test_release_where_it_cannot_raises_and_changes_nothing",
        "test_calibrate.py::test_bad_masks_raise_at_construction",
        "test_calibrate.py::test_masks_that_do_not_fit_the_model_raise_at_build_before_any_state",
    ],
    "calibrate": [
        "test_calibrate.py::test_calibrate_bad_inputs_raise_before_any_batch_runs",
        "test_calibrate.py::test_calibrate_says_when_data_runs_out_and_when_a_variable_gets_no_gradient",
        "test_calibrate.py::test_calibrate_refuses_inputs_that_do_not_fit_the_model",
    ],
    "SelectiveOptimizer (tf_keras)": [
        "test_tf_keras.py::test_distribution_strategy_is_refused_not_silently_wrong",
        "test_tf_keras.py::test_inner_must_be_a_tf_keras_optimizer",
        "test_tf_keras.py::test_watch_pruning_masks_refuses_bad_masks_before_any_change",
        "test_selected_only_fit.py::test_tf_keras_front_end_refuses_selected_only",
    ],
    "prune": [
        "test_pruning.py::test_bad_inputs_raise_before_any_weight_changes",
        "test_pruning.py::test_bad_criterion_shape_raises_before_any_weight_changes",
        "test_pruning.py::test_nothing_prunable_raises",
        "test_structured_pruning.py::test_bad_structured_inputs_raise_before_any_weight_changes",
        "test_structured_pruning.py::test_xnnpack_policy_bad_layers_raise_before_any_change",
    ],
    "GradualPruning": [
        "test_pruning.py::test_gradual_pruning_rejects_bad_arguments",
        "test_bad_inputs.py::test_gradual_pruning",
        "test_pruning.py::test_gradual_pruning_bad_model_raises_before_any_change",
        "test_structured_pruning.py::test_gradual_pruning_refuses_bad_structure",
        "test_structured_pruning.py::test_gradual_pruning_refuses_an_indivisible_kernel_at_train_begin_before_any_change",
    ],
    "shrink": [
        "test_shrink.py::test_bad_arguments",
        "test_shrink.py::test_bad_models",
        "test_shrink.py::test_bad_recalibrate",
        "test_shrink.py::test_bad_heads",
    ],
    "sparse_delta / enable_sparse_delta / merge_sparse_delta": [
        "test_sparse_delta.py::test_bad_input_is_refused_before_any_change",
    ],
    "load_model": ["test_hub_resume.py::test_load_model_bad_arguments"],
    "mask_zeros": ["test_bad_inputs.py::test_mask_zeros_layers", "test_bad_inputs.py::test_mask_zeros_unbuilt_model"],
    "SelectionMonitor": ["test_callbacks.py::test_bad_arguments"],
    "StepLoss / OverallSparsity (TensorBoard)": ["test_tensorboard.py::test_bad_arguments"],
    "schedules.ConstantSparsity / PolynomialDecay": ["test_schedules.py::test_bad_inputs_name_the_argument"],
    "selection": [
        "test_selection.py::test_resolve_count_invalid",
        "test_bad_inputs.py::test_select_k_out_of_range",
        "test_bad_inputs.py::test_select_bad_arguments",
        "test_selection.py::test_invalid_select_arguments",
        "test_selection.py::test_per_variable_counts_rejects_k_out_of_range",
        "test_masks.py::test_masks_from_scores_bad_arguments",
    ],
    "criteria": [
        "test_criteria.py::test_get_unknown_raises",
        "test_criteria.py::test_get_preconditioned_without_num_examples_raises",
        "test_criteria.py::test_preconditioned_invalid_num_examples",
        "test_criteria.py::test_preconditioned_invalid_epsilon",
    ],
    "export.export_saved_model": [
        "test_export.py::test_saved_model_bad_arguments_write_nothing",
        "test_export.py::test_saved_model_refuses_existing_version",
        "test_bad_inputs.py::test_export_saved_model",
        "test_export_multi_input.py::test_bert_sample_inputs_that_do_not_fit_are_refused_before_writing",
    ],
    "export.export_tflite": [
        "test_export.py::test_tflite_bad_arguments_write_nothing",
        "test_export.py::test_tflite_refuses_existing_file",
        "test_export.py::test_tflite_refuses_bad_batch_size_before_writing",
        "test_export.py::test_default_sample_inputs_refuses_unknown_distribution",
        "test_bad_inputs.py::test_export_tflite",
        "test_export_multi_input.py::test_bert_representative_data_takes_dict_batches_and_checks_them",
        "test_export_multi_input.py::test_tflite_refuses_string_inputs_and_tokenizer_ops_naming_the_way_out",
    ],
    "tfmot_bridge.prune_low_magnitude_global / global_magnitude_plan": [
        "test_tfmot_bridge.py::test_bad_inputs_raise_before_anything_changes",
        "test_tfmot_bridge.py::test_wrong_models_raise_clear_errors",
        "test_tfmot_bridge.py::test_bad_structure_raises_before_anything_changes",
    ],
    "serving/ (TF Serving requests, warm-up file, models.config; LiteRT runner)": [
        "test_serving_client.py::test_bad_request_inputs_name_the_input_and_the_spec",
        "test_serving_client.py::test_bad_two_input_requests",
        "test_serving_client.py::test_bad_arguments",
        "test_serving_client.py::test_litert_runner_bad_arguments",
    ],
    "data.load": ["test_data.py::test_unknown_data_set"],
    "DropFrozenVariables / TracePerPhase (Keras 3 callbacks, checked at the start of `fit`)": [
        "test_granularity.py::test_drop_callback_needs_a_selective_optimizer",
        "test_phases.py::test_needs_a_selective_optimizer",
        "test_selected_only_fit.py::test_trace_per_phase_checks_its_arguments",
    ],
}

HEADER = """# Bad inputs: what each public argument refuses, and the test that checks it

Generated by `scripts/gen_bad_inputs.py` (`make docs`) from the parametrize tables of the tests named in
each row: every case was run, and the exception its `pytest.raises` caught is shown with the first line of
its message **as raised** (addresses, temporary paths and Keras' layer-name counters shortened, long
messages cut at {chars} characters). Do not edit by hand: add the case to a test's table and re-run; CI
fails when this file is stale. Rule: a bad value raises before any state changes (no weight, mask, variable
or file touched), with the argument's name and, where there is one, the allowed range in the message.

Not validated by tf_selopt (no row needed): `strip_pruning(model)` on a model without masks is a no-op;
`models.small_cnn`/`lenet_300_100` leave `input_shape`/`num_classes` to Keras, which raises when it builds
the layers. `SelectiveOptimizer` under a non-TensorFlow Keras backend raises `ValueError` naming
`KERAS_BACKEND` (not tested: the backend is fixed per process).

Count: {count} rows ({by_type}), plus the sections at the end (granularity, study config and CLI,
deployment benchmark).
"""

FOOTER = """
### SelectiveOptimizer `granularity` (Keras 3 and tf_keras)

`BAD_ARGUMENTS` in `tests/conftest.py` (both front ends): `granularity="layer"` and `granularity="variable"`
with `scope="per_variable"` raise ValueError naming `granularity`; a `keep` smaller than the smallest group
raises at `build` and creates nothing (`tests/test_granularity.py`).

### Study config (`selopt study --config`, `tf_selopt.study.config.load_config`)

Every problem is reported at once as `FILE:LINE: dotted.key: what`, before anything is written.
Tests: `tests/test_study.py::test_bad_config_names_key_and_line` (unknown key, wrong type, unknown
criterion, frozen = 1.0, unknown pruning method, negative seed, a section that is not a mapping, unknown
model, export_sparsity not a pruning run, nothing to run, a list instead of a mapping, broken YAML),
`test_all_errors_are_reported_at_once`, `test_missing_config_file`,
`test_infeasible_config_is_refused_before_writing`, `test_other_config_in_the_same_directory_is_refused`,
`test_non_empty_directory_without_a_study_is_refused`; CLI exit code 1 with the message:
`test_cli_reports_config_errors_with_exit_code`, `test_cli_plot_and_report_refuse_a_directory_without_runs`,
`test_cli_bench_refuses_bad_sparsity`.

### deploy.benchmark.deployment_benchmark / `selopt bench`

Bad inputs (empty, repeated or out-of-range sparsities, runs < 1, threads < 1, missing path, int8 or
sparse_int8 without representative data, float_atol < 0, ...) raise ValueError and leave the output directory empty:
`tests/test_serving.py::test_bad_arguments_write_nothing`. Inputs that do not fit a model with named inputs
(a missing or unknown key, a wrong shape) raise ValueError naming `x_test` (before anything is written) or
`x1` (`tflite_latency`, checked against every file before any is timed):
`tests/test_deployment_multi_input.py::test_x_test_that_does_not_fit_is_refused_before_writing`,
`test_tflite_latency_refuses_inputs_that_do_not_fit`.
"""

# parameters that say what the test expects, not what it feeds in
EXPECTATIONS = {"word", "words", "message", "match", "argument", "expected", "error", "allowed"}
# parameters that run the same bad value through several front ends: one row, the variants in the test cell
VARIANTS = {"front_end", "via", "scope"}


class Recorder:
    """A pytest plugin: records what each test's ``pytest.raises`` blocks catch."""

    def __init__(self):
        self.item = None
        self.raised = {}  # nodeid -> [(item, exception)]
        self.failed = []
        recorder = self
        original = RaisesExc.__exit__

        def __exit__(ctx, exc_type, exc_val, tb):
            caught = original(ctx, exc_type, exc_val, tb)
            if caught and recorder.item is not None:
                recorder.raised.setdefault(recorder.item.nodeid, []).append((recorder.item, exc_val, _raising_line(tb)))
            return caught

        RaisesExc.__exit__ = __exit__

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        self.item = item
        try:
            return (yield)
        finally:
            self.item = None

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)


def _raising_line(tb) -> str:
    """The line of the test that made the call which raised."""
    line = ""
    while tb is not None:
        if pathlib.Path(tb.tb_frame.f_code.co_filename).name.startswith("test_"):
            line = inspect.getframeinfo(tb).code_context[0].strip() if inspect.getframeinfo(tb).code_context else ""
        tb = tb.tb_next
    return line


def _lambda_source(fn) -> str | None:
    try:
        line = inspect.getsource(fn).strip()
    except (OSError, TypeError):
        return None
    for start in [m.start() for m in re.finditer("lambda", line)]:
        for end in range(len(line), start, -1):
            try:
                node = ast.parse(line[start:end], mode="eval").body
            except SyntaxError:
                continue
            if isinstance(node, ast.Lambda):
                return ast.unparse(node.body)
    return None


def _show(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items())
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if inspect.isclass(value):
        return f"{value.__module__.split('.')[-1]}.{value.__qualname__}"
    if callable(value) and getattr(value, "__name__", "") == "<lambda>":
        return _lambda_source(value) or "a lambda"
    if inspect.isfunction(value):
        return value.__name__
    text = repr(value)
    if " at 0x" in text or len(text) > 60:
        return f"({type(value).__name__})"
    return text


def _argument(params, message) -> str:
    named = re.search(r"`([A-Za-z_][A-Za-z0-9_]*)`", message)  # our messages put the argument in backticks
    if named:
        return named.group(1)
    for name in ("argument", "word", "message"):
        if isinstance(params.get(name), str) and params[name].isidentifier():
            return params[name]
    for value in params.values():
        if isinstance(value, dict) and value:
            return next(iter(value))
    inputs = [name for name in params if name not in EXPECTATIONS]
    return inputs[0] if len(inputs) == 1 else "(see test)"


def _first_line(error) -> str:
    line = (str(error).splitlines() or [""])[0]
    line = re.sub(r"0x[0-9a-fA-F]+", "0x...", line)
    line = re.sub(r"/tmp/[^\s'\",:]+", "...", line)
    line = re.sub(r"'([a-z][a-z0-9_]*?)_\d+'", r"'\1_N'", line)  # Keras' auto names count up per process
    if len(line) > MESSAGE_CHARS:
        line = line[:MESSAGE_CHARS] + "..."
    return line.replace("|", "\\|")


def _cell(text) -> str:
    return text.replace("|", "\\|")


def collect():
    recorder = Recorder()
    tests = [f"tests/{t}" for ts in SECTIONS.values() for t in ts]
    code = pytest.main(
        ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-W", "ignore", *tests], plugins=[recorder]
    )
    if code != 0 or recorder.failed:
        sys.exit(f"gen_bad_inputs: the tests did not pass (pytest exit {code}): {recorder.failed}")
    return recorder.raised


def render(raised) -> str:
    sections, types = [], {}
    for title, tests in SECTIONS.items():
        rows = {}  # (argument, bad value, exception, message) -> (test, variants)
        for test in tests:
            ids = [nodeid for nodeid in raised if nodeid.split("[")[0] == f"tests/{test}"]
            if not ids:
                sys.exit(f"gen_bad_inputs: {test} caught no exception under pytest.raises")
            for nodeid in ids:
                for item, error, line in raised[nodeid]:
                    params = dict(getattr(getattr(item, "callspec", None), "params", {}))
                    inputs = {k: v for k, v in params.items() if k not in EXPECTATIONS | VARIANTS}
                    variant = ", ".join(f"{k}={v}" for k, v in params.items() if k in VARIANTS)
                    shown = (
                        "; ".join(
                            _show(v) if isinstance(v, dict) or len(inputs) == 1 else f"{k}={_show(v)}"
                            for k, v in inputs.items()
                        )
                        or line
                    )
                    message = _first_line(error)
                    key = (_argument(params, str(error)), shown, type(error).__name__, message)
                    if key not in rows:
                        rows[key] = (test, [])
                        types[key[2]] = types.get(key[2], 0) + 1
                    if variant:
                        rows[key][1].append(variant)
        lines = [
            f"### {title}",
            "",
            "| argument | bad value | exception | message (first line, as raised) | test |",
            "|---|---|---|---|---|",
        ]
        for (a, v, e, m), (t, variants) in rows.items():
            t = f"`{t}`" + (f" ({'; '.join(variants)})" if variants else "")
            lines.append(f"| `{a}` | `{_cell(v)}` | {e} | {m} | {t} |")
        sections.append("\n".join(lines))
    count = sum(types.values())
    by_type = ", ".join(f"{n} {t}" for t, n in sorted(types.items(), key=lambda x: -x[1]))
    return (
        HEADER.format(chars=MESSAGE_CHARS, count=count, by_type=by_type) + "\n" + "\n\n".join(sections) + "\n" + FOOTER
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="Exit 1 with a diff when the file is stale.")
    args = parser.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    text = render(collect())
    old = DOC.read_text() if DOC.exists() else ""
    if args.check:
        if text != old:
            sys.stdout.writelines(
                difflib.unified_diff(old.splitlines(True), text.splitlines(True), str(DOC), "generated")
            )
            sys.exit(f"{DOC.relative_to(ROOT)} is stale: run `make docs` (python scripts/gen_bad_inputs.py)")
        print(f"{DOC.relative_to(ROOT)} is up to date")
    else:
        DOC.write_text(text)
        print(f"wrote {DOC.relative_to(ROOT)}: {text.count(chr(10) + '| `')} rows")


if __name__ == "__main__":
    main()
