"""``Configurable``: the Keras ``LearningRateSchedule`` convention for our small objects.

``get_config`` returns the plain constructor arguments, ``from_config`` is
``cls(**config)``, and ``repr`` reads like the constructor call. No Keras import.
"""

from __future__ import annotations

__all__ = ["Configurable"]


class Configurable:
    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
