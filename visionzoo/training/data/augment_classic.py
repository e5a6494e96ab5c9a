"""Batch augmentations named by the classic-zoo recipes (float32 pixels in 0..255, like
visionzoo.training.data.augment), each the tf.data equivalent of the source's generator or transform:

- `cifar_shift_flip` ([N] final model, stage 3): ImageDataGenerator(rotation_range=15,
  width/height_shift_range=0.1, horizontal_flip=True), fill "nearest".
- `digits_affine` (LeNet-50): ImageDataGenerator(rotation_range=10, zoom_range=0.1,
  width/height_shift_range=0.1), fill "nearest"; no flips (digits are not symmetric).
- `cifar_crop_flip` (ResNet50, CIFAR-10): RandomCrop(32, padding=4) + RandomHorizontalFlip; zero
  padding = black pixels, as torchvision pads before normalising.
- `cifar_crop_flip_reflect` (custom ResNet, CIFAR-100): the same with padding_mode="reflect".
- `vgg_zoom_flip` (VGG16 transfer): ImageDataGenerator(shear_range=0.2, zoom_range=0.2,
  horizontal_flip=True). Keras's shear_range is in *degrees*, so 0.2 is a 0.2-degree shear that
  changes no pixel meaningfully; it is left out.

Integer-pixel crops are translations by up to `pad` pixels with nearest interpolation, which is
what padding and cropping do.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras

Augment = Callable[[dict, dict], tuple[dict, dict]]


def _pipeline(layers: list, image_key: str) -> Augment:
    model = keras.Sequential(layers)

    def apply(x: dict, y: dict):
        x = dict(x)
        x[image_key] = tf.clip_by_value(model(x[image_key], training=True), 0.0, 255.0)
        return x, y

    return apply


def cifar_shift_flip(image_key: str = "image") -> Augment:
    return _pipeline([
        keras.layers.RandomRotation(15 / 360, fill_mode="nearest"),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
        keras.layers.RandomFlip("horizontal"),
    ], image_key)


def digits_affine(image_key: str = "image") -> Augment:
    return _pipeline([
        keras.layers.RandomRotation(10 / 360, fill_mode="nearest"),
        keras.layers.RandomZoom((-0.1, 0.1), fill_mode="nearest"),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
    ], image_key)


def _crop_flip(fill_mode: str, pad: int = 4, size: int = 32, image_key: str = "image") -> Augment:
    return _pipeline([
        keras.layers.RandomTranslation(pad / size, pad / size, fill_mode=fill_mode, interpolation="nearest", fill_value=0.0),
        keras.layers.RandomFlip("horizontal"),
    ], image_key)


def cifar_crop_flip(image_key: str = "image") -> Augment:
    return _crop_flip("constant", image_key=image_key)


def cifar_crop_flip_reflect(image_key: str = "image") -> Augment:
    return _crop_flip("reflect", image_key=image_key)


def vgg_zoom_flip(image_key: str = "image") -> Augment:
    return _pipeline([
        keras.layers.RandomZoom((-0.2, 0.2), fill_mode="nearest"),
        keras.layers.RandomFlip("horizontal"),
    ], image_key)


AUGMENTATIONS: dict[str, Callable[..., Augment]] = {
    "cifar_shift_flip": cifar_shift_flip,
    "digits_affine": digits_affine,
    "cifar_crop_flip": cifar_crop_flip,
    "cifar_crop_flip_reflect": cifar_crop_flip_reflect,
    "vgg_zoom_flip": vgg_zoom_flip,
}


def register() -> None:
    """Add these to visionzoo.training.data.augment.AUGMENTATIONS, the table training looks names up in
    (idempotent; a name already taken by another augmentation is an error)."""
    from .augment import AUGMENTATIONS as table

    for name, factory in AUGMENTATIONS.items():
        if table.get(name, factory) is not factory:
            raise ValueError(f"augmentation {name!r} is already registered")
        table[name] = factory
