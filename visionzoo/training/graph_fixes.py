"""Fixes applied to a Keras model before it is traced for export, so the traced graph converts to ONNX.

The bug: tf-keras keeps some per-layer constants as *eager tensors* rather than variables or Python
numbers. The prominent case is `keras.layers.Normalization` (the stem of Keras's EfficientNet has one
after `Rescaling(1/255)`): `finalize_state()` (run at build, after `adapt()` and after weights are
loaded) sets `layer.mean` and `layer.variance` to `tf.reshape(adapt_mean, ...)` and
`tf.reshape(adapt_variance, ...)`, i.e. EagerTensors; with `mean=`/`variance=` given they are
EagerTensors too. A `tf.function` that calls the layer does not embed an eager tensor: it *captures*
it, and the captured value becomes an extra placeholder input of the concrete function. tf2onnx
freezes captured variables (resources) into initializers, but treats every non-resource input of the
concrete function as a graph input, so the ONNX model ends up with required inputs such as
`model/normalization/sub/y:0` and `model/normalization/Sqrt/x:0` that no caller can feed
("Required inputs ... normalization/sub/y:0 ... are missing"). Eager tensors passed as constant
arguments in a Functional model (`x * tf.constant([...])`, stored on the TFOpLambda node) are
captured the same way.

The fix: before tracing, replace every such eager tensor with a NumPy array of the same value and
dtype. Inside a `tf.function` TensorFlow turns a NumPy array into a `Const` node, so the value is part
of the graph (an ONNX initializer) and the ONNX model has only the model's real inputs. The arithmetic
is unchanged (same values, same dtype, same ops), so outputs stay bit-identical. Calling
`finalize_state()` or `adapt()` again later simply recreates the eager tensors; fold again before the
next export.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

# The attributes tf-keras layers keep as eager tensors: Normalization's statistics. Every other
# eager-tensor attribute of any layer is folded too (fold_captured_statistics scans them all).
KNOWN_ATTRIBUTES = ("mean", "variance")


def _is_eager_tensor(value) -> bool:
    import tensorflow as tf

    return isinstance(value, tf.Tensor) and not tf.is_symbolic_tensor(value) and not isinstance(value, tf.Variable)


def _as_constant(value):
    """The NumPy twin of an eager tensor (same values, same dtype); anything else unchanged."""
    return value.numpy() if _is_eager_tensor(value) else value


def _all_layers(model) -> list:
    """`model` and every layer nested in it (sub-models, layers held by custom layers), once each."""
    import tf_keras as keras

    layers, seen = [], set()
    for layer in [model, *getattr(model, "submodules", ())]:
        if isinstance(layer, keras.layers.Layer) and id(layer) not in seen:
            seen.add(id(layer))
            layers.append(layer)
    return layers


def _fold_node_arguments(layer) -> int:
    """Constant call arguments of a Functional node (e.g. the `y` of `tf.math.multiply(x, y)`) that
    are eager tensors; returns how many were folded."""
    import tensorflow as tf

    folded = 0
    for node in getattr(layer, "_inbound_nodes", ()):
        flat = getattr(node, "_flat_arguments", None)
        if not flat or not any(_is_eager_tensor(value) for value in flat):
            continue
        folded += sum(_is_eager_tensor(value) for value in flat)
        node._flat_arguments = [_as_constant(value) for value in flat]
        node.call_args = tf.nest.map_structure(_as_constant, node.call_args)
        node.call_kwargs = tf.nest.map_structure(_as_constant, node.call_kwargs)
        node._single_positional_tensor_passed = False  # the single argument, if any, is no tensor now
    return folded


def fold_captured_statistics(model) -> list[str]:
    """Turn every eager-tensor constant held by `model`'s layers into a NumPy constant, in place, so a
    `tf.function` tracing the model embeds it as a graph constant instead of capturing it as an
    extra input (which tf2onnx would export as a required ONNX input). Covers `Normalization`'s
    `mean`/`variance`, any other eager-tensor attribute of any layer, and eager tensors passed as
    constant arguments in Functional graphs; searches nested models and layers. Outputs are unchanged.

    Returns what was folded, as "layer_name.attribute" (or "layer_name(call argument)") strings.
    """
    folded = []
    for layer in _all_layers(model):
        names = [name for name in KNOWN_ATTRIBUTES if _is_eager_tensor(getattr(layer, name, None))]
        names += [name for name, value in vars(layer).items() if name not in names and _is_eager_tensor(value)]
        for name in names:
            setattr(layer, name, np.asarray(getattr(layer, name).numpy()))
            folded.append(f"{layer.name}.{name}")
        count = _fold_node_arguments(layer)
        folded += [f"{layer.name}(call argument)"] * count
    if folded:
        logger.debug("folded %d captured eager tensors into graph constants: %s", len(folded), ", ".join(folded))
    return folded
