"""What every loader shares: the decoded-split container, parallel decoding with bad-file
accounting, seeded splits, and the tf.data pipeline that feeds Keras."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageDecodeError, ImageSpec, prepare_image

logger = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """The files on disk do not have the layout a loader expects; the message says what is missing."""


@dataclass
class Examples:
    """One split, decoded to model-size pixels.

    Attributes:
        images: (N, H, W, C) uint8 pixels (or a memory-mapped array for large sets).
        targets: one array per output, e.g. {"label": (N,)}, {"abnormal": (N,), "body_part": (N,)}
            or {"mask": (N, H, W)}.
        ids: where each example came from (file path, optionally "#tile").
        groups: optional grouping key per example (MURA study) for per-group evaluation.
        extras: optional per-example side information (e.g. FracAtlas `hardware`).
    """

    images: np.ndarray
    targets: dict[str, np.ndarray]
    ids: np.ndarray
    groups: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        for name, values in {**self.targets, **self.extras, "ids": self.ids}.items():
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> Examples:
        indices = np.asarray(indices)
        return Examples(
            images=self.images[indices],
            targets={k: v[indices] for k, v in self.targets.items()},
            ids=self.ids[indices],
            groups=None if self.groups is None else self.groups[indices],
            extras={k: v[indices] for k, v in self.extras.items()},
        )


@dataclass
class SplitData:
    """What a loader returns: named splits plus what a model card needs to know about the data."""

    splits: dict[str, Examples]
    class_names: dict[str, list[str]]
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    def describe(self) -> dict:
        """A JSON-able summary: per-split sizes and per-class counts."""
        summary: dict = {"source": self.source, "splits": {}, "skipped_files": len(self.skipped)}
        for name, split in self.splits.items():
            entry: dict = {"examples": len(split)}
            for target, values in split.targets.items():
                names = self.class_names.get(target)
                if not names:
                    continue
                counts = np.bincount(values.reshape(-1).astype(np.int64), minlength=len(names))
                if values.ndim == 1:
                    entry[target] = {n: int(c) for n, c in zip(names, counts)}
                else:  # a label map: report each class's share of the pixels
                    entry[f"{target}_pixel_share"] = {n: round(float(c) / counts.sum(), 4) for n, c in zip(names, counts)}
            summary["splits"][name] = entry
        summary.update(self.notes)
        return summary


def require_path(path: Path, what: str) -> Path:
    """Return `path` if it exists, else raise DataFormatError saying what was expected there."""
    if not path.exists():
        raise DataFormatError(f"expected {what} at {path}, but it does not exist")
    return path


def _worker_count() -> int:
    return min(8, (os.cpu_count() or 2) * 2)


@dataclass(frozen=True)
class DecodedListing:
    """The decoded part of a file listing: `pixels[r]` is listing entry `listing_indices[r]`."""

    pixels: np.ndarray
    listing_indices: np.ndarray
    skipped: list[tuple[str, str]]
    listing_size: int

    def rows(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the `members` that decoded, their rows of `pixels`): an unreadable file (skip_bad) leaves its split."""
        row = np.full(self.listing_size, -1, dtype=np.int64)
        row[self.listing_indices] = np.arange(len(self.listing_indices))
        members = np.asarray(members)[row[members] >= 0]
        return members, row[members]


def decode_used(paths: Sequence[str | Path], splits: dict[str, np.ndarray], spec: ImageSpec, skip_bad: bool,
                description: str) -> DecodedListing:
    """Decode each listed file that some split uses, once, in listing order (the list-split-decode
    loaders' last step)."""
    used = np.unique(np.concatenate(list(splits.values())))
    pixels, kept, skipped = decode_images([paths[i] for i in used], spec, skip_bad, description)
    return DecodedListing(pixels, used[kept], skipped, len(paths))


def decode_images(
    paths: Sequence[str | Path],
    spec: ImageSpec,
    skip_bad: bool = False,
    description: str = "decoding images",
    decoder: Callable[[str | Path, ImageSpec], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Decode files in parallel (Pillow releases the GIL) with a progress bar.

    Returns:
        (pixels, kept, skipped): pixels for the readable files in order, the indices into `paths`
        they came from, and (path, reason) for each unreadable file.

    Raises:
        ImageDecodeError: naming the first unreadable file, unless `skip_bad`.
    """
    from tqdm.auto import tqdm

    decode = decoder or (lambda path, s: prepare_image(path, s, name=str(path)))

    def attempt(path: str | Path) -> np.ndarray | ImageDecodeError:
        try:
            return decode(path, spec)
        except ImageDecodeError as error:
            return error

    with ThreadPoolExecutor(_worker_count()) as pool:
        results = list(tqdm(pool.map(attempt, paths), total=len(paths), desc=description, unit="img"))
    skipped = [(str(p), str(r)) for p, r in zip(paths, results) if isinstance(r, ImageDecodeError)]
    if skipped and not skip_bad:
        raise ImageDecodeError(
            f"{skipped[0][1]}. {len(skipped)} of {len(paths)} files could not be decoded; "
            "fix or remove them, or pass --skip-bad to skip and count them"
        )
    for path, reason in skipped:
        logger.warning("skipped unreadable file %s", reason)
    kept = np.array([i for i, r in enumerate(results) if not isinstance(r, ImageDecodeError)], dtype=np.int64)
    if len(kept) == 0:
        raise DataFormatError(f"none of the {len(paths)} files could be decoded")
    pixels = np.stack([results[i] for i in kept])
    return pixels, kept, skipped


def smoke_positions(length: int, count: int | None) -> np.ndarray:
    """Positions of `count` evenly spaced members of a sequence of `length` (every position when
    `count` is None or not smaller): the one smoke-limit rule, which loaders apply before decoding
    and `train.prepare` after loading, so both pick the same examples."""
    if count is None or length <= count:
        return np.arange(length)
    return np.linspace(0, length - 1, count).astype(np.int64)


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Split indices so every class keeps its share in every split (seeded, reproducible).

    `fractions` maps split names to shares summing to 1; the first split takes the rounding rest.
    """
    total = sum(fractions.values())
    if not np.isclose(total, 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    names = list(fractions)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        sizes = [round(fractions[name] * len(members)) for name in names[1:]]
        start = len(members) - sum(sizes)
        parts[names[0]].append(members[:start])
        for name, size in zip(names[1:], sizes):
            parts[name].append(members[start : start + size])
            start += size
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def grouped_split(
    groups: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Split indices by group (e.g. patient) so no group lands in two splits."""
    unique = np.unique(groups)
    by_group = stratified_split(np.zeros(len(unique)), fractions, seed)
    return {name: np.flatnonzero(np.isin(groups, unique[idx])) for name, idx in by_group.items()}


def label_index(names: Iterable[str], values: Iterable[str], what: str) -> np.ndarray:
    """Map string labels to indices in `names`; unknown values raise naming the label and `what`."""
    lookup = {name: i for i, name in enumerate(names)}
    out = []
    for value in values:
        if value not in lookup:
            raise DataFormatError(f"unknown {what} {value!r}; expected one of {list(lookup)}")
        out.append(lookup[value])
    return np.array(out, dtype=np.int64)
