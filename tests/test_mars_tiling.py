"""benchmarks/mars_tiling.py on a few real AI4Mars frames (VISIONZOO_DATA): the served Mars segmenter,
four serving variants, scored at frame size."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

mars_tiling = pytest.importorskip("benchmarks.mars_tiling")

MODEL = REPO / "exported_models" / "mars_dual_unet"  # the newest version


@pytest.fixture(scope="module")
def results(real_data):
    data_dir = real_data / "mars_ai4mars"
    if not data_dir.is_dir():
        pytest.skip(f"no mars_ai4mars folder in {real_data}")
    frames = {split: pairs[:2] for split, pairs in mars_tiling.splits(data_dir, seed=42).items()}
    return mars_tiling.score(mars_tiling.load_model(MODEL), frames, threads=1, progress=False)


def test_splits_are_the_loaders(real_data):
    frames = mars_tiling.splits(real_data / "mars_ai4mars", seed=42)
    assert len(frames["val"]) == 150  # 15% of the 1,000 training frames, as metadata.json's 300 val tiles
    assert len(frames["gold"]) == 322


def test_result_keys_and_ranges(results):
    assert set(results) == {"val", "gold"}
    for variants in results.values():
        assert set(variants) == set(mars_tiling.variants(mars_tiling.load_model(MODEL)))
        for m in variants.values():
            assert {"mean_iou", "per_class_iou", "pixel_accuracy", "background_share", "labelled_pixels",
                    "confusion_matrix", "frames", "predicted_share_all_pixels"} <= set(m)
            assert set(m["per_class_iou"]) == {"soil", "bedrock", "sand", "big_rock"}
            assert m["frames"] == 2 and m["labelled_pixels"] > 0
            for value in [m["mean_iou"], m["pixel_accuracy"], m["background_share"], *m["per_class_iou"].values()]:
                assert value is None or 0.0 <= value <= 1.0
            assert sum(map(sum, m["confusion_matrix"])) == m["labelled_pixels"]
            assert sum(m["confusion_matrix"][0]) == 0  # unlabelled pixels are never scored


def test_learnable_variants_never_predict_background(results):
    for variants in results.values():
        for name in ("c_learnable", "d_overlap_learnable"):
            assert variants[name]["predicted_share_all_pixels"][0] == 0.0  # on every pixel, labelled or not
            assert variants[name]["background_share"] == 0.0


def test_a_version_with_decision_weights_is_also_scored_as_it_serves():
    from types import SimpleNamespace

    labels = {"labels": {"mask": ["background", "soil", "bedrock", "sand", "big_rock"]}, "outputs": [{"name": "mask"}]}
    plain = SimpleNamespace(metadata={**labels, "preprocessing": {"tile_overlap": 0.5}, "learnable_classes": [1, 2, 3, 4]})
    assert mars_tiling.variants(plain) == mars_tiling.VARIANTS
    weighted = SimpleNamespace(metadata={**plain.metadata, "decision_weights": [1, 1, 1, 0.5, 0.7]})
    assert mars_tiling.variants(weighted)[mars_tiling.AS_SERVED] == (0.5, [1, 2, 3, 4], [1.0, 1.0, 1.0, 0.5, 0.7])
