"""benchmarks.flip_tta: its views are the image, its mirror and its vertical flip, a map computed on a
view lines up with the original once flipped back, and the committed report chose on validation."""

import json

import numpy as np

from benchmarks import flip_tta


def test_the_views_are_the_image_its_mirror_and_its_vertical_flip():
    batch = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1)
    seen = flip_tta.views(batch)
    assert seen.shape == (6, 3, 4, 1)
    np.testing.assert_array_equal(seen[:2], batch)
    np.testing.assert_array_equal(seen[2:4, :, 0], batch[:, :, -1])  # left-right
    np.testing.assert_array_equal(seen[4:, 0], batch[:, -1])  # upside down


def test_a_map_of_a_view_flipped_back_lines_up_with_the_image():
    batch = np.random.default_rng(0).uniform(size=(2, 3, 4, 5)).astype(np.float32)
    seen = flip_tta.views(batch)  # an identity "model": its map is its input
    for row, view in enumerate(flip_tta.VIEWS):
        np.testing.assert_array_equal(flip_tta.unflip(seen[row * 2:(row + 1) * 2], view), batch)


def test_the_committed_report_chose_on_validation():
    committed = json.loads(flip_tta.OUT.read_text())
    for model, key in (("xray", "abnormal_auroc"), ("mars", "mean_iou")):
        validation = committed[model]["splits"]["val"]["candidates"]
        assert set(validation) == set(flip_tta.CANDIDATES)
        assert validation[committed[model]["chosen_on_validation"]][key] == max(c[key] for c in validation.values())
