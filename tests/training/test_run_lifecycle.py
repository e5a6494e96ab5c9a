"""Training that forgives: a missing download is one line and leaves nothing, a killed run
resumes where it stopped, and every run folder says whether it is finished."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.training.test_cli import visionzoo
from visionzoo.training import runs

EPOCHS = 40


def _history(run: Path) -> list[dict]:
    import csv

    with (run / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_missing_imagenet_weights_is_one_line_and_leaves_no_run_folder(synthetic, tmp_path):
    # an empty Keras cache and a proxy that refuses at once: no network, whatever the machine has
    offline = {"KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "no_proxy": "", "NO_PROXY": ""}
    result = visionzoo("train", "bloodcell_mobilenetv3", "--smoke", "--data-dir", str(synthetic["blood_pbc"]),
                       "--out", str(tmp_path / "runs"), check=False, env=offline)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("visionzoo train: error:")]
    assert len(errors) == 1 and "ImageNet weights" in errors[0]
    for fix in ("--weights none", "--weights PATH", "--config visionzoo/training/configs/bloodcell_scratch.toml"):
        assert fix in errors[0]
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def _killed_run(tmp_path) -> Path:
    """A LeNet run SIGKILLed after at least two completed epochs of EPOCHS."""
    from visionzoo.training.data.synthetic import write_idx_files

    data = write_idx_files(tmp_path / "idx")
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "visionzoo.training", "train", "mnist_lenet", "--data-dir", str(data),
               "--epochs", str(EPOCHS), "--batch-size", "8", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)})  # no clean-up: its temp files stay here
    try:
        deadline, run = time.monotonic() + 240, None
        while time.monotonic() < deadline:
            assert process.poll() is None, "training ended before the test could kill it"
            found = list(out.glob("*/status.json"))
            if found and json.loads(found[0].read_text()).get("epochs_completed", 0) >= 2:
                run = found[0].parent
                break
            time.sleep(0.02)
        process.kill()  # SIGKILL: no clean-up code runs
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert run is not None, "no epoch completed in time"
    return run


def test_a_killed_run_resumes_from_its_last_completed_epoch(tmp_path):
    run = _killed_run(tmp_path)
    assert runs.read_state(run) == runs.UNFINISHED and (run / "backup").is_dir()
    before = _history(run)
    completed, trained = runs.read_status(run)["epochs_completed"], runs.read_status(run)["seconds_trained"]
    assert 2 <= completed <= len(before) < EPOCHS and trained > 0

    result = visionzoo("train", "--resume", str(run))
    assert f"run folder: {run}" in result.stdout
    first = int(re.search(rf"Epoch (\d+)/{EPOCHS}", result.stdout + result.stderr).group(1))
    assert completed + 1 <= first <= len(before) + 1  # continued where the backup was, not from epoch 1
    after = _history(run)
    assert [int(row["epoch"]) for row in after] == list(range(EPOCHS))  # every epoch once
    assert after[:completed] == before[:completed]  # the epochs done before the kill were not redone
    assert runs.read_state(run) == runs.FINISHED and not (run / "backup").exists()
    training = json.loads((run / "training.json").read_text())
    assert training["resumed_after_epochs"] == completed
    # the time behind the model counts the epochs before the kill as well as those after
    assert training["seconds_before_resume"] == trained and training["seconds"] > trained
    assert (run / "metrics.json").is_file()

    again = visionzoo("train", "--resume", str(run), check=False)
    assert again.returncode == 2 and "already finished" in again.stderr
    mixed = visionzoo("train", "--resume", str(run), "--epochs", "3", check=False)
    assert mixed.returncode == 2 and "recorded settings" in mixed.stderr


def test_a_killed_run_can_be_finished_where_it_stands(tmp_path):
    """`visionzoo train --finish RUN`: evaluate the best checkpoint so far and mark the run finished,
    recording how many of the planned epochs it completed (what to do when time runs out)."""
    run = _killed_run(tmp_path)
    completed = runs.read_status(run)["epochs_completed"]
    assert runs.export_refusal(run) is not None
    result = visionzoo("train", "--finish", str(run))
    assert f"run folder: {run}" in result.stdout and "Epoch " not in result.stdout + result.stderr  # no training
    assert runs.read_state(run) == runs.FINISHED and runs.export_refusal(run) is None and not (run / "backup").exists()
    training = json.loads((run / "training.json").read_text())
    assert training["stopped_early"] == {"epochs_completed": completed, "epochs_planned": EPOCHS} and training["seconds"] > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1 and set(metrics) == {"val", "test"}
    assert runs.read_samples(run)["split"] == "test"
    again = visionzoo("train", "--finish", str(run), check=False)
    assert again.returncode == 2 and "already finished" in again.stderr


def test_run_state_is_recorded_and_old_runs_count_as_finished(tmp_path):
    committed = sorted((REPO / "runs").glob("*/training.json"))
    assert committed, "the shipped run folders are the legacy case"
    assert any(not (path.parent / runs.STATUS_FILE).exists() for path in committed)  # written before status.json existed
    for path in committed:  # legacy or recorded: every committed run is finished and exportable
        assert runs.read_state(path.parent) == runs.FINISHED and runs.export_refusal(path.parent) is None
    run = tmp_path / "model-1"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert runs.read_state(run) == runs.UNFINISHED  # no final file: killed before it finished
    assert "--resume" in runs.export_refusal(run) and "--force" in runs.export_refusal(run)
    runs.write_status(run, runs.UNFINISHED, epochs_completed=3)
    runs.write_status(run, runs.SMOKE)
    assert runs.read_status(run)["epochs_completed"] == 3 and runs.read_state(run) == runs.SMOKE
    assert "smoke run" in runs.export_refusal(run)
    with pytest.raises(ValueError, match="unknown run state"):
        runs.write_status(run, "done")


def test_a_one_epoch_learning_curve_shows_its_point(tmp_path):
    from PIL import Image

    from visionzoo.training import plots

    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.5,1.2,0.4,1.3\n")
    path = plots.learning_curves(history, tmp_path / "curves.png")
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # matplotlib's first two colours: train, validation
        close = np.abs(pixels - np.array(colour)).sum(axis=-1) < 30
        assert close.sum() > 180  # legend lines alone give ~130 pixels; the two panels' markers ~120 more
