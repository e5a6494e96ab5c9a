"""Run folders: the one module that reads and writes them (no TensorFlow, so any tool can read one).

    <run>/config.json      the resolved TrainConfig          load_run
    <run>/data.json        splits, class names, skipped files read_json / write_json (atomic)
    <run>/samples.json     a few evenly spread evaluation examples, by id, so export decodes only
                           those files instead of re-reading the dataset   write_samples / read_samples
    <run>/history.csv      one row per epoch                  read_history / write_history (atomic)
    <run>/status.json      the run's state, below             read_status / write_status
    <run>/metrics.json, training.json, plots/, best_model.keras

The state in status.json:

States:
    unfinished  training started and has not completed (running now, killed, or stopped by an error
                after at least one epoch); `visionzoo train --resume RUN` continues it
    finished    training and the final evaluation completed
    smoke       a completed `--smoke` run (a few batches at toy size): proves the setup, not a model

Run folders written before status.json existed have none: they count as finished when they hold
training.json, the last file `run_training` writes, else as unfinished.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

STATUS_FILE = "status.json"
SAMPLES_FILE = "samples.json"
SAMPLE_COUNT = 16  # export keeps four distinct files of these as golden files
FINAL_FILE = "training.json"  # written last by run_training; marks legacy runs as finished
UNFINISHED, FINISHED, SMOKE = "unfinished", "finished", "smoke"
STATES = (UNFINISHED, FINISHED, SMOKE)


def read_status(run_dir: Path) -> dict:
    """{"state": ..., "epochs_completed": ..., "updated_at": ...}; inferred for legacy run folders."""
    run_dir = Path(run_dir)
    path = run_dir / STATUS_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return {"state": FINISHED if (run_dir / FINAL_FILE).is_file() else UNFINISHED, "inferred": True}


def read_state(run_dir: Path) -> str:
    return read_status(run_dir)["state"]


def write_status(run_dir: Path, state: str, **fields) -> None:
    """Record `state` (and e.g. epochs_completed) atomically, keeping the other recorded fields."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
    run_dir = Path(run_dir)
    path = run_dir / STATUS_FILE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    document = {**previous, **fields, "state": state,
                "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds")}  # finish_run times from it
    write_json(path, document)


def export_refusal(run_dir: Path) -> str | None:
    """Why `visionzoo export` should not export this run without --force, or None."""
    state = read_state(run_dir)
    if state == SMOKE:
        return (f"{run_dir} is a smoke run (a few batches at toy size), not a trained model; "
                "train without --smoke, or pass --force to export it anyway")
    if state == UNFINISHED:
        return (f"{run_dir} is unfinished (training did not complete); continue it with "
                f"`visionzoo train --resume {run_dir}`, or pass --force to export its best checkpoint so far")
    return None


def write_json(path: Path, data) -> None:
    """Write JSON atomically (temporary file + rename), so readers never see half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default))
    os.replace(temporary, path)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def read_json(path: Path) -> dict:
    """A JSON file's content, {} when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def read_history(path: Path) -> list[dict]:
    """history.csv as a list of rows (strings), oldest epoch first; [] when absent."""
    if not Path(path).is_file():
        return []
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_history(path: Path, rows: list[dict]) -> None:
    columns = ["epoch"] + sorted({key for row in rows for key in row} - {"epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    temporary = Path(path).with_name(f".{Path(path).name}.tmp")
    temporary.write_text(buffer.getvalue())
    os.replace(temporary, path)


def spread(count: int, wanted: int) -> np.ndarray:
    """`wanted` indices spread evenly over `count` examples (splits are often sorted by class)."""
    return np.unique(np.linspace(0, count - 1, min(count, wanted)).astype(int))


def write_samples(run_dir: Path, split: str, ids, count: int = SAMPLE_COUNT) -> None:
    """Record `count` evenly spread example ids of `split` (the split export checks parity on)."""
    ids = np.asarray(ids)
    write_json(Path(run_dir) / SAMPLES_FILE, {"split": split, "ids": [str(i) for i in ids[spread(len(ids), count)]]})


def read_samples(run_dir: Path) -> dict:
    """{"split": ..., "ids": [...]} or {} for runs that recorded none."""
    return read_json(Path(run_dir) / SAMPLES_FILE)


def load_run(run_dir: Path):
    """(TrainConfig, best checkpoint path) of a run folder; clear errors for anything else."""
    from .recipe import TrainConfig

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json); pass the folder `visionzoo train` printed")
    checkpoint = run_dir / "best_model.keras"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{run_dir} has no best_model.keras; did training finish?")
    return TrainConfig.from_json(config_path.read_text()), checkpoint


def recorded_path(path: Path) -> str:
    """A folder as training.json records it (an ensemble's member, a run's pretraining run): relative to
    the working directory when it lies inside it (an absolute path typed on the command line would not
    name it on another machine), else as given."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def training_seconds(training: dict) -> float | None:
    """The wall time behind a model, from its training.json (or its export's metadata "training"):
    `seconds_with_init` when the run started from another model's weights (init_from, or a pretraining
    run given as model_options.weights), else `seconds`."""
    return training.get("seconds_with_init", training.get("seconds"))


def pretraining_runs(training: dict) -> list[dict]:
    """The runs a model's starting weights came from, from its training.json (or its export's metadata
    "training"): a list of {"run", "seconds"}, one per pretraining run. (Older runs recorded their one
    pretraining run as a bare dict; it reads as a list of one.)"""
    recorded = training.get("pretraining") or []
    return [recorded] if isinstance(recorded, dict) else list(recorded)


def with_pretraining(training: dict, pretraining: list[dict]) -> dict:
    """`training` plus its pretraining runs, each counted once (by run folder), and `seconds_with_init`,
    its own seconds plus theirs; unchanged when there is none or its own time is unknown."""
    unique = list({entry["run"]: entry for entry in pretraining}.values())
    if not unique or training.get("seconds") is None:
        return training
    return {**training, "pretraining": unique,
            "seconds_with_init": round(training["seconds"] + sum(entry["seconds"] for entry in unique), 1)}
