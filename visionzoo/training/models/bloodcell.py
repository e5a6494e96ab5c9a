"""Blood-cell classifier from GiorCocc/Deep-Learning-Uni-Projects (seed-models.md §6).

Reported: 97.40% test accuracy (97.59% validation) on the AN2DL set with ImageNet weights.

MobileNetV3Large (96x96, its own in-graph rescaling, so the input is raw 0..255 pixels) followed by
the source's head of squeeze-and-excitation blocks: SE on the 3x3x960 feature map, GAP, then three
Dense(swish, L2) -> BN -> SE -> Dropout stages (128, 64, 32) and an 8-way softmax
(3,367,964 parameters).

Fine-tuning rule (§6): freeze the backbone, unfreeze its Conv2D layers, re-freeze the first 140
layers, so only late Conv2D kernels train and BatchNormalization stays frozen. The source counted
140 layers of Keras 3's MobileNetV3Large; tf-keras spells each hard-swish as extra op layers, so the
same cut is named here instead of counted: everything before `expanded_conv_12/depthwise` stays
frozen, which gives the source's 2,397,316 trainable parameters. An integer still counts layers.
The rule needs ImageNet weights; `fine_tune_from=None` trains everything (our from-scratch recipe).

`backbone_bn_momentum`: Keras's MobileNetV3 uses BatchNormalization momentum 0.999. Trained from
scratch for a few hundred steps its moving statistics barely move, and validation sits at the
majority class while training accuracy climbs; 0.9 fixes it. None keeps Keras's value.
"""

from __future__ import annotations

import tf_keras as keras

from .source_facts import BLOODCELL_FINE_TUNE_FROM

SE_RATIO = 8


def _squeeze_excite(x, l2: float, name: str):
    """The source's SE block for a 4-D feature map or a 2-D feature vector (ratio 8, swish)."""
    channels = x.shape[-1]
    regularizer = keras.regularizers.L2(l2)
    if len(x.shape) == 4:
        squeezed = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
        squeezed = keras.layers.Reshape((1, 1, channels), name=f"{name}_reshape")(squeezed)
    else:
        squeezed = x
    squeezed = keras.layers.Dense(channels // SE_RATIO, activation="swish", kernel_regularizer=regularizer, name=f"{name}_reduce")(squeezed)
    squeezed = keras.layers.Dense(channels, activation="sigmoid", kernel_regularizer=regularizer, name=f"{name}_expand")(squeezed)
    return keras.layers.Multiply(name=f"{name}_scale")([x, squeezed])


def _apply_fine_tuning_rule(backbone: keras.Model, fine_tune_from: int | str | None) -> None:
    backbone.trainable = True
    if fine_tune_from is None:
        return
    if isinstance(fine_tune_from, str):
        names = [layer.name for layer in backbone.layers]
        if fine_tune_from not in names:
            raise ValueError(f"fine_tune_from: no backbone layer named {fine_tune_from!r}")
        fine_tune_from = names.index(fine_tune_from)
    for layer in backbone.layers:
        layer.trainable = isinstance(layer, keras.layers.Conv2D)
    for layer in backbone.layers[:fine_tune_from]:
        layer.trainable = False


def build_bloodcell_mobilenetv3(
    input_shape=(96, 96, 3),
    num_classes: int = 8,
    weights: str | None = "imagenet",
    fine_tune_from: int | str | None = BLOODCELL_FINE_TUNE_FROM,
    backbone_bn_momentum: float | None = None,
    dense_units=(128, 64, 32),
    dropout_rate: float = 0.3,
    l2: float = 1e-3,
) -> keras.Model:
    inputs = keras.Input(input_shape, name="image")
    backbone = keras.applications.MobileNetV3Large(
        input_shape=input_shape, include_top=False, weights=weights, include_preprocessing=True
    )
    _apply_fine_tuning_rule(backbone, fine_tune_from)
    if backbone_bn_momentum is not None:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = backbone_bn_momentum
    x = backbone(inputs)
    x = _squeeze_excite(x, l2, "se_features")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    regularizer = keras.regularizers.L2(l2)
    for units in dense_units:
        x = keras.layers.Dense(units, activation="swish", kernel_regularizer=regularizer, name=f"dense_{units}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{units}")(x)
        x = _squeeze_excite(x, l2, f"se_{units}")
        x = keras.layers.Dropout(dropout_rate, name=f"dropout_{units}")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizer, name="probabilities", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name="bloodcell_mobilenetv3")
