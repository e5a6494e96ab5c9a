"""One loader protocol: list files and labels, split the list, then decode only what the splits use.

`list_splits` must give the same membership and order as the loader's splits, without decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionzoo.preprocessing import ImageDecodeError, ImageSpec
from visionzoo.training.data import blood, common, fracatlas, mars

REPO = Path(__file__).resolve().parents[2]
BLOOD = ImageSpec(96, 96)
TILE = ImageSpec(64, 128, "grayscale", tiling="rows")


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to open or decode an image fails the test; undo with `monkeypatch.undo()`."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"listing must not decode anything (called with {args[:1]})")

    monkeypatch.setattr(Image, "open", refuse)
    for module in (common, mars):
        monkeypatch.setattr(module, "decode_images", refuse)
    monkeypatch.setattr(blood, "decode_used", refuse)
    monkeypatch.setattr(blood, "prepare_image", refuse)
    monkeypatch.setattr(mars, "_decode_pair", refuse)
    return monkeypatch


def _frames(ids: np.ndarray) -> list[str]:
    """The frame of each tile id (`<image>#<tile>`), in order, each once."""
    return list(dict.fromkeys(str(i).split("#")[0] for i in ids))


@pytest.mark.parametrize("seed", [7, 42])
def test_blood_list_splits_are_load_pbc_splits_without_decoding(synthetic, no_decoding, seed):
    listed = blood.list_splits(synthetic["blood_pbc"], seed)
    with pytest.raises(AssertionError, match="must not decode"):  # the guard does catch decoding
        blood.load_pbc(synthetic["blood_pbc"], BLOOD, seed=seed)
    no_decoding.undo()
    data = blood.load_pbc(synthetic["blood_pbc"], BLOOD, seed=seed)
    assert list(listed) == list(data.splits) == ["train", "val", "test"]
    for name, split in data.splits.items():
        assert [str(p) for p in listed[name].paths] == split.ids.tolist()
        assert np.array_equal(listed[name].labels, split.targets["label"])
    assert sum(len(s) for s in listed.values()) == len(blood.list_images(synthetic["blood_pbc"]))


@pytest.mark.parametrize("key, loader, list_splits, spec", [
    ("blood_pbc_corrupt", blood.load_pbc, blood.list_splits, BLOOD),
    ("fracatlas_corrupt", fracatlas.load, fracatlas.list_splits, ImageSpec(64, 64, "grayscale")),
])
def test_an_unreadable_file_leaves_its_split_and_every_other_file_keeps_its_own(synthetic, key, loader, list_splits, spec):
    """skip_bad drops the broken files only: the splits are the listing's, so a corrupt file cannot
    move images between training and test (MURA's loader has the same rule)."""
    with pytest.raises(ImageDecodeError, match="--skip-bad"):
        loader(synthetic[key], spec)
    data = loader(synthetic[key], spec, skip_bad=True)
    bad = {path for path, _ in data.skipped}
    listed = list_splits(synthetic[key])
    assert bad and sum(len(s) for s in data.splits.values()) == sum(len(s) for s in listed.values()) - len(bad)
    for name, listing in listed.items():
        assert data.splits[name].ids.tolist() == [str(p) for p in listing.paths if str(p) not in bad]


def test_blood_max_examples_limits_before_decoding_as_prepare_does_after(synthetic, monkeypatch):
    # what prepare() applies to every split after loading
    from visionzoo.training.train import _limit

    full = blood.load_pbc(synthetic["blood_pbc"], BLOOD, seed=3)
    decoded = []
    real_decode = common.decode_images  # blood.load_pbc decodes through common.decode_used

    def counting(paths, *args, **kwargs):
        decoded.extend(paths)
        return real_decode(paths, *args, **kwargs)

    monkeypatch.setattr(common, "decode_images", counting)
    limited = blood.load_pbc(synthetic["blood_pbc"], BLOOD, seed=3, max_examples=5)
    assert limited.counts() == {"train": 5, "val": 5, "test": 5}
    assert len(decoded) == 15  # only the files the limited splits use
    for name, split in full.splits.items():
        expected = _limit(split, 5)
        got = limited.splits[name]
        assert got.ids.tolist() == expected.ids.tolist()
        assert np.array_equal(got.images, expected.images)
        assert np.array_equal(got.targets["label"], expected.targets["label"])
    assert limited.notes == full.notes


@pytest.mark.parametrize("seed", [0, 42])
def test_ai4mars_list_splits_are_load_ai4mars_splits_without_decoding(synthetic, no_decoding, seed):
    listed = mars.list_splits(synthetic["ai4mars"], seed)
    with pytest.raises(AssertionError, match="must not decode"):
        mars.load_ai4mars(synthetic["ai4mars"], TILE, seed=seed)
    no_decoding.undo()
    data = mars.load_ai4mars(synthetic["ai4mars"], TILE, seed=seed)
    assert list(listed) == list(data.splits) == ["train", "val", "test"]
    for name, split in data.splits.items():
        assert _frames(split.ids) == [str(image) for image, _ in listed[name]]
        assert len(split) == 2 * len(listed[name])  # a 256x256 frame gives two tiles
    assert data.notes["frames"] == {"train+val": len(listed["train"]) + len(listed["val"]), "test_gold": len(listed["test"])}
    assert all(mask.suffix == ".png" and mask.is_file() for pairs in listed.values() for _, mask in pairs)


def test_ai4mars_without_gold_frames_has_no_test_split(synthetic, tmp_path):
    manifest = synthetic["ai4mars"] / "subset_manifest.csv"
    lines = [line for line in manifest.read_text().splitlines() if ",test_gold," not in line]
    root = tmp_path / "ai4mars"
    root.mkdir()
    (root / "data").symlink_to(synthetic["ai4mars"] / "data")
    (root / "subset_manifest.csv").write_text("\n".join(lines) + "\n")
    assert list(mars.list_splits(root)) == ["train", "val"]


def _shipped_counts(run: str) -> dict:
    return json.loads((REPO / "runs" / run / "data.json").read_text())


@pytest.mark.realdata
def test_real_pbc_list_splits_match_the_shipped_blood_cell_run(real_data, no_decoding):
    shipped = _shipped_counts("bloodcell_mobilenetv3-20261122-023313")
    assert shipped["split_seed"] == 42 and shipped["skipped_files"] == 0
    listed = blood.list_splits(real_data / "blood_pbc", shipped["split_seed"])
    assert set(listed) == set(shipped["splits"])
    for name, split in listed.items():
        counts = np.bincount(split.labels, minlength=len(blood.CLASS_NAMES)).tolist()
        assert len(split) == shipped["splits"][name]["examples"]
        assert dict(zip(blood.CLASS_NAMES, counts)) == shipped["splits"][name]["label"]


@pytest.mark.realdata
def test_real_ai4mars_list_splits_match_the_shipped_mars_run(real_data, no_decoding):
    shipped = _shipped_counts("mars_dual_unet-20261122-051745")
    listed = mars.list_splits(real_data / "mars_ai4mars", shipped["split_seed"])
    frames = {"train+val": len(listed["train"]) + len(listed["val"]), "test_gold": len(listed["test"])}
    assert frames == shipped["frames"]
    tiles = {name: 2 * len(pairs) for name, pairs in listed.items()}  # two tiles per 256x256 frame
    examples = {name: split["examples"] for name, split in shipped["splits"].items()}
    examples["train"] -= shipped["balance_classes_added"]  # prepare() appended those crops after loading
    assert tiles == examples


def test_mura_list_splits_are_load_splits_and_smoke_limits_come_before_decoding(synthetic, monkeypatch):
    from visionzoo.training.data import mura
    from visionzoo.training.train import _limit

    spec = ImageSpec(64, 64, "grayscale_rgb")
    monkeypatch.setattr(mura, "decode_images", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    listed, _ = mura.list_splits(synthetic["mura"], seed=7)  # no decoding
    monkeypatch.undo()
    data = mura.load(synthetic["mura"], spec, seed=7)
    assert list(listed) == list(data.splits) == ["train", "val", "test"]
    for name, split in data.splits.items():
        assert [str(r[0]) for r in listed[name]] == split.ids.tolist()
    train_patients = set(data.splits["train"].extras["patient"])
    assert not train_patients & set(data.splits["val"].extras["patient"])  # split by patient

    decoded = []
    real_decode = mura.decode_images
    monkeypatch.setattr(mura, "decode_images", lambda paths, *a, **k: (decoded.extend(paths), real_decode(paths, *a, **k))[1])
    small = mura.load(synthetic["mura"], spec, seed=7, max_examples=3)
    assert len(decoded) == sum(len(s) for s in small.splits.values()) <= 9
    for name, split in small.splits.items():
        expected = _limit(data.splits[name], 3)
        assert split.ids.tolist() == expected.ids.tolist() and np.array_equal(split.images, expected.images)


@pytest.mark.parametrize("loader, key, spec", [
    ("fracatlas", "fracatlas", ImageSpec(64, 64, "grayscale_rgb")),
    ("mars", "ai4mars", TILE),
])
def test_smoke_limits_apply_before_decoding(loader, key, spec, synthetic, monkeypatch):
    """A smoke run reads a handful of files per split, not the dataset."""
    from visionzoo.training.data import fracatlas

    module = {"fracatlas": fracatlas, "mars": mars}[loader]
    load = {"fracatlas": fracatlas.load, "mars": mars.load_ai4mars}[loader]
    listed = sum(len(s) for s in module.list_splits(synthetic[key]).values())
    decoded = []
    decoding = common if loader == "fracatlas" else mars  # fracatlas decodes through common.decode_used
    real_decode = decoding.decode_images
    monkeypatch.setattr(decoding, "decode_images", lambda items, *a, **k: (decoded.extend(items), real_decode(items, *a, **k))[1])
    data = load(synthetic[key], spec, max_examples=2)
    assert len(decoded) <= 2 * len(data.splits) < listed
    assert all(1 <= len(split) for split in data.splits.values())
    if loader == "fracatlas":  # the same images prepare() would keep from a full load
        from visionzoo.training.train import _limit

        monkeypatch.undo()
        full = load(synthetic[key], spec)
        for name, split in data.splits.items():
            assert split.ids.tolist() == _limit(full.splits[name], 2).ids.tolist()
