"""Mars terrain segmentation, 5 classes: 0 background, 1 soil, 2 bedrock, 3 sand, 4 big rock.

Two on-disk forms:
- AN2DL `mars_for_students.npz` (seed-models.md §7.0): `training_set` (N, 2, 64, 128) with the
  grayscale image in [:, 0] and the 0..4 mask in [:, 1]; `test_set` (M, 64, 128) images without
  masks. The source's artefact filter removes every sample whose mask equals sample 62's (an
  "alien" overlay), then splits 80/20 with seed 42.
- AI4Mars (Swan et al. 2021): image JPG + mask PNG where 0 soil, 1 bedrock, 2 sand, 3 big rock,
  255 unlabelled, mapped to our classes as 255->0, k->k+1. Either a `subset_manifest.csv`
  (`id,split,image,mask`; split `train` or `test_gold`) or the original release tree
  (`msl/images/edr/*.JPG`, `msl/labels/train/*.png`,
  `msl/labels/test/masked-gold-min3-100agree/*_merged.png`). Frames are cut into 64x128 tiles
  without distorting aspect (preprocessing.prepare_tiles: a 256x256 frame gives its two halves,
  each downsampled x2). Training frames are split 85/15 into train/val by frame; the gold frames
  are the test split. The frame pairs are listed and split first (`list_splits`, no decoding),
  then each split's frames are decoded.

`balance_classes` is the source's oversampling of rare classes (§7.1).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from visionzoo.preprocessing import (
    ImageDecodeError,
    ImageSpec,
    open_image,
    prepare_mask_tiles,
    prepare_tiles,
)

from .common import (
    DataFormatError,
    Examples,
    SplitData,
    decode_images,
    require_path,
    smoke_positions,
    stratified_split,
)

CLASS_NAMES = ["background", "soil", "bedrock", "sand", "big_rock"]
CLASS_COLORS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]  # the source's palette
AI4MARS_TO_CLASSES = np.full(256, 0, dtype=np.uint8)
AI4MARS_TO_CLASSES[[0, 1, 2, 3]] = [1, 2, 3, 4]
ARTIFACT_REFERENCE = 62
NPZ_SPLIT = {"train": 0.8, "val": 0.2}
AI4MARS_SPLIT = {"train": 0.85, "val": 0.15}
GOLD_DIR = "msl/labels/test/masked-gold-min3-100agree"
AI4MARS_DATASET = {"name": "AI4Mars (MSL NAVCAM)", "citation": "Swan et al. 2021, CVPR Workshops (NASA/JPL)",
                   "licence": "NASA/JPL imagery; the AI4Mars release and the 256x256 copy state no licence"}
AN2DL_DATASET = {"name": "AN2DL mars_for_students.npz", "citation": "Politecnico di Milano AN2DL course (2024)",
                 "licence": "course data; not redistributable without the course's terms"}


def detect_npz(data_dir: Path) -> bool:
    path = data_dir if data_dir.suffix == ".npz" else data_dir / "mars_for_students.npz"
    if not path.is_file():
        return False
    with np.load(path) as archive:
        return "training_set" in archive.files


def detect_ai4mars(data_dir: Path) -> bool:
    return (data_dir / "subset_manifest.csv").is_file() and (data_dir / "data").is_dir() or (data_dir / "msl").is_dir()


def load_npz(
    data_dir: Path, spec: ImageSpec, *, seed: int = 42, skip_bad: bool = False, artifact_reference: int | None = ARTIFACT_REFERENCE
) -> SplitData:
    del skip_bad
    path = Path(data_dir)
    path = require_path(path if path.suffix == ".npz" else path / "mars_for_students.npz", "mars_for_students.npz")
    with np.load(path) as archive:
        if "training_set" not in archive.files:
            raise DataFormatError(f"{path}: no 'training_set' array (has {archive.files})")
        data = archive["training_set"]
        unlabelled = len(archive["test_set"]) if "test_set" in archive.files else 0
    if data.ndim != 4 or data.shape[1] != 2:
        raise DataFormatError(f"{path}: training_set must be (N, 2, H, W), got {data.shape}")
    images, masks = data[:, 0], np.round(data[:, 1]).astype(np.int64)
    if masks.min() < 0 or masks.max() >= len(CLASS_NAMES):
        raise DataFormatError(f"{path}: mask values must be 0..4, got {masks.min()}..{masks.max()}")
    removed = 0
    if artifact_reference is not None and len(masks) > artifact_reference:
        artifact = np.all(masks == masks[artifact_reference], axis=(1, 2))
        removed = int(artifact.sum())
        images, masks = images[~artifact], masks[~artifact]
    pixels = np.clip(np.round(images), 0, 255).astype(np.uint8)[..., None]
    if pixels.shape[1:] != spec.shape:
        raise DataFormatError(f"{path}: images are {pixels.shape[1:]}, the model expects {spec.shape}")
    examples = Examples(images=pixels, targets={"mask": masks.astype(np.uint8)}, ids=np.array([f"{path}#{i}" for i in range(len(pixels))]))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    cut = round(NPZ_SPLIT["train"] * len(order))
    return SplitData(
        splits={"train": examples.subset(np.sort(order[:cut])), "val": examples.subset(np.sort(order[cut:]))},
        class_names={"mask": CLASS_NAMES},
        source=f"AN2DL npz {path}",
        notes={"split_seed": seed, "artifact_samples_removed": removed, "unlabelled_test_images": unlabelled, "dataset": AN2DL_DATASET},
    )


def _ai4mars_pairs(root: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(train pairs, gold test pairs) from a manifest or the original release tree."""
    manifest = root / "subset_manifest.csv"
    train, test = [], []
    if manifest.is_file():
        with manifest.open(newline="") as handle:
            for row in csv.DictReader(handle):
                pair = (root / row["image"], root / row["mask"])
                (test if row["split"].startswith("test") else train).append(pair)
    else:
        images = require_path(root / "msl/images/edr", "AI4Mars msl/images/edr")
        for mask in sorted((root / "msl/labels/train").glob("*.png")):
            train.append((images / f"{mask.stem}.JPG", mask))
        for mask in sorted((root / GOLD_DIR).glob("*_merged.png")):
            test.append((images / f"{mask.stem.removesuffix('_merged')}.JPG", mask))
    if not train:
        raise DataFormatError(f"{root}: no AI4Mars training pairs found")
    return train, test


