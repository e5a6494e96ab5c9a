"""The models shipped in exported_models/: their files match metadata.json, they carry test
metrics measured on real images with the split seed and the data's licence, the shipped ONNX
reproduces its golden outputs, and re-evaluating it on the recorded test split gives the metrics
its metadata claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from visionzoo.preprocessing import ImageSpec, prepare_image, prepare_tiles

REPO = Path(__file__).resolve().parents[1]
SERVED = ("bloodcell_mobilenetv3", "mura_multitask_cnn", "mars_dual_unet")
SHIPPED = sorted(
    (max((REPO / "exported_models" / name).glob("[0-9]*"), key=lambda p: int(p.name)) for name in SERVED
     if (REPO / "exported_models" / name).is_dir()),
    key=lambda p: p.parent.name,
)
REEVALUATION_TOLERANCE = 0.005  # ONNX vs Keras float differences may flip a borderline prediction


def metadata(folder: Path) -> dict:
    return json.loads((folder / "metadata.json").read_text())


def spec(document: dict) -> ImageSpec:
    return ImageSpec(**{k: document["preprocessing"][k] for k in ("height", "width", "color_mode", "resize_method", "tiling")})


def test_all_three_served_models_are_shipped():
    assert [folder.parent.name for folder in SHIPPED] == sorted(SERVED)


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.parent.name)
def test_files_match_their_recorded_hashes(folder):
    from visionzoo.training.export import sha256

    recorded = metadata(folder)["files"]
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "metadata.json"}
    assert present == set(recorded)
    for relative, digest in recorded.items():
        assert sha256(folder / relative) == digest, relative


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.parent.name)
def test_metadata_describes_real_test_metrics_split_and_licence(folder):
    document = metadata(folder)
    test = document["metrics"]["test"]
    assert test["examples"] > 100
    assert document["data"]["split_seed"] == document["recipe"]["config"]["seed"]
    assert document["data"]["dataset"]["licence"] and document["data"]["dataset"]["citation"]
    assert document["data"]["splits"]["test"]["examples"] == test["examples"]
    assert document["recipe"]["config"]["smoke"] is False and document["parity"]["passed"]
    assert document["training"]["seconds"] > 0


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_onnx_reproduces_its_golden_outputs(folder):
    document = metadata(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = np.load(folder / "golden" / "expected.npz")
    files = document["golden"]["files"]
    assert len(files) >= 3
    for index, name in enumerate(files):
        path = folder / "golden" / name
        batch = prepare_tiles(path, spec(document)) if spec(document).tiling != "none" else prepare_image(path, spec(document))[None]
        outputs = session.run(None, {"image": batch.astype(np.float32)})
        for output, values in zip(session.get_outputs(), outputs):
            np.testing.assert_allclose(values, expected[f"{index}/{output.name}"], atol=document["golden"]["tolerance"], err_msg=name)


def _headline(scores: dict) -> dict[str, float]:
    """The numbers a model card reports, whatever the task."""
    if "mean_iou" in scores:
        return {"mean_iou": scores["mean_iou"], "pixel_accuracy": scores["pixel_accuracy"], **scores["per_class_iou"]}
    if "abnormal" in scores:
        return {"abnormal_f1": scores["abnormal"]["f1"], "abnormal_auroc": scores["abnormal"]["auroc"],
                "abnormal_accuracy": scores["abnormal"]["accuracy"], "body_part_accuracy": scores["body_part"]["accuracy"]}
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


@pytest.mark.realdata
@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.parent.name)
def test_reevaluating_the_shipped_onnx_gives_its_recorded_test_metrics(folder, real_data):
    from visionzoo.training.data import load_data
    from visionzoo.training.registry import get_recipe

    document = metadata(folder)
    config = document["recipe"]["config"]
    recipe = get_recipe(config["model"])
    data = load_data(real_data / Path(config["data_dir"]).name, recipe.image_spec, recipe.data_formats,
                     explicit=config["data_format"], seed=config["seed"], skip_bad=config["skip_bad"], **config["data_options"])
    examples = data.splits["test"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    chunks = [session.run(names, {"image": examples.images[i : i + 64].astype(np.float32)}) for i in range(0, len(examples), 64)]
    predictions = {name: np.concatenate([chunk[k] for chunk in chunks]) for k, name in enumerate(names)}
    scores = recipe.task.score(predictions, examples, data.class_names)
    recorded = _headline(document["metrics"]["test"])
    for key, value in _headline(scores).items():
        assert value == pytest.approx(recorded[key], abs=REEVALUATION_TOLERANCE), key
