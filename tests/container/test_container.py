"""End-to-end against the running image (see conftest.py): what a user gets from `podman run -p
3000:3000 -p 8001:8001 visionzoo:VERSION`.

- BentoML endpoints over HTTP, for all three models, with the golden images shipped in the image:
  answers equal the golden outputs recorded at export time (within the export's per-output tolerance, repository.golden_tolerance).
- The Open Inference Protocol with the reference clients, tritonclient.http (REST, binary tensors)
  and tritonclient.grpc: health, metadata, and inference for all three models, from tensors and
  from image files, equal to the same golden outputs.
- Operations: health, metrics and docs routes, the admin routes' token, a non-root process, and
  no TensorFlow in the image.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from visionzoo.serving import config
from visionzoo.serving.processing import (
    DecodedImage,
    Limits,
    Upload,
    class_map_from_tiles,
    decision_weights,
    decode_upload,
)
from visionzoo.serving.repository import ModelVersion, load_served

pytestmark = pytest.mark.container

PROTOCOLS = {"http": httpclient, "grpc": grpcclient}
LIMITS = Limits()  # the service's defaults


@dataclass
class Golden:
    """A served model's golden files (in the image) and the outputs recorded for them at export."""

    version: ModelVersion
    files: list[Path]
    expected: list[dict[str, np.ndarray]]  # per file: output name -> (tiles, ...) array

    def decoded(self) -> list[DecodedImage]:
        return [decode_upload(Upload(path.name, path.read_bytes()), self.version.spec, LIMITS)[0] for path in self.files]

    def class_map(self, index: int, image: DecodedImage) -> np.ndarray:
        """The class map the service must give for golden file `index` (over the learnable classes)."""
        return class_map_from_tiles(self.expected[index]["probabilities"], image.height, image.width,
                                    self.version.metadata.get("learnable_classes"), self.version.spec.tile_overlap,
                                    decision_weights(self.version.metadata))

    def expected_batch(self, output: str) -> np.ndarray:
        return np.concatenate([per_file[output] for per_file in self.expected])


@pytest.fixture(scope="session")
def golden(container) -> dict[str, Golden]:
    found = {}
    for name in config.served_models():
        version = load_served(name, models_dir=container.models_dir)
        spec = version.metadata["golden"]
        recorded = np.load(version.folder / spec["expected"])
        files = [version.folder / "golden" / f for f in spec["files"]]
        expected = [{o["name"]: recorded[f"{i}/{o['name']}"] for o in version.outputs} for i in range(len(files))]
        found[name] = Golden(version, files, expected)
    return found


