"""Load a ``.keras`` file with everything a run needs to go on: ``load_model``.

``keras.saving.load_model`` restores a saved optimizer only where Keras calls ``compile_from_config``: a model
class that overrides ``compile`` (keras_hub's task models: ``BertTextClassifier``, ...) is not compiled from the
file. It keeps the optimizer its constructor made (keras_hub: ``Adam(5e-5)``), whose variables are not loaded
(Keras warns "Skipping variable loading for optimizer"). A ``SelectiveOptimizer``'s masks, selected-only state
and counters are then gone, and further training moves every frozen entry. Pruning masks are not in any
``.keras`` file (``tf_selopt.keras.pruning``): only their zeros are.

``load_model`` does the same for every model class: it rebuilds the model, installs pruning masks on the
zeros, compiles with the file's compile config through the model's own ``compile``, builds the optimizer on
the trainable variables and loads the optimizer's variables from the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import warnings
import zipfile

import keras

from tf_selopt.keras import pruning
from tf_selopt.keras.optimizer import StateNotLoadedWarning

__all__ = ["load_model", "MASK_ZEROS"]

logger = logging.getLogger("tf_selopt")

#: The values of ``load_model``'s ``mask_zeros``.
MASK_ZEROS = ("auto", True, False)

#: Keras' warnings that ``load_model`` makes moot: it compiles and loads the optimizer itself.
_KERAS_SKIPS = "Skipping variable loading for optimizer"
_MOOT_WARNINGS = (r"`compile\(\)` was not called as part of model loading", _KERAS_SKIPS)


def _check_arguments(path, custom_objects, compile, mask_zeros):
    if not isinstance(path, (str, os.PathLike)) or not str(path).endswith(".keras"):
        raise ValueError(f"`path` must be the path of a `.keras` file; received path={path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"`path`: no file at {str(path)!r}.")
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise ValueError(f"`custom_objects` must be None or a dict name -> object; received {custom_objects!r}.")
    if not isinstance(compile, bool):
        raise ValueError(f"`compile` must be True or False; received compile={compile!r}.")
    if not (isinstance(mask_zeros, bool) or mask_zeros == "auto"):
        raise ValueError(f"`mask_zeros` must be one of {MASK_ZEROS}; received mask_zeros={mask_zeros!r}.")


def _compile_config(path) -> dict | None:
    """The ``compile_config`` entry of the file's ``config.json`` (None when it was saved uncompiled)."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json")).get("compile_config") or None


def _install_pruning_masks(model, mask_zeros) -> list:
    """Masks ``w != 0`` on the prunable variables (``mask_zeros=True``), or on those holding an exact zero
    (``"auto"``); returns their paths."""
    if mask_zeros is False:
        return []
    try:
        variables = pruning.prunable_variables(model)
    except ValueError:  # nothing prunable
        return []
    if mask_zeros == "auto":
        variables = [v for v in variables if not bool(keras.ops.all(keras.ops.not_equal(v.value, 0)))]
    if variables:
        pruning.apply_zero_masks(model, variables)
    return [v.path for v in variables]


def _compile(model, config, custom_objects):
    """``model.compile`` (the model's own, keras_hub's included) with the deserialized compile config, then the
    optimizer built on the trainable variables (as Keras' ``compile_from_config`` does)."""
    arguments = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
    model.compile(**arguments)
    if model.built:
        model.optimizer.build(model.trainable_variables)


def _load_optimizer_state(model, path):
    """The file's optimizer variables (and everything else it holds) into ``model``; a ValueError if the
    optimizer's variables do not match the file's (Keras would skip them with a warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(path)
    for warning in caught:
        message = str(warning.message)
        if issubclass(warning.category, StateNotLoadedWarning) or message.startswith(_KERAS_SKIPS):
            raise ValueError(f"`path` {str(path)!r}: the optimizer's state does not load: {message}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _register_hub_layers():
    """Registers the keras_hub layers ``shrink`` rebuilds (``tf_selopt>TransformerEncoderHeads``) when
    keras_hub is installed, so that a shrunk keras_hub model loads without a manual import."""
    if importlib.util.find_spec("keras_hub") is not None:
        importlib.import_module("tf_selopt.keras.hub_layers")


def load_model(path, custom_objects=None, compile=True, mask_zeros="auto"):
    """Load a ``.keras`` file and restore what training goes on with: weights, optimizer, its state, masks.

    For keras_hub task models (which override ``compile``, so Keras does not compile them from the file) and
    plain Keras models alike: the model as ``keras.saving.load_model(path, compile=False)`` rebuilds it;
    pruning masks on its zeros (see ``mask_zeros``); ``model.compile(...)`` with the file's compile config
    (optimizer, loss, metrics, ...); ``model.optimizer.build(model.trainable_variables)``; the optimizer's
    variables from the file (a ``SelectiveOptimizer``'s masks, counters, inner and selected-only state, in the
    layout it was saved in). Two more steps then equal those of the run that was never interrupted.

    Args:
        path: a ``.keras`` file (``model.save``).
        custom_objects: None or dict name -> class/function, as for ``keras.saving.load_model``.
        compile: True (default): compile and restore the optimizer as above; False: the model only (a keras_hub
            task keeps the optimizer its constructor made, unbuilt).
        mask_zeros: pruning masks (``tf_selopt.keras.pruning``; files keep the zeros, not the masks).
            ``"auto"`` (default): a mask ``w != 0`` on each prunable variable that holds an exact ``0.0``
            (a pruned one: trained or freshly initialized float weights are not exactly zero); ``True``: on every
            prunable variable (``tf_selopt.mask_zeros``); ``False``: none (a kernel left at zeros on purpose).

    Returns:
        the model, compiled with its saved optimizer when ``compile`` and the file has a compile config.

    Raises:
        ValueError: a bad argument (before anything loads), or an optimizer whose variables do not match the
            file's (e.g. a different inner optimizer in ``custom_objects``).

    Example:
        >>> import os, tempfile, keras, numpy as np, tf_selopt
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
        >>> opt = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), keep=5, warmup_steps=2, window=1)
        >>> model.compile(optimizer=opt, loss="mse")
        >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), batch_size=2, verbose=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "run.keras")
        >>> model.save(path)
        >>> loaded = tf_selopt.load_model(path)
        >>> int(loaded.optimizer.selected_count), int(loaded.optimizer.iterations)
        (5, 4)
    """
    _check_arguments(path, custom_objects, compile, mask_zeros)
    _register_hub_layers()
    config = _compile_config(path) if compile else None
    with warnings.catch_warnings():
        for moot in _MOOT_WARNINGS:
            warnings.filterwarnings("ignore", message=moot)
        model = keras.saving.load_model(path, custom_objects=custom_objects, compile=False)
    masked = _install_pruning_masks(model, mask_zeros)
    if masked:
        logger.info("load_model: pruning masks on the zeros of %d variables: %s", len(masked), masked)
    if config is not None:
        _compile(model, config, custom_objects)
        _load_optimizer_state(model, path)
    return model
