"""Grad-CAM (Selvaraju et al. 2017) written into the exported graph, so serving stays TensorFlow-free.

A recipe that can explain itself names the layer that pools its last feature map into a vector
(`Recipe.explain`): GlobalAveragePooling2D (the blood-cell classifier's `pool`) or Flatten (the MURA
CNN's `flatten`), the output to explain, and which of its classes. The exported graph then has one
more output, `cam`: for each image an (h, w) map over the feature map's grid, in 0..1 with its peak
at 1 (all zeros where no location raises the score), which the service resizes to the image.

With A the feature map (N, h, w, K) and p the pooled vector, the gradient of the explained score y
is taken with respect to p, not A, so the tape holds only the head's small dense graph:
    GlobalAveragePooling2D: p_k = mean_ij A_ijk, so dy/dA_ijk = (dy/dp_k) / (hw) and the Grad-CAM
        weight alpha_k = mean_ij dy/dA_ijk is dy/dp_k up to the constant 1/(hw);
    Flatten: p is A reshaped, so dy/dA is dy/dp reshaped and alpha_k = mean_ij dy/dA_ijk.
    cam = relu(sum_k alpha_k A_k) / its maximum.
The explained class is fixed by a one-hot under stop_gradient (top class: the arg-max of the same
forward pass), so the map always explains the answer the request gets.

tf2onnx 1.17 has no converters for two gradient kernels the tape emits (SigmoidGrad from sigmoid
and squeeze-excitation gates, ReluGrad from ReLU layers); `register_gradient_converters` adds them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CAM_OUTPUT = "cam"
POOLING_LAYERS = ("GlobalAveragePooling2D", "Flatten")


@dataclass(frozen=True)
class Explanation:
    """Which layer pools the explained feature map, and which output and class to explain.

    Args:
        layer: name of the GlobalAveragePooling2D or Flatten layer after the last feature map.
        output: the model output whose score is explained.
        target: "top" (the output's arg-max, for softmax outputs) or a class index (0 for a
            one-unit sigmoid output such as `abnormal`).
    """

    layer: str
    output: str
    target: str | int = "top"

    def to_dict(self) -> dict:
        return {**asdict(self), "method": "Grad-CAM", "tensor": CAM_OUTPUT}


class ExplainError(ValueError):
    """The model cannot be explained as asked (no such layer, a head that needs other inputs ...)."""


class GradCam:
    """The model's outputs plus the Grad-CAM map, as one callable usable eagerly and in a
    tf.function (the export traces it; parity compares the traced graph with the eager call)."""

    def __init__(self, model, explanation: Explanation):
        import tf_keras as keras

        self.explanation = explanation
        self.output_names = list(model.output_names)
        if explanation.output not in self.output_names:
            raise ExplainError(f"explain: no output {explanation.output!r}; outputs: {self.output_names}")
        if len(model.inputs) != 1:
            raise ExplainError("explain: only single-input models can be explained (the head must depend on the image alone)")
        try:
            pool = model.get_layer(explanation.layer)
        except ValueError:
            raise ExplainError(f"explain: no layer named {explanation.layer!r} in {model.name}") from None
        kind = type(pool).__name__
        if kind not in POOLING_LAYERS:
            raise ExplainError(f"explain: layer {explanation.layer!r} is a {kind}; name a {' or '.join(POOLING_LAYERS)} layer")
        if len(pool.input.shape) != 4:
            raise ExplainError(f"explain: layer {explanation.layer!r} does not take a feature map (input shape {pool.input.shape})")
        self.flatten = kind == "Flatten"
        self.grid = tuple(int(d) for d in pool.input.shape[1:])  # (h, w, K)
        self.features = keras.Model(model.inputs, pool.input, name=f"{model.name}_features")
        self.pool = pool
        try:
            self.head = keras.Model(pool.output, model.outputs, name=f"{model.name}_head")
        except Exception as error:  # a head that reads other tensors than the pooled vector
            raise ExplainError(f"explain: the layers after {explanation.layer!r} do not depend on it alone ({error})") from error

    @property
    def cam_shape(self) -> tuple[int, int]:
        return self.grid[:2]

    def __call__(self, image) -> dict:
        import tensorflow as tf

        feature_map = self.features(image, training=False)
        pooled = self.pool(feature_map)
        with tf.GradientTape() as tape:
            tape.watch(pooled)
            outputs = self.head(pooled, training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            named = {name: tf.cast(value, tf.float32) for name, value in zip(self.output_names, outputs)}
            explained = named[self.explanation.output]
            classes = explained.shape[-1]
            index = tf.argmax(explained, axis=-1) if self.explanation.target == "top" else \
                tf.fill(tf.shape(explained)[:1], tf.constant(int(self.explanation.target), tf.int64))
            one_hot = tf.stop_gradient(tf.one_hot(index, classes, dtype=tf.float32))
            score = tf.reduce_sum(explained * one_hot)  # examples do not interact: one sum, per-example gradients
        gradient = tape.gradient(score, pooled)
        height, width, channels = self.grid
        if self.flatten:
            weights = tf.reduce_mean(tf.reshape(gradient, (-1, height, width, channels)), axis=(1, 2))
        else:
            weights = gradient
        feature_map = tf.cast(feature_map, tf.float32)
        cam = tf.nn.relu(tf.reduce_sum(feature_map * tf.cast(weights, tf.float32)[:, None, None, :], axis=-1))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        named[CAM_OUTPUT] = cam / tf.maximum(peak, 1e-12)
        return named


def register_gradient_converters() -> None:
    """tf2onnx converters for SigmoidGrad and ReluGrad (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    def constant(ctx, node, value: float, like: str) -> str:
        dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(like))
        return ctx.make_const(utils.make_name(f"{node.name}_const"), np.array(value, dtype=dtype)).output[0]

    @tf_op("SigmoidGrad")
    class SigmoidGrad:  # noqa: F841  (registered by the decorator)
        """SigmoidGrad(y, dy) = dy * y * (1 - y), y the sigmoid's output."""

        @classmethod
        def version_1(cls, ctx, node, **kwargs):
            y, dy = node.input[0], node.input[1]
            complement = ctx.make_node("Sub", [constant(ctx, node, 1.0, y), y]).output[0]
            slope = ctx.make_node("Mul", [y, complement]).output[0]
            node.type = "Mul"
            ctx.replace_inputs(node, [dy, slope])

    @tf_op("ReluGrad")
    class ReluGrad:  # noqa: F841
        """ReluGrad(dy, x) = dy where x > 0, else 0."""

        @classmethod
        def version_1(cls, ctx, node, **kwargs):
            dy, x = node.input[0], node.input[1]
            positive = ctx.make_node("Greater", [x, constant(ctx, node, 0.0, x)]).output[0]
            mask = ctx.make_node("Cast", [positive], attr={"to": ctx.get_dtype(x)}).output[0]
            node.type = "Mul"
            ctx.replace_inputs(node, [dy, mask])

    _REGISTERED = True


_REGISTERED = False
