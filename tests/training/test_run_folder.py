"""Run folders record a few evaluation samples by id, so export decodes those files instead of
re-reading the whole dataset; the pixels it gets are the ones training saw."""

import numpy as np
import pytest

from visionzoo.training import export, runs
from visionzoo.training.data import FORMATS
from visionzoo.training.registry import get_recipe


@pytest.mark.parametrize("model, data_format", [
    ("mars_dual_unet", "ai4mars"),             # tiles: "frame.jpg#1"
    ("bloodcell_mobilenetv3", "blood_pbc"),    # one file per example
    ("mura_multitask_cnn", "fracatlas"),
])
def test_recorded_samples_decode_to_the_loaders_pixels(model, data_format, synthetic, tmp_path):
    spec = get_recipe(model).image_spec
    data = FORMATS[data_format].load(synthetic[data_format], spec)
    split = "test" if "test" in data.splits else "val"
    examples = data.splits[split]
    runs.write_samples(tmp_path, split, examples.ids, count=5)
    recorded = runs.read_samples(tmp_path)
    assert recorded["split"] == split and 1 <= len(recorded["ids"]) <= 5

    decoded = export.recorded_examples(tmp_path, spec)
    assert decoded is not None and list(decoded.ids) == recorded["ids"]
    index = {str(i): n for n, i in enumerate(examples.ids)}
    expected = examples.images[[index[i] for i in recorded["ids"]]]
    np.testing.assert_array_equal(decoded.images, expected)


def test_samples_that_are_not_image_files_fall_back_to_the_dataset(tmp_path):
    spec = get_recipe("mnist_lenet").image_spec
    assert export.recorded_examples(tmp_path, spec) is None  # a run that recorded none
    runs.write_samples(tmp_path, "test", np.array([f"{tmp_path}/t10k-images-idx3-ubyte.gz#3"]))
    assert export.recorded_examples(tmp_path, spec) is None  # a row of an idx file: re-read instead


def test_spread_and_atomic_json(tmp_path):
    assert runs.spread(100, 4).tolist() == [0, 33, 66, 99] and runs.spread(3, 16).tolist() == [0, 1, 2]
    runs.write_json(tmp_path / "a.json", {"n": np.int64(3), "v": np.arange(2)})
    assert runs.read_json(tmp_path / "a.json") == {"n": 3, "v": [0, 1]}
    assert runs.read_json(tmp_path / "missing.json") == {}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_new_run_folders_take_the_next_free_suffix(tmp_path, monkeypatch):
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from visionzoo.training import train

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 7, 18, 0, 0, tzinfo=UTC)

    monkeypatch.setattr(train, "datetime", FrozenClock)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = SimpleNamespace(out=str(tmp_path), model="mnist_lenet", strategy="auto")
    first = train.new_run_dir(config)
    assert first == tmp_path / "mnist_lenet-20261207-180000" and not first.exists()
    first.mkdir()
    second = train.new_run_dir(config)
    second.mkdir()
    assert second.name == f"{first.name}-2" and train.new_run_dir(config).name == f"{first.name}-3"
