"""The served families' loaders on the real datasets (VISIONZOO_DATA); counts from its README."""

import numpy as np
import pytest

from visionzoo.training.data import load_data
from visionzoo.training.registry import get_recipe

pytestmark = pytest.mark.realdata


def test_pbc_blood_cells_counts(real_data):
    recipe = get_recipe("bloodcell_mobilenetv3")
    data = load_data(real_data / "blood_pbc", recipe.image_spec, recipe.data_formats, seed=42)
    assert sum(data.counts().values()) == 3999
    labels = np.concatenate([s.targets["label"] for s in data.splits.values()])
    expected = {"basophil": 284, "eosinophil": 729, "erythroblast": 363, "ig": 677, "lymphocyte": 285,
                "monocyte": 332, "neutrophil": 779, "platelet": 550}
    assert dict(zip(data.class_names["label"], np.bincount(labels).tolist())) == expected
    assert data.splits["test"].images.shape[1:] == (96, 96, 3)


def test_ai4mars_counts_and_pixel_shares(real_data):
    recipe = get_recipe("mars_dual_unet")
    data = load_data(real_data / "mars_ai4mars", recipe.image_spec, recipe.data_formats, seed=42)
    assert data.notes["frames"] == {"train+val": 1000, "test_gold": 322}
    assert len(data.splits["train"]) + len(data.splits["val"]) == 2000 and len(data.splits["test"]) == 644
    masks = np.concatenate([s.targets["mask"].reshape(-1) for s in data.splits.values()])
    share = np.bincount(masks, minlength=5) / masks.size
    # README (all 1,322 frames at 256x256): unlabelled 47.9%, soil 20.5%, bedrock 24.1%, sand 7.0%,
    # big rock 0.4%; nearest-neighbour downsampling to tiles keeps them within half a point.
    assert np.allclose(share, [0.479, 0.205, 0.241, 0.070, 0.004], atol=0.005)


def test_fracatlas_counts_by_body_part_and_label(real_data):
    recipe = get_recipe("mura_multitask_cnn")
    data = load_data(real_data / "xray_fracatlas", recipe.image_spec, recipe.data_formats, seed=42)
    assert sum(data.counts().values()) == 1019
    parts = np.concatenate([s.targets["body_part"] for s in data.splits.values()])
    abnormal = np.concatenate([s.targets["abnormal"] for s in data.splits.values()])
    table = {name: (int(((parts == k) & (abnormal == 1)).sum()), int(((parts == k) & (abnormal == 0)).sum()))
             for k, name in enumerate(data.class_names["body_part"])}
    assert table == {"hand": (200, 200), "leg": (150, 150), "hip": (7, 120), "shoulder": (7, 65), "mixed": (60, 60)}
    hardware = np.concatenate([s.extras["hardware"] for s in data.splits.values()])
    assert hardware.sum() == 56 and abnormal[hardware == 1].all()  # every implant image is abnormal
