"""VGG16 from ManasviJaipurkar/Deep-Learning-Study (seed-models.md §4.1-§4.3).

Reported:
- From scratch (§4.1, `CA/6_CNN_VGGnet_Image Classification.ipynb`): defined and saved untrained;
  no result. The notebook's classification demo used Keras's ImageNet VGG16 instead.
- Feature extraction on dogs vs cats at 150x150 (§4.2): val accuracy 0.9152 (best 0.9194).
- Fine tuning block 5 (§4.3): val accuracy 0.9572 (val loss 0.1103), train 0.9795.

From scratch: 13 conv 3x3 same relu in blocks 64,64 | 128,128 | 256x3 | 512x3 | 512x3, each
block followed by MaxPool2, Flatten, Dense(4096, relu) x2, Dense(1000, softmax). The source's input
was (224, 224, 1) - grey input for an ImageNet-style network, 138,356,392 parameters; the registry's
`vgg16_scratch` uses RGB (138,357,544, Keras's VGG16 count) and `vgg16_scratch_grayscale` keeps
the source's one channel.

Transfer (§4.2/§4.3): Keras VGG16(include_top=False) at 150x150 -> Flatten(8192) -> Dense(256, relu)
-> Dense(1, sigmoid), P(dog). Feature extraction freezes the whole base (2,097,665 trainable of
16,812,353); fine tuning also trains block5_conv1..block5_pool (9,177,089 trainable: 7,079,424 in
the base, as printed, plus the head).

The source's bug: it fed the ImageNet VGG16 pixels divided by 255 (ImageDataGenerator
rescale=1/255), while those weights expect Caffe preprocessing (BGR, ImageNet means subtracted).
Default here: Caffe preprocessing in the graph; `source_scaling=True` restores /255.
`weights`: "imagenet" (downloads), None (random, for tests and offline machines), or a path to a
local no-top VGG16 weights file.
"""

from __future__ import annotations

import tf_keras as keras

from .layers import apply_scaling
from .source_facts import VGG16_FINE_TUNE_FROM

BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def build_vgg16(input_shape=(224, 224, 3), num_classes: int = 1000, dense_units: int = 4096) -> keras.Model:
    """§4.1: VGG16 from scratch (pixels / 255 in the graph)."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")
    for block, (filters, convs) in enumerate(BLOCKS, start=1):
        for index in range(1, convs + 1):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="vgg16")


def build_vgg16_transfer(
    input_shape=(150, 150, 3),
    weights: str | None = "imagenet",
    fine_tune_from: str | None = None,
    dense_units: int = 256,
    source_scaling: bool = False,
) -> keras.Model:
    """§4.2 (fine_tune_from=None: frozen base) and §4.3 (fine_tune_from="block5_conv1").

    The trainable flags are set before compiling, as the source did; BatchNormalization does not
    occur in VGG16, so freezing needs no inference-mode care.
    """
    base = keras.applications.VGG16(include_top=False, weights=weights, input_shape=tuple(input_shape))
    if fine_tune_from is None:
        base.trainable = False
    else:
        names = [layer.name for layer in base.layers]
        if fine_tune_from not in names:
            raise ValueError(f"fine_tune_from={fine_tune_from!r} is not a VGG16 layer; e.g. {VGG16_FINE_TUNE_FROM}")
        base.trainable = True
        start = names.index(fine_tune_from)
        for index, layer in enumerate(base.layers):
            layer.trainable = index >= start
    inputs = keras.Input(input_shape, name="image")
    x = base(apply_scaling(inputs, "unit" if source_scaling else "caffe"))
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="probabilities", dtype="float32")(x)
    suffix = "fine_tuning" if fine_tune_from else "feature_extraction"
    return keras.Model(inputs, outputs, name=f"vgg16_{suffix}")
