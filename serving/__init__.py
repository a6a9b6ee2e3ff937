"""The deployer's tools: run from the repository root as ``python -m serving.<module>``; not installed.

* ``serving.deployment``, ``serving.structured_deployment``, ``serving.xnnpack_1x1``: runners of the deployment
  benchmark (``tf_selopt.deploy.benchmark``), writing to ``results/``;
* ``serving.tf_serving``: TF Serving's ``models.config`` and the warm-up requests file of an exported SavedModel;
* ``serving.client``: predict requests in TF Serving's REST and gRPC formats, checked against the signature, and
  sent with a timeout;
* ``serving.signature``: a SavedModel signature's inputs, and the check every request goes through;
* ``serving.litert_runner``: a LiteRT ``.tflite`` file run through its signature runner, p50/p90 latency.

The client and the warm-up writer need the ``[serving]`` extra (``tensorflow-serving-api``); the LiteRT runner
needs the ``[export]`` extra (``ai-edge-litert``) and not TensorFlow.
"""
