"""X-ray and Mars models: does averaging each input with its flipped copies (test-time augmentation)
help, measured on validation? (The blood-cell model's own report is benchmarks/bloodcell_tta.py.)

    python -m benchmarks.flip_tta --data-dir DATA

Each served model (the newest version of the export models.yaml names) sees every image of its
validation split and its test split (FracAtlas test; the AI4Mars gold frames) through the service's
own path (processing.decode_upload with the version's ImageSpec, the ONNX Runtime CPU engine), three
ways in one batch: as it is, mirrored left-right, and upside down. A Mars tile's probabilities are
flipped back before the service's tile blending (preprocessing.blend_tiles). Candidates average the
views' outputs:

    plain                 the image alone (what is served)
    mirror                the image and its left-right mirror
    upside down           the image and its vertical flip
    all three             the three views

Scores: X-ray abnormal AUROC, F1 at metadata.json `threshold` and body-part accuracy; Mars mean IoU
over the four terrain classes and big-rock IoU of the served class map at frame size (the version's
learnable classes and decision weights; benchmarks/mars_decision.py's scoring). The candidate with
the best validation score (AUROC for the X-ray model, mean IoU for Mars; ties go to fewer views) is
marked `chosen_on_validation`; the test split is reported, never used to choose.

Writes benchmarks/flip_tta.json (or --out) and prints the table.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import f1_score, roc_auc_score

from benchmarks import xray_sizes
from benchmarks.mars_decision import score as mars_score
from benchmarks.mars_tiling import load_model as load_mars
from benchmarks.mars_tiling import read_mask, write_json
from benchmarks.mars_tiling import splits as mars_splits
from benchmarks.paths import docstring_parser, portable, served_export
from visionzoo.preprocessing import ImageSpec, blend_tiles
from visionzoo.serving import processing
from visionzoo.serving.engines import EngineRequest, build
from visionzoo.training.data import fracatlas
from visionzoo.training.data.mars import detect_ai4mars

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "flip_tta.json"
SPLIT_SEED = 42  # training's (metadata.json data.split_seed)
VIEWS = ("plain", "mirror", "upside down")  # axis flipped in NHWC: none, width (2), height (1)
FLIP_AXIS = {"plain": None, "mirror": 2, "upside down": 1}
CANDIDATES = {"plain": ("plain",), "mirror": ("plain", "mirror"), "upside down": ("plain", "upside down"),
              "all three": VIEWS}


def views(batch: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (3N, H, W, C): the batch, mirrored left-right, upside down."""
    return np.ascontiguousarray(np.concatenate([batch, batch[:, :, ::-1], batch[:, ::-1]]))


def unflip(outputs: np.ndarray, view: str) -> np.ndarray:
    """A map computed on `view` flipped back onto the original image."""
    axis = FLIP_AXIS[view]
    return outputs if axis is None else np.ascontiguousarray(np.flip(outputs, axis))


def choose(validation: dict, key: str) -> str:
    return max(CANDIDATES, key=lambda name: (validation[name][key], -len(CANDIDATES[name])))


def xray(data_dir: Path) -> dict:
    model = xray_sizes.load_model(threads=0)
    threshold = model.threshold
    report = {"model": {"export": model.version.export_name, "version": model.version.version}, "threshold": threshold,
              "splits": {}}
    try:
        for split, listing in fracatlas.list_splits(data_dir, SPLIT_SEED).items():
            if split not in ("val", "test"):
                continue
            abnormal, body = {v: [] for v in VIEWS}, {v: [] for v in VIEWS}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                for path in listing.paths:
                    outputs = model.engine.run(views(xray_sizes.model_input(model, path.name, path.read_bytes())))
                    for row, view in enumerate(VIEWS):
                        abnormal[view].append(float(outputs["abnormal"][row, 0]))
                        body[view].append(outputs["body_part"][row])
            candidates = {}
            for name, members in CANDIDATES.items():
                probability = np.mean([abnormal[v] for v in members], axis=0)
                part = np.mean([body[v] for v in members], axis=0).argmax(1)
                candidates[name] = {"abnormal_auroc": float(roc_auc_score(listing.abnormal, probability)),
                                    "abnormal_f1": float(f1_score(listing.abnormal, probability >= threshold)),
                                    "body_part_accuracy": float(np.mean(part == listing.body_part))}
            report["splits"][split] = {"images": len(listing), "candidates": candidates}
    finally:
        model.engine.close()
    report["chosen_on"] = "validation abnormal AUROC"
    report["chosen_on_validation"] = choose(report["splits"]["val"]["candidates"], "abnormal_auroc")
    return report


