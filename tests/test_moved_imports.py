"""0.1.0's public import paths still work for one release, with a DeprecationWarning naming the new path
(issue 31, item 4). The names are 0.1.0's (45524d5) ``__all__`` per module, or its public top-level
definitions where a module had no ``__all__``."""

import importlib
import re
import sys
import warnings

import pytest

import tf_selopt
from tf_selopt._moved import CURRENT, MOVED

#: 0.1.0's modules that moved -> their public names then.
OLD_NAMES = {
    "callbacks": ["SelectionMonitor", "QUANTILES"],
    "checks": ["fraction", "is_int", "is_real", "positive"],
    "configurable": ["Configurable"],
    "data": ["Splits", "load", "DATASETS"],
    "export": [
        "export_saved_model",
        "export_tflite",
        "ExportReport",
        "ExportVerificationError",
        "default_sample_inputs",
        "serving_input_spec",
        "tflite_runtime",
        "TFLITE_RUNTIMES",
        "INPUT_NAME",
        "OUTPUT_NAME",
        "SIGNATURE_KEY",
        "TFLITE_MODES",
        "FLOAT_ATOL",
        "INT8_RTOL",
    ],
    "freezing": ["DropFrozenVariables"],
    "models": ["small_cnn", "lenet_300_100", "mlp"],
    "optimizer": ["SelectiveOptimizer"],
    "phases": ["TracePerPhase"],
    "pruning": [
        "SCOPES",
        "PRUNABLE_ATTRIBUTES",
        "prunable_variables",
        "prune",
        "PruningMask",
        "pruning_mask",
        "GradualPruning",
        "strip_pruning",
        "mask_zeros",
    ],
    "selective": ["Selective", "BASE_ARGUMENTS", "refuse_base_arguments"],  # SelectiveReadouts: removed
    "serving": ["deployment_benchmark", "markdown_table", "ARTIFACTS", "BLOCK", "ACCURACY_BATCH", "JSON_NAME"],
    "tf_keras": ["SelectiveOptimizer"],
    "tfmot_bridge": [
        "LayerPlan",
        "SCHEDULES",
        "global_magnitude_plan",
        "prune_low_magnitude_global",
        "pruning_callbacks",
        "strip_pruning",
        "tfmot_masks",
    ],
    "traces": ["state_key", "switching_state"],
}


def forget(name):
    """As if ``tf_selopt.<name>`` had never been imported in this process."""
    sys.modules.pop(f"tf_selopt.{name}", None)
    tf_selopt.__dict__.pop(name, None)


def test_every_moved_module_is_listed():
    assert sorted(OLD_NAMES) == sorted(MOVED)


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_an_old_path_imports_the_new_module_with_a_warning_at_the_importing_line(old):
    forget(old)
    message = (
        rf"^tf_selopt\.{old} moved to tf_selopt\.{re.escape(MOVED[old])}; the old path goes in the next release\.$"
    )
    with pytest.warns(DeprecationWarning, match=message) as record:
        module = importlib.import_module(f"tf_selopt.{old}")
    assert [w.filename for w in record if w.category is DeprecationWarning] == [__file__]
    assert module is importlib.import_module(f"tf_selopt.{MOVED[old]}")
    missing = [name for name in OLD_NAMES[old] if not hasattr(module, name)]
    assert not missing, f"0.1.0's tf_selopt.{old} had {missing}"


def test_from_import_statements_work():
    for name in ("pruning", "export"):
        forget(name)
    with pytest.warns(DeprecationWarning, match=r"tf_selopt\.pruning moved to tf_selopt\.keras\.pruning"):
        from tf_selopt.pruning import PruningMask
    with pytest.warns(DeprecationWarning, match=r"tf_selopt\.export moved to tf_selopt\.deploy\.export"):
        from tf_selopt import export
    from tf_selopt.deploy import export as new_export
    from tf_selopt.keras.pruning import PruningMask as new_mask

    assert (PruningMask, export) == (new_mask, new_export)


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_the_core_modules_short_names_import_without_a_warning(name):
    forget(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = importlib.import_module(f"tf_selopt.{name}")
    assert module is importlib.import_module(f"tf_selopt.{CURRENT[name]}") is getattr(tf_selopt, name)


def test_an_unknown_name_still_fails():
    with pytest.raises(ModuleNotFoundError, match="tf_selopt.no_such_module"):
        importlib.import_module("tf_selopt.no_such_module")
