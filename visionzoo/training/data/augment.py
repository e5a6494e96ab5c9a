"""Batch augmentations named by the recipes (all operate on float32 pixels in 0..255).

- `mura`: the MURA sources' `augment_image` (§5.0): random left-right and up-down flips,
  brightness +-0.1 (of the unit range) and contrast 0.9..1.1.
- `bloodcell`: flips, quarter turns (blood cells have no orientation), brightness and contrast.
  The source ran keras_cv's RandomAugmentationPipeline (4 of 9 layers per image, rotation up to
  108 degrees, zoom/translation 30%, channel shuffle, noise); from scratch on a CPU that slowed
  convergence, so the shipped recipe uses this lighter, exactly label-preserving set.
  `bloodcell_source` keeps an approximation of the source's pipeline.
- `xray`: the `mura` set plus small geometric changes radiographs really show (rotation up to 18
  degrees, zoom and shifts up to 15%, reflect fill); for small X-ray sets, where flips and
  brightness alone let the CNN memorise the training images.
- `mars`: image and mask transformed together (stacked as channels, nearest interpolation, reflect
  fill, as the source did): flips, then a random zoom or translation.

The classic-zoo recipes' augmentations, each the tf.data equivalent of the source's generator or
transform:

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


def _flip(images: tf.Tensor, vertical: bool = True) -> tf.Tensor:
    images = tf.image.random_flip_left_right(images)
    return tf.image.random_flip_up_down(images) if vertical else images


def _brightness_contrast(images: tf.Tensor, brightness: float, contrast: tuple[float, float]) -> tf.Tensor:
    batch = tf.shape(images)[0]
    shift = tf.random.uniform([batch, 1, 1, 1], -brightness, brightness) * 255.0
    factor = tf.random.uniform([batch, 1, 1, 1], *contrast)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((images - mean) * factor + mean + shift, 0.0, 255.0)


def _quarter_turns(images: tf.Tensor) -> tf.Tensor:
    turns = tf.random.uniform([], 0, 4, dtype=tf.int32)
    return tf.image.rot90(images, turns)


def mura(image_key: str = "image") -> Augment:
    def apply(x: dict, y: dict):
        x = dict(x)
        x[image_key] = _brightness_contrast(_flip(x[image_key]), 0.1, (0.9, 1.1))
        return x, y

    return apply


def xray(image_key: str = "image") -> Augment:
    geometry = keras.Sequential(
        [
            keras.layers.RandomRotation(0.05, fill_mode="reflect"),
            keras.layers.RandomZoom(0.15, fill_mode="reflect"),
            keras.layers.RandomTranslation(0.15, 0.15, fill_mode="reflect"),
        ]
    )

    def apply(x: dict, y: dict):
        x = dict(x)
        images = geometry(_flip(x[image_key]), training=True)
        x[image_key] = _brightness_contrast(images, 0.1, (0.9, 1.1))
        return x, y

    return apply


def bloodcell(image_key: str = "image") -> Augment:
    def apply(x: dict, y: dict):
        x = dict(x)
        images = _quarter_turns(_flip(x[image_key]))
        x[image_key] = _brightness_contrast(images, 0.1, (0.8, 1.2))
        return x, y

    return apply


def bloodcell_stain(image_key: str = "image") -> Augment:
    zoom = keras.layers.RandomZoom(0.1, fill_mode="reflect")

    def apply(x: dict, y: dict):
        x = dict(x)
        images = _quarter_turns(_flip(x[image_key]))
        images = zoom(images, training=True) / 255.0
        images = tf.image.random_saturation(images, 0.7, 1.3)
        images = tf.image.random_hue(images, 0.03)
        x[image_key] = _brightness_contrast(tf.clip_by_value(images, 0.0, 1.0) * 255.0, 0.1, (0.8, 1.2))
        return x, y

    return apply


def bloodcell_source(image_key: str = "image") -> Augment:
    layers = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical"),
            keras.layers.RandomRotation((-0.2, 0.3), fill_mode="reflect"),
            keras.layers.RandomZoom((-0.3, 0.3), fill_mode="reflect"),
            keras.layers.RandomTranslation(0.3, 0.3, fill_mode="reflect"),
            keras.layers.RandomBrightness(0.5, value_range=(0, 255)),
            keras.layers.RandomContrast((0.5, 1.0)),
        ]
    )

    def apply(x: dict, y: dict):
        x = dict(x)
        x[image_key] = tf.clip_by_value(layers(x[image_key], training=True), 0.0, 255.0)
        return x, y

    return apply


def mars(image_key: str = "image", mask_key: str = "probabilities") -> Augment:
    zoom = keras.layers.RandomZoom((-0.5, 0.5), fill_mode="reflect", interpolation="nearest")
    shift = keras.layers.RandomTranslation(0.5, 0.5, fill_mode="reflect", interpolation="nearest")

    def apply(x: dict, y: dict):
        images, masks = x[image_key], y[mask_key]
        stacked = tf.concat([images, tf.cast(masks[..., None], tf.float32)], axis=-1)
        stacked = _flip(stacked)
        stacked = tf.cond(
            tf.random.uniform([]) < 0.5, lambda: zoom(stacked, training=True), lambda: shift(stacked, training=True)
        )
        x, y = dict(x), dict(y)
        x[image_key] = stacked[..., :-1]
        y[mask_key] = tf.cast(tf.round(stacked[..., -1]), masks.dtype)
        return x, y

    return apply


# --- the classic zoo's augmentations -------------------------------------------------------------

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
    "mura": mura,
    "xray": xray,
    "bloodcell": bloodcell,
    "bloodcell_source": bloodcell_source,
    "bloodcell_stain": bloodcell_stain,
    "mars": mars,
    "cifar_shift_flip": cifar_shift_flip,
    "digits_affine": digits_affine,
    "cifar_crop_flip": cifar_crop_flip,
    "cifar_crop_flip_reflect": cifar_crop_flip_reflect,
    "vgg_zoom_flip": vgg_zoom_flip,
}
