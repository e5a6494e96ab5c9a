"""benchmarks.xray_cam_follow on a few real FracAtlas films: the placed canvases put the film where
they say, the served X-ray model's Grad-CAM map moves towards the film, and the report has the shape
benchmarks/xray_cam_follow.json (quoted by the model card) has."""

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from benchmarks import xray_cam_follow, xray_sizes

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def report(real_data):
    return xray_cam_follow.run(xray_sizes.resolve_data_dir(real_data), limit=6, show_progress=False)


def test_the_film_sits_on_the_named_half_of_a_black_canvas(real_data):
    path = xray_sizes.fracatlas.list_splits(xray_sizes.resolve_data_dir(real_data), xray_sizes.SPLIT_SEED)["val"].paths[0]
    right, left = (np.asarray(Image.open(io.BytesIO(xray_cam_follow.placed_png(path, side)))) for side in (True, False))
    half = right.shape[1] // 2
    assert right.shape == left.shape and not right[:, :half].any() and not left[:, half:].any()
    assert np.array_equal(right[:, half:], left[:, :half]) and right.max() > 0


def test_centre_of_mass_of_a_map():
    cam = np.zeros((4, 10), np.float32)
    cam[:, 9] = 1
    assert xray_cam_follow.centre_x(cam) == pytest.approx(0.95)
    assert xray_cam_follow.centre_x(np.ones((3, 4))) == pytest.approx(0.5)
    assert xray_cam_follow.centre_x(np.zeros((3, 4))) == 0.0  # no map: no centre, not a division by zero


def test_the_map_moves_towards_the_film(report):
    for name, split in report["splits"].items():
        assert split["films"] == 6, name
        assert split["mean_move"] > 0 and split["share_right_way"] >= 4 / 6, (name, split)


def test_a_version_without_a_cam_output_is_refused_by_name(real_data):
    model = xray_sizes.load_model()
    metadata = {**model.version.metadata, "outputs": [o for o in model.version.outputs if o["name"] != "cam"]}
    stripped = xray_sizes.XrayModel(dataclasses.replace(model.version, metadata=metadata), model.engine)
    listing = xray_sizes.fracatlas.list_splits(xray_sizes.resolve_data_dir(real_data), xray_sizes.SPLIT_SEED)["val"]
    with pytest.raises(ValueError, match="no `cam` output"):
        xray_cam_follow.moves(stripped, listing.subset(np.arange(1)), show_progress=False)
