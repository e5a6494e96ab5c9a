"""Reproduce the sources' printed results: train recipes with the source hyper-parameters on the
real datasets, then write a table comparing ours with theirs (benchmarks/REPRODUCTION.md).

    visionzoo reproduce --data-dir ../shared/data                      # the affordable default set
    visionzoo reproduce --data-dir ../shared/data --models mnist_lenet  # one model (adds its row)
    visionzoo reproduce --report-only                                   # rebuild the table from runs/

Targets are recipes, or a recipe with a source-bug flag turned on (`mnist_4conv_double_softmax`:
the 4-conv net as the source trained it, softmax twice), so the fixed default and the faithful
version can both be compared with the source's number.

Each model trains into its own run folder under `--out` (runs/), which also gets a
`reproduction.json` (stages, wall time, data folder). The table is rebuilt from the newest such
folder of every model, so models can be reproduced one at a time, in separate processes.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import re
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import runs
from .recipes.cifar_ablation import ABLATIONS
from .registry import get_recipe

logger = logging.getLogger(__name__)

SAME_DATA_TOLERANCE = 1.5  # accuracy points
FASHION_CAVEAT = "Fashion-MNIST PNGs with remapped pixels (background 23, max 221), not the original bytes"
MNIST_CAVEAT = "same data: official test idx; training PNGs pixel-identical to the official set"
CIFAR_CAVEAT = ("CIFAR-10 lossy JPEG re-encodes; official training order unknown (classes interleaved), "
                "so the validation slice differs")
MURA_STANDIN = "FracAtlas radiographs stand in for MURA (licence-restricted); abnormal = fractured"
MARS_STANDIN = "AI4Mars NAVCAM tiles stand in for the AN2DL Mars set (labelled pixels, 4 terrain classes)"
IMAGE_FOLDER_STANDIN = ("CIFAR-10 JPEG folders, upscaled to the model's input, stand in for an ImageNet-style image folder "
                        "(10 classes)")
MARS_UNLABELLED = 'its unlabelled pixels ("background") get no loss, as for the shipped Mars model'
IGNORE_UNLABELLED = (("ignore_background", True),)
FROM_SCRATCH = ("trained from scratch (ImageNet weights cannot be downloaded here, so the frozen backbone is random); with "
                "`--weights imagenet` (or a local file) expect roughly the source's figure on the source's data")
NO_WEIGHTS = (("model_options.weights", None),)


@dataclass(frozen=True)
class Reproduction:
    """One row of the table: a recipe (with optional setting overrides, e.g. a source-bug flag),
    its data folder under --data-dir, and the source's printed figure."""

    model: str
    data: str
    source_accuracy: float | None  # None: no comparable figure (other data, other weights, or none printed)
    source_figure: str
    caveat: str
    same_data: bool
    stages: tuple[dict, ...] = ({},)
    overrides: tuple[tuple[str, object], ...] = ()
    target: str = ""  # row name when it differs from the recipe (a flagged variant)
    note: str = ""  # shown under the table
    # Per-stage settings of the shorter schedule run here (fewer epochs, first N examples per split),
    # when the source's does not fit a 2-core CPU; `--full-schedule` drops them.
    shortened: tuple[dict, ...] = ()
    metric: str = "accuracy"  # or "mean_iou" (segmenters)

    def stage_settings(self, full_schedule: bool = False) -> list[dict]:
        """Each stage's settings: the source's, then this machine's shortening unless `full_schedule`."""
        shortening = () if full_schedule else self.shortened
        return [{**stage, **(shortening[index] if index < len(shortening) else {})} for index, stage in enumerate(self.stages)]

    def source_epochs(self) -> int:
        recipe_epochs = get_recipe(self.model).epochs
        return sum(stage.get("epochs", recipe_epochs) for stage in self.stages)

    def schedule_note(self, run: list[dict] | None = None) -> str:
        """The shortening in words, with the command for the source's schedule ('' when not shortened).
        `run`: the stage settings a run folder recorded (its schedule, should the entry change later)."""
        if not self.shortened:
            return ""
        run = run or self.stage_settings()
        recipe_epochs = get_recipe(self.model).epochs
        epochs = sum(stage.get("epochs", recipe_epochs) for stage in run)
        parts = [f"{epochs} of the source's {self.source_epochs()} epochs"]
        limits = {stage["max_examples"] for stage in run if "max_examples" in stage}
        if limits:
            parts.append(f"the first {min(limits):,} examples of each split")
        return (f"shortened schedule ({', '.join(parts)}) for CPU time; the source's: "
                f"`visionzoo reproduce --models {self.name} --data-dir $VISIONZOO_DATA --full-schedule`")

    @property
    def name(self) -> str:
        return self.target or self.model


