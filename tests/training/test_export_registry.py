"""Export for all: every registered model, built at its test size, exports to SavedModel + ONNX
and passes the parity check (visionzoo.training.export.export_model).

Tiers (pytest marks), so `make test` stays inside its time budget on 2 cores:
- default: every model with a light graph, which is most of the zoo (a few seconds each);
- `slow` (`make test-slow`): `very_large` models (ZFNet and VGG16-from-scratch as printed), and
  models whose deep ImageNet-style backbone makes ONNX conversion take 40-100 s on 2 cores
  (DEEP_GRAPHS); the served ones among them are exported in the default suite by test_export.py.
"""

import dataclasses
import json

import numpy as np
import pytest
import tf_keras as keras

from visionzoo.training import export
from visionzoo.training.registry import RECIPES

from .helpers import calibrate_batch_norm, fake_examples, release_models, small_shape  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("release_models")

DATA_CLASSES = 10  # what a loader reports for the classic datasets; 1000-way heads of untrained nets barely vary
DEEP_GRAPHS = {
    "mura_resnet50_gap", "mura_resnet50_gmp", "mura_efficientnetb0_binary", "mura_efficientnetb0_binary_gmp",
    "mura_efficientnetb0_multitask", "mura_inceptionv3_hybrid_v1", "mura_inceptionv3_hybrid_v2", "mars_ensemble",
    "resnet50_cifar10", "resnet_bottleneck_cifar100",
    "bloodcell_mobilenetv3", "mars_dual_unet",  # served: test_export.py exports them in the default suite
}
# Untrained EfficientNetB0s with BatchNorm calibrated on one batch are ill-conditioned on the exporter's
# synthetic probes: on its smooth random images ONNX and Keras differed by 6.2e-5 for the GMP head, too
# close to export.PARITY_TOLERANCE (1e-4) to be stable, against 2.2e-6 on the 32 calibration images.
# So these prove parity on their calibration images, passed as real examples; the tolerance stays.
PARITY_ON_CALIBRATION_IMAGES = {"mura_efficientnetb0_binary", "mura_efficientnetb0_binary_gmp", "mura_efficientnetb0_multitask"}


def _tier(name: str):
    marks = [pytest.mark.slow] if RECIPES[name].very_large or name in DEEP_GRAPHS else []
    return pytest.param(name, marks=marks, id=name)


NAMES = [_tier(name) for name in sorted(RECIPES)]


def build_at_test_size(recipe):
    """At the test input size, without ImageNet downloads, with the class count from the data."""
    options = dict(recipe.model_options)
    if "weights" in options:
        options["weights"] = None
    if recipe.num_classes_option and recipe.num_classes_option[0] == "num_classes":
        options["num_classes"] = DATA_CLASSES
    return recipe.builder(input_shape=small_shape(recipe), **options)


def calibrate(model, images: np.ndarray) -> None:
    """BatchNorm statistics from one batch, also inside backbones the model calls with
    training=False (frozen ImageNet backbones): those get the tensors they are fed."""
    calibrate_batch_norm(model, images)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            fed = keras.Model(model.inputs, layer.inbound_nodes[-1].input_tensors)(images.astype(np.float32))
            calibrate_batch_norm(layer, np.asarray(fed))


def test_tiers_name_registered_models_and_most_models_export_by_default():
    assert DEEP_GRAPHS | PARITY_ON_CALIBRATION_IMAGES <= set(RECIPES)
    assert sum(not param.marks for param in NAMES) >= 30


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_model_exports_with_parity(name, tmp_path):
    recipe = RECIPES[name]
    # The same random weights whichever tests ran before in this process (or on this xdist worker): an
    # untrained VGG16 from scratch answers nearly alike for every input (output spread 0.9-2.5e-6 by seed,
    # against export.MIN_SPREAD 1e-6), so unseeded it passed or failed by the order the tests ran in.
    keras.utils.set_random_seed(0)
    model = build_at_test_size(recipe)
    examples, class_names = fake_examples(recipe, model, count=32)  # BN statistics from 32 images, not a handful
    if len(model.inputs) == 1:
        calibrate(model, examples.images)
    image_spec, real_examples = recipe.image_spec, None
    if name in PARITY_ON_CALIBRATION_IMAGES:  # golden files go through preprocessing at image_spec's size
        height, width, _ = small_shape(recipe)
        image_spec, real_examples = dataclasses.replace(recipe.image_spec, height=height, width=width), examples
    folder = export.export_model(
        model, name, tmp_path, image_spec=image_spec, task_kind=recipe.task.kind,
        output_labels=recipe.task.output_labels(class_names), real_examples=real_examples,
    )
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parity"]["passed"]
    if real_examples is not None:
        assert metadata["parity"]["inputs"] == "real images"
    assert metadata["inputs"][0]["shape"] == [-1, *small_shape(recipe)]
    assert {output["name"] for output in metadata["outputs"]} == set(model.output_names)
    for report in metadata["parity"]["outputs"].values():
        assert max(report["max_abs_diff_onnx"], report["max_abs_diff_savedmodel"]) <= export.PARITY_TOLERANCE
