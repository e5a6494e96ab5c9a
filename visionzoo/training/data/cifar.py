"""CIFAR-10 and CIFAR-100 "python version" pickles (Krizhevsky 2009), as extracted folders or as
the downloaded archives, read in place.

- CIFAR-10: `cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`; the training
  order is data_batch_1..5 concatenated, as `keras.datasets.cifar10.load_data()` returns it, so
  the sources' "last 5000 are validation" takes the second half of data_batch_5.
- CIFAR-100: `cifar-100-python/{train, test, meta}`; `label_mode` picks the 100 fine labels
  (default, as the ResNet source) or the 20 coarse ones.

The folder may be the batches folder itself, its parent, or a parent holding
`cifar-10-python.tar.gz` / `cifar-100-python.tar.gz`. The JPEG form (`train/<class>/*.jpg`) is
read by visionzoo.training.data.folders.

Pickles can run code when loaded, so these are unpickled with a loader that only allows the
NumPy array types the official files contain.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from visionzoo.preprocessing import ImageSpec

from .common import DataFormatError, SplitData
from .holdout import array_listing, assemble

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FOLDERS = {"cifar-10-batches-py": 10, "cifar-100-python": 100}
ARCHIVES = {"cifar-10-python.tar.gz": "cifar-10-batches-py", "cifar-100-python.tar.gz": "cifar-100-python"}
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickle dicts, lists, bytes and NumPy arrays; refuse anything else (no code execution)."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def unpickle(data: bytes, where: str) -> dict:
    try:
        content = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataFormatError(f"{where}: not a CIFAR python pickle ({error})") from error
    if not isinstance(content, dict):
        raise DataFormatError(f"{where}: expected a dict, got {type(content).__name__}")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in content.items()}


def _locate(data_dir: Path) -> tuple[str, Path, bool]:
    """(batches folder name, folder or archive path, is_archive)."""
    path = Path(data_dir)
    if path.is_file() and path.name in ARCHIVES:
        return ARCHIVES[path.name], path, True
    if path.name in FOLDERS and path.is_dir():
        return path.name, path, False
    for name in FOLDERS:
        if (path / name).is_dir():
            return name, path / name, False
    for archive, name in ARCHIVES.items():
        if (path / archive).is_file():
            return name, path / archive, True
    if (path / "data_batch_1").is_file():
        return "cifar-10-batches-py", path, False
    if (path / "train").is_file() and (path / "meta").is_file():
        return "cifar-100-python", path, False
    raise DataFormatError(f"{path}: expected cifar-10-batches-py/ or cifar-100-python/ (or their .tar.gz)")


def detect(data_dir: Path) -> bool:
    try:
        _locate(Path(data_dir))
        return True
    except DataFormatError:
        return False


def _read_members(location: Path, archive: bool, names: list[str]) -> dict[str, bytes]:
    if not archive:
        missing = [n for n in names if not (location / n).is_file()]
        if missing:
            raise DataFormatError(f"{location}: missing {missing}")
        return {n: (location / n).read_bytes() for n in names}
    found: dict[str, bytes] = {}
    with tarfile.open(location, "r:*") as handle:
        for member in handle:
            name = PurePosixPath(member.name).name
            if member.isfile() and name in names:
                found[name] = handle.extractfile(member).read()
    missing = sorted(set(names) - set(found))
    if missing:
        raise DataFormatError(f"{location}: archive lacks {missing}")
    return found


def _images(batch: dict, where: str) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataFormatError(f"{where}: 'data' must be (N, 3072) uint8 rows, got {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)


def load(
    data_dir: Path,
    spec: ImageSpec,
    *,
    seed: int = 42,
    skip_bad: bool = False,
    validation: str = "last:5000",
    class_names: list[str] | None = None,
    max_examples: int | None = None,
    label_mode: str = "fine",
) -> SplitData:
    """Read the training and test batches; validation is carved per `validation`."""
    del skip_bad  # rows of an array cannot be unreadable one by one
    name, location, archive = _locate(Path(data_dir))
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    if FOLDERS[name] == 10:
        files = {"train": CIFAR10_TRAIN, "test": ["test_batch"]}
        meta_name, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        files = {"train": ["train"], "test": ["test"]}
        meta_name, label_key, names_key = "meta", f"{label_mode}_labels", f"{label_mode}_label_names"
    blobs = _read_members(location, archive, [*files["train"], *files["test"], meta_name])
    where = lambda member: f"{location}#{member}" if archive else str(location / member)
    meta = unpickle(blobs[meta_name], where(meta_name))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    listings = {}
    for split, members in files.items():
        images, labels, ids = [], [], []
        for member in members:
            batch = unpickle(blobs[member], where(member))
            if label_key not in batch:
                raise DataFormatError(f"{where(member)}: no '{label_key}' (has {sorted(batch)})")
            images.append(_images(batch, where(member)))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
            ids += [f"{where(member)}#{i}" for i in range(len(labels[-1]))]
        listings[split] = array_listing(np.concatenate(images), np.concatenate(labels), np.array(ids), spec)
    return assemble(
        listings["train"], listings["test"], validation=validation, seed=seed, max_examples=max_examples,
        class_names=list(class_names) if class_names else names,
        source=f"{name} pickles {'in ' if archive else 'at '}{location}", notes={"label_mode": label_mode if FOLDERS[name] == 100 else None},
    )
