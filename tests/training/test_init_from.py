"""Training that starts from a trained model (`visionzoo train --init-from`): a run folder's
checkpoint or an export version's SavedModel weights become the new run's starting point, and
sources that cannot fit are refused by name before any run folder exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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
