"""Ensembles (visionzoo/training/ensemble.py): the members' outputs averaged in one graph, explained
as one model, built only from members trained on one split, and shipped like any run."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import tf_keras as keras

from tests.training.helpers import release_models  # noqa: F401  (fixture)
from tests.training.test_gradcam import brightness_classifier, square_at
from visionzoo.preprocessing import ImageSpec
from visionzoo.training import ensemble, export, gradcam, runs
from visionzoo.training.recipe import TrainConfig
from visionzoo.training.registry import get_recipe

pytestmark = pytest.mark.usefixtures("release_models")
EXPLANATION = gradcam.Explanation("pool", "probabilities")


def dimmer_classifier() -> keras.Model:
    """brightness_classifier with other head weights: same evidence, different probabilities."""
    model = brightness_classifier("gap")
    kernel, bias = model.get_layer("probabilities").get_weights()
    model.get_layer("probabilities").set_weights([kernel * 0.5, bias + np.array([0.0, 0.3], np.float32)])
    return model


def test_the_ensemble_answers_the_mean_of_its_members():
    first, second = brightness_classifier("gap"), dimmer_classifier()
    images = np.concatenate([square_at(1), square_at(11), np.zeros((1, 16, 16, 1), np.float32)])
    expected = (first(images).numpy() + second(images).numpy()) / 2
    model = ensemble.build_ensemble([first, second], "pair")
    assert model.output_names == ["probabilities"] and model.input_names == ["image"]
    np.testing.assert_allclose(model(images).numpy(), expected, atol=1e-6)
    assert [m.name for m in ensemble.ensemble_members(model)] == ["member_0", "member_1"]
    assert ensemble.ensemble_members(first) is None


def test_the_ensemble_map_is_one_grad_cam_over_all_members():
    single = gradcam.GradCam(brightness_classifier("gap"), EXPLANATION)
    twins = gradcam.GradCam(ensemble.build_ensemble([brightness_classifier("gap"), brightness_classifier("gap")], "twins"),
                            EXPLANATION)
    pair = gradcam.GradCam(ensemble.build_ensemble([brightness_classifier("gap"), dimmer_classifier()], "pair"), EXPLANATION)
    for column in (1, 11):
        image = square_at(column)
        alone, doubled = single(image), twins(image)
        # identical members: the ensemble is the model, and so is its explanation
        np.testing.assert_allclose(doubled["cam"], alone["cam"], atol=1e-6)
        np.testing.assert_allclose(doubled["probabilities"], alone["probabilities"], atol=1e-6)
        cam = np.asarray(pair(image)["cam"])[0]
        rows, columns = np.nonzero(cam > 0.5)
        assert set(rows) <= set(range(6, 10)) and set(columns) <= set(range(column, column + 4)), (column, cam)


def test_an_exported_ensemble_carries_mean_and_map_with_parity(tmp_path):
    members = [brightness_classifier("gap"), dimmer_classifier()]
    images = np.concatenate([square_at(1), square_at(11)])
    expected = np.mean([m(images).numpy() for m in members], axis=0)
    model = ensemble.build_ensemble(members, "pair")
    folder = export.export_model(model, "pair", tmp_path, image_spec=ImageSpec(16, 16, "grayscale"),
                                 task_kind="classification", output_labels={"probabilities": ["bright", "dark"]},
                                 explain=EXPLANATION)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parity"]["outputs"]["cam"]["max_abs_diff_onnx"] <= export.CAM_PARITY_TOLERANCE
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities, cam = session.run(["probabilities", "cam"], {"image": images})
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert cam[0, 6:10, 1:5].min() > 0.5 and cam[1, 6:10, 11:15].min() > 0.5


def _lenet_run(tmp_path, data, seed: int, split_seed: int | None):
    from visionzoo.training import train

    overrides = {"epochs": 1, "batch_size": 16, "seed": seed, "out": str(tmp_path / "runs"), "max_examples": 96}
    if split_seed is not None:
        overrides["split_seed"] = split_seed
    config = TrainConfig.from_recipe(get_recipe("mnist_lenet"), str(data), **overrides)
    return train.run_training(config)


def test_ensemble_of_runs_is_a_run_folder_that_exports(tmp_path, monkeypatch):
    from visionzoo.training.data.synthetic import write_idx_files

    data = write_idx_files(tmp_path / "idx")
    first = _lenet_run(tmp_path, data, seed=1, split_seed=None)
    second = _lenet_run(tmp_path, data, seed=2, split_seed=1)
    monkeypatch.chdir(tmp_path)  # the project folder: members given by absolute path are recorded relative to it
    run = ensemble.ensemble([first, second], tmp_path / "runs")
    assert run.name.startswith("mnist_lenet-ensemble-") and runs.read_state(run) == runs.FINISHED
    config, _ = runs.load_run(run)
    assert config.model == "mnist_lenet"
    training = runs.read_json(run / "training.json")
    members = training["ensemble"]["members"]
    assert [m["source"] for m in members] == [f"runs/{first.name}", f"runs/{second.name}"] and [m["seed"] for m in members] == [1, 2]
    assert training["seconds"] == pytest.approx(sum(runs.read_json(r / "training.json")["seconds"] for r in (first, second)), abs=0.2)
    metrics = runs.read_json(run / "metrics.json")
    assert {"val", "test"} <= set(metrics) and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert runs.read_samples(run) == runs.read_samples(first)

    folder = export.export_run(run, tmp_path / "exported")
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["training"]["ensemble"]["members"] == members and metadata["metrics"] == metrics
    probe = np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 1)).astype(np.float32)
    expected = np.mean([keras.models.load_model(r / "best_model.keras", compile=False)(probe).numpy() for r in (first, second)], axis=0)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["probabilities"], {"image": probe})[0], expected, atol=1e-5)

    from visionzoo.training import revise

    with pytest.raises(revise.ReviseError, match="is an ensemble"):
        revise.revise(folder, explain=True)

    stranger = _lenet_run(tmp_path, data, seed=3, split_seed=None)  # split by seed 3: other validation images
    with pytest.raises(ensemble.EnsembleError, match="different splits .*split_seed"):
        ensemble.ensemble([first, stranger], tmp_path / "runs")
    with pytest.raises(ensemble.EnsembleError, match="two or more"):
        ensemble.ensemble([first], tmp_path / "runs")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([first.name, second.name, stranger.name, run.name])


def test_an_unfinished_member_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(TrainConfig(model="mnist_lenet", data_dir="x").to_json())
    runs.write_status(tmp_path / "run", runs.UNFINISHED, epochs_completed=1)
    with pytest.raises(ensemble.EnsembleError, match="train --resume .* --finish"):
        ensemble.load_member(tmp_path / "run")
    with pytest.raises(ensemble.EnsembleError, match="neither a run folder"):
        ensemble.load_member(tmp_path)


def test_member_scores_keep_each_head_of_a_multitask_model():
    """training.json lists each member's headline figures: a classifier's at the top level, a
    multitask model's per head (the X-ray ensemble's members once recorded empty scores)."""
    metrics = {
        "val": {"abnormal": {"accuracy": 0.7, "auroc": 0.8, "f1": 0.68, "confusion_matrix": [[1, 0], [0, 1]],
                             "accuracy_by_hardware": {"hardware=0": {"accuracy": 0.7, "count": 9}}},
                "body_part": {"accuracy": 0.9, "balanced_accuracy": 0.85, "macro_f1": 0.86, "class_names": ["hand"]},
                "examples": 152},
        "test": {"accuracy": 0.97, "balanced_accuracy": 0.98, "macro_f1": 0.97, "confusion_matrix": [[1]]},
    }
    assert ensemble._scores(metrics) == {
        "val": {"abnormal": {"accuracy": 0.7, "auroc": 0.8, "f1": 0.68},
                "body_part": {"accuracy": 0.9, "balanced_accuracy": 0.85, "macro_f1": 0.86}},
        "test": {"accuracy": 0.97, "balanced_accuracy": 0.98, "macro_f1": 0.97},
    }
