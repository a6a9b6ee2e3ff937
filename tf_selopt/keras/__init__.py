"""Keras 3 front end: ``SelectiveOptimizer``, pruning (``prune``, ``GradualPruning``) and callbacks.

Modules: ``optimizer`` (the wrapper), ``pruning`` (masks, ``prune``,
``GradualPruning``, ``strip_pruning``, ``mask_zeros``), ``callbacks``
(``SelectionMonitor``), ``freezing`` (``DropFrozenVariables``), ``phases``
(``TracePerPhase``), ``traces`` (one traced step per training state), ``saving``
(``load_model``: a ``.keras`` file with its optimizer and pruning masks, keras_hub task models included),
``shrink`` (channels and attention heads removed), ``batch_norm`` (``recalibrate_batch_norm``),
``hub_layers`` (keras_hub layers as ``shrink`` rebuilds them; imports keras_hub), ``sparse_delta`` (frozen
kernels, trainable deltas at k fixed entries: ``sparse_delta``, ``enable_sparse_delta``, ``merge_sparse_delta``).
"""

import importlib

#: public names imported on first use, as tf_selopt's are: name -> module
_LAZY = {
    "load_model": "tf_selopt.keras.saving",
    "sparse_delta": "tf_selopt.keras.sparse_delta",
    "enable_sparse_delta": "tf_selopt.keras.sparse_delta",
    "merge_sparse_delta": "tf_selopt.keras.sparse_delta",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tf_selopt.keras' has no attribute {name!r}")
