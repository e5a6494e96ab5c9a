"""ResNets of ManasviJaipurkar/Deep-Learning-Study (seed-models.md §3.8,
`CA/7_CNN_Resnet_image_classification.pdf`, all PyTorch), ported.

Reported:
- torchvision `resnet50(pretrained=False)` on CIFAR-10: no accuracy printed (the PDF stops at
  epoch 17 of 50 with a running loss of about 0.85).
- The custom bottleneck ResNet on CIFAR-100: val(=test) accuracy 0.4732 after 5 epochs.

ResNet50 (`build_resnet50`): torchvision's layout, unchanged for 32x32 inputs as the source used it:
7x7/2 stem without bias -> BN -> ReLU -> MaxPool(3, s2, pad 1) -> bottleneck stages [3, 4, 6, 3]
(1x1 -> 3x3 with the stride (ResNet v1.5) -> 1x1 x4; projection shortcut on each stage's first
block) -> global average pool -> Linear. Trainable parameters equal torchvision's (23,528,522
with 10 classes). PyTorch's explicit paddings are kept, BN momentum 0.1 / eps 1e-5 translated.

Custom ResNet (`build_resnet_bottleneck`): stem Conv64 3x3 -> BN -> ReLU -> MaxPool(3, s2), then
stages 64->256 (4 blocks), 128->512 (5), 256->1024 (7), each block 1x1 (to the stage's width) ->
BN -> ReLU -> 3x3 (to its output width, with the stride) -> BN, a 1x1 conv + BN shortcut where the
shape changes, add, ReLU; AvgPool(4) -> Linear. The printed notebook gives the layer sequence, not
every argument: strides 1/2/2 are inferred from AvgPool(4) closing a 32x32 input at 4x4.

PyTorch's `weight_decay` adds decay * w to every parameter's gradient (coupled, before momentum /
Adam moments). `weight_decay` here is that: an L2 penalty of decay/2 * |w|^2 on every kernel, bias,
BN gamma and beta (Keras's optimizer `weight_decay` is decoupled, which is a different algorithm).
"""

from __future__ import annotations

import tf_keras as keras

from .layers import apply_scaling

# torchvision resnet50 stages: (bottleneck width, blocks, first stride); output = width * 4
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
# the custom network: (width, output channels, blocks, first stride)
BOTTLENECK_STAGES = ((64, 256, 4, 1), (128, 512, 5, 2), (256, 1024, 7, 2))
CIFAR100_MEAN = (0.5074, 0.4867, 0.4411)
CIFAR100_STD = (0.2011, 0.1987, 0.2025)
BN = {"momentum": 0.9, "epsilon": 1e-5}  # PyTorch BatchNorm2d defaults


def _l2(weight_decay: float):
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def _conv(x, filters: int, kernel: int, strides: int, weight_decay: float, name: str):
    """Conv without bias, padded like PyTorch (kernel // 2 on every side)."""
    if kernel > 1 and strides > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                               kernel_regularizer=_l2(weight_decay), name=name)(x)


def _bn(x, weight_decay: float, name: str):
    return keras.layers.BatchNormalization(gamma_regularizer=_l2(weight_decay), beta_regularizer=_l2(weight_decay),
                                           name=name, **BN)(x)


def _head(x, num_classes: int, weight_decay: float):
    return keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=_l2(weight_decay),
                              bias_regularizer=_l2(weight_decay), name="probabilities", dtype="float32")(x)


def _stem_pool(x, name: str):
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name=name)(x)


def _bottleneck(x, width: int, strides: int, project: bool, weight_decay: float, name: str):
    """torchvision Bottleneck: 1x1 -> BN -> ReLU -> 3x3/s -> BN -> ReLU -> 1x1 (x4) -> BN, + shortcut."""
    shortcut = x
    if project:
        shortcut = _conv(x, width * 4, 1, strides, weight_decay, f"{name}_downsample_conv")
        shortcut = _bn(shortcut, weight_decay, f"{name}_downsample_bn")
    y = keras.layers.ReLU(name=f"{name}_relu1")(_bn(_conv(x, width, 1, 1, weight_decay, f"{name}_conv1"), weight_decay, f"{name}_bn1"))
    y = keras.layers.ReLU(name=f"{name}_relu2")(_bn(_conv(y, width, 3, strides, weight_decay, f"{name}_conv2"), weight_decay, f"{name}_bn2"))
    y = _bn(_conv(y, width * 4, 1, 1, weight_decay, f"{name}_conv3"), weight_decay, f"{name}_bn3")
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def build_resnet50(input_shape=(32, 32, 3), num_classes: int = 10, weight_decay: float = 1e-4) -> keras.Model:
    """torchvision resnet50 (random init) for CIFAR-10; Normalize(0.5, 0.5) = [-1, 1] scaling."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "symmetric")
    x = _conv(x, 64, 7, 2, weight_decay, "conv1")
    x = keras.layers.ReLU(name="relu1")(_bn(x, weight_decay, "bn1"))
    x = _stem_pool(x, "maxpool")
    for stage, (width, blocks, strides) in enumerate(RESNET50_STAGES, start=1):
        for block in range(blocks):
            x = _bottleneck(x, width, strides if block == 0 else 1, block == 0, weight_decay, f"layer{stage}_{block}")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(inputs, _head(x, num_classes, weight_decay), name="resnet50")


def _custom_block(x, width: int, out_channels: int, strides: int, weight_decay: float, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = _bn(_conv(x, out_channels, 1, strides, weight_decay, f"{name}_shortcut_conv"), weight_decay, f"{name}_shortcut_bn")
    y = _bn(_conv(x, width, 1, 1, weight_decay, f"{name}_conv1"), weight_decay, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _bn(_conv(y, out_channels, 3, strides, weight_decay, f"{name}_conv2"), weight_decay, f"{name}_bn2")
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def build_resnet_bottleneck(input_shape=(32, 32, 3), num_classes: int = 100, weight_decay: float = 1e-5) -> keras.Model:
    """The custom bottleneck ResNet for CIFAR-100, with its per-channel Normalize in the graph."""
    inputs = keras.Input(input_shape, name="image")
    # Normalize(mean, std) of 0..1 pixels as one per-channel affine map of 0..255 pixels (constants, not variables)
    x = keras.layers.Rescaling([1.0 / (255.0 * s) for s in CIFAR100_STD], offset=[-m / s for m, s in zip(CIFAR100_MEAN, CIFAR100_STD)],
                               name="normalize")(inputs)
    x = _conv(x, 64, 3, 1, weight_decay, "stem_conv")
    x = keras.layers.ReLU(name="stem_relu")(_bn(x, weight_decay, "stem_bn"))
    x = _stem_pool(x, "stem_pool")
    for stage, (width, out_channels, blocks, strides) in enumerate(BOTTLENECK_STAGES, start=1):
        for block in range(blocks):
            x = _custom_block(x, width, out_channels, strides if block == 0 else 1, weight_decay, f"stage{stage}_{block}")
    pool = min(4, int(x.shape[1]), int(x.shape[2]))  # AvgPool(4) closes the 4x4 map of a 32x32 input
    x = keras.layers.AveragePooling2D(pool, name="avgpool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _head(x, num_classes, weight_decay), name="resnet_bottleneck")
