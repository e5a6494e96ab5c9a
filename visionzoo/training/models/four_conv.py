"""The 4-conv MNIST / Fashion-MNIST network of ManasviJaipurkar/Deep-Learning-Study, ported from
PyTorch (seed-models.md §1.1, `CA/1_CNN_MNIST_Digit_Recognition.ipynb`, and §2.3,
`CA/2_CNN_Fashion_MNIST.ipynb`).

Reported: MNIST 9793/10000 test (final of 50 epochs; best 9805), Fashion-MNIST 8057/10000 (10 epochs).

    Conv(10, 5x5) -> MaxPool2 -> ReLU -> Conv(20, 5x5) -> Dropout2d(0.5) -> MaxPool2 -> ReLU ->
    Conv(40, 3x3) -> MaxPool2 -> ReLU -> Conv(80, 1x1) -> ReLU -> Flatten(80) -> Linear(50) -> ReLU ->
    Dropout(0.5) -> Linear(10) -> softmax                                   (20,360 parameters)

The source's bug: `forward` ends in softmax and the result goes into `nn.CrossEntropyLoss`, which
applies log-softmax again (a double softmax: gradients shrink and the loss cannot fall below about
1.46). Here the network applies softmax once and trains with cross-entropy on it. The faithful
version stays one flag away: `source_double_softmax=True` adds the second softmax inside the graph,
so Keras's cross-entropy on "probabilities" computes exactly the source's loss (the arg-max, and so
the accuracy, is the same either way).

`torch_init=True` (default) initialises like PyTorch's Conv2d/Linear defaults (uniform within
+-1/sqrt(fan_in) for weights and biases) rather than Keras's glorot/zeros, so the port starts where
the source started. Dropout2d drops whole feature maps: SpatialDropout2D.
"""

from __future__ import annotations

import math

import tf_keras as keras

from .layers import apply_scaling


def _torch_default(fan_in: int) -> dict:
    """PyTorch's kaiming_uniform(a=sqrt(5)) weights and uniform bias, both +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return {
        "kernel_initializer": keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        "bias_initializer": keras.initializers.RandomUniform(-bound, bound),
    }


def build_four_conv(
    input_shape=(28, 28, 1),
    num_classes: int = 10,
    dropout_rate: float = 0.5,
    torch_init: bool = True,
    source_double_softmax: bool = False,
) -> keras.Model:
    """The trained `CNN` / `NeuralNetowork` class of §1.1 and §2.3 (same network for both)."""
    inputs = keras.Input(input_shape, name="image")
    x = apply_scaling(inputs, "unit")  # ToTensor(): pixels / 255, no mean/std
    channels = input_shape[-1]

    def conv(x, filters, kernel, name):
        nonlocal channels
        init = _torch_default(channels * kernel * kernel) if torch_init else {}
        channels = filters
        return keras.layers.Conv2D(filters, kernel, name=name, **init)(x)

    x = conv(x, 10, 5, "conv_1")
    x = keras.layers.ReLU(name="relu_1")(keras.layers.MaxPooling2D(name="pool_1")(x))
    x = conv(x, 20, 5, "conv_2")
    x = keras.layers.SpatialDropout2D(dropout_rate, name="dropout2d")(x)
    x = keras.layers.ReLU(name="relu_2")(keras.layers.MaxPooling2D(name="pool_2")(x))
    x = conv(x, 40, 3, "conv_3")
    x = keras.layers.ReLU(name="relu_3")(keras.layers.MaxPooling2D(name="pool_3")(x))
    x = keras.layers.ReLU(name="relu_4")(conv(x, 80, 1, "conv_4"))
    x = keras.layers.Flatten(name="flatten")(x)
    flat = int(x.shape[-1])
    x = keras.layers.Dense(50, activation="relu", name="fc_1", **(_torch_default(flat) if torch_init else {}))(x)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    head = _torch_default(50) if torch_init else {}
    if source_double_softmax:
        x = keras.layers.Dense(num_classes, activation="softmax", name="fc_2_softmax", **head)(x)
        outputs = keras.layers.Activation("softmax", name="probabilities", dtype="float32")(x)
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32", **head)(x)
    return keras.Model(inputs, outputs, name="four_conv_double_softmax" if source_double_softmax else "four_conv")
