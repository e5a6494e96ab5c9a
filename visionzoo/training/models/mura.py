"""MURA abnormality models from jasproudis/deep-learning-assignment (seed-models.md §5).

Reported: the multitask CNN (§5.3) reached 64.9% validation accuracy, abnormal F1 0.60; its
body-part head was trivially 100% because every label was "OTHER" (a data bug, fixed in
visionzoo/training/data/mura.py). No transfer model has a validation result in the source.

All models take float32 pixels in 0..255 named "image"; scaling is in the graph. Where the source
fed a backbone the wrong scale (ResNet50 and EfficientNetB0 got x/255), the default here is the
backbone's own ImageNet preprocessing and `source_scaling=True` restores the source's.
Outputs: "abnormal" (N, 1) sigmoid, plus "body_part" (N, K) softmax for multitask models; K comes
from the data (7 MURA parts, 5 FracAtlas regions).
"""

from __future__ import annotations

import tf_keras as keras

from .layers import apply_scaling

BACKBONES = {
    # name -> (constructor, ImageNet scaling the weights expect)
    "resnet50": (keras.applications.ResNet50, "caffe"),
    "efficientnetb0": (keras.applications.EfficientNetB0, "none"),  # rescales inside the model
    "inceptionv3": (keras.applications.InceptionV3, "symmetric"),
}
POOLING = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}


def _abnormal_head(x):
    return keras.layers.Dense(1, activation="sigmoid", name="abnormal", dtype="float32")(x)


def _body_part_head(x, num_body_parts: int):
    return keras.layers.Dense(num_body_parts, activation="softmax", name="body_part", dtype="float32")(x)


def _frozen_backbone(name: str, inputs, weights, source_scaling: bool, pooling: str | None = None):
    constructor, scaling = BACKBONES[name]
    backbone = constructor(include_top=False, weights=weights, input_shape=tuple(inputs.shape[1:]), pooling=pooling)
    backbone.trainable = False
    x = apply_scaling(inputs, "unit" if source_scaling else scaling)
    return backbone, backbone(x, training=False)


def build_mura_multitask_cnn(
    input_shape=(224, 224, 3),
    num_body_parts: int = 7,
    filters=(32, 64, 128),
    dense_units: int = 128,
    dropout_rate: float = 0.4,
    bn_momentum: float = 0.99,
) -> keras.Model:
    """§5.3: [Conv(f,3x3,same,relu) -> MaxPool -> BN] for f in 32/64/128, Flatten, Dropout(0.4),
    Dense(128, relu), then the abnormal and body-part heads.

    `bn_momentum` defaults to Keras's 0.99, which the source used with 1,150 steps per epoch on
    MURA. On a small set (FracAtlas: 23 steps per epoch) the moving statistics lag the real ones
    for hundreds of steps and inference collapses to one class; 0.9 fixes that.
    """
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    for count in filters:
        x = keras.layers.Conv2D(count, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum)(x)
    x = keras.layers.Flatten(name="flatten")(x)  # the Grad-CAM layer (Recipe.explain)
    x = keras.layers.Dropout(dropout_rate)(x)
    x = keras.layers.Dense(dense_units, activation="relu")(x)
    return keras.Model(inputs, [_abnormal_head(x), _body_part_head(x, num_body_parts)], name="mura_multitask_cnn")


def build_mura_binary_cnn(input_shape=(224, 224, 1)) -> keras.Model:
    """§5.1: the CIFAR-10 CNN2 on 1-channel X-rays with a sigmoid head (25,830,369 parameters)."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    for count, dropout_rate in ((32, 0.25), (64, 0.25)):
        x = keras.layers.Conv2D(count, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Conv2D(count, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Dropout(dropout_rate)(x)
    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dropout(0.4)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, _abnormal_head(x), name="mura_binary_cnn")


def build_mura_transfer_binary(
    input_shape=(224, 224, 3),
    backbone: str = "resnet50",
    pooling: str = "avg",
    dropout_rate: float = 0.5,
    weights: str | None = "imagenet",
    source_scaling: bool = False,
) -> keras.Model:
    """§5.2 / §5.5 / §5.6: frozen ImageNet backbone -> global pooling -> Dropout -> sigmoid.

    ResNet50 GAP + Dropout(0.5) is §5.2; ResNet50 GMP + Dropout(0.3) is §5.6; EfficientNetB0
    GAP/GMP + Dropout(0.3) is §5.5.
    """
    inputs = keras.Input(input_shape, name="image")
    _, features = _frozen_backbone(backbone, inputs, weights, source_scaling)
    x = POOLING[pooling]()(features)
    x = keras.layers.Dropout(dropout_rate)(x)
    return keras.Model(inputs, _abnormal_head(x), name=f"mura_{backbone}_{pooling}")


def build_mura_efficientnet_multitask(
    input_shape=(244, 244, 3), num_body_parts: int = 7, weights: str | None = "imagenet", source_scaling: bool = False
) -> keras.Model:
    """§5.4: frozen EfficientNetB0 (pooling avg) -> Dropout(0.3) -> abnormal + body-part heads.

    The first source version used a 1-unit *softmax* binary head (constant output); this is the
    fixed sigmoid head of the later version.
    """
    inputs = keras.Input(input_shape, name="image")
    _, x = _frozen_backbone("efficientnetb0", inputs, weights, source_scaling, pooling="avg")
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inputs, [_abnormal_head(x), _body_part_head(x, num_body_parts)], name="mura_efficientnetb0_multitask")


def build_mura_inception_hybrid(
    input_shape=(299, 299, 3), num_body_parts: int = 7, version: int = 2, weights: str | None = "imagenet"
) -> keras.Model:
    """§5.7: InceptionV3 image features joined with the body part, then a sigmoid head.

    v1: GMP features + Embedding(num_body_parts + 1, 16) of an integer body part ("body_part",
    shape (1,); index num_body_parts = unknown). v2: GAP features + a one-hot body part of width
    num_body_parts + 1. Both: Dense(128, relu) -> Dropout(0.3) -> Dense(1, sigmoid).
    """
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version}")
    image = keras.Input(input_shape, name="image")
    _, features = _frozen_backbone("inceptionv3", image, weights, source_scaling=False)
    if version == 1:
        body_part = keras.Input((1,), name="body_part", dtype="int32")
        image_features = keras.layers.GlobalMaxPooling2D()(features)
        part_features = keras.layers.Flatten()(keras.layers.Embedding(num_body_parts + 1, 16)(body_part))
    else:
        body_part = keras.Input((num_body_parts + 1,), name="body_part")
        image_features = keras.layers.GlobalAveragePooling2D()(features)
        part_features = body_part
    x = keras.layers.Concatenate()([image_features, part_features])
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model([image, body_part], _abnormal_head(x), name=f"mura_inceptionv3_hybrid_v{version}")
