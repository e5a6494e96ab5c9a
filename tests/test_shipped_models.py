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

from tests.serving.toy_models import SERVED_EXPORTS
from visionzoo.preprocessing import ImageSpec, prepare_image, prepare_tiles
from visionzoo.serving.repository import golden_tolerance
from visionzoo.training.recipe import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SERVED = SERVED_EXPORTS
SHIPPED = sorted(
    (max((REPO / "exported_models" / name).glob("[0-9]*"), key=lambda p: int(p.name)) for name in SERVED
     if (REPO / "exported_models" / name).is_dir()),
    key=lambda p: p.parent.name,
)
# Re-scoring the Mars ensemble on its 644 test tiles takes 2-4 minutes of two CPU cores, a tenth of the
# default run: it runs with `make test-slow` (the other two models stay in `make test`).
REEVALUATED = [pytest.param(folder, marks=pytest.mark.slow) if folder.parent.name == "mars_dual_unet" else folder
               for folder in SHIPPED]
REEVALUATION_TOLERANCE = 0.005  # ONNX vs Keras float differences may flip a borderline prediction
CHUNK = 16  # images per ONNX Runtime run: the Mars U-Net runs at half speed in batches of 64 (its activations outgrow the cache)


def metadata(folder: Path) -> dict:
    return json.loads((folder / "metadata.json").read_text())


def spec(document: dict) -> ImageSpec:
    return ImageSpec.from_metadata(document["preprocessing"])


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
    assert document["data"]["split_seed"] == TrainConfig.from_json(json.dumps(document["recipe"]["config"])).data_seed
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
            np.testing.assert_allclose(values, expected[f"{index}/{output.name}"], atol=golden_tolerance(document["golden"], output.name),
                                       err_msg=f"{name}: {output.name}")


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_onnx_files_describe_themselves(folder):
    """model.onnx and every variant carry labels, preprocessing, task and provenance as
    metadata_props, and name their batch dimension `batch` (onnx_metadata.annotate)."""
    import onnx

    document = metadata(folder)
    for name in ["model.onnx", *[variant["file"] for variant in document.get("variants", {}).values()]]:
        model = onnx.load(str(folder / name), load_external_data=False)
        properties = {p.key: p.value for p in model.metadata_props}
        assert json.loads(properties["labels"]) == document["labels"], name
        assert json.loads(properties["preprocessing"]) == document["preprocessing"], name
        assert properties["task"] == document["task"] and properties["model_name"] == document["name"], name
        assert properties["version"] == document["version"] == folder.name, name
        assert properties["git_commit"] == document["provenance"]["git_commit"], name
        assert properties["recipe"] == document["recipe"]["name"] and properties["data_source"] == document["data"]["source"], name
        assert json.loads(properties["dataset"]) == document["data"]["dataset"], name
        for tensor in [*model.graph.input, *model.graph.output]:
            assert tensor.type.tensor_type.shape.dim[0].dim_param == "batch", (name, tensor.name)


WITH_SAVED_MODEL = [folder for folder in SHIPPED if metadata(folder).get("saved_model") == "shipped"]


def test_exports_without_a_saved_model_say_how_to_regenerate_it():
    for folder in SHIPPED:
        if folder not in WITH_SAVED_MODEL:
            note = metadata(folder)["saved_model"]
            assert "visionzoo export " in note and "best_model.keras" in note, folder
            assert not (folder / "saved_model.pb").exists() and not (folder / "saved_model").exists()


@pytest.mark.parametrize("folder", WITH_SAVED_MODEL, ids=lambda p: p.parent.name)
def test_shipped_saved_model_has_the_tf_serving_layout(folder):
    """TF Serving: --model_base_path=exported_models/<name> holds integer version folders, each a
    SavedModel (saved_model.pb + variables/)."""
    assert folder.parent.parent == REPO / "exported_models" and folder.parent.name == metadata(folder)["name"]
    assert folder.name.isdigit() and folder.name == metadata(folder)["version"]
    assert (folder / "saved_model.pb").is_file() and (folder / "variables" / "variables.index").is_file()
    assert not (folder / "saved_model").exists()  # the pre-TF-Serving layout


