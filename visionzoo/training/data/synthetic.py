"""Tiny datasets written in the exact on-disk formats the loaders read, for tests and smoke runs:
the served models' formats and the classic zoo's (idx, PNG packs, image folders and archives,
CIFAR pickles, the Kaggle digit CSV, dogs vs cats). One writer per format in `WRITERS`.

Images carry a learnable signal so a few training steps can move the loss: class-dependent
brightness or tint, bright squares on abnormal X-rays, and in the classic formats a bright square
at each class's own place (and, in colour, its own tint). `corrupt=N` also writes N truncated
JPEGs, the kind of file real datasets contain (see ../shared/data/corrupt_samples). The classic
layouts copy the real files in ../shared/data:

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

    python -m visionzoo.training.data.synthetic mars_npz /tmp/mars.npz
    python -m visionzoo.training.data.synthetic idx_fashion_pngs /tmp/fashion
"""

from __future__ import annotations

import argparse
import csv
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from . import blood, fracatlas, mars, mura
from . import idx as idx_format
from .cifar import CIFAR10_CLASSES


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _noise(rng, height: int, width: int, channels: int, level: float) -> np.ndarray:
    base = rng.normal(level, 25, size=(height, width, channels))
    return np.clip(base, 0, 255).astype(np.uint8)


def _save_image(path: Path, pixels: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=quality)
    else:
        image.save(path)


