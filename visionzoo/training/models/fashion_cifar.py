"""Fashion-MNIST and CIFAR-10 baselines from jasproudis/deep-learning-assignment
(seed-models.md §2.1, §2.2, §3.1-§3.3).

Reported (test accuracy, as printed in the notebooks):
    Fashion-MNIST MLP     0.8871 (235,146 parameters; a later run 0.8840)
    Fashion-MNIST CNN     0.9184 (422,026)
    CIFAR-10 MLP          0.3566 (1,707,274)
    CIFAR-10 simple CNN   0.6987 (122,570)
    CIFAR-10 CNN2         0.8149 (667,434; 448 non-trainable; a Colab rerun 0.7855)

The sources divided pixels by 255 before the model; here the model takes 0..255 pixels and does it
in the graph. The MLPs flatten inside the graph too (the source reshaped to (N, 784) beforehand),
which changes no parameter. Every kernel is Keras's default glorot_uniform, as in the sources.
"""

from __future__ import annotations

import tf_keras as keras

from .layers import apply_scaling


def _classifier(x, num_classes: int):
    return keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)


def build_mlp(
    input_shape=(28, 28, 1), num_classes: int = 10, hidden_units=(256, 128), dropout_rate: float = 0.3, name: str = "mlp"
) -> keras.Model:
    """§2.1 / §3.1: Flatten -> [Dense(units, relu) -> Dropout] per hidden layer -> softmax.

    Fashion-MNIST: hidden (256, 128), dropout 0.3. CIFAR-10: hidden (512, 256), dropout 0.5.
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(apply_scaling(inputs, "unit"))
    for index, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{index}")(x)
        x = keras.layers.Dropout(dropout_rate, name=f"dropout_{index}")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name=name)


def build_fashion_mnist_cnn(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """§2.2: two [Conv(3x3, same, relu) -> BN -> MaxPool -> Dropout(0.25)] blocks (32, 64 filters),
    Flatten(3136) -> Dense(128, relu) -> Dropout(0.5) -> softmax."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    for index, filters in enumerate((32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool_{index}")(x)
        x = keras.layers.Dropout(0.25, name=f"dropout_{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(0.5, name="dropout_dense")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="fashion_mnist_cnn")


def build_cifar10_cnn(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """§3.2: Conv32 -> MP -> Conv64 -> MP -> Conv64 (3x3, valid, relu) -> Flatten(1024) ->
    Dense(64, relu) -> softmax (the Keras CNN tutorial's network)."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv_1")(x)
    x = keras.layers.MaxPooling2D(name="pool_1")(x)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(name="pool_2")(x)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="conv_3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="cifar10_cnn")


def build_cifar10_cnn2(input_shape=(32, 32, 3), num_classes: int = 10) -> keras.Model:
    """§3.3 "Glorot, BN, Dropout, EarlyStopping": all convs 3x3 same relu;
    [Conv32 -> BN -> Conv32 -> MP -> DO(0.25)], [Conv64 -> BN -> Conv64 -> MP -> DO(0.25)],
    [Conv128 -> BN -> MP -> DO(0.4)], Flatten(2048) -> Dense(256, relu) -> DO(0.5) -> softmax.
    BatchNormalization follows only the first conv of each block, as in the source."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    for block, (filters, convs, dropout_rate) in enumerate(((32, 2, 0.25), (64, 2, 0.25), (128, 1, 0.4)), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv1")(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        if convs == 2:
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv2")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name=f"block{block}_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(256, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(0.5, name="dropout_dense")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="cifar10_cnn2")
