"""Does the served X-ray model's Grad-CAM map follow the film when the film moves?

For every film of a FracAtlas split (the split training used, `fracatlas.list_splits`, seed 42),
the film is shrunk to half size and pasted at the right, then at the left edge of a black canvas
twice its (new) width, the way tests/serving/test_service.py checks the golden films. Both canvases
go through what the service does with an upload (`decode_upload` with the version's ImageSpec, then
the ONNX Runtime CPU engine) and the `cam` output's horizontal centre of mass is taken (0 = left
edge, 1 = right edge). The film's own centre moves by 0.5 of the width between the two canvases,
so a map that sat on the film would move by 0.5; a map that ignored the image would not move.

Per split: the mean and median move, the share of films whose map moved the right way (> 0) and the
share that moved more than 0.2 (the bar the golden-film test holds three of four films to).

    python -m benchmarks.xray_cam_follow --data-dir ../shared/data/xray_fracatlas

Writes benchmarks/xray_cam_follow.json and prints a table. `--models-dir` / `--version` score
another export (a candidate) the same way.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import xray_sizes
from benchmarks.paths import portable
from visionzoo.training.data import fracatlas

OUT = xray_sizes.REPO / "benchmarks" / "xray_cam_follow.json"
SPLITS = ("val", "test")
FAR = 0.2  # the golden-film test's bar for "moved with the film"


def placed_png(path: Path, right: bool) -> bytes:
    """An X-ray at half width on a black canvas twice as wide as itself, at the left or right edge."""
    image = Image.open(path).convert("L")
    image = image.resize((image.width // 2, image.height // 2))
    canvas = Image.new("L", (image.width * 2, image.height))
    canvas.paste(image, (image.width if right else 0, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def centre_x(cam: np.ndarray) -> float:
    """Horizontal centre of mass of a map, 0 (left edge) .. 1 (right edge)."""
    columns = cam.sum(axis=0)
    return float((columns * (np.arange(len(columns)) + 0.5)).sum() / max(columns.sum(), 1e-9)) / len(columns)


def moves(model: xray_sizes.XrayModel, listing: fracatlas.Listing, show_progress: bool = True, description: str = "") -> np.ndarray:
    """Per film: the map's centre with the film at the right minus with it at the left."""
    if "cam" not in {output["name"] for output in model.version.outputs}:
        raise ValueError(f"version {model.version.version} has no `cam` output: export it with Grad-CAM (visionzoo revise --explain)")
    shifts = []
    for path in xray_sizes.progress(listing.paths, len(listing), description, show_progress):
        batch = np.concatenate([xray_sizes.model_input(model, "placed.png", placed_png(path, right)) for right in (True, False)])
        cams = model.engine.run(batch)["cam"]
        shifts.append(centre_x(cams[0]) - centre_x(cams[1]))
    return np.array(shifts)


def summary(shifts: np.ndarray) -> dict:
    return {"films": len(shifts), "mean_move": float(shifts.mean()), "median_move": float(np.median(shifts)),
            "share_right_way": float((shifts > 0).mean()), f"share_over_{FAR}": float((shifts > FAR).mean())}


def run(data_dir: Path, model: xray_sizes.XrayModel | None = None, limit: int | None = None, show_progress: bool = True) -> dict:
    model = model or xray_sizes.load_model()
    started = time.perf_counter()
    listed = fracatlas.list_splits(data_dir, xray_sizes.SPLIT_SEED)
    splits = {}
    for name in SPLITS:
        listing = xray_sizes.evenly_spaced(listed[name], limit)
        splits[name] = summary(moves(model, listing, show_progress, f"{name}: each film at the right, then the left"))
    return {
        "model": {"export": xray_sizes.EXPORT, "version": model.version.version, "engine": "onnxruntime cpu"},
        "data": {"data_dir": portable(data_dir), "split_seed": xray_sizes.SPLIT_SEED},
        "method": "film shrunk to half size on a black canvas twice its width, at the right edge then the left; "
                  "move = change of the cam's horizontal centre of mass (0.5 if the map sat on the film)",
        "splits": splits,
        "seconds": round(time.perf_counter() - started, 1),
    }


def table(report: dict) -> str:
    lines = [f"{report['model']['export']} v{report['model']['version']}: Grad-CAM centre move when the film moves by 0.5",
             f"{'split':<7}{'films':>6}{'mean':>8}{'median':>8}{'right way':>11}{f'> {FAR}':>8}"]
    for name, s in report["splits"].items():
        lines.append(f"{name:<7}{s['films']:>6}{s['mean_move']:>8.3f}{s['median_move']:>8.3f}"
                     f"{s['share_right_way']:>11.2f}{s[f'share_over_{FAR}']:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.xray_cam_follow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    xray_sizes.add_arguments(parser, OUT)
    args = parser.parse_args(argv)
    try:
        data_dir = xray_sizes.resolve_data_dir(args.data_dir)
        model = xray_sizes.load_model(args.models_dir, args.version, args.threads)
        report = run(data_dir, model, args.limit)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    xray_sizes.write_json(args.out, report)
    print(table(report))
    print(f"\n{report['seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
