"""The X-ray network's pretrained start: `xray_trunk_cifar10` trains mura_multitask_resnet's body on
CIFAR-10, and `visionzoo train mura_multitask_resnet --weights RUN` starts every layer the two share
by name and shape from it; the heads keep their own initialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.training.test_cli import visionzoo
from visionzoo.training import runs
from visionzoo.training.models.layers import load_matching_weights
from visionzoo.training.models.mura import build_mura_multitask_resnet, build_xray_trunk_cifar10

HEADS = {"abnormal", "body_part"}


def _trained_looking_donor():
    """The CIFAR-10 body with weights no fresh build has (so a match cannot be a coincidence)."""
    donor = build_xray_trunk_cifar10(input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    donor.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in donor.get_weights()])
    return donor


def _body_layers(model) -> list[str]:
    return [layer.name for layer in model.layers if layer.weights and layer.name not in HEADS | {"probabilities"}]


@pytest.mark.parametrize("form", ["run folder", ".keras", ".h5"])
def test_the_x_ray_network_starts_its_body_from_the_donors_weights(tmp_path, form):
    donor = _trained_looking_donor()
    if form == ".h5":
        source = tmp_path / "trunk.h5"
        donor.save_weights(str(source))
    else:
        donor.save(str(tmp_path / "best_model.keras"))
        source = tmp_path if form == "run folder" else tmp_path / "best_model.keras"

    fresh = build_mura_multitask_resnet(input_shape=(64, 64, 3), num_body_parts=5)
    model = build_mura_multitask_resnet(input_shape=(64, 64, 3), num_body_parts=5, weights=str(source))
    body = _body_layers(model)
    assert len(body) == 24 and body == _body_layers(donor)  # stem conv + BN, 4 blocks of 2 conv + BN, 3 projections
    for name in body:
        for ours, theirs in zip(model.get_layer(name).get_weights(), donor.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    for name in HEADS:  # not in the donor: the recipe's initialisation, as a fresh build's shapes
        assert [w.shape for w in model.get_layer(name).get_weights()] == [w.shape for w in fresh.get_layer(name).get_weights()]
    assert load_matching_weights(fresh, str(source)) == body


def test_weights_that_share_nothing_or_are_missing_are_refused_by_name(tmp_path):
    from visionzoo.training.registry import build_model

    build_model("mnist_lenet").save(str(tmp_path / "lenet.keras"))
    with pytest.raises(ValueError, match="no layer of mura_multitask_resnet matches"):
        build_mura_multitask_resnet(input_shape=(64, 64, 3), num_body_parts=5, weights=str(tmp_path / "lenet.keras"))
    with pytest.raises(ValueError, match="absent.keras: no such file"):
        build_mura_multitask_resnet(input_shape=(64, 64, 3), num_body_parts=5, weights=str(tmp_path / "absent.keras"))


def test_missing_weights_or_data_are_refused_before_the_data_loads(synthetic, tmp_path):
    from visionzoo.training.train import resolve_config

    fracatlas, blood = str(synthetic["fracatlas"]), str(synthetic["blood_pbc"])
    with pytest.raises(ValueError, match="nowhere.h5: no such file"):
        resolve_config("mura_multitask_resnet", fracatlas, {"model_options.weights": str(tmp_path / "nowhere.h5")})
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ValueError, match="empty_run: no such file .*a run folder with best_model.keras"):
        resolve_config("mura_multitask_resnet", fracatlas, {"model_options.weights": str(tmp_path / "empty_run")})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best_model.keras").touch()  # read when the model is built, not here
    for accepted in ("imagenet", None, str(tmp_path / "run"), str(tmp_path / "run" / "best_model.keras")):
        resolve_config("bloodcell_mobilenetv3", blood, {"model_options.weights": accepted})
    with pytest.raises(ValueError, match="no-data does not exist"):
        resolve_config("bloodcell_mobilenetv3", str(tmp_path / "no-data"), {})
    with pytest.raises(ValueError, match="does not look like any format this model reads"):
        resolve_config("bloodcell_mobilenetv3", fracatlas, {})


def test_a_run_started_from_the_trunk_records_it_trains_and_exports(synthetic, tmp_path):
    donor_run = tmp_path / "trunk_run"
    donor_run.mkdir()
    _trained_looking_donor().save(str(donor_run / "best_model.keras"))
    runs.write_json(donor_run / "training.json", {"seconds": 100.0})
    common = ("--data-dir", str(synthetic["fracatlas"]), "--epochs", "1", "--batch-size", "8",
              "--set", "image_size=[64,64]", "--set", "split_seed=42", "--out", str(tmp_path / "runs"))
    visionzoo("train", "mura_multitask_resnet", *common, "--weights", str(donor_run))
    (run,) = (tmp_path / "runs").iterdir()
    assert runs.read_state(run) == runs.FINISHED
    assert json.loads((run / "config.json").read_text())["model_options"]["weights"] == str(donor_run)
    # the time behind the starting weights counts: the pretraining once, however many members share it
    training = runs.read_json(run / "training.json")
    assert training["pretraining"] == [{"run": str(donor_run), "seconds": 100.0}]
    assert runs.training_seconds(training) == pytest.approx(training["seconds"] + 100.0, abs=0.11)
    visionzoo("train", "mura_multitask_resnet", *common, "--weights", str(donor_run / "best_model.keras"), "--seed", "7")
    second = next(folder for folder in (tmp_path / "runs").iterdir() if folder != run)
    visionzoo("ensemble", str(run), str(second), "--out", str(tmp_path / "ensembles"))
    (joined,) = (tmp_path / "ensembles").iterdir()
    together = runs.read_json(joined / "training.json")
    own = sum(runs.read_json(folder / "training.json")["seconds"] for folder in (run, second))
    assert together["pretraining"] == [{"run": str(donor_run), "seconds": 100.0}]  # named two ways, one run
    assert runs.training_seconds(together) == pytest.approx(own + 100.0, abs=0.2)
    # shipped X-ray versions are ONNX only: merging two of them still counts the shared pretraining once
    for folder in (run, second):
        visionzoo("export", str(folder), "--out", str(tmp_path / "exports"), "--savedmodel", "never")
    versions = tmp_path / "exports" / "mura_multitask_resnet"
    assert (versions / "1" / "model.onnx").is_file() and (versions / "2" / "model.onnx").is_file()
    visionzoo("ensemble", str(versions / "1"), str(versions / "2"))
    merged = json.loads((versions / "3" / "metadata.json").read_text())["training"]
    assert merged["pretraining"] == [{"run": str(donor_run), "seconds": 100.0}]
    assert runs.training_seconds(merged) == pytest.approx(own + 100.0, abs=0.2)

    missing = visionzoo("train", "mura_multitask_resnet", *common, "--weights", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr[-2000:]
    assert "nowhere: no such file" in missing.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 2  # the refused run left no folder


def test_the_x_ray_recipes_help_says_it_can_start_from_pretrained_layers():
    shown = visionzoo("train", "mura_multitask_resnet", "--help").stdout
    assert "none (random); --weights RUN or FILE starts the layers it shares" in " ".join(shown.split())
    assert "- (no pretrained backbone)" in visionzoo("train", "mnist_lenet", "--help").stdout


def test_the_pretraining_run_is_recorded_relative_to_the_project(tmp_path, monkeypatch):
    """An absolute --weights path inside the working folder is recorded relative to it, as ensemble members
    are: a committed training.json must name the run on another machine too."""
    from visionzoo.training import train

    donor_run = tmp_path / "runs" / "xray_trunk_cifar10-1"
    donor_run.mkdir(parents=True)
    runs.write_json(donor_run / "training.json", {"seconds": 100.0})
    monkeypatch.chdir(tmp_path)
    assert train.pretraining_run(str(donor_run / "best_model.keras")) == {"run": "runs/xray_trunk_cifar10-1", "seconds": 100.0}
    assert train.pretraining_run("runs/xray_trunk_cifar10-1") == {"run": "runs/xray_trunk_cifar10-1", "seconds": 100.0}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert train.pretraining_run(str(donor_run))["run"] == str(donor_run)  # not inside the working folder: as given
    assert train.pretraining_run("imagenet") is None and train.pretraining_run(None) is None