@pytest.mark.parametrize("folder", WITH_SAVED_MODEL, ids=lambda p: p.parent.name)
def test_saved_model_cli_shows_the_recorded_serving_signature(folder):
    import re
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.is_file():
        pytest.skip("saved_model_cli (TensorFlow) is not installed next to the Python running the tests")
    result = subprocess.run([str(cli), "show", "--dir", str(folder), "--tag_set", "serve", "--signature_def", "serving_default"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    shown = {name: tuple(int(d) for d in shape.split(",") if d.strip())
             for name, shape in re.findall(r"inputs\['(\w+)'\] tensor_info:\s+dtype: \w+\s+shape: \(([^)]*)\)", result.stdout)}
    assert shown == {spec["name"]: tuple(spec["shape"]) for spec in metadata(folder)["inputs"]}, result.stdout
    outputs = set(re.findall(r"outputs\['(\w+)'\]", result.stdout))
    assert outputs == {spec["name"] for spec in metadata(folder)["outputs"]}, result.stdout


def _headline(scores: dict) -> dict[str, float]:
    """The numbers a model card reports, whatever the task."""
    if "mean_iou" in scores:
        return {"mean_iou": scores["mean_iou"], "pixel_accuracy": scores["pixel_accuracy"], **scores["per_class_iou"]}
    if "abnormal" in scores:
        return {"abnormal_f1": scores["abnormal"]["f1"], "abnormal_auroc": scores["abnormal"]["auroc"],
                "abnormal_accuracy": scores["abnormal"]["accuracy"], "body_part_accuracy": scores["body_part"]["accuracy"]}
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


@pytest.mark.realdata
@pytest.mark.parametrize("folder", REEVALUATED, ids=lambda p: p.parent.name)
def test_reevaluating_the_shipped_onnx_gives_its_recorded_test_metrics(folder, real_data):
    from visionzoo.training.data import load_data
    from visionzoo.training.registry import get_recipe

    document = metadata(folder)
    config = TrainConfig.from_json(json.dumps(document["recipe"]["config"]))
    recipe = get_recipe(config.model)
    data = load_data(real_data / Path(config.data_dir).name, config.image_spec(recipe), recipe.data_formats,
                     explicit=config.data_format, seed=config.data_seed, skip_bad=config.skip_bad, **config.data_options)
    examples = data.splits["test"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    chunks = [session.run(names, {"image": examples.images[i : i + CHUNK].astype(np.float32)}) for i in range(0, len(examples), CHUNK)]
    predictions = {name: np.concatenate([chunk[k] for chunk in chunks]) for k, name in enumerate(names)}
    scores = recipe.task.score(predictions, examples, data.class_names)
    recorded = _headline(document["metrics"]["test"])
    for key, value in _headline(scores).items():
        assert value == pytest.approx(recorded[key], abs=REEVALUATION_TOLERANCE), key


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.parent.name)
def test_every_shipped_version_has_a_model_card_true_to_its_metrics(folder):
    """metadata.json `model_card` (visionzoo/training/model_card.py): balanced accuracy and per-class
    recall recomputed from the recorded confusion matrices, and failure modes in words."""
    from visionzoo.training import model_card

    document = metadata(folder)
    card = document["model_card"]
    assert card["failure_modes"] == model_card.failure_modes_for(document["name"]) and len(card["failure_modes"]) >= 3
    assert card["test"] == model_card.summarize(document)["test"]
    test = document["metrics"]["test"]
    confusion = {"classification": lambda t: t["confusion_matrix"], "multitask": lambda t: t["body_part"]["confusion_matrix"],
                 "segmentation": lambda t: t["confusion_matrix"]}[document["task"]](test)
    matrix = np.asarray(confusion, dtype=float)
    rows = matrix.sum(axis=1) > 0
    recalls = np.diag(matrix)[rows] / matrix.sum(axis=1)[rows]
    summary = card["test"]["body_part"] if document["task"] == "multitask" else card["test"]
    assert sorted(summary["recall"].values()) == pytest.approx(sorted(recalls), abs=1e-4)
    if "balanced_accuracy" in summary:
        assert summary["balanced_accuracy"] == pytest.approx(recalls.mean(), abs=1e-4)
    if document["task"] == "segmentation":  # the served map at frame size, measured on the served path
        (evidence,) = card["evidence"]
        chosen = {"tile_overlap": document["preprocessing"].get("tile_overlap", 0.0),
                  "learnable_classes": document.get("learnable_classes"),
                  "decision_weights": document.get("decision_weights")}
        assert chosen in evidence["variants"].values()
