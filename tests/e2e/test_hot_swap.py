"""Retrain -> export -> serve, without a restart: a real `bentoml serve` over a temporary models
folder, clients hammering /bloodcell/predict with real images the whole time, and

1. version 2 appears (a re-calibrated copy of version 1 with valid hashes) and an authenticated
   POST /admin/reload swaps it in: no request fails, and afterwards every answer says version 2 and
   carries version 2's probabilities;
2. POST /admin/rollback goes back to version 1, again without a failed request;
3. reloading without the token, or with a wrong one, is refused (401);
4. a version 3 whose model.onnx was altered after export is refused with a message that says so,
   and version 1 keeps serving;
5. after a restart, the newest (valid) version is served.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import bentoml_serve
from tests.serving.toy_models import models_root
from visionzoo.serving import config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hot-swap-test-token"
CLIENTS = 4
EXPORT = config.served_models()["bloodcell"].export


@dataclass
class Answer:
    started: float
    finished: float
    status: int
    image: int
    version: str | None = None
    probabilities: np.ndarray | None = None
    error: str = ""


def newest(root: Path) -> Path:
    return max((p for p in root.iterdir() if p.name.isdigit() and (p / "metadata.json").is_file()), key=lambda p: int(p.name))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Version 1 of every served model (the shipped blood-cell export when there is one, so the
    clients send real blood-cell images; toy exports for what is not shipped yet)."""
    root = tmp_path_factory.mktemp("models")
    toy = models_root()
    for export in [m.export for m in config.served_models().values()]:
        shipped = REPO / "exported_models" / export
        source = newest(shipped if shipped.is_dir() and any(shipped.glob("*/metadata.json")) else toy / export)
        shutil.copytree(source, root / export / "1", ignore=shutil.ignore_patterns("saved_model*", "fingerprint.pb", "variables", "assets"))
        set_version(root / export / "1", "1")
    return root


def set_version(folder: Path, version: str) -> dict:
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["version"] = version
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return metadata


def publish(models: Path, version: str, change) -> Path:
    """Write version `version` of the blood-cell model the way `visionzoo export` does: build it in
    a staging folder (ignored by the service), then rename it into place."""
    staging = models / EXPORT / f".staging-{version}"
    shutil.copytree(newest(models / EXPORT), staging)
    change(staging, set_version(staging, version))
    return staging.rename(models / EXPORT / version)


def recalibrate(folder: Path, metadata: dict) -> None:
    """A different but compatible model: softmax temperature 2 before the output (same signature,
    same top class, other probabilities), with its sha256 recorded as an export would."""
    import onnx
    from onnx import helper, numpy_helper

    path = folder / "model.onnx"
    model = onnx.load(path)
    output = metadata["outputs"][0]["name"]  # the answer (a `cam` output may sit beside it)
    (softmax,) = [node for node in model.graph.node if output in node.output]
    logits = softmax.input[0]
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), "hot_swap/temperature"))
    model.graph.node.insert(list(model.graph.node).index(softmax),
                            helper.make_node("Mul", [logits, "hot_swap/temperature"], ["hot_swap/scaled"], name="hot_swap/scale"))
    softmax.input[0] = "hot_swap/scaled"
    onnx.save(model, path)
    metadata["files"]["model.onnx"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2))


def tamper(folder: Path, metadata: dict) -> None:
    """Alter model.onnx after export (the recorded sha256 no longer matches)."""
    path = folder / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def by_label(body: dict) -> np.ndarray:
    """The first prediction's probabilities, in label order."""
    return np.array([p for _, p in sorted(body["predictions"][0]["probabilities"].items())])


class Hammer:
    """CLIENTS threads posting one real image each to /bloodcell/predict until stopped."""

    def __init__(self, url: str, images: list[Path]):
        self.url, self.images = url, images
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def client(self, index: int) -> None:
        image = index % len(self.images)
        files = [("images", (self.images[image].name, self.images[image].read_bytes(), "application/octet-stream"))]
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/bloodcell/predict", files=files)
                except httpx.HTTPError as error:
                    self.answers.append(Answer(started, time.monotonic(), 0, image, error=repr(error)))
                    continue
                answer = Answer(started, time.monotonic(), response.status_code, image, error=response.text[:300])
                if response.status_code == 200:
                    body = response.json()
                    answer.version = body["model"]["version"]
                    answer.probabilities = by_label(body)
                self.answers.append(answer)

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        target = len(self.answers) + count
        while len(self.answers) < target and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.answers) >= target, f"only {len(self.answers)} answers after {timeout}s"


