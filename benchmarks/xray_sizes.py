"""Does the served X-ray model answer the same when the file is saved at another pixel size?

Scores the served X-ray model (the newest version of the export models.yaml names for `mura`) on
the FracAtlas test split, the split training used (`fracatlas.list_splits`, seed 42), with every
image given to the model five ways: its original bytes, and re-saved in memory at half and four
times its size as JPEG (quality 95) and as PNG. Each file goes through what the service does with an
upload: `visionzoo.serving.processing.decode_upload` with the ImageSpec in the version's
metadata.json, then the service's ONNX Runtime CPU engine; "abnormal" is decided at metadata.json
`threshold`.

Per condition: body-part accuracy, abnormal AUROC, abnormal F1 at the threshold, how often the
answers agree with the original file's, and how many files the service's default limits
(VISIONZOO_MAX_IMAGE_PIXELS, VISIONZOO_MAX_IMAGE_BYTES) would refuse; they are scored anyway, with
the limits lifted. Also, for the original files: accuracy on large images (longest side >= 1500 px)
and on the rest, in each of train/val/test.

    python -m benchmarks.xray_sizes --data-dir ../shared/data/xray_fracatlas

Writes benchmarks/xray_sizes.json and prints the tables. The numbers are for the FracAtlas subset
in the shared data (1,019 of FracAtlas's 4,083 images; 152 test images), not for all of FracAtlas.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.metrics import f1_score, roc_auc_score

from benchmarks.paths import portable, served_export
from visionzoo.preprocessing import peek_size
from visionzoo.serving.engines import EngineRequest, build
from visionzoo.serving.processing import Limits, Upload, decode_upload
from visionzoo.serving.repository import ModelVersion, load_version
from visionzoo.training.data import fracatlas

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "xray_sizes.json"
EXPORT = served_export("mura")
LARGE_SIDE = 1500
JPEG_QUALITY = 95
SPLIT_SEED = 42  # training's (recipe seed; metadata.json data.split_seed)
SERVICE_LIMITS = Limits()  # the service's defaults: what a request is refused over
NO_LIMITS = Limits(max_image_bytes=2**40, max_image_pixels=2**40)


@dataclass(frozen=True)
class Condition:
    name: str
    scale: float | None  # None: the file's own bytes
    file_format: str | None = None


ORIGINAL = Condition("original", None)
CONDITIONS = (ORIGINAL, Condition("x0.5 jpeg", 0.5, "JPEG"), Condition("x0.5 png", 0.5, "PNG"),
              Condition("x4 jpeg", 4.0, "JPEG"), Condition("x4 png", 4.0, "PNG"))


@dataclass
class XrayModel:
    version: ModelVersion
    engine: object  # visionzoo.serving.engines.Engine

    @property
    def threshold(self) -> float:
        value = self.version.metadata.get("threshold")  # as the service: 0.5 when export chose none
        return 0.5 if value is None else float(value)


def load_model(models_dir: Path = REPO / "exported_models", version: str | None = None, threads: int = 1) -> XrayModel:
    """The newest (or given) version, its files checked against metadata.json, on ONNX Runtime CPU."""
    found = load_version(EXPORT, EXPORT, models_dir, version)
    request = EngineRequest(found.onnx_path, found.inputs[0]["name"], tuple(o["name"] for o in found.outputs), threads)
    return XrayModel(found, build("onnxruntime", request, "cpu"))


def resolve_data_dir(path: Path) -> Path:
    """The FracAtlas folder itself, or the folder holding `xray_fracatlas/`."""
    for candidate in (Path(path), Path(path) / "xray_fracatlas"):
        if fracatlas.detect(candidate):
            return candidate
    raise FileNotFoundError(f"{path}: neither it nor {Path(path) / 'xray_fracatlas'} holds dataset.csv and images/")


def resave(data: bytes, scale: float, file_format: str) -> bytes:
    """The image upright (EXIF applied), resized by `scale`, saved as `file_format`, in memory."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image)
    size = (max(1, round(upright.width * scale)), max(1, round(upright.height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    resized = upright.resize(size, resample)
    buffer = io.BytesIO()
    if file_format == "JPEG":
        resized.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        resized.save(buffer, file_format, compress_level=1)  # lossless whatever the level; 1 is fastest
    return buffer.getvalue()


def file_for(condition: Condition, original: bytes) -> bytes:
    return original if condition.scale is None else resave(original, condition.scale, condition.file_format)


def over_service_limits(data: bytes) -> bool:
    width, height = peek_size(data)
    return len(data) > SERVICE_LIMITS.max_image_bytes or width * height > SERVICE_LIMITS.max_image_pixels


def progress(items, total: int, description: str, enabled: bool = True):
    """tqdm when it is installed, else a counter every 25 items."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        for count, item in enumerate(items, 1):
            if count % 25 == 0 or count == total:
                print(f"{description}: {count}/{total}", flush=True)
            yield item
        return
    yield from tqdm(items, total=total, desc=description, unit="img")


def model_input(model: XrayModel, name: str, data: bytes) -> np.ndarray:
    """(1, H, W, C) float32: the upload decoded as the service decodes it."""
    return decode_upload(Upload(name, data), model.version.spec, NO_LIMITS)[0].tiles


def score(model: XrayModel, listing: fracatlas.Listing, conditions=CONDITIONS, show_progress: bool = True,
          description: str = "scoring") -> dict:
    """Per condition name: `abnormal_probability` (N,), `body_part` (N,) predicted index and
    `over_service_limits` (N,) bool. One image at a time, its conditions in one batch."""
    columns = {c.name: {"abnormal_probability": [], "body_part": [], "over_service_limits": []} for c in conditions}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # x4 of the 2304x2880 films
        for path in progress(listing.paths, len(listing), description, show_progress):
            original = path.read_bytes()
            files = [file_for(condition, original) for condition in conditions]
            outputs = model.engine.run(np.concatenate([model_input(model, path.name, data) for data in files]))
            for row, (condition, data) in enumerate(zip(conditions, files)):
                column = columns[condition.name]
                column["abnormal_probability"].append(float(outputs["abnormal"][row, 0]))
                column["body_part"].append(int(outputs["body_part"][row].argmax()))
                column["over_service_limits"].append(over_service_limits(data))
    return {name: {key: np.array(values) for key, values in column.items()} for name, column in columns.items()}


def auroc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, probabilities)) if len(np.unique(labels)) == 2 else None


def condition_metrics(scores: dict, original: dict, listing: fracatlas.Listing, threshold: float) -> dict:
    decided = scores["abnormal_probability"] >= threshold
    return {
        "count": len(listing),
        "body_part_accuracy": float(np.mean(scores["body_part"] == listing.body_part)),
        "abnormal_auroc": auroc(listing.abnormal, scores["abnormal_probability"]),
        "abnormal_f1": float(f1_score(listing.abnormal, decided, zero_division=0)),
        "body_part_agreement_with_original": float(np.mean(scores["body_part"] == original["body_part"])),
        "abnormal_decision_agreement_with_original": float(np.mean(decided == (original["abnormal_probability"] >= threshold))),
        "mean_abs_abnormal_probability_change": float(np.mean(np.abs(scores["abnormal_probability"] - original["abnormal_probability"]))),
        "over_service_limits": int(scores["over_service_limits"].sum()),
    }


def accuracy(scores: dict, listing: fracatlas.Listing, mask: np.ndarray, threshold: float) -> dict:
    if not mask.any():
        return {"count": 0, "body_part_accuracy": None, "abnormal_accuracy": None}
    decided = scores["abnormal_probability"][mask] >= threshold
    return {"count": int(mask.sum()),
            "body_part_accuracy": float(np.mean(scores["body_part"][mask] == listing.body_part[mask])),
            "abnormal_accuracy": float(np.mean(decided == listing.abnormal[mask]))}


def longest_sides(listing: fracatlas.Listing) -> np.ndarray:
    return np.array([max(peek_size(path)) for path in listing.paths])


def evenly_spaced(listing: fracatlas.Listing, limit: int | None) -> fracatlas.Listing:
    if limit is None or limit >= len(listing):
        return listing
    return listing.subset(np.linspace(0, len(listing) - 1, limit).astype(int))


def run(data_dir: Path, model: XrayModel | None = None, limit: int | None = None, show_progress: bool = True) -> dict:
    """The whole report. `limit`: score only that many evenly spaced images of each split (quick checks)."""
    model = model or load_model()
    started = time.perf_counter()
    all_splits = fracatlas.list_splits(data_dir, SPLIT_SEED)
    splits = {name: evenly_spaced(listing, limit) for name, listing in all_splits.items()}
    test = splits["test"]
    scores = score(model, test, CONDITIONS, show_progress, f"test, {len(CONDITIONS)} versions of each image")
    conditions = {c.name: condition_metrics(scores[c.name], scores[ORIGINAL.name], test, model.threshold) for c in CONDITIONS}
    large = {}
    for name, listing in splits.items():
        if name == "test":
            original = scores[ORIGINAL.name]
        else:
            original = score(model, listing, (ORIGINAL,), show_progress, f"{name}, original files")[ORIGINAL.name]
        is_large = longest_sides(listing) >= LARGE_SIDE
        large[name] = {"large": accuracy(original, listing, is_large, model.threshold),
                       "other": accuracy(original, listing, ~is_large, model.threshold)}
    metadata = model.version.metadata
    return {
        "model": {"export": EXPORT, "version": model.version.version, "threshold": model.threshold,
                  "preprocessing": metadata["preprocessing"], "engine": "onnxruntime cpu"},
        "data": {"data_dir": portable(data_dir), "scored_split": "test", "split_seed": SPLIT_SEED,
                 "scored_images": {name: len(listing) for name, listing in splits.items()},
                 "note": f"{sum(map(len, all_splits.values()))} FracAtlas images on disk (FracAtlas has 4,083): "
                         "numbers for this subset, not for all of FracAtlas"},
        "method": {"decode": "visionzoo.serving.processing.decode_upload (limits lifted, see over_service_limits)",
                   "resave": "EXIF-upright, Pillow LANCZOS to x0.5, BICUBIC to x4; JPEG quality 95; PNG lossless",
                   "service_limits": {"max_image_pixels": SERVICE_LIMITS.max_image_pixels,
                                      "max_image_bytes": SERVICE_LIMITS.max_image_bytes}},
        "conditions": conditions,
        "large_images_original": {"longest_side_at_least": LARGE_SIDE, "splits": large},
        "seconds": round(time.perf_counter() - started, 1),
    }


def write_json(path: Path, report: dict) -> None:
    """Write atomically: a temporary file beside `path`, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(report: dict) -> str:
    lines = [f"{EXPORT} v{report['model']['version']} on the FracAtlas test split (threshold {report['model']['threshold']})",
             (f"{'condition':<11}{'n':>5}{'body acc':>10}{'AUROC':>8}{'F1':>8}{'body=orig':>11}{'abn=orig':>10}"
              f"{'|dp|':>8}{'>limits':>9}")]
    for name, m in report["conditions"].items():
        lines.append(f"{name:<11}{m['count']:>5}{number(m['body_part_accuracy']):>10}{number(m['abnormal_auroc']):>8}"
                     f"{number(m['abnormal_f1']):>8}{number(m['body_part_agreement_with_original']):>11}"
                     f"{number(m['abnormal_decision_agreement_with_original']):>10}"
                     f"{number(m['mean_abs_abnormal_probability_change']):>8}{m['over_service_limits']:>9}")
    side = report["large_images_original"]["longest_side_at_least"]
    lines += ["", f"original files: longest side >= {side} px (large) vs the rest",
              f"{'split':<7}{'large n':>8}{'body acc':>10}{'abn acc':>9}{'rest n':>8}{'body acc':>10}{'abn acc':>9}"]
    for name, groups in report["large_images_original"]["splits"].items():
        large, other = groups["large"], groups["other"]
        lines.append(f"{name:<7}{large['count']:>8}{number(large['body_part_accuracy']):>10}{number(large['abnormal_accuracy']):>9}"
                     f"{other['count']:>8}{number(other['body_part_accuracy']):>10}{number(other['abnormal_accuracy']):>9}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser, out: Path) -> None:
    """The options every X-ray benchmark on the served path takes: data, model version, report, threads, limit."""
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the FracAtlas folder (dataset.csv + images/), or the folder holding xray_fracatlas/")
    parser.add_argument("--models-dir", type=Path, default=REPO / "exported_models", help="exported models (default: %(default)s)")
    parser.add_argument("--version", help="model version to score (default: the newest)")
    parser.add_argument("--out", type=Path, default=out, help="JSON report (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="score only this many evenly spaced images per split (a quick check)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.xray_sizes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="columns: body=orig, abn=orig  share of images whose body part / abnormal decision is the original file's\n"
               "         |dp|                mean absolute change of the abnormal probability from the original file's\n"
               "         >limits             files the service's default limits would refuse (scored anyway)")
    add_arguments(parser, OUT)
    args = parser.parse_args(argv)
    try:
        data_dir = resolve_data_dir(args.data_dir)
    except FileNotFoundError as error:
        parser.error(str(error))
    report = run(data_dir, load_model(args.models_dir, args.version, args.threads), args.limit)
    write_json(args.out, report)
    print(table(report))
    print(f"\n{report['seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
