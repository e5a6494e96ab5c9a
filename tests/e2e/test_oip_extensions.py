"""The Open Inference Protocol's extensions on a real `bentoml serve`, with the reference clients
(tritonclient.http and tritonclient.grpc): model configuration, model statistics, the model
repository (index; load/unload behind the admin token), grpc.health.v1, server reflection, the
Prometheus series per model, version and protocol, and the API docs page (GET /docs).

One server for the module (the `served` fixture in conftest.py), with an admin token.
"""

from __future__ import annotations

import json
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from visionzoo.serving.repository import load_served

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
MODELS = ("mura", "bloodcell", "mars")


@pytest.fixture(scope="module")
def served_env() -> dict[str, str]:
    return {"VISIONZOO_ADMIN_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def clients(served):
    http = httpclient.InferenceServerClient(served.http_address)
    grpc_client = grpcclient.InferenceServerClient(served.grpc_address)
    yield {"http": http, "grpc": grpc_client}
    http.close()
    grpc_client.close()


def golden_file(name: str) -> bytes:
    version = load_served(name)
    return (version.folder / "golden" / version.metadata["golden"]["files"][0]).read_bytes()


def infer_file(protocol: str, client, name: str = "bloodcell"):
    module = grpcclient if protocol == "grpc" else httpclient
    item = module.InferInput("image_bytes", [1], "BYTES")
    item.set_data_from_numpy(np.array([golden_file(name)], dtype=np.object_))
    return client.infer(name, [item])


def config_of(protocol: str, client, name: str) -> dict:
    if protocol == "grpc":
        return client.get_model_config(name, as_json=True)["config"]
    return client.get_model_config(name)


def stats_of(protocol: str, client, name: str) -> dict:
    found = client.get_inference_statistics(name, as_json=True) if protocol == "grpc" else client.get_inference_statistics(name)
    (stats,) = found["model_stats"]
    return stats


def count(stats: dict, *path: str) -> int:
    value = stats
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return int(value or 0)  # gRPC's JSON writes int64 as strings and leaves zeros out


# ---- model configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", MODELS)
def test_model_config(clients, protocol, name):
    version = load_served(name)
    found = config_of(protocol, clients[protocol], name)
    assert found["name"] == name
    from visionzoo.serving import config

    assert int(found["max_batch_size"]) == config.served_models()[name].batcher.max_batch_size  # models.yaml
    inputs = {tensor["name"]: tensor for tensor in found["input"]}
    model_input = version.inputs[0]["name"]
    assert set(inputs) == {model_input, f"{model_input}_uint8", f"{model_input}_bytes"}
    assert inputs[model_input]["data_type"] == "TYPE_FP32"
    assert inputs[f"{model_input}_bytes"]["data_type"] == "TYPE_STRING"
    assert [int(d) for d in inputs[model_input]["dims"]] == [int(d) for d in version.inputs[0]["shape"][1:]]
    outputs = {tensor["name"] for tensor in found["output"]}
    assert {o["name"] for o in version.outputs} <= outputs
    parameters = {key: value["string_value"] for key, value in found["parameters"].items()}
    for output, labels in version.labels.items():
        assert parameters[f"labels.{output}"] == ",".join(labels)
    spec = version.spec.to_dict()
    assert spec and all(parameters[f"preprocessing.{key}"] == str(value) for key, value in spec.items())
    # gRPC's JSON leaves enum defaults out (REJECT is 0)
    assert found["dynamic_batching"]["default_queue_policy"].get("timeout_action", "REJECT") == "REJECT"
    assert found["model_transaction_policy"].get("decoupled", False) is False  # one answer per request (streams too)


# ---- statistics -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_statistics_count_an_inference(clients, protocol):
    client = clients[protocol]
    before = stats_of(protocol, client, "bloodcell")
    infer_file(protocol, client)
    after = stats_of(protocol, client, "bloodcell")
    assert after["name"] == "bloodcell" and after["version"] == load_served("bloodcell").version
    assert count(after, "inference_count") >= count(before, "inference_count") + 1
    assert count(after, "execution_count") >= count(before, "execution_count") + 1
    stats = after["inference_stats"]
    assert count(stats, "success", "count") == count(before["inference_stats"], "success", "count") + 1
    for key in ("queue", "compute_infer"):
        assert count(stats, key, "count") >= 1 and count(stats, key, "ns") > 0, key
    assert count(stats, "success", "ns") > 0
    assert int(after["last_inference"]) > 0
    assert any(int(entry["batch_size"]) >= 1 for entry in after["batch_stats"])


def test_statistics_of_every_model(clients):
    found = clients["http"].get_inference_statistics()
    assert {stats["name"] for stats in found["model_stats"]} == set(MODELS)


# ---- repository -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_repository_index_lists_every_model_ready(clients, protocol):
    client = clients[protocol]
    index = client.get_model_repository_index(as_json=True)["models"] if protocol == "grpc" \
        else client.get_model_repository_index()
    states = {entry["name"]: entry for entry in index}
    assert set(states) == set(MODELS)
    for name, entry in states.items():
        assert entry["state"] == "READY", entry
        assert entry["version"] == load_served(name).version


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_and_unload_need_the_admin_token(clients, protocol):
    client = clients[protocol]
    refused = "StatusCode.UNAUTHENTICATED" if protocol == "grpc" else "401"
    for action in (client.unload_model, client.load_model):
        with pytest.raises(InferenceServerException) as caught:
            action("bloodcell")
        assert refused in str(caught.value.status()) and "admin token" in caught.value.message()
        with pytest.raises(InferenceServerException) as caught:
            action("bloodcell", headers={"authorization": "Bearer wrong"})
        assert refused in str(caught.value.status())
    assert client.is_model_ready("bloodcell")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unload_then_load(clients, protocol, served):
    client = clients[protocol]
    client.unload_model("bloodcell", headers=ADMIN)
    try:
        assert not client.is_model_ready("bloodcell")
        index = {e["name"]: e for e in (client.get_model_repository_index(as_json=True)["models"] if protocol == "grpc"
                                        else client.get_model_repository_index())}
        assert index["bloodcell"]["state"] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException) as caught:
            infer_file(protocol, client)
        assert ("StatusCode.UNAVAILABLE" if protocol == "grpc" else "503") in str(caught.value.status())
        assert client.is_model_ready("mura")  # the others keep serving
        assert httpx.get(f"{served.url}/v2/health/ready", timeout=10).status_code == 503
    finally:
        client.load_model("bloodcell", headers=ADMIN)
    assert client.is_model_ready("bloodcell")
    assert infer_file(protocol, client).as_numpy("probabilities").shape == (1, len(load_served("bloodcell").labels["probabilities"]))
    assert httpx.get(f"{served.url}/v2/health/ready", timeout=10).status_code == 200


