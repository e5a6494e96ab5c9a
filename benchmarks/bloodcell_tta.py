"""Blood-cell classifier: does averaging over flipped and rotated copies of each image (test-time
augmentation) help, measured on validation?

    python -m benchmarks.bloodcell_tta --data-dir DATA/blood_pbc

Every image of the PBC validation and test splits (the split training used: blood.list_splits, seed
42) goes through the service's own path (processing.decode_upload with the version's ImageSpec, the
ONNX Runtime CPU engine) once per view of the dihedral group: the image, its mirror (left-right),
its quarter turns and their mirrors. Each candidate set of views averages those views' probabilities
before the arg-max. Per candidate and split: balanced accuracy, per-class recall, and how many images
it gets right that the plain model got wrong ("fixed") and the reverse ("broken").

The candidate with the best validation balanced accuracy is marked `chosen_on_validation`; the test
split is reported, never used to choose. Cost: a candidate of k views runs the model k times per image.

Writes benchmarks/bloodcell_tta.json (or --out) and prints the table. The committed report was
measured on version 3 (one view); it chose "mirror", which version 4 serves inside its graph
(`visionzoo revise exported_models/bloodcell_mobilenetv3/3 --mirror-average`). On version 4 every
candidate with the mirror scores as its mirror-free half: the model already averages it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.mars_tiling import write_json
from benchmarks.paths import docstring_parser, portable, served_export
from visionzoo.serving.engines import EngineRequest, build
from visionzoo.serving.processing import Limits, Upload, decode_upload
from visionzoo.serving.repository import ModelVersion, load_version
from visionzoo.training.data import blood

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "bloodcell_tta.json"
SPLIT_SEED = 42  # training's (metadata.json data.split_seed)
OUTPUT = "probabilities"

# The dihedral group of the square: (quarter turns counter-clockwise, then mirror left-right).
VIEWS = {"identity": (0, False), "mirror": (0, True), "rot90": (1, False), "rot90+mirror": (1, True),
         "rot180": (2, False), "rot180+mirror": (2, True), "rot270": (3, False), "rot270+mirror": (3, True)}
CANDIDATES = {
    "plain": ("identity",),
    "mirror": ("identity", "mirror"),
    "upside-down mirror": ("identity", "rot180+mirror"),
    "half turn": ("identity", "rot180"),
    "both mirrors": ("identity", "mirror", "rot180", "rot180+mirror"),
    "all 8": tuple(VIEWS),
}


def view(images: np.ndarray, name: str) -> np.ndarray:
    """`images` (N, H, W, C) seen as view `name` (a new contiguous array)."""
    turns, mirror = VIEWS[name]
    turned = np.rot90(images, turns, axes=(1, 2))
    return np.ascontiguousarray(turned[:, :, ::-1] if mirror else turned)


def load_model(models_dir: Path = REPO / "exported_models", version: str | None = None, threads: int = 0):
    export = served_export("bloodcell")
    found = load_version(export, export, models_dir, version)
    request = EngineRequest(found.onnx_path, found.inputs[0]["name"], (OUTPUT,), threads)
    return found, build("onnxruntime", request, "cpu")


def decode(version: ModelVersion, paths: list[Path]) -> np.ndarray:
    return np.concatenate([decode_upload(Upload(p.name, p.read_bytes()), version.spec, Limits())[0].tiles for p in paths])


def view_probabilities(engine, images: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Per view name, (N, classes) probabilities."""
    return {name: np.concatenate([engine.run(view(images[i:i + batch], name))[OUTPUT] for i in range(0, len(images), batch)])
            for name in VIEWS}


def scores(labels: np.ndarray, predicted: np.ndarray, plain: np.ndarray, class_names: list[str]) -> dict:
    """Recall of each class the split holds (None for one it lacks); balanced accuracy is their mean."""
    recall = {name: float(np.mean(predicted[labels == k] == k)) if np.any(labels == k) else None
              for k, name in enumerate(class_names)}
    right, plain_right = predicted == labels, plain == labels
    balanced = float(np.mean([value for value in recall.values() if value is not None]))
    return {"balanced_accuracy": balanced, "accuracy": float(np.mean(right)),
            "recall": recall, "fixed": int(np.sum(right & ~plain_right)), "broken": int(np.sum(~right & plain_right))}


def run(data_dir: Path, version: str | None = None, limit: int | None = None) -> dict:
    started = time.perf_counter()
    found, engine = load_model(version=version)
    class_names = found.labels[OUTPUT]
    report = {"model": {"export": found.export_name, "version": found.version},
              "data": {"dir": portable(data_dir), "split_seed": SPLIT_SEED},
              "views": {name: {"quarter_turns": t, "mirror": m} for name, (t, m) in VIEWS.items()},
              "candidates": {name: list(views) for name, views in CANDIDATES.items()}, "splits": {}}
    try:
        for split, listing in blood.list_splits(data_dir, SPLIT_SEED).items():
            if split not in ("val", "test"):
                continue
            if limit:
                listing = listing.subset(np.linspace(0, len(listing) - 1, limit).astype(int))
            per_view = view_probabilities(engine, decode(found, listing.paths))
            plain = per_view["identity"].argmax(1)
            report["splits"][split] = {"images": len(listing), "candidates": {
                name: scores(listing.labels, np.mean([per_view[v] for v in views], axis=0).argmax(1), plain, class_names)
                for name, views in CANDIDATES.items()}}
    finally:
        engine.close()
    validation = report["splits"]["val"]["candidates"]
    report["chosen_on_validation"] = max(CANDIDATES, key=lambda name: (validation[name]["balanced_accuracy"], -len(CANDIDATES[name])))
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def table(report: dict) -> str:
    lines = [f"{'views':<20}{'runs':>5}" + "".join(f"{s + ' bal':>11}{s + ' ig':>9}{'fixed/broken':>14}" for s in report["splits"])]
    for name, views in CANDIDATES.items():
        row = f"{name:<20}{len(views):>5}"
        for split in report["splits"].values():
            c = split["candidates"][name]
            ig = c["recall"]["ig"]
            row += f"{c['balanced_accuracy']:>11.4f}{'-' if ig is None else f'{ig:.3f}':>9}{c['fixed']:>8}/{c['broken']:<5}"
        lines.append(row)
    lines.append(f"chosen on validation: {report['chosen_on_validation']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = docstring_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the PBC folder (class sub-folders)")
    parser.add_argument("--version", help="export version (default: the newest)")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON report")
    args = parser.parse_args(argv)
    report = run(args.data_dir, args.version)
    write_json(args.out, report)
    print(table(report))
    print(f"wrote {portable(args.out)} in {report['seconds']} s")


if __name__ == "__main__":
    main()
