"""Keras 3 front end: ``SelectiveOptimizer``, pruning (``prune``, ``GradualPruning``) and callbacks.

Modules: ``optimizer`` (the wrapper), ``pruning`` (masks, ``prune``,
``GradualPruning``, ``strip_pruning``, ``mask_zeros``), ``callbacks``
(``SelectionMonitor``), ``freezing`` (``DropFrozenVariables``), ``phases``
(``TracePerPhase``), ``traces`` (one traced step per training state), ``shrink`` (channels and attention
heads removed), ``batch_norm`` (``recalibrate_batch_norm``), ``hub_layers`` (keras_hub layers as ``shrink``
rebuilds them; imports keras_hub).
"""
