"""Ensembles: several trained copies of one recipe, their outputs averaged, shipped as one model.

    visionzoo train bloodcell_mobilenetv3 --config CONFIG --data-dir DIR --seed 7 --set split_seed=42
    visionzoo ensemble runs/bloodcell_mobilenetv3-A runs/bloodcell_mobilenetv3-B
    visionzoo export runs/bloodcell_mobilenetv3-ensemble-<stamp>

Members are run folders (their best checkpoint) or export version folders that ship a SavedModel
(weights restored and checked against the version's golden outputs, revise.restore_weights). They
must be one recipe trained on one split: data.json's split seed, split sizes and class names must
be equal. What differs is the training seed (initial weights, batch order, augmentation), so train
a second member with another `--seed` and `--set split_seed=` the first one's.

The ensemble is a Keras model: member i is the nested model `member_i`, and each output is the
mean of the members' outputs of that name (probabilities averaged, not votes). It is written as a
run folder — config.json (the first member's), data.json, samples.json, best_model.keras,
metrics.json and plots from training's own evaluation, training.json with the members' summed
training time and each member's source, seed and scores — so `visionzoo export` ships it like any
run (an ensemble of smoke runs is a smoke run). gradcam.GradCam explains an ensemble as one model.

Shipped ensembles are ONNX only (their members' checkpoints stay out of git). To grow one, export
the new members and name the versions: when a member is an export version without a SavedModel,
every member must be an export version, and `ensemble_exports` merges their ONNX graphs
(onnx_ensemble.py, no TensorFlow in the graph surgery), each weighted by the networks it already
averages, and publishes the next version beside the first member:

    visionzoo export runs/mura_multitask_resnet-C --out new_members
    visionzoo ensemble exported_models/mura_multitask_resnet/1 new_members/mura_multitask_resnet/1

The merged graph is checked against the members' graphs averaged in NumPy on real images, and the
validation and test metrics are measured on it (ONNX Runtime). Members must be served alike
(preprocessing, labels, threshold, Grad-CAM, serving settings, mirror averaging): to grow a
mirror-averaged version, mirror-average the new member first (`visionzoo revise --mirror-average`);
the mean of mirror-averaged graphs is the mirror average of their mean.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageSpec

from . import keras_files, runs

logger = logging.getLogger(__name__)

MEMBER_PREFIX = "member_"
RUN_SUFFIX = "ensemble"


def split_difference(recorded: dict, described: dict) -> str | None:
    """What makes two data.json descriptions different splits, or None when they are one split of one
    dataset: split seed, classes and the number of examples in each split before oversampling. (Not the
    per-split pixel statistics, nor the copies `balance_classes` adds to train: both move with the input
    size, which a run starting from another run's weights may change.)"""
    def examples(data: dict) -> dict:
        counts = {name: split.get("examples") for name, split in (data.get("splits") or {}).items()}
        if counts.get("train") is not None:
            counts["train"] -= data.get("balance_classes_added", 0)
        return counts

    for fact in ("split_seed", "class_names"):
        if recorded.get(fact) != described.get(fact):
            return fact
    return None if examples(recorded) == examples(described) else "examples per split"


def same_split(recorded: dict, described: dict) -> bool:
    return split_difference(recorded, described) is None


class EnsembleError(ValueError):
    """The members cannot form an ensemble; the message says why and what to do."""


@dataclass
class Member:
    """One trained model: where it came from, its weights, its recorded config, data and scores."""

    source: str
    smoke: bool
    model: object
    config: object
    data: dict
    seconds: float | None
    metrics: dict
    pretraining: list[dict] = field(default_factory=list)  # runs.pretraining_runs: where its starting weights came from


def ensemble_members(model) -> list | None:
    """The member models of an ensemble built by `build_ensemble`, else None."""
    members = [layer for layer in model.layers if layer.name.startswith(MEMBER_PREFIX) and hasattr(layer, "layers")]
    return members or None


def build_ensemble(models: list, name: str):
    """One Keras model whose every output is the mean of the `models`' outputs of that name."""
    import tf_keras as keras

    if len(models) < 2:
        raise EnsembleError(f"an ensemble needs two or more members, got {len(models)}")
    first = models[0]
    if len(first.inputs) != 1:
        raise EnsembleError("ensembles take single-input models (one image in)")
    for model in models[1:]:
        if list(model.output_names) != list(first.output_names) or model.inputs[0].shape != first.inputs[0].shape:
            raise EnsembleError(f"members differ: inputs {first.inputs[0].shape} / {model.inputs[0].shape}, "
                                f"outputs {first.output_names} / {model.output_names}")
    image = keras.Input(first.inputs[0].shape[1:], name=first.input_names[0], dtype=first.inputs[0].dtype)
    answers = []
    for index, model in enumerate(models):
        model._name = f"{MEMBER_PREFIX}{index}"  # unique nested names; the weights are untouched
        outputs = model(image, training=False)
        answers.append(outputs if isinstance(outputs, (list, tuple)) else [outputs])
    averaged = [keras.layers.Average(name=output)([answer[k] for answer in answers])
                for k, output in enumerate(first.output_names)]
    return keras.Model(image, averaged if len(averaged) > 1 else averaged[0], name=name)


def load_member(path: Path, prepared=None, data_dir: str | None = None) -> Member:
    """A run folder's best checkpoint, or an export version's SavedModel weights (needs `prepared`,
    the data the version was trained on, to build the recipe's model)."""

    path = Path(path)
    if (path / "config.json").is_file():
        if runs.read_state(path) == runs.UNFINISHED:
            raise EnsembleError(f"{path} is unfinished (training did not complete): continue it with `visionzoo train "
                                f"--resume {path}` or end it with `visionzoo train --finish {path}` first")
        config, checkpoint = runs.load_run(path)
        if data_dir:
            config = config.updated({"data_dir": str(data_dir)})
        model = keras_files.load_model(checkpoint, compile=False)
        training = runs.read_json(path / "training.json")
        return Member(runs.recorded_path(path), runs.read_state(path) == runs.SMOKE, model, config, runs.read_json(path / "data.json"),
                      training.get("seconds"),
                      runs.read_json(path / "metrics.json"), runs.pretraining_runs(training))
    if (path / "metadata.json").is_file():
        from . import revise

        metadata = revise.read_metadata(path)
        config = revise.version_config(metadata, data_dir)
        if prepared is None:
            from . import train

            prepared = train.prepare(config)
        model = revise.restore_weights(path, metadata, prepared)
        return Member(runs.recorded_path(path), False, model, config, metadata.get("data", {}), metadata.get("training", {}).get("seconds"),
                      metadata.get("metrics", {}), runs.pretraining_runs(metadata.get("training", {})))
    raise EnsembleError(f"{path} is neither a run folder (config.json) nor an export version (metadata.json)")


def check_compatible(members: list[Member]) -> None:
    """Same recipe, same split: else the ensemble's test split may hold a member's training images."""
    first = members[0]
    for member in members[1:]:
        if member.config.model != first.config.model:
            raise EnsembleError(f"{member.source} is {member.config.model}, {first.source} is {first.config.model}: "
                                "ensemble members must be one recipe")
        if fact := split_difference(member.data, first.data):
            raise EnsembleError(
                f"{member.source} and {first.source} were trained on different splits (data.json {fact} differs): "
                "train members with one split seed (`--set split_seed=N`) so no member has seen the others' "
                "validation or test images")
        if member.config.image_size != first.config.image_size:
            raise EnsembleError(f"{member.source} and {first.source} take different input sizes")


def _scores(metrics: dict) -> dict:
    """The headline figures of each split; a multitask model's per head ({"abnormal": {...}, "body_part": {...}})."""
    keep = ("accuracy", "balanced_accuracy", "macro_f1", "mean_iou", "auroc", "f1")

    def headline(values: dict) -> dict:
        flat = {k: v for k, v in values.items() if k in keep}
        heads = {k: headline(v) for k, v in values.items() if isinstance(v, dict) and "accuracy" in v}
        return flat | {k: v for k, v in heads.items() if v}

    return {split: headline(values) for split, values in metrics.items() if isinstance(values, dict)}


def ensemble(paths: list[Path], out: Path = Path("runs"), data_dir: str | None = None) -> Path:
    """Build, evaluate and record the ensemble of `paths` as a new run folder; returns it. When a
    member is an export version that ships ONNX only, merge the versions' graphs instead
    (`ensemble_exports`: a new export version beside the first member)."""
    from . import train

    if any(_ships_onnx_only(path) for path in paths):
        return ensemble_exports(paths, data_dir)
    if len(paths) < 2:
        raise EnsembleError(f"an ensemble needs two or more members, got {len(paths)}")
    started = time.perf_counter()
    runs_first = sorted(paths, key=lambda p: not (Path(p) / "config.json").is_file())  # a run's config leads
    first = load_member(runs_first[0], data_dir=data_dir)
    prepared = train.prepare(first.config)
    members = [first] + [load_member(path, prepared, data_dir) for path in runs_first[1:]]
    check_compatible(members)
    config = first.config.updated({"out": str(out)})
    run_dir = train.new_run_dir(config.updated({"model": f"{config.model}-{RUN_SUFFIX}"}))
    model = build_ensemble([member.model for member in members], name=f"{config.model}_{RUN_SUFFIX}")
    try:
        (run_dir / "plots").mkdir(parents=True)
        (run_dir / "config.json").write_text(config.to_json())
        runs.write_json(run_dir / "data.json", first.data)
        split = train.evaluation_split(prepared.data)
        runs.write_samples(run_dir, split, prepared.data.splits[split].ids)
        runs.write_status(run_dir, runs.UNFINISHED, epochs_completed=0)
        model.save(run_dir / "best_model.keras")
        logger.info("ensemble of %d members: evaluating on %s", len(members), ", ".join(s for s in ("val", "test") if s in prepared.data.splits))
        metrics = train.evaluate_splits(model, prepared, run_dir)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    member_seconds = [member.seconds for member in members]
    summed = round(sum(s or 0.0 for s in member_seconds), 1) if all(s is not None for s in member_seconds) else None
    # weights the members started from, counted once each (every member of a shipped X-ray ensemble shares one)
    runs.write_json(run_dir / "training.json", runs.with_pretraining({
        "seconds": summed,
        "strategy": config.strategy, "best_checkpoint": "best_model.keras",
        "ensemble": {
            "combine": "mean of the members' outputs",
            "built_seconds": round(time.perf_counter() - started, 1),
            "members": [{"source": member.source, "seed": member.config.seed, "seconds": member.seconds,
                         "scores": _scores(member.metrics)} for member in members],
        },
    }, [entry for member in members for entry in member.pretraining]))
    runs.write_status(run_dir, runs.SMOKE if any(member.smoke for member in members) else runs.FINISHED)
    logger.info("ensemble %s: %s (members: %s)", run_dir, json.dumps(_scores(metrics)), ", ".join(m.source for m in members))
    return run_dir


def _ships_onnx_only(path: Path) -> bool:
    path = Path(path)
    return (path / "metadata.json").is_file() and not (path / "variables" / "variables.index").is_file()


def _networks(metadata: dict) -> list[dict]:
    """The trained networks an export version averages: its ensemble's members, else itself."""
    members = metadata.get("training", {}).get("ensemble", {}).get("members")
    if members:
        return members
    return [{"source": metadata.get("run"), "seed": metadata["recipe"]["config"].get("seed"),
             "seconds": metadata.get("training", {}).get("seconds"), "scores": _scores(metadata.get("metrics", {}))}]


def _check_exports_compatible(paths: list[Path], documents: list[dict]) -> None:
    """Same recipe, split, preprocessing, labels and outputs in every export version."""
    first = documents[0]
    for path, document in zip(paths[1:], documents[1:]):
        if document["recipe"]["config"]["model"] != first["recipe"]["config"]["model"]:
            raise EnsembleError(f"{path} is {document['recipe']['config']['model']}, {paths[0]} is "
                                f"{first['recipe']['config']['model']}: ensemble members must be one recipe")
        if fact := split_difference(document.get("data", {}), first.get("data", {})):
            raise EnsembleError(
                f"{path} and {paths[0]} were trained on different splits (metadata.json data {fact} differs): "
                "train members with one split seed (`--set split_seed=N`) so no member has seen the others' "
                "validation or test images")
        for fact in ("preprocessing", "labels", "outputs", "threshold", "explain", "mirror_average", "learnable_classes",
                     "decision_weights"):
            if document.get(fact) != first.get(fact):
                raise EnsembleError(f"{path} and {paths[0]} differ in metadata.json {fact}: "
                                    f"{document.get(fact)} / {first.get(fact)}")


def ensemble_exports(paths: list[Path], data_dir: str | None = None) -> Path:
    """Merge export versions' ONNX graphs into one ensemble version beside the first; returns its folder."""
    import onnx

    from . import onnx_ensemble, revise, train
    from .mirror_average import peak_normalized
    from .registry import get_recipe

    paths = [Path(path) for path in paths]
    if len(paths) < 2:
        raise EnsembleError(f"an ensemble needs two or more members, got {len(paths)}")
    not_exports = [str(path) for path in paths if not (path / "metadata.json").is_file()]
    if not_exports:
        raise EnsembleError(f"an ONNX-only export can only be merged with export versions; export {', '.join(not_exports)} "
                            "first (`visionzoo export RUN --out FOLDER`) and name the version folders")
    started = time.perf_counter()
    documents = [revise.read_metadata(path) for path in paths]
    _check_exports_compatible(paths, documents)
    networks = [_networks(document) for document in documents]
    weights = [len(found) for found in networks]
    peaked = peak_normalized(documents[0])
    try:
        merged = onnx_ensemble.merge([onnx.load(str(path / "model.onnx")) for path in paths], weights, peaked)
    except onnx_ensemble.MergeError as error:
        raise EnsembleError(str(error)) from None
    config = revise.recorded_config(documents[0], data_dir)
    recipe = get_recipe(config.model)
    prepared = train.prepare(config)
    document = copy.deepcopy(documents[0])
    source = paths[0]
    with revise.staged(source, ignored=revise.SAVEDMODEL_FILES) as staging:
        onnx.save(merged, str(staging / "model.onnx"))
        document["parity"] = _merge_parity(paths, staging / "model.onnx", revise.parity_images(prepared), weights, peaked,
                                           document.get("golden", {}))
        document["metrics"].update(revise.rescored(staging / "model.onnx", prepared, recipe, f"{sum(weights)} networks"))
        seconds = [network.get("seconds") for found in networks for network in found]
        document["training"] = runs.with_pretraining({
            "seconds": round(sum(seconds), 1) if all(s is not None for s in seconds) else None,
            "strategy": document.get("training", {}).get("strategy"),
            "ensemble": {
                "combine": "mean of the members' outputs",
                "built_seconds": round(time.perf_counter() - started, 1),
                "merged": {"from": [{"version": path.as_posix(), "run": doc.get("run"), "networks": weight}
                                    for path, doc, weight in zip(paths, documents, weights)],
                           "how": "ONNX graphs merged (onnx_ensemble.py); peak-normalized maps are the weighted mean "
                                  "of the members' maps, scaled to a peak of 1 again"},
                "members": [network for found in networks for network in found],
            },
        }, [entry for doc in documents for entry in runs.pretraining_runs(doc.get("training", {}))])
        document["run"] = None
        document["saved_model"] = ("not shipped: merged from ONNX graphs (training.ensemble.merged); each network's "
                                   "weights are its run's best_model.keras (training.ensemble.members[].source)")
        for stale in ("variants", "model_card"):  # measured on the first member's graph
            document.pop(stale, None)
        changes = [f"graph: ensemble of {sum(weights)} networks, merged from " + ", ".join(path.as_posix() for path in paths),
                   "metrics re-measured"]
        folder = revise.publish(source, staging, document, ImageSpec.from_metadata(document["preprocessing"]), changes)
    logger.info("ensemble of %d networks: %s", sum(weights), json.dumps(_scores(document["metrics"])))
    return folder


def _merge_parity(paths: list[Path], merged: Path, images: np.ndarray, weights: list[int], peaked: set, golden: dict) -> dict:
    """The merged graph against the members' graphs averaged in NumPy; raises EnsembleError past the golden tolerance."""
    from . import onnx_ensemble, revise
    from .quantize import run_onnx

    expected = onnx_ensemble.reference([run_onnx(path / "model.onnx", images) for path in paths], weights, peaked)
    try:
        return revise.reference_parity(run_onnx(merged, images), expected, golden, "max_abs_diff_members_mean",
                                       "each member version's model.onnx, averaged in NumPy with the merge weights")
    except revise.ReviseError as error:
        raise EnsembleError(str(error)) from None
