"""Every loader of the served families, on synthetic files in its real on-disk format."""

import csv

import numpy as np
import pytest

from visionzoo.preprocessing import ImageDecodeError, ImageSpec
from visionzoo.training.data import (
    FORMATS,
    DataFormatError,
    blood,
    fracatlas,
    load_data,
    mars,
    mura,
    resolve_format,
)
from visionzoo.training.data import synthetic as writers
from visionzoo.training.registry import get_recipe

XRAY = ImageSpec(32, 32, "grayscale_rgb")
TILE = ImageSpec(64, 128, "grayscale", tiling="rows")


@pytest.mark.parametrize(
    "key, candidates",
    [("mura", ("mura", "fracatlas")), ("fracatlas", ("mura", "fracatlas")), ("blood_pbc", ("blood_pbc", "blood_npz")),
     ("blood_npz", ("blood_pbc", "blood_npz")), ("mars_npz", ("mars_npz", "ai4mars")), ("ai4mars", ("mars_npz", "ai4mars"))],
)
def test_format_detection_finds_each_layout(synthetic, key, candidates):
    assert resolve_format(synthetic[key], candidates) == key


def test_unknown_layout_names_the_formats_it_tried(tmp_path):
    with pytest.raises(DataFormatError, match="does not look like any format"):
        resolve_format(tmp_path, ("mura", "fracatlas"))


def test_mura_reads_every_study_row_and_real_body_parts(synthetic):
    data = mura.load(synthetic["mura"], XRAY, seed=1)
    root = synthetic["mura"] / "MURA-v1.1"
    studies = list(csv.reader((root / "train_labeled_studies.csv").open()))
    images = sum(1 for _ in (root / "train_image_paths.csv").open())
    assert len(data.splits["train"]) + len(data.splits["val"]) == images  # first row kept
    assert len(data.splits["test"]) == sum(1 for _ in (root / "valid_image_paths.csv").open())
    assert data.class_names["body_part"] == mura.BODY_PARTS
    train = data.splits["train"]
    assert set(np.unique(train.targets["body_part"])) == set(range(7))
    # labels are per study: every image of a study shares its study's label
    label_of = {row[0].rstrip("/").split("MURA-v1.1/")[1]: int(row[1]) for row in studies}
    for image_id, label, study in zip(train.ids, train.targets["abnormal"], train.groups):
        assert label_of[study] == label and study in image_id
    # no patient in both train and val
    assert not set(train.extras["patient"]) & set(data.splits["val"].extras["patient"])


def test_mura_faithful_flags_reproduce_the_source_bugs(synthetic):
    fixed = mura.load(synthetic["mura"], XRAY)
    faithful = mura.load(synthetic["mura"], XRAY, drop_first_row=True, source_body_part_bug=True)
    assert faithful.class_names["body_part"] == ["other"]
    assert all((split.targets["body_part"] == 0).all() for split in faithful.splits.values())
    per_study = 2  # images per study in the synthetic writer
    assert sum(map(len, fixed.splits.values())) - sum(map(len, faithful.splits.values())) == 2 * per_study
    assert faithful.notes["images_without_study_label"] == {"train": per_study, "valid": per_study}


def test_mura_rejects_unknown_body_part_folders(synthetic, tmp_path):
    root = writers.write_mura(tmp_path / "m", patients_per_part=1)
    for table in ("train_image_paths.csv", "train_labeled_studies.csv"):
        path = root / "MURA-v1.1" / table
        path.write_text(path.read_text().replace("XR_WRIST", "XR_ANKLE"))
    with pytest.raises(DataFormatError, match="XR_ANKLE"):
        mura.load(root, XRAY)


def test_fracatlas_heads_and_hardware(synthetic):
    data = fracatlas.load(synthetic["fracatlas"], XRAY, seed=3)
    assert data.class_names == {"abnormal": ["normal", "abnormal"], "body_part": fracatlas.BODY_PARTS}
    everything = np.concatenate([s.targets["body_part"] for s in data.splits.values()])
    assert np.bincount(everything).tolist() == [8, 8, 8, 8, 8]
    assert all("hardware" in s.extras for s in data.splits.values())
    # stratified: each split has both labels
    assert all(set(np.unique(s.targets["abnormal"])) == {0, 1} for s in data.splits.values())


