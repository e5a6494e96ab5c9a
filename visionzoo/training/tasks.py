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
        """Weights that define what validation measures (masks of unscored pixels); never balancing."""
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
            result["per_study"]["studies"] = int(len(groups))
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

    `config.ignore_background` gives unlabelled/background pixels zero loss weight (AI4Mars marks
    47.9% of pixels unlabelled; the source trained on its background class).
    """

    target: str = "mask"
    output: str = "probabilities"
    kind = "segmentation"

    def targets(self, examples):
        return {self.output: examples.targets[self.target]}

    def sample_weights(self, examples, config):
        if not config.ignore_background:
            return None
        return {self.output: (examples.targets[self.target] != 0).astype(np.float32)}

    def validation_weights(self, examples, config):
        return self.sample_weights(examples, config)  # val_loss/val_accuracy on labelled pixels too

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