# ---- grpc.health.v1 and reflection ------------------------------------------------------------


def test_grpc_health_check(served):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(served.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # the server registers the overall service "" and the OIP service (not one entry per model)
        for service in ("", "inference.GRPCInferenceService"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(service="bloodcell"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_reflection_lists_the_services(served):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(served.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (answer,) = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                    timeout=10))
        names = {service.name for service in answer.list_services_response.service}
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
        (answer,) = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService")]), timeout=10))
        assert answer.file_descriptor_response.file_descriptor_proto  # clients can discover the methods


# ---- Prometheus series ------------------------------------------------------------------------


def samples(text: str, name: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_per_model_version_and_protocol(served, clients):
    version = load_served("bloodcell").version
    response = httpx.post(f"{served.url}/bloodcell/predict", files=[("images", ("cell.jpg", golden_file("bloodcell")))],
                          timeout=60)
    assert response.status_code == 200, response.text
    infer_file("http", clients["http"])
    infer_file("grpc", clients["grpc"])
    bad = httpx.post(f"{served.url}/bloodcell/predict", files=[("images", ("broken.jpg", b"not an image"))], timeout=60)
    assert bad.status_code == 415
    time.sleep(0.5)
    text = served.metrics()
    success = samples(text, "visionzoo_inference_request_success_total")
    for protocol in ("http", "oip_rest", "oip_grpc"):
        key = (("model", "bloodcell"), ("protocol", protocol), ("version", version))
        assert success.get(key, 0) >= 1, (protocol, sorted(success))
    failure = samples(text, "visionzoo_inference_request_failure_total")
    assert failure.get((("model", "bloodcell"), ("protocol", "http"), ("reason", "unsupported_media"), ("version", version)), 0) >= 1
    durations = samples(text, "visionzoo_inference_request_duration_seconds_count")
    assert durations.get((("model", "bloodcell"), ("protocol", "oip_grpc"), ("version", version)), 0) >= 1
    for name in ("visionzoo_inference_count_total", "visionzoo_inference_exec_count_total",
                 "visionzoo_inference_queue_duration_seconds_count", "visionzoo_inference_compute_infer_duration_seconds_count",
                 "visionzoo_inference_batch_size_count"):
        assert samples(text, name).get((("model", "bloodcell"), ("version", version)), 0) >= 1, name
    assert (("model", "bloodcell"),) in samples(text, "visionzoo_inference_queue_items")


# ---- API documentation ------------------------------------------------------------------------


def test_docs_page_and_document(served):
    page = httpx.get(f"{served.url}/docs", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "swagger" in page.text.lower()
    document = httpx.get(f"{served.url}/docs.json", timeout=30)
    assert document.status_code == 200
    spec = json.loads(document.text)
    import visionzoo

    assert spec["info"]["title"] == "visionzoo" and spec["info"]["version"] == visionzoo.__version__
    assert "/bloodcell/predict" in spec["paths"]
    oip = httpx.get(f"{served.url}/docs/oip.json", timeout=30)
    assert oip.status_code == 200 and "/v2/models/{model}/infer" in oip.json()["paths"]