DOUBLE_SOFTMAX = (("model_options.source_double_softmax", True),)
REPRODUCTIONS: dict[str, Reproduction] = {r.name: r for r in (
    Reproduction("fashion_mnist_mlp", "fashion_mnist", 0.8871, "test 0.8871 (rerun 0.8840)", FASHION_CAVEAT, False),
    Reproduction("fashion_mnist_cnn", "fashion_mnist", 0.9184, "test 0.9184", FASHION_CAVEAT, False),
    Reproduction("mnist_lenet", "mnist", 0.9903, "test 0.9903 (84-way head)", MNIST_CAVEAT, True,
                 note="our default has a 10-way head; `mnist_lenet_source_head` is the source's 84-way softmax"),
    Reproduction("mnist_lenet_source_head", "mnist", 0.9903, "test 0.9903", MNIST_CAVEAT, True),
    Reproduction("mnist_4conv", "mnist", 0.9793, "test 9793/10000 final (best 9805), double softmax", MNIST_CAVEAT, True,
                 note="softmax once (our fix); the row with source_double_softmax=True is the source's network as trained"),
    Reproduction("mnist_4conv", "mnist", 0.9793, "test 9793/10000 final (best 9805)", MNIST_CAVEAT, True,
                 overrides=DOUBLE_SOFTMAX, target="mnist_4conv_double_softmax"),
    Reproduction("fashion_mnist_4conv", "fashion_mnist", 0.8057, "test 8057/10000, double softmax", FASHION_CAVEAT, False,
                 note="softmax once (our fix): +4 points over the source's double softmax"),
    Reproduction("fashion_mnist_4conv", "fashion_mnist", 0.8057, "test 8057/10000", FASHION_CAVEAT, False,
                 overrides=DOUBLE_SOFTMAX, target="fashion_mnist_4conv_double_softmax"),
    Reproduction("cifar10_mlp", "cifar10_jpg", 0.3566, "test 0.3566", CIFAR_CAVEAT, False,
                 note="a barely-learning MLP (Dropout 0.5; the source's train accuracy was ~0.30): EarlyStopping(patience 3) "
                      "ended our run after 8 epochs, the source's after 11, so single runs land far apart"),
    Reproduction("cifar10_cnn", "cifar10_jpg", 0.6987, "test 0.6987", CIFAR_CAVEAT, False),
    Reproduction("cifar10_cnn2", "cifar10_jpg", 0.8149, "test 0.8149 (Colab rerun 0.7855)", CIFAR_CAVEAT, False,
                 note="the source's own two runs differ by 2.9 points (0.8149 after 23 epochs, 0.7855 after 17); "
                      "EarlyStopping(patience 3) ends at a noisy point"),
    *(Reproduction(f"cifar10_ablation_{v}", "cifar10_jpg", accuracy, f"test {accuracy:.4f}", CIFAR_CAVEAT, False)
      for v, (_, accuracy, _, _) in ABLATIONS.items()),
    Reproduction("cifar10_final", "cifar10_jpg", 0.7951, "test 0.7951 (report only)", CIFAR_CAVEAT, False,
                 stages=({"epochs": 40}, {"epochs": 20}, {"epochs": 50, "augmentation": "cifar_shift_flip"}),
                 shortened=({"epochs": 10}, {"epochs": 5}, {"epochs": 10})),
    # 10 min per epoch of 50,000 images here (390 ms per step of 32): 3 epochs on the first 20,000
    Reproduction("alexnet_cifar10", "cifar10_jpg", 0.5324, "val(=test) 0.5324 (architecture unknown)", CIFAR_CAVEAT, False,
                 shortened=({"epochs": 3, "max_examples": 20000},)),
    Reproduction("zfnet_cifar10", "cifar10_jpg", 0.5529, "test 0.5529 (architecture unknown)", CIFAR_CAVEAT, False),
    # Stand-in data or no ImageNet weights: the source's figure is shown, not compared (no Δ).
    Reproduction("mura_binary_cnn", "xray_fracatlas", None, "52.18% val accuracy (MURA)", MURA_STANDIN, False,
                 shortened=({"epochs": 6},)),
    # served up to version 2 (with configs/xray_fracatlas.toml); about 1 min per epoch here
    Reproduction("mura_multitask_cnn", "xray_fracatlas", None, f"{get_recipe('mura_multitask_cnn').reported} (MURA)", MURA_STANDIN, False,
                 shortened=({"epochs": 20},),
                 note=("with the source's BatchNorm momentum (0.99) and FracAtlas's 23 steps per epoch the moving statistics "
                       "lag and inference answers one class; `--config visionzoo/training/configs/xray_fracatlas.toml` (momentum "
                       "0.9, cosine over 60 epochs) gave test AUROC 0.775, body part 0.816 (served version 2)")),
    *(Reproduction(name, "xray_fracatlas", None, f"{get_recipe(name).reported} (MURA, ImageNet weights)",
                   f"{MURA_STANDIN}; {FROM_SCRATCH}", False, overrides=NO_WEIGHTS, shortened=({"epochs": 2},))
      for name in ("mura_resnet50_gap", "mura_resnet50_gmp", "mura_efficientnetb0_binary", "mura_efficientnetb0_binary_gmp",
                   "mura_efficientnetb0_multitask", "mura_inceptionv3_hybrid_v1", "mura_inceptionv3_hybrid_v2")),
    *(Reproduction(name, "dogs_vs_cats", None, f"{get_recipe(name).reported} (ImageNet weights)",
                   f"600 of the Kaggle dogs-vs-cats training images; {FROM_SCRATCH}", False, overrides=NO_WEIGHTS,
                   shortened=({"epochs": 3},))
      for name in ("vgg16_feature_extraction", "vgg16_fine_tuning")),
    Reproduction("kaggle_lenet50", "mnist", None, "failed in the source: loss NaN (missing CSV values)",
                 "MNIST (official test idx, training PNGs) stands in for the Kaggle digit-recognizer CSV: the same digits, "
                 "another split", False, shortened=({"epochs": 10},)),
    Reproduction("resnet_bottleneck_cifar100", "cifar10_jpg", None, "val(=test) 0.4732 after 5 epochs (CIFAR-100)",
                 f"CIFAR-10 stands in for CIFAR-100 (not in the shared data): 10 classes, not comparable; {CIFAR_CAVEAT}", False,
                 shortened=({"epochs": 2, "max_examples": 5000},)),
    *(Reproduction(name, "cifar10_jpg", None, get_recipe(name).reported, IMAGE_FOLDER_STANDIN, False, shortened=(short,))
      for name, short in (("alexnet", {"epochs": 2, "max_examples": 5000}), ("zfnet", {"epochs": 1, "max_examples": 2000}),
                          ("vgg16_scratch", {"epochs": 1, "max_examples": 500}),
                          ("vgg16_scratch_grayscale", {"epochs": 1, "max_examples": 500}))),
    # 2 s per step at 32x32: 3 epochs on 10,000 examples (about 240 SGD steps) is the least that leaves
    # chance level (1 epoch on 2,000 left the BatchNorm statistics unusable: test 0.125, val loss 3e8).
    Reproduction("resnet50_cifar10", "cifar10_jpg", None, get_recipe("resnet50_cifar10").reported, CIFAR_CAVEAT, False,
                 shortened=({"epochs": 3, "max_examples": 10000},)),
    # About 3 min per epoch (56 balanced batches of 64 tiles) for the big-rock U-Net; the ensemble also
    # trains the dual U-Net. Both need AI4Mars's unlabelled pixels out of the loss, or the model learns
    # "background" everywhere (1 epoch with it in: every labelled pixel predicted background, mean IoU 0).
    *(Reproduction(name, "mars_ai4mars", None, get_recipe(name).reported, f"{MARS_STANDIN}; {MARS_UNLABELLED}", False,
                   metric="mean_iou", overrides=overrides, shortened=(short,), note=note)
      for name, short, overrides, note in (
          ("mars_bigrock_unet", {"epochs": 5}, IGNORE_UNLABELLED, ""),
          ("mars_ensemble", {"epochs": 2}, (*IGNORE_UNLABELLED, ("model_options.bn_momentum", 0.9)),
           ("the dual U-Net's BatchNorm momentum is 0.9 (the shipped model's): with the source's 0.99, two short "
            "epochs leave its moving statistics near their initial values")))),
)}
# Affordable on a 2-core CPU (an hour or so each at most), and the ones the issue asks for.
DEFAULT_MODELS = ("fashion_mnist_mlp", "fashion_mnist_cnn", "mnist_lenet", "mnist_4conv", "cifar10_cnn",
                  "cifar10_cnn2", "cifar10_ablation_base")


