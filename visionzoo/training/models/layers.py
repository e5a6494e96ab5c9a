"""Custom layers shared by several model families (registered, serializable, no Lambda)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

# ImageNet BGR means used by Keras's "caffe" preprocessing (ResNet50, VGG16).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.utils.register_keras_serializable(package="visionzoo")
class CaffePreprocessing(keras.layers.Layer):
    """keras.applications' "caffe" `preprocess_input` inside the graph: RGB -> BGR, minus the
    ImageNet channel means. Takes float pixels in 0..255, so serving needs no constants."""

    def call(self, inputs):
        bgr = tf.reverse(inputs, axis=[-1])
        return bgr - tf.constant(CAFFE_BGR_MEAN, dtype=inputs.dtype)


def input_scaling(mode: str, name: str = "scaling") -> keras.layers.Layer | None:
    """The in-graph pixel scaling for 0..255 inputs: 'unit' (/255), 'symmetric' ([-1, 1]),
    'caffe' (BGR mean subtraction), or 'none' (the backbone scales by itself)."""
    if mode == "unit":
        return keras.layers.Rescaling(1.0 / 255, name=name)
    if mode == "symmetric":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
    if mode == "caffe":
        return CaffePreprocessing(name=name)
    if mode == "none":
        return None
    raise ValueError(f"unknown input scaling {mode!r}; expected unit, symmetric, caffe or none")


def apply_scaling(inputs, mode: str):
    layer = input_scaling(mode)
    return inputs if layer is None else layer(inputs)
