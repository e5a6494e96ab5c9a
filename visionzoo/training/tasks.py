"""What differs between a classifier, a binary detector, the MURA two-head model and a segmenter:
which arrays feed which model input/output, the losses and Keras metrics, and how predictions are
scored. Recipes pick one of these objects; everything else in training is task-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import metrics as scores
from .data.common import Examples


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-example weights n / (n_classes * count(label)): scikit-learn's compute_sample_weight('balanced')."""
    from sklearn.utils.class_weight import compute_sample_weight

    return compute_sample_weight("balanced", np.asarray(labels).reshape(-1)).astype(np.float32)


@dataclass(frozen=True)
class Task:
    """Base: one image input named "image"."""

    kind = "task"

    def features(self, examples: Examples, class_names: dict) -> dict[str, np.ndarray]:
        return {"image": examples.images}

    def targets(self, examples: Examples) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def sample_weights(self, examples: Examples, config) -> dict[str, np.ndarray] | None:
        """Training weights (class balancing, masks)."""
        return None

    def validation_weights(self, examples: Examples, config) -> dict[str, np.ndarray] | None:
        """Weights that define what validation measures; never balancing."""
        return None

    def learnable_classes(self, config) -> list[int] | None:
        """The classes training gives loss to, when some class gets none (metadata.json
        `learnable_classes`: serving's arg-max runs over these only); None: every class."""
        return None

    def label_weights(self, examples: Examples, config, training: bool) -> dict[str, np.ndarray] | None:
        """Per-class weight vectors, by output: the input pipeline looks each target label up *after*
        augmentation, so a per-pixel weight map moves with its mask (flips, zooms, shifts)."""
        return None

    def losses(self, config) -> dict:
        raise NotImplementedError

    def keras_metrics(self, config) -> dict:
        raise NotImplementedError

    def monitor(self, metric: str) -> str:
        """Translate a recipe's monitor name (e.g. 'val_accuracy') to the Keras log key."""
        return metric

    def score(self, predictions: dict[str, np.ndarray], examples: Examples, class_names: dict) -> dict:
        raise NotImplementedError

    def output_labels(self, class_names: dict) -> dict[str, list[str]]:
        raise NotImplementedError


@dataclass(frozen=True)
class Classification(Task):
    """Single-label softmax over K classes: output "probabilities" (N, K), target "label"."""

    target: str = "label"
    output: str = "probabilities"
    kind = "classification"

    def targets(self, examples):
        return {self.output: examples.targets[self.target]}

    def sample_weights(self, examples, config):
        if config.class_weight != "balanced":
            return None
        return {self.output: balanced_weights(examples.targets[self.target])}

    def losses(self, config):
        if getattr(config, "label_smoothing", 0.0):
            from .models.objectives import SmoothedSparseCategoricalCrossentropy

            return {self.output: SmoothedSparseCategoricalCrossentropy(config.label_smoothing)}
        return {self.output: "sparse_categorical_crossentropy"}

    def keras_metrics(self, config):
        return {self.output: ["accuracy"]}

    def score(self, predictions, examples, class_names):
        predicted = predictions[self.output].argmax(axis=-1)
        return scores.classification_scores(examples.targets[self.target], predicted, class_names[self.target])

    def output_labels(self, class_names):
        return {self.output: class_names[self.target]}


@dataclass(frozen=True)
class Binary(Task):
    """One sigmoid unit: output (N, 1), target 0/1. Balanced sample weights when asked."""

    target: str = "abnormal"
    output: str = "abnormal"
    kind = "binary"

    def targets(self, examples):
        return {self.output: examples.targets[self.target].astype(np.float32)[:, None]}

    def sample_weights(self, examples, config):
        if config.class_weight != "balanced":
            return None
        return {self.output: balanced_weights(examples.targets[self.target])}

    def losses(self, config):
        return {self.output: "binary_crossentropy"}

    def keras_metrics(self, config):
        import tf_keras as keras

        return {self.output: ["accuracy", keras.metrics.AUC(name="auc")]}

    def _binary_scores(self, predictions, examples):
        probabilities = predictions[self.output].reshape(-1)
        result = scores.binary_scores(examples.targets[self.target], probabilities)
        for extra, values in examples.extras.items():
            if set(np.unique(values)) <= {0, 1}:
                predicted = (probabilities >= 0.5).astype(np.int64)
                correct = predicted == examples.targets[self.target]
                result[f"accuracy_by_{extra}"] = {
                    f"{extra}={flag}": {"accuracy": float(correct[values == flag].mean()), "count": int((values == flag).sum())}
                    for flag in (0, 1)
                    if (values == flag).any()
                }
        if examples.groups is not None:
            groups, inverse = np.unique(examples.groups, return_inverse=True)
            group_probability = np.bincount(inverse, probabilities) / np.bincount(inverse)
            group_label = np.zeros(len(groups), dtype=np.int64)
            group_label[inverse] = examples.targets[self.target]
            result["per_study"] = scores.binary_scores(group_label, group_probability)
            result["per_study"]["studies"] = len(groups)
        return result

    def score(self, predictions, examples, class_names):
        return {self.target: self._binary_scores(predictions, examples)}

    def output_labels(self, class_names):
        return {self.output: class_names.get(self.target, ["negative", "positive"])}


