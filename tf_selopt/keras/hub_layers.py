"""keras_hub layers as ``tf_selopt.shrink`` rebuilds them (imports keras_hub, the ``[hub]`` extra).

``TransformerEncoderHeads``: keras_hub's ``TransformerEncoder`` whose attention head size is given
(``key_dim``) instead of ``hidden_dim // num_heads``, so that heads can be removed while the kept ones keep
their weights. Import this module before loading a saved model that ``shrink`` made from one (the class is
registered as ``tf_selopt>TransformerEncoderHeads``).
"""

from __future__ import annotations

import keras
import keras_hub

from tf_selopt.keras import _compat


@keras.saving.register_keras_serializable(package="tf_selopt")
class TransformerEncoderHeads(keras_hub.layers.TransformerEncoder):
    """keras_hub's ``TransformerEncoder`` with ``num_heads`` heads of size ``key_dim`` each (query, key and
    value kernels ``(hidden, num_heads, key_dim)``, output kernel ``(num_heads, key_dim, hidden)``).

    Examples:
        >>> import numpy as np
        >>> layer = TransformerEncoderHeads(intermediate_dim=12, num_heads=3, key_dim=8)
        >>> tuple(layer(np.zeros((1, 5, 16), "float32")).shape)
        (1, 5, 16)
        >>> [tuple(w.shape) for w in layer.weights if w.path.endswith("query/kernel")]
        [(16, 3, 8)]
    """

    def __init__(self, intermediate_dim, num_heads, key_dim, **kwargs):
        super().__init__(intermediate_dim, num_heads, **kwargs)
        self.key_dim = int(key_dim)

    def build(self, inputs_shape):
        super().build(inputs_shape)
        _compat.replace_encoder_attention(self, self.key_dim, inputs_shape)

    def get_config(self):
        return dict(super().get_config(), key_dim=self.key_dim)
