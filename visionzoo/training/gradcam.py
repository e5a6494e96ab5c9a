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
    tf.function (the export traces it; parity compares the traced graph with the eager call).

    An ensemble (ensemble.py: members averaged output by output) is explained as one model whose
    feature map is its members' maps side by side: the explained score is the ensemble's (its mean
    of the members' scores for the ensemble's top class), so member m's channel weights are
    (1/M) d(score_m)/d(pooled_m), and the map sums every member's weighted channels before the ReLU.
    The members' feature maps must share a grid (the same architecture does).
    """

    def __init__(self, model, explanation: Explanation):
        from .ensemble import ensemble_members

        self.explanation = explanation
        self.output_names = list(model.output_names)
        if explanation.output not in self.output_names:
            raise ExplainError(f"explain: no output {explanation.output!r}; outputs: {self.output_names}")
        if len(model.inputs) != 1:
            raise ExplainError("explain: only single-input models can be explained (the head must depend on the image alone)")
        self.parts = [_Part(member, explanation.layer) for member in ensemble_members(model) or [model]]
        grids = {part.grid for part in self.parts}
        if len(grids) != 1:
            raise ExplainError(f"explain: the ensemble's members pool feature maps of different shapes {sorted(grids)}")
        self.grid = grids.pop()  # (h, w, K)
        for part in self.parts:
            if set(part.output_names) != set(self.output_names):
                raise ExplainError(f"explain: member outputs {part.output_names} differ from the ensemble's {self.output_names}")

    @property
    def cam_shape(self) -> tuple[int, int]:
        return self.grid[:2]

    def __call__(self, image) -> dict:
        import tensorflow as tf

        feature_maps = [part.features(image, training=False) for part in self.parts]
        pooled = [part.pool(feature_map) for part, feature_map in zip(self.parts, feature_maps)]
        with tf.GradientTape() as tape:
            for vector in pooled:
                tape.watch(vector)
            answers = [part.answer(vector) for part, vector in zip(self.parts, pooled)]
            named = answers[0] if len(answers) == 1 else \
                {name: tf.add_n([answer[name] for answer in answers]) / len(answers) for name in self.output_names}
            explained = named[self.explanation.output]
            classes = explained.shape[-1]
            index = tf.argmax(explained, axis=-1) if self.explanation.target == "top" else \
                tf.fill(tf.shape(explained)[:1], tf.constant(int(self.explanation.target), tf.int64))
            one_hot = tf.stop_gradient(tf.one_hot(index, classes, dtype=tf.float32))
            score = tf.reduce_sum(explained * one_hot)  # examples do not interact: one sum, per-example gradients
        gradients = tape.gradient(score, pooled)
        height, width, channels = self.grid
        weighted = []
        for part, feature_map, gradient in zip(self.parts, feature_maps, gradients):
            if part.flatten:
                weights = tf.reduce_mean(tf.reshape(gradient, (-1, height, width, channels)), axis=(1, 2))
            else:
                weights = gradient
            feature_map = tf.cast(feature_map, tf.float32)
            weighted.append(tf.reduce_sum(feature_map * tf.cast(weights, tf.float32)[:, None, None, :], axis=-1))
        cam = tf.nn.relu(weighted[0] if len(weighted) == 1 else tf.add_n(weighted))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        named = {name: named[name] for name in self.output_names}
        named[CAM_OUTPUT] = cam / tf.maximum(peak, 1e-12)
        return named


class _Part:
    """One model cut at its pooling layer: image -> feature map, the pooling, pooled vector -> outputs."""

    def __init__(self, model, layer: str):
        import tf_keras as keras

        try:
            pool = model.get_layer(layer)
        except ValueError:
            raise ExplainError(f"explain: no layer named {layer!r} in {model.name}") from None
        kind = type(pool).__name__
        if kind not in POOLING_LAYERS:
            raise ExplainError(f"explain: layer {layer!r} is a {kind}; name a {' or '.join(POOLING_LAYERS)} layer")
        if len(pool.input.shape) != 4:
            raise ExplainError(f"explain: layer {layer!r} does not take a feature map (input shape {pool.input.shape})")
        self.flatten = kind == "Flatten"
        self.grid = tuple(int(d) for d in pool.input.shape[1:])  # (h, w, K)
        self.output_names = list(model.output_names)
        self.features = keras.Model(model.inputs, pool.input, name=f"{model.name}_features")
        self.pool = pool
        try:
            self.head = keras.Model(pool.output, model.outputs, name=f"{model.name}_head")
        except Exception as error:  # a head that reads other tensors than the pooled vector
            raise ExplainError(f"explain: the layers after {layer!r} do not depend on it alone ({error})") from error

    def answer(self, pooled) -> dict:
        import tensorflow as tf

        outputs = self.head(pooled, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: tf.cast(value, tf.float32) for name, value in zip(self.output_names, outputs)}


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
    class SigmoidGrad:
        """SigmoidGrad(y, dy) = dy * y * (1 - y), y the sigmoid's output."""

        @classmethod
        def version_1(cls, ctx, node, **kwargs):
            y, dy = node.input[0], node.input[1]
            complement = ctx.make_node("Sub", [constant(ctx, node, 1.0, y), y]).output[0]
            slope = ctx.make_node("Mul", [y, complement]).output[0]
            node.type = "Mul"
            ctx.replace_inputs(node, [dy, slope])

    @tf_op("ReluGrad")
    class ReluGrad:
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
