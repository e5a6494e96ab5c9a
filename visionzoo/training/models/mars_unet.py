"""Mars terrain segmenters from GiorCocc/Deep-Learning-Uni-Projects (seed-models.md §7).

Reported: EnhancedDualScaleUNet ("Advanced Bottleneck", §7.3) 0.5128 validation mean IoU
(background excluded) on the AN2DL set, 2,600,840 parameters; the big-rock specialist U-Net
(§7.4, 359,493 parameters) 0.7474 on its own synthetic split; the 0.7/0.3 ensemble (§7.5) 0.5272.

Input: (64, 128, 1) grayscale pixels in 0..255 named "image" (scaled by 1/255 in the graph).
Output "probabilities": (64, 128, 5) per-pixel softmax over background, soil, bedrock, sand,
big rock. Every module of §7.2 is a small function below; no custom layers are needed.
"""

from __future__ import annotations

import tf_keras as keras

from .layers import apply_scaling

NUM_CLASSES = 5


def residual_block(x, filters: int, kernel_size: int = 3, stack: int = 2, bn_momentum: float = 0.99):
    """2 x [Conv(he_normal) -> BN -> ReLU] plus a (1x1-projected if needed) shortcut, then ReLU."""
    shortcut = x if x.shape[-1] == filters else keras.layers.Conv2D(filters, 1, padding="same")(x)
    for _ in range(stack):
        x = keras.layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer="he_normal")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum)(x)
        x = keras.layers.ReLU()(x)
    return keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))