def _truncated_jpeg(path: Path, rng) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_noise(rng, 64, 64, 3, 128)).save(buffer, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def write_mura(root: Path, patients_per_part: int = 2, images_per_study: int = 2, size=(72, 88), seed: int = 0, corrupt: int = 0) -> Path:
    """`root/MURA-v1.1/` with both CSV pairs (no header) and grey PNGs; abnormal studies get a bright square."""
    rng = _rng(seed)
    base = Path(root) / "MURA-v1.1"
    patient = 10000
    for split in ("train", "valid"):
        studies, images = [], []
        for part in mura.BODY_PARTS:
            for _ in range(patients_per_part if split == "train" else 1):
                patient += 1
                for study, label in enumerate((0, 1), start=1):
                    folder = f"MURA-v1.1/{split}/XR_{part.upper()}/patient{patient}/study{study}_{'positive' if label else 'negative'}"
                    studies.append((f"{folder}/", label))
                    for index in range(1, images_per_study + 1):
                        pixels = _noise(rng, *size, 1, 60 + 10 * mura.BODY_PARTS.index(part))
                        if label:
                            pixels[10:30, 10:30] = 250
                        _save_image(Path(root) / folder / f"image{index}.png", pixels)
                        images.append(f"{folder}/image{index}.png")
        if corrupt and split == "train":
            bad = images[0].replace("image1.png", "image99.png")
            (Path(root) / bad).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
            images.append(bad)
        with (base / f"{split}_labeled_studies.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(studies)
        with (base / f"{split}_image_paths.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([[path] for path in images])
    return Path(root)


def write_fracatlas(root: Path, per_cell: int = 4, size=(90, 110), seed: int = 0, corrupt: int = 0) -> Path:
    """`images/{Fractured,Non_fractured}/IMG*.jpg` + `dataset.csv` with FracAtlas's columns."""
    rng = _rng(seed)
    root = Path(root)
    columns = ["image_id", "hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan", "fractured",
               "fracture_count", "frontal", "lateral", "oblique"]
    rows, number = [], 0
    for part in fracatlas.BODY_PARTS:
        for fractured in (0, 1):
            for _ in range(per_cell):
                image_id = f"IMG{number:07d}.jpg"
                number += 1
                flags = {p: 0 for p in fracatlas.BODY_PARTS}
                flags[part] = 1
                if part == "mixed":
                    flags.update(hand=1, shoulder=1)
                pixels = _noise(rng, *size, 3, 50 + 25 * fracatlas.BODY_PARTS.index(part))
                if fractured:
                    pixels[20:40, 20:40] = 255
                folder = "Fractured" if fractured else "Non_fractured"
                _save_image(root / "images" / folder / image_id, pixels)
                rows.append({**flags, "image_id": image_id, "hardware": int(fractured and number % 3 == 0), "multiscan": 0,
                             "fractured": fractured, "fracture_count": fractured, "frontal": 1, "lateral": 0, "oblique": 0})
    for index in range(corrupt):
        image_id = f"IMG{number + index:07d}.jpg"
        _truncated_jpeg(root / "images" / "Non_fractured" / image_id, rng)
        rows.append({c: 0 for c in columns} | {"image_id": image_id, "hand": 1})
    with (root / "dataset.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows({c: row.get(c, 0) for c in columns} for row in rows)
    return root


def _blood_pixels(rng, label: int, size: int) -> np.ndarray:
    pixels = _noise(rng, size, size, 3, 120).astype(np.int64)
    pixels[..., label % 3] += 40 + 10 * label
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_pbc(root: Path, per_class: int = 6, size: int = 72, seed: int = 0, corrupt: int = 0) -> Path:
    """`PBC_dataset_normal_DIB/<class>/<file>.jpg`, a colour tint per class."""
    rng = _rng(seed)
    base = Path(root) / "PBC_dataset_normal_DIB"
    for label, name in enumerate(blood.CLASS_NAMES):
        for index in range(per_class):
            _save_image(base / name / f"{name.upper()[:2]}_{index:05d}.jpg", _blood_pixels(rng, label, size))
    for index in range(corrupt):
        _truncated_jpeg(base / "basophil" / f"BA_bad{index}.jpg", rng)
    return Path(root)


def write_blood_npz(path: Path, per_class: int = 8, seed: int = 0) -> Path:
    """AN2DL `training_set.npz`: images (N, 96, 96, 3) uint8, labels (N, 1)."""
    rng = _rng(seed)
    labels = np.repeat(np.arange(len(blood.CLASS_NAMES)), per_class)
    images = np.stack([_blood_pixels(rng, int(label), 96) for label in labels])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, labels=labels[:, None])
    return path


def _mars_tile(rng, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A mask of horizontal terrain bands (plus a rock blob) and an image whose brightness follows it."""
    mask = np.zeros((height, width), dtype=np.uint8)
    bounds = np.sort(rng.integers(0, height, size=3))
    classes = rng.permutation([1, 2, 3, 0])
    for start, stop, value in zip(np.r_[0, bounds], np.r_[bounds, height], classes):
        mask[start:stop] = value
    top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
    mask[top : top + 6, left : left + 6] = 4
    brightness = np.array([20, 90, 140, 190, 250])[mask]
    image = np.clip(brightness + rng.normal(0, 12, size=mask.shape), 0, 255).astype(np.uint8)
    return image, mask


def write_mars_npz(path: Path, samples: int = 80, artifacts: int = 3, test: int = 6, seed: int = 0) -> Path:
    """AN2DL `mars_for_students.npz`: training_set (N, 2, 64, 128) float, test_set (M, 64, 128);
    sample 62 and `artifacts` others share one "alien" mask, which the loader must remove."""
    rng = _rng(seed)
    pairs = [_mars_tile(rng, 64, 128) for _ in range(samples)]
    training = np.stack([np.stack([image, mask]) for image, mask in pairs]).astype(np.float64)
    if samples > mars.ARTIFACT_REFERENCE:
        alien = training[mars.ARTIFACT_REFERENCE, 1]
        for index in rng.choice([i for i in range(samples) if i != mars.ARTIFACT_REFERENCE], size=artifacts, replace=False):
            training[index, 1] = alien
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, training_set=training, test_set=np.stack([_mars_tile(rng, 64, 128)[0] for _ in range(test)]))
    return path


def write_ai4mars(root: Path, train: int = 10, test: int = 4, size: int = 256, seed: int = 0, corrupt: int = 0) -> Path:
    """`data/images_256/*.jpg` + `data/masks_256/*.png` (255 unlabelled) + `subset_manifest.csv`."""
    rng = _rng(seed)
    root = Path(root)
    inverse = {0: 255, 1: 0, 2: 1, 3: 2, 4: 3}  # our classes -> AI4Mars codes
    rows = []
    for index in range(train + test + corrupt):
        frame_id = f"NLA_{index:09d}EDR_F0000000NCAM00000M1"
        top, top_mask = _mars_tile(rng, size // 2, size)
        bottom, bottom_mask = _mars_tile(rng, size // 2, size)
        image = np.concatenate([top, bottom])
        mask = np.vectorize(inverse.get)(np.concatenate([top_mask, bottom_mask])).astype(np.uint8)
        image_path, mask_path = f"data/images_256/{frame_id}.jpg", f"data/masks_256/{frame_id}.png"
        if index >= train + test:
            _truncated_jpeg(root / image_path, rng)
        else:
            _save_image(root / image_path, np.repeat(image[..., None], 3, axis=-1), quality=95)
        _save_image(root / mask_path, mask[..., None])
        rows.append({"id": frame_id, "split": "test_gold" if train <= index < train + test else "train",
                     "image": image_path, "mask": mask_path})
    with (root / "subset_manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "split", "image", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return root


# --- the classic zoo's formats -----------------------------------------------------------------

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
    "mura": write_mura,
    "fracatlas": write_fracatlas,
    "blood_pbc": write_pbc,
    "blood_npz": write_blood_npz,
    "mars_npz": write_mars_npz,
    "ai4mars": write_ai4mars,
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write a tiny synthetic dataset in a real on-disk format "
                                                 "(served models' formats and the classic zoo's).")
    parser.add_argument("format", choices=sorted(WRITERS), help="which on-disk format to write")
    parser.add_argument("path", type=Path, help="output folder (or .npz file for the npz formats)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    print(WRITERS[args.format](args.path, seed=args.seed))


if __name__ == "__main__":
    main()
