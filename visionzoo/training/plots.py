"""PNG plots for run folders: learning curves, confusion matrices, ROC curves, per-class IoU and
segmentation overlays (image | truth | prediction). Matplotlib's Agg backend, no display needed."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from .metrics import roc_curve

MARS_COLORS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(figure)
    temporary.replace(path)
    return path


def learning_curves(history_csv: Path, path: Path) -> Path | None:
    """One panel per metric (loss, accuracy, IoU ...), training and validation together."""
    if not Path(history_csv).is_file():
        return None
    with Path(history_csv).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    columns = [c for c in rows[0] if c not in ("epoch", "lr") and not c.startswith("val_")]
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for axis, column in zip(axes[0], columns):
        # markers: a one-epoch run is a single point, which a line alone does not draw
        axis.plot(epochs, [float(r[column]) for r in rows], marker="o", markersize=4, label="train")
        if f"val_{column}" in rows[0]:
            axis.plot(epochs, [float(r[f"val_{column}"]) for r in rows], marker="o", markersize=4, label="validation")
        axis.set_title(column.replace("_", " "))
        axis.set_xlabel("epoch")
        axis.legend()
        axis.grid(alpha=0.3)
    return _save(figure, path)


def confusion_matrix(matrix, class_names: list[str], path: Path, title: str) -> Path:
    matrix = np.asarray(matrix)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.65 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if normalised[row, column] > 0.5 else "black"
        axis.text(column, row, f"{count}\n{normalised[row, column]:.0%}", ha="center", va="center", fontsize=7, color=colour)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    return _save(figure, path)


def roc(y_true, scores, path: Path, title: str, auc: float) -> Path:
    fpr, tpr, _ = roc_curve(y_true, scores)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(fpr, tpr, label=f"AUROC {auc:.3f}")
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    axis.set_xlabel("false-positive rate")
    axis.set_ylabel("true-positive rate")
    axis.set_title(title)
    axis.legend(loc="lower right")
    return _save(figure, path)


def per_class_iou(result: dict, path: Path, title: str) -> Path:
    names, values = zip(*result["per_class_iou"].items())
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    axis.bar(names, values, color=MARS_COLORS[1 : len(names) + 1])
    axis.axhline(result["mean_iou"], color="black", linestyle="--", linewidth=1, label=f"mean {result['mean_iou']:.3f}")
    axis.set_ylim(0, 1)
    axis.set_ylabel("IoU")
    axis.set_title(title)
    axis.legend()
    return _save(figure, path)


def segmentation_overlays(images, truth, predicted, path: Path, class_names: list[str], count: int = 4) -> Path:
    """Rows of image | truth | prediction for `count` evenly spaced examples."""
    cmap = ListedColormap(MARS_COLORS[: len(class_names)])
    picks = np.linspace(0, len(images) - 1, min(count, len(images))).astype(int)
    figure, axes = plt.subplots(len(picks), 3, figsize=(9, 1.9 * len(picks)), squeeze=False)
    for row, index in zip(axes, picks):
        row[0].imshow(images[index, ..., 0], cmap="gray", vmin=0, vmax=255)
        row[1].imshow(truth[index], cmap=cmap, vmin=0, vmax=len(class_names) - 1, interpolation="nearest")
        row[2].imshow(predicted[index], cmap=cmap, vmin=0, vmax=len(class_names) - 1, interpolation="nearest")
        for axis, title in zip(row, ("image", "truth", "prediction")):
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=MARS_COLORS[k]) for k in range(len(class_names))]
    figure.legend(handles, class_names, loc="lower center", ncol=len(class_names), fontsize=8)
    return _save(figure, path)


def task_plots(task, result: dict, predictions: dict, examples, folder: Path, split: str) -> None:
    """The plots that fit the task's scores."""
    kind = task.kind
    if kind == "classification":
        confusion_matrix(result["confusion_matrix"], result["class_names"], folder / f"confusion_matrix_{split}.png",
                         f"{split}: accuracy {result['accuracy']:.3f}")
    elif kind in ("binary", "multitask", "hybrid"):
        abnormal = result[task.target]
        probabilities = predictions[task.output].reshape(-1)
        roc(examples.targets[task.target], probabilities, folder / f"roc_{split}.png", f"{split}: {task.target}", abnormal["auroc"])
        confusion_matrix(abnormal["confusion_matrix"], ["negative", "positive"], folder / f"confusion_matrix_{split}.png",
                         f"{split}: {task.target} F1 {abnormal['f1']:.3f}")
        if "body_part" in result:
            part = result["body_part"]
            confusion_matrix(part["confusion_matrix"], part["class_names"], folder / f"confusion_matrix_body_part_{split}.png",
                             f"{split}: body part accuracy {part['accuracy']:.3f}")
    elif kind == "segmentation":
        per_class_iou(result, folder / f"iou_{split}.png", f"{split}: per-class IoU")
        segmentation_overlays(examples.images, examples.targets[task.target], predictions[task.output].argmax(-1),
                              folder / f"overlays_{split}.png", result["class_names"])