def mars(data_dir: Path) -> dict:
    version = load_mars(REPO / "exported_models" / served_export("mars"))
    spec = ImageSpec.from_metadata(version.metadata["preprocessing"])
    output = version.outputs[0]["name"]
    learnable, weights = version.metadata.get("learnable_classes"), version.metadata.get("decision_weights")
    engine = build("onnxruntime", EngineRequest(version.onnx_path, version.inputs[0]["name"], (output,), 0), "cpu")
    report = {"model": {"export": version.export_name, "version": version.version}, "splits": {}}
    try:
        for split, pairs in mars_splits(data_dir, version.metadata.get("data", {}).get("split_seed", SPLIT_SEED)).items():
            blended, masks = {v: [] for v in VIEWS}, []
            for image_path, mask_path in pairs:
                (image,) = processing.decode_upload(processing.Upload(image_path.name, image_path.read_bytes()), spec,
                                                    processing.Limits())
                tiles = len(image.tiles)
                outputs = engine.run(views(image.tiles))[output]
                for row, view in enumerate(VIEWS):
                    blended[view].append(blend_tiles(unflip(outputs[row * tiles:(row + 1) * tiles], view), spec.tile_overlap))
                masks.append(read_mask(mask_path))
            candidates = {}
            for name, members in CANDIDATES.items():
                frames = [np.mean([blended[v][k] for v in members], axis=0) for k in range(len(masks))]
                result = mars_score(frames, masks, learnable, weights)
                candidates[name] = {"mean_iou": result["mean_iou"], "big_rock_iou": result["per_class_iou"]["big_rock"],
                                    "per_class_iou": result["per_class_iou"]}
            report["splits"]["test (gold)" if split == "gold" else split] = {"frames": len(pairs), "candidates": candidates}
    finally:
        engine.close()
    report["chosen_on"] = "validation mean IoU"
    report["chosen_on_validation"] = choose(report["splits"]["val"]["candidates"], "mean_iou")
    return report


COLUMNS = {"xray": {"abnormal_auroc": "AUROC", "abnormal_f1": "F1", "body_part_accuracy": "body"},
           "mars": {"mean_iou": "mIoU", "big_rock_iou": "big rock"}}


def table(report: dict) -> str:
    lines = []
    for model, columns in COLUMNS.items():
        part = report[model]
        lines.append(f"{model} ({part['model']['export']}/{part['model']['version']})")
        lines.append(f"  {'views':<12}" + "".join(f"{split[:4] + ' ' + label:>15}" for split in part["splits"]
                                                  for label in columns.values()))
        for name in CANDIDATES:
            lines.append(f"  {name:<12}" + "".join(f"{s['candidates'][name][key]:>15.4f}" for s in part["splits"].values()
                                                   for key in columns))
        lines.append(f"  chosen on validation: {part['chosen_on_validation']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = docstring_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the folder holding xray_fracatlas/ and mars_ai4mars/")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON report")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    mars_dir = args.data_dir / "mars_ai4mars"
    if not detect_ai4mars(mars_dir):
        parser.error(f"{mars_dir} holds no AI4Mars data")
    report = {"data": {"dir": portable(args.data_dir), "split_seed": SPLIT_SEED},
              "views": {name: {"flipped_axis_nhwc": axis} for name, axis in FLIP_AXIS.items()},
              "candidates": {name: list(members) for name, members in CANDIDATES.items()},
              "xray": xray(xray_sizes.resolve_data_dir(args.data_dir)), "mars": mars(mars_dir)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out, report)
    print(table(report))
    print(f"wrote {portable(args.out)} in {report['seconds']} s")


if __name__ == "__main__":
    main()
