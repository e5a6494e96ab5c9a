"""Keras losses and metrics the recipes compile with (registered so saved models reload)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="visionzoo")
class MeanIoUExcludingBackground(keras.metrics.MeanIoU):
    """The Mars source's `MeanIntersectionOverUnion` (seed-models.md §7.2): argmax the
    probabilities, drop pixels whose *true* label is in `labels_to_exclude`, then Keras MeanIoU."""

    def __init__(self, num_classes: int = 5, labels_to_exclude=(0,), name: str = "mean_iou", dtype=None):
        super().__init__(num_classes=num_classes, name=name, dtype=dtype)
        self.labels_to_exclude = [int(label) for label in labels_to_exclude]

    def update_state(self, y_true, y_pred, sample_weight=None):
        del sample_weight
        y_pred = tf.reshape(tf.argmax(y_pred, axis=-1), [-1])
        y_true = tf.reshape(tf.cast(y_true, tf.int64), [-1])
        keep = tf.ones_like(y_true, dtype=tf.bool)
        for label in self.labels_to_exclude:
            keep = tf.logical_and(keep, tf.not_equal(y_true, label))
        return super().update_state(tf.boolean_mask(y_true, keep), tf.boolean_mask(y_pred, keep))

    def get_config(self):
        config = super().get_config()
        for key in ("ignore_class", "sparse_y_true", "sparse_y_pred", "axis"):
            config.pop(key, None)
        config["labels_to_exclude"] = self.labels_to_exclude
        return config


@keras.utils.register_keras_serializable(package="visionzoo")
class SparseCategoricalFocalLoss(keras.losses.Loss):
    """Focal loss (Lin et al. 2017) for integer labels and probability outputs.

    The Mars README claims focal loss; no source notebook uses it (§8). It is an option here
    (`--set loss=focal`), not the default.
    """

    def __init__(self, gamma: float = 2.0, name: str = "sparse_categorical_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, axis=-1)
        probabilities = tf.clip_by_value(tf.cast(y_pred, tf.float32), 1e-7, 1.0)
        true_probability = tf.gather(probabilities, y_true, axis=-1, batch_dims=y_true.shape.rank)
        return -tf.pow(1.0 - true_probability, self.gamma) * tf.math.log(true_probability)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.utils.register_keras_serializable(package="visionzoo")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy for integer labels with label smoothing (Szegedy et al. 2016): the target puts
    1 - smoothing on the true class and smoothing / K on every class. tf-keras's sparse loss has no
    smoothing option, its categorical one needs one-hot targets."""

    def __init__(self, smoothing: float = 0.1, name: str = "smoothed_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, axis=-1)
        classes = tf.shape(y_pred)[-1]
        target = tf.one_hot(y_true, classes, dtype=tf.float32) * (1.0 - self.smoothing) + self.smoothing / tf.cast(classes, tf.float32)
        probabilities = tf.clip_by_value(tf.cast(y_pred, tf.float32), 1e-7, 1.0)
        return -tf.reduce_sum(target * tf.math.log(probabilities), axis=-1)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}
