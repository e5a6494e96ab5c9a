"""Loaders of the classic zoo (idx, PNG packs, image folders and archives, CIFAR pickles, the
Kaggle digit CSV, dogs vs cats): synthetic files in each real layout, validation specs, and the
real datasets' counts (../shared/data/README.md) when VISIONZOO_DATA is set."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from visionzoo.preprocessing import ImageDecodeError, ImageSpec
from visionzoo.training.data import (
    FORMATS,
    cifar,
    dogs_vs_cats,
    folders,
    idx,
    kaggle_digits,
    resolve_format,
)
from visionzoo.training.data import synthetic as writers
from visionzoo.training.data.common import DataFormatError
from visionzoo.training.data.holdout import (
    parse_validation,
    sklearn_shuffle_split,
    validation_indices,
)

GREY_28 = ImageSpec(28, 28, "grayscale")
RGB_32 = ImageSpec(32, 32, "rgb")
CLASSIC_LAYOUTS = ("idx", "idx_mnist_pngs", "idx_fashion_pngs", "image_folders", "image_folders_tar", "cifar_pickle",
                   "cifar100_pickle", "kaggle_digits", "dogs_vs_cats")


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    """One tiny dataset per classic layout, written once for this module."""
    root = tmp_path_factory.mktemp("classic")
    return {name: writers.WRITERS[name](root / name) for name in CLASSIC_LAYOUTS}


# --- idx -------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype) if dtype != np.uint8 else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = idx.write_idx(tmp_path / f"x-images-idx3-ubyte{suffix}", array)
    np.testing.assert_array_equal(idx.read_idx(path), array)
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 12)
    with pytest.raises(DataFormatError, match="bad magic"):
        idx.read_idx(bad)
    short = idx.write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 4, 4), np.uint8))
    short.write_bytes(short.read_bytes()[:-5])
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte: header says shape"):
        idx.read_idx(short)
    broken = tmp_path / "train-labels-idx1-ubyte.gz"
    broken.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")[:-4])
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte.gz"):
        idx.read_idx(broken)


@pytest.mark.parametrize("layout", ["idx", "idx_mnist_pngs", "idx_fashion_pngs"])
def test_idx_layouts_load_in_official_order(classic, layout):
    root = classic[layout]
    assert resolve_format(root, ("idx", "image_folders")) == "idx"
    data = FORMATS["idx"].load(root, GREY_28, validation="last:12")
    assert data.counts() == {"train": 48, "val": 12, "test": 20}
    assert data.splits["train"].images.shape == (48, 28, 28, 1) and data.splits["train"].images.dtype == np.uint8
    official = idx.read_idx(next(root.glob("train-labels-idx1-ubyte*"))).astype(np.int64)
    labels = np.concatenate([data.splits["train"].targets["label"], data.splits["val"].targets["label"]])
    np.testing.assert_array_equal(labels, official)  # PNGs put back in the label file's order
    test_labels = idx.read_idx(next(root.glob("t10k-labels-idx1-ubyte*")))
    np.testing.assert_array_equal(data.splits["test"].targets["label"], test_labels)
    assert data.notes["listed"]["train"]["examples"] == 48


def test_idx_png_labels_must_agree_with_the_label_file(classic, tmp_path):
    root = tmp_path / "mnist"
    writers.write_mnist_pngs(root)
    labels = idx.read_idx(root / "train-labels-idx1-ubyte.gz")
    idx.write_idx(root / "train-labels-idx1-ubyte.gz", (labels + 1) % 10)
    with pytest.raises(DataFormatError, match="disagree with the label file"):
        idx.load(root, GREY_28)
    fashion = tmp_path / "fashion"
    writers.write_fashion_pngs(fashion)
    idx.write_idx(fashion / "train-labels-idx1-ubyte.gz", np.zeros(60, np.uint8))
    with pytest.raises(DataFormatError, match="per-class PNG counts"):
        idx.load(fashion, GREY_28)


def test_idx_images_without_labels_is_an_error(tmp_path):
    writers.write_idx_files(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataFormatError, match="no t10k-labels"):
        idx.load(tmp_path, GREY_28)


# --- validation specs --------------------------------------------------------------------------

def test_validation_specs():
    labels = np.arange(100) % 10
    train, val = validation_indices(labels, parse_validation("last:30", 0))
    assert list(val) == list(range(70, 100)) and len(train) == 70
    train, val = validation_indices(labels, parse_validation("fraction:0.1", 0))
    assert list(val) == list(range(90, 100))
    train, val = validation_indices(labels, parse_validation("stratified:0.2", 3))
    assert np.bincount(labels[val]).tolist() == [2] * 10
    with pytest.raises(DataFormatError, match="last:500"):
        validation_indices(labels, parse_validation("last:500", 0))
    for bad in ("last", "fraction:2", "shuffle:0.2", "holdout:1", "stratified:x"):
        with pytest.raises(ValueError, match="expected last:N"):
            parse_validation(bad, 0)


def test_shuffle_split_matches_scikit_learn():
    # sklearn.model_selection.train_test_split(range(10), test_size=0.2, random_state=42)
    train, test = sklearn_shuffle_split(10, 0.2, 42)
    assert list(test) == [8, 1] and list(train) == [5, 0, 7, 2, 9, 4, 3, 6]
    train, test = sklearn_shuffle_split(50_000, 0.2, 42)  # the [N] ablation split: 40k / 10k
    assert len(train) == 40_000 and len(test) == 10_000 and not set(train) & set(test)


def test_validation_test_and_limit(classic):
    data = idx.load(classic["idx"], GREY_28, validation="test", max_examples=7)
    assert data.splits["val"] is data.splits["test"] and data.notes["val_is_test"]
    assert data.counts() == {"train": 7, "test": 7, "val": 7}
    assert data.notes["listed"]["train"]["examples"] == 60 and data.notes["limit_per_split"] == 7


# --- image folders and archives ----------------------------------------------------------------

@pytest.mark.parametrize("layout", ["image_folders", "image_folders_tar"])
def test_image_folders(classic, layout):
    root = classic[layout]
    assert resolve_format(root, ("cifar_pickle", "image_folders")) == "image_folders"
    data = folders.load(root, RGB_32, validation="last:10", class_names=cifar.CIFAR10_CLASSES)
    assert data.counts() == {"train": 50, "val": 10, "test": 20}
    assert data.class_names["label"] == cifar.CIFAR10_CLASSES
    # per-class file numbers interleave the classes, so the last 10 hold one of each
    assert sorted(data.splits["val"].targets["label"]) == list(range(10))
    if layout.endswith("tar"):
        assert "CIFAR-10-images.tar.gz#train/" in data.splits["train"].ids[0]


def test_image_folders_flat_test_csv_val_folder_and_bad_files(tmp_path):
    root = writers.write_image_folders(tmp_path / "set", per_class=4, test_per_class=0, classes=["cat", "dog"], corrupt=1)
    for split, labels in (("val", ["cat", "dog"]), ):
        for index, name in enumerate(labels):
            (root / split / name).mkdir(parents=True)
            (root / split / name / f"{index}.jpg").write_bytes((root / "train" / name / "0000.jpg").read_bytes())
    (root / "test").mkdir()
    (root / "test" / "7.jpg").write_bytes((root / "train" / "dog" / "0001.jpg").read_bytes())
    (root / "test.csv").write_text("file,label\n7.jpg,dog\n")
    with pytest.raises(ImageDecodeError, match="bad0.jpg"):
        folders.load(root, RGB_32)
    data = folders.load(root, RGB_32, skip_bad=True)
    assert data.counts() == {"train": 8, "val": 2, "test": 1}
    assert len(data.skipped) == 1 and data.notes["validation_rule"] == "the dataset's own validation folder"
    assert data.splits["test"].targets["label"].tolist() == [1]
    with pytest.raises(DataFormatError, match="unknown class folders"):
        folders.load(root, RGB_32, skip_bad=True, class_names=["bird", "cat"])


def test_image_folders_need_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "x.png").write_bytes(b"")
    with pytest.raises(DataFormatError, match="one sub-folder per class"):
        folders.load(tmp_path, RGB_32)
    with pytest.raises(DataFormatError, match="tar.gz"):
        folders.open_tree(tmp_path / "train")


# --- CIFAR pickles -----------------------------------------------------------------------------

def test_cifar10_pickles(classic):
    root = classic["cifar_pickle"]
    assert resolve_format(root, ("cifar_pickle", "image_folders")) == "cifar_pickle"
    data = cifar.load(root, RGB_32, validation="last:20")
    assert data.counts() == {"train": 80, "val": 20, "test": 20}
    assert data.class_names["label"] == cifar.CIFAR10_CLASSES
    assert data.splits["val"].ids[0].endswith("data_batch_5#0")  # last 20 = the last batch
    # rows are CHW planes: the writer's class tint lands on channel label % 3
    image, label = data.splits["train"].images[0], data.splits["train"].targets["label"][0]
    assert image.reshape(-1, 3).mean(axis=0).argmax() == label % 3


def test_cifar_archives_and_cifar100(classic, tmp_path):
    import tarfile

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(classic["cifar_pickle"] / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert cifar.detect(tmp_path) and cifar.load(tmp_path, RGB_32, validation="test").counts()["train"] == 100
    fine = cifar.load(classic["cifar100_pickle"], RGB_32, validation="fraction:0.1")
    coarse = cifar.load(classic["cifar100_pickle"], RGB_32, validation="fraction:0.1", label_mode="coarse")
    assert len(fine.class_names["label"]) == 100 and len(coarse.class_names["label"]) == 20
    np.testing.assert_array_equal(coarse.splits["test"].targets["label"], fine.splits["test"].targets["label"] // 5)


def test_cifar_refuses_code_in_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    writers.write_cifar_pickle(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": Exploit()}))
    with pytest.raises(DataFormatError, match="refusing to load builtins.print"):
        cifar.load(tmp_path, RGB_32)


# --- Kaggle digit CSV --------------------------------------------------------------------------

def test_kaggle_digits(classic):
    root = classic["kaggle_digits"]
    assert resolve_format(root, ("kaggle_digits", "idx")) == "kaggle_digits"
    data = kaggle_digits.load(root, GREY_28)  # the source's train_test_split(test_size=0.03, random_state=2019)
    assert data.counts() == {"train": 58, "val": 2}
    assert "unlabelled_test_csv" in data.notes
    assert kaggle_digits.load(root / "train.csv", GREY_28).counts() == data.counts()


def test_kaggle_missing_values_are_named_or_skipped(tmp_path):
    root = writers.write_kaggle_digits(tmp_path, rows=40, missing=3)
    with pytest.raises(DataFormatError, match=r"line 39: missing value in column pixel779.*--skip-bad"):
        kaggle_digits.load(root, GREY_28)
    data = kaggle_digits.load(root, GREY_28, skip_bad=True, validation="fraction:0.25")
    assert sum(data.counts().values()) == 37 and len(data.skipped) == 3
    clean = writers.write_kaggle_digits(tmp_path / "range", rows=40)
    text = (clean / "train.csv").read_text().splitlines()
    text[5] = text[5][: text[5].rindex(",")] + ",300"
    (clean / "train.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataFormatError, match="line 6: .*pixels 0..255"):
        kaggle_digits.load(clean, GREY_28, validation="fraction:0.25")
    assert len(kaggle_digits.load(clean, GREY_28, skip_bad=True, validation="fraction:0.25").skipped) == 1


# --- dogs vs cats ------------------------------------------------------------------------------

def test_dogs_vs_cats(classic, tmp_path):
    root = classic["dogs_vs_cats"]
    assert resolve_format(root, ("dogs_vs_cats", "image_folders")) == "dogs_vs_cats"
    data = dogs_vs_cats.load(root, ImageSpec(40, 40, "rgb"))
    assert data.counts() == {"train": 16, "test": 4, "val": 4} and data.splits["val"] is data.splits["test"]
    assert data.class_names["label"] == ["cat", "dog"]
    assert np.bincount(data.splits["test"].targets["label"]).tolist() == [2, 2]
    assert data.splits["train"].images.shape[1:] == (40, 40, 3)
    bad = writers.write_dogs_vs_cats(tmp_path / "bad", per_class=4, corrupt=1)
    assert len(dogs_vs_cats.load(bad, ImageSpec(40, 40, "rgb"), skip_bad=True).skipped) == 1


# --- real data (../shared/data/README.md) ------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.parametrize("folder, fmt, spec, counts", [
    ("mnist", "idx", GREY_28, {"train": 60_000, "test": 10_000}),
    ("fashion_mnist", "idx", GREY_28, {"train": 60_000, "test": 10_000}),
    ("cifar10_jpg", "image_folders", RGB_32, {"train": 50_000, "test": 10_000}),
])
def test_real_classic_datasets(real_data, folder, fmt, spec, counts):
    root = real_data / folder
    candidates = ("cifar_pickle", "image_folders") if fmt == "image_folders" else ("idx", "image_folders")
    assert resolve_format(root, candidates) == fmt
    data = FORMATS[fmt].load(root, spec, validation="last:5000", max_examples=64)
    listed = data.notes["listed"]
    assert listed["train"]["examples"] + listed["val"]["examples"] == counts["train"]
    assert listed["test"]["examples"] == counts["test"]
    assert data.counts() == {"train": 64, "val": 64, "test": 64}
    if folder != "mnist":  # Fashion-MNIST and CIFAR-10 test sets are balanced
        assert set(listed["test"]["per_class"].values()) == {counts["test"] // 10}
    if folder == "mnist":  # train PNGs are named by official index: the first labels are 5, 0, 4
        assert data.splits["train"].ids[0].endswith("train/5/0.png")


@pytest.mark.realdata
def test_real_dogs_vs_cats(real_data):
    data = dogs_vs_cats.load(real_data / "dogs_vs_cats", ImageSpec(150, 150, "rgb"), max_examples=8)
    listed = data.notes["listed"]
    assert listed["train"]["examples"] + listed["test"]["examples"] == 600
    per_class = {name: listed["train"]["per_class"][name] + listed["test"]["per_class"][name] for name in ("cat", "dog")}
    assert per_class == {"cat": 300, "dog": 300}
