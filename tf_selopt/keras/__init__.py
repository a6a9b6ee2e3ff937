"""Keras 3 front end: ``SelectiveOptimizer``, pruning (``prune``, ``GradualPruning``) and callbacks.

Modules: ``optimizer`` (the wrapper), ``pruning`` (masks, ``prune``,
``GradualPruning``, ``strip_pruning``, ``mask_zeros``), ``callbacks``
(``SelectionMonitor``), ``freezing`` (``DropFrozenVariables``), ``phases``
(``TracePerPhase``), ``traces`` (one traced step per training state), ``sparse_delta`` (frozen kernels,
trainable deltas at k fixed entries: ``sparse_delta``, ``enable_sparse_delta``, ``merge_sparse_delta``).
"""

_SPARSE_DELTA = ("sparse_delta", "enable_sparse_delta", "merge_sparse_delta")


def __getattr__(name):
    if name in _SPARSE_DELTA:  # tf_selopt.keras.sparse_delta(...) as tf_selopt.sparse_delta(...)
        import importlib

        return getattr(importlib.import_module("tf_selopt.keras.sparse_delta"), name)
    raise AttributeError(f"module 'tf_selopt.keras' has no attribute {name!r}")
