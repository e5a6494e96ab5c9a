"""The exported-model repository: `<models_dir>/<export name>/<version>/` folders written by
`visionzoo export`. Picks the version to serve (newest, or pinned), reads metadata.json, and
verifies the files it serves against the sha256 recorded at export time.

A version may carry precision variants beside `model.onnx` (metadata.json `variants`, e.g. the INT8
file `visionzoo quantize` writes); each is verified the same way when it is served.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from visionzoo.preprocessing import ImageSpec

MODEL_FILE = "model.onnx"


class ModelUnavailable(RuntimeError):
    """A served model cannot be used; the message says why and what to do (and never shows the
    server's file system, since it may reach anonymous callers)."""


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
        return self.folder / MODEL_FILE

    def model_file(self, precision: str = "fp32") -> Path:
        """The ONNX file for `precision`: model.onnx, or a variant listed in metadata.json."""
        if precision in ("fp32", "fp16"):  # fp16 is converted from the fp32 file at load (CUDA)
            return self.onnx_path
        variant = self.metadata.get("variants", {}).get(precision)
        if variant is None:
            known = ", ".join(["fp32", *self.metadata.get("variants", {})])
            raise ModelUnavailable(f"{self.served_as}: version {self.version} has no {precision} variant (it has {known}); "
                                   f"write one with `visionzoo quantize` or serve fp32")
        path = self.folder / variant["file"]
        verify_file(self.served_as, self.version, path, self.metadata)
        return path

    def file_sha256(self, path: Path) -> str:
        """The digest metadata.json records for one of this version's files (checked by `verify_file`
        when the version was loaded, or by `model_file` for a variant), so callers need not hash it again."""
        return self.metadata["files"][Path(path).name]

    @functools.cached_property
    def spec(self) -> ImageSpec:
        return ImageSpec.from_metadata(self.metadata["preprocessing"])

    @property
    def inputs(self) -> list[dict]:
        return self.metadata["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.metadata["outputs"]

    def golden_tolerance(self, output: str) -> float:
        return golden_tolerance(self.metadata.get("golden", {}), output)

    @property
    def labels(self) -> dict[str, list[str]]:
        return self.metadata["labels"]

    @property
    def task(self) -> str:
        return self.metadata["task"]

    def signature(self) -> tuple:
        """What a hot swap must not change: tensor names, types and shapes, preprocessing, labels."""
        return (json.dumps(self.inputs, sort_keys=True), json.dumps(self.outputs, sort_keys=True),
                json.dumps(self.metadata["preprocessing"], sort_keys=True), json.dumps(self.labels, sort_keys=True),
                self.task)

    def describe(self) -> dict:
        return {"name": self.served_as, "export": self.export_name, "version": self.version, "task": self.task}


def sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def available_versions(models_dir: Path, export: str) -> list[str]:
    """Complete versions of an export (folders holding metadata.json), oldest first; staging folders
    and anything not named by a number are ignored."""
    root = Path(models_dir) / export
    if not root.is_dir():
        return []
    versions = [p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / "metadata.json").is_file()]
    return sorted(versions, key=int)


def load_version(served_as: str, export: str, models_dir: Path, version: str | None = None) -> ModelVersion:
    """Resolve, read and verify `version` (None: the newest) of `export` under `models_dir`.

    Raises:
        ModelUnavailable: with the reason (no export, unknown version, missing or altered file).
    """
    versions = available_versions(models_dir, export)
    if not versions:
        raise ModelUnavailable(f"{served_as}: no exported versions of {export!r} in the models folder; "
                               "run `visionzoo export RUN` or set VISIONZOO_MODELS_DIR")
    wanted = version or versions[-1]
    if wanted not in versions:
        raise ModelUnavailable(f"{served_as}: version {wanted} not found (available: {', '.join(versions)})")
    folder = Path(models_dir) / export / wanted
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelUnavailable(f"{served_as}: version {wanted}: cannot read metadata.json ({type(error).__name__})") from error
    verify_file(served_as, wanted, folder / MODEL_FILE, metadata)
    return ModelVersion(served_as, export, wanted, folder, metadata)


def golden_tolerance(golden: dict, output: str) -> float:
    """How far `output` may move from its recorded golden values on another machine or engine:
    metadata.json `golden.tolerances[output]` where the export widened it (a Grad-CAM map is divided by
    its own peak, so CPUs that round differently move it by more than 1e-4), else `golden.tolerance`."""
    return float(golden.get("tolerances", {}).get(output, golden.get("tolerance", 1e-4)))


def verify_file(served_as: str, version: str, path: Path, metadata: dict) -> None:
    recorded = metadata.get("files", {}).get(path.name)
    if recorded is None:
        raise ModelUnavailable(f"{served_as}: version {version}: metadata.json records no sha256 for {path.name}; re-export the model")
    if not path.is_file():
        raise ModelUnavailable(f"{served_as}: version {version}: {path.name} is missing; restore it or re-export the model")
    actual = sha256(path)
    if actual != recorded:
        raise ModelUnavailable(
            f"{served_as}: version {version}: {path.name} does not match metadata.json (sha256 {actual[:12]}... instead of "
            f"{recorded[:12]}...); the file was altered or replaced: restore it or re-export the model")


def load_served(served_as: str, version: str | None = None, models_dir: Path | None = None) -> ModelVersion:
    """A served model's version as the service picks it (manifest, environment, newest or pinned);
    `models_dir` overrides VISIONZOO_MODELS_DIR."""
    from . import config

    settings = config.served_models()[served_as]
    return load_version(served_as, settings.export, models_dir or config.server_settings().models_dir,
                        version or settings.version)
