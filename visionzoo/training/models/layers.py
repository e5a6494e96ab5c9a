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


def _texts(values) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


def _h5_arrays(path) -> dict[str, list]:
    """Layer name -> its weight arrays, in the layer's order, from a Keras .h5 file (a whole model or
    `save_weights` output)."""
    import h5py

    with h5py.File(path, "r") as file:
        group = file.get("model_weights", file)
        return {name: [group[name][weight][()] for weight in _texts(group[name].attrs["weight_names"])]
                for name in _texts(group.attrs["layer_names"])}


def _model_arrays(path) -> dict[str, list]:
    """Layer name -> its weight arrays, from a saved Keras model (.keras)."""
    from .. import keras_files

    return {layer.name: layer.get_weights() for layer in keras_files.load_model(path, compile=False).layers}


def load_matching_weights(model: keras.Model, source: str) -> list[str]:
    """Set every layer of `model` that `source` has under the same name with weights of the same
    shapes; returns those layers' names. `source`: a run folder (its best_model.keras), a .keras
    model, or an .h5 weights file. Layers the source lacks or shapes differently (a head for other
    classes) keep their initialisation. ValueError when nothing matches or the file is unreadable."""
    from .. import keras_files

    path = keras_files.weights_file(source)
    donor = _h5_arrays(path) if path.suffix == ".h5" else _model_arrays(path)
    loaded = []
    for layer in model.layers:
        arrays = donor.get(layer.name)
        if layer.weights and arrays is not None and [a.shape for a in arrays] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(arrays)
            loaded.append(layer.name)
    if not loaded:
        raise ValueError(f"weights {source}: no layer of {model.name} matches one there by name and shape")
    return loaded
