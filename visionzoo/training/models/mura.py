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

from .layers import apply_scaling, load_matching_weights

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


def _residual_block(x, filters: int, strides: int, bn_momentum: float, name: str):
    """Two 3x3 convolutions with BatchNormalization plus the shortcut (a 1x1 projection where the
    shape changes). The second BatchNormalization starts at gamma 0, so each block begins as the
    identity (Goyal et al. 2017), which steadies training from scratch."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides, use_bias=False, name=f"{name}_project")(x)
        shortcut = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_project_bn")(shortcut)
    y = keras.layers.Conv2D(filters, 3, strides, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.ReLU(name=f"{name}_relu1")(keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn1")(y))
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(momentum=bn_momentum, gamma_initializer="zeros", name=f"{name}_bn2")(y)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def _residual_body(inputs, width: int, blocks_per_stage: int, bn_momentum: float):
    """Stem Conv(width, 5x5, stride 2) -> BN -> ReLU -> MaxPool(3, stride 2), four stages of
    `blocks_per_stage` residual blocks at width, 2x, 4x and 8x (stride 2 from the second stage on),
    then GlobalAveragePooling2D ("pool"). Layer names are fixed, so weights move between the X-ray
    network and its CIFAR-10 pretraining (`load_matching_weights`)."""
    x = apply_scaling(inputs, "unit")
    x = keras.layers.Conv2D(width, 5, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x))
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, multiple in enumerate((1, 2, 4, 8), start=1):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _residual_block(x, width * multiple, strides, bn_momentum, f"stage{stage}_{block}")
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)


def build_mura_multitask_resnet(
    input_shape=(320, 320, 3),
    num_body_parts: int = 7,
    width: int = 32,
    blocks_per_stage: int = 1,
    dropout_rate: float = 0.3,
    bn_momentum: float = 0.9,
    weights: str | None = None,
) -> keras.Model:
    """Beyond the sources: the multitask CNN's two heads on a compact residual network that pools
    globally, for small X-ray sets.

    `_residual_body` ("pool" is the Grad-CAM layer), Dropout, then the abnormal (sigmoid) and
    body-part (softmax) heads of §5.3. The source's Flatten + Dense(128) head ties every feature
    to a position in the 224x224 frame (12.8M of its 12.9M weights); pooling globally makes the
    answers follow the anatomy wherever and at whatever size it appears, with 1.2M weights at
    width 32.

    `weights`: None starts from random weights; a path (a run folder, a .keras or .h5 file) starts
    every layer that model shares by name and shape from its weights, e.g. the body pretrained on
    CIFAR-10 (`xray_trunk_cifar10`), the stand-in where ImageNet weights cannot be fetched.
    """
    inputs = keras.Input(input_shape, name="image")
    x = _residual_body(inputs, width, blocks_per_stage, bn_momentum)
    x = keras.layers.Dropout(dropout_rate)(x)
    model = keras.Model(inputs, [_abnormal_head(x), _body_part_head(x, num_body_parts)], name="mura_multitask_resnet")
    if weights:
        load_matching_weights(model, weights)
    return model


def build_xray_trunk_cifar10(
    input_shape=(96, 96, 3),
    num_classes: int = 10,
    width: int = 32,
    blocks_per_stage: int = 1,
    dropout_rate: float = 0.3,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """`build_mura_multitask_resnet`'s body with one softmax head, to pretrain on CIFAR-10 in grey:
    the starting weights of the X-ray network on machines that cannot fetch ImageNet weights."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Dropout(dropout_rate)(_residual_body(inputs, width, blocks_per_stage, bn_momentum))
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="xray_trunk_cifar10")


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
