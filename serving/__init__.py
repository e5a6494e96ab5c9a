"""visionzoo serving: a BentoML service over ONNX Runtime. Never imports TensorFlow."""
