"""New versions of an export without retraining: the same weights, with what export now adds.

    visionzoo revise exported_models/bloodcell_mobilenetv3/1 --explain --data-dir $VISIONZOO_DATA
    visionzoo revise exported_models/mars_dual_unet/1 --tile-overlap 0.5 --learnable-classes 1,2,3,4

`--explain` changes the graph: the recipe's Keras model is rebuilt from the config metadata.json
recorded, its weights restored from the version's SavedModel (`variables/`), checked against the
version's golden outputs, and exported again through `export.export_model` with the recipe's
Grad-CAM output (`Recipe.explain`), so the usual parity checks prove the new files. It needs the
SavedModel in the version folder and the training data (for golden files and parity images).

`--mirror-average` changes the graph without TensorFlow: the version's model.onnx is wrapped so that
each image and its left-right mirror go through it as one batch and every output is their mean
(maps mirrored back first; `mirror_average.py`). It works on versions that ship only ONNX (the
ensembles). The wrapped graph is checked against the source graph averaged in NumPy on real images
(metadata.json `parity`), and the validation and test metrics are measured again on it (ONNX
Runtime, the training data); the INT8 variant is dropped (run `visionzoo quantize` on the new version).

`--tile-overlap`, `--learnable-classes` and `--decision-weights` change only how serving uses the
graph: metadata.json (`preprocessing.tile_overlap`, `learnable_classes`, `decision_weights`), the ONNX metadata_props that mirror it, and
the golden outputs, re-derived through the new preprocessing. The graph, weights and SavedModel are
copied unchanged.

The source version stays; the new one takes the next number and records where it came from in
metadata.json `revision`. Everything is written into a staging folder and renamed at the end.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageSpec, prepare_image, prepare_tiles
from visionzoo.serving.repository import golden_tolerance

from . import export, mirror_average, onnx_metadata, runs, train
from .recipe import TrainConfig
from .registry import get_recipe

logger = logging.getLogger(__name__)

# What export_model writes itself; everything else in metadata.json (metrics, data, recipe, model
# card ...) describes the weights, which a revision keeps, and is carried over.
WRITTEN_BY_EXPORT = {"name", "task", "inputs", "outputs", "preprocessing", "labels", "threshold", "parity", "golden",
                     "saved_model", "provenance", "version", "files", "explain", "variants"}


class ReviseError(ValueError):
    """The version cannot be revised as asked; the message says why."""


def read_metadata(folder: Path) -> dict:
    path = Path(folder) / "metadata.json"
    if not path.is_file():
        raise ReviseError(f"{folder} is not an export version folder (no metadata.json); pass one such as "
                          "exported_models/bloodcell_mobilenetv3/4")
    return json.loads(path.read_text())


def _revision(folder: Path, changes: list[str]) -> dict:
    return {"from_version": Path(folder).name, "changes": changes, "git_commit": export.git_commit(),
            "revised_at": datetime.now(UTC).isoformat(timespec="seconds")}


def golden_batch(path: Path, spec: ImageSpec) -> np.ndarray:
    """What the service feeds the model for one golden file."""
    batch = prepare_tiles(path, spec) if spec.tiling != "none" else prepare_image(path, spec)[None]
    return batch.astype(np.float32)


def rewrite_golden(folder: Path, spec: ImageSpec) -> None:
    """Re-derive golden/expected.npz (and the tile counts in inputs.json) from the golden files,
    through `spec` and the folder's model.onnx."""
    import onnxruntime as ort

    golden = Path(folder) / "golden"
    listing = json.loads((golden / "inputs.json").read_text())
    session = ort.InferenceSession(str(Path(folder) / "model.onnx"), providers=["CPUExecutionProvider"])
    arrays = {}
    for index, entry in enumerate(listing["inputs"]):
        batch = golden_batch(golden / entry["file"], spec)
        for output, values in zip(session.get_outputs(), session.run(None, {session.get_inputs()[0].name: batch})):
            arrays[f"{index}/{output.name}"] = values
        entry["tiles"] = len(batch)
    np.savez_compressed(golden / "expected.npz", **arrays)
    runs.write_json(golden / "inputs.json", listing)


