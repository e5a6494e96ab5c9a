"""Tier 3: a real `bentoml serve` subprocess reached over real HTTP, with BentoML's own client
(as the README shows) and with plain multipart requests; answers equal direct ONNX Runtime, and
concurrent clients produce batches larger than one."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.paths import served_export
from visionzoo.preprocessing import prepare_image

pytestmark = pytest.mark.e2e


def _version(served, export: str) -> Path:
    return max((served.models_dir / export).glob("[0-9]*"), key=lambda p: int(p.name))


def _golden(served, export: str) -> list[Path]:
    import json

    folder = _version(served, export)
    return [folder / "golden" / name for name in json.loads((folder / "metadata.json").read_text())["golden"]["files"]]


def test_readiness_liveness_metrics_and_docs(served):
    with httpx.Client(base_url=served.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200 and client.get("/livez").status_code == 200
        assert client.get("/docs.json").json()["paths"].keys() >= {"/mura/predict", "/bloodcell/predict", "/mars/segment"}
        client.post("/bloodcell/predict", files=[("images", ("x.png", b"not an image", "image/png"))])  # counted as a failure
        metrics = client.get("/metrics").text
        assert 'visionzoo_inference_request_failure_total{model="bloodcell"' in metrics and 'reason="unsupported_media"' in metrics
        assert "bentoml_service_request_total" not in metrics  # BentoML's per-request instruments are off (cost)
        assert "swagger" in client.get("/docs").text.lower()


def test_sync_http_client_calls_every_endpoint(served):
    blood, xray, mars = _golden(served, "bloodcell_mobilenetv3"), _golden(served, served_export("mura")), _golden(served, "mars_dual_unet")
    with bentoml.SyncHTTPClient(served.url, timeout=120) as client:
        cells = client.bloodcell_predict(images=blood, top_k=2)
        study = client.mura_predict_study(images=xray[:2])
        views = client.mura_predict(images=xray)
        segments = client.mars_segment(images=mars[:1], overlay=True)
    assert [p["file"] for p in cells["predictions"]] == [p.name for p in blood]
    assert len(views["predictions"]) == len(xray) and len(study["views"]) == 2
    assert segments["segmentations"][0]["overlay_png"] and segments["segmentations"][0]["mask_png"]

    folder = _version(served, "bloodcell_mobilenetv3")
    import json

    metadata = json.loads((folder / "metadata.json").read_text())
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    from visionzoo.preprocessing import ImageSpec

    spec = ImageSpec.from_metadata(metadata["preprocessing"])
    (expected,) = session.run(["probabilities"], {"image": np.stack([prepare_image(p, spec) for p in blood]).astype(np.float32)})
    labels = metadata["labels"]["probabilities"]
    got = [[prediction["probabilities"][label] for label in labels] for prediction in cells["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bad_input_is_a_4xx_and_the_server_keeps_serving(served):
    with httpx.Client(base_url=served.url, timeout=60) as client:
        response = client.post("/mars/segment", files=[("images", ("notes.txt", b"hello", "text/plain"))])
        assert response.status_code == 415 and "notes.txt" in response.json()["error"]
        assert client.post("/bloodcell/predict", data={"top_k": "1"}).status_code == 400
        assert client.get("/readyz").status_code == 200


def _engine_runs(metrics: str, model: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("visionzoo_inference_exec_count_total{") and f'model="{model}"' in line)


def test_concurrent_clients_are_batched(served):
    image = _golden(served, "bloodcell_mobilenetv3")[0].read_bytes()

    def call(_: int) -> int:
        with httpx.Client(base_url=served.url, timeout=120) as client:
            return client.post("/bloodcell/predict", files=[("images", ("cell.jpg", image, "image/jpeg"))]).status_code

    before = _engine_runs(served.metrics(), "bloodcell")
    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(call, range(96)))
    assert statuses == [200] * 96
    runs = _engine_runs(served.metrics(), "bloodcell") - before
    assert 0 < runs < 96, f"96 requests took {runs:.0f} engine runs: nothing was batched"


def _readme_examples(section: str, language: str) -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    body = re.split(r"\n## ", text.split(f"\n## {section}\n", 1)[1], maxsplit=1)[0]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.DOTALL)


def _pointed_at(code: str, served) -> str:
    return code.replace("localhost:3000", served.http_address).replace("exported_models", str(served.models_dir))


def test_readme_serve_examples_run_as_written(served, tmp_path):
    """The README's curl and Python examples for every endpoint, against this server."""
    import json
    import subprocess

    from tests.serving.toy_models import SHIPPED

    if served.models_dir.resolve() != SHIPPED.resolve():
        pytest.skip("the README's examples name the shipped golden files; exported_models/ does not hold all three models")

    shell = [code for code in _readme_examples("Serve and call", "bash") if "make serve" not in code]
    assert shell, "no curl examples in the README's Serve and call section"
    for code in shell:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", _pointed_at(code, served)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr
        decoder, text, position = json.JSONDecoder(), done.stdout, 0
        while (start := text.find("{", position)) != -1:  # curl prints the JSON answers back to back
            body, position = decoder.raw_decode(text, start)
            assert "error" not in body, str(body)[:300]
            if "model" in body:
                assert body.keys() & {"predictions", "views"}, str(body)[:300]
    assert (tmp_path / "mask.png").is_file() and (tmp_path / "overlay.png").is_file()
    (python,) = _readme_examples("Serve and call", "python")
    exec(compile(_pointed_at(python, served), "<README python example>", "exec"), {"__name__": "example"})  # noqa: S102
