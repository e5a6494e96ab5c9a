"""Kaggle Dogs vs Cats: one flat folder of `cat.<n>.jpg` and `dog.<n>.jpg` (the competition's
`train/`; its `test1/` is unlabelled and not read).

Labels follow Keras's `flow_from_directory` on the source's class folders (seed-models.md §4.2):
cats 0, dogs 1 (a sigmoid output > 0.5 means "dog"). The source had separate train (20,000) and
test (5,000) folders and validated on the test folder; a flat folder has neither, so a stratified
`test_fraction` (default 0.2, the source's 20000:5000) is carved with the run's seed, and by default
validation is that test split, as in the source. Class-folder copies of the data
(`train/{cats,dogs}`, `test/{cats,dogs}`) are read by visionzoo.training.data.folders.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageSpec

from .common import DataFormatError, SplitData
from .holdout import assemble, file_listing

CLASS_NAMES = ["cat", "dog"]
_FILE = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def _folder(data_dir: Path) -> Path:
    path = Path(data_dir)
    nested = path / "train"
    return nested if nested.is_dir() and not any(_FILE.match(p.name) for p in path.iterdir() if p.is_file()) else path


def _entries(folder: Path) -> list[tuple[Path, int, int]]:
    entries = []
    for path in folder.iterdir():
        match = _FILE.match(path.name)
        if match and path.is_file():
            entries.append((path, CLASS_NAMES.index(match.group(1).lower()), int(match.group(2))))
    return sorted(entries, key=lambda e: (e[2], e[1]))


def detect(data_dir: Path) -> bool:
    folder = _folder(Path(data_dir))
    return folder.is_dir() and any(_FILE.match(p.name) for p in folder.iterdir())


def load(
    data_dir: Path,
    spec: ImageSpec,
    *,
    seed: int = 42,
    skip_bad: bool = False,
    validation: str = "test",
    class_names: list[str] | None = None,
    max_examples: int | None = None,
    test_fraction: float = 0.2,
) -> SplitData:
    folder = _folder(Path(data_dir))
    if not folder.is_dir():
        raise DataFormatError(f"{data_dir}: expected a folder of cat.<n>.jpg / dog.<n>.jpg files")
    if class_names and list(class_names) != CLASS_NAMES:
        raise ValueError(f"dogs vs cats labels are fixed to {CLASS_NAMES}, got {class_names}")
    entries = _entries(folder)
    if not entries:
        raise DataFormatError(f"{folder}: no cat.<n>.jpg or dog.<n>.jpg files")
    labels = np.array([label for _, label, _ in entries])
    if len(np.unique(labels)) < 2:
        raise DataFormatError(f"{folder}: found only {CLASS_NAMES[labels[0]]} images; both classes are needed")
    keys = [str(path) for path, _, _ in entries]
    listing = file_listing(keys, labels, keys, spec, lambda key: key, skip_bad, "dogs vs cats")
    return assemble(
        listing, None, validation=validation, seed=seed, class_names=CLASS_NAMES, max_examples=max_examples, test_fraction=test_fraction,
        source=f"dogs vs cats folder {folder}",
    )
