"""Batching across protocols, in-process: concurrent BentoML uploads and OIP REST tensors for the same
model join the same engine runs (the batch-size histogram shows runs of more than one item), and
every caller still gets exactly its own rows back."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from starlette.testclient import TestClient

from visionzoo.serving.oip.rest import HEADER_LENGTH
from visionzoo.serving.repository import load_served
from visionzoo.serving.service import VisionZoo

from .conftest import fresh_asgi, wait_ready
from .test_service import metric


def test_concurrent_requests_of_two_protocols_are_batched_and_answered_row_for_row(models_dir):
    version = load_served("bloodcell")
    session = ort.InferenceSession(str(version.onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 255, (1, 96, 96, 3)).astype(np.uint8) for _ in range(48)]
    with TestClient(fresh_asgi(VisionZoo)) as client:
        wait_ready(client)
        runs_before = metric(client.get("/metrics").text, "visionzoo_inference_exec_count_total", model="bloodcell")

        def over_http(pixels: np.ndarray) -> np.ndarray:
            buffer = io.BytesIO()
            np.save(buffer, pixels[0])
            response = client.post("/bloodcell/predict", files=[("images", ("cell.npy", buffer.getvalue(), "x"))])
            assert response.status_code == 200, response.text
            labels = version.labels["probabilities"]
            return np.array([[response.json()["predictions"][0]["probabilities"][k] for k in labels]])

        def over_oip(pixels: np.ndarray) -> np.ndarray:
            tensor = httpclient.InferInput("image_uint8", list(pixels.shape), "UINT8")
            tensor.set_data_from_numpy(pixels)
            body, length = httpclient.InferenceServerClient.generate_request_body([tensor])
            response = client.post("/v2/models/bloodcell/infer", content=body, headers={HEADER_LENGTH: str(length)})
            assert response.status_code == 200, response.text
            length = response.headers.get(HEADER_LENGTH)
            result = httpclient.InferResult.from_response_body(response.content, header_length=int(length) if length else None)
            return result.as_numpy("probabilities")

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(over_http if i % 2 else over_oip, pixels) for i, pixels in enumerate(inputs)]
            answers = [future.result() for future in futures]
        text = client.get("/metrics").text

    for pixels, answer in zip(inputs, answers):
        (expected,) = session.run(["probabilities"], {"image": pixels.astype(np.float32)})
        np.testing.assert_allclose(answer, expected, atol=1e-5)
    runs = metric(text, "visionzoo_inference_exec_count_total", model="bloodcell") - runs_before
    assert 0 < runs < len(inputs), f"{len(inputs)} requests took {runs} engine runs: nothing was batched"
