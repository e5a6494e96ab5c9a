"""Blood-cell images, 8 classes, in the two forms people have them.

- PBC folders (Acevedo et al. 2020): `<root>/<class>/<file>.jpg`, optionally under
  `PBC_dataset_normal_DIB/`; images (mostly 360x363) are resized to the model size.
- AN2DL `training_set.npz` (seed-models.md §6): `images` (N, 96, 96, 3) uint8 and `labels` (N, 1).
  The source drops the last 2,021 samples of that file as artefacts; we do the same when the file
  has the known size (13,759), or when `drop_last` says so.

Class order is the AN2DL / BloodMNIST order. Splits follow the source: a stratified 20% test split,
then 15% of the rest for validation, from a fixed seed. The PBC loader lists the files with their
labels (`list_images`), splits the list (`split_indices`; `list_splits` gives the result without
decoding), then decodes the files the splits use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from visionzoo.preprocessing import ImageSpec, prepare_image

from .common import (
    DataFormatError,
    Examples,
    SplitData,
    decode_used,
    require_path,
    smoke_positions,
    stratified_split,
)

CLASS_NAMES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
DISPLAY_NAMES = {"ig": "immature granulocyte"}
AN2DL_SIZE = 13759
AN2DL_ARTIFACTS = 2021
# Source: train_test_split(test_size=0.2) then train_test_split(test_size=0.15) on the rest.
SPLIT_FRACTIONS = {"train": 0.8 * 0.85, "val": 0.8 * 0.15, "test": 0.2}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
PBC_DATASET = {"name": "PBC peripheral blood cells", "citation": "Acevedo et al. 2020, Data in Brief, doi:10.17632/snkd93bnjr.1",
               "licence": "CC BY 4.0"}
AN2DL_DATASET = {"name": "AN2DL blood-cell training_set.npz", "citation": "Politecnico di Milano AN2DL course (2024)",
                 "licence": "course data; not redistributable without the course's terms"}


def _pbc_root(data_dir: Path) -> Path:
    nested = data_dir / "PBC_dataset_normal_DIB"
    return nested if nested.is_dir() else data_dir


def detect_pbc(data_dir: Path) -> bool:
    root = _pbc_root(data_dir)
    return root.is_dir() and any((root / name).is_dir() for name in CLASS_NAMES)


def detect_npz(data_dir: Path) -> bool:
    path = data_dir if data_dir.suffix == ".npz" else data_dir / "training_set.npz"
    if not path.is_file():
        return False
    with np.load(path) as archive:
        return {"images", "labels"} <= set(archive.files)


@dataclass(frozen=True)
class Listing:
    """PBC images found on disk with their labels, in a fixed order, not decoded."""

    paths: list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> Listing:
        return Listing([self.paths[i] for i in indices], self.labels[indices])


def list_images(data_dir: Path) -> Listing:
    """Every image in the `<class>/<file>` folders: class folders by name, files by name within each.
    Every class folder must be one of CLASS_NAMES."""
    root = require_path(_pbc_root(Path(data_dir)), "a PBC folder with one sub-folder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in CLASS_NAMES]
    if unknown:
        raise DataFormatError(f"{root}: unknown class folders {unknown}; expected {CLASS_NAMES}")
    paths, labels = [], []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [CLASS_NAMES.index(folder.name)] * len(files)
    if not paths:
        raise DataFormatError(f"{root}: no images found in the class folders")
    return Listing(paths, np.array(labels, dtype=np.int64))


def split_indices(labels: np.ndarray, seed: int = 42) -> dict[str, np.ndarray]:
    """The train/val/test indices, stratified on the label (what both loaders split with)."""
    return stratified_split(labels, SPLIT_FRACTIONS, seed)


def list_splits(data_dir: Path, seed: int = 42) -> dict[str, Listing]:
    """The splits `load_pbc` makes, as file lists with labels, without decoding anything. The same as
    `load_pbc`'s, less any file that does not decode (with `skip_bad`, an unreadable file leaves its
    split and every other file keeps its own, so one broken file cannot move images between splits)."""
    listing = list_images(data_dir)
    return {name: listing.subset(idx) for name, idx in split_indices(listing.labels, seed).items()}


def _split(images: np.ndarray, labels: np.ndarray, ids: np.ndarray, seed: int) -> dict[str, Examples]:
    examples = Examples(images=images, targets={"label": labels}, ids=ids)
    return {name: examples.subset(idx) for name, idx in split_indices(labels, seed).items()}


def load_pbc(
    data_dir: Path, spec: ImageSpec, *, seed: int = 42, skip_bad: bool = False, max_examples: int | None = None
) -> SplitData:
    """Read `<class>/<file>` folders: list the files, split the list, then decode what the splits use.

    `max_examples` (a smoke limit) keeps that many evenly spaced files per split before decoding;
    the result equals limiting the full load's splits afterwards when every kept file decodes.
    """
    root = _pbc_root(Path(data_dir))
    listing = list_images(Path(data_dir))
    indices = {name: idx[smoke_positions(len(idx), max_examples)] for name, idx in split_indices(listing.labels, seed).items()}
    decoded = decode_used(listing.paths, indices, spec, skip_bad, "blood cells")
    ids = np.array([str(path) for path in listing.paths])
    splits = {}
    for name, idx in indices.items():
        members, rows = decoded.rows(idx)  # an unreadable file (skip_bad) leaves its split; the others stay
        splits[name] = Examples(images=decoded.pixels[rows], targets={"label": listing.labels[members]}, ids=ids[members])
    return SplitData(
        splits=splits,
        class_names={"label": CLASS_NAMES},
        source=f"PBC folders at {root}",
        skipped=decoded.skipped,
        notes={"split_seed": seed, "split_fractions": SPLIT_FRACTIONS, "dataset": PBC_DATASET},
    )


def load_npz(
    data_dir: Path, spec: ImageSpec, *, seed: int = 42, skip_bad: bool = False, drop_last: int | None = None
) -> SplitData:
    """Read the AN2DL `training_set.npz` (a path to the file or to its folder)."""
    del skip_bad  # arrays cannot be unreadable one by one
    path = Path(data_dir)
    path = require_path(path if path.suffix == ".npz" else path / "training_set.npz", "training_set.npz")
    with np.load(path) as archive:
        missing = {"images", "labels"} - set(archive.files)
        if missing:
            raise DataFormatError(f"{path}: missing arrays {sorted(missing)} (has {archive.files})")
        images, labels = archive["images"], archive["labels"].reshape(-1).astype(np.int64)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise DataFormatError(f"{path}: expected images (N,H,W,3) and labels (N,1), got {images.shape}, {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise DataFormatError(f"{path}: labels must be 0..{len(CLASS_NAMES) - 1}, got {labels.min()}..{labels.max()}")
    if drop_last is None:
        drop_last = AN2DL_ARTIFACTS if len(images) == AN2DL_SIZE else 0
    if drop_last:
        images, labels = images[:-drop_last], labels[:-drop_last]
    if images.dtype != np.uint8:
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    if images.shape[1:] != spec.shape:
        images = np.stack([prepare_image(Image.fromarray(im), spec) for im in images])
    ids = np.array([f"{path}#{i}" for i in range(len(images))])
    return SplitData(
        splits=_split(images, labels, ids, seed),
        class_names={"label": CLASS_NAMES},
        source=f"AN2DL npz {path}",
        notes={"split_seed": seed, "split_fractions": SPLIT_FRACTIONS, "dropped_last": drop_last, "dataset": AN2DL_DATASET},
    )
