"""Export proves itself: SavedModel + ONNX agree with Keras on non-constant inputs, files are
hashed, folders appear atomically, and the checks refuse what they should refuse."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import tf_keras as keras

from tests.serving.toy_models import SERVED_EXPORTS
from visionzoo.training import export, onnx_metadata, runs
from visionzoo.training.registry import get_recipe

from .helpers import build_small, calibrate_batch_norm, fake_examples

SERVED = list(SERVED_EXPORTS)


def _export(name, tmp_path, **kwargs):
    recipe = get_recipe(name)
    keras.utils.set_random_seed(0)  # the same random weights whichever tests ran before in this process
    model = build_small(recipe)
    examples, class_names = fake_examples(recipe, model, count=6)
    if len(model.inputs) == 1:
        calibrate_batch_norm(model, examples.images)
    folder = export.export_model(
        model, name, tmp_path / "exported", image_spec=recipe.image_spec, task_kind=recipe.task.kind,
        output_labels=recipe.task.output_labels(class_names), real_examples=kwargs.pop("real_examples", None), **kwargs,
    )
    return model, folder


@pytest.mark.parametrize("name", SERVED)
def test_served_families_export_with_parity(name, tmp_path):
    model, folder = _export(name, tmp_path)
    assert folder.name == "1"
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parity"]["passed"]
    for report in metadata["parity"]["outputs"].values():
        assert report["spread"] > export.MIN_SPREAD
        assert report["max_abs_diff_onnx"] <= export.PARITY_TOLERANCE
        assert report["max_abs_diff_savedmodel"] <= export.PARITY_TOLERANCE
    assert metadata["provenance"]["versions"]["opset"] == export.OPSET
    assert {o["name"] for o in metadata["outputs"]} == set(model.output_names)
    assert metadata["inputs"][0]["shape"][0] == -1
    # every file is hashed, and the hashes are right
    for relative, digest in metadata["files"].items():
        assert export.sha256(folder / relative) == digest
    # TF Serving's layout: the SavedModel files sit in the integer version folder, beside model.onnx
    assert {"model.onnx", "saved_model.pb", "variables/variables.index"} <= set(metadata["files"])
    assert not (folder / "saved_model").exists()
    # the ONNX file describes itself, and its batch dimension is dynamic and named
    properties = onnx_metadata.read_properties(folder / "model.onnx")
    assert json.loads(properties["labels"]) == metadata["labels"]
    assert json.loads(properties["preprocessing"]) == metadata["preprocessing"]
    assert (properties["task"], properties["model_name"], properties["version"]) == (metadata["task"], name, "1")
    assert properties["git_commit"] == metadata["provenance"]["git_commit"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [t.shape[0] for t in [*session.get_inputs(), *session.get_outputs()]] == ["batch"] * (
        len(session.get_inputs()) + len(session.get_outputs()))
    batch = np.random.default_rng(1).uniform(0, 255, size=(3, *model.inputs[0].shape[1:])).astype(np.float32)
    assert session.run(None, {"image": batch})[0].shape[0] == 3


def test_versions_increment_and_no_staging_folder_remains(tmp_path):
    _, first = _export("mars_bigrock_unet", tmp_path)
    _, second = _export("mars_bigrock_unet", tmp_path)
    assert (first.name, second.name) == ("1", "2")
    assert sorted(p.name for p in first.parent.iterdir()) == ["1", "2"]


def test_an_interrupted_export_leaves_no_folder_that_looks_complete(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyboardInterrupt("simulated interruption during ONNX conversion")

    monkeypatch.setattr(export, "write_onnx", broken)
    with pytest.raises(KeyboardInterrupt):
        _export("mars_bigrock_unet", tmp_path)
    assert list((tmp_path / "exported" / "mars_bigrock_unet").iterdir()) == []


def test_parity_refuses_outputs_past_the_tolerance(tmp_path):
    model, folder = _export("mars_bigrock_unet", tmp_path)
    drifted = keras.models.clone_model(model)
    drifted.set_weights([w + 0.05 for w in model.get_weights()])
    with pytest.raises(export.ExportError, match="parity failed"):
        export.check_parity(drifted, folder, folder / "model.onnx")


def test_parity_refuses_constant_outputs(tmp_path):
    inputs = keras.Input((8, 8, 1), name="image")
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros", name="probabilities")(flat)
    model = keras.Model(inputs, outputs)
    spec = get_recipe("mars_dual_unet").image_spec.__class__(8, 8, "grayscale")
    with pytest.raises(export.ExportError, match="do not vary"):
        export.export_model(model, "constant", tmp_path, image_spec=spec, task_kind="classification", output_labels={})
    assert list((tmp_path / "constant").iterdir()) == []


def test_golden_files_hold_real_inputs_and_their_outputs(tmp_path, synthetic):
    from visionzoo.training.data import load_data

    recipe = get_recipe("mars_dual_unet")
    data = load_data(synthetic["ai4mars"], recipe.image_spec, recipe.data_formats)
    _model, folder = _export("mars_dual_unet", tmp_path, real_examples=data.splits["test"])
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parity"]["inputs"] == "real images"
    files = metadata["golden"]["files"]
    assert len(files) == 4 and all(name.endswith(".jpg") for name in files)  # original frames, not tiles
    expected = np.load(folder / "golden" / "expected.npz")
    assert expected["0/probabilities"].shape == (2, 64, 128, 5)  # a 256x256 frame is two tiles


def _nearly_constant_model(stddev: float):
    inputs = keras.Input((8, 8, 1), name="image")
    flat = keras.layers.Flatten()(inputs)
    weights = keras.initializers.RandomNormal(stddev=stddev, seed=0)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=weights, name="probabilities")(flat)
    return keras.Model(inputs, outputs)


def test_export_refuses_outputs_nearly_constant_on_real_inputs(tmp_path):
    """A 1-epoch run whose outputs spread by 7e-6 once passed parity: real inputs must move them."""
    from visionzoo.training.data.common import Examples

    rng = np.random.default_rng(0)
    real = Examples(images=rng.integers(0, 256, size=(8, 8, 8, 1), dtype=np.uint8), targets={},
                    ids=np.array([f"real#{i}" for i in range(8)]))
    model = _nearly_constant_model(1e-7)
    outputs = model(real.images.astype(np.float32)).numpy()
    assert export.MIN_SPREAD < outputs.std(axis=0).mean() and outputs.std(axis=0).max() < export.MIN_REAL_STD
    spec = get_recipe("mars_dual_unet").image_spec.__class__(8, 8, "grayscale")
    options = {"image_spec": spec, "task_kind": "classification", "output_labels": {"probabilities": ["a", "b", "c"]},
               "real_examples": real}
    with pytest.raises(export.ExportError, match=r"outputs are \(nearly\) constant on real inputs"):
        export.export_model(model, "flat", tmp_path, **options)
    assert not (tmp_path / "flat").exists()  # refused before anything was written
    folder = export.export_model(model, "flat", tmp_path, force=True, **options)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parity"]["passed"] and metadata["parity"]["real_inputs_max_std"] < export.MIN_REAL_STD
    varied = export.export_model(_nearly_constant_model(0.05), "varied", tmp_path, **options)
    assert json.loads((varied / "metadata.json").read_text())["parity"]["real_inputs_max_std"] >= export.MIN_REAL_STD


def test_savedmodel_never_leaves_no_savedmodel_file_and_says_how_to_regenerate(tmp_path):
    _, folder = _export("mars_bigrock_unet", tmp_path, savedmodel="never")
    metadata = json.loads((folder / "metadata.json").read_text())
    assert not export.saved_model_entries(folder) and not any(key.startswith(("saved_model", "variables")) for key in metadata["files"])
    assert "visionzoo export RUN --savedmodel always" in metadata["saved_model"]


def test_annotation_leaves_the_outputs_unchanged_and_is_idempotent(tmp_path):
    _, folder = _export("mars_bigrock_unet", tmp_path)
    metadata = json.loads((folder / "metadata.json").read_text())
    path = folder / "model.onnx"
    before = onnx_metadata._outputs(path, metadata)
    onnx_metadata.annotate(path, {**metadata, "labels": {"probabilities": ["changed"]}})
    onnx_metadata.annotate(path, metadata)
    assert export.sha256(path) == metadata["files"]["model.onnx"]  # same bytes as the export wrote
    for old, new in zip(before, onnx_metadata._outputs(path, metadata)):
        np.testing.assert_array_equal(old, new)


def test_upgrade_moves_a_legacy_savedmodel_up_and_rehashes(tmp_path):
    """`python -m visionzoo.training.onnx_metadata --upgrade`: what migrated the shipped exports."""

    _, folder = _export("mars_bigrock_unet", tmp_path)
    legacy = json.loads((folder / "metadata.json").read_text())
    (folder / "saved_model").mkdir()
    for entry in export.saved_model_entries(folder):
        entry.rename(folder / "saved_model" / entry.name)
    legacy["files"] = {(f"saved_model/{k}" if k.split("/")[0] in onnx_metadata.SAVED_MODEL_ENTRIES else k): v
                       for k, v in legacy["files"].items()}
    runs.write_json(folder / "metadata.json", legacy)
    onnx_metadata.main(["--upgrade", str(folder)])
    upgraded = json.loads((folder / "metadata.json").read_text())
    assert not (folder / "saved_model").exists() and (folder / "saved_model.pb").is_file()
    assert set(upgraded["files"]) == {k.removeprefix("saved_model/") for k in legacy["files"]}
    for relative, digest in upgraded["files"].items():
        assert export.sha256(folder / relative) == digest
