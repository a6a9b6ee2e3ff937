"""Keras 3 front end: ``SelectiveOptimizer``, pruning (``prune``, ``GradualPruning``) and callbacks.

Modules: ``optimizer`` (the wrapper), ``pruning`` (masks, ``prune``,
``GradualPruning``, ``strip_pruning``, ``mask_zeros``), ``callbacks``
(``SelectionMonitor``), ``freezing`` (``DropFrozenVariables``), ``phases``
(``TracePerPhase``), ``traces`` (one traced step per training state), ``saving``
(``load_model``: a ``.keras`` file with its optimizer and pruning masks, keras_hub task models included),
``shrink`` (channels and attention heads removed), ``batch_norm`` (``recalibrate_batch_norm``),
``hub_layers`` (keras_hub layers as ``shrink`` rebuilds them; imports keras_hub).
"""


def __getattr__(name):
    if name == "load_model":  # imported on first use, as tf_selopt's public names are
        from tf_selopt.keras.saving import load_model

        return load_model
    raise AttributeError(f"module 'tf_selopt.keras' has no attribute {name!r}")
