"""`visionzoo quantize`: an INT8 variant calibrated on training images, scored against FP32 on the
test split, recorded in metadata.json, and served when the model's precision is int8."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tests.training.test_cli import visionzoo
from visionzoo.serving import config
from visionzoo.serving.pipeline import ServedModel
from visionzoo.training.export import sha256


def test_quantize_writes_a_scored_int8_variant_that_serves(mars_smoke_run, tmp_path, monkeypatch):
    _, run = mars_smoke_run  # a Mars smoke run (conftest.py), exported here into a folder of its own
    visionzoo("export", str(run), "--out", str(tmp_path / "exported"), "--savedmodel", "never", "--force")
    folder = tmp_path / "exported" / "mars_dual_unet" / "1"

    output = visionzoo("quantize", str(folder), "--calibration-images", "16").stdout
    assert "INT8 variant:" in output and "mean_iou" in output
    metadata = json.loads((folder / "metadata.json").read_text())
    entry = metadata["variants"]["int8"]
    assert entry["file"] == "model.int8.onnx" and entry["calibration"]["images"] == 16
    assert {"fp32", "int8", "agreement"} <= set(entry["test"]) and entry["test"]["examples"] > 0
    assert 0 <= entry["test"]["agreement"]["probabilities"] <= 1
    assert metadata["files"]["model.int8.onnx"] == sha256(folder / "model.int8.onnx")
    assert not any(p.name.startswith(".staging") for p in folder.iterdir())

    import onnx

    int8_model = onnx.load(str(folder / "model.int8.onnx"))
    operators = {node.op_type for node in int8_model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators  # QDQ: really INT8, not a copy
    properties = {p.key: p.value for p in int8_model.metadata_props}  # described like model.onnx
    assert json.loads(properties["labels"]) == metadata["labels"] and properties["version"] == "1"
    assert int8_model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    # The service serves it when asked (and says so), with answers close to FP32's.
    monkeypatch.setenv("VISIONZOO_MODELS_DIR", str(tmp_path / "exported"))
    monkeypatch.setenv("VISIONZOO_ENGINE", "onnxruntime")
    monkeypatch.setenv("VISIONZOO_WARMUP_BATCH_SIZES", "1")
    config.reload()
    try:
        settings = config.served_models()["mars"]
        server = config.server_settings()
        pool = ThreadPoolExecutor(1)
        images = np.random.default_rng(0).uniform(0, 255, (4, 64, 128, 1)).astype(np.float32)

        async def infer(precision: str):
            model = ServedModel(settings.model_copy(update={"precision": precision}), server, pool)
            await model.start()
            assert model.state == "ready", model.reason
            result = await model.infer(images)
            await model.batcher.stop()
            return model.status(), result.outputs["probabilities"]

        (status_fp32, fp32), (status_int8, int8) = asyncio.run(infer("fp32")), asyncio.run(infer("int8"))
        assert status_int8["precision"] == "int8" and status_fp32["precision"] == "fp32"
        assert not np.array_equal(fp32, int8) and np.abs(fp32 - int8).mean() < 0.05
    finally:
        monkeypatch.undo()
        config.reload()


def test_quantize_refuses_a_folder_that_is_not_an_export(tmp_path):
    result = visionzoo("quantize", str(tmp_path), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not an export version folder (no metadata.json); pass one such as exported_models/" in result.stderr
