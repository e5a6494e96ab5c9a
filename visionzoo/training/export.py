"""Export a trained model as SavedModel + ONNX + metadata.json, and prove they compute the same
function as the Keras model.

Layout: `exported_models/<name>/<version>/` with
    saved_model.pb   the SavedModel, directly in the version folder (+ variables/, fingerprint.pb,
                     assets/ as TensorFlow writes them): the layout TensorFlow Serving loads with
                     `--model_base_path=exported_models/<name>`; `serving_default` signature: named
                     inputs -> named outputs. Shipped only when small (`--savedmodel auto`, what
                     `make ship` uses); where it is not, metadata.json `saved_model` gives the command
                     that regenerates it.
    model.onnx       batch dimension named `batch`, opset OPSET; labels, preprocessing, task and
                     provenance in its metadata_props (onnx_metadata.annotate)
    golden/          a few real input files + the outputs they must give (expected.npz, inputs.json)
    cam output       where the recipe names a layer to explain (Recipe.explain), the graph also
                     returns `cam`, the Grad-CAM map of the answer (visionzoo/training/gradcam.py)
    metadata.json    input/output spec, preprocessing, labels, metrics and the data behind them,
                     recipe, provenance, parity figures, sha256 of every other file

Everything is written into a hidden temporary folder and renamed into place at the end, so an
interrupted export never leaves a folder that looks complete. Versions are integers (1, 2, ...);
serving picks the newest unless pinned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from visionzoo.preprocessing import ImageSpec, prepare_image, prepare_tiles

from . import gradcam, graph_fixes, keras_files, onnx_metadata, runs, train
from .registry import get_recipe

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_BATCH = 8
PARITY_TOLERANCE = 1e-4  # max |difference| between Keras and SavedModel / ONNX outputs
# A Grad-CAM map is divided by its own peak, which amplifies float32 rounding where the peak is small
# (1e-3 seen on an untrained model); a map is read as a picture, so 1e-2 of its range is still exact.
CAM_PARITY_TOLERANCE = 1e-2
SAVEDMODEL_SHIP_LIMIT = 20 * 1024 * 1024  # "auto": ship the SavedModel only when this small
MIN_SPREAD = 1e-6  # outputs must vary across inputs by more than this, or parity proves nothing
# On real test images a trained model's outputs must vary: the largest standard deviation across the
# images of any output value must reach this, or the model has (nearly) collapsed to a constant (a
# 1-epoch run once passed parity with a spread of 7e-6, a useless model proven equal in three formats).
MIN_REAL_STD = 1e-4
EXPORT_STEPS = 5
GOLDEN_COUNT = 4
SUPPORTED_INPUTS = (["image"], ["image", "body_part"])
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class ExportError(RuntimeError):
    """The export could not be completed or did not pass its own checks."""


def sha256(path: Path) -> str:
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): sha256(path)
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file() and path.name != "metadata.json"
    }


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent, check=False)
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def next_version(model_root: Path) -> str:
    versions = [int(p.name) for p in Path(model_root).glob("*") if p.is_dir() and p.name.isdigit()]
    return str(max(versions, default=0) + 1)


def _input_specs(model):
    import tensorflow as tf

    names = list(model.input_names)
    if names not in SUPPORTED_INPUTS:
        raise ExportError(f"export supports inputs {SUPPORTED_INPUTS}, the model has {names}")
    return [tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype, name=name) for name, tensor in zip(names, model.inputs)]


def serving_function(model, explainer: gradcam.GradCam | None = None):
    """A tf.function from named input tensors to a dict of named outputs (dynamic batch); with an
    `explainer`, the outputs and the `cam` map come from it."""
    import tensorflow as tf

    specs = _input_specs(model)
    output_names = list(model.output_names)

    def named(outputs):
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {name: tf.identity(tf.cast(value, tf.float32), name=name) for name, value in zip(output_names, outputs)}

    if explainer is not None:
        @tf.function(input_signature=specs)
        def serve(image):
            return {name: tf.identity(value, name=name) for name, value in explainer(image).items()}
    elif len(specs) == 1:
        @tf.function(input_signature=specs)
        def serve(image):
            return named(model(image, training=False))
    else:
        @tf.function(input_signature=specs)
        def serve(image, body_part):
            return named(model([image, body_part], training=False))
    return serve, specs


def _candidate_inputs(model, real_images: np.ndarray | None, seed: int):
    """Input batches to try, most image-like first: real images, smooth noise, white noise."""
    rng = np.random.default_rng(seed)
    shape = (PARITY_BATCH, *model.inputs[0].shape[1:])
    candidates = []
    if real_images is not None and len(real_images):
        candidates.append(("real images", real_images[runs.spread(len(real_images), PARITY_BATCH)].astype(np.float32)))
    coarse = rng.uniform(0, 255, size=(shape[0], max(shape[1] // 8, 1), max(shape[2] // 8, 1), shape[3]))
    smooth = np.kron(coarse, np.ones((1, 8, 8, 1)))[:, : shape[1], : shape[2]]
    smooth = np.pad(smooth, [(0, 0), (0, shape[1] - smooth.shape[1]), (0, shape[2] - smooth.shape[2]), (0, 0)], mode="edge")
    candidates.append(("smooth random images", smooth.astype(np.float32)))
    candidates.append(("uniform noise", rng.uniform(0, 255, size=shape).astype(np.float32)))
    feeds = []
    for description, images in candidates:
        feed = {"image": images}
        if len(model.inputs) == 2:
            body_part = model.inputs[1]
            width = body_part.shape[-1]
            if body_part.dtype.is_integer:
                feed["body_part"] = rng.integers(0, 4, size=(len(images), 1)).astype(np.int32)
            else:
                feed["body_part"] = np.eye(width, dtype=np.float32)[rng.integers(0, width, size=len(images))]
        feeds.append((description, feed))
    return feeds


def _keras_outputs(model, feed, explainer: gradcam.GradCam | None = None) -> dict[str, np.ndarray]:
    if explainer is not None:  # eager: the reference the traced graph is compared with
        return {name: np.asarray(value, dtype=np.float32) for name, value in explainer(feed["image"]).items()}
    inputs = feed["image"] if len(feed) == 1 else [feed["image"], feed["body_part"]]
    outputs = model(inputs, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {name: np.asarray(value, dtype=np.float32) for name, value in zip(model.output_names, outputs)}


def real_output_spread(model, real_images: np.ndarray | None, seed: int = 0) -> float | None:
    """How much the outputs move on real inputs: the max over outputs and output values of the std
    across the parity images (None without real images)."""
    candidates = [feed for description, feed in _candidate_inputs(model, real_images, seed) if description == "real images"]
    if not candidates:
        return None
    return max(float(values.std(axis=0).max()) for values in _keras_outputs(model, candidates[0]).values())


def check_outputs_vary(model, real_images: np.ndarray | None, seed: int = 0, force: bool = False) -> float | None:
    """Refuse (ExportError) a model whose outputs are (nearly) constant on real inputs, unless
    `force`; returns real_output_spread."""
    spread = real_output_spread(model, real_images, seed)
    if spread is not None and spread < MIN_REAL_STD:
        message = (f"the model's outputs are (nearly) constant on real inputs (largest std across "
                   f"{min(len(real_images), PARITY_BATCH)} test images {spread:.1e} < {MIN_REAL_STD:.0e}): it has not "
                   "learned to tell inputs apart; train longer, or pass --force to export it anyway")
        if not force:
            raise ExportError(message)
        logger.warning("exporting anyway (--force): %s", message)
    return spread


def check_parity(model, saved_model_dir: Path, onnx_path: Path, real_images=None, seed: int = 0,
                 explainer: gradcam.GradCam | None = None) -> dict:
    """Compare Keras, the reloaded SavedModel and ONNX Runtime on inputs whose outputs vary (and,
    with an `explainer`, its eager Grad-CAM map with the exported `cam`)."""
    import onnxruntime as ort
    import tensorflow as tf

    signature = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tried = []
    for description, feed in _candidate_inputs(model, real_images, seed):
        expected = _keras_outputs(model, feed, explainer)
        spread = {name: float(values.std(axis=0).mean()) for name, values in expected.items()}
        answers = [value for name, value in spread.items() if name != gradcam.CAM_OUTPUT]  # a map alone proves nothing
        if max(answers) <= MIN_SPREAD:
            tried.append(f"{description} (spread {max(answers):.2e})")
            continue
        saved = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in feed.items()}).items()}
        onnx_names = [o.name for o in session.get_outputs()]
        onnx = dict(zip(onnx_names, session.run(None, feed)))
        report = {"inputs": description, "batch": len(feed["image"]), "tolerance": PARITY_TOLERANCE, "outputs": {}}
        for name, reference in expected.items():
            if name not in saved or name not in onnx:
                raise ExportError(f"output {name!r} missing: SavedModel has {sorted(saved)}, ONNX has {onnx_names}")
            entry = {
                "spread": spread[name],
                "max_abs_diff_savedmodel": float(np.abs(saved[name] - reference).max()),
                "max_abs_diff_onnx": float(np.abs(onnx[name] - reference).max()),
            }
            if reference.ndim == 4:  # per-pixel classes: how often the arg-max agrees
                entry["argmax_agreement_onnx"] = float((onnx[name].argmax(-1) == reference.argmax(-1)).mean())
            tolerance = CAM_PARITY_TOLERANCE if name == gradcam.CAM_OUTPUT else PARITY_TOLERANCE
            if tolerance != PARITY_TOLERANCE:
                entry["tolerance"] = tolerance
            report["outputs"][name] = entry
            worst = max(entry["max_abs_diff_savedmodel"], entry["max_abs_diff_onnx"])
            if worst > tolerance:
                raise ExportError(f"parity failed for {name!r}: max |difference| {worst:.2e} > {tolerance:.0e} ({entry})")
        report["passed"] = True
        return report
    raise ExportError(f"model outputs do not vary across inputs ({'; '.join(tried)}); a parity check would prove nothing")


def saved_model_note(saved_bytes: int, run: str | None) -> str:
    """metadata.json `saved_model` for an export that does not ship its SavedModel: how to get it."""
    run = run or "RUN"
    return (f"checked for parity but not shipped ({saved_bytes / 2**20:.0f} MiB); regenerate it with `visionzoo export {run} "
            f"--savedmodel always`, which needs the run's checkpoint {run}/best_model.keras (runs/ commits no weights) and "
            "its training data at the recorded data_dir, and writes a new version folder with saved_model.pb + variables/")


def saved_model_entries(folder: Path) -> list[Path]:
    """The SavedModel files and folders in a version folder (what tf.saved_model.save writes)."""
    return [Path(folder) / name for name in onnx_metadata.SAVED_MODEL_ENTRIES if (Path(folder) / name).exists()]


def write_onnx(serve, specs, path: Path) -> None:
    import onnx
    import tf2onnx

    gradcam.register_gradient_converters()  # a Grad-CAM graph holds gradient kernels tf2onnx lacks
    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=specs, opset=OPSET, output_path=str(path))
    onnx_metadata.share_transposed_weights(path)  # a gradient's transposed copy of a kernel: one copy on disk
    onnx.checker.check_model(str(path), full_check=True)
    del model_proto


def _golden_sources(examples, count: int) -> list[tuple[str, bytes | None, np.ndarray]]:
    """Up to `count` (name, original file bytes or None, model pixels) from distinct source files,
    spread over the split."""
    chosen, seen = [], set()
    order = np.argsort(np.abs(np.arange(len(examples))[:, None] - runs.spread(len(examples), count)[None]), axis=0)
    for column in order.T:  # for each evenly spaced target, the nearest example from an unused file
        for index in column:
            source = str(examples.ids[index]).split("#")[0].split("@")[0]
            path = Path(source)
            original = path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
            key = source if original else str(examples.ids[index])  # tiles of one frame share a file
            if key in seen:
                continue
            seen.add(key)
            chosen.append((path.name if original else f"example_{index}.png", path.read_bytes() if original else None,
                           examples.images[index]))
            break
    return chosen


def write_golden(folder: Path, onnx_path: Path, spec: ImageSpec, examples, labels: dict, count: int = GOLDEN_COUNT) -> dict:
    """Copy a few real test files and record what ONNX gives for them through the serving
    preprocessing path (preprocessing.prepare_*), so tests can hold the shipped model to them."""
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    if len(session.get_inputs()) != 1:
        return {}
    golden = folder / "golden"
    golden.mkdir()
    arrays, entries = {}, []
    for index, (name, raw, pixels) in enumerate(_golden_sources(examples, count)):
        target = golden / name
        if raw is None:
            Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(target)
        else:
            target.write_bytes(raw)
        batch = prepare_tiles(target, spec) if spec.tiling != "none" else prepare_image(target, spec)[None]
        outputs = session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32)})
        for output, values in zip(session.get_outputs(), outputs):
            arrays[f"{index}/{output.name}"] = values
        entries.append({"file": name, "tiles": len(batch)})
    np.savez_compressed(golden / "expected.npz", **arrays)
    (golden / "inputs.json").write_text(json.dumps({"inputs": entries, "labels": labels}, indent=2))
    found = {"files": [e["file"] for e in entries], "expected": "golden/expected.npz", "tolerance": PARITY_TOLERANCE}
    if gradcam.CAM_OUTPUT in {output.name for output in session.get_outputs()}:
        found["tolerances"] = {gradcam.CAM_OUTPUT: CAM_PARITY_TOLERANCE}  # read with repository.golden_tolerance
    return found


def _versions() -> dict:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx
    import tf_keras

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
            "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "opset": OPSET}


def _tensor_spec(name: str, shape, dtype: str) -> dict:
    datatypes = {"float32": "FP32", "int32": "INT32", "int64": "INT64"}
    return {"name": name, "datatype": datatypes[dtype], "shape": [-1, *[int(d) for d in shape[1:]]]}


def export_model(
    model,
    name: str,
    out_root: Path,
    *,
    image_spec: ImageSpec,
    task_kind: str,
    output_labels: dict[str, list[str]],
    metadata: dict | None = None,
    real_examples=None,
    seed: int = 0,
    savedmodel: str = "always",
    force: bool = False,
    explain: gradcam.Explanation | None = None,
) -> Path:
    """Write, check and atomically publish one export; returns the version folder.

    `explain`: also export the Grad-CAM map of the answer as output `cam` (gradcam.py).

    Refuses (ExportError) a model whose outputs are (nearly) constant on `real_examples`, unless
    `force`.

    `savedmodel`: "always" ships the SavedModel; "auto" ships it only when it is at most
    SAVEDMODEL_SHIP_LIMIT bytes (it is always written and parity-checked first); "never" drops it
    after the check. metadata.json says which, and hashes exactly the files shipped.
    """
    if savedmodel not in ("always", "auto", "never"):
        raise ValueError(f"savedmodel must be always, auto or never, got {savedmodel!r}")
    import tensorflow as tf

    graph_fixes.fold_captured_statistics(model)  # eager statistics would become required ONNX inputs
    real_images = None if real_examples is None else real_examples.images
    _step(1, f"checking that {name}'s outputs vary on real inputs")
    real_spread = check_outputs_vary(model, real_images, seed, force)
    model_root = Path(out_root) / name
    model_root.mkdir(parents=True, exist_ok=True)
    staging = model_root / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        explainer = None if explain is None else gradcam.GradCam(model, explain)
        serve, specs = serving_function(model, explainer)
        _step(2, "writing the SavedModel")
        tf.saved_model.save(model, str(staging), signatures={"serving_default": serve})  # TF Serving layout
        _step(3, f"converting to ONNX (opset {OPSET})")
        write_onnx(serve, specs, staging / "model.onnx")
        _step(4, "checking Keras / SavedModel / ONNX parity")
        parity = check_parity(model, staging, staging / "model.onnx", real_images, seed, explainer)
        if real_spread is not None:
            parity["real_inputs_max_std"] = real_spread
        _step(5, "writing golden files, metadata.json and hashes")
        golden = {} if real_examples is None else write_golden(staging, staging / "model.onnx", image_spec, real_examples, output_labels)
        entries = saved_model_entries(staging)
        saved_bytes = sum(p.stat().st_size for e in entries for p in [e, *e.rglob("*")] if p.is_file())
        ship_saved = savedmodel == "always" or (savedmodel == "auto" and saved_bytes <= SAVEDMODEL_SHIP_LIMIT)
        if not ship_saved:
            for entry in entries:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        document = {
            "name": name,
            "task": task_kind,
            "inputs": [_tensor_spec(s.name, s.shape, s.dtype.name) for s in specs],
            "outputs": [_tensor_spec(n, t.shape, "float32") for n, t in zip(model.output_names, model.outputs)]
            + ([] if explainer is None else [_tensor_spec(gradcam.CAM_OUTPUT, (None, *explainer.cam_shape), "float32")]),
            "preprocessing": {**image_spec.to_dict(), "value_range": [0, 255], "layout": "NHWC", "dtype": "float32",
                              "scaling": "inside the model"},
            "labels": output_labels,
            "threshold": 0.5 if task_kind in ("binary", "multitask", "hybrid") else None,
            **({} if explain is None else {"explain": explain.to_dict()}),
            "parity": parity,
            "golden": golden,
            "saved_model": "shipped" if ship_saved else saved_model_note(saved_bytes, (metadata or {}).get("run")),
            "provenance": {"git_commit": git_commit(), "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "versions": _versions()},
            **(metadata or {}),
        }
        version = next_version(model_root)
        document["version"] = version
        onnx_metadata.annotate(staging / "model.onnx", document)  # metadata only: outputs unchanged
        document["files"] = file_hashes(staging)
        runs.write_json(staging / "metadata.json", document)
        final = model_root / version
        os.rename(staging, final)  # atomic on one filesystem; fails if a concurrent export took the number
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s version %s to %s", name, version, final)
    return final


def _step(number: int, text: str) -> None:
    logger.info("export [%d/%d] %s", number, EXPORT_STEPS, text)


def recorded_examples(run_dir: Path, spec: ImageSpec):
    """The run's recorded evaluation samples (runs.read_samples) decoded from their files through
    the serving preprocessing, which gives training's pixels (tests/test_pixel_parity.py); None
    when the run recorded none or one is not a readable image file (archive members, pickled rows)."""
    from .data.common import Examples

    ids = runs.read_samples(run_dir).get("ids") or []
    if not ids:
        return None
    images, cache = [], {}
    for sample in ids:
        source, _, tile = sample.partition("#")
        path = Path(source)
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES or (tile and not tile.isdigit()):
            logger.info("export: sample %s is not an image file here; re-reading the dataset instead", sample)
            return None
        if spec.tiling == "none":
            images.append(prepare_image(path, spec))
        else:
            if source not in cache:
                cache[source] = prepare_tiles(path, spec)
            images.append(cache[source][int(tile or 0)])
    logger.info("export: decoded the run's %d recorded samples (no dataset re-read)", len(ids))
    return Examples(images=np.stack(images), targets={}, ids=np.array(ids))


def _reread_examples(config, data: dict, class_names: dict):
    """Runs without usable samples: load the dataset again for the evaluation split (slow)."""
    try:
        prepared = train.prepare(config)
    except (OSError, ValueError) as error:  # data moved away: export still works, with synthetic parity inputs
        logger.warning("cannot re-read the training data (%s); parity uses random inputs and no golden files", error)
        return None, class_names
    data.setdefault("dataset", prepared.data.notes.get("dataset"))
    return prepared.data.splits[train.evaluation_split(prepared.data)], prepared.data.class_names


def checked_decision_weights(weights: list[float], output_labels: dict[str, list[str]]) -> list[float]:
    """`weights` as metadata.json records them, or ExportError: one positive number per class of the
    first output (what serving's processing.decision_weights reads)."""
    from visionzoo.serving.processing import decision_weights

    first = next(iter(output_labels), None)
    try:
        return decision_weights({"decision_weights": list(weights), "labels": output_labels, "outputs": [{"name": first}]})
    except (ValueError, TypeError) as error:
        raise ExportError(f"{error}; classes: {', '.join(output_labels.get(first, []))}") from None


def export_run(run_dir: Path, out_root: Path = Path("exported_models"), name: str | None = None, savedmodel: str = "always",
               force: bool = False, tile_overlap: float | None = None, decision_weights: list[float] | None = None) -> Path:
    """Export a run's best checkpoint with its metrics, data description and recipe.

    Refuses smoke and unfinished runs (runs.export_refusal) and (nearly) constant models unless `force`.
    `tile_overlap`: how the served version cuts frames (ImageSpec.tile_overlap; training's tiles do
    not overlap). Models trained with an ignored class record `learnable_classes`, so serving's
    arg-max never answers a class training gave no loss. `decision_weights`: per-class multipliers on
    the probabilities before the served arg-max (metadata.json `decision_weights`), e.g. to undo the
    class shares that oversampling gave the training set; chosen on validation.
    """

    run_dir = Path(run_dir)
    config, checkpoint = runs.load_run(run_dir)
    refusal = runs.export_refusal(run_dir)
    if refusal and not force:
        raise ExportError(refusal)
    if refusal:
        logger.warning("exporting anyway (--force): %s", refusal)
    logger.info("export: loading %s", checkpoint)
    recipe = get_recipe(config.model)
    model = keras_files.load_model(checkpoint, compile=False)  # weights only: no optimizer state in the export
    data = runs.read_json(run_dir / "data.json")
    class_names = data.get("class_names", {})
    training_spec = config.image_spec(recipe)
    serving_spec = training_spec if tile_overlap is None else dataclasses.replace(training_spec, tile_overlap=tile_overlap)
    real_examples = recorded_examples(run_dir, training_spec)
    if real_examples is None:
        real_examples, class_names = _reread_examples(config, data, class_names)
    metadata = {
        "description": recipe.summary,
        "run": run_dir.as_posix(),
        "metrics": runs.read_json(run_dir / "metrics.json"),
        "data": {**data, "class_names": class_names},
        "recipe": {"name": recipe.name, "family": recipe.family, "source": recipe.source, "source_reported": recipe.reported,
                   "config": json.loads(config.to_json())},
        "training": runs.read_json(run_dir / "training.json"),
        "run_state": runs.read_state(run_dir),
    }
    learnable = recipe.task.learnable_classes(config)
    if learnable is not None:
        metadata["learnable_classes"] = learnable
    output_labels = recipe.task.output_labels(class_names)
    if decision_weights is not None:
        metadata["decision_weights"] = checked_decision_weights(decision_weights, output_labels)
    return export_model(
        model, name or recipe.name, out_root, image_spec=serving_spec, task_kind=recipe.task.kind,
        output_labels=output_labels, metadata=metadata, real_examples=real_examples, seed=config.seed,
        savedmodel=savedmodel, force=force, explain=recipe.explain if len(model.inputs) == 1 else None,
    )
