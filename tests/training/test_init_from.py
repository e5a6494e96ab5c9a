"""Training that starts from a trained model (`visionzoo train --init-from`): a run folder's
checkpoint or an export version's SavedModel weights become the new run's starting point, and
sources that cannot fit are refused by name before any run folder exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.training.test_cli import visionzoo
from visionzoo.training import runs, train
from visionzoo.training.recipe import TrainConfig


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, a finished 1-epoch LeNet run on it)."""
    from visionzoo.training.data.synthetic import write_idx_files

    root = tmp_path_factory.mktemp("init")
    data = write_idx_files(root / "idx")
    config = TrainConfig.from_recipe(train.get_recipe("mnist_lenet"), str(data), epochs=1, batch_size=8,
                                     out=str(root / "runs"))
    return data, train.run_training(config)


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    return TrainConfig.from_recipe(train.get_recipe("mnist_lenet"), str(data), epochs=1, batch_size=8, out=str(out),
                                   **overrides)


def test_the_model_starts_with_the_source_runs_weights(source_run, tmp_path):
    import tf_keras as keras

    data, run = source_run
    prepared = train.prepare(_config(data, tmp_path, init_from=str(run)))
    start = train.load_init_source(prepared)
    model = train.build_for_data(prepared)
    images = prepared.data.splits["val"].images[:8].astype(np.float32)
    trained = keras.models.load_model(run / "best_model.keras", compile=False)(images).numpy()
    assert np.abs(model(images).numpy() - trained).max() > 1e-3  # a fresh build answers differently
    train.copy_weights(start, model, str(run))
    np.testing.assert_allclose(model(images).numpy(), trained, atol=1e-6)


def test_a_run_started_from_another_records_it_and_exports(source_run, tmp_path):
    data, run = source_run
    visionzoo("train", "mnist_lenet", "--data-dir", str(data), "--epochs", "1", "--batch-size", "8",
              "--out", str(tmp_path / "runs"), "--init-from", str(run))
    (child,) = (tmp_path / "runs").iterdir()
    assert runs.read_state(child) == runs.FINISHED
    assert json.loads((child / "config.json").read_text())["init_from"] == str(run)
    # its time includes the source's, so a model card states what the weights cost in all
    own, source = (json.loads((folder / "training.json").read_text()) for folder in (child, run))
    assert own["seconds_with_init"] == pytest.approx(own["seconds"] + source["seconds"], abs=0.11)
    visionzoo("export", str(child), "--out", str(tmp_path / "exports"))
    (version,) = (tmp_path / "exports" / "mnist_lenet").iterdir()
    metadata = json.loads((version / "metadata.json").read_text())
    assert runs.training_seconds(metadata["training"]) == own["seconds_with_init"]
    assert train.init_source_seconds(version) == own["seconds_with_init"]  # what a run started from it adds on
    # and that export, which ships its SavedModel, can start a run of its own (weights checked against its golden outputs)
    prepared = train.prepare(_config(data, tmp_path / "again", init_from=str(version)))
    start = train.load_init_source(prepared)
    model = train.build_for_data(prepared)
    train.copy_weights(start, model, str(version))
    images = prepared.data.splits["val"].images[:4].astype(np.float32)
    np.testing.assert_allclose(model(images).numpy(), start(images).numpy(), atol=1e-6)


@pytest.mark.parametrize("case", ["other recipe", "not a model", "unfinished"])
def test_sources_that_cannot_fit_are_refused_by_name_and_leave_no_run(source_run, tmp_path, case):
    data, run = source_run
    model, source, expected = "mnist_lenet", str(run), ""
    if case == "other recipe":
        model, expected = "mnist_4conv", "is a mnist_lenet model, not mnist_4conv"
    elif case == "not a model":
        source, expected = str(tmp_path), "neither a run folder"
    else:
        copy = tmp_path / "copy"
        copy.mkdir()
        for name in ("config.json", "data.json"):
            (copy / name).write_bytes((run / name).read_bytes())
        runs.write_status(copy, runs.UNFINISHED, epochs_completed=0)
        source, expected = str(copy), "--resume"
    result = visionzoo("train", model, "--data-dir", str(data), "--epochs", "1", "--out", str(tmp_path / "runs"),
                       "--init-from", source, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert expected in result.stderr and "visionzoo train: error: init_from" in result.stderr
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_an_export_starts_a_run_at_another_input_size(synthetic, tmp_path):
    """The served Mars segmenter restored and checked against its golden files at its own input size,
    its weights then copied into the same network built for 32x64 tiles."""
    version = max((REPO / "exported_models" / "mars_dual_unet").glob("[0-9]*"), key=lambda p: int(p.name))
    own_size = tuple(json.loads((version / "metadata.json").read_text())["inputs"][0]["shape"][1:3])
    config = TrainConfig.from_recipe(train.get_recipe("mars_dual_unet"), str(synthetic["ai4mars"]), out=str(tmp_path),
                                     image_size=[32, 64], init_from=str(version), model_options={"bn_momentum": 0.9})
    prepared = train.prepare(config)
    start = train.load_init_source(prepared)  # golden outputs reproduced at its own size, else ReviseError
    assert tuple(start.input_shape[1:3]) == own_size != (32, 64)
    model = train.build_for_data(prepared)
    train.copy_weights(start, model, str(version))
    assert tuple(model.input_shape[1:3]) == (32, 64)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), start.get_weights()))
    tiles = prepared.data.splits["val"].images[:2].astype(np.float32)
    assert model(tiles).shape == (2, 32, 64, 5)


def test_the_split_check_ignores_what_the_input_size_changes():
    """Oversampled copies and pixel shares move with the input size; the frames in each split do not."""
    from visionzoo.training.ensemble import same_split

    def described(train_copies: int, added: int, val: int = 300, seed: int = 42) -> dict:
        return {"split_seed": seed, "class_names": {"mask": ["background", "soil"]}, "balance_classes_added": added,
                "splits": {"train": {"examples": 1700 + train_copies, "mask_pixel_share": {"soil": 0.1 + added / 1e5}},
                           "val": {"examples": val}}}

    assert same_split(described(1844, 1844), described(1899, 1899))
    assert not same_split(described(1844, 1844), described(1899, 1844))  # more frames in train
    assert not same_split(described(1844, 1844), described(1844, 1844, val=290))
    assert not same_split(described(1844, 1844), described(1844, 1844, seed=7))