def _decode_pair(pair: tuple[Path, Path], spec: ImageSpec) -> np.ndarray:
    """One frame -> (tiles, H, W, C+1) uint8: the image tiles with the mapped mask as last channel."""
    image_path, mask_path = pair
    tiles = prepare_tiles(image_path, spec, name=str(image_path))
    mask_image = open_image(mask_path, name=str(mask_path))
    if mask_image.mode not in ("L", "P"):
        raise ImageDecodeError(f"{mask_path}: masks must be single-channel PNGs, got mode {mask_image.mode}")
    mask = AI4MARS_TO_CLASSES[np.asarray(mask_image, dtype=np.uint8)]
    return np.concatenate([tiles, prepare_mask_tiles(mask, spec, len(tiles))[..., None]], axis=-1)


def _examples_from_pairs(pairs, spec: ImageSpec, skip_bad: bool, description: str):
    if not pairs:
        return None, []
    stacked, kept, skipped = decode_images(pairs, spec, skip_bad, description, decoder=_decode_pair)
    rows, tiles = stacked.shape[:2]
    flat = stacked.reshape(rows * tiles, *stacked.shape[2:])
    ids = np.array([f"{pairs[i][0]}#{t}" for i in kept for t in range(tiles)])
    frames = np.repeat(kept, tiles)
    return Examples(images=flat[..., :-1].copy(), targets={"mask": flat[..., -1].copy()}, ids=ids, groups=frames), skipped


def split_frames(count: int, seed: int = 42) -> dict[str, np.ndarray]:
    """Train/val indices into `count` training frames (85/15 by frame, seeded)."""
    return stratified_split(np.zeros(count), AI4MARS_SPLIT, seed)


