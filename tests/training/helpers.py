"""Shared by the registry-generated tests: build any recipe at test size with fake data."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from visionzoo.training.data.common import Examples
from visionzoo.training.recipe import Recipe


@pytest.fixture
def release_models():
    """Drop Keras's global state after a test: the zoo's giants (up to 218M parameters, and
    ~11 GB of tf2onnx working memory for ZFNet) must not pile up in one pytest process.
    Modules that build many models use it with `pytestmark = pytest.mark.usefixtures(...)`."""
    yield
    import tf_keras as keras

    keras.backend.clear_session()
    gc.collect()


def small_shape(recipe: Recipe) -> tuple[int, int, int]:
    return tuple(recipe.test_input_shape or recipe.image_spec.shape)


def build_small(recipe: Recipe):
    """The recipe's model at its test size, without downloading ImageNet weights."""
    options = dict(recipe.model_options)
    if "weights" in options:
        options["weights"] = None
    return recipe.builder(input_shape=small_shape(recipe), **options)


def class_names_for(recipe: Recipe, model) -> dict[str, list[str]]:
    """Class names matching the model's output widths (as a loader would provide them)."""
    names = {}
    for output, tensor in zip(model.output_names, model.outputs):
        width = int(tensor.shape[-1])
        target = {"probabilities": getattr(recipe.task, "target", "label"), "abnormal": "abnormal"}.get(output, output)
        names[target] = [f"class_{k}" for k in range(max(width, 2))]
    if recipe.task.kind == "hybrid":
        width = int(model.inputs[1].shape[-1]) - 1 if recipe.task.one_hot_body_part else 7
        names["body_part"] = [f"part_{k}" for k in range(width)]
    return names


def fake_examples(recipe: Recipe, model, count: int = 4, seed: int = 0) -> tuple[Examples, dict]:
    """Random pixels and valid random targets for every output of `model`."""
    rng = np.random.default_rng(seed)
    shape = small_shape(recipe)
    names = class_names_for(recipe, model)
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    targets = {}
    for target, labels in names.items():
        if recipe.task.kind == "segmentation" and target == recipe.task.target:
            targets[target] = rng.integers(0, len(labels), size=(count, *shape[:2]), dtype=np.int64).astype(np.uint8)
        else:
            targets[target] = rng.integers(0, len(labels), size=count, dtype=np.int64)
    ids = np.array([f"fake#{i}" for i in range(count)])
    return Examples(images=images, targets=targets, ids=ids), names


def calibrate_batch_norm(model, images: np.ndarray) -> None:
    """Set every BatchNormalization's moving statistics from one batch, as training would.

    Untrained deep nets in inference mode (moving mean 0, variance 1) can collapse to a constant
    output, which export rightly refuses; a trained model never looks like that.
    """
    import tf_keras as keras

    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    for layer in layers:  # frozen BatchNormalization ignores training=True, so unfreeze for a moment
        layer.momentum, layer.trainable = 0.0, True
    model(images.astype(np.float32), training=True)
    for layer, (momentum, trainable) in zip(layers, saved):
        layer.momentum, layer.trainable = momentum, trainable


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