@dataclass(frozen=True)
class MultitaskMURA(Binary):
    """Abnormal (sigmoid) + body part (softmax); balanced weights apply to the abnormal head only."""

    kind = "multitask"

    def targets(self, examples):
        return {**super().targets(examples), "body_part": examples.targets["body_part"]}

    def sample_weights(self, examples, config):
        weights = super().sample_weights(examples, config)
        if weights is None:
            return None
        return {**weights, "body_part": np.ones(len(examples), dtype=np.float32)}

    def losses(self, config):
        return {**super().losses(config), "body_part": "sparse_categorical_crossentropy"}

    def keras_metrics(self, config):
        return {**super().keras_metrics(config), "body_part": ["accuracy"]}

    def monitor(self, metric):
        # Recipes name the abnormal head's metrics plainly (val_accuracy); Keras prefixes outputs.
        for name in ("accuracy", "auc"):
            if metric in (name, f"val_{name}"):
                return metric.replace(name, f"abnormal_{name}")
        return metric

    def score(self, predictions, examples, class_names):
        predicted_part = predictions["body_part"].argmax(axis=-1)
        return {
            "abnormal": self._binary_scores(predictions, examples),
            "body_part": scores.classification_scores(examples.targets["body_part"], predicted_part, class_names["body_part"]),
        }

    def output_labels(self, class_names):
        return {"abnormal": class_names["abnormal"], "body_part": class_names["body_part"]}


@dataclass(frozen=True)
class HybridMURA(Binary):
    """InceptionV3 hybrid: the body part is a second *input* (v1 integer, v2 one-hot with an
    extra 'unknown' slot), the only output is abnormal."""

    one_hot_body_part: bool = True
    kind = "hybrid"

    def features(self, examples, class_names):
        parts = examples.targets["body_part"]
        if self.one_hot_body_part:
            encoded = np.eye(len(class_names["body_part"]) + 1, dtype=np.float32)[parts]
        else:
            encoded = parts.astype(np.int32)[:, None]
        return {"image": examples.images, "body_part": encoded}


@dataclass(frozen=True)
class Segmentation(Task):
    """Per-pixel softmax: output "probabilities" (N, H, W, K), target "mask" (N, H, W).

    Pixel weights are looked up from the mask after augmentation (`label_weights`):
    - `config.ignore_background` gives unlabelled/background pixels (class 0) zero weight (AI4Mars
      marks 47.9% of pixels unlabelled; the source trained on its background class);
    - `config.class_weight` "balanced" weighs each learnable class by 1 / its share of the labelled
      training pixels, "balanced_sqrt" by 1 / sqrt(share) (milder); both scaled so the mean weight
      of a labelled training pixel is 1. Validation is never balanced.

    Until 2026-12 the mask weights were fixed per example before augmentation, so after a flip or
    shift they no longer lined up with the mask: background pixels were trained towards class 0 and
    labelled ones were skipped (mars_dual_unet versions 1-2 were trained so).
    """

    target: str = "mask"
    output: str = "probabilities"
    num_classes: int = 5
    kind = "segmentation"

    def targets(self, examples):
        return {self.output: examples.targets[self.target]}

    def learnable_classes(self, config):
        return list(range(1, self.num_classes)) if config.ignore_background else None

    def label_weights(self, examples, config, training):
        weights = np.ones(self.num_classes, dtype=np.float64)
        if config.ignore_background:
            weights[0] = 0.0
        if training and config.class_weight:
            weights *= self.class_balance(examples.targets[self.target], config.class_weight, weights > 0)
        if np.all(weights == 1.0):
            return None
        return {self.output: weights.astype(np.float32)}

    def class_balance(self, masks: np.ndarray, method: str, learnable: np.ndarray) -> np.ndarray:
        """Per-class multipliers from the learnable pixels' class shares (1 for absent classes)."""
        powers = {"balanced": 1.0, "balanced_sqrt": 0.5}
        if method not in powers:
            raise ValueError(f"class_weight {method!r} is not known for segmentation; use one of {sorted(powers)} or none")
        counts = np.bincount(np.asarray(masks).reshape(-1), minlength=self.num_classes)[: self.num_classes].astype(np.float64)
        counts[~learnable] = 0
        present = counts > 0
        share = counts / counts.sum()
        multipliers = np.ones(self.num_classes)
        multipliers[present] = share[present] ** -powers[method]
        multipliers[present] /= (share[present] * multipliers[present]).sum()  # mean labelled-pixel weight 1
        return multipliers

    def losses(self, config):
        if config.loss == "focal":
            from .models.objectives import SparseCategoricalFocalLoss

            return {self.output: SparseCategoricalFocalLoss()}
        return {self.output: "sparse_categorical_crossentropy"}

    def keras_metrics(self, config):
        from .models.objectives import MeanIoUExcludingBackground

        return {self.output: ["accuracy", MeanIoUExcludingBackground(num_classes=5)]}

    def score(self, predictions, examples, class_names):
        predicted = predictions[self.output].argmax(axis=-1)
        return scores.segmentation_scores(examples.targets[self.target], predicted, class_names[self.target])

    def output_labels(self, class_names):
        return {self.output: class_names[self.target]}
