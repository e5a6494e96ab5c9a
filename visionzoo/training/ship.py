"""Retrain and re-export the three shipped models from the real datasets (`make ship`).

    python -m visionzoo.training.ship --data-dir ../shared/data [--models bloodcell_mobilenetv3 ...]

Each entry names the dataset folder under --data-dir, the override file in visionzoo/training/configs/ and
whether the SavedModel ships (only when small, to keep exported_models/ near 100 MB; MURA's 50 MiB one
does not, and its metadata.json `saved_model` gives the `visionzoo export` command and the checkpoint
that regenerate it). The run folders land in runs/, the exports in exported_models/<name>/<next version>/.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .export import export_run
from .recipe import read_config_file
from .train import resolve_config, run_training

CONFIGS = Path(__file__).parent / "configs"
SHIPPED = {  # model -> (dataset folder, config file, export options)
    "bloodcell_mobilenetv3": ("blood_pbc", "bloodcell_scratch.toml", {}),
    "mura_multitask_cnn": ("xray_fracatlas", "xray_fracatlas.toml", {}),
    # tiles overlapping by half, blended: chosen on validation (benchmarks/mars_tiling.py)
    "mars_dual_unet": ("mars_ai4mars", "mars_ai4mars.toml", {"tile_overlap": 0.5}),
}


def ship(model: str, data_root: Path, runs: Path = Path("runs"), exports: Path = Path("exported_models")) -> Path:
    folder, config_file, export_options = SHIPPED[model]
    overrides = {**read_config_file(CONFIGS / config_file), "out": str(runs)}
    run_dir = run_training(resolve_config(model, str(data_root / folder), overrides))
    return export_run(run_dir, exports, savedmodel="auto", **export_options)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding blood_pbc/, xray_fracatlas/, mars_ai4mars/")
    parser.add_argument("--models", nargs="+", choices=sorted(SHIPPED), default=list(SHIPPED), help="which shipped models (default all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for model in args.models:
        print(f"exported: {ship(model, args.data_dir)}")


if __name__ == "__main__":
    main()
