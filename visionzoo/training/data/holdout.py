"""The validation (and test) splits the classic sources used, written as short specs, and the
step that turns listed-but-not-decoded splits into `SplitData`.

The classic loaders (idx, image folders, CIFAR pickles, Kaggle CSV, dogs vs cats) first *list*
each split (ids and labels), then `assemble` carves validation out of train the way the source did,
trims splits for smoke runs (`max_examples`), and decodes only what is kept.

Validation specs (`data_options.validation`, e.g. `--set data_options.validation=last:5000`):

    "last:N"          the last N training examples in the source's order ([J] CNNs: last 5000)
    "fraction:F"      Keras `fit(validation_split=F)`: the last share F of train, unshuffled
    "shuffle:F:SEED"  scikit-learn `train_test_split(test_size=F, random_state=SEED)` ([N], ZFNet,
                      LeNet-50); reproduced exactly with NumPy's legacy RandomState
    "stratified:F"    a stratified share F, seeded by the run's `--seed`
    "test"            validate on the test split, as the sources without a validation set did
                      (PyTorch ports, AlexNet, VGG transfer): val and test are then the same data
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from visionzoo.preprocessing import ImageSpec, prepare_image

from .common import (
    DataFormatError,
    Examples,
    SplitData,
    decode_images,
    smoke_positions,
    stratified_split,
)

Decoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]]


@dataclass
class Listing:
    """One split before decoding.

    Attributes:
        ids: where each example comes from (a path, "archive#member" or "file#row").
        labels: integer class per example.
        decode: indices -> (pixels, kept, skipped): pixels for the readable examples among
            `indices`, their positions in `indices`, and (id, reason) for the unreadable ones.
    """

    ids: np.ndarray
    labels: np.ndarray
    decode: Decoder

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.ids = np.asarray(self.ids)
        if len(self.ids) != len(self.labels):
            raise ValueError(f"{len(self.ids)} ids for {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


def arrays_to_spec(images: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """(N, H, W[, C]) uint8 arrays -> (N, *spec.shape) uint8; resizes through Pillow only when needed."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8:
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    same_size = images.shape[1:3] == (spec.height, spec.width)
    channels = images.shape[-1]
    if same_size and channels == spec.channels and spec.color_mode != "grayscale_rgb":
        return images
    if same_size and channels == 1 and spec.channels == 3:
        return np.repeat(images, 3, axis=-1)
    out = np.empty((len(images), *spec.shape), dtype=np.uint8)
    for index, image in enumerate(images):
        out[index] = prepare_image(Image.fromarray(image[..., 0] if channels == 1 else image), spec)
    return out


def array_listing(images: np.ndarray, labels: np.ndarray, ids: np.ndarray, spec: ImageSpec) -> Listing:
    """A split whose pixels are already in memory (idx, CIFAR pickles, CSV)."""

    def decode(indices: np.ndarray):
        return arrays_to_spec(images[indices], spec), np.arange(len(indices)), []

    return Listing(ids=ids, labels=labels, decode=decode)


def file_listing(
    keys: list[str], labels, ids, spec: ImageSpec, read: Callable[[str], bytes | str], skip_bad: bool, description: str
) -> Listing:
    """A split of encoded image files (on disk or inside an archive), decoded in parallel."""
    keys = np.asarray(keys)
    ids = np.asarray(ids)

    def decode(indices: np.ndarray):
        chosen = list(keys[indices])
        names = dict(zip(chosen, ids[indices]))
        pixels, kept, skipped = decode_images(
            chosen, spec, skip_bad, description,
            decoder=lambda key, s: prepare_image(read(key), s, name=str(names[key])),
        )
        return pixels, kept, [(str(names.get(path, path)), reason) for path, reason in skipped]

    return Listing(ids=ids, labels=labels, decode=decode)


@dataclass(frozen=True)
class Validation:
    kind: str
    amount: float = 0.0
    seed: int | None = None

    def describe(self) -> str:
        return {
            "last": f"last {int(self.amount)} training examples",
            "fraction": f"Keras validation_split={self.amount} (last share, unshuffled)",
            "shuffle": f"train_test_split(test_size={self.amount}, random_state={self.seed})",
            "stratified": f"stratified {self.amount} share, seed {self.seed}",
            "test": "the test split (the source validated on its test set)",
        }[self.kind]


def parse_validation(spec: str, seed: int) -> Validation:
    """Parse a validation spec (see the module docstring); errors name the accepted forms."""
    forms = "last:N, fraction:F, shuffle:F:SEED, stratified:F or test"
    parts = str(spec).strip().split(":")
    kind = parts[0]
    try:
        if kind == "test" and len(parts) == 1:
            return Validation("test")
        if kind == "last" and len(parts) == 2:
            return Validation("last", int(parts[1]))
        if kind in ("fraction", "stratified") and len(parts) == 2:
            share = float(parts[1])
            if not 0 < share < 1:
                raise ValueError
            return Validation(kind, share, seed if kind == "stratified" else None)
        if kind == "shuffle" and len(parts) == 3:
            share = float(parts[1])
            if not 0 < share < 1:
                raise ValueError
            return Validation("shuffle", share, int(parts[2]))
    except ValueError:
        pass
    raise ValueError(f"validation spec {spec!r} not understood; expected {forms}")


