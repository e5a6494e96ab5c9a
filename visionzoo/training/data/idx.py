"""MNIST and Fashion-MNIST in their idx form, gzipped or not, and the PNG packs people also have.

The official files are `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (also the
`train-images.idx3-ubyte` spelling). A split whose *images* idx file is missing is read from PNGs
instead: `train/<label>/<n>.png` and `test/<label>/<n>.png` or a flat `test/<n>.png`, in a folder or
a `.tar.gz` beside the label files (visionzoo.training.data.folders). That covers the three layouts in use:

- official: four idx files;
- MNIST PNGs (rasbt/mnist-pngs): `train/<label>/<index>.png`, named by the index in the official
  training set, + test images and labels as idx;
- Fashion-MNIST PNGs: `train/<label>/NNNN.png` numbered per class, flat `test/NNNN.png` in official
  test order, + both label files as idx.

When a label file is present the PNGs are put back in the official order and checked against it:
files named by their official index must carry that index's label; per-class numbers n are
mapped to the n-th example of that class in the label file (the per-class counts must match).
That order matters for the sources' "last 5000 are validation" splits.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageSpec

from . import folders
from .common import DataFormatError, SplitData
from .holdout import Listing, array_listing, assemble, file_listing

logger = logging.getLogger(__name__)

DIGITS = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PREFIXES = {"train": "train", "test": "t10k"}
# idx type codes -> big-endian NumPy dtypes (LeCun's format description)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (optionally gzipped); the error names the file and what is wrong."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataFormatError(f"{path}: cannot read ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataFormatError(f"{path}: not an idx file (bad magic number {raw[:4].hex()})")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFormatError(f"{path}: header says shape {shape} ({expected} bytes of data), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write an idx file (gzipped when the name ends in .gz); the inverse of read_idx."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
    code = codes.get(array.dtype)
    if code is None:
        raise ValueError(f"idx cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.dtype(IDX_TYPES[code])).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def find_idx(folder: Path, split: str, kind: str) -> Path | None:
    """`<prefix>-<kind>-idx?-ubyte[.gz]` (or `<prefix>-<kind>.idx?-ubyte`) for split train/test."""
    prefixes = [PREFIXES[split], split]
    for prefix in prefixes:
        for pattern in (f"{prefix}-{kind}-idx?-ubyte", f"{prefix}-{kind}.idx?-ubyte"):
            for suffix in ("", ".gz"):
                matches = sorted(Path(folder).glob(pattern + suffix))
                if matches:
                    return matches[0]
    return None


def detect(data_dir: Path) -> bool:
    folder = Path(data_dir)
    return folder.is_dir() and any(find_idx(folder, split, "labels") for split in PREFIXES)


def _png_order(entries: list[str], labels: list[int], reference: np.ndarray, where: str) -> list[int]:
    """Positions of PNG entries in the official order given by the label file `reference`."""
    numbers = np.array([folders.file_number(name) for name in entries])
    labels_array = np.asarray(labels)
    if len(set(numbers.tolist())) == len(numbers) and numbers.min() >= 0 and numbers.max() < len(reference):
        wrong = int((reference[numbers] != labels_array).sum())
        if wrong:
            raise DataFormatError(f"{where}: {wrong} PNGs named by their index disagree with the label file")
        return numbers.tolist()  # named by official index
    classes = int(max(labels_array.max(), reference.max())) + 1
    counts = np.bincount(labels_array, minlength=classes)
    expected = np.bincount(reference, minlength=classes)
    if not np.array_equal(counts, expected):
        raise DataFormatError(f"{where}: per-class PNG counts {counts.tolist()} do not match the label file's {expected.tolist()}")
    # per-class numbers: the n-th file of class c is the n-th example of class c in the label file
    occurrences = {c: np.flatnonzero(reference == c) for c in np.unique(reference)}
    rank = np.empty(len(entries), dtype=np.int64)
    for c in np.unique(labels_array):
        members = np.flatnonzero(labels_array == c)
        rank[members[np.argsort(numbers[members], kind="stable")]] = occurrences[c]
    return rank.tolist()


def _png_split(tree: folders.Tree, split: str, spec: ImageSpec, skip_bad: bool, reference: np.ndarray | None) -> Listing:
    entries = folders.class_folder_entries(tree, split)
    where = tree.describe(split)
    if entries:
        keys = [member for member, _ in entries]
        labels = [int(folder) for _, folder in entries]
        if reference is not None:
            position = _png_order(keys, labels, reference, where)
            order = np.argsort(position)
            keys, labels = [keys[i] for i in order], [labels[i] for i in order]
    else:
        keys = folders.flat_entries(tree, split)
        if not keys:
            raise DataFormatError(f"{where}: no PNGs (expected {split}/<label>/<n>.png or {split}/<n>.png)")
        if reference is None:
            raise DataFormatError(f"{where}: PNGs without class folders need the {PREFIXES[split]} label idx file")
        numbers = [folders.file_number(k) for k in keys]
        if min(numbers) < 0 or max(numbers) >= len(reference):
            raise DataFormatError(f"{where}: file numbers must index the {len(reference)} labels")
        labels = reference[numbers].tolist()
    return file_listing(keys, labels, [tree.describe(k) for k in keys], spec, tree.read, skip_bad, f"{tree.root.name} {split}")


def load(
    data_dir: Path,
    spec: ImageSpec,
    *,
    seed: int = 42,
    skip_bad: bool = False,
    validation: str = "fraction:0.1",
    class_names: list[str] | None = None,
    max_examples: int | None = None,
) -> SplitData:
    """Read the train and test splits (idx or PNGs, see the module docstring)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataFormatError(f"{root}: expected a folder with MNIST-style idx files")
    listings: dict[str, Listing] = {}
    origins: dict[str, str] = {}
    tree = None
    for split in ("train", "test"):
        labels_path = find_idx(root, split, "labels")
        images_path = find_idx(root, split, "images")
        reference = read_idx(labels_path).astype(np.int64) if labels_path else None
        if images_path is not None:
            if reference is None:
                raise DataFormatError(f"{images_path}: found images but no {PREFIXES[split]}-labels-idx1-ubyte[.gz] beside them")
            images = read_idx(images_path)
            if images.ndim not in (3, 4) or len(images) != len(reference):
                raise DataFormatError(f"{images_path}: {images.shape} images for {len(reference)} labels")
            ids = np.array([f"{images_path}#{i}" for i in range(len(images))])
            listings[split] = array_listing(images, reference, ids, spec)
            origins[split] = images_path.name
            continue
        tree = tree or folders.open_tree(root)
        if not tree.has(split):
            if split == "train":
                raise DataFormatError(f"{root}: no train images (neither an images idx file nor train/ PNGs)")
            continue
        listings[split] = _png_split(tree, split, spec, skip_bad, reference)
        origins[split] = tree.describe(split)
    labels = np.concatenate([listing.labels for listing in listings.values()])
    names = list(class_names) if class_names else [str(i) for i in range(max(10, int(labels.max()) + 1))]
    return assemble(
        listings["train"], listings.get("test"), validation=validation, seed=seed, class_names=names, max_examples=max_examples,
        source=f"MNIST-style idx/PNG data at {root}", notes={"read_from": origins},
    )