def squeeze_excitation(x, ratio: int = 16):
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D()(x)
    s = keras.layers.Dense(channels // ratio, activation="relu", use_bias=False)(s)
    s = keras.layers.Dense(channels, activation="sigmoid", use_bias=False)(s)
    return keras.layers.Multiply()([x, keras.layers.Reshape((1, 1, channels))(s)])


def dilated_inception(x, filters: int):
    """Four parallel linear branches of filters/4: 1x1, and 3x3 at dilation 1, 3, 5; concat; 1x1."""
    branch = filters // 4
    branches = [keras.layers.Conv2D(branch, 1, padding="same")(x)]
    branches += [keras.layers.Conv2D(branch, 3, padding="same", dilation_rate=rate)(x) for rate in (1, 3, 5)]
    return keras.layers.Conv2D(filters, 1)(keras.layers.Concatenate()(branches))


def global_context(x):
    """GAP -> Dense(C, relu) -> Dense(C, sigmoid) -> channel-wise rescale (no bottleneck)."""
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D()(x)
    s = keras.layers.Dense(channels, activation="relu")(s)
    s = keras.layers.Dense(channels, activation="sigmoid")(s)
    return keras.layers.Multiply()([x, keras.layers.Reshape((1, 1, channels))(s)])


def cellular_automata(x, steps: int = 5, filters: int = 128):
    """`steps` rounds of x = ReLU(x + Conv(filters, 3x3, relu)(x)), separate weights per round."""
    for _ in range(steps):
        neighbours = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.ReLU()(keras.layers.Add()([x, neighbours]))
    return x


def cross_branch_attention(macro, micro):
    """Each branch is gated by the other's 1x1 sigmoid attention map, summed, then 1x1-projected."""
    channels = max(macro.shape[-1], micro.shape[-1])
    macro_features = keras.layers.Conv2D(channels, 1)(macro)
    micro_features = keras.layers.Conv2D(channels, 1)(micro)
    macro_attention = keras.layers.Conv2D(1, 1, activation="sigmoid")(macro_features)
    micro_attention = keras.layers.Conv2D(1, 1, activation="sigmoid")(micro_features)
    mixed = keras.layers.Add()(
        [keras.layers.Multiply()([macro_features, micro_attention]), keras.layers.Multiply()([micro_features, macro_attention])]
    )
    return keras.layers.Conv2D(channels, 1)(mixed)


def adaptive_fusion(macro, micro, cross):
    """w = sigmoid(1x1(concat)); fused = macro' * (1 - w) + micro * w + cross * w."""
    macro_features = keras.layers.Conv2D(micro.shape[-1], 1)(macro)
    weight = keras.layers.Conv2D(1, 1, activation="sigmoid")(keras.layers.Concatenate()([macro_features, micro, cross]))
    keep = keras.layers.Rescaling(-1.0, offset=1.0)(weight)  # 1 - w
    return keras.layers.Add()(
        [
            keras.layers.Multiply()([macro_features, keep]),
            keras.layers.Multiply()([micro, weight]),
            keras.layers.Multiply()([cross, weight]),
        ]
    )


def _unet_branch(x, filters: tuple[int, int, int], bottleneck, bn_momentum: float):
    block = lambda inputs, count: residual_block(inputs, count, bn_momentum=bn_momentum)
    skip_1 = block(x, filters[0])
    skip_2 = block(keras.layers.MaxPooling2D()(skip_1), filters[1])
    x = bottleneck(dilated_inception(keras.layers.MaxPooling2D()(skip_2), filters[2]))
    x = block(keras.layers.Concatenate()([keras.layers.UpSampling2D()(x), skip_2]), filters[1])
    return block(keras.layers.Concatenate()([keras.layers.UpSampling2D()(x), skip_1]), filters[0])


def _classifier(x, l2: float = 1e-4):
    return keras.layers.Conv2D(
        NUM_CLASSES, 1, padding="same", activation="softmax",
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
        name="probabilities", dtype="float32",
    )(x)


def build_mars_dual_unet(input_shape=(64, 128, 1), bn_momentum: float = 0.99) -> keras.Model:
    """§7.3 EnhancedDualScaleUNet: a macro U-Net (32/64/128, SE + cellular-automata bottleneck)
    and a micro U-Net (64/128/256, SE + global-context bottleneck), fused by cross-branch
    attention and adaptive fusion, then a 1x1 softmax classifier.

    `bn_momentum`: Keras's 0.99 (the source's) assumes many steps; with ~100 steps per epoch the
    moving statistics lag for hundreds of steps and inference-mode predictions collapse; 0.9 fixes it.
    """
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    macro = _unet_branch(x, (32, 64, 128), lambda b: cellular_automata(squeeze_excitation(b), filters=b.shape[-1]), bn_momentum)
    micro = _unet_branch(x, (64, 128, 256), lambda b: global_context(squeeze_excitation(b)), bn_momentum)
    cross = cross_branch_attention(macro, micro)
    return keras.Model(inputs, _classifier(adaptive_fusion(macro, micro, cross)), name="mars_dual_unet")


def _layer_norm_block(x, filters: int):
    for _ in range(2):
        x = keras.layers.Conv2D(filters, 3, padding="same")(x)
        x = keras.layers.LayerNormalization()(x)
        x = keras.layers.ReLU()(x)
    return x


def build_mars_bigrock_unet(input_shape=(64, 128, 1)) -> keras.Model:
    """§7.4 big-rock specialist: plain 2-level U-Net with LayerNorm blocks and a dilated-inception
    + SE + global-context bottleneck (the source's unused block(128) is left out: it never
    reached the output, so it had no parameters in the printed count either)."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    skip_1 = _layer_norm_block(x, 32)
    skip_2 = _layer_norm_block(keras.layers.MaxPooling2D()(skip_1), 64)
    x = global_context(squeeze_excitation(dilated_inception(keras.layers.MaxPooling2D()(skip_2), 128)))
    x = _layer_norm_block(keras.layers.Concatenate()([keras.layers.UpSampling2D()(x), skip_2]), 64)
    x = _layer_norm_block(keras.layers.Concatenate()([keras.layers.UpSampling2D()(x), skip_1]), 32)
    return keras.Model(inputs, _classifier(x, l2=0.0), name="mars_bigrock_unet")


def build_mars_ensemble(input_shape=(64, 128, 1), main_weight: float = 0.7, main=None, specialist=None,
                        bn_momentum: float = 0.99) -> keras.Model:
    """§7.5: main_weight * dual U-Net + (1 - main_weight) * big-rock U-Net probabilities; both
    sub-models stay trainable. Pass trained `main` / `specialist` models to combine them.
    `bn_momentum` is the dual U-Net's (see `build_mars_dual_unet`)."""
    main = main or build_mars_dual_unet(input_shape, bn_momentum=bn_momentum)
    specialist = specialist or build_mars_bigrock_unet(input_shape)
    inputs = keras.Input(input_shape, name="image")
    weighted = [
        keras.layers.Rescaling(main_weight, name="main_weight")(main(inputs)),
        keras.layers.Rescaling(1.0 - main_weight, name="specialist_weight")(specialist(inputs)),
    ]
    outputs = keras.layers.Add(name="probabilities", dtype="float32")(weighted)
    return keras.Model(inputs, outputs, name="mars_ensemble")