@pytest.fixture(scope="session")
def http(container):
    with httpx.Client(base_url=container.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def clients(container):
    made = {"http": httpclient.InferenceServerClient(container.http_address, connection_timeout=120, network_timeout=120),
            "grpc": grpcclient.InferenceServerClient(container.grpc_address)}
    yield made
    for client in made.values():
        client.close()


def upload(paths: list[Path]) -> list:
    return [("images", (path.name, path.read_bytes(), "application/octet-stream")) for path in paths]


def test_health_metrics_and_docs(http, golden):
    assert http.get("/livez").status_code == 200
    assert http.get("/readyz").status_code == 200
    assert http.post("/bloodcell/predict", files=upload(golden["bloodcell"].files[:1])).status_code == 200
    metrics = http.get("/metrics")  # series appear with the first request they count
    assert metrics.status_code == 200 and "visionzoo_inference_request_success_total" in metrics.text
    assert "swagger" in http.get("/").text.lower()  # BentoML's OpenAPI UI, over /docs.json
    paths = http.get("/docs.json").json()["paths"]
    assert {"/mura/predict", "/mura/predict_study", "/bloodcell/predict", "/mars/segment"} <= set(paths)


def test_models_status_reports_the_models_in_the_image(http, golden):
    status = http.post("/models", json={}).json()
    assert set(status) == set(config.served_models())
    for name, entry in status.items():
        assert entry["version"] == golden[name].version.version and entry["export"] == golden[name].version.export_name
        assert entry["device"] == "cpu" and entry["engine"] in ("onnxruntime", "openvino"), entry


def test_bloodcell_endpoint_equals_the_golden_outputs(http, golden):
    case = golden["bloodcell"]
    response = http.post("/bloodcell/predict", files=upload(case.files), data={"top_k": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == case.version.version
    labels = case.version.labels["probabilities"]
    for prediction, path, expected in zip(body["predictions"], case.files, case.expected, strict=True):
        assert prediction["file"] == path.name
        got = [prediction["probabilities"][label] for label in labels]
        np.testing.assert_allclose(got, expected["probabilities"][0], atol=case.version.golden_tolerance("probabilities"))
        assert prediction["label"] == labels[int(np.argmax(expected["probabilities"][0]))]


def test_mura_endpoints_equal_the_golden_outputs(http, golden):
    case = golden["mura"]
    body = http.post("/mura/predict", files=upload(case.files)).json()
    body_parts = case.version.labels["body_part"]
    for prediction, expected in zip(body["predictions"], case.expected, strict=True):
        assert prediction["abnormal_probability"] == pytest.approx(float(expected["abnormal"][0, 0]), abs=case.version.golden_tolerance("abnormal"))
        assert prediction["body_part"] == body_parts[int(np.argmax(expected["body_part"][0]))]
    study = http.post("/mura/predict_study", files=upload(case.files)).json()
    mean = float(np.mean([expected["abnormal"][0, 0] for expected in case.expected]))
    assert study["abnormal_probability"] == pytest.approx(mean, abs=case.version.golden_tolerance("abnormal"))
    assert len(study["views"]) == len(case.files)


def test_mars_segment_equals_the_golden_outputs(http, golden):
    case = golden["mars"]
    response = http.post("/mars/segment", files=upload(case.files), data={"mask_format": "npy"})
    assert response.status_code == 200, response.text
    for index, (result, image) in enumerate(zip(response.json()["segmentations"], case.decoded(), strict=True)):
        assert (result["height"], result["width"], result["tiles"]) == (image.height, image.width, len(image.tiles))
        class_map = np.load(io.BytesIO(base64.b64decode(result["mask_npy"])))
        reference = case.class_map(index, image)
        assert np.mean(class_map != reference) < 1e-3  # argmax may flip where two classes tie within float noise


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_oip_health_and_metadata(clients, golden, protocol):
    client = clients[protocol]
    assert client.is_server_live() and client.is_server_ready()
    for name, case in golden.items():
        assert client.is_model_ready(name)
        metadata = client.get_model_metadata(name, as_json=True) if protocol == "grpc" else client.get_model_metadata(name)
        (source,) = case.version.inputs
        first = metadata["inputs"][0]
        assert (first["name"], first["datatype"], [int(d) for d in first["shape"]]) == (source["name"], source["datatype"], source["shape"])
        assert [o["name"] for o in case.version.outputs] == [o["name"] for o in metadata["outputs"]][: len(case.version.outputs)]


def tensor(protocol: str, name: str, array: np.ndarray, datatype: str):
    item = PROTOCOLS[protocol].InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(config.served_models()))
def test_oip_tensor_inference_equals_the_golden_outputs(clients, golden, protocol, name):
    """The model's own input tensor ("image", FP32 pixels at model size), as tritonclient sends it."""
    case = golden[name]
    batch = np.concatenate([image.tiles for image in case.decoded()]).astype(np.float32)
    result = clients[protocol].infer(name, [tensor(protocol, case.version.inputs[0]["name"], batch, "FP32")])
    for output in case.version.outputs:
        np.testing.assert_allclose(result.as_numpy(output["name"]), case.expected_batch(output["name"]),
                                   atol=case.version.golden_tolerance(output["name"]), err_msg=output["name"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(config.served_models()))
def test_oip_file_inference_equals_the_golden_outputs(clients, golden, protocol, name):
    """Encoded image files as a BYTES tensor, decoded in the container like uploads are."""
    case = golden[name]
    decoded = case.decoded()
    same_size = [i for i, image in enumerate(decoded) if (image.height, image.width) == (decoded[0].height, decoded[0].width)]
    files = np.array([case.files[i].read_bytes() for i in same_size], dtype=np.object_)
    result = clients[protocol].infer(name, [tensor(protocol, case.version.inputs[0]["name"] + "_bytes", files, "BYTES")])
    if case.version.spec.tiling != "none":
        class_map = result.as_numpy("class_map")
        for got, i in zip(class_map, same_size, strict=True):
            reference = case.class_map(i, decoded[i])
            assert np.mean(got != reference) < 1e-3
    else:
        for output in case.version.outputs:
            expected = np.concatenate([case.expected[i][output["name"]] for i in same_size])
            np.testing.assert_allclose(result.as_numpy(output["name"]), expected,
                                           atol=case.version.golden_tolerance(output["name"]), err_msg=output["name"])


def test_admin_routes_need_the_token(http, container, golden):
    version = golden["bloodcell"].version.version
    denied = http.post("/admin/reload", json={"model": "bloodcell", "version": version})
    assert denied.status_code == 401, denied.text
    wrong = http.post("/admin/reload", json={"model": "bloodcell"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    reloaded = http.post("/admin/reload", json={"model": "bloodcell", "version": version},
                         headers={"Authorization": f"Bearer {container.admin_token}"})
    assert reloaded.status_code == 200 and reloaded.json()["version"] == version, reloaded.text
    assert http.post("/bloodcell/predict", files=upload(golden["bloodcell"].files[:1])).status_code == 200


def test_the_image_runs_as_a_user_without_tensorflow(container):
    probe = ("import importlib.metadata as m, importlib.util as u, json, os; "
             "print(json.dumps({'uid': os.getuid(), 'tensorflow': u.find_spec('tensorflow') is not None, "
             "'onnxruntime': m.version('onnxruntime-gpu'), 'packages': sorted(d.metadata['Name'].lower() for d in m.distributions())}))")
    done = container.exec("python", "-c", probe)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["uid"] != 0
    assert not found["tensorflow"] and not any(p.startswith(("tensorflow", "tf-keras", "tf2onnx")) for p in found["packages"])
    requirements = (Path(__file__).resolve().parents[2] / "visionzoo" / "serving" / "requirements.txt").read_text()
    assert f"onnxruntime-gpu=={found['onnxruntime']}" in requirements
