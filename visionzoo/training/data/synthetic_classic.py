"""Tiny datasets in the classic zoo's on-disk formats (idx, PNG packs, image folders and archives,
CIFAR pickles, the Kaggle digit CSV, dogs vs cats), for tests and smoke runs.

Each class draws a bright square at its own place (and, in colour, its own tint), so a few
training steps can learn something. The layouts copy the real files in ../shared/data:

    idx                 four idx files (gzipped unless gz=False)
    idx_mnist_pngs      MNIST as shipped there: train PNGs named by official index in a .tar.gz
                        (+ train.csv), test images and both label files as idx.gz
    idx_fashion_pngs    Fashion-MNIST as shipped there: train/<label>/NNNN.png numbered per class,
                        flat test/NNNN.png, both label files as idx.gz
    image_folders       train/<class>/NNNN.jpg + test/<class>/NNNN.jpg folders
    image_folders_tar   the same packed as CIFAR-10-images.tar.gz (the real CIFAR-10 JPEGs)
    cifar_pickle        cifar-10-batches-py/ (cifar100_pickle: cifar-100-python/)
    kaggle_digits       train.csv (label,pixel0..783) + an unlabelled test.csv
    dogs_vs_cats        flat cat.<n>.jpg / dog.<n>.jpg of mixed sizes

    python -m visionzoo.training.data.synthetic idx_fashion_pngs /tmp/fashion     (one CLI for every format)
"""

from __future__ import annotations

import csv
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from . import idx as idx_format
from .cifar import CIFAR10_CLASSES
from .synthetic import _save_image, _truncated_jpeg


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def class_image(rng, label: int, size: int = 28, channels: int = 1, classes: int = 10) -> np.ndarray:
    """Noise plus a bright square whose position (and tint, in colour) says the class."""
    image = rng.normal(40, 20, size=(size, size, channels))
    cells = int(np.ceil(np.sqrt(classes)))
    step = size // cells
    row, column = divmod(label % (cells * cells), cells)
    square = max(step - 2, 2)
    image[row * step + 1 : row * step + 1 + square, column * step + 1 : column * step + 1 + square] += 180
    if channels == 3:
        image[..., label % 3] += 30
    return np.clip(image, 0, 255).astype(np.uint8)


def _labels(count: int, classes: int, rng) -> np.ndarray:
    labels = np.arange(count) % classes
    return rng.permutation(labels)


def _png_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _add_folder(archive: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    archive.addfile(info)


def write_idx_files(root: Path, train: int = 60, test: int = 20, gz: bool = True, seed: int = 0) -> Path:
    """`{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`, 28x28 uint8."""
    rng = _rng(seed)
    root = Path(root)
    suffix = ".gz" if gz else ""
    for prefix, count in (("train", train), ("t10k", test)):
        labels = _labels(count, 10, rng)
        images = np.stack([class_image(rng, int(k))[..., 0] for k in labels])
        idx_format.write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
        idx_format.write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels.astype(np.uint8))
    return root


def write_mnist_pngs(root: Path, train: int = 60, test: int = 20, seed: int = 0) -> Path:
    """MNIST as in ../shared/data/mnist: train PNGs named by official index in a tar.gz."""
    rng = _rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels = _labels(train, 10, rng)
    with tarfile.open(root / "mnist-pngs-train.tar.gz", "w:gz") as archive:
        _add_folder(archive, "train/")
        rows = ["filepath,label"]
        for index in rng.permutation(train):  # archive order is not the official order
            label = int(labels[index])
            _add(archive, f"train/{label}/{index}.png", _png_bytes(class_image(rng, label)))
            rows.append(f"train/{label}/{index}.png,{label}")
        _add(archive, "train.csv", ("\n".join(rows) + "\n").encode())
    idx_format.write_idx(root / "train-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    test_labels = _labels(test, 10, rng)
    idx_format.write_idx(root / "t10k-images-idx3-ubyte.gz", np.stack([class_image(rng, int(k))[..., 0] for k in test_labels]))
    idx_format.write_idx(root / "t10k-labels-idx1-ubyte.gz", test_labels.astype(np.uint8))
    return root


def write_fashion_pngs(root: Path, train: int = 60, test: int = 20, seed: int = 0) -> Path:
    """Fashion-MNIST as in ../shared/data/fashion_mnist: per-class numbered train PNGs, flat test."""
    rng = _rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train_labels, test_labels = _labels(train, 10, rng), _labels(test, 10, rng)
    with tarfile.open(root / "fashion-mnist-png-remapped.tar.gz", "w:gz") as archive:
        counters = np.zeros(10, dtype=int)
        for label in train_labels:  # the n-th example of class c in official order is train/c/n.png
            _add(archive, f"train/{label}/{counters[label]:04d}.png", _png_bytes(class_image(rng, int(label))))
            counters[label] += 1
        for index, label in enumerate(test_labels):
            _add(archive, f"test/{index:04d}.png", _png_bytes(class_image(rng, int(label))))
    idx_format.write_idx(root / "train-labels-idx1-ubyte.gz", train_labels.astype(np.uint8))
    idx_format.write_idx(root / "t10k-labels-idx1-ubyte.gz", test_labels.astype(np.uint8))
    return root


def write_image_folders(
    root: Path, per_class: int = 6, test_per_class: int = 2, classes=CIFAR10_CLASSES, size: int = 32,
    archive: bool = False, seed: int = 0, corrupt: int = 0,
) -> Path:
    """`train/<class>/NNNN.jpg` and `test/<class>/NNNN.jpg` (CIFAR-10-images), optionally as a tar.gz."""
    rng = _rng(seed)
    root = Path(root)
    files: dict[str, bytes] = {}
    for split, count in (("train", per_class), ("test", test_per_class)):
        for label, name in enumerate(classes):
            for index in range(count):
                files[f"{split}/{name}/{index:04d}.jpg"] = _png_bytes(class_image(rng, label, size, 3, len(classes)), "JPEG")
    for index in range(corrupt):
        files[f"train/{classes[0]}/bad{index}.jpg"] = _png_bytes(class_image(rng, 0, 64, 3), "JPEG")[:300]
    if archive:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / "CIFAR-10-images.tar.gz", "w:gz") as handle:
            _add(handle, "README.md", b"# CIFAR-10-images\n")
            for name, data in files.items():
                _add(handle, name, data)
    else:
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    return root


