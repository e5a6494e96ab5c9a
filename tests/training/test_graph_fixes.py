"""graph_fixes.fold_captured_statistics: a model with an adapted Normalization layer (as in Keras's
EfficientNet stem) converts to an ONNX model with one input and the same outputs as Keras."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from visionzoo.training import graph_fixes

from .helpers import release_models  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("release_models")


def tiny_normalized_model(rng, nested: bool):
    """Input(8, 8, 3) -> Normalization (adapted) -> Conv2D -> GAP -> Dense; optionally with the
    Normalization inside a nested Model, as EfficientNetB0's is inside the MURA models."""
    normalization = keras.layers.Normalization(axis=-1)
    normalization.adapt(rng.uniform(0, 255, size=(16, 8, 8, 3)).astype(np.float32))
    image = keras.Input((8, 8, 3), name="image")
    stem = normalization(image)
    if nested:
        inner = keras.Input((8, 8, 3))
        stem = keras.Model(inner, normalization(inner), name="backbone")(image)
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(stem))
    return keras.Model(image, keras.layers.Dense(3)(features))


def to_onnx(model):
    import tf2onnx

    spec = [tf.TensorSpec((None, 8, 8, 3), tf.float32, name="image")]
    serve = tf.function(lambda image: model(image, training=False), input_signature=spec)
    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)
    return model_proto


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_folded_normalization_exports_with_one_input_and_keras_outputs(nested):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    model = tiny_normalized_model(rng, nested)
    images = rng.uniform(0, 255, size=(4, 8, 8, 3)).astype(np.float32)
    before = model(images, training=False).numpy()

    folded = graph_fixes.fold_captured_statistics(model)

    assert {entry.split(".")[-1] for entry in folded} == {"mean", "variance"}
    np.testing.assert_array_equal(model(images, training=False).numpy(), before)  # folding changes no output
    model_proto = to_onnx(model)
    assert [tensor.name for tensor in model_proto.graph.input] == ["image"]
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": images})[0], before, rtol=0, atol=1e-5)
    assert graph_fixes.fold_captured_statistics(model) == []  # idempotent: nothing left to fold


def test_eager_constant_arguments_of_functional_nodes_are_folded():
    image = keras.Input((8, 8, 3), name="image")
    scaled = image * tf.constant([1.0, 2.0, 3.0])  # stored on the TFOpLambda node as an eager tensor
    model = keras.Model(image, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(scaled)))
    images = np.random.default_rng(1).uniform(0, 255, size=(2, 8, 8, 3)).astype(np.float32)
    before = model(images).numpy()

    assert graph_fixes.fold_captured_statistics(model) == ["tf.math.multiply(call argument)"]

    np.testing.assert_array_equal(model(images).numpy(), before)
    assert [tensor.name for tensor in to_onnx(model).graph.input] == ["image"]
