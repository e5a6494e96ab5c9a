"""Source facts the recipes and the model builders both use, in a module without TensorFlow, so
the registry (`visionzoo list`, `--help`, argument errors) can read them without importing it."""

BLOODCELL_FINE_TUNE_FROM = "expanded_conv_12/depthwise"  # the blood-cell source's cut: layers from here on train (§6)
VGG16_FINE_TUNE_FROM = "block5_conv1"  # the VGG16 fine-tuning source's first trained layer
LENET_OUTPUT_UNITS = 84  # the LeNet source's softmax width (for 10 digits)
# the CIFAR-10 ablation variants' parameter counts as the source printed them (§3.4)
CIFAR_ABLATION_PARAMETERS = {
    "base": 116_010, "a": 231_658, "b": 89_258, "c": 25_898, "d": 131_882, "e": 93_482, "f": 47_370,
    "g": 103_658, "h": 231_786, "i": 462_410, "j": 231_658, "k": 130_474, "l": 75_114,
}
