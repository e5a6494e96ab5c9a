"""Model cards: what a shipped version scores, per class, under which conditions, and where it fails.

    python -m visionzoo.training.model_card exported_models/bloodcell_mobilenetv3/4
    python -m visionzoo.training.model_card exported_models/mura_multitask_resnet/1 \
        --evidence benchmarks/xray_sizes.json benchmarks/xray_cam_follow.json

Writes metadata.json `model_card` (atomically; metadata.json is not among the hashed files, and the
ONNX metadata_props do not carry the card, so nothing else changes):
    test / validation   the headline figures of each split, recomputed from the confusion matrices
                        metadata.json already holds: accuracy and balanced accuracy (mean per-class
                        recall), per-class recall (and IoU for segmentation); the X-ray card adds
                        the abnormal head's F1 and AUROC
    evidence            figures measured on the served path by a benchmark (the Mars class map at
                        frame size, the X-ray size robustness and how its Grad-CAM map follows a
                        moved film), read from its JSON report
    failure_modes       the known failure modes in plain words (configs/model_cards.toml, one list
                        per export name: the words are written by people, the numbers come from here)
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import numpy as np

from . import metrics
from .metrics import recall_by_class

CARDS = Path(__file__).parent / "configs" / "model_cards.toml"


def recall_per_class(confusion: list[list[int]], names: list[str]) -> dict[str, float]:
    return {name: round(float(value), 4) for name, value in zip(names, recall_by_class(confusion)) if not np.isnan(value)}


def balanced_accuracy(confusion: list[list[int]]) -> float:
    return round(metrics.balanced_accuracy(confusion), 4)


def _classification(split: dict, metadata: dict) -> dict:
    names = split["class_names"]
    return {"examples": split.get("examples"), "accuracy": round(float(split["accuracy"]), 4),
            "balanced_accuracy": balanced_accuracy(split["confusion_matrix"]),
            "macro_f1": round(float(split["macro_f1"]), 4), "recall": recall_per_class(split["confusion_matrix"], names)}


def _multitask(split: dict, metadata: dict) -> dict:
    abnormal, body_part = split["abnormal"], split["body_part"]
    return {
        "examples": split.get("examples"),
        "abnormal": {key: round(float(abnormal[key]), 4) for key in ("accuracy", "f1", "auroc", "precision", "recall")}
        | {"balanced_accuracy": balanced_accuracy(abnormal["confusion_matrix"]), "threshold": abnormal.get("threshold")},
        "body_part": _classification(body_part, metadata),
    }


def _segmentation(split: dict, metadata: dict) -> dict:
    preprocessing = metadata["preprocessing"]  # the figures are per model tile, at the version's tile size
    tile = f"{preprocessing['height']}x{preprocessing['width']}"
    return {"examples": split.get("examples"), "unit": f"{tile} model tiles, labelled pixels",
            "mean_iou": round(float(split["mean_iou"]), 4), "pixel_accuracy": round(float(split["pixel_accuracy"]), 4),
            "iou": {name: round(float(value), 4) for name, value in split["per_class_iou"].items()},
            "recall": recall_per_class(split["confusion_matrix"], split["class_names"])}


SUMMARIES = {"classification": _classification, "multitask": _multitask, "segmentation": _segmentation}


def summarize(metadata: dict) -> dict:
    """The test and validation figures of a version's metadata.json metrics."""
    summary = SUMMARIES[metadata["task"]]
    splits = {"test": "test", "validation": "val"}
    return {name: summary(metadata["metrics"][key], metadata) for name, key in splits.items() if key in metadata.get("metrics", {})}


BULKY = {"confusion_matrix", "predicted_share_all_pixels", "seconds", "threads"}


def _without_bulk(value):
    if isinstance(value, dict):
        return {key: _without_bulk(item) for key, item in value.items() if key not in BULKY}
    return value


def evidence_from(report_path: Path) -> dict:
    """A benchmark report as a card quotes it (mars_tiling.json, xray_sizes.json, xray_cam_follow.json): its figures
    without the bulky parts (confusion matrices, timings), and where it came from."""
    report = json.loads(Path(report_path).read_text())
    return {"source": Path(report_path).as_posix(), **_without_bulk(report)}


def card(metadata: dict, failure_modes: list[str], evidence: list[dict]) -> dict:
    return {**summarize(metadata), "evidence": evidence, "failure_modes": failure_modes}


def failure_modes_for(name: str, cards: Path = CARDS) -> list[str]:
    entries = tomllib.loads(Path(cards).read_text())
    if name not in entries:
        raise ValueError(f"{cards} has no failure modes for {name!r}: add a [{name}] table with failure_modes = [...]")
    return list(entries[name]["failure_modes"])


def write_card(folder: Path, evidence_reports: list[Path] = ()) -> dict:
    path = Path(folder) / "metadata.json"
    metadata = json.loads(path.read_text())
    from .runs import write_json  # atomic

    metadata["model_card"] = card(metadata, failure_modes_for(metadata["name"]), [evidence_from(p) for p in evidence_reports])
    write_json(path, metadata)
    return metadata["model_card"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write the model card (metadata.json `model_card`) of an exported version.")
    parser.add_argument("folder", type=Path, help="a version folder, e.g. exported_models/bloodcell_mobilenetv3/4")
    parser.add_argument("--evidence", type=Path, nargs="*", default=[],
                        help="benchmark reports measured on this version's served path (benchmarks/*.json)")
    args = parser.parse_args(argv)
    print(json.dumps(write_card(args.folder, args.evidence), indent=2)[:4000])


if __name__ == "__main__":
    main()