SHIPPED = "served model, trained by `make ship` with its from-scratch config; no shipped version in exported_models/"
PRETRAINING = ("no source result: the served X-ray network's pretraining (its body on CIFAR-10 in grey), trained by "
               "`make ship` before mura_multitask_resnet; the run it started from is in runs/")
# Why a registry model has no measured row yet. Every registry entry is measured (REPRODUCTIONS, a
# run folder under runs/), shipped (exported_models/), or listed under "Not measured here" with the
# reason below and the command that trains it (`train_command`).
NOT_MEASURED: dict[str, str] = {
    "mura_multitask_resnet": SHIPPED,
    "bloodcell_mobilenetv3": SHIPPED,
    "mars_dual_unet": SHIPPED,
    "xray_trunk_cifar10": PRETRAINING,
    "cifar10_final": "three stages, 110 epochs: about 1 h on 2 cores (about 30 s per epoch)",
    "alexnet_cifar10": "100 epochs: about 17 h on 2 cores (10 min per epoch); the source's 32x32 architecture is unknown (ours is a reconstruction)",
}
NOT_RUN_YET = "not run yet on this machine (CPU time went to the rows above)"


def train_command(name: str) -> str:
    """The command that trains a registry model as its row would (portable: `$VISIONZOO_DATA`)."""
    if name in NOT_MEASURED and NOT_MEASURED[name] == SHIPPED:
        return f"python -m visionzoo.training.ship --data-dir $VISIONZOO_DATA --models {name}"
    return f"visionzoo reproduce --models {name} --data-dir $VISIONZOO_DATA"


def unmeasured(records: dict[str, dict], shipped: set[str] = frozenset()) -> list[str]:
    """Registry models with no measured row in `records` nor a shipped version, in registry order."""
    from .registry import RECIPES

    measured = {REPRODUCTIONS[target].model for target in records if target in REPRODUCTIONS} | set(shipped)
    return [name for name in RECIPES if name not in measured]


def shipped_rows(exports: Path = Path("exported_models")) -> dict[str, str]:
    """Recipe name -> a row with the newest shipped version's test figures (from its model card)."""
    rows = {}
    for folder in sorted(Path(exports).glob("*")):
        versions = [v for v in folder.glob("[0-9]*") if (v / "metadata.json").is_file()]
        if not versions:
            continue
        newest = max(versions, key=lambda v: int(v.name))
        metadata = json.loads((newest / "metadata.json").read_text())
        test = metadata.get("model_card", {}).get("test") or {}
        if "abnormal" in test:
            ours = (f"abnormal F1 {test['abnormal']['f1']:.3f}, AUROC {test['abnormal']['auroc']:.3f}; "
                    f"body part accuracy {test['body_part']['accuracy']:.3f}")
        elif "mean_iou" in test:
            ours = f"mean IoU {test['mean_iou']:.3f} ({test.get('unit', '')})"
        elif test:
            ours = f"accuracy {test['accuracy']:.4f}, balanced {test['balanced_accuracy']:.4f}"
        else:
            ours = "see metadata.json"
        recipe = metadata.get("recipe", {})
        seconds = runs.training_seconds(metadata.get("training", {}))
        rows[recipe.get("name", folder.name)] = (f"| `{recipe.get('name', folder.name)}` | {recipe.get('source_reported', '')} | {ours} | "
                    f"{metadata.get('data', {}).get('dataset', {}).get('name', '')} | "
                    f"{_minutes(seconds) if seconds else 'n/a'} | `{newest.as_posix()}` |")
    return rows


