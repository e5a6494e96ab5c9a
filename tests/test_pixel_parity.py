"""Training's input pipeline and serving's request path give a model the same pixels, on real
images of all three served tasks: the loader + tf.data batches on one side, an uploaded file's
bytes through visionzoo.serving.processing on the other."""

from pathlib import Path

import numpy as np
import pytest

from visionzoo.serving.processing import Limits, Upload, decode_uploads
from visionzoo.training.data import load_data
from visionzoo.training.data.pipeline import make_dataset
from visionzoo.training.registry import get_recipe

pytestmark = pytest.mark.realdata

CASES = [("bloodcell_mobilenetv3", "blood_pbc"), ("mura_multitask_resnet", "xray_fracatlas"), ("mars_dual_unet", "mars_ai4mars")]


@pytest.mark.parametrize("model, folder", CASES)
def test_training_and_serving_see_identical_pixels(model, folder, real_data):
    recipe = get_recipe(model)
    split = load_data(real_data / folder, recipe.image_spec, recipe.data_formats, seed=42).splits["test"]
    picks = np.linspace(0, len(split) - 1, 6).astype(int)
    batch = next(iter(make_dataset({"image": split.images[picks]}, {}, len(picks), shuffle=False, seed=0)))[0]["image"].numpy()
    for row, index in enumerate(picks):
        source, _, tile = str(split.ids[index]).partition("#")
        served = decode_uploads([Upload(Path(source).name, Path(source).read_bytes())], recipe.image_spec, Limits())[0]
        expected = served.tiles[int(tile) if tile else 0]
        assert batch[row].dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(batch[row], expected, err_msg=f"{source}: training and serving pixels differ")
