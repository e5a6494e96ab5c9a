"""The CIFAR-10 ablation series and final model of ntoylker/Neural-Networks-and-Deep-Learning-Course
(seed-models.md §3.4-§3.5, notebooks `1o/model_-1*.ipynb` and `1o/model_2.ipynb`).

Reported test accuracy (40k train / 10k val / 10k test, Adam, batch 32, no callbacks):

    variant  change vs baseline                                params   epochs  test
    base     Conv16 3x3 -> MP2 -> Flatten -> D32 -> D10        116,010  15      0.5959
    a        filters 32                                        231,658  30      0.5719
    b        kernel 7x7                                         89,258  15      0.6067
    c        strides 2                                          25,898  15      0.5889
    d        padding same                                      131,882  15      0.6037
    e        Conv32 -> MP -> Conv64 (valid) -> MP               93,482  15      0.6837
    f        Conv32 -> MP -> Conv32 -> MP                       47,370  15      0.6356
    g        Conv32, MaxPool 3x3                               103,658  15      0.5976
    h        Conv32 -> BN -> MP                                231,786  15      0.5496
    i        Conv32, Dense 64                                  462,410  15      0.6256
    j        Conv32, Flatten -> Dropout(0.5) -> D32            231,658  15      0.6467
    k        Conv32 -> MP -> Conv64 -> MP -> Conv128 same -> MP 130,474  15      0.7000
    l        Conv32 -> MP -> Conv64 -> MP -> Conv64 same -> MP   75,114  15      0.7022

Final model (`model_2`, no outputs in the notebook; the report gives 79.51% test, 80.14% val and
"611,626 parameters", but the notebook architecture has 612,554): three [Conv same relu -> BN ->
MP] blocks (16, 64, 128), Dropout(0.5), Flatten(2048), Dense(256, relu) -> BN -> Dropout(0.5) ->
softmax, trained in three stages (visionzoo/training/recipes/cifar_ablation.py: STAGES).
"""

from __future__ import annotations

from dataclasses import dataclass

import tf_keras as keras

from .. import keras_files
from .layers import apply_scaling


@dataclass(frozen=True)
class Conv:
    filters: int
    kernel: int = 3
    strides: int = 1
    padding: str = "valid"


@dataclass(frozen=True)
class Ablation:
    """One variant: conv layers, each followed by [BatchNormalization] and MaxPooling(pool), then
    [Dropout] -> Dense(dense_units, relu) -> softmax."""

    convs: tuple[Conv, ...]
    pool: int = 2
    batch_norm: bool = False
    dense_units: int = 32
    dropout_rate: float | None = None


VARIANTS: dict[str, Ablation] = {
    "base": Ablation((Conv(16),)),
    "a": Ablation((Conv(32),)),
    "b": Ablation((Conv(16, kernel=7),)),
    "c": Ablation((Conv(16, strides=2),)),
    "d": Ablation((Conv(16, padding="same"),)),
    "e": Ablation((Conv(32), Conv(64))),
    "f": Ablation((Conv(32), Conv(32))),
    "g": Ablation((Conv(32),), pool=3),
    "h": Ablation((Conv(32),), batch_norm=True),
    "i": Ablation((Conv(32),), dense_units=64),
    "j": Ablation((Conv(32),), dropout_rate=0.5),
    "k": Ablation((Conv(32), Conv(64), Conv(128, padding="same"))),
    "l": Ablation((Conv(32), Conv(64), Conv(64, padding="same"))),
}


def build_cifar_ablation(input_shape=(32, 32, 3), num_classes: int = 10, variant: str = "base") -> keras.Model:
    """§3.4: the baseline or one ablation variant ("a".."l"); each conv -> [BN] -> MaxPool."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ablation variant {variant!r}; expected one of {sorted(VARIANTS)}")
    spec = VARIANTS[variant]
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    for index, conv in enumerate(spec.convs, start=1):
        x = keras.layers.Conv2D(conv.filters, conv.kernel, strides=conv.strides, padding=conv.padding, activation="relu",
                                name=f"conv_{index}")(x)
        if spec.batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn_{index}")(x)
        x = keras.layers.MaxPooling2D(spec.pool, name=f"pool_{index}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if spec.dropout_rate:
        x = keras.layers.Dropout(spec.dropout_rate, name="dropout")(x)
    x = keras.layers.Dense(spec.dense_units, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"cifar10_ablation_{variant}")


def build_cifar10_final(input_shape=(32, 32, 3), num_classes: int = 10, weights: str | None = None) -> keras.Model:
    """§3.5: [Conv(f, 3x3, same, relu) -> BN -> MP2] for f in 16/64/128 -> Dropout(0.5) -> Flatten ->
    Dense(256, relu) -> BN -> Dropout(0.5) -> softmax (612,554 parameters).

    Args:
        weights: None, or a `.keras` / `.h5` file of this model to continue from (the source's
            second and third stages continue the first stage's weights).
    """
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    for index, filters in enumerate((16, 64, 128), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv_{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool_{index}")(x)
    x = keras.layers.Dropout(0.5, name="dropout_features")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(256, activation="relu", name="dense")(x)
    x = keras.layers.BatchNormalization(name="bn_dense")(x)
    x = keras.layers.Dropout(0.5, name="dropout_dense")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="cifar10_final")
    if weights:
        load_weights_from(model, weights)
    return model


def load_weights_from(model: keras.Model, path: str) -> None:
    """Copy weights from a saved model (.keras) or a weights file (.h5) of the same architecture."""
    from pathlib import Path

    source = Path(path)
    if not source.is_file():
        raise ValueError(f"weights file {source} does not exist")
    if source.suffix == ".keras":
        saved = keras_files.load_model(source, compile=False)
        if [w.shape for w in saved.weights] != [w.shape for w in model.weights]:
            raise ValueError(f"{source} holds a different architecture than {model.name}")
        model.set_weights(saved.get_weights())
    else:
        model.load_weights(source)
