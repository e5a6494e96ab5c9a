"""The API key (VISIONZOO_API_KEY, VISIONZOO_API_KEY_FILE) on all three front doors of a real server:
every inference and model route needs it (BentoML endpoints, OIP REST, OIP gRPC), in
`Authorization: Bearer <key>` or `x-api-key: <key>` (gRPC: the same names as metadata), while
health, readiness and metrics stay open. /admin routes take VISIONZOO_ADMIN_TOKEN instead.

Two servers: one with the key in the environment (and an admin token), one reading it from a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import shipped_golden
from tests.e2e.conftest import bentoml_serve

pytestmark = pytest.mark.e2e

KEY = "auth-test-key-0123456789"
FILE_KEY = "auth-test-key-from-a-file"
ADMIN = "auth-test-admin-token"
REPO = Path(__file__).resolve().parents[2]
GOLDEN = sorted(shipped_golden("bloodcell_mobilenetv3").glob("*.jpg"))


@pytest.fixture(scope="module")
def served_env():
    return {"VISIONZOO_API_KEY": KEY, "VISIONZOO_ADMIN_TOKEN": ADMIN}


@pytest.fixture(scope="module")
def input_name(served) -> str:
    found = httpx.get(f"{served.url}/v2/models/bloodcell", headers={"x-api-key": KEY}, timeout=30).json()
    return found["inputs"][0]["name"]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def predict(url: str, headers: dict) -> httpx.Response:
    files = [("images", (GOLDEN[0].name, GOLDEN[0].read_bytes(), "image/jpeg"))]
    return httpx.post(f"{url}/bloodcell/predict", files=files, headers=headers, timeout=60)


def rest_infer(url: str, name: str, headers: dict) -> httpx.Response:
    body = {"inputs": [{"name": name, "datatype": "FP32", "shape": [1, 96, 96, 3],
                        "data": np.full(96 * 96 * 3, 128.0, dtype=np.float32).tolist()}]}
    return httpx.post(f"{url}/v2/models/bloodcell/infer", content=json.dumps(body),
                      headers={"Content-Type": "application/json", **headers}, timeout=60)


def grpc_infer(client: grpcclient.InferenceServerClient, name: str, headers: dict | None):
    tensor = grpcclient.InferInput(name, [1, 96, 96, 3], "FP32")
    tensor.set_data_from_numpy(np.full((1, 96, 96, 3), 128.0, dtype=np.float32))
    return client.infer("bloodcell", [tensor], headers=headers, client_timeout=60)


def grpc_code(call) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value.status()


NO_KEY = [{}, bearer("wrong"), {"x-api-key": "wrong"}, {"Authorization": KEY}]
WITH_KEY = [bearer(KEY), {"x-api-key": KEY}, {"authorization": f"bearer {KEY}"}]


@pytest.mark.parametrize("headers", NO_KEY, ids=["none", "wrong-bearer", "wrong-x-api-key", "no-scheme"])
def test_http_routes_refuse_without_the_key(served, input_name, headers):
    answers = {
        "/bloodcell/predict": predict(served.url, headers),
        "/models": httpx.post(f"{served.url}/models", json={}, headers=headers, timeout=30),
        "/v2/models/bloodcell/infer": rest_infer(served.url, input_name, headers),
        "/v2/models/bloodcell": httpx.get(f"{served.url}/v2/models/bloodcell", headers=headers, timeout=30),
        "/v2/models/bloodcell/ready": httpx.get(f"{served.url}/v2/models/bloodcell/ready", headers=headers, timeout=30),
        "/v2": httpx.get(f"{served.url}/v2", headers=headers, timeout=30),
        "/v2/systemsharedmemory/status": httpx.get(f"{served.url}/v2/systemsharedmemory/status", headers=headers, timeout=30),
        "/v2/systemsharedmemory/region/r/register": httpx.post(
            f"{served.url}/v2/systemsharedmemory/region/r/register", json={"key": "/r", "byte_size": 8}, headers=headers,
            timeout=30),
    }
    statuses = {route: answer.status_code for route, answer in answers.items()}
    assert set(statuses.values()) == {401}, statuses
    assert answers["/bloodcell/predict"].headers.get("www-authenticate") == "Bearer"
    assert "API key" in answers["/bloodcell/predict"].json()["error"]


@pytest.mark.parametrize("headers", WITH_KEY, ids=["bearer", "x-api-key", "lower-case-bearer"])
def test_http_routes_answer_with_the_key(served, input_name, headers):
    answer = predict(served.url, headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["probabilities"]
    answer = rest_infer(served.url, input_name, headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]
    answer = httpx.get(f"{served.url}/v2/models/bloodcell", headers=headers, timeout=30)
    assert answer.status_code == 200 and answer.json()["name"] == "bloodcell", answer.text


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/v2/health/ready", "/v2/health/live"])
def test_probes_and_metrics_stay_open(served, path):
    assert httpx.get(served.url + path, timeout=30).status_code == 200


def test_grpc_needs_the_key(served, input_name):
    client = grpcclient.InferenceServerClient(served.grpc_address)
    try:
        for headers in (None, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
            assert grpc_code(lambda h=headers: grpc_infer(client, input_name, h)) == "StatusCode.UNAUTHENTICATED"
            assert grpc_code(lambda h=headers: client.get_model_metadata("bloodcell", headers=h)) == "StatusCode.UNAUTHENTICATED"
            assert grpc_code(lambda h=headers: client.register_system_shared_memory("r", "/r", 8, headers=h)) == \
                "StatusCode.UNAUTHENTICATED"
        for headers in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
            result = grpc_infer(client, input_name, headers)
            assert result.as_numpy(result.get_response().outputs[0].name).shape[0] == 1
            assert client.get_model_metadata("bloodcell", headers=headers).name == "bloodcell"
    finally:
        client.close()


def grpc_stream(address: str, name: str, metadata: tuple) -> list:
    """One request over ModelStreamInfer; its answers, or the status the stream ended with."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name="bloodcell", id="s1",
                                            raw_input_contents=[np.full((1, 96, 96, 3), 128.0, np.float32).tobytes()])
    request.inputs.add(name=name, datatype="FP32", shape=[1, 96, 96, 3])
    with grpc.insecure_channel(address) as channel:
        try:
            return list(service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([request]),
                                                                                             metadata=metadata, timeout=60))
        except grpc.RpcError as error:
            return [error.code()]


