"""Reference models: the same architecture in Keras 3 and tf_keras."""

import keras
import pytest
import tf_keras

from tf_selopt.study import models


@pytest.mark.parametrize("build, params", [(models.small_cnn, 105_866), (models.lenet_300_100, 266_610)])
def test_both_apis_build_the_same_architecture(build, params):
    k3, k2 = build(), build(api=tf_keras)
    assert isinstance(k3, keras.Model) and isinstance(k2, tf_keras.Model)
    assert k3.count_params() == k2.count_params() == params
    assert [tuple(w.shape) for w in k3.weights] == [tuple(w.shape) for w in k2.weights]
