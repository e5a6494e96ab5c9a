"""Retrain and re-export the three shipped models from the real datasets (`make ship`).

    python -m visionzoo.training.ship --data-dir ../shared/data [--models bloodcell_mobilenetv3 ...]

Each entry names the dataset folder under --data-dir, the override file in visionzoo/training/configs/,
the export options and the training seeds: one seed trains one model; several train one member each
on the first seed's split and ship their ensemble (ensemble.py); an entry may then mirror-average the
export (revise.py) and add its INT8 variant (quantize.py). An entry may first train another recipe whose
weights every member starts from (the X-ray network's body on CIFAR-10). The SavedModel ships only when
small (export --savedmodel auto, to keep exported_models/ near 100 MB) and never for the X-ray ensemble,
which nothing starts from; where it does not, metadata.json
`saved_model` gives the `visionzoo export` command and the checkpoint that regenerate it. The run
folders land in runs/, the exports in exported_models/<name>/<next version>/.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .ensemble import ensemble
from .export import export_run
from .recipe import read_config_file
from .train import resolve_config, run_training

CONFIGS = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Shipped:
    data_folder: str
    config_file: str | None = None  # overrides in configs/ (None: the recipe as it stands)
    export_options: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = (42,)
    # then train again from that model's weights (init_from) with each of these overrides in turn, and ship the last
    continued: tuple[dict, ...] = ()
    # publish the export's mirror-averaged revision (revise.revise_mirror_average) as the served version
    mirror_average: bool = False
    # then add the INT8 variant (quantize.quantize_export, 256 training images to calibrate on)
    int8: bool = False
    # (recipe, data folder) trained first; every member starts from its weights (model_options.weights)
    pretrained: tuple[str, str] | None = None
    savedmodel: str = "auto"  # export --savedmodel: "never" where nothing starts from it (an ensemble cannot be init_from)


# soil 1, bedrock 0.85, sand 0.4, big rock 1 (background is never picked): benchmarks/mars_decision.json
MARS_WEIGHTS = (1.0, 1.0, 0.85, 0.4, 1.0)
MARS_FULL_SIZE = {"epochs": 2, "optimizer.learning_rate": 3e-4, "image_size": [128, 256]}  # a 256x256 frame's own pixels

SHIPPED = {
    # members trained with seeds 42, 7, 11 on seed 42's split, averaged (chosen on validation log-loss), each
    # answer averaged over the image and its mirror (chosen on validation: benchmarks/bloodcell_tta.py); with INT8
    "bloodcell_mobilenetv3": Shipped("blood_pbc", "bloodcell_scratch.toml", seeds=(42, 7, 11), mirror_average=True,
                                     int8=True),
    # its body pretrained on CIFAR-10 in grey (xray_trunk_cifar10: ImageNet weights cannot be fetched here), then
    # members trained from it with seeds 42, 7, 11 on seed 42's split, averaged (each chosen on validation)
    "mura_multitask_resnet": Shipped("xray_fracatlas", seeds=(42, 7, 11), pretrained=("xray_trunk_cifar10", "cifar10_jpg"),
                                     savedmodel="never"),
    # tiles overlapping by half, blended: chosen on validation (benchmarks/mars_tiling.py); the 6 epochs of
    # the recipe at 64x128 tiles, then 3 and 4 more from those weights, then 2 and 2 more at 128x256 tiles
    # (the 256x256 frames' own pixels), each at a restarted cosine from 3e-4 (versions 3, 4, 5 and 6, each
    # chosen on validation mean IoU); decision weights undoing part of the sand oversampling, chosen for
    # version 6 on validation (benchmarks/mars_decision.py: rerun it after a retrain)
    "mars_dual_unet": Shipped("mars_ai4mars", "mars_ai4mars.toml", {"tile_overlap": 0.5, "decision_weights": MARS_WEIGHTS},
                              continued=({"epochs": 3, "optimizer.learning_rate": 3e-4},
                                         {"epochs": 4, "optimizer.learning_rate": 3e-4},
                                         MARS_FULL_SIZE, MARS_FULL_SIZE)),
}


def ship(model: str, data_root: Path, runs: Path = Path("runs"), exports: Path = Path("exported_models")) -> Path:
    entry = SHIPPED[model]
    overrides = {**(read_config_file(CONFIGS / entry.config_file) if entry.config_file else {}), "out": str(runs)}
    if entry.pretrained:
        recipe, data_folder = entry.pretrained
        start = run_training(resolve_config(recipe, str(data_root / data_folder), {"out": str(runs)}))
        overrides["model_options.weights"] = str(start)
    members = [run_training(resolve_config(model, str(data_root / entry.data_folder),
                                           {**overrides, "seed": seed, "split_seed": entry.seeds[0]}))
               for seed in entry.seeds]
    run_dir = members[0] if len(members) == 1 else ensemble(members, runs)
    for continued in entry.continued:
        run_dir = run_training(resolve_config(model, str(data_root / entry.data_folder),
                                              {**overrides, **continued, "init_from": str(run_dir)}))
    folder = export_run(run_dir, exports, savedmodel=entry.savedmodel, **entry.export_options)
    if entry.mirror_average:
        from .revise import revise_mirror_average

        folder = revise_mirror_average(folder, str(data_root / entry.data_folder))
    if entry.int8:
        from .quantize import quantize_export

        quantize_export(folder, str(data_root / entry.data_folder))
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="folder holding blood_pbc/, xray_fracatlas/, mars_ai4mars/ (and cifar10_jpg/, the X-ray network's pretraining)")
    parser.add_argument("--models", nargs="+", choices=sorted(SHIPPED), default=list(SHIPPED), help="which shipped models (default all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for model in args.models:
        print(f"exported: {ship(model, args.data_dir)}")


if __name__ == "__main__":
    main()
