"""Mars segmenter: per-class decision weights for the served arg-max, chosen on validation.

    python -m benchmarks.mars_decision --data-dir DATA/mars_ai4mars [--model exported_models/mars_dual_unet/6]

The shipped recipe oversamples crops of sand and big rock (`balance_classes`, the source's §7.1):
the training tiles hold 16.7% sand and 4.7% big-rock pixels where the held-out frames hold 6.6%
and 0.5%, so the network's probabilities carry that inflated prior. Multiplying the probabilities
by one weight per class before the arg-max (`decision_weights` in metadata.json, applied by
serving's processing.argmax_classes) is the prior correction; the full Bayesian correction
(train share / natural share) would cut big rock to a tenth, which costs that class more recall
than mean IoU gains, so the weights are chosen by mean IoU instead.

Every frame goes through the service's own path once (processing.decode_upload with the version's
ImageSpec, the ONNX Runtime CPU engine, preprocessing.blend_tiles); the blended probabilities are
kept, and each candidate is scored at frame size on labelled pixels like benchmarks/mars_tiling.py.
The grid holds soil at 1 and varies bedrock, sand and big rock; the weights with the best mean IoU
on the `val` split (the crowd-labelled frames training held out) are chosen. The gold frames are
the test split: scored for the chosen weights and the unweighted arg-max only, never used to choose.

Writes benchmarks/mars_decision.json (or --out) and prints the chosen weights, then the command that
publishes them: `visionzoo revise VERSION --decision-weights ...` (or export with them).
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.mars_tiling import TERRAIN, load_model, metrics, read_mask, splits, write_json
from benchmarks.paths import docstring_parser, portable
from visionzoo.preprocessing import ImageSpec, blend_tiles, resize_label_map
from visionzoo.serving import processing
from visionzoo.serving.engines import EngineRequest, build
from visionzoo.serving.repository import ModelVersion
from visionzoo.training.data.mars import CLASS_NAMES, detect_ai4mars

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "exported_models" / "mars_dual_unet"
DEFAULT_OUT = REPO / "benchmarks" / "mars_decision.json"
# Candidate weights per class (background stays 1: the learnable-class arg-max never picks it).
GRID = {"soil": (1.0,), "bedrock": (0.85, 1.0, 1.2), "sand": (0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0),
        "big_rock": (0.5, 0.7, 0.85, 1.0, 1.5)}


def blended(version: ModelVersion, pairs, threads: int = 1, label: str = "") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each frame's blended tile probabilities (model resolution) and its mask (frame size)."""
    spec = ImageSpec.from_metadata(version.metadata["preprocessing"])
    output = version.outputs[0]["name"]
    engine = build("onnxruntime", EngineRequest(version.onnx_path, version.inputs[0]["name"], (output,), threads), "cpu")
    probabilities, masks = [], []
    try:
        for done, (image_path, mask_path) in enumerate(pairs, 1):
            (image,) = processing.decode_upload(processing.Upload(image_path.name, image_path.read_bytes()), spec,
                                                processing.Limits())
            probabilities.append(blend_tiles(engine.run(image.tiles)[output], spec.tile_overlap))
            mask = read_mask(mask_path)
            if mask.shape != (image.height, image.width):
                raise ValueError(f"{mask_path}: mask {mask.shape} vs image {image.height}x{image.width}")
            masks.append(mask)
            print(f"\r{label}: {done}/{len(pairs)} frames", end="", file=sys.stderr, flush=True)
    finally:
        engine.close()
        print(file=sys.stderr)
    return probabilities, masks


def score(probabilities: list[np.ndarray], masks: list[np.ndarray], learnable: list[int] | None,
          weights: list[float] | None) -> dict:
    """The served class map (processing.argmax_classes, then resized to the frame) scored on labelled pixels."""
    classes = probabilities[0].shape[-1]
    confusion = np.zeros((classes, classes), np.int64)
    for frame, mask in zip(probabilities, masks):
        class_map = resize_label_map(processing.argmax_classes(frame, learnable, weights), *mask.shape)
        labelled = mask > 0
        codes = mask[labelled].astype(np.int64) * classes + class_map[labelled]
        confusion += np.bincount(codes, minlength=classes * classes).reshape(classes, classes)
    return metrics(confusion)


def candidates() -> list[list[float]]:
    names = [CLASS_NAMES[k] for k in TERRAIN]
    return [[1.0, *combo] for combo in itertools.product(*(GRID[name] for name in names))]


def brief(result: dict) -> dict:
    return {"mean_iou": round(result["mean_iou"], 4), "per_class_iou": {k: round(v, 4) for k, v in result["per_class_iou"].items()},
            "pixel_accuracy": round(result["pixel_accuracy"], 4)}


def main(argv: list[str] | None = None) -> None:
    parser = docstring_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the AI4Mars folder, or its parent")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="an exported version folder, or the export folder above it (newest version); default %(default)s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default %(default)s)")
    args = parser.parse_args(argv)

    data_dir = args.data_dir if detect_ai4mars(args.data_dir) else args.data_dir / "mars_ai4mars"
    version = load_model(args.model)
    learnable = version.metadata.get("learnable_classes")
    frames = splits(data_dir, version.metadata.get("data", {}).get("split_seed", 42))
    started = time.perf_counter()
    val = blended(version, frames["val"], args.threads, "val")
    grid = [(weights, score(*val, learnable, weights)) for weights in candidates()]
    chosen, chosen_val = max(grid, key=lambda entry: entry[1]["mean_iou"])
    unweighted = [1.0] * len(chosen)
    gold = blended(version, frames["gold"], args.threads, "gold") if frames["gold"] else None
    report = {
        "model": {**version.describe(), "folder": portable(version.folder),
                  "decision_weights_in_metadata": version.metadata.get("decision_weights")},
        "data": {"dir": portable(data_dir), "split_seed": version.metadata.get("data", {}).get("split_seed", 42),
                 "scored_frames": {"val": len(frames["val"]), "gold": len(frames["gold"])}},
        "classes": list(CLASS_NAMES),
        "chosen_on": "val mean IoU over soil, bedrock, sand, big rock (labelled pixels, frame size)",
        "chosen": chosen,
        "val": {"unweighted": brief(score(*val, learnable, None)), "chosen": brief(chosen_val)},
        "gold": ({"unweighted": brief(score(*gold, learnable, None)), "chosen": brief(score(*gold, learnable, chosen))}
                 if gold else None),
        "grid_val": [{"weights": weights, "mean_iou": round(result["mean_iou"], 4),
                      "big_rock_iou": round(result["per_class_iou"]["big_rock"], 4)} for weights, result in grid],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, report)
    for split in ("val", "gold"):
        if report[split]:
            for name in ("unweighted", "chosen"):
                r = report[split][name]
                print(f"{split:4} {name:10} mean IoU {r['mean_iou']:.4f}  " + "  ".join(f"{k} {v:.3f}" for k, v in r["per_class_iou"].items()))
    print(f"chosen on val: decision weights {','.join(f'{w:g}' for w in chosen)} ({len(grid)} candidates); wrote {args.out}")
    if chosen != unweighted and chosen != version.metadata.get("decision_weights"):
        print(f"publish: visionzoo revise {portable(version.folder)} --decision-weights {','.join(f'{w:g}' for w in chosen)}")


if __name__ == "__main__":
    main()