def revise_serving(folder: Path, tile_overlap: float | None = None, learnable_classes: list[int] | None = None,
                   decision_weights: list[float] | None = None) -> Path:
    """A new version with the same graph and new serving settings; returns its folder."""
    folder = Path(folder)
    document = copy.deepcopy(read_metadata(folder))
    changes = []
    if tile_overlap is not None:
        document["preprocessing"]["tile_overlap"] = float(tile_overlap)
        changes.append(f"preprocessing.tile_overlap = {tile_overlap}")
    if learnable_classes is not None:
        classes = document["labels"][document["outputs"][0]["name"]]
        unknown = [k for k in learnable_classes if not 0 <= k < len(classes)]
        if unknown or len(set(learnable_classes)) < 2:
            raise ReviseError(f"learnable classes must be two or more distinct indices below {len(classes)}, got {learnable_classes}")
        document["learnable_classes"] = sorted(set(learnable_classes))
        changes.append("learnable_classes = " + ", ".join(f"{k} {classes[k]}" for k in document["learnable_classes"]))
    if decision_weights is not None:
        try:
            document["decision_weights"] = export.checked_decision_weights(decision_weights, document["labels"])
        except export.ExportError as error:
            raise ReviseError(str(error)) from None
        changes.append("decision_weights = " + ", ".join(f"{w:g}" for w in document["decision_weights"]))
    if not changes:
        raise ReviseError("nothing to change: pass --tile-overlap, --learnable-classes, --decision-weights, --explain or --mirror-average")
    try:
        spec = ImageSpec.from_metadata(document["preprocessing"])
    except ValueError as error:
        raise ReviseError(str(error)) from error
    document.pop("variants", None)  # a variant's golden agreement was measured with the old settings
    with staged(folder) as staging:  # the golden outputs change only with the tiling: else they are kept as they are
        return publish(folder, staging, document, spec if tile_overlap is not None else None, changes)


@contextmanager
def staged(folder: Path, ignored: tuple[str, ...] = ()):
    """A copy of the version folder (without metadata.json, the variants and `ignored`) in a staging
    folder beside it, removed if anything fails before `publish` renames it into place."""
    staging = folder.parent / f".staging-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(folder, staging, ignore=shutil.ignore_patterns("metadata.json", "model.*.onnx", *ignored))
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(folder: Path, staging: Path, document: dict, spec: ImageSpec | None, changes: list[str]) -> Path:
    """Finish a staged revision: number it, annotate its ONNX file, re-derive its golden outputs
    through `spec` (None: the graph and its inputs are unchanged, so the source's golden outputs
    stay, bit for bit), hash its files, write metadata.json and rename it into place."""
    version = export.next_version(folder.parent)
    document.update(version=version, revision=_revision(folder, changes))
    onnx_metadata.annotate(staging / "model.onnx", document)
    if spec is not None and (staging / "golden" / "inputs.json").is_file():
        rewrite_golden(staging, spec)
    document["files"] = export.file_hashes(staging)
    runs.write_json(staging / "metadata.json", document)
    final = folder.parent / version
    os.rename(staging, final)
    logger.info("revised %s -> version %s (%s)", folder, version, "; ".join(changes))
    return final


def restore_model(folder: Path, metadata: dict, data_dir: str | None):
    """The version's Keras model (weights from its SavedModel) and the data it was trained on."""
    config = version_config(metadata, data_dir)
    check_restorable(folder, metadata)
    prepared = train.prepare(config)
    return restore_weights(folder, metadata, prepared), prepared, config


def version_config(metadata: dict, data_dir: str | None = None) -> TrainConfig:
    """The TrainConfig an export version records, its data folder moved to `data_dir` if given."""
    if metadata.get("training", {}).get("ensemble"):
        raise ReviseError(f"{metadata.get('name')} version {metadata.get('version')} is an ensemble; rebuild it from its "
                          "members with `visionzoo ensemble` and export that run instead")
    return recorded_config(metadata, data_dir)


def recorded_config(metadata: dict, data_dir: str | None = None) -> TrainConfig:
    """The TrainConfig metadata.json records (ensembles included), its data folder moved to
    `data_dir` if given, else with environment variables expanded ($VISIONZOO_DATA/... for the
    shipped models)."""
    config = TrainConfig.from_json(json.dumps(metadata["recipe"]["config"]))
    return config.updated({"data_dir": str(data_dir) if data_dir else os.path.expandvars(config.data_dir)})


def check_restorable(folder: Path, metadata: dict) -> None:
    if metadata.get("training", {}).get("ensemble"):
        version_config(metadata)  # raises the ensemble's message
    if not (Path(folder) / "variables" / "variables.index").is_file():
        raise ReviseError(f"{folder} ships no SavedModel (variables/): its weights can only come from the run's "
                          "checkpoint; re-export the run with `visionzoo export RUN` instead")


