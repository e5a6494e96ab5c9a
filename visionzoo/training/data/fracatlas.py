"""FracAtlas-style X-rays (Abedeen et al. 2023): the second source for the two-head MURA model.

Layout: `images/{Fractured,Non_fractured}/*.jpg` plus `dataset.csv` with the columns `image_id,
hand, leg, hip, shoulder, mixed, hardware, ..., fractured`. Only images present on disk are used, so
a subset folder works. Heads: abnormal = `fractured`; body part = `mixed` when set, else the single
region flag. `hardware` (metal implants, a shortcut to "abnormal") is kept per image so evaluation
can report accuracy with and without implants.

FracAtlas has no patient ids, so the split is by image (stratified on body part x abnormal) and the
same patient may appear in two splits.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageSpec

from .common import (
    DataFormatError,
    Examples,
    SplitData,
    decode_used,
    require_path,
    smoke_positions,
    stratified_split,
)

logger = logging.getLogger(__name__)

BODY_PARTS = ["hand", "leg", "hip", "shoulder", "mixed"]
ABNORMAL_NAMES = ["normal", "abnormal"]
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
FOLDERS = {"Fractured": 1, "Non_fractured": 0}
DATASET = {"name": "FracAtlas", "citation": "Abedeen et al. 2023, Scientific Data 10:521, doi:10.6084/m9.figshare.22363012",
           "licence": "CC BY 4.0"}


def detect(data_dir: Path) -> bool:
    return (data_dir / "dataset.csv").is_file() and (data_dir / "images").is_dir()


def _body_part(row: dict[str, str]) -> str:
    if row.get("mixed") == "1":
        return "mixed"
    flags = [part for part in BODY_PARTS[:-1] if row.get(part) == "1"]
    if len(flags) != 1:
        raise DataFormatError(f"{row['image_id']}: expected exactly one region flag, got {flags or 'none'}")
    return flags[0]


@dataclass(frozen=True)
class Listing:
    """FracAtlas images found on disk with their labels, in a fixed order, not decoded."""

    paths: list[Path]
    abnormal: np.ndarray
    body_part: np.ndarray
    hardware: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> Listing:
        return Listing([self.paths[i] for i in indices], self.abnormal[indices], self.body_part[indices], self.hardware[indices])


def list_images(data_dir: Path) -> Listing:
    """Every labelled image under `images/{Fractured,Non_fractured}`, folder by folder, sorted by name."""
    root = Path(data_dir)
    table = require_path(root / "dataset.csv", "FracAtlas dataset.csv")
    with table.open(newline="") as handle:
        rows = {row["image_id"]: row for row in csv.DictReader(handle)}
    required = {"image_id", "fractured", "hardware", "mixed", *BODY_PARTS[:-1]}
    if rows and not required <= set(next(iter(rows.values()))):
        raise DataFormatError(f"{table}: needs columns {sorted(required)}")
    paths, abnormal, parts, hardware = [], [], [], []
    for folder, folder_label in FOLDERS.items():
        directory = root / "images" / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.jpg")):
            row = rows.get(path.name)
            if row is None:
                logger.warning("%s has no row in dataset.csv; skipped", path)
                continue
            label = int(row["fractured"])
            if label != folder_label:
                logger.warning("%s: folder says %s but dataset.csv fractured=%s; skipped as ambiguous", path, folder, label)
                continue
            paths.append(path)
            abnormal.append(label)
            parts.append(BODY_PARTS.index(_body_part(row)))
            hardware.append(int(row["hardware"]))
    if not paths:
        raise DataFormatError(f"{root}: no images under images/Fractured or images/Non_fractured")
    return Listing(paths, np.array(abnormal, dtype=np.int64), np.array(parts, dtype=np.int64),
                   np.array(hardware, dtype=np.int64))


def split_indices(abnormal: np.ndarray, body_part: np.ndarray, seed: int = 42) -> dict[str, np.ndarray]:
    """The train/val/test indices, stratified on body part x abnormal (what `load` splits with)."""
    return stratified_split(body_part * 2 + abnormal, SPLIT_FRACTIONS, seed)


def list_splits(data_dir: Path, seed: int = 42) -> dict[str, Listing]:
    """The splits `load` makes, as file lists with labels, without decoding anything. The same as
    `load`'s when every image decodes (`load` splits only the images it could decode)."""
    listing = list_images(data_dir)
    return {name: listing.subset(idx) for name, idx in split_indices(listing.abnormal, listing.body_part, seed).items()}


def _examples(listing: Listing, pixels: np.ndarray, rows: np.ndarray, members: np.ndarray) -> Examples:
    """Examples of the listing's `members`, whose pixels are `pixels[rows]`."""
    return Examples(images=pixels[rows], targets={"abnormal": listing.abnormal[members], "body_part": listing.body_part[members]},
                    ids=np.array([str(listing.paths[i]) for i in members]), extras={"hardware": listing.hardware[members]})


def load(data_dir: Path, spec: ImageSpec, *, seed: int = 42, skip_bad: bool = False, max_examples: int | None = None) -> SplitData:
    """List the images, split the list, then decode what the splits use (`max_examples`, a smoke
    limit, keeps that many evenly spaced images per split before decoding)."""
    root = Path(data_dir)
    listing = list_images(root)
    indices = {name: idx[smoke_positions(len(idx), max_examples)] for name, idx in split_indices(listing.abnormal, listing.body_part, seed).items()}
    decoded = decode_used(listing.paths, indices, spec, skip_bad, "x-rays")
    # an unreadable file (skip_bad) leaves its split; the others keep theirs
    splits = {name: _examples(listing, decoded.pixels, rows, members)
              for name, (members, rows) in ((name, decoded.rows(idx)) for name, idx in indices.items())}
    return SplitData(
        splits=splits,
        class_names={"abnormal": ABNORMAL_NAMES, "body_part": BODY_PARTS},
        source=f"FracAtlas layout at {root}",
        skipped=decoded.skipped,
        notes={
            "split_seed": seed,
            "split_fractions": SPLIT_FRACTIONS,
            "split_unit": "image (FracAtlas has no patient ids: a patient may appear in two splits)",
            "dataset": DATASET,
        },
    )