def sklearn_shuffle_split(count: int, test_size: float, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of scikit-learn's `train_test_split(test_size=F, random_state=S)`, the
    split the sources made."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(count), test_size=test_size, random_state=random_state)
    return train, test


def validation_indices(labels: np.ndarray, validation: Validation) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions into a training split of `len(labels)` examples."""
    count = len(labels)
    if validation.kind == "last":
        size = int(validation.amount)
        if not 0 < size < count:
            raise DataFormatError(f"validation 'last:{size}' needs more than {size} training examples, got {count}")
        return np.arange(count - size), np.arange(count - size, count)
    if validation.kind == "fraction":
        split_at = math.floor(count * (1.0 - validation.amount))  # as tf-keras's train_validation_split
        return np.arange(split_at), np.arange(split_at, count)
    if validation.kind == "shuffle":
        return sklearn_shuffle_split(count, validation.amount, validation.seed)
    if validation.kind == "stratified":
        parts = stratified_split(labels, {"train": 1 - validation.amount, "val": validation.amount}, validation.seed)
        return parts["train"], parts["val"]
    raise ValueError(f"validation {validation.kind!r} does not carve from train")


def _class_counts(labels: np.ndarray, class_names: list[str]) -> dict:
    """{"examples": n, "per_class": {name: count}} of a split before any `max_examples`."""
    counts = np.bincount(labels, minlength=len(class_names))
    return {"examples": len(labels), "per_class": {name: int(c) for name, c in zip(class_names, counts)}}


def _decode(listing: Listing, indices: np.ndarray) -> tuple[Examples, list]:
    pixels, kept, skipped = listing.decode(indices)
    chosen = indices[kept]
    examples = Examples(images=pixels, targets={"label": listing.labels[chosen]}, ids=listing.ids[chosen])
    return examples, skipped


def assemble(
    train: Listing,
    test: Listing | None,
    *,
    validation: str,
    seed: int,
    class_names: list[str],
    source: str,
    max_examples: int | None = None,
    test_fraction: float | None = None,
    val: Listing | None = None,
    notes: dict | None = None,
) -> SplitData:
    """Carve validation (and, for single-folder datasets, test) out of train, then decode.

    Args:
        train, test: the listed splits; `test` may be None (then `test_fraction` carves one, or
            the data has no test split, like the Kaggle digit CSV).
        validation: a spec from the module docstring; ignored when `val` (a listed validation
            folder) is given.
        max_examples: decode at most this many examples per split (evenly spaced), for smoke runs.
        test_fraction: carve a stratified test split of this share from train first (seeded).
    """
    spec = parse_validation(validation, seed)
    labels = train.labels
    if len(train) == 0:
        raise DataFormatError(f"{source}: the training split is empty")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise DataFormatError(f"{source}: labels must be 0..{len(class_names) - 1}, got {labels.min()}..{labels.max()}")
    summary = {"split_seed": seed, "validation": validation, "validation_rule": spec.describe()}
    pool = np.arange(len(train))
    test_indices = None
    if test is None and test_fraction:
        parts = stratified_split(labels, {"train": 1 - test_fraction, "test": test_fraction}, seed)
        pool, test_indices = parts["train"], parts["test"]
        summary["test_rule"] = f"stratified {test_fraction} share of the labelled images, seed {seed}"
    if val is not None:
        train_positions, val_positions = pool, None
        summary["validation_rule"] = "the dataset's own validation folder"
    elif spec.kind == "test":
        train_positions, val_positions = pool, None
    else:
        inner_train, inner_val = validation_indices(labels[pool], spec)
        train_positions, val_positions = pool[inner_train], pool[inner_val]

    listed = {"train": train_positions, "val": val_positions, "test": test_indices}
    summary["listed"] = {name: _class_counts(labels[positions], class_names) for name, positions in listed.items()
                         if positions is not None}
    if val is not None:
        summary["listed"]["val"] = _class_counts(val.labels, class_names)
    if test is not None:
        summary["listed"]["test"] = _class_counts(test.labels, class_names)
    splits: dict[str, Examples] = {}
    skipped: list = []
    splits["train"], bad = _decode(train, train_positions[smoke_positions(len(train_positions), max_examples)])
    skipped += bad
    if val is not None:
        splits["val"], bad = _decode(val, smoke_positions(len(val), max_examples))
        skipped += bad
    elif val_positions is not None:
        splits["val"], bad = _decode(train, val_positions[smoke_positions(len(val_positions), max_examples)])
        skipped += bad
    if test is not None:
        splits["test"], bad = _decode(test, smoke_positions(len(test), max_examples))
        skipped += bad
    elif test_indices is not None:
        splits["test"], bad = _decode(train, test_indices[smoke_positions(len(test_indices), max_examples)])
        skipped += bad
    if spec.kind == "test" and val is None:
        if "test" not in splits:
            raise DataFormatError(f"{source}: validation 'test' needs a test split, and this data has none")
        splits["val"] = splits["test"]
        summary["val_is_test"] = True
    if max_examples is not None:
        summary["limit_per_split"] = max_examples
    return SplitData(splits=splits, class_names={"label": list(class_names)}, source=source, skipped=skipped,
                     notes={**summary, **(notes or {})})
