"""Mars segmenter: what the two new serving options do to the served class map, scored at frame size.

    python -m benchmarks.mars_tiling --data-dir DATA/mars_ai4mars [--model exported_models/mars_dual_unet/6]

Every frame goes through the service's own code path: `processing.decode_upload` (which cuts the
frame with `preprocessing.prepare_tiles` and the version's ImageSpec), the service's ONNX Runtime
CPU engine, then `processing.class_map_from_tiles`, which returns the class map at the frame's own
size (256x256). That map is compared with the AI4Mars mask at the same size (255 unlabelled ->
ignored, k -> k+1); only labelled pixels count. Four variants:

    a  as v1 serves today: tile_overlap 0, argmax over all 5 classes (background included)
    b  tile_overlap 0.5 (a tile straddles the seam, outputs blended), argmax over all 5 classes
    c  tile_overlap 0, argmax over the learnable classes 1-4 only (never "background")
    d  both
    e  as this version serves (its own tile_overlap, learnable_classes and decision_weights), when it
       has decision weights (the multipliers of benchmarks/mars_decision.py)

on two splits: `val`, the crowd-labelled frames the training run held out (the loader's own split,
reproduced with its functions and the split seed recorded in metadata.json), and `gold`, the 322
expert-labelled test frames. Per variant and split: mean IoU over the 4 terrain classes, per-class
IoU (both from one confusion matrix summed over the split's frames), pixel accuracy, and the share
of labelled pixels predicted as "background" (always wrong: no labelled pixel is background).

Writes benchmarks/mars_tiling.json (or --out) and prints a table. Numbers are on the 1,322-frame
AI4Mars subset in the data folder (256x256 copies), not the full release.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.paths import docstring_parser, portable
from visionzoo.preprocessing import ImageSpec, open_image
from visionzoo.serving import processing
from visionzoo.serving.engines import EngineRequest, build
from visionzoo.serving.repository import ModelVersion, load_version
from visionzoo.training.data.mars import (
    AI4MARS_TO_CLASSES,
    CLASS_NAMES,
    _ai4mars_pairs,
    detect_ai4mars,
    list_splits,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "exported_models" / "mars_dual_unet"  # the newest version: the variants set tiling and classes themselves
DEFAULT_OUT = REPO / "benchmarks" / "mars_tiling.json"
TERRAIN = [1, 2, 3, 4]  # soil, bedrock, sand, big rock; 0 "background" only ever marked unlabelled pixels
VARIANTS = {  # name -> (tile_overlap, learnable classes; None = all, decision weights; None = unweighted)
    "a_v1_as_served": (0.0, None, None),
    "b_overlap": (0.5, None, None),
    "c_learnable": (0.0, TERRAIN, None),
    "d_overlap_learnable": (0.5, TERRAIN, None),
}
AS_SERVED = "e_as_served"


def variants(version: ModelVersion) -> dict[str, tuple]:
    """VARIANTS, plus `e_as_served` (the version's own settings) when the version has decision weights."""
    weights = processing.decision_weights(version.metadata)
    if weights is None:
        return dict(VARIANTS)
    overlap = version.metadata["preprocessing"].get("tile_overlap", 0.0)
    return {**VARIANTS, AS_SERVED: (overlap, version.metadata.get("learnable_classes"), weights)}

Pair = tuple[Path, Path]


def load_model(path: Path) -> ModelVersion:
    """A version folder (…/mars_dual_unet/1) or its parent (the newest version), checked by sha256."""
    path = Path(path).resolve()
    if (path / "metadata.json").is_file():
        return load_version(path.parent.name, path.parent.name, path.parent.parent, path.name)
    return load_version(path.name, path.name, path.parent)


def splits(data_dir: Path, seed: int) -> dict[str, list[Pair]]:
    """The held-out validation frames of `load_ai4mars` (same functions, same seed) and the gold frames."""
    found = list_splits(data_dir, seed)
    return {"val": found["val"], "gold": found.get("test", [])}


def read_mask(path: Path) -> np.ndarray:
    """AI4Mars mask -> our classes (255 unlabelled -> 0, k -> k+1)."""
    return AI4MARS_TO_CLASSES[np.asarray(open_image(path, name=str(path)), dtype=np.uint8)]


def metrics(confusion: np.ndarray) -> dict:
    """From a confusion matrix over labelled pixels (rows: true class, columns: predicted)."""
    true, predicted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    iou = {CLASS_NAMES[k]: float(hits[k] / (true[k] + predicted[k] - hits[k])) if true[k] + predicted[k] else None
           for k in TERRAIN}
    present = [v for v in iou.values() if v is not None]
    total = confusion.sum()
    return {"mean_iou": float(np.mean(present)) if present else None, "per_class_iou": iou,
            "pixel_accuracy": float(hits.sum() / total), "background_share": float(predicted[0] / total),
            "labelled_pixels": int(total), "confusion_matrix": confusion.tolist()}


def score(version: ModelVersion, frames: dict[str, list[Pair]], threads: int = 1, progress: bool = True) -> dict:
    """{split: {variant: metrics}}; also `predicted_share_all_pixels` per variant (unlabelled pixels too)."""
    spec = ImageSpec.from_metadata(version.metadata["preprocessing"])
    chosen = variants(version)
    specs = {overlap: dataclasses.replace(spec, tile_overlap=overlap) for overlap, _, _ in chosen.values()}
    output = version.outputs[0]["name"]
    engine = build("onnxruntime", EngineRequest(version.onnx_path, version.inputs[0]["name"], (output,), threads), "cpu")
    classes = len(version.labels[output])
    results = {}
    try:
        for split, pairs in frames.items():
            confusion = {name: np.zeros((classes, classes), np.int64) for name in chosen}
            everywhere = {name: np.zeros(classes, np.int64) for name in chosen}
            for done, (image_path, mask_path) in enumerate(pairs, 1):
                upload = processing.Upload(image_path.name, image_path.read_bytes())
                probabilities = {}
                for overlap, overlap_spec in specs.items():
                    (image,) = processing.decode_upload(upload, overlap_spec, processing.Limits())
                    probabilities[overlap] = engine.run(image.tiles)[output]
                mask = read_mask(mask_path)
                if mask.shape != (image.height, image.width):
                    raise ValueError(f"{mask_path}: mask {mask.shape} vs image {image.height}x{image.width}")
                labelled = mask > 0
                for name, (overlap, learnable, weights) in chosen.items():
                    class_map = processing.class_map_from_tiles(probabilities[overlap], image.height, image.width,
                                                                learnable, overlap, weights)
                    codes = mask[labelled].astype(np.int64) * classes + class_map[labelled]
                    confusion[name] += np.bincount(codes, minlength=classes * classes).reshape(classes, classes)
                    everywhere[name] += np.bincount(class_map.ravel(), minlength=classes)
                if progress:
                    print(f"\r{split}: {done}/{len(pairs)} frames", end="", file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr)
            results[split] = {name: {**metrics(confusion[name]), "frames": len(pairs),
                                     "predicted_share_all_pixels": (everywhere[name] / everywhere[name].sum()).tolist()}
                              for name in chosen}
    finally:
        engine.close()
    return results


def table(results: dict) -> str:
    names = [CLASS_NAMES[k] for k in TERRAIN]
    head = f"{'split':5} {'variant':22} {'mIoU':>6} " + " ".join(f"{n:>8}" for n in names) + f" {'pix acc':>7} {'bg share':>8}"
    lines = [head, "-" * len(head)]

    def fmt(value, width=8):
        return f"{value:{width}.4f}" if value is not None else f"{'n/a':>{width}}"

    for split, variants in results.items():
        for name, m in variants.items():
            lines.append(f"{split:5} {name:22} {fmt(m['mean_iou'], 6)} " + " ".join(fmt(m["per_class_iou"][n]) for n in names)
                         + f" {m['pixel_accuracy']:7.4f} {m['background_share']:8.4f}")
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(data, handle, indent=2)
    os.replace(handle.name, path)


def main(argv: list[str] | None = None) -> None:
    parser = docstring_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the AI4Mars folder (subset_manifest.csv + data/, or the release's msl/ tree), or its parent")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="an exported version folder, or the export folder above it (newest version); default %(default)s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default %(default)s)")
    parser.add_argument("--max-frames", type=int, default=None, help="score only the first N frames of each split (smoke runs)")
    args = parser.parse_args(argv)

    data_dir = args.data_dir
    if not detect_ai4mars(data_dir) and detect_ai4mars(data_dir / "mars_ai4mars"):
        data_dir = data_dir / "mars_ai4mars"
    version = load_model(args.model)
    trained_on = version.metadata.get("data", {})
    seed = trained_on.get("split_seed", 42)
    frames = splits(data_dir, seed)
    counts = {"train+val": len(_ai4mars_pairs(data_dir)[0]), "test_gold": len(frames["gold"])}
    if trained_on.get("frames") not in (None, counts):
        print(f"warning: the model was trained on {trained_on['frames']} frames, this folder has {counts}: "
              "the val split is not the one the training run held out", file=sys.stderr)
    if args.max_frames:
        frames = {split: pairs[: args.max_frames] for split, pairs in frames.items()}

    started = time.perf_counter()
    results = score(version, frames, args.threads)
    seconds = time.perf_counter() - started
    report = {
        "model": {**version.describe(), "folder": portable(version.folder)},
        "data": {"dir": portable(data_dir), "frames": counts, "split_seed": seed,
                 "scored_frames": {split: len(pairs) for split, pairs in frames.items()},
                 "note": "AI4Mars 256x256 subset; class maps scored at frame size on labelled pixels only"},
        "variants": {name: {"tile_overlap": overlap, "learnable_classes": learnable, "decision_weights": weights}
                     for name, (overlap, learnable, weights) in variants(version).items()},
        "classes": list(CLASS_NAMES),
        "results": results,
        "seconds": round(seconds, 1),
        "threads": args.threads,
    }
    write_json(args.out, report)
    print(table(results))
    print(f"\n{sum(map(len, frames.values()))} frames in {seconds:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
