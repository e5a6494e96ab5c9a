"""LeNet variants of ManasviJaipurkar/Deep-Learning-Study, `CA/3_CNN_Lenet_50.ipynb`
(seed-models.md §1.2).

Reported:
- "LeNet" on keras.datasets.mnist (§1.2b): test accuracy 0.9903, loss 0.0310 (README "~99.03%").
- "LeNet-50" on the Kaggle digit CSV (§1.2a): failed, loss NaN from epoch 1, val accuracy 0.0962
  (missing values in the CSV; visionzoo/training/data/kaggle_digits.py now refuses such rows by name).

LeNet (§1.2b): Conv(6, 5x5, same, relu) -> AvgPool2 -> Conv(16, 5x5, same, relu) -> AvgPool2 ->
Conv(16, 5x5, same, relu) -> Flatten(784) -> Dense(120, relu) -> ...
The source ends in Dense(84, softmax): an 84-way output for 10 digits (113,352 parameters), which
trains only because sparse labels 0..9 index into it, and leaves 74 classes that can still win
the arg-max. Default here: Dense(84, relu) -> Dense(10, softmax), the textbook LeNet head
(114,202 parameters). `source_head=True` builds the source's 84-way softmax.

LeNet-50 (§1.2a): Conv(32, 5x5, same, relu) -> MaxPool -> Conv(48, 5x5, valid, relu) -> MaxPool ->
Flatten(1200) -> Dense(256, relu) -> Dense(84, relu) -> Dense(10, softmax) (369,174 parameters).
"""

from __future__ import annotations

import tf_keras as keras

from .layers import apply_scaling
from .source_facts import LENET_OUTPUT_UNITS


def build_lenet(input_shape=(28, 28, 1), num_classes: int = 10, source_head: bool = False) -> keras.Model:
    """§1.2b LeNet; `source_head=True` ends in the source's Dense(84, softmax) instead of 10 classes."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    x = keras.layers.Conv2D(6, 5, padding="same", activation="relu", name="conv_1")(x)
    x = keras.layers.AveragePooling2D(name="pool_1")(x)
    x = keras.layers.Conv2D(16, 5, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.AveragePooling2D(name="pool_2")(x)
    x = keras.layers.Conv2D(16, 5, padding="same", activation="relu", name="conv_3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(120, activation="relu", name="dense_120")(x)
    if source_head:
        outputs = keras.layers.Dense(LENET_OUTPUT_UNITS, activation="softmax", name="probabilities", dtype="float32")(x)
        return keras.Model(inputs, outputs, name="lenet_source_head")
    x = keras.layers.Dense(84, activation="relu", name="dense_84")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="lenet")


def build_lenet50(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """§1.2a "LeNet-50" for the Kaggle digit CSV."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    x = keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="conv_1")(x)
    x = keras.layers.MaxPooling2D(strides=2, name="pool_1")(x)
    x = keras.layers.Conv2D(48, 5, padding="valid", activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(strides=2, name="pool_2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(256, activation="relu", name="dense_256")(x)
    x = keras.layers.Dense(84, activation="relu", name="dense_84")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="lenet50")
