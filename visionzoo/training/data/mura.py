"""MURA-v1.1 musculoskeletal radiographs (Rajpurkar et al. 2017), read from the official layout.

`<root>/MURA-v1.1/{train,valid}_labeled_studies.csv` (no header: `study_dir,label`),
`{train,valid}_image_paths.csv` (no header: one image path per line) and PNGs under
`{train,valid}/XR_<PART>/patient<N>/study<K>_{positive,negative}/image<M>.png`.

Labels are per study (1 = abnormal) and are copied to each of the study's images; the body part
comes from the `XR_<PART>` folder; the study id is kept so evaluation can average per study, as the
MURA paper does. The official `valid` split is our test split; a validation split is carved out of
`train` by patient, so no patient is in both.

Source bugs (seed-models.md §5.0) and the flags that reproduce them:
- `drop_first_row=True`: the source read the header-less CSVs with `skiprows=1`, losing the first
  study of each file. Default False.
- `source_body_part_bug=True`: the source compared `XR_WRIST` against `WRIST`, so every image got
  body part "OTHER" and the body-part head learned nothing. Default False (real body parts).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageSpec

from .common import (
    DataFormatError,
    Examples,
    SplitData,
    decode_images,
    grouped_split,
    require_path,
    smoke_positions,
)

BODY_PARTS = ["elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist"]
ABNORMAL_NAMES = ["normal", "abnormal"]
VALIDATION_FRACTION = 0.1
_PATIENT = re.compile(r"patient(\d+)")
DATASET = {"name": "MURA-v1.1", "citation": "Rajpurkar et al. 2017, arXiv:1712.06957",
           "licence": "Stanford MURA research use agreement (no redistribution)"}


def _root(data_dir: Path) -> Path:
    nested = data_dir / "MURA-v1.1"
    return nested if nested.is_dir() else data_dir


def detect(data_dir: Path) -> bool:
    return (_root(data_dir) / "train_labeled_studies.csv").is_file()


def _read_rows(path: Path, drop_first_row: bool) -> list[list[str]]:
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    return rows[1:] if drop_first_row else rows


def _relative(path_text: str) -> str:
    """'MURA-v1.1/train/XR_WRIST/...' -> 'train/XR_WRIST/...' (paths in the CSVs start at the zip root)."""
    text = path_text.strip().replace("\\", "/")
    return text.split("MURA-v1.1/", 1)[1] if "MURA-v1.1/" in text else text


def _body_part(relative_path: str, source_bug: bool) -> str:
    folder = next((part for part in relative_path.split("/") if part.startswith("XR_")), None)
    if folder is None:
        raise DataFormatError(f"{relative_path}: no XR_<PART> folder in the path")
    if source_bug:
        return "other"
    part = folder[3:].lower()
    if part not in BODY_PARTS:
        raise DataFormatError(f"{relative_path}: unknown body part {folder}; expected XR_ + one of {BODY_PARTS}")
    return part


def _read_split(root: Path, split: str, drop_first_row: bool, source_bug: bool):
    studies_csv = require_path(root / f"{split}_labeled_studies.csv", f"MURA {split} study labels")
    images_csv = require_path(root / f"{split}_image_paths.csv", f"MURA {split} image list")
    study_labels: dict[str, int] = {}
    for row in _read_rows(studies_csv, drop_first_row):
        if len(row) != 2 or row[1].strip() not in ("0", "1"):
            raise DataFormatError(f"{studies_csv}: expected rows 'study_dir,0|1', got {row}")
        study_labels[_relative(row[0]).rstrip("/")] = int(row[1])
    records, unlabelled = [], 0
    for row in _read_rows(images_csv, False):
        relative = _relative(row[0])
        study = relative.rsplit("/", 1)[0]
        if study not in study_labels:
            unlabelled += 1  # the study's label row is missing (e.g. dropped by drop_first_row)
            continue
        patient = _PATIENT.search(relative)
        records.append((root / relative, study_labels[study], _body_part(relative, source_bug), study,
                        patient.group(1) if patient else study))
    if not records:
        raise DataFormatError(f"{images_csv}: no images with a labelled study")
    return records, unlabelled


def list_splits(data_dir: Path, *, seed: int = 42, drop_first_row: bool = False,
                source_body_part_bug: bool = False) -> tuple[dict[str, list[tuple]], dict[str, int]]:
    """The splits `load` makes, as records (path, abnormal, body part, study, patient), without
    decoding anything; and per official split the count of images whose study has no label row.
    Validation is carved out of `train` by patient over the listed images."""
    root = _root(Path(data_dir))
    listed, without_label = {}, {}
    for split in ("train", "valid"):
        listed[split], without_label[split] = _read_split(root, split, drop_first_row, source_body_part_bug)
    train = listed.pop("train")
    parts = grouped_split(np.array([r[4] for r in train]), {"train": 1 - VALIDATION_FRACTION, "val": VALIDATION_FRACTION}, seed)
    return {**{name: [train[i] for i in idx] for name, idx in parts.items()}, "test": listed["valid"]}, without_label


def load(
    data_dir: Path,
    spec: ImageSpec,
    *,
    seed: int = 42,
    skip_bad: bool = False,
    drop_first_row: bool = False,
    source_body_part_bug: bool = False,
    max_examples: int | None = None,
) -> SplitData:
    """List the CSVs, split by patient, then decode only what each split keeps (`max_examples`, a
    smoke limit, applies before decoding). With `skip_bad`, an unreadable image leaves its split
    after the split is made (the split never depends on which files decode)."""
    root = _root(Path(data_dir))
    body_parts = ["other"] if source_body_part_bug else BODY_PARTS
    listed, without_label = list_splits(root, seed=seed, drop_first_row=drop_first_row,
                                        source_body_part_bug=source_body_part_bug)
    splits: dict[str, Examples] = {}
    skipped_all: list[tuple[str, str]] = []
    for split, records in listed.items():
        records = [records[i] for i in smoke_positions(len(records), max_examples)]
        pixels, kept, skipped = decode_images([r[0] for r in records], spec, skip_bad, f"MURA {split}")
        skipped_all += skipped
        pick = lambda column, records=records, kept=kept: [records[i][column] for i in kept]
        splits[split] = Examples(
            images=pixels,
            targets={
                "abnormal": np.array(pick(1), dtype=np.int64),
                "body_part": np.array([body_parts.index(p) for p in pick(2)], dtype=np.int64),
            },
            ids=np.array([str(p) for p in pick(0)]),
            groups=np.array(pick(3)),
            extras={"patient": np.array(pick(4))},
        )
    return SplitData(
        splits=splits,
        class_names={"abnormal": ABNORMAL_NAMES, "body_part": body_parts},
        source=f"MURA-v1.1 at {root}",
        skipped=skipped_all,
        notes={
            "split_seed": seed,
            "split_unit": "patient (val carved from train); test = official valid split",
            "drop_first_row": drop_first_row,
            "source_body_part_bug": source_body_part_bug,
            "images_without_study_label": without_label,
            "dataset": DATASET,
        },
    )