def portable_command(command: str) -> str:
    """A recorded command as the table shows it: the data root is `$VISIONZOO_DATA`, not the folder
    of the machine that ran it (reproduction.json keeps that)."""
    words = shlex.split(command)
    for index, word in enumerate(words[:-1]):
        if word == "--data-dir":
            words[index + 1] = "$VISIONZOO_DATA"
    return " ".join(words)


def _entry(target: str) -> Reproduction:
    if target not in REPRODUCTIONS:
        raise ValueError(f"no reproduction target for {target!r}; known: {', '.join(REPRODUCTIONS)}")
    get_recipe(REPRODUCTIONS[target].model)
    return REPRODUCTIONS[target]


def data_folder(data_dir: Path, entry: Reproduction) -> Path:
    """`data_dir/<dataset>` (the shared-data layout), else `data_dir` itself (a dataset folder)."""
    nested = Path(data_dir) / entry.data
    return nested if nested.is_dir() else Path(data_dir)


def command_line(models, data_dir, out, overrides: dict | None, full_schedule: bool = False) -> str:
    """The `visionzoo reproduce` call that trains `models` (recorded in reproduction.json)."""
    words = ["visionzoo", "reproduce", "--models", *models, "--data-dir", str(data_dir), "--out", str(out)]
    for key, value in (overrides or {}).items():
        words += ["--smoke"] if key == "smoke" and value is True else ["--set", f"{key}={json.dumps(value)}"]
    return shlex.join(words + (["--full-schedule"] if full_schedule else []))


