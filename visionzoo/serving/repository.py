"""The exported-model repository: `<models_dir>/<export name>/<version>/` folders written by
`visionzoo export`. Picks the version to serve (newest, or pinned), reads metadata.json, and
verifies the served files against the sha256 recorded at export time."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from visionzoo.preprocessing import ImageSpec

from . import config

SERVED_FILES = ("model.onnx",)  # what serving reads besides metadata.json (a Bento ships only these)


class ModelUnavailable(RuntimeError):
    """A served model cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ModelVersion:
    """One exported version, verified and described by its metadata.json."""

    served_as: str
    export_name: str
    version: str
    folder: Path
    metadata: dict

    @property
    def onnx_path(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def spec(self) -> ImageSpec:
        keys = ("height", "width", "color_mode", "resize_method", "tiling")
        return ImageSpec(**{k: self.metadata["preprocessing"][k] for k in keys})

    @property
    def inputs(self) -> list[dict]:
        return self.metadata["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.metadata["outputs"]

    @property
    def labels(self) -> dict[str, list[str]]:
        return self.metadata["labels"]

    @property
    def task(self) -> str:
        return self.metadata["task"]

    def signature(self) -> tuple:
        """What a hot swap must not change: tensor names, types and shapes, preprocessing, labels."""
        return (json.dumps(self.inputs, sort_keys=True), json.dumps(self.outputs, sort_keys=True),
                json.dumps(self.metadata["preprocessing"], sort_keys=True), json.dumps(self.labels, sort_keys=True))

    def describe(self) -> dict:
        return {"name": self.served_as, "export": self.export_name, "version": self.version, "task": self.task}


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def available_versions(served_as: str, models_dir: Path | None = None) -> list[str]:
    """Complete versions (folders holding metadata.json), oldest first; staging folders are ignored.
    `models_dir` defaults to the configured one (VISIONZOO_MODELS_DIR)."""
    root = (models_dir or config.models_dir()) / config.export_name(served_as)
    if not root.is_dir():
        return []
    versions = [p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / "metadata.json").is_file()]
    return sorted(versions, key=int)


def load_version(served_as: str, version: str | None = None, models_dir: Path | None = None) -> ModelVersion:
    """Resolve, read and verify a version (the pinned one, else the newest) under `models_dir`
    (default: the configured one).

    Raises:
        ModelUnavailable: with the reason (no export, unknown version, missing or altered file).
    """
    export = config.export_name(served_as)
    root = (models_dir or config.models_dir()) / export
    versions = available_versions(served_as, models_dir)
    wanted = version or config.pinned_version(served_as)
    if not versions:
        raise ModelUnavailable(f"{served_as}: no exported versions under {root}; run `visionzoo export RUN` or set VISIONZOO_MODELS_DIR")
    if wanted is None:
        wanted = versions[-1]
    elif wanted not in versions:
        raise ModelUnavailable(f"{served_as}: version {wanted} not found under {root} (available: {', '.join(versions)})")
    folder = root / wanted
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelUnavailable(f"{served_as}: cannot read {folder / 'metadata.json'} ({error})") from error
    verify_files(served_as, folder, metadata)
    return ModelVersion(served_as, export, wanted, folder, metadata)


def verify_files(served_as: str, folder: Path, metadata: dict) -> None:
    recorded = metadata.get("files", {})
    for name in SERVED_FILES:
        path = folder / name
        if name not in recorded:
            raise ModelUnavailable(f"{served_as}: metadata.json in {folder} records no sha256 for {name}; re-export the model")
        if not path.is_file():
            raise ModelUnavailable(f"{served_as}: {path} is missing; restore it or re-export the model")
        actual = _sha256(path)
        if actual != recorded[name]:
            raise ModelUnavailable(
                f"{served_as}: {path} does not match metadata.json (sha256 {actual[:12]}... instead of {recorded[name][:12]}...); "
                "the file was altered or replaced: restore it or re-export the model"
            )
