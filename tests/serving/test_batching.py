"""Adaptive batching, in-process: concurrent requests to the runtime's batchable API are merged
into batches larger than one (BentoML's dispatcher, its batch-size histogram in /metrics), and
every caller still gets exactly its own rows back."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from starlette.testclient import TestClient

from visionzoo.serving.repository import load_version
from visionzoo.serving.service import ModelRuntime

from .conftest import fresh_asgi


def batch_size_counts(metrics: str, api: str) -> dict[float, float]:
    """Cumulative histogram buckets of bentoml_service_adaptive_batch_size for one API."""
    buckets = {}
    for line in metrics.splitlines():
        if line.startswith("bentoml_service_adaptive_batch_size_bucket") and f'method_name="{api}"' in line:
            bound = float(re.search(r'le="([^"]+)"', line).group(1))
            buckets[bound] = float(line.rsplit(" ", 1)[1])
    return buckets


def test_concurrent_requests_are_batched_and_answered_row_for_row(models_dir):
    version = load_version("bloodcell")
    session = ort.InferenceSession(str(version.onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 255, (1, 96, 96, 3)).astype(np.float32) for _ in range(48)]
    with TestClient(fresh_asgi(ModelRuntime)) as client:

        def call(batch: np.ndarray) -> np.ndarray:
            response = client.post("/bloodcell", json={"images": batch.tolist()})
            assert response.status_code == 200, response.text
            return np.asarray(response.json(), dtype=np.float32)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(call, inputs))
        metrics = client.get("/metrics").text

    for batch, answer in zip(inputs, answers):
        (expected,) = session.run(None, {"image": batch})
        np.testing.assert_allclose(answer[:, :-1], expected, atol=1e-5)
        assert answer[0, -1] == float(version.version)  # the runtime names the version that computed the row
    buckets = batch_size_counts(metrics, "bloodcell")
    assert buckets, "no batch-size histogram for the bloodcell API"
    singles, total = buckets.get(1.0, 0.0), max(buckets.values())
    assert total > singles, f"every batch had one item: {buckets}"