def list_splits(data_dir: Path, seed: int = 42) -> dict[str, list[tuple[Path, Path]]]:
    """The (image, mask) frame pairs of each split `load_ai4mars` makes, without decoding anything:
    train and val from the training frames, test from the gold frames (absent when there are none)."""
    train_pairs, test_pairs = _ai4mars_pairs(Path(data_dir))
    splits = {name: [train_pairs[i] for i in idx] for name, idx in split_frames(len(train_pairs), seed).items()}
    if test_pairs:
        splits["test"] = test_pairs
    return splits


def load_ai4mars(data_dir: Path, spec: ImageSpec, *, seed: int = 42, skip_bad: bool = False,
                 max_examples: int | None = None) -> SplitData:
    """List the frame pairs, split them by frame, then decode each split's frames into tiles.

    `max_examples` (a smoke limit) keeps that many evenly spaced frames per split before decoding
    (each gives at least one tile; `train.prepare` then keeps `max_examples` tiles)."""
    root = Path(data_dir)
    pairs = list_splits(root, seed)
    splits, skipped = {}, []
    for name, split_pairs in pairs.items():
        split_pairs = [split_pairs[i] for i in smoke_positions(len(split_pairs), max_examples)]
        description = "AI4Mars gold test" if name == "test" else f"AI4Mars {name}"
        splits[name], bad = _examples_from_pairs(split_pairs, spec, skip_bad, description)
        skipped += bad
    frames = {"train+val": sum(len(pairs[name]) for name in AI4MARS_SPLIT), "test_gold": len(pairs.get("test", []))}
    return SplitData(
        splits=splits,
        class_names={"mask": CLASS_NAMES},
        source=f"AI4Mars layout at {root}",
        skipped=skipped,
        notes={
            "split_seed": seed,
            "frames": frames,
            "split_unit": "frame (both tiles of a frame stay in one split)",
            "label_mapping": "AI4Mars 255 unlabelled -> 0 background; 0 soil, 1 bedrock, 2 sand, 3 big rock -> 1..4",
            "dataset": AI4MARS_DATASET,
        },
    )


def balance_classes(examples: Examples, special_class: int = 3, divisor: int = 7) -> Examples:
    """Append crops around rare classes, as the source's `balance_classes` (§7.1).

    For each class k > 0 with pixel count c_k and mean count m over all classes, the multiplier is
    m // c_k for `special_class` (sand in the main notebook) and m // (divisor * c_k) otherwise.
    For every tile containing k, the box around k's pixels, widened by a quarter of its longer side,
    is cropped, resized back to the tile size (image: area filter; mask: nearest) and appended
    `multiplier` times. Deviation: the source boxed the first OpenCV contour; we box all of k's
    pixels in the tile, which needs no OpenCV and covers the same region for single blobs.
    """
    masks = examples.targets["mask"]
    counts = np.bincount(masks.reshape(-1), minlength=len(CLASS_NAMES)).astype(np.float64)
    mean = counts.mean()
    height, width = masks.shape[1:]
    new_images, new_masks, new_ids = [], [], []
    for k in range(1, len(CLASS_NAMES)):
        if counts[k] == 0:
            continue
        multiplier = int(mean // counts[k]) if k == special_class else int(mean // (divisor * counts[k]))
        if multiplier == 0:
            continue
        for index in np.flatnonzero((masks == k).any(axis=(1, 2))):
            rows, cols = np.nonzero(masks[index] == k)
            top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            margin = max(bottom - top, right - left) // 4
            top, left = max(0, top - margin), max(0, left - margin)
            bottom, right = min(height, bottom + margin), min(width, right + margin)
            image = Image.fromarray(examples.images[index, top:bottom, left:right, 0])
            mask = Image.fromarray(masks[index, top:bottom, left:right])
            crop_image = np.asarray(image.resize((width, height), Image.Resampling.BOX))[..., None]
            crop_mask = np.asarray(mask.resize((width, height), Image.Resampling.NEAREST))
            new_images += [crop_image] * multiplier
            new_masks += [crop_mask] * multiplier
            new_ids += [f"{examples.ids[index]}@balance{k}"] * multiplier
    if not new_images:
        return examples
    return Examples(
        images=np.concatenate([examples.images, np.stack(new_images)]),
        targets={"mask": np.concatenate([masks, np.stack(new_masks)])},
        ids=np.concatenate([examples.ids, np.array(new_ids)]),
    )
