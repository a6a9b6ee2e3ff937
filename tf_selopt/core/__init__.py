"""The core: selection and pruning in TensorFlow ops, no Keras.

``criteria`` (gradients/weights -> scores), ``selection`` (scores + budget ->
exact masks), ``schedules`` (pruning: step -> when and how much),
``selective`` (the training step both optimizer front ends share), ``checks``
and ``configurable`` (argument checks, ``get_config``/``from_config``). Front
ends: ``tf_selopt.keras`` (Keras 3) and ``tf_selopt.keras2`` (tf_keras + tfmot).
"""