def admin(url: str, action: str, body: dict, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/admin/{action}", json=body, headers=headers, timeout=120)


def test_hot_swap_rollback_and_restart_without_a_failed_request(models, tmp_path):
    images = sorted((models / EXPORT / "1" / "golden").glob("*.[jp][pn]g"))[:CLIENTS]
    assert images, "the blood-cell export has no golden images"
    env = {"VISIONZOO_ADMIN_TOKEN": TOKEN}
    events: dict[str, tuple[float, float]] = {}  # action -> (sent, answered)

    with bentoml_serve(env, models_dir=models, log_dir=tmp_path) as served, Hammer(served.url, images) as hammer:
        hammer.wait_for(20)
        publish(models, "2", recalibrate)

        assert admin(served.url, "reload", {"model": "bloodcell"}, token=None).status_code == 401
        assert admin(served.url, "reload", {"model": "bloodcell"}, token="wrong").status_code == 401

        sent = time.monotonic()
        reloaded = admin(served.url, "reload", {"model": "bloodcell"})  # newest: version 2
        events["reload"] = (sent, time.monotonic())
        assert reloaded.status_code == 200 and reloaded.json()["version"] == "2", reloaded.text
        hammer.wait_for(20)

        sent = time.monotonic()
        rolled_back = admin(served.url, "rollback", {"model": "bloodcell"})
        events["rollback"] = (sent, time.monotonic())
        assert rolled_back.status_code == 200 and rolled_back.json()["version"] == "1", rolled_back.text
        hammer.wait_for(20)

        publish(models, "3", tamper)
        refused = admin(served.url, "reload", {"model": "bloodcell", "version": "3"})
        assert refused.status_code == 409, refused.text
        assert "does not match metadata.json" in refused.json()["error"] and "model.onnx" in refused.json()["error"]
        hammer.wait_for(20)
        status = httpx.post(f"{served.url}/models", json={}, timeout=30).json()["bloodcell"]
        assert (status["version"], status["previous_version"]) == ("1", "2")

    answers = hammer.answers
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[0]}"

    # Each version's answers per image, from the phases where only that version can have answered.
    reload_sent, reload_done = events["reload"]
    rollback_sent, rollback_done = events["rollback"]
    phases = {
        "1": [a for a in answers if a.finished < reload_sent],
        "2": [a for a in answers if reload_done < a.started and a.finished < rollback_sent],
        "1 again": [a for a in answers if a.started > rollback_done],
    }
    expected = {"1": "1", "2": "2", "1 again": "1"}
    reference: dict[str, dict[int, np.ndarray]] = {}
    for phase, chosen in phases.items():
        assert chosen, f"no answers in phase {phase}"
        assert {a.version for a in chosen} == {expected[phase]}, f"phase {phase}"
        per_image = reference.setdefault(expected[phase], {})
        for a in chosen:
            per_image.setdefault(a.image, a.probabilities)
            np.testing.assert_allclose(a.probabilities, per_image[a.image], atol=1e-5)
    shared = set(reference["1"]) & set(reference["2"])
    assert shared and all(not np.allclose(reference["1"][i], reference["2"][i], atol=1e-4) for i in shared), \
        "version 2 answers like version 1: the swap did not reach the runtime"
    # In flight during a swap an answer comes from either version, never anything else, and it names
    # the version that computed it (the runtime reports it with every batch).
    mislabelled = 0
    for a in answers:
        matches = [v for v in reference if a.image in reference[v] and np.allclose(a.probabilities, reference[v][a.image], atol=1e-5)]
        assert matches, f"an answer matches neither version: {a}"
        mislabelled += a.version not in matches
    print(f"{len(answers)} requests from {CLIENTS} clients, none failed; reload took {reload_done - reload_sent:.2f}s, "
          f"rollback {rollback_done - rollback_sent:.2f}s")
    assert mislabelled == 0, f"{mislabelled} answers named a version other than the one that computed them"

    # Restart: the operator removed the altered version 3; the newest valid one, 2, is served.
    shutil.rmtree(models / EXPORT / "3")
    (tmp_path / "restart").mkdir()
    with bentoml_serve(env, models_dir=models, log_dir=tmp_path / "restart") as served:
        status = httpx.post(f"{served.url}/models", json={}, timeout=30).json()
        assert status["bloodcell"]["version"] == "2"
        image = min(reference["2"])
        response = httpx.post(f"{served.url}/bloodcell/predict", timeout=60,
                              files=[("images", (images[image].name, images[image].read_bytes(), "image/jpeg"))])
        assert response.status_code == 200 and response.json()["model"]["version"] == "2"
        np.testing.assert_allclose(by_label(response.json()), reference["2"][image], atol=1e-5)
