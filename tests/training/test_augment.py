"""Every named augmentation keeps batch shapes, the 0..255 pixel range and (for masks) valid labels."""

import numpy as np
import pytest
import tensorflow as tf

from visionzoo.training.data.augment import AUGMENTATIONS


@pytest.mark.parametrize("name", sorted(n for n in AUGMENTATIONS if n != "mars"))
def test_image_augmentations_keep_shape_and_range(name):
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)), tf.float32)
    x, y = AUGMENTATIONS[name]()({"image": images}, {"label": tf.constant([0, 1, 2, 3])})
    assert x["image"].shape == images.shape
    assert float(tf.reduce_min(x["image"])) >= 0 and float(tf.reduce_max(x["image"])) <= 255
    assert not np.allclose(x["image"].numpy(), images.numpy())  # it did change something
    assert y["label"].numpy().tolist() == [0, 1, 2, 3]


def test_mars_augmentation_moves_image_and_mask_together():
    mask = np.zeros((4, 16, 32), np.uint8)
    mask[:, :, 16:] = 3
    image = np.where(mask[..., None] == 3, 200.0, 10.0).astype(np.float32)
    x, y = AUGMENTATIONS["mars"](mask_key="probabilities")({"image": tf.constant(image)}, {"probabilities": tf.constant(mask)})
    out_image, out_mask = x["image"].numpy()[..., 0], y["probabilities"].numpy()
    assert out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= {0, 3}
    assert np.array_equal(out_mask == 3, out_image > 100)  # labels still sit on their pixels


def _segmentation_batches(mask, class_weight=None, ignore_background=True, training=True, seed=0):
    from types import SimpleNamespace

    from visionzoo.training.data.common import Examples
    from visionzoo.training.data.pipeline import make_dataset
    from visionzoo.training.tasks import Segmentation

    task = Segmentation()
    examples = Examples(images=np.where(mask[..., None] > 0, 200, 10).astype(np.uint8), targets={"mask": mask},
                        ids=np.arange(len(mask)).astype(str))
    config = SimpleNamespace(ignore_background=ignore_background, class_weight=class_weight)
    tf.random.set_seed(seed)
    dataset = make_dataset(
        task.features(examples, {}), task.targets(examples), len(mask), shuffle=False, seed=seed,
        augment=AUGMENTATIONS["mars"](mask_key=task.output) if training else None,
        sample_weights=task.sample_weights(examples, config) if training else task.validation_weights(examples, config),
        label_weights=task.label_weights(examples, config, training),
    )
    return task, config, examples, next(iter(dataset))


def test_pixel_weights_follow_the_augmented_mask():
    # Labelled pixels only in the left quarter: any flip or shift moves them, and the weights
    # (zero on unlabelled pixels) must move with them rather than stay where the mask was.
    mask = np.zeros((16, 16, 32), np.uint8)
    mask[:, :, :8] = 2
    moved = 0
    for seed in range(3):
        _, _, _, (_x, y, w) = _segmentation_batches(mask, seed=seed)
        labels, weights = y["probabilities"].numpy(), w["probabilities"].numpy()
        assert np.array_equal(weights > 0, labels > 0)
        moved += int((labels[:, :, 8:] > 0).any())
    assert moved  # the augmentation did move labelled pixels somewhere they were not


def test_segmentation_class_balance_weighs_rare_classes_up():
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[:, :4] = 1       # 50% of pixels: class 1
    mask[:, 4:7] = 2      # 37.5%
    mask[:, 7, :4] = 4    # 6.25%
    # 6.25% stays background (ignored); class 3 is absent.
    task, config, examples, (_x, _y, w) = _segmentation_batches(mask, class_weight="balanced", training=False)
    assert np.array_equal(w["probabilities"].numpy() > 0, mask > 0)  # validation: labelled mask only, no balancing
    assert set(np.unique(w["probabilities"].numpy())) == {0.0, 1.0}
    weights = task.label_weights(examples, config, training=True)["probabilities"]
    shares = np.array([0, 8, 6, 0, 1]) / 15
    assert weights[0] == 0 and weights[3] == 1
    assert np.isclose((shares * weights).sum(), 1.0)  # a labelled pixel weighs 1 on average
    assert np.allclose(weights[[1, 2, 4]] * shares[[1, 2, 4]], weights[1] * shares[1])  # each class the same total
    sqrt = task.class_balance(mask, "balanced_sqrt", np.array([False, True, True, True, True]))
    assert 1 < sqrt[4] < weights[4] and sqrt[1] < 1
    with pytest.raises(ValueError, match="balanced_sqrt"):
        task.class_balance(mask, "inverse", np.ones(5, bool))


def test_the_table_is_complete_without_registration():
    """augment.py owns every augmentation: importing the registry adds none, and every name a recipe
    gives is in the table (fresh interpreter, so no earlier import can have filled it in)."""
    import subprocess
    import sys

    script = (
        "import visionzoo.training.data.synthetic\n"
        "from visionzoo.training.data.augment import AUGMENTATIONS\n"
        "before = set(AUGMENTATIONS)\n"
        "from visionzoo.training.registry import RECIPES\n"
        "assert set(AUGMENTATIONS) == before, sorted(set(AUGMENTATIONS) - before)\n"
        "missing = {r.name: r.augmentation for r in RECIPES.values() if r.augmentation and r.augmentation not in before}\n"
        "assert not missing, missing\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
