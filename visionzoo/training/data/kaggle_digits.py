"""The Kaggle "Digit Recognizer" CSVs: `train.csv` with a header `label,pixel0,...,pixel783` and
one 28x28 grey digit per row (42,000 rows in the competition file).

The LeNet-50 source (seed-models.md §1.2a) read such a file whose last columns had missing
values; pandas turned them into NaN and the run's loss was NaN from the first epoch. Here a missing
or non-numeric cell, or a value outside 0..255, stops loading with the file, line and column,
unless `skip_bad` (`--skip-bad`), which drops those rows and counts them in data.json.

The competition's `test.csv` has no labels, so it cannot be scored and is not read; a labelled
`test.csv` (same columns as train) becomes the test split. The path may be the CSV itself or its
folder (`train.csv`, or the source's `Lenet_Train.csv`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageSpec

from .common import DataFormatError, SplitData
from .holdout import array_listing, assemble

logger = logging.getLogger(__name__)

PIXELS = 784
SIDE = 28
TRAIN_NAMES = ("train.csv", "Lenet_Train.csv", "Lenet_Train")


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        return []


def _is_digit_csv(path: Path, labelled: bool = True) -> bool:
    header = [cell.strip() for cell in _header(path)]
    pixels = header[1:] if labelled else header
    return (not labelled or header[:1] == ["label"]) and len(pixels) == PIXELS and pixels[0] == "pixel0"


def _train_file(data_dir: Path) -> Path | None:
    path = Path(data_dir)
    if path.is_file():
        return path if _is_digit_csv(path) else None
    for name in TRAIN_NAMES:
        if (path / name).is_file() and _is_digit_csv(path / name):
            return path / name
    return None


def detect(data_dir: Path) -> bool:
    return _train_file(Path(data_dir)) is not None


def read_digit_csv(path: Path, skip_bad: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(images (N, 28, 28) uint8, labels (N,), source line numbers, skipped rows) from a labelled CSV."""
    header = [cell.strip() for cell in _header(path)]
    if header[:1] != ["label"] or len(header) != PIXELS + 1:
        raise DataFormatError(f"{path}: expected a header 'label,pixel0,...,pixel783', got {len(header)} columns starting {header[:2]}")
    try:  # fast path: a clean file parses in C
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        if table.shape[1] == PIXELS + 1 and np.isfinite(table).all():
            lines = np.arange(2, len(table) + 2)
            return _checked(table, lines, path, skip_bad)
    except ValueError:
        pass
    rows, lines, skipped = [], [], []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for line, row in enumerate(reader, start=2):
            problem = None
            if len(row) != PIXELS + 1:
                problem = f"{len(row)} columns, expected {PIXELS + 1}"
            else:
                blank = [i for i, cell in enumerate(row) if not cell.strip()]
                if blank:
                    problem = f"missing value in column {header[blank[0]]} ({len(blank)} missing)"
                else:
                    try:
                        values = [float(cell) for cell in row]
                    except ValueError:
                        problem = "a value that is not a number"
            if problem is None:
                rows.append(values)
                lines.append(line)
                continue
            if not skip_bad:
                raise DataFormatError(
                    f"{path}: line {line}: {problem}. The source's run on such a file had NaN losses; "
                    "fix the file or pass --skip-bad to drop and count bad rows"
                )
            skipped.append((f"{path}#line{line}", problem))
    if not rows:
        raise DataFormatError(f"{path}: no usable rows")
    return _checked(np.asarray(rows), np.asarray(lines), path, skip_bad, skipped)


def _checked(table: np.ndarray, lines: np.ndarray, path: Path, skip_bad: bool, skipped=None):
    skipped = list(skipped or [])
    labels, pixels = table[:, 0], table[:, 1:]
    bad = (pixels < 0).any(axis=1) | (pixels > 255).any(axis=1) | (labels != np.round(labels)) | (labels < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        if not skip_bad:
            raise DataFormatError(f"{path}: line {lines[first]}: label must be a whole number >= 0 and pixels 0..255")
        skipped += [(f"{path}#line{line}", "value out of range") for line in lines[bad]]
        labels, pixels, lines = labels[~bad], pixels[~bad], lines[~bad]
    images = np.round(pixels).astype(np.uint8).reshape(-1, SIDE, SIDE)
    return images, labels.astype(np.int64), lines, skipped


def load(
    data_dir: Path,
    spec: ImageSpec,
    *,
    seed: int = 42,
    skip_bad: bool = False,
    validation: str = "shuffle:0.03:2019",
    class_names: list[str] | None = None,
    max_examples: int | None = None,
) -> SplitData:
    train_path = _train_file(Path(data_dir))
    if train_path is None:
        raise DataFormatError(f"{data_dir}: expected train.csv with columns label,pixel0..pixel783")
    images, labels, lines, skipped = read_digit_csv(train_path, skip_bad)
    for location, reason in skipped:
        logger.warning("skipped %s: %s", location, reason)
    train = array_listing(images, labels, np.array([f"{train_path}#line{n}" for n in lines]), spec)
    test = None
    test_path = train_path.with_name("test.csv")
    notes = {}
    if test_path.is_file() and test_path != train_path:
        if _is_digit_csv(test_path):
            test_images, test_labels, test_lines, test_skipped = read_digit_csv(test_path, skip_bad)
            skipped += test_skipped
            test = array_listing(test_images, test_labels, np.array([f"{test_path}#line{n}" for n in test_lines]), spec)
        else:
            notes["unlabelled_test_csv"] = f"{test_path} has no label column (Kaggle's submission file); not read"
    result = assemble(
        train, test, validation=validation, seed=seed, max_examples=max_examples,
        class_names=list(class_names) if class_names else [str(i) for i in range(10)],
        source=f"Kaggle digit CSV {train_path}", notes=notes,
    )
    result.skipped = skipped + result.skipped
    return result
