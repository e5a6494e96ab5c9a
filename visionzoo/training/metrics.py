"""Evaluation scores in plain NumPy (no TensorFlow, so tests and model cards can use them anywhere)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support, plus the confusion matrix."""
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    true_positive = np.diag(matrix)
    precision = _safe_divide(true_positive, matrix.sum(axis=0))
    recall = _safe_divide(true_positive, matrix.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    support = matrix.sum(axis=1)
    weights = support / max(support.sum(), 1)
    return {
        "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * weights).sum()),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds, in increasing FPR order from (0, 0)."""
    y_true = np.asarray(y_true).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="mergesort")
    scores, y_true = scores[order], y_true[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(y_true)[distinct]
    false_positives = (distinct + 1) - true_positives
    positives, negatives = max(y_true.sum(), 1), max((~y_true).sum(), 1)
    tpr = np.r_[0.0, true_positives / positives]
    fpr = np.r_[0.0, false_positives / negatives]
    thresholds = np.r_[np.inf, scores[distinct]]
    return fpr, tpr, thresholds


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    y_true = np.asarray(y_true).reshape(-1)
    if y_true.min() == y_true.max():
        return float("nan")  # undefined with one class present
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.trapezoid(tpr, fpr))


def binary_scores(y_true: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1 (positive class = 1) and AUROC for a sigmoid output."""
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y_pred = (probabilities >= threshold).astype(np.int64)
    matrix = confusion_matrix(y_true, y_pred, 2)
    (tn, fp), (fn, tp) = matrix
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": float((tp + tn) / max(matrix.sum(), 1)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "auroc": auroc(y_true, probabilities),
        "threshold": threshold,
        "confusion_matrix": matrix.tolist(),
        "support": {"negative": int(tn + fp), "positive": int(fn + tp)},
    }


def segmentation_scores(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], ignore_class: int = 0) -> dict:
    """IoU per class and their mean over every class but `ignore_class`, on pixels whose true label
    is not `ignore_class` (unlabelled / background pixels are not scored). A prediction of the
    ignored class on a labelled pixel counts as a miss for the true class.

    `mean_iou_source_definition` is the source's Keras metric: MeanIoU over all classes after
    dropping true-background pixels, where background predictions give background an IoU of 0
    that is averaged in.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    labelled = y_true != ignore_class
    matrix = confusion_matrix(y_true[labelled], y_pred[labelled], len(class_names))
    true_positive = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - true_positive
    iou = _safe_divide(true_positive, union)
    scored = [k for k in range(len(class_names)) if k != ignore_class]
    present = [k for k in range(len(class_names)) if union[k] > 0]
    return {
        "mean_iou": float(iou[scored].mean()),
        "mean_iou_source_definition": float(iou[present].mean()) if present else 0.0,
        "per_class_iou": {class_names[k]: float(iou[k]) for k in scored},
        "pixel_accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "labelled_pixels": int(labelled.sum()),
        "ignored_class": class_names[ignore_class],
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }
