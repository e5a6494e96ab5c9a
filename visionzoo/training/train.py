"""Train one registered model: config -> data -> model -> fit -> evaluate -> run folder.

A run folder holds: config.json (resolved settings), data.json (what was read, split sizes,
skipped files), status.json (unfinished / finished / smoke: see runs.py), history.csv, logs/
(TensorBoard), best_model.keras, backup/ (model + optimizer + epoch while training runs, for
`--resume`), metrics.json, plots/ and training.json (written last).
Each step is an importable function; `run_training` strings them together.

The folder appears only once the model is built, and is removed again when training fails before
its first epoch ends, so a failed start (no data, no network for ImageNet weights) leaves nothing.
After that a failure or a kill leaves it `unfinished`, and `visionzoo train --resume RUN` continues
it from its last completed epoch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import keras_files, plots, runs
from .callbacks import make_callbacks
from .data import SplitData, load_data, resolve_format
from .data.common import Examples, smoke_positions
from .recipe import Recipe, TrainConfig
from .registry import get_recipe

logger = logging.getLogger(__name__)

SMOKE_EXAMPLES = 48
SMOKE_BATCH = 8
BACKUP_DIR = "backup"  # BackupAndRestore's checkpoint of model, optimizer and epoch, inside the run folder


class WeightsUnavailable(RuntimeError):
    """The recipe's pretrained (ImageNet) weights could not be downloaded."""


@dataclass
class Prepared:
    """A recipe, its resolved config and its decoded data, ready to build and fit."""

    recipe: Recipe
    config: TrainConfig
    data: SplitData


def seed_everything(seed: int) -> None:
    import tf_keras as keras

    keras.utils.set_random_seed(seed)


def make_strategy(name: str):
    """auto: TF's default (one device); one_device; mirrored: every local GPU (or the logical CPUs a
    test configured); multiworker: MultiWorkerMirroredStrategy from TF_CONFIG."""
    import tensorflow as tf

    if name == "auto":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs TF_CONFIG (see README, 'Multi-node training')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; expected auto, one_device, mirrored or multiworker")


def is_chief() -> bool:
    """True unless TF_CONFIG names this process as a non-chief worker."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = tf_config.get("task", {})
    if not task:
        return True
    has_chief = "chief" in tf_config.get("cluster", {})
    return task.get("type") == "chief" or (not has_chief and task.get("type") == "worker" and task.get("index", 0) == 0)


def set_precision(precision: str) -> None:
    """float32, mixed_float16 (GPU; Keras wraps the optimizer in a LossScaleOptimizer) or mixed_bfloat16."""
    import tf_keras as keras

    if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"unknown precision {precision!r}; expected float32, mixed_float16 or mixed_bfloat16")
    keras.mixed_precision.set_global_policy(precision)


def make_optimizer(spec: dict, total_steps: int | None = None):
    """An optimizer from {"name": ..., "learning_rate": ..., "schedule": "cosine", ...}.

    `schedule: cosine` decays the learning rate to 1% over `total_steps` (the whole run).
    """
    import tf_keras as keras

    options = dict(spec)
    name = options.pop("name", "adam").lower()
    schedule = options.pop("schedule", None)
    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(optimizers)}")
    if schedule == "cosine":
        if not total_steps:
            raise ValueError("schedule 'cosine' needs the number of training steps")
        options["learning_rate"] = keras.optimizers.schedules.CosineDecay(
            options.get("learning_rate", 1e-3), decay_steps=total_steps, alpha=0.01
        )
    elif schedule is not None:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected cosine")
    return optimizers[name](**options)


def resolve_config(model: str, data_dir: str, overrides: dict) -> TrainConfig:
    recipe = get_recipe(model)
    config = TrainConfig.from_recipe(recipe, data_dir, **overrides)
    config.check()
    weights = config.model_options.get("weights")
    if isinstance(weights, str) and weights != "imagenet":
        keras_files.weights_file(weights)  # refused before the data loads (minutes on a large dataset)
    resolve_format(Path(config.data_dir), recipe.data_formats, config.data_format)  # a wrong --data-dir, before TensorFlow starts
    if config.smoke:
        config = config.updated(
            {"epochs": min(config.epochs, overrides.get("epochs", 1)), "batch_size": min(config.batch_size, SMOKE_BATCH),
             "steps_per_epoch": config.steps_per_epoch or 2, "max_examples": config.max_examples or SMOKE_EXAMPLES}
        )
    return config


def _limit(examples: Examples, count: int | None) -> Examples:
    if count is None or len(examples) <= count:
        return examples
    return examples.subset(smoke_positions(len(examples), count))


def prepare(config: TrainConfig) -> Prepared:
    """Read the data the recipe's loaders understand; apply smoke limits and class balancing."""
    from .data.mars import balance_classes

    recipe = get_recipe(config.model)
    data = load_data(
        Path(config.data_dir), config.image_spec(recipe), recipe.data_formats, explicit=config.data_format,
        seed=config.data_seed, skip_bad=config.skip_bad, max_examples=config.max_examples, **config.data_options,
    )
    if "train" not in data.splits or "val" not in data.splits:
        raise ValueError(f"{data.source}: training needs train and val splits, got {sorted(data.splits)}")
    data.splits = {name: _limit(split, config.max_examples) for name, split in data.splits.items()}
    if config.balance_classes and recipe.task.kind == "segmentation":
        before = len(data.splits["train"])
        data.splits["train"] = balance_classes(data.splits["train"])
        data.notes["balance_classes_added"] = len(data.splits["train"]) - before
    return Prepared(recipe, config, data)


def evaluation_split(data: SplitData) -> str:
    """The split export checks parity on and takes golden files from: test, else val."""
    return "test" if "test" in data.splits else "val"


def build_for_data(prepared: Prepared):
    """The recipe's model, with class counts taken from the data and the run's options."""
    recipe, config = prepared.recipe, prepared.config
    options = dict(config.model_options)
    if recipe.num_classes_option:
        option, target = recipe.num_classes_option
        options[option] = len(prepared.data.class_names[target])
    if options.get("weights") != "imagenet":
        return recipe.builder(input_shape=config.image_spec(recipe).shape, **options)
    try:
        return recipe.builder(input_shape=config.image_spec(recipe).shape, **options)
    except Exception as error:  # keras' get_file raises a bare Exception("URL fetch failure on ...")
        if "URL fetch failure" not in str(error) and not isinstance(error, OSError):
            raise
        raise WeightsUnavailable(_weights_advice(recipe.name, error)) from None


class InitError(ValueError):
    """`init_from` cannot start this run; the message says why and what to do."""


def _init_source_facts(source: Path) -> tuple[str, dict, bool]:
    """(recipe name, data.json facts, whether it is an ensemble) of a run folder or an export version."""
    if (source / "config.json").is_file():
        config = runs.read_json(source / "config.json")
        training = runs.read_json(source / "training.json") if (source / "training.json").is_file() else {}
        return config["model"], runs.read_json(source / "data.json"), bool(training.get("ensemble"))
    if (source / "metadata.json").is_file():
        metadata = runs.read_json(source / "metadata.json")
        return (metadata["recipe"]["config"]["model"], metadata.get("data", {}),
                bool(metadata.get("training", {}).get("ensemble")))
    raise InitError(f"init_from {source}: neither a run folder (config.json) nor an export version (metadata.json)")


def init_source_seconds(source: Path) -> float | None:
    """Training seconds behind the weights a run started from (init_from): the source run's or
    export's own, plus those of whatever it started from in turn. None when not recorded."""
    if (source / "training.json").is_file():
        training = runs.read_json(source / "training.json")
    elif (source / "metadata.json").is_file():
        training = runs.read_json(source / "metadata.json").get("training", {})
    else:
        return None
    return runs.training_seconds(training)


def pretraining_run(weights) -> dict | None:
    """{"run": folder, "seconds": its training time} when `weights` (model_options.weights) names a
    finished run folder or a checkpoint inside one, so the time behind the starting weights is counted;
    None for "imagenet", None or a file from elsewhere."""
    if not isinstance(weights, str) or weights == "imagenet":
        return None
    folder = Path(os.path.expandvars(weights)).expanduser()
    folder = folder if folder.is_dir() else folder.parent  # a run's checkpoint names its run
    seconds = init_source_seconds(folder)
    return {"run": runs.recorded_path(folder), "seconds": seconds} if seconds is not None else None


def load_init_source(prepared: Prepared):
    """The trained Keras model `config.init_from` names, for training to start from its weights:
    a finished run folder (its best_model.keras) or an export version that ships its SavedModel
    (weights checked against its golden outputs). Same recipe and same classes, or InitError.
    None when the run starts from the recipe's own initialisation."""
    config = prepared.config
    if not config.init_from:
        return None
    from . import ensemble, revise

    source = Path(os.path.expandvars(config.init_from))
    name, data, is_ensemble = _init_source_facts(source)
    if name != config.model:
        raise InitError(f"init_from {source} is a {name} model, not {config.model}: start from a run or export of the same recipe")
    if is_ensemble:
        raise InitError(f"init_from {source} is an ensemble: start from one of its members (its training.json lists them)")
    if data.get("class_names") != prepared.data.class_names:
        raise InitError(f"init_from {source} was trained on the classes {data.get('class_names')}, this data has "
                        f"{prepared.data.class_names}: its output layer does not fit; train from scratch instead")
    described = {**prepared.data.describe(), "class_names": prepared.data.class_names}  # as data.json holds it
    if not ensemble.same_split(data, described):
        logger.warning("init_from %s was trained on another split of its data: if that was this dataset, this run's "
                       "validation and test images may include images it learned from, and their scores will flatter it", source)
    try:
        return ensemble.load_member(source, prepared).model
    except (ensemble.EnsembleError, revise.ReviseError) as error:  # an unfinished run, an export without SavedModel
        raise InitError(f"init_from: {error}") from None


def copy_weights(source, model, described: str) -> None:
    """`source`'s weights into `model` (the same recipe built for the same classes)."""
    weights, targets = source.get_weights(), model.weights
    if len(weights) != len(targets) or any(w.shape != tuple(t.shape) for w, t in zip(weights, targets)):
        raise InitError(f"init_from {described}: its weights do not fit this model ({len(weights)} arrays against "
                        f"{len(targets)}); were it and this run built with different model_options?")
    model.set_weights(weights)


def _weights_advice(model: str, error: Exception) -> str:
    reason = str(error).split(" -- ")[-1].strip() or type(error).__name__
    fixes = ["--weights none (random initialisation)", "--weights PATH (a local weights .h5 file)"]
    from .ship import CONFIGS, SHIPPED  # the shipped models' from-scratch settings

    if model in SHIPPED and SHIPPED[model].config_file:
        config_file = (CONFIGS / SHIPPED[model].config_file).resolve()
        try:
            config_file = config_file.relative_to(Path.cwd())
        except ValueError:
            pass
        if runs_without_imagenet(config_file):
            fixes.append(f"--config {config_file} (the from-scratch recipe)")
    return f"cannot download the ImageNet weights for {model} ({reason}; no network?); use " + ", or ".join(fixes)


def runs_without_imagenet(config_file: Path) -> bool:
    from .recipe import read_config_file

    return read_config_file(config_file).get("model_options.weights", "imagenet") != "imagenet"


def steps_per_epoch(prepared: Prepared) -> int:
    config = prepared.config
    return config.steps_per_epoch or -(-len(prepared.data.splits["train"]) // config.batch_size)


def compile_model(model, prepared: Prepared) -> None:
    recipe, config = prepared.recipe, prepared.config
    model.compile(
        optimizer=make_optimizer(config.optimizer, steps_per_epoch(prepared) * config.epochs),
        loss=recipe.task.losses(config),
        metrics=recipe.task.keras_metrics(config),
        jit_compile=config.jit,
    )


def make_datasets(prepared: Prepared):
    from .data.augment import AUGMENTATIONS
    from .data.pipeline import make_dataset

    recipe, config, data = prepared.recipe, prepared.config, prepared.data
    task = recipe.task
    augment = AUGMENTATIONS[config.augmentation]() if config.augmentation else None
    if augment is not None and task.kind == "segmentation":
        augment = AUGMENTATIONS[config.augmentation](mask_key=task.output)

    def dataset(split: str, training: bool):
        examples = data.splits[split]
        return make_dataset(
            task.features(examples, data.class_names), task.targets(examples), config.batch_size,
            shuffle=training, seed=config.seed, augment=augment if training else None,
            sample_weights=task.sample_weights(examples, config) if training else task.validation_weights(examples, config),
            label_weights=task.label_weights(examples, config, training),
            repeat=training and config.steps_per_epoch is not None,
        )

    return dataset("train", True), dataset("val", False)


def predict(model, prepared: Prepared, split: str, progress: bool = False) -> dict[str, np.ndarray]:
    """Model outputs for a whole split, keyed by output name (`progress`: Keras' progress bar, one
    final line when stdout is not a terminal)."""
    from .data.pipeline import make_dataset

    examples = prepared.data.splits[split]
    features = prepared.recipe.task.features(examples, prepared.data.class_names)
    dataset = make_dataset(features, {}, prepared.config.batch_size, shuffle=False, seed=0).map(lambda x, y: x)
    outputs = model.predict(dataset, verbose=1 if progress else 0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return {name: np.asarray(value) for name, value in zip(model.output_names, outputs)}


def evaluate_splits(model, prepared: Prepared, run_dir: Path, splits=("val", "test"), progress: bool = True) -> dict:
    """Score `splits`, write metrics.json and the task's plots; returns the metrics."""
    results = {}
    present = [split for split in splits if split in prepared.data.splits]
    for number, split in enumerate(present, 1):
        examples = len(prepared.data.splits[split])
        logger.info("evaluate [%d/%d] %s split: predicting %d examples", number, len(present), split, examples)
        predictions = predict(model, prepared, split, progress)
        results[split] = prepared.recipe.task.score(predictions, prepared.data.splits[split], prepared.data.class_names)
        results[split]["examples"] = len(prepared.data.splits[split])
        plots.task_plots(prepared.recipe.task, results[split], predictions, prepared.data.splits[split], run_dir / "plots", split)
    metrics_path = run_dir / "metrics.json"
    merged = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    runs.write_json(metrics_path, {**merged, **results})
    return results


def new_run_dir(config: TrainConfig, strategy=None) -> Path:
    """A new folder under `config.out`: `<model>-<UTC time>`, `-2`, `-3` ... when taken.

    Under MultiWorkerMirroredStrategy (`strategy` given) every worker takes the chief's name, sent
    over the cluster's own all-reduce: the workers' clocks and start times differ by seconds, and
    the folder names the `--resume` backup every worker writes and reads."""
    seconds = int(datetime.now(UTC).timestamp())
    suffix = 1
    while is_chief() and _run_dir(config, seconds, suffix).exists():  # other workers' choice is replaced below
        suffix += 1
    if strategy is not None and config.strategy == "multiworker":
        seconds, suffix = chief_values(strategy, [seconds, suffix])
    return _run_dir(config, seconds, suffix)


def _run_dir(config: TrainConfig, seconds: int, suffix: int) -> Path:
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d-%H%M%S")
    return Path(config.out) / (f"{config.model}-{stamp}" + (f"-{suffix}" if suffix > 1 else ""))


def chief_values(strategy, values: list[int]) -> list[int]:
    """The chief's `values`, on every worker of a multi-worker strategy: each worker's replicas share
    the chief's numbers (others add zero) and the cluster sums them."""
    import tensorflow as tf

    local_replicas = len(strategy.extended.worker_devices)
    mine = tf.constant([value / local_replicas if is_chief() else 0.0 for value in values], tf.float64)
    summed = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(mine)), axis=None)
    return [round(float(value)) for value in summed.numpy()]


def run_training(config: TrainConfig, run_dir: Path | None = None, resume: bool = False) -> Path:
    """Train, keep the best checkpoint, evaluate it on val and test; returns the run folder.

    `resume`: continue the unfinished run in `run_dir` (its config) from its last completed epoch.
    """

    seed_everything(config.seed)
    set_precision(config.precision)
    strategy = make_strategy(config.strategy)
    chief = is_chief()
    prepared = prepare(config)
    run_dir = Path(run_dir) if run_dir else new_run_dir(config, strategy)
    status = runs.read_status(run_dir) if resume else {}
    backup_exists = resume and (run_dir / BACKUP_DIR).is_dir()
    start = None if backup_exists else load_init_source(prepared)
    if (backup_exists or start is not None) and prepared.config.model_options.get("weights"):
        # the backup or init_from sets every weight: no need to download ImageNet weights or read a weights file again
        prepared = Prepared(prepared.recipe, prepared.config.updated({"model_options.weights": None}), prepared.data)
    with strategy.scope():  # before any folder exists: a model that cannot be built leaves nothing behind
        model = build_for_data(prepared)
        if start is not None:
            copy_weights(start, model, config.init_from)
        compile_model(model, prepared)
    del start
    work_dir = run_dir if chief else run_dir.parent / f".{run_dir.name}-worker-{os.getpid()}"
    checkpoint = work_dir / "best_model.keras"
    # BackupAndRestore does not support OneDeviceStrategy; every worker names the chief's folder
    backup_dir = None if config.strategy == "one_device" else run_dir / BACKUP_DIR
    created = not work_dir.exists()  # only a folder this call made may be removed on failure
    started = time.perf_counter()
    try:
        if not resume:
            (work_dir / "plots").mkdir(parents=True, exist_ok=True)
            (work_dir / "config.json").write_text(config.to_json())
            runs.write_json(work_dir / "data.json", {**prepared.data.describe(), "class_names": prepared.data.class_names,
                                                "skipped": prepared.data.skipped})
            split = evaluation_split(prepared.data)
            runs.write_samples(work_dir, split, prepared.data.splits[split].ids)
            if chief:
                runs.write_status(run_dir, runs.UNFINISHED, epochs_completed=0)
        if not status.get("fitted"):
            train_data, val_data = make_datasets(prepared)
            model.fit(
                train_data, validation_data=val_data, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                callbacks=make_callbacks(prepared.recipe, config, work_dir, checkpoint, chief, backup_dir),
                verbose=1 if sys.stdout.isatty() else 2,
            )
            if chief:
                runs.write_status(run_dir, runs.UNFINISHED, fitted=True)
    except BaseException:
        if chief and created and runs.read_status(run_dir).get("epochs_completed", 0) == 0:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth resuming
        elif chief:
            logger.error("training stopped; continue it with `visionzoo train --resume %s`", run_dir)
        raise
    seconds = time.perf_counter() - started
    if not chief:
        shutil.rmtree(work_dir, ignore_errors=True)
        return run_dir
    best = keras_files.load_model(checkpoint)
    plots.learning_curves(run_dir / "history.csv", run_dir / "plots" / "learning_curves.png")
    metrics = evaluate_splits(best, prepared, run_dir)
    before = _seconds_before_resume(run_dir, status) if resume else 0.0
    seconds += before
    earlier = init_source_seconds(Path(os.path.expandvars(config.init_from))) if config.init_from else None
    # init_from sets every weight, so model_options.weights counts only as a start without it
    pretraining = None if config.init_from else pretraining_run(config.model_options.get("weights"))
    runs.write_json(run_dir / "training.json", runs.with_pretraining(
        {"seconds": round(seconds, 1), "strategy": config.strategy,
         "replicas": strategy.num_replicas_in_sync, "best_checkpoint": checkpoint.name,
         **({"seconds_with_init": round(seconds + earlier, 1)} if earlier else {}),
         **({"resumed_after_epochs": status.get("epochs_completed", 0),
             "seconds_before_resume": round(before, 1)} if resume else {})},
        [pretraining] if pretraining else []))
    runs.write_status(run_dir, runs.SMOKE if config.smoke else runs.FINISHED)
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
    logger.info("run %s finished in %.0f s; metrics: %s", run_dir, seconds, _headline(metrics))
    return run_dir


def resume_run(run_dir: Path) -> Path:
    """Continue an unfinished run with its recorded config (<run>/config.json)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json); pass the folder `visionzoo train` printed")
    state = runs.read_state(run_dir)
    if state != runs.UNFINISHED:
        raise ValueError(f"{run_dir} is already {state}; nothing to resume")
    if not (run_dir / BACKUP_DIR).is_dir():
        logger.warning("%s has no backup/ (killed before its first epoch ended): training starts from epoch 1", run_dir)
    return run_training(TrainConfig.from_json(config_path.read_text()), run_dir, resume=True)


def _seconds_before_resume(run_dir: Path, status: dict) -> float:
    """Training time an unfinished run had spent up to its last completed epoch: the
    status' seconds_trained, or for run folders from before it was recorded, the wall time from the
    run's start (config.json written) to that epoch."""
    if "seconds_trained" in status:
        return float(status["seconds_trained"])
    if not status.get("epochs_completed") or "updated_at" not in status:
        return 0.0
    return max(0.0, datetime.fromisoformat(status["updated_at"]).timestamp() - (run_dir / "config.json").stat().st_mtime)


def finish_run(run_dir: Path) -> Path:
    """End an unfinished run where it stands (e.g. killed when time ran out): evaluate its best
    checkpoint so far on val and test, write training.json with the wall time from the run's start
    (config.json written) to its last completed epoch and `stopped_early` {epochs_completed,
    epochs_planned}, and mark it finished, so it exports without --force. The learning-rate
    schedule was planned for all epochs: the record says how far it got."""

    run_dir = Path(run_dir)
    config, checkpoint = runs.load_run(run_dir)
    status = runs.read_status(run_dir)
    if status["state"] != runs.UNFINISHED:
        raise ValueError(f"{run_dir} is already {status['state']}; nothing to finish")
    completed = int(status.get("epochs_completed", 0))
    if completed == 0 or "updated_at" not in status:
        raise ValueError(f"{run_dir} completed no epoch; train it again instead")
    prepared = prepare(config)
    best = keras_files.load_model(checkpoint)
    plots.learning_curves(run_dir / "history.csv", run_dir / "plots" / "learning_curves.png")
    if not runs.read_samples(run_dir):  # runs from before samples were recorded
        split = evaluation_split(prepared.data)
        runs.write_samples(run_dir, split, prepared.data.splits[split].ids)
    metrics = evaluate_splits(best, prepared, run_dir)
    runs.write_json(run_dir / "training.json", {
        "seconds": round(_seconds_before_resume(run_dir, status), 1), "strategy": config.strategy,
        "best_checkpoint": checkpoint.name,
        "stopped_early": {"epochs_completed": completed, "epochs_planned": config.epochs},
    })
    runs.write_status(run_dir, runs.FINISHED, stopped_early=True)
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
    logger.info("run %s finished after %d of %d epochs; metrics: %s", run_dir, completed, config.epochs, _headline(metrics))
    return run_dir


def _headline(metrics: dict) -> str:
    split = metrics.get("test") or metrics.get("val") or {}
    for key in ("accuracy", "mean_iou"):
        if key in split:
            return f"{key}={split[key]:.4f}"
    if "abnormal" in split:
        return f"abnormal f1={split['abnormal']['f1']:.4f}"
    return "n/a"


def evaluate_run(run_dir: Path, splits=("val", "test"), data_dir: str | None = None) -> dict:
    """Re-evaluate a run's best checkpoint on its data (optionally found at a new `data_dir`)."""

    config, checkpoint = runs.load_run(run_dir)
    if data_dir:
        config = config.updated({"data_dir": str(data_dir)})
    prepared = prepare(config)
    model = keras_files.load_model(checkpoint)
    return evaluate_splits(model, prepared, Path(run_dir), splits)
