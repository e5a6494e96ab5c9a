"""Serving test setup.

The service reads its settings from the environment at import time, so this module sets them
before any test imports `visionzoo.serving.service` (the Prometheus directory is set in tests/conftest.py):
gRPC off for in-process tests, small warm-up, and VISIONZOO_MODELS_DIR pointing at
`models_root()`: the shipped exported_models/ when it holds all three served models, else small
models exported once per machine from synthetic data (tests/serving/toy_models.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .toy_models import models_root

os.environ.setdefault("VISIONZOO_GRPC_PORT", "0")
os.environ.setdefault("VISIONZOO_WARMUP_BATCH_SIZES", "1,4")
os.environ.setdefault("VISIONZOO_ENGINE", "onnxruntime")  # deterministic in tests; engine choice has its own tests
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ["VISIONZOO_MODELS_DIR"] = str(models_root())


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return Path(os.environ["VISIONZOO_MODELS_DIR"])


@pytest.fixture(scope="session")
def golden(models_dir):
    """served name -> (version folder, list of golden input files)."""
    from visionzoo.serving import config
    from visionzoo.serving.repository import load_served

    found = {}
    for name in config.served_models():
        version = load_served(name)
        files = [version.folder / "golden" / f for f in version.metadata.get("golden", {}).get("files", [])]
        found[name] = (version.folder, files)
    return found


def fresh_asgi(service):
    """`service.to_asgi()` after dropping BentoML's metrics from the global Prometheus registry.

    BentoML registers its request/batch instruments once per app; a second in-process app (another
    test module) would otherwise fail with DuplicateTimeseries. `bentoml serve` never builds two.
    """
    import prometheus_client

    registry = prometheus_client.REGISTRY
    for collector, names in list(registry._collector_to_names.items()):
        if any(name.startswith("bentoml_") for name in names):
            registry.unregister(collector)
    return service.to_asgi()


def wait_ready(client, timeout: float = 120.0) -> None:
    """Models load in the background after start-up: wait for /readyz (a TestClient or httpx client)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout} s: {client.post('/models', json={}).text}")
