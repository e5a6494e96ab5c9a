"""Tiny datasets written in the exact on-disk formats the loaders read, for tests and smoke runs.

Images carry a learnable signal (class-dependent brightness or tint, bright squares on abnormal
X-rays) so a few training steps can move the loss. `corrupt=N` also writes N truncated JPEGs, the
kind of file real datasets contain (see ../shared/data/corrupt_samples).

    python -m visionzoo.training.data.synthetic mars_npz /tmp/mars.npz    (also the classic formats of synthetic_classic)
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from . import blood, fracatlas, mars, mura


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


WRITERS = {
    "mura": write_mura,
    "fracatlas": write_fracatlas,
    "blood_pbc": write_pbc,
    "blood_npz": write_blood_npz,
    "mars_npz": write_mars_npz,
    "ai4mars": write_ai4mars,
}


def main(argv=None) -> None:
    from .synthetic_classic import WRITERS as CLASSIC_WRITERS  # it builds on this module's helpers

    writers = {**WRITERS, **CLASSIC_WRITERS}
    parser = argparse.ArgumentParser(description="Write a tiny synthetic dataset in a real on-disk format "
                                                 "(served models' formats and the classic zoo's).")
    parser.add_argument("format", choices=sorted(writers), help="which on-disk format to write")
    parser.add_argument("path", type=Path, help="output folder (or .npz file for the npz formats)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    print(writers[args.format](args.path, seed=args.seed))


if __name__ == "__main__":
    main()
