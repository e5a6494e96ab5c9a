"""AlexNet and ZFNet from ManasviJaipurkar/Deep-Learning-Study (seed-models.md §3.6, §3.7).

Reported:
- AlexNet (`CA/4_CNN_Alexnet_Image Classification.ipynb`): train accuracy 0.9107, val(=test)
  accuracy 0.5324 on CIFAR-10 after 100 epochs.
- ZFNet (`CA/5_CNN_ZFNet_Cifar10_Classification.ipynb`): test accuracy 0.5529, loss 1.2321 after
  5 epochs (the README's ~80.7% is not in the outputs).

Both notebooks print one model and train another that the saved notebook never defines: the
printed models take 227x227 / 224x224 images and end in 1000 classes, the trained ones took
32x32 CIFAR-10 images and had 10 outputs. So there are two variants of each:

- "printed", exactly as summarised in the notebooks:
    AlexNet: Conv(96, 11x11, s4, valid) -> MP(3, s2) -> Conv(256, 5x5, same) -> MP(3, s2) ->
             Conv384 -> Conv384 -> Conv256 (3x3, same) -> MP(3, s2) -> Flatten ->
             D4096 -> D4096 -> D1000 softmax                              (62,378,344 parameters)
    ZFNet:   Conv(96, 7x7, s2, same) -> MP(3, s2) -> ... as AlexNet ... -> Flatten ->
             D4096 x3 -> D1000 softmax                                   (218,599,528 parameters)
- "cifar", our reconstruction for 32x32 inputs (the trained objects are missing): the same five
  conv layers and widths with a 3x3 stride-1 stem, the same three MP(3, s2), and 1024-unit dense
  layers (two for AlexNet, three for ZFNet), so the flattened features are 3x3x256 rather than a
  few pixels.

Scaling: AlexNet divided by 255; ZFNet standardised with x_train's global mean 120.73 and
std 64.07, both in the graph here.
"""

from __future__ import annotations

from dataclasses import dataclass

import tf_keras as keras

from .layers import apply_scaling

ZFNET_MEAN, ZFNET_STD = 120.73, 64.07


@dataclass(frozen=True)
class Architecture:
    stem: tuple[int, int, str]  # kernel, strides, padding of the 96-filter first conv
    dense_units: tuple[int, ...]
    scaling: str  # "unit" or "zfnet"


ARCHITECTURES = {
    "alexnet": Architecture((11, 4, "valid"), (4096, 4096), "unit"),
    "alexnet_cifar": Architecture((3, 1, "same"), (1024, 1024), "unit"),
    "zfnet": Architecture((7, 2, "same"), (4096, 4096, 4096), "zfnet"),
    "zfnet_cifar": Architecture((3, 1, "same"), (1024, 1024, 1024), "zfnet"),
}
PARAMETERS = {"alexnet": 62_378_344, "zfnet": 218_599_528}


def _scale(inputs, scaling: str):
    if scaling == "zfnet":
        # (x - mean) / std, as the source standardised its arrays before fitting
        return keras.layers.Rescaling(1.0 / ZFNET_STD, offset=-ZFNET_MEAN / ZFNET_STD, name="scaling")(inputs)
    return apply_scaling(inputs, scaling)


def build_alexnet(
    input_shape=(227, 227, 3), num_classes: int = 1000, architecture: str = "alexnet", dropout_rate: float = 0.0
) -> keras.Model:
    """AlexNet / ZFNet, printed or CIFAR-sized (see ARCHITECTURES).

    Args:
        dropout_rate: after each hidden dense layer; 0 as in both sources (neither used dropout).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[architecture]
    kernel, strides, padding = spec.stem
    inputs = keras.Input(input_shape, name="image")
    x = _scale(inputs, spec.scaling)
    x = keras.layers.Conv2D(96, kernel, strides=strides, padding=padding, activation="relu", name="conv_1")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool_1")(x)
    x = keras.layers.Conv2D(256, 5, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool_2")(x)
    for index, filters in enumerate((384, 384, 256), start=3):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{index}")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool_3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(spec.dense_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{index}")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name=f"dropout_{index}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=architecture)
