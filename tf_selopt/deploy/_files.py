"""Writing artefacts: nothing half-written, nothing replaced unasked (``export`` and ``benchmark`` share it).

An artefact is written into ``staging(target)``, a temporary directory beside
its target (so that ``os.replace`` stays on one file system), and moved onto the
target with ``replace`` once it is complete and verified. On any error the
temporary directory and the parent directories it had to create are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


def check_overwrite(overwrite):
    """``overwrite`` must be a bool (a string such as ``"no"`` would be truthy)."""
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False, got {overwrite!r}")


def check_directory(path, label, overwrite=None, occupied=None):
    """Refuse a non-directory at ``path`` (where a directory goes) and, when ``overwrite`` is False, a
    non-empty directory (``overwrite`` None: not checked). ``label`` starts the messages; ``occupied``
    replaces the default "<label> <path> is not empty"."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{label} {path!r} exists and is not a directory")
    if overwrite is False and os.path.isdir(path) and os.listdir(path):
        refuse_existing(occupied or f"{label} {path!r} is not empty")


def check_file(path, overwrite, occupied):
    """Refuse an existing ``path`` unless ``overwrite``; ``occupied`` says what is in the way."""
    if os.path.exists(path) and not overwrite:
        refuse_existing(occupied)


def refuse_existing(occupied):
    raise ValueError(f"{occupied}: pass overwrite=True to replace it")


def make_parents(directory) -> list:
    """Create ``directory`` and its missing parents; return those created (outermost first)."""
    created = []
    d = os.path.abspath(directory)
    while not os.path.exists(d):
        created.append(d)
        d = os.path.dirname(d)
    for c in reversed(created):
        os.mkdir(c)
    return list(reversed(created))


def remove_empty(created):
    """Remove the directories ``make_parents`` created, innermost first, as long as they are empty."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            break


@contextlib.contextmanager
def staging(target):
    """A fresh temporary directory beside ``target`` (its parents created), removed on exit; on an error
    also the parent directories it created (when empty). Move the result onto ``target`` with ``replace``."""
    parent = os.path.dirname(os.path.abspath(target))
    created = make_parents(parent)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(target))}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def replace(source, target):
    """Move the file or directory ``source`` onto ``target`` (same file system) with ``os.replace``.

    An existing directory ``target`` is first moved aside (``os.replace`` cannot
    replace a non-empty directory) and removed after the move."""
    if os.path.isdir(target):
        parent = os.path.dirname(os.path.abspath(target))
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(target))}.old-", dir=parent)
        os.replace(target, os.path.join(old, "old"))
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: readers see old or new, never half."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
