"""Bundled data sets: fixed, stratified, disjoint splits in [0, 1]."""

import numpy as np
import pytest

from tf_selopt.study import data


@pytest.mark.parametrize(
    "name, shape, sizes",
    [("mnist", (28, 28, 1), (3500, 500, 1000)), ("digits", (8, 8, 1), (1257, 180, 360))],
)
def test_splits_are_fixed_stratified_and_disjoint(name, shape, sizes):
    a, b = data.load(name), data.load(name)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == sizes
    assert a.x_train.shape[1:] == shape and a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
    np.testing.assert_array_equal(a.x_test, b.x_test)  # fixed split
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0 and a.num_classes == 10
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.max() - counts.min() <= 1 if name == "mnist" else counts.max() - counts.min() <= 2
    train = {row.tobytes() for row in a.x_train}
    assert not any(row.tobytes() in train for row in a.x_test)


def test_unknown_data_set():
    with pytest.raises(ValueError, match="mnist"):
        data.load("cifar10")
