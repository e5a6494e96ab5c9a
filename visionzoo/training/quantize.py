"""INT8 variants of exported models: ONNX Runtime static quantization (QDQ) calibrated on real
training images, scored on the same real test split as the FP32 model, written beside it.

    visionzoo quantize exported_models/bloodcell_mobilenetv3/4 --data-dir ../shared/data/blood_pbc

The version folder gains `model.int8.onnx`, and its metadata.json a `variants.int8` entry: the
file, how it was calibrated, its test metrics next to FP32's (both computed here, with ONNX
Runtime, on the same images) and how often the two agree. The service serves it with
VISIONZOO_<MODEL>_PRECISION=int8 (or `precision: int8` in models.yaml).

Quantization: QDQ format, per-channel signed INT8 weights, unsigned INT8 activations with
`reduce_range` (7-bit activations avoid the U8S8 saturation of AVX2 CPUs without VNNI),
calibration by the 99.999th percentile of each activation over the calibration images (MinMax lets
one outlier stretch a whole range). A Grad-CAM graph's explanation-only nodes stay FP32
(`explanation_only_nodes`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import gradcam, onnx_metadata, runs, train
from .export import sha256
from .registry import get_recipe
from .revise import recorded_config

logger = logging.getLogger(__name__)

VARIANT_FILE = "model.int8.onnx"
BATCH = 32


def run_onnx(path: Path, images: np.ndarray, batch: int = BATCH, progress: str = "") -> dict[str, np.ndarray]:
    """Every output of an ONNX model over `images`, in batches (CPU)."""
    import onnxruntime as ort
    from tqdm import tqdm

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    chunks = []
    for start in tqdm(range(0, len(images), batch), desc=progress or path.name, unit="batch", leave=False,
                      disable=not progress):
        chunks.append(session.run(names, {input_name: images[start:start + batch].astype(np.float32)}))
    return {name: np.concatenate([chunk[k] for chunk in chunks]) for k, name in enumerate(names)}


def agreement(fp32: dict[str, np.ndarray], int8: dict[str, np.ndarray]) -> dict[str, float]:
    """How often the two variants decide alike: top-1 for class outputs, the 0.5 side for a binary
    output, per-pixel argmax for segmentation maps."""
    found = {}
    for name, reference in fp32.items():
        other = int8[name]
        if reference.shape[-1] == 1:
            found[name] = float(np.mean((reference >= 0.5) == (other >= 0.5)))
        else:
            found[name] = float(np.mean(reference.argmax(-1) == other.argmax(-1)))
    return found


class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader over a stack of images."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self.input_name, self.images, self.position = input_name, images, 0

    def get_next(self):
        if self.position >= len(self.images):
            return None
        batch = self.images[self.position:self.position + 8].astype(np.float32)
        self.position += 8
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0


def explanation_only_nodes(graph) -> list[str]:
    """Names of the nodes only the Grad-CAM output `cam` needs (the gradient tape and the map): they
    stay FP32. Quantizing them speeds up nothing an answer waits for, blurs the map, and OpenVINO
    cannot compile their QDQ form at a fixed batch size (MultiplyPartialTransformation throws)."""
    producer = {output: node for node in graph.node for output in node.output}

    def needed(outputs: list[str]) -> set[str]:
        seen, stack = set(), list(outputs)
        while stack:
            node = producer.get(stack.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                stack.extend(node.input)
        return seen

    outputs = [output.name for output in graph.output]
    if gradcam.CAM_OUTPUT not in outputs:
        return []
    answers = needed([name for name in outputs if name != gradcam.CAM_OUTPUT])
    return sorted(needed([gradcam.CAM_OUTPUT]) - answers)


def quantize_file(source: Path, target: Path, calibration: np.ndarray) -> None:
    """Static QDQ INT8 quantization of `source` into `target`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="visionzoo-quantize-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared), load_external_data=False).graph
        input_name = graph.input[0].name
        quantize_static(
            str(prepared), str(target), _Calibration(input_name, calibration), nodes_to_exclude=explanation_only_nodes(graph),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": 99.999, "CalibMovingAverage": False},
        )


def quantize_export(folder: Path, data_dir: str | None = None, calibration_images: int = 256) -> dict:
    """Write the INT8 variant of one export and record it in its metadata.json; returns the entry."""
    from .revise import read_metadata

    folder = Path(folder)
    metadata_path = folder / "metadata.json"
    document = read_metadata(folder)
    config = recorded_config(document, data_dir)
    recipe = get_recipe(config.model)
    prepared = train.prepare(config)
    scored_on = "test" if "test" in prepared.data.splits else "val"  # formats without a test split (AN2DL npz)
    train_split, test_split = prepared.data.splits["train"], prepared.data.splits[scored_on]
    rng = np.random.default_rng(config.seed)
    picks = np.sort(rng.choice(len(train_split), size=min(calibration_images, len(train_split)), replace=False))
    calibration = train_split.images[picks]

    staging = Path(tempfile.mkdtemp(prefix=".staging-int8-", dir=folder))
    try:
        quantize_file(folder / "model.onnx", staging / VARIANT_FILE, calibration)
        fp32 = run_onnx(folder / "model.onnx", test_split.images, progress="FP32 on the test split")
        int8 = run_onnx(staging / VARIANT_FILE, test_split.images, progress="INT8 on the test split")
        class_names = prepared.data.class_names
        entry = {
            "file": VARIANT_FILE,
            "method": "onnxruntime static quantization, QDQ, per-channel INT8 weights, UINT8 activations (reduce_range), "
                      "percentile 99.999 calibration" + ("; the Grad-CAM map's own nodes stay FP32" if any(
                          o["name"] == gradcam.CAM_OUTPUT for o in document["outputs"]) else ""),
            "calibration": {"images": len(calibration), "split": "train", "seed": config.seed},
            "test": {"split": scored_on, "examples": len(test_split), "fp32": recipe.task.score(fp32, test_split, class_names),
                     "int8": recipe.task.score(int8, test_split, class_names), "agreement": agreement(fp32, int8)},
        }
        onnx_metadata.annotate(staging / VARIANT_FILE, document)  # labels, preprocessing, provenance; `batch`
        final = folder / VARIANT_FILE
        os.replace(staging / VARIANT_FILE, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    document.setdefault("variants", {})["int8"] = entry
    document["files"][VARIANT_FILE] = sha256(final)
    runs.write_json(metadata_path, document)
    logger.info("%s: INT8 variant written; test %s", folder, headline(entry["test"]))
    return entry


def headline(test: dict) -> str:
    """FP32 vs INT8 in one line (accuracy, abnormal F1 or mean IoU)."""
    parts = []
    for key in ("accuracy", "balanced_accuracy", "mean_iou"):
        if key in test["fp32"]:
            parts.append(f"{key} {test['fp32'][key]:.4f} -> {test['int8'][key]:.4f}")
    if "abnormal" in test["fp32"]:
        parts.append(f"abnormal F1 {test['fp32']['abnormal']['f1']:.4f} -> {test['int8']['abnormal']['f1']:.4f}")
        parts.append(f"body part {test['fp32']['body_part']['accuracy']:.4f} -> {test['int8']['body_part']['accuracy']:.4f}")
    return ", ".join(parts) + f"; agreement {test['agreement']}"