def test_grpc_stream_needs_the_key(served, input_name):
    for metadata in ((), (("authorization", "Bearer wrong"),), (("x-api-key", "wrong"),)):
        assert grpc_stream(served.grpc_address, input_name, metadata) == [grpc.StatusCode.UNAUTHENTICATED]
    (answer,) = grpc_stream(served.grpc_address, input_name, (("x-api-key", KEY),))
    assert not answer.error_message and answer.infer_response.id == "s1"


def test_grpc_health_stays_open(served):
    client = grpcclient.InferenceServerClient(served.grpc_address)
    try:
        assert client.is_server_live() and client.is_server_ready()
    finally:
        client.close()
    with grpc.insecure_channel(served.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_admin_routes_need_the_admin_token(served):
    def reload(headers):
        return httpx.post(f"{served.url}/admin/reload", json={"model": "bloodcell"}, headers=headers, timeout=120)

    assert reload({}).status_code == 401
    assert reload(bearer("wrong")).status_code == 401
    assert reload(bearer(KEY)).status_code == 401  # the API key is not the admin token
    answer = reload(bearer(ADMIN))
    assert answer.status_code == 200 and answer.json()["ok"], answer.text


def test_the_key_can_come_from_a_file(tmp_path):
    secret = tmp_path / "api-key"
    secret.write_text(FILE_KEY + "\n")  # a mounted secret usually ends with a newline
    secret.chmod(0o600)
    with bentoml_serve({"VISIONZOO_API_KEY_FILE": str(secret)}, log_dir=tmp_path) as served:
        assert predict(served.url, {}).status_code == 401
        assert predict(served.url, bearer("wrong")).status_code == 401
        answer = predict(served.url, bearer(FILE_KEY))
        assert answer.status_code == 200, answer.text
        assert predict(served.url, {"x-api-key": FILE_KEY}).status_code == 200
        client = grpcclient.InferenceServerClient(served.grpc_address)
        try:
            assert grpc_code(lambda: client.get_model_metadata("bloodcell")) == "StatusCode.UNAUTHENTICATED"
            assert client.get_model_metadata("bloodcell", headers={"x-api-key": FILE_KEY}).name == "bloodcell"
        finally:
            client.close()
        assert httpx.get(f"{served.url}/readyz", timeout=30).status_code == 200