def reproduce_model(target: str, data_dir: Path, out: Path, overrides: dict | None = None,
                    full_schedule: bool = False) -> Path:
    """Train every stage of one reproduction target (this machine's shortened schedule where the entry
    has one, unless `full_schedule`); returns the last stage's run folder."""
    from .runs import write_json
    from .train import resolve_config, run_training

    entry = _entry(target)
    folder = data_folder(data_dir, entry)
    run_dirs: list[Path] = []
    started = time.perf_counter()
    for stage in entry.stage_settings(full_schedule):
        settings = {"out": str(out), **dict(entry.overrides), **stage, **(overrides or {})}
        if run_dirs:
            settings["model_options.weights"] = str(run_dirs[-1] / "best_model.keras")
        config = resolve_config(entry.model, str(folder), settings)
        run_dirs.append(Path(run_training(config)))
    seconds = time.perf_counter() - started
    write_json(run_dirs[-1] / "reproduction.json", {
        "target": entry.name, "model": entry.model, "data_dir": str(folder), "stages": [p.name for p in run_dirs], "wall_seconds": round(seconds, 1),
        "overrides": overrides or {}, "smoke": bool((overrides or {}).get("smoke")),
        "shortened": not full_schedule and bool(entry.shortened),
        "schedule": entry.stage_settings(full_schedule),
        "command": command_line([target], data_dir, out, overrides, full_schedule),
        "machine": {"python": platform.python_version(), "processor": platform.machine(), "cpus": _cpus()},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return run_dirs[-1]


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def _nested(split: dict) -> dict:
    """Binary and multitask scores nest under the target's name ("abnormal"); the first such head."""
    if "accuracy" in split or "mean_iou" in split:
        return split
    return next((value for value in split.values() if isinstance(value, dict) and "accuracy" in value), {})


def _score(split: dict, metric: str = "accuracy") -> float | None:
    value = _nested(split).get(metric)
    return None if value is None else float(value)


def _score_text(split: dict, metric: str) -> str:
    """The row's figure: accuracy (with AUROC for a binary head), or mean IoU."""
    scores = _nested(split)
    value = _score(split, metric)
    if value is None:
        return "n/a"
    if metric == "mean_iou":
        return f"mean IoU {value:.3f}"
    head = next((name for name, nested in split.items() if nested is scores), "")
    extra = f" ({head} accuracy, AUROC {scores['auroc']:.3f})" if "auroc" in scores else ""
    return f"{value:.4f}{extra}"


def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _last_validation(rows: list[dict], metric: str) -> float | None:
    """The last epoch's validation score: `val_<metric>`, else a head's (`val_abnormal_<metric>`)."""
    if not rows:
        return None
    keys = [key for key in rows[-1] if key == f"val_{metric}"] or \
           [key for key in rows[-1] if key.startswith("val_") and key.endswith(f"_{metric}")]
    return float(rows[-1][keys[0]]) if keys and rows[-1][keys[0]] not in ("", None) else None


def collect(out: Path) -> dict[str, dict]:
    """The newest finished reproduction of each model under `out`."""
    found: dict[str, dict] = {}
    for record_path in sorted(Path(out).glob("*/reproduction.json")):
        record = json.loads(record_path.read_text())
        run_dir = record_path.parent
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.is_file():
            continue
        record["run_dir"] = run_dir
        record["metrics"] = json.loads(metrics_path.read_text())
        config = json.loads((run_dir / "config.json").read_text())
        record["config"] = config
        record["epochs_run"] = sum(len(_history(Path(out) / name)) for name in record["stages"])
        target = record.get("target", record["model"])
        metric = REPRODUCTIONS[target].metric if target in REPRODUCTIONS else "accuracy"
        record["final_val_accuracy"] = _last_validation(_history(run_dir), metric)
        previous = found.get(target)
        if previous is None or record["finished_at"] >= previous["finished_at"]:
            found[target] = record
    return found


def _command_shape(record: dict) -> str:
    """The record's command with its model named NAME, so that the report lists each form once."""
    return re.sub(rf"(--models\s+){re.escape(record.get('target', record['model']))}\b", r"\1NAME", portable_command(record["command"]))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def render(records: dict[str, dict]) -> str:
    lines = [
        "# Reproduction of the sources' printed results",
        "",
        "Generated by `visionzoo reproduce` (visionzoo/training/reproduce.py) from the run folders it lists; do not edit by hand.",
        "Each model trained once with its source's recipe (optimizer, loss, batch size, epochs, callbacks,",
        "validation split) on the real data in `../shared/data`, on CPU. **Ours** is the test accuracy of the",
        "run's best checkpoint (lowest validation loss, visionzoo/training/train.py), evaluated on the full test split",
        "(binary heads: accuracy and AUROC; segmenters: mean IoU over labelled pixels).",
        "For recipes that validate on the test split (as their source did), that choice saw the test data;",
        "the last epoch's test accuracy is given too. Δ = ours − source, in accuracy points, only where the",
        "figures are comparable (the same task on the same kind of data, with the source's weights);",
        f"the aim is |Δ| ≤ {SAME_DATA_TOLERANCE} where the data is the same as the source's (✓ / ✗: MNIST only;",
        "the Fashion-MNIST and CIFAR-10 copies here differ from the sources' bytes, see the caveat column).",
        "Wall time: the whole `run_training` (loading, fitting, evaluation) on 2 CPU cores shared with other work.",
        "Where the source's schedule does not fit 2 CPU cores, the row runs a shorter one (fewer epochs, the first",
        "N examples of each split), says so in the epochs column and under the table, with the command for the full one.",
        "",
        "| model (recipe) | source | source's printed result | ours (test) | Δ points | last-epoch val | epochs run | data caveat | wall time | run folder |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    smoke = False
    for target, entry in REPRODUCTIONS.items():
        record = records.get(target)
        if record is None:
            continue
        smoke = smoke or record.get("smoke", False)
        test = record["metrics"].get("test", {})
        accuracy = _score(test, entry.metric)
        comparable = accuracy is not None and entry.source_accuracy is not None
        delta = f"{100 * (accuracy - entry.source_accuracy):+.2f}" if comparable else "n/a"
        verdict = ""
        if comparable and entry.same_data:
            verdict = " ✓" if abs(100 * (accuracy - entry.source_accuracy)) <= SAME_DATA_TOLERANCE else " ✗"
        val_is_test = record["config"].get("data_options", {}).get("validation") == "test"
        last = record["final_val_accuracy"]
        last_text = "n/a" if last is None else f"{last:.4f}" + (" (= test)" if val_is_test else "")
        source = get_recipe(entry.model).source.replace("seed-models.md ", "")
        flags = ", ".join(f"{key.split('.')[-1]}={value}" for key, value in entry.overrides)
        label = f"`{entry.model}`" + (f" with {flags}" if flags else "")
        epochs = f"{record['epochs_run']}" + (f" (shortened; source {entry.source_epochs()})" if record.get("shortened") else "")
        lines.append(
            f"| {label} | {source} | {entry.source_figure} | {_score_text(test, entry.metric)} "
            f"| {delta}{verdict} | {last_text} | {epochs} | {entry.caveat} | {_minutes(record['wall_seconds'])} "
            f"| `{Path(record['run_dir']).as_posix()}` |"
        )
    notes = [f"- `{target}`: {'; '.join(filter(None, (entry.note, entry.schedule_note() if records[target].get('shortened') else '')))}"
             for target, entry in REPRODUCTIONS.items()
             if target in records and (entry.note or records[target].get("shortened"))]
    if notes:
        lines += ["", "Notes:", *notes]
    if smoke:
        lines += ["", "**Smoke runs** (a few steps on a few examples): these numbers test the wiring, not the models."]
    shipped = shipped_rows()
    lines += ["", "## Shipped models (trained by `make ship`, from scratch)", "",
              "| model | source's printed result | ours, test split | data | training | version |", "|---|---|---|---|---|---|",
              *shipped.values()]
    missing = unmeasured(records, set(shipped))
    from .registry import RECIPES

    measured = {REPRODUCTIONS[target].model for target in records if target in REPRODUCTIONS}
    lines += ["", (f"Coverage: {len(measured)} of the {len(RECIPES)} registry models measured above, {len(shipped)} shipped, "
                   f"{len(missing)} not measured.")]
    if missing:
        lines += ["", "## Not measured here", "",
                  (f"{len(missing)} of {len(RECIPES)} registry models have no measured row; each with the reason and the command "
                   "that trains it (`$VISIONZOO_DATA`: the shared data folder; PATH: data not in it)."), "",
                  "| model | source's printed result | why not here | command |", "|---|---|---|---|"]
        for name in missing:
            reason = NOT_MEASURED.get(name, NOT_RUN_YET)
            schedule = REPRODUCTIONS[name].schedule_note() if name in REPRODUCTIONS else ""
            lines.append(f"| `{name}` | {RECIPES[name].reported or 'n/a'} | {reason}{'; ' + schedule if schedule else ''} "
                         f"| `{train_command(name)}` |")
    machines = {json.dumps(r.get("machine", {}), sort_keys=True) for r in records.values()}
    lines += ["", "Machines: " + "; ".join(sorted(machines)) + ".",
              "Commands (NAME: the row's model; each run folder's reproduction.json has its own): "
              + "; ".join(sorted({f'`{_command_shape(r)}`' for r in records.values() if r.get("command")})) + "."]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: Path) -> Path:
    records = collect(out)
    report = Path(report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(records))
    logger.info("wrote %s (%d models)", report, len(records))
    return report


def reproduce(
    models: list[str] | None, data_dir: Path | None, out: Path = Path("runs"),
    report: Path = Path("benchmarks/REPRODUCTION.md"), overrides: dict | None = None, report_only: bool = False,
    full_schedule: bool = False,
) -> Path:
    """Train `models` (default: DEFAULT_MODELS) one after another, then rewrite the report.
    `full_schedule`: the source's epochs and data even where the entry has a CPU-sized shortening."""
    if not report_only:
        if data_dir is None:
            raise ValueError("--data-dir is required unless --report-only")
        for model in models or DEFAULT_MODELS:
            _entry(model)  # fail on a typo before hours of training
        for model in models or DEFAULT_MODELS:
            logger.info("reproducing %s", model)
            run_dir = reproduce_model(model, Path(data_dir), Path(out), overrides, full_schedule)
            write_report(out, report)  # after each model, so a long series shows progress
            logger.info("%s done: %s", model, run_dir)
    return write_report(out, report)
