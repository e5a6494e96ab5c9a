"""visionzoo serving: a BentoML service over ONNX Runtime. Never imports TensorFlow."""

import logging

# `bentoml serve` leaves the root logger at WARNING; the service's own start-up facts (which version
# of each model, on which execution provider, gRPC port) are INFO and belong in the log.
logging.getLogger("visionzoo").setLevel(logging.INFO)
