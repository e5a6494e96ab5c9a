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