def write_image_folders_tar(root: Path, seed: int = 0, **options) -> Path:
    return write_image_folders(root, archive=True, seed=seed, **options)


def _pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=2))  # the official files are protocol-2 pickles


def write_cifar_pickle(root: Path, per_batch: int = 20, test: int = 20, classes: int = 10, seed: int = 0) -> Path:
    """`cifar-10-batches-py/` (5 training batches) or, with classes=100, `cifar-100-python/`."""
    rng = _rng(seed)
    root = Path(root)

    def batch(count: int, label_key: str, extra: dict | None = None):
        labels = _labels(count, classes, rng)
        images = np.stack([class_image(rng, int(k), 32, 3, classes) for k in labels])
        data = images.transpose(0, 3, 1, 2).reshape(count, 3072)
        return {b"data": data, label_key.encode(): labels.tolist(), **(extra or {})}, labels

    if classes == 10:
        folder = root / "cifar-10-batches-py"
        for number in range(1, 6):
            _pickle(folder / f"data_batch_{number}", batch(per_batch, "labels")[0])
        _pickle(folder / "test_batch", batch(test, "labels")[0])
        _pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_vis": 3072})
    else:
        folder = root / "cifar-100-python"
        for name, count in (("train", per_batch * 5), ("test", test)):
            content, labels = batch(count, "fine_labels")
            content[b"coarse_labels"] = (labels // 5).tolist()
            _pickle(folder / name, content)
        _pickle(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                  b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return root


def write_cifar100_pickle(root: Path, seed: int = 0) -> Path:
    return write_cifar_pickle(root, per_batch=40, test=100, classes=100, seed=seed)


def write_kaggle_digits(root: Path, rows: int = 60, missing: int = 0, seed: int = 0) -> Path:
    """`train.csv` (label,pixel0..783) and the competition's unlabelled `test.csv`; `missing` rows
    get empty trailing cells, as in the LeNet-50 source's file."""
    rng = _rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    header = ["label", *[f"pixel{i}" for i in range(784)]]
    labels = _labels(rows, 10, rng)
    with (root / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for index, label in enumerate(labels):
            values = [str(v) for v in class_image(rng, int(label)).reshape(-1)]
            if index >= rows - missing:
                values[-5:] = [""] * 5
            writer.writerow([str(label), *values])
    with (root / "test.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header[1:])
        for _ in range(5):
            writer.writerow(class_image(rng, 0).reshape(-1).tolist())
    return root


def write_dogs_vs_cats(root: Path, per_class: int = 10, seed: int = 0, corrupt: int = 0) -> Path:
    """`train/cat.<n>.jpg` and `train/dog.<n>.jpg` of mixed sizes; dogs are warmer."""
    rng = _rng(seed)
    folder = Path(root) / "train"
    for label, name in enumerate(("cat", "dog")):
        for number in range(per_class):
            height, width = (60, 80) if number % 2 else (90, 70)
            pixels = rng.normal(90, 25, size=(height, width, 3))
            pixels[..., 0] += 80 * label
            pixels[10:30, 10:30, 2] += 120 * (1 - label)
            _save_image(folder / f"{name}.{number}.jpg", np.clip(pixels, 0, 255).astype(np.uint8))
    for index in range(corrupt):
        _truncated_jpeg(folder / f"cat.{per_class + index}.jpg", rng)
    return Path(root)


WRITERS = {
    "idx": write_idx_files,
    "idx_mnist_pngs": write_mnist_pngs,
    "idx_fashion_pngs": write_fashion_pngs,
    "image_folders": write_image_folders,
    "image_folders_tar": write_image_folders_tar,
    "cifar_pickle": write_cifar_pickle,
    "cifar100_pickle": write_cifar100_pickle,
    "kaggle_digits": write_kaggle_digits,
    "dogs_vs_cats": write_dogs_vs_cats,
}

