"""The classic zoo's models and recipes: the sources' parameter counts, the bug flags (double
softmax, 84-way LeNet head, /255 VGG scaling), continuation, weight decay, augmentations, the
`visionzoo list` grouping, and a smoke run of representative recipes on synthetic data in their
real formats. (Every model also gets the registry-generated tests of test_models.py.)"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import tf_keras as keras

from visionzoo.training.data import FORMATS, augment
from visionzoo.training.data import synthetic as writers
from visionzoo.training.data.augment import AUGMENTATIONS
from visionzoo.training.data.holdout import parse_validation
from visionzoo.training.models import alexnet, cifar_ablation, four_conv, resnet, vgg
from visionzoo.training.models.source_facts import CIFAR_ABLATION_PARAMETERS
from visionzoo.training.recipes import cifar_ablation as ablation_recipes
from visionzoo.training.recipes import cnn_architectures, fashion_cifar
from visionzoo.training.registry import RECIPES, build_model, families

from .helpers import release_models  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("release_models")

CLASSIC = {**fashion_cifar.RECIPES, **ablation_recipes.RECIPES, **cnn_architectures.RECIPES}
CLASSIC_AUGMENTATIONS = ("cifar_crop_flip", "cifar_crop_flip_reflect", "cifar_shift_flip", "digits_affine", "vgg_zoom_flip")

# (total, trainable or None) as printed by the sources / derived in seed-models.md, at the sources' input sizes
PARAMETERS = {
    "fashion_mnist_mlp": (235_146, None),
    "fashion_mnist_cnn": (422_026, None),
    "cifar10_mlp": (1_707_274, None),
    "cifar10_cnn": (122_570, None),
    "cifar10_cnn2": (667_434, 667_434 - 448),
    **{f"cifar10_ablation_{v}": (count, None) for v, count in CIFAR_ABLATION_PARAMETERS.items()},
    "cifar10_final": (612_554, None),
    "mnist_4conv": (20_360, None),
    "fashion_mnist_4conv": (20_360, None),
    "mnist_lenet": (114_202, None),  # the source's 113,352 + the 10-way layer (84*10 + 10)
    "mnist_lenet_source_head": (113_352, None),
    "kaggle_lenet50": (369_174, None),
    "alexnet": (alexnet.PARAMETERS["alexnet"], None),
    "vgg16_feature_extraction": (16_812_353, 2_097_665),
    "vgg16_fine_tuning": (16_812_353, 9_177_089),
    "resnet50_cifar10": (23_581_642, 23_528_522),  # trainable = torchvision resnet50(num_classes=10)
}
VERY_LARGE = {
    "zfnet": alexnet.PARAMETERS["zfnet"],
    "vgg16_scratch": 138_357_544,
    "vgg16_scratch_grayscale": 138_356_392,
}


def _trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _build(name: str, **overrides):
    if "weights" in RECIPES[name].model_options:
        overrides.setdefault("weights", None)
    return build_model(name, **overrides)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_counts_match_the_sources(name):
    model = _build(name)
    total, trainable = PARAMETERS[name]
    assert model.count_params() == total
    if trainable is not None:
        assert _trainable(model) == trainable


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VERY_LARGE))
def test_printed_giants_match_their_parameter_counts(name):
    assert RECIPES[name].very_large
    assert _build(name).count_params() == VERY_LARGE[name]


def test_every_classic_model_is_registered_and_large_inputs_have_a_test_size():
    assert set(CLASSIC) <= set(RECIPES) and len(RECIPES) >= 40
    for name, recipe in CLASSIC.items():
        if max(recipe.image_spec.shape[:2]) > 64:
            assert recipe.test_input_shape is not None, name


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_recipes_name_known_formats_augmentations_and_options(name):
    recipe = RECIPES[name]
    assert recipe.data_formats and all(fmt in FORMATS for fmt in recipe.data_formats)
    assert recipe.augmentation is None or recipe.augmentation in AUGMENTATIONS
    parse_validation(recipe.data_options["validation"], 42)
    for fmt in recipe.data_formats:  # every candidate loader must accept the recipe's data options
        accepted = inspect.signature(FORMATS[fmt].load).parameters
        assert set(recipe.data_options) <= set(accepted), (name, fmt)
    assert set(recipe.model_options) <= recipe.builder.parameter_names()


def test_vgg_fine_tuning_trains_block5_only():
    model = _build("vgg16_fine_tuning")
    base = model.get_layer("vgg16")
    assert _trainable(base) == 7_079_424  # as printed in §4.3
    assert [layer.name for layer in base.layers if layer.trainable] == [
        "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    assert _trainable(_build("vgg16_feature_extraction").get_layer("vgg16")) == 0


def test_vgg_transfer_uses_imagenet_scaling_unless_the_source_is_asked_for():
    fixed = vgg.build_vgg16_transfer((32, 32, 3), weights=None)
    faithful = vgg.build_vgg16_transfer((32, 32, 3), weights=None, source_scaling=True)
    assert type(fixed.get_layer("scaling")).__name__ == "CaffePreprocessing"
    assert type(faithful.get_layer("scaling")).__name__ == "Rescaling"


def test_vgg_transfer_loads_a_local_weights_file(tmp_path):
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.h5"
    base.save_weights(path)
    model = vgg.build_vgg16_transfer((32, 32, 3), weights=str(path))
    for mine, theirs in zip(model.get_layer("vgg16").get_weights(), base.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_four_conv_applies_softmax_once_and_keeps_the_double_softmax_as_a_flag():
    once = four_conv.build_four_conv()
    twice = four_conv.build_four_conv(source_double_softmax=True)
    twice.set_weights(once.get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (5, 28, 28, 1)).astype(np.float32)
    p_once, p_twice = once(images).numpy(), twice(images).numpy()
    expected = np.exp(p_once) / np.exp(p_once).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p_twice, expected, rtol=1e-5)
    np.testing.assert_array_equal(p_once.argmax(1), p_twice.argmax(1))
    # the source's loss cannot fall below -log(e / (e + 9)) = 1.4612, even for a perfect prediction
    perfect = keras.activations.softmax(keras.backend.constant([[1.0] + [0.0] * 9]))
    floor = float(keras.losses.sparse_categorical_crossentropy([0], perfect)[0])
    assert floor == pytest.approx(1.4612, abs=1e-4)


def test_four_conv_starts_like_pytorch():
    model = four_conv.build_four_conv()
    kernel, bias = model.get_layer("conv_1").get_weights()
    bound = 1 / np.sqrt(25)  # fan_in = 1 channel x 5 x 5
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound and np.abs(bias).max() > 0
    assert type(model.get_layer("dropout2d")).__name__ == "SpatialDropout2D"


def test_lenet_source_head_is_scored_over_all_84_outputs():
    recipe = RECIPES["mnist_lenet_source_head"]
    model = _build("mnist_lenet_source_head")
    assert model.output_shape == (None, 84)
    from visionzoo.training.data.common import Examples

    examples = Examples(images=np.zeros((3, 28, 28, 1), np.uint8), targets={"label": np.array([1, 2, 3])}, ids=np.array(["a", "b", "c"]))
    probabilities = np.zeros((3, 84))
    probabilities[[0, 1, 2], [1, 2, 50]] = 1.0  # the third picks an unused output: wrong
    names = {"label": [str(i) for i in range(10)]}
    scores = recipe.task.score({"probabilities": probabilities}, examples, names)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["class_names"][-1] == "unused output (10-83)" and scores["confusion_matrix"][3][10] == 1
    assert len(recipe.task.output_labels(names)["probabilities"]) == 84


def test_final_model_continues_from_a_checkpoint(tmp_path):
    first = cifar_ablation.build_cifar10_final()
    path = tmp_path / "best_model.keras"
    first.save(path)
    second = cifar_ablation.build_cifar10_final(weights=str(path))
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(second(images).numpy(), first(images).numpy(), atol=1e-6)
    cifar_ablation.build_cifar_ablation().save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match="different architecture"):
        cifar_ablation.build_cifar10_final(weights=str(tmp_path / "other.keras"))
    assert [s.get("augmentation") for s in ablation_recipes.STAGES] == [None, None, "cifar_shift_flip"]


def test_resnet_weight_decay_is_pytorch_style_l2_on_every_parameter():
    model = resnet.build_resnet_bottleneck((32, 32, 3), num_classes=100, weight_decay=1e-3)
    penalty = float(sum(model.losses))
    expected = 0.5 * 1e-3 * sum(float(np.sum(w.numpy() ** 2)) for w in model.trainable_weights)
    assert penalty == pytest.approx(expected, rel=1e-4)
    assert resnet.build_resnet_bottleneck((32, 32, 3), weight_decay=0).losses == []


def test_in_graph_standardisation():
    zfnet = alexnet.build_alexnet((32, 32, 3), 10, "zfnet_cifar")
    scaled = zfnet.get_layer("scaling")(np.full((1, 2, 2, 3), alexnet.ZFNET_MEAN, np.float32)).numpy()
    np.testing.assert_allclose(scaled, 0.0, atol=1e-6)
    normalize = resnet.build_resnet_bottleneck().get_layer("normalize")
    pixel = np.array(resnet.CIFAR100_MEAN, np.float32).reshape(1, 1, 1, 3) * 255
    np.testing.assert_allclose(normalize(pixel).numpy(), 0.0, atol=1e-5)


@pytest.mark.parametrize("name", CLASSIC_AUGMENTATIONS)
def test_classic_augmentations_keep_shape_and_range(name):
    assert AUGMENTATIONS[name] is getattr(augment, name)  # in the table training looks names up in
    images = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    x, _ = AUGMENTATIONS[name]()({"image": images}, {"probabilities": np.zeros(4)})
    out = np.asarray(x["image"])
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, images)


def test_list_groups_every_model_under_its_source_project(capsys):
    from visionzoo.training.__main__ import main

    assert main(["list"]) == 0
    grouped, heading = {}, None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("* ") or not line.strip():
            continue
        if not line.startswith(" "):
            heading = line
            grouped[heading] = []
        else:
            grouped[heading].append(line[3:].split()[0])  # " * name  summary" / "   name  summary"
    assert grouped == {family: [r.name for r in recipes] for family, recipes in families().items()}
    assert sum(map(len, grouped.values())) == len(RECIPES) >= 40
    assert grouped["Classic CNN architectures (ManasviJaipurkar/Deep-Learning-Study)"][0] == "mnist_4conv"
    assert len(grouped["CIFAR-10 ablation series (ntoylker/Neural-Networks-and-Deep-Learning-Course)"]) == 14


# --- smoke runs of representative recipes through run_training, on synthetic data ------------

SMOKE = {
    # recipe: (synthetic layout, extra settings)
    "fashion_mnist_cnn": ("idx_fashion_pngs", {"data_options.validation": "last:10"}),
    "mnist_lenet_source_head": ("idx_mnist_pngs", {}),
    "kaggle_lenet50": ("kaggle_digits", {}),
    "cifar10_ablation_h": ("cifar_pickle", {}),
    # cifar10_final and its augmented stage: test_reproduce.py runs all three stages
    "vgg16_feature_extraction": ("dogs_vs_cats", {"model_options.weights": None}),
}


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("classic_smoke")
    return {layout: writers.WRITERS[layout](root / layout) for layout, _ in SMOKE.values()}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_recipes_train_on_their_real_formats(name, smoke_data, tmp_path):
    from visionzoo.training.train import resolve_config, run_training

    layout, settings = SMOKE[name]
    config = resolve_config(name, str(smoke_data[layout]), {"smoke": True, "out": str(tmp_path), **settings})
    run_dir = run_training(config)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    assert "val" in metrics and data["validation"] == config.data_options["validation"]
    assert json.loads((run_dir / "config.json").read_text())["data_options"] == config.data_options
