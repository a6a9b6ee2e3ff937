"""Deployment: ``export`` (SavedModel and TFLite/LiteRT, verified against Keras) and ``benchmark``
(size and latency of dense, pruned and quantized exports, side by side)."""