def restore_weights(folder: Path, metadata: dict, prepared):
    """The recipe's Keras model built for `prepared`'s classes at the version's own input size, with
    the version's SavedModel weights, checked against the version's golden outputs. (A run that
    starts from these weights at another input size copies them into its own model: train.copy_weights.)"""
    check_restorable(folder, metadata)
    variables = Path(folder) / "variables" / "variables.index"
    spec = ImageSpec.from_metadata(metadata["preprocessing"])
    changes = {"image_size": [spec.height, spec.width]}
    if prepared.config.model_options.get("weights"):  # the SavedModel sets every weight: fetch or read no others
        changes["model_options.weights"] = None
    at_own_size = dataclasses.replace(prepared, config=prepared.config.updated(changes))
    model = train.build_for_data(at_own_size)
    model.load_weights(str(variables.with_suffix(""))).expect_partial()
    golden = Path(folder) / "golden"
    if metadata.get("golden", {}).get("files"):
        expected = np.load(golden / "expected.npz")
        for index, name in enumerate(metadata["golden"]["files"]):
            outputs = model(golden_batch(golden / name, spec), training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for output, values in zip(model.output_names, outputs):
                gap = float(np.abs(np.asarray(values) - expected[f"{index}/{output}"]).max())
                if gap > golden_tolerance(metadata["golden"], output):
                    raise ReviseError(f"the weights restored from {folder} do not reproduce golden/{name} "
                                      f"({output}: max |difference| {gap:.2e}); the recipe's model has changed since")
    return model


def revise_explain(folder: Path, data_dir: str | None = None, savedmodel: str = "auto") -> Path:
    """A new version of the same weights whose graph also returns the Grad-CAM map; returns its folder."""
    folder = Path(folder)
    metadata = read_metadata(folder)
    check_restorable(folder, metadata)
    recipe = get_recipe(metadata["recipe"]["name"])
    if recipe.explain is None:
        raise ReviseError(f"recipe {recipe.name} names no layer to explain (Recipe.explain)")
    model, prepared, config = restore_model(folder, metadata, data_dir)
    split = "test" if "test" in prepared.data.splits else "val"
    carried = {key: value for key, value in metadata.items() if key not in WRITTEN_BY_EXPORT}
    carried["revision"] = _revision(folder, [f"Grad-CAM output `cam` ({recipe.explain.layer}, {recipe.explain.output})"])
    return export.export_model(
        model, metadata["name"], folder.parent.parent, image_spec=ImageSpec.from_metadata(metadata["preprocessing"]),
        task_kind=metadata["task"], output_labels=metadata["labels"], metadata=carried,
        real_examples=prepared.data.splits[split], seed=config.seed, savedmodel=savedmodel, explain=recipe.explain,
    )


PARITY_IMAGES = 16
SAVEDMODEL_FILES = ("saved_model.pb", "variables", "fingerprint.pb", "assets")  # what a graph rewritten in ONNX leaves behind


def parity_images(prepared) -> np.ndarray:
    """The real images a graph rewritten without TensorFlow is checked on: the first of the test split (else val)."""
    split = "test" if "test" in prepared.data.splits else "val"
    return prepared.data.splits[split].images[:PARITY_IMAGES].astype(np.float32)


def rescored(model: Path, prepared, recipe, label: str) -> dict:
    """metadata.json `metrics` of the val and test splits, measured on an ONNX file (ONNX Runtime, CPU)."""
    from .quantize import run_onnx

    found = {}
    for split in ("val", "test"):
        if split in prepared.data.splits:
            examples = prepared.data.splits[split]
            outputs = run_onnx(model, examples.images, progress=f"{split} split, {label}")
            found[split] = {**recipe.task.score(outputs, examples, prepared.data.class_names), "examples": len(examples)}
    return found


def revise_mirror_average(folder: Path, data_dir: str | None = None) -> Path:
    """A new version whose graph averages every answer over the image and its left-right mirror
    (test-time augmentation inside the ONNX file); returns its folder."""
    import onnx

    folder = Path(folder)
    document = copy.deepcopy(read_metadata(folder))
    if document.get("mirror_average"):
        raise ReviseError(f"{folder} already averages over mirrors (metadata.json mirror_average)")
    if document["preprocessing"].get("layout", "NHWC") != "NHWC":
        raise ReviseError(f"mirror averaging flips NHWC images; {folder} takes {document['preprocessing'].get('layout')}")
    axes, peaked = mirror_average.width_axes(document), mirror_average.peak_normalized(document)
    config = recorded_config(document, data_dir)
    recipe = get_recipe(config.model)
    prepared = train.prepare(config)
    try:
        wrapped = mirror_average.wrap(onnx.load(str(folder / "model.onnx")), axes, peaked)
    except ValueError as error:
        raise ReviseError(f"{folder / 'model.onnx'}: {error}") from None

    with staged(folder, ignored=SAVEDMODEL_FILES) as staging:
        onnx.save(wrapped, str(staging / "model.onnx"))
        document["parity"] = _mirror_parity(folder / "model.onnx", staging / "model.onnx", parity_images(prepared), axes,
                                            peaked, document.get("golden", {}))
        document["metrics"].update(rescored(staging / "model.onnx", prepared, recipe, "image + mirror"))
        document["mirror_average"] = {
            "views": list(mirror_average.VIEWS), "combine": "mean of the two views' outputs (peak-normalized maps scaled to a peak of 1 again)",
            "mirrored_back": [name for name, axis in axes.items() if axis is not None],
            "peak_normalized": sorted(peaked),
            "cost": "two forward passes per image (one batch of 2N)",
        }
        if "saved_model" in document:
            document["saved_model"] = (f"not shipped: the mirror-averaged graph exists as ONNX only; its weights are version "
                                       f"{folder.name}'s" + (", which ships them as a SavedModel" if (folder / "variables").is_dir()
                                                              else f" (its SavedModel: {document['saved_model']})"))
        document.pop("variants", None)  # the INT8 file quantized the source graph
        changes = ["graph: outputs averaged over the image and its left-right mirror (mirror_average)", "metrics re-measured"]
        return publish(folder, staging, document, ImageSpec.from_metadata(document["preprocessing"]), changes)


def _mirror_parity(source: Path, wrapped: Path, images: np.ndarray, axes: dict, peaked: set, golden: dict) -> dict:
    """The wrapped graph against the source graph run on the images and their mirrors and averaged
    in NumPy; raises ReviseError when an output differs by more than its golden tolerance."""
    from .quantize import run_onnx

    expected = mirror_average.reference(lambda batch: run_onnx(source, batch), images.astype(np.float32), axes, peaked)
    return reference_parity(run_onnx(wrapped, images.astype(np.float32)), expected, golden, "max_abs_diff_mirror_mean",
                            "the source version's model.onnx on each image and its mirror, averaged in NumPy")


def reference_parity(found: dict, expected: dict, golden: dict, measure: str, against: str) -> dict:
    """metadata.json `parity` for a graph rewritten without TensorFlow: each output's max |difference|
    from `expected` (the source graphs' answers combined in NumPy) within its golden tolerance, else
    ReviseError naming every output's gap."""
    outputs, passed = {}, True
    for name, values in expected.items():
        gap, tolerance = float(np.abs(found[name] - values).max()), golden_tolerance(golden, name) if golden else 1e-4
        outputs[name] = {measure: gap, "tolerance": tolerance}
        passed &= gap <= tolerance
    if not passed:
        raise ReviseError(f"the rewritten graph does not reproduce {against}: {outputs}")
    return {"against": against, "inputs": "real images", "batch": len(next(iter(found.values()))), "outputs": outputs,
            "passed": True}


def headline(scores: dict) -> str:
    """One split's metrics in a few figures: balanced accuracy for classifiers, abnormal F1 / AUROC
    and body part for the X-ray model, mean IoU for segmenters."""
    if "abnormal" in scores:
        return (f"abnormal F1 {scores['abnormal']['f1']:.4f}, AUROC {scores['abnormal']['auroc']:.4f}, "
                f"body part {scores['body_part']['accuracy']:.4f}")
    if "mean_iou" in scores:
        return f"mean IoU {scores['mean_iou']:.4f}"
    return f"accuracy {scores['accuracy']:.4f}, balanced accuracy {scores['balanced_accuracy']:.4f}"


def metrics_change(source: Path, revised: Path) -> list[str]:
    """Per split whose metrics the revision re-measured: `split: before -> after`."""
    before, after = (read_metadata(folder).get("metrics", {}) for folder in (source, revised))
    return [f"{split}: {headline(before[split])} -> {headline(scores)}" for split, scores in after.items()
            if split in before and scores != before[split]]


def revise(folder: Path, *, explain: bool = False, mirror: bool = False, tile_overlap: float | None = None,
           learnable_classes: list[int] | None = None, decision_weights: list[float] | None = None,
           data_dir: str | None = None) -> Path:
    """`revise_explain`, `revise_mirror_average` or `revise_serving`: one kind of change per new version."""
    serving = tile_overlap is not None or learnable_classes is not None or decision_weights is not None
    if explain and mirror:
        raise ReviseError("--explain and --mirror-average both change the graph; make them two revisions (--explain first)")
    if (explain or mirror) and serving:
        raise ReviseError(f"{'--explain' if explain else '--mirror-average'} changes the graph; change serving settings in "
                          "a second revision of its output")
    if explain:
        return revise_explain(folder, data_dir)
    if mirror:
        return revise_mirror_average(folder, data_dir)
    return revise_serving(folder, tile_overlap, learnable_classes, decision_weights)
