"""Tests generated from the registry: every model builds at test size, gives finite outputs of the
right shape, survives a save/load round trip and takes a training step. Plus the parameter counts
the sources print, where our architecture is theirs."""

import numpy as np
import pytest
import tf_keras as keras

from visionzoo.training import keras_files
from visionzoo.training.recipe import TrainConfig
from visionzoo.training.registry import RECIPES, build_model, get_recipe

from .helpers import build_small, fake_examples, small_shape

NAMES = sorted(RECIPES)
FAST = [pytest.param(n, marks=pytest.mark.slow) if RECIPES[n].very_large else n for n in NAMES]


def _outputs(model, features):
    inputs = features["image"] if len(features) == 1 else [features["image"], features["body_part"]]
    values = model(inputs, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return {name: np.asarray(v) for name, v in zip(model.output_names, values)}


@pytest.mark.parametrize("name", FAST)
def test_model_builds_runs_round_trips_and_trains(name, tmp_path):
    recipe = RECIPES[name]
    model = build_small(recipe)
    examples, class_names = fake_examples(recipe, model)
    features = {k: np.asarray(v, dtype=np.float32 if k == "image" else v.dtype) for k, v in recipe.task.features(examples, class_names).items()}

    outputs = _outputs(model, features)
    for output_name, values in outputs.items():
        assert values.shape[0] == len(examples), output_name
        assert np.isfinite(values).all(), f"{name}/{output_name} produced NaN or inf"
        if recipe.task.kind == "segmentation":
            assert values.shape[1:3] == small_shape(recipe)[:2]
        assert np.allclose(values.sum(axis=-1), 1.0, atol=1e-3) or values.shape[-1] == 1  # softmax or sigmoid

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras_files.load_model(path)  # the loader evaluate, export and ensemble use
    for output_name, values in _outputs(reloaded, features).items():
        np.testing.assert_allclose(values, outputs[output_name], atol=1e-5)

    config = TrainConfig.from_recipe(recipe, "unused")
    model.compile(optimizer="adam", loss=recipe.task.losses(config), metrics=recipe.task.keras_metrics(config))
    history = model.fit(features, recipe.task.targets(examples), batch_size=len(examples), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


# Parameter counts printed by the sources (seed-models.md), at the sources' input sizes.
SOURCE_PARAMETERS = {
    "mars_dual_unet": (2_600_840, 2_598_536),
    "mars_bigrock_unet": (359_493, None),
    "mars_ensemble": (2_960_333, None),
    "bloodcell_mobilenetv3": (3_367_964, None),
    "mura_binary_cnn": (25_830_369, None),
}


def _trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("name", sorted(SOURCE_PARAMETERS))
def test_parameter_counts_match_the_sources(name):
    options = {"weights": None} if "weights" in get_recipe(name).model_options else {}
    model = build_model(name, **options)
    total, trainable = SOURCE_PARAMETERS[name]
    assert model.count_params() == total
    if trainable is not None:
        assert _trainable(model) == trainable


def test_bloodcell_fine_tuning_rule_trains_late_conv_kernels_only():
    """§6: 2,397,316 trainable of 3,367,964 with the source's rule; everything without it."""
    ruled = build_model("bloodcell_mobilenetv3", weights=None)
    assert _trainable(ruled) == 2_397_316
    backbone = ruled.layers[1]
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    scratch = build_model("bloodcell_mobilenetv3", weights=None, fine_tune_from=None, backbone_bn_momentum=0.9)
    assert _trainable(scratch) > 3_000_000
    assert {layer.momentum for layer in scratch.layers[1].layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}


@pytest.mark.parametrize("version, total, trainable", [(1, 22_067_377, 264_593), (2, 22_066_337, 263_553)])
def test_inception_hybrids_match_the_source_with_its_eight_body_parts(version, total, trainable):
    model = build_model(f"mura_inceptionv3_hybrid_v{version}", num_classes=8, weights=None)
    assert model.count_params() == total and _trainable(model) == trainable


@pytest.mark.parametrize("parts", [7, 5])
def test_body_part_head_width_comes_from_the_data(parts):
    model = build_model("mura_multitask_cnn", num_classes=parts)
    assert model.output_names == ["abnormal", "body_part"]
    assert model.outputs[1].shape[-1] == parts


def test_unknown_model_names_list_the_known_ones():
    with pytest.raises(KeyError, match="mars_dual_unet"):
        get_recipe("mars_unet_v9")


def test_source_scaling_flag_restores_the_sources_unit_scaling():
    fixed = build_model("mura_resnet50_gap", weights=None)
    faithful = build_model("mura_resnet50_gap", weights=None, source_scaling=True)
    assert fixed.layers[1].name == "scaling" and fixed.layers[1].__class__.__name__ == "CaffePreprocessing"
    assert faithful.layers[1].__class__.__name__ == "Rescaling"
