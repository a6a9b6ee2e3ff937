"""Module paths that moved since the 0.1.0 release, importable for one more release.

``import tf_selopt.pruning``, ``from tf_selopt.export import export_tflite`` and
``from tf_selopt import export`` still work: they give the module the code moved
to (``MOVED``: old name -> new module under ``tf_selopt``), the same module
object, after a ``DeprecationWarning`` that names the new path (attributed to
the importing line, so Python shows it there by default in ``__main__`` and
pytest shows it in tests). The core's public modules ``tf_selopt.criteria``,
``.schedules`` and ``.selection`` (``CURRENT``) import the same way, without a
warning: they are the current names of ``tf_selopt.core``'s modules.

Removed in 0.1.0's successor with no new home: ``tf_selopt.selective.SelectiveReadouts``
(its read-outs are ``SelectiveOptimizer``'s properties).

Example:
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DeprecationWarning)
    ...     from tf_selopt.checks import fraction  # 0.1.0's path: warns once per process
    >>> import tf_selopt.core.checks
    >>> fraction is tf_selopt.core.checks.fraction
    True
    >>> from tf_selopt.criteria import GradientSum  # a current name: no warning
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import inspect
import sys
import warnings

#: 0.1.0's module (under ``tf_selopt``) -> the module its public names live in now.
MOVED = {
    "callbacks": "keras.callbacks",
    "checks": "core.checks",
    "configurable": "core.configurable",
    "data": "study.data",
    "export": "deploy.export",
    "freezing": "keras.freezing",
    "models": "study.models",
    "optimizer": "keras.optimizer",
    "phases": "keras.phases",
    "pruning": "keras.pruning",
    "selective": "core.selective",
    "serving": "deploy.benchmark",
    "tf_keras": "keras2",
    "tfmot_bridge": "keras2.tfmot_bridge",
    "traces": "keras.traces",
}
#: Current short names of the core's public modules (``tf_selopt.criteria`` is ``tf_selopt.core.criteria``).
CURRENT = {"criteria": "core.criteria", "schedules": "core.schedules", "selection": "core.selection"}

PACKAGE = "tf_selopt"


def _importer_frame():
    """The first frame outside the import machinery and this module: the line that imported."""
    frame = inspect.currentframe().f_back
    machinery = {__name__, PACKAGE, "importlib", "importlib.util"}  # PACKAGE: ``from tf_selopt import export``
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen importlib") or frame.f_globals.get("__name__") in machinery
    ):
        frame = frame.f_back
    return frame


def warn_moved(old: str) -> None:
    """A DeprecationWarning that ``tf_selopt.<old>`` moved, attributed to the importing line."""
    message = f"{PACKAGE}.{old} moved to {PACKAGE}.{MOVED[old]}; the old path goes in the next release."
    frame = _importer_frame()
    if frame is None:
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return
    warnings.warn_explicit(
        message,
        DeprecationWarning,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=frame.f_globals.get("__name__", "<unknown>"),
        registry=frame.f_globals.setdefault("__warningregistry__", {}),
    )


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``tf_selopt.<old>`` for the names of ``MOVED`` and ``CURRENT``; loading it returns the module it
    names (imported as usual), which ``sys.modules`` then holds under both names."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == PACKAGE and (name in MOVED or name in CURRENT):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        name = spec.name.rpartition(".")[2]
        if name in MOVED:
            warn_moved(name)
        return importlib.import_module(f"{PACKAGE}.{MOVED.get(name) or CURRENT[name]}")

    def exec_module(self, module):
        """Nothing: the module was imported under its own name."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
