"""Run folder state: the one owner of `<run>/status.json` (no TensorFlow, so any tool can read it).

States:
    unfinished  training started and has not completed (running now, killed, or stopped by an error
                after at least one epoch); `visionzoo train --resume RUN` continues it
    finished    training and the final evaluation completed
    smoke       a completed `--smoke` run (a few batches at toy size): proves the setup, not a model

Run folders written before status.json existed have none: they count as finished when they hold
training.json, the last file `run_training` writes, else as unfinished.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

STATUS_FILE = "status.json"
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
                "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
    os.replace(temporary, path)


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