@pytest.mark.parametrize("key, loader, spec", [
    ("mura_corrupt", mura.load, XRAY),
    ("fracatlas_corrupt", fracatlas.load, XRAY),
    ("blood_pbc_corrupt", blood.load_pbc, ImageSpec(96, 96)),
    ("ai4mars_corrupt", mars.load_ai4mars, TILE),
])
def test_unreadable_files_stop_with_the_file_name_or_are_skipped_and_counted(synthetic, key, loader, spec):
    with pytest.raises(ImageDecodeError, match="--skip-bad") as info:
        loader(synthetic[key], spec)
    assert str(synthetic[key]) in str(info.value)
    data = loader(synthetic[key], spec, skip_bad=True)
    assert data.skipped and all(str(synthetic[key]) in path for path, _ in data.skipped)
    assert data.describe()["skipped_files"] == len(data.skipped)


def test_blood_pbc_stratified_split_with_fixed_seed(synthetic):
    first = blood.load_pbc(synthetic["blood_pbc"], ImageSpec(96, 96), seed=7)
    again = blood.load_pbc(synthetic["blood_pbc"], ImageSpec(96, 96), seed=7)
    other = blood.load_pbc(synthetic["blood_pbc"], ImageSpec(96, 96), seed=8)
    assert first.counts() == {"train": 32, "val": 8, "test": 8}
    assert np.array_equal(first.splits["test"].ids, again.splits["test"].ids)
    assert not np.array_equal(first.splits["test"].ids, other.splits["test"].ids)
    assert first.splits["train"].images.shape[1:] == (96, 96, 3)


def test_blood_npz_drops_the_known_artifacts_only_for_the_an2dl_file(synthetic, tmp_path):
    data = blood.load_npz(synthetic["blood_npz"], ImageSpec(96, 96))
    assert sum(data.counts().values()) == 64 and data.notes["dropped_last"] == 0
    dropped = blood.load_npz(synthetic["blood_npz"], ImageSpec(96, 96), drop_last=16)
    assert sum(dropped.counts().values()) == 48
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 96, 96, 3), np.uint8), labels=np.array([[0], [1], [2], [9]]))
    with pytest.raises(DataFormatError, match="labels must be 0..7"):
        blood.load_npz(tmp_path / "bad.npz", ImageSpec(96, 96))


def test_mars_npz_removes_alien_artifacts_and_splits_80_20(synthetic):
    data = mars.load_npz(synthetic["mars_npz"], TILE)
    assert data.notes["artifact_samples_removed"] == 4  # sample 62 and its three copies
    assert data.counts() == {"train": 61, "val": 15}
    assert data.notes["unlabelled_test_images"] == 6
    assert data.splits["train"].images.shape[1:] == (64, 128, 1)
    assert data.splits["train"].targets["mask"].max() <= 4


def test_ai4mars_maps_unlabelled_to_background_and_tiles_frames(synthetic):
    data = mars.load_ai4mars(synthetic["ai4mars"], TILE, seed=0)
    assert data.counts() == {"train": 16, "val": 4, "test": 8}  # 10 + 4 frames, two tiles each
    masks = np.concatenate([s.targets["mask"].reshape(-1) for s in data.splits.values()])
    assert set(np.unique(masks)) == {0, 1, 2, 3, 4}
    # tiles of one frame stay together
    train_frames = {i.split("#")[0] for i in data.splits["train"].ids}
    val_frames = {i.split("#")[0] for i in data.splits["val"].ids}
    assert not train_frames & val_frames


def test_balance_classes_appends_crops_of_rare_classes(synthetic):
    split = mars.load_npz(synthetic["mars_npz"], TILE).splits["train"]
    balanced = mars.balance_classes(split)
    assert len(balanced) > len(split)
    added = balanced.targets["mask"][len(split):]
    share_before = (split.targets["mask"] == 4).mean()
    assert (added == 4).mean() > share_before  # crops concentrate the rare class


@pytest.mark.parametrize("model", ["mura_multitask_cnn", "bloodcell_mobilenetv3", "mars_dual_unet"])
def test_served_recipes_read_every_format_they_list(synthetic, model):
    recipe = get_recipe(model)
    for name in recipe.data_formats:
        assert name in FORMATS
        data = load_data(synthetic[name], recipe.image_spec, recipe.data_formats)
        assert data.splits["train"].images.shape[1:] == recipe.image_spec.shape


def test_synthetic_writer_cli_writes_a_dataset(tmp_path):
    writers.main(["mars_npz", str(tmp_path / "m.npz")])
    assert mars.detect_npz(tmp_path / "m.npz")
