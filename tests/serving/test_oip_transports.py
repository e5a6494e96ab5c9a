"""OIP REST routes and the gRPC servicer in-process, with the real tritonclient encoders and
clients, over a real ModelSet (the service's pipeline, without BentoML): tests/e2e covers the
same through `bentoml serve`.

The set serves bloodcell and mars and refuses mura (its export is missing), as the service does when
a model cannot be loaded, so UNAVAILABLE is covered too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from starlette.testclient import TestClient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import shipped_input_shape
from visionzoo.preprocessing import prepare_image
from visionzoo.serving import config
from visionzoo.serving.oip.backend import Backend
from visionzoo.serving.oip.grpc_service import GRPCServer
from visionzoo.serving.oip.rest import HEADER_LENGTH, create_app
from visionzoo.serving.pipeline import ModelSet, ServedModel
from visionzoo.serving.repository import load_served

GRPC_LIMIT = 1 << 20


def model_set() -> ModelSet:
    """bloodcell and mars as configured; mura pointed at an export that does not exist."""
    server = config.server_settings()
    pool = ThreadPoolExecutor(2)
    served = config.served_models()
    models = {name: ServedModel(served[name], server, pool) for name in ("bloodcell", "mars")}
    models["mura"] = ServedModel(served["mura"].model_copy(update={"export": "no_such_export"}), server, pool)
    return ModelSet({name: models[name] for name in ("mura", "bloodcell", "mars")}, server, pool)


_sessions: dict = {}


def reference(name: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The exported model run directly with ONNX Runtime."""
    version = load_served(name)
    if name not in _sessions:
        _sessions[name] = ort.InferenceSession(str(version.onnx_path), providers=["CPUExecutionProvider"])
    names = [o["name"] for o in version.outputs]
    return dict(zip(names, _sessions[name].run(names, {version.inputs[0]["name"]: batch.astype(np.float32)})))


@contextlib.contextmanager
def rest_serving(models: ModelSet) -> Iterator[TestClient]:
    """`models` behind the OIP REST app, in-process; yields Starlette's test client."""
    with TestClient(create_app(lambda: Backend(models))) as client:
        client.portal.call(models.start)
        yield client
        client.portal.call(models.stop)  # the batchers' tasks end with the loop they run on


@pytest.fixture(scope="module")
def rest(models_dir):
    with rest_serving(model_set()) as client:
        yield client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def grpc_serving(models: ModelSet) -> Iterator[str]:
    """`models` served over OIP gRPC on a free port, on an event loop of its own; yields the address."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = free_port()
    asyncio.run_coroutine_threadsafe(models.start(), loop).result(120)
    server = GRPCServer(models, "127.0.0.1", port, GRPC_LIMIT, reuse_port=False)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
        asyncio.run_coroutine_threadsafe(models.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def grpc_address(models_dir):
    with grpc_serving(model_set()) as address:
        yield address


@pytest.fixture(scope="module")
def grpc_client(grpc_address):
    client = grpcclient.InferenceServerClient(grpc_address)
    yield client
    client.close()


def served_argmax(name: str, probabilities: np.ndarray) -> np.ndarray:
    """The per-pixel class the service answers: the weighted arg-max over the version's learnable classes."""
    from visionzoo.serving.processing import argmax_classes, decision_weights
    from visionzoo.serving.repository import load_served

    metadata = load_served(name).metadata
    return argmax_classes(probabilities, metadata.get("learnable_classes"), decision_weights(metadata))


def pixels(count: int, shape=(96, 96, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, *shape)).astype(np.float32)


def http_infer(rest: TestClient, model: str, inputs, outputs=None, headers=None, path=None):
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    if json_size is not None:
        headers = {**(headers or {}), HEADER_LENGTH: str(json_size)}
    return rest.post(path or f"/v2/models/{model}/infer", content=body, headers=headers)


def parse(response) -> httpclient.InferResult:
    assert response.status_code == 200, response.text
    return httpclient.InferenceServerClient.parse_response_body(
        response.content, header_length=response.headers.get(HEADER_LENGTH))


# ---------------------------------------------------------------- REST


def test_rest_server_routes(rest):
    extensions = rest.get("/v2").json()["extensions"]
    assert "binary_tensor_data" in extensions and "system_shared_memory" not in extensions  # off by default
    assert rest.get("/v2/health/live").json() == {"live": True}
    # mura is refused: the server is not ready (a load balancer should prefer replicas that serve
    # everything), while each model answers for itself.
    assert rest.get("/v2/health/ready").status_code == 503
    assert rest.get("/v2/models/bloodcell/ready").json() == {"name": "bloodcell", "ready": True}
    from visionzoo.serving.repository import load_served

    served = load_served("bloodcell").version
    assert rest.get(f"/v2/models/bloodcell/versions/{served}").json()["name"] == "bloodcell"


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v2/models/nope", 404, "unknown model 'nope'; served models: mura, bloodcell, mars"),
        ("GET", "/v2/models/nope/ready", 404, "unknown model 'nope'"),
        ("GET", "/v2/models/bloodcell/versions/9", 404, "has no version '9' loaded"),
        ("GET", "/v2/models/mura", 503, "model 'mura' is not available: mura: no exported versions of 'no_such_export'"),
        ("GET", "/v2/models/bloodcell/trace/setting", 404, "is not an Open Inference Protocol route served here"),
        ("POST", "/v2/models/nope/infer", 404, "unknown model 'nope'"),
        ("POST", "/v2/systemsharedmemory/region/r/register", 403, "VISIONZOO_SYSTEM_SHARED_MEMORY=on enables it"),
        ("GET", "/v2/cudasharedmemory/status", 404, "is not an Open Inference Protocol route served here"),
    ],
)
def test_rest_errors_are_json_with_a_status(rest, method, path, status, message):
    response = rest.request(method, path)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_rest_model_ready_false_for_a_refused_model(rest):
    response = rest.get("/v2/models/mura/ready")
    assert response.status_code == 503 and response.json() == {"name": "mura", "ready": False}


def test_rest_binary_infer_matches_onnxruntime(rest):
    batch = pixels(3)
    image = httpclient.InferInput("image", list(batch.shape), "FP32").set_data_from_numpy(batch)
    result = parse(http_infer(rest, "bloodcell", [image]))
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference("bloodcell", batch)["probabilities"], atol=1e-5)
    assert result.get_response()["model_version"] == load_served("bloodcell").version


def test_rest_json_infer_and_json_outputs(rest):
    batch = np.round(pixels(1, shipped_input_shape("mars_dual_unet")))
    image = httpclient.InferInput("image_uint8", list(batch.shape), "UINT8").set_data_from_numpy(batch.astype(np.uint8), binary_data=False)
    wanted = [httpclient.InferRequestedOutput("class_map", binary_data=False)]
    response = http_infer(rest, "mars", [image], outputs=wanted)
    assert response.headers["content-type"] == "application/json"
    result = parse(response)
    expected = served_argmax("mars", reference("mars", batch)["probabilities"])
    np.testing.assert_array_equal(result.as_numpy("class_map").reshape(expected.shape), expected)


def test_rest_files_and_gzip(rest):
    rng = np.random.default_rng(5)
    files = []
    for _ in range(2):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (80, 70, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        files.append(buffer.getvalue())
    elements = np.array(files, dtype=np.object_)
    image = httpclient.InferInput("image_bytes", [2], "BYTES").set_data_from_numpy(elements)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([image])
    response = rest.post("/v2/models/bloodcell/infer", content=gzip.compress(body),
                         headers={HEADER_LENGTH: str(json_size), "Content-Encoding": "gzip"})
    spec = load_served("bloodcell").spec
    expected = reference("bloodcell", np.stack([prepare_image(f, spec) for f in files]))["probabilities"]
    np.testing.assert_allclose(parse(response).as_numpy("probabilities"), expected, atol=1e-5)


def test_rest_malformed_bodies(rest):
    good = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 96, 96, 3],
                                   "parameters": {"binary_data_size": 110592}}]}).encode()
    raw = pixels(1).tobytes()
    cases = [
        (good + raw + b"xx", {HEADER_LENGTH: str(len(good))}, "2 bytes of binary data after the JSON header belong to no input"),
        (good + raw[:-4], {HEADER_LENGTH: str(len(good))}, "binary_data_size is 110592, only 110588 bytes"),
        (good + raw, {HEADER_LENGTH: "12x"}, "must be an integer"),
        (good + raw, {}, "needs the Inference-Header-Content-Length header"),
        (b'{"inputs": []}', {}, "non-empty 'inputs'"),
        (b"[" * 100_000 + b"]" * 100_000, {}, "nested too deeply"),
    ]
    for body, headers, message in cases:
        response = rest.post("/v2/models/bloodcell/infer", content=body, headers=headers)
        assert response.status_code == 400, (message, response.text)
        assert message in response.json()["error"]
    limit = config.server_settings().max_request_bytes
    response = rest.post("/v2/models/bloodcell/infer", content=b"0" * (limit + 1), headers={HEADER_LENGTH: "1"})
    assert response.status_code == 413 and f"the limit is {limit}" in response.json()["error"]


def assert_ranked(found: np.ndarray, scores: np.ndarray, labels: list[str]) -> None:
    """Triton's classification extension: per image the top classes, highest first, "value:index:label"."""
    assert found.shape[0] == scores.shape[0]
    for row, expected in zip(found, scores):
        entries = [(e.decode() if isinstance(e, bytes) else e).split(":") for e in row]
        assert [int(index) for _, index, _ in entries] == list(np.argsort(-expected, kind="stable")[:len(row)])
        assert [float(value) for value, _, _ in entries] == pytest.approx(sorted(expected, reverse=True)[:len(row)], abs=1e-5)
        assert [label for _, _, label in entries] == [labels[int(index)] for _, index, _ in entries]
        assert all(len(value.split(".")[1]) == 6 for value, _, _ in entries)  # C's %f, as Triton prints them


def test_rest_classification_extension_ranks_an_output(rest):
    batch = pixels(2, seed=3)
    image = httpclient.InferInput("image", list(batch.shape), "FP32").set_data_from_numpy(batch)
    scores = reference("bloodcell", batch)["probabilities"]
    labels = load_served("bloodcell").labels["probabilities"]
    for binary, count in ((True, 3), (False, 3), (True, 20)):
        wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=count)]
        result = parse(http_infer(rest, "bloodcell", [image], outputs=wanted))
        assert result.get_output("probabilities")["datatype"] == "BYTES"
        found = result.as_numpy("probabilities")
        assert found.shape == (2, min(count, 8))  # never more classes than the output has, as Triton
        assert_ranked(found, scores, labels)
    data = {"name": "image", "datatype": "FP32", "shape": [1, 96, 96, 3], "data": pixels(1).reshape(-1).tolist()}
    for count in (0, -2, "3", True, 2.5):
        response = rest.post("/v2/models/bloodcell/infer", json={
            "inputs": [data], "outputs": [{"name": "probabilities", "parameters": {"classification": count}}]})
        assert response.status_code == 400 and "a positive integer" in response.json()["error"], (count, response.text)
    response = rest.post("/v2/models/bloodcell/infer", json={
        "inputs": [data], "outputs": [{"name": "cam", "parameters": {"classification": 2}}]})
    assert response.status_code == 400, response.text
    assert "'cam' of model 'bloodcell' is FP32 [-1, 3, 3]" in response.json()["error"]
    assert "outputs that can be ranked: 'probabilities'" in response.json()["error"]


# ---------------------------------------------------------------- gRPC


def test_grpc_health_and_metadata(grpc_client):
    assert grpc_client.is_server_live() and not grpc_client.is_server_ready()  # mura is refused
    assert grpc_client.is_model_ready("mars") and not grpc_client.is_model_ready("mura")
    assert "binary_tensor_data" in grpc_client.get_server_metadata().extensions
    assert "system_shared_memory" not in grpc_client.get_server_metadata().extensions  # off by default
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.register_system_shared_memory("r", "/r", 8)
    assert raised.value.status() == "StatusCode.PERMISSION_DENIED" and "VISIONZOO_SYSTEM_SHARED_MEMORY" in raised.value.message()
    found = grpc_client.get_model_metadata("mars", as_json=True)
    assert [(t["name"], t["datatype"]) for t in found["inputs"]] == [("image", "FP32")]  # enough to build a request
    assert [t["name"] for t in found["outputs"]] == ["probabilities", "class_map"]
    config_found = grpc_client.get_model_config("mars", as_json=True)["config"]
    inputs = {t["name"]: t for t in config_found["input"]}
    assert set(inputs) == {"image", "image_uint8", "image_bytes"} and all(t["optional"] for t in inputs.values())
    assert config_found["parameters"]["labels.probabilities"]["string_value"].startswith("background,soil")


def test_grpc_raw_infer_matches_onnxruntime(grpc_client):
    batch = pixels(1, shipped_input_shape("mars_dual_unet"))  # one 128x256x5 FP32 answer is 640 KiB, under this server's 1 MiB limit
    image = grpcclient.InferInput("image", list(batch.shape), "FP32")
    image.set_data_from_numpy(batch)
    result = grpc_client.infer("mars", [image], request_id="r-1")
    expected = reference("mars", batch)["probabilities"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("class_map"), served_argmax("mars", expected))
    assert result.get_response().id == "r-1"


def test_grpc_typed_contents(grpc_address):
    batch = np.round(pixels(1))
    request = pb.ModelInferRequest(model_name="bloodcell")
    request.inputs.add(name="image_uint8", datatype="UINT8", shape=list(batch.shape),
                       contents=pb.InferTensorContents(uint_contents=batch.astype(np.uint32).reshape(-1).tolist()))
    with grpc.insecure_channel(grpc_address) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        # no output named: every output (Triton's rule), the model's own order, probabilities first
        assert [o.name for o in reply.outputs] == [o["name"] for o in load_served("bloodcell").outputs]
        assert reply.outputs[0].name == "probabilities" and list(reply.outputs[0].shape) == [1, 8]
        found = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(1, 8)
        np.testing.assert_allclose(found, reference("bloodcell", batch)["probabilities"], atol=1e-5)
        request.raw_input_contents.append(batch.astype(np.uint8).tobytes())
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "typed contents while the request uses raw_input_contents" in error.value.details()


def test_grpc_classification_extension_ranks_an_output(grpc_client, grpc_address):
    batch = pixels(3, seed=4)
    image = grpcclient.InferInput("image", list(batch.shape), "FP32")
    image.set_data_from_numpy(batch)
    wanted = [grpcclient.InferRequestedOutput("probabilities", class_count=2), grpcclient.InferRequestedOutput("cam")]
    result = grpc_client.infer("bloodcell", [image], outputs=wanted)
    assert result.get_output("probabilities").datatype == "BYTES" and result.as_numpy("probabilities").shape == (3, 2)
    assert_ranked(result.as_numpy("probabilities"), reference("bloodcell", batch)["probabilities"],
                  load_served("bloodcell").labels["probabilities"])
    assert result.as_numpy("cam").shape == (3, 3, 3)  # the other output as it is
    assert "classification" in grpc_client.get_server_metadata().extensions
    request = pb.ModelInferRequest(model_name="bloodcell", raw_input_contents=[batch[:1].tobytes()])
    request.inputs.add(name="image", datatype="FP32", shape=[1, 96, 96, 3])
    output = request.outputs.add(name="probabilities")
    output.parameters["classification"].string_param = "3"
    with grpc.insecure_channel(grpc_address) as channel, pytest.raises(grpc.RpcError) as error:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "a positive integer; got '3'" in error.value.details()


def test_grpc_stream_answers_every_request_and_goes_on_after_a_bad_one(grpc_address):
    """tritonclient's start_stream / async_stream_infer: every request answered once, its id echoed,
    a failing request answered with its error while the others are served."""
    import queue

    client = grpcclient.InferenceServerClient(grpc_address)
    answers: queue.Queue = queue.Queue()
    batch = pixels(40, seed=9)
    expected = reference("bloodcell", batch)["probabilities"]
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(40):
            image = grpcclient.InferInput("image", [1, 96, 96, 3], "FP32")
            image.set_data_from_numpy(batch[i : i + 1])
            client.async_stream_infer("nope" if i == 5 else "bloodcell", [image], request_id=f"r{i}",
                                      enable_empty_final_response=i % 2 == 0)
    finally:
        client.stop_stream()  # half-closes, then waits for the server to answer everything
        client.close()
    found = [answers.get_nowait() for _ in range(answers.qsize())]
    assert len(found) == 40
    errors = [error for _, error in found if error is not None]
    assert len(errors) == 1 and "unknown model 'nope'" in errors[0].message()
    results = {result.get_response().id: result for result, error in found if error is None}
    assert sorted(results) == sorted(f"r{i}" for i in range(40) if i != 5)
    for key, result in results.items():
        np.testing.assert_allclose(result.as_numpy("probabilities")[0], expected[int(key[1:])], atol=1e-5)
        final = result.get_response().parameters.get("triton_final_response")  # only when asked, as Triton
        assert (final is not None and final.bool_param) == (int(key[1:]) % 2 == 0), key


def test_grpc_stream_answers_a_malformed_message_on_the_stream(grpc_address):
    good = pb.ModelInferRequest(model_name="bloodcell", id="good", raw_input_contents=[pixels(1).tobytes()])
    good.inputs.add(name="image", datatype="FP32", shape=[1, 96, 96, 3])
    with grpc.insecure_channel(grpc_address) as channel:
        call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                     request_serializer=lambda message: message,
                                     response_deserializer=pb.ModelStreamInferResponse.FromString)
        replies = list(call(iter([b"\xff\xff\xff", good.SerializeToString()]), timeout=60))
    assert len(replies) == 2
    (bad,) = [r for r in replies if r.error_message]
    assert "not a valid inference.ModelInferRequest message" in bad.error_message
    (ok,) = [r for r in replies if not r.error_message]
    assert ok.infer_response.id == "good" and ok.infer_response.outputs[0].name == "probabilities"


def grpc_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as error:
        call()
    return error.value


def test_grpc_errors_then_still_serving(grpc_client):
    x = pixels(1)
    image = grpcclient.InferInput("image", [1, 96, 96, 3], "FP32")
    image.set_data_from_numpy(x)
    cases = [
        (lambda: grpc_client.infer("nope", [image]), "StatusCode.NOT_FOUND", "unknown model 'nope'"),
        (lambda: grpc_client.infer("mura", [image]), "StatusCode.UNAVAILABLE", "model 'mura' is not available"),
        (lambda: grpc_client.get_model_metadata("bloodcell", "99"), "StatusCode.NOT_FOUND", "has no version '99'"),
        (lambda: grpc_client.get_trace_settings("bloodcell"), "StatusCode.UNIMPLEMENTED", "TraceSetting is not implemented"),
    ]
    short = grpcclient.InferInput("image", [1, 96, 96, 3], "FP32")
    short.set_data_from_numpy(x)
    short.set_shape([2, 96, 96, 3])
    cases.append((lambda: grpc_client.infer("bloodcell", [short]), "StatusCode.INVALID_ARGUMENT", "110592 bytes of data"))
    big = grpcclient.InferInput("image", [12, 96, 96, 3], "FP32")
    big.set_data_from_numpy(pixels(12))
    cases.append((lambda: grpc_client.infer("bloodcell", [big]), "StatusCode.RESOURCE_EXHAUSTED", "larger than max"))
    for call, status, message in cases:
        error = grpc_error(call)
        assert error.status() == status and message in error.message(), (status, error)
    result = grpc_client.infer("bloodcell", [image])
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference("bloodcell", x)["probabilities"], atol=1e-5)


# ---------------------------------------------------------------- overload


def test_a_full_queue_refuses_before_decoding_anything_on_every_path(models_dir):
    """Under overload a refusal must cost next to nothing: the queue is checked before the request's
    files or tensor are decoded (a file that cannot decode and a tensor whose decoding fails are
    answered Overloaded, not with their own errors, and the tensor is never read)."""
    from visionzoo.serving.errors import Overloaded, TooLarge
    from visionzoo.serving.oip.backend import InferRequest
    from visionzoo.serving.oip.models import RequestTensor
    from visionzoo.serving.processing import Upload

    server = config.server_settings()
    pool = ThreadPoolExecutor(1)
    model = ServedModel(config.served_models()["bloodcell"], server, pool)
    models = ModelSet({"bloodcell": model}, server, pool)
    read = []

    def decode():
        read.append(True)
        raise AssertionError("decoded although the queue was full")

    async def scenario():
        await models.start()
        batcher = model.batcher
        batcher._queued_items = batcher.settings.max_queue_size  # as if that many items were waiting
        try:
            with pytest.raises(Overloaded, match="at capacity"):
                await model.answer("predict", [Upload("cell.png", b"not an image")], {})
            tensor = RequestTensor("image", "FP32", (2, 96, 96, 3), decode, 2 * 96 * 96 * 3 * 4)
            with pytest.raises(Overloaded, match="at capacity"):
                await Backend(models).infer(InferRequest("bloodcell", inputs=[tensor]), "oip_grpc")
            # a request no retry can make pass is told why (413), not to retry (503)
            too_many = server.max_images + 1
            with pytest.raises(TooLarge, match="too many images"):
                await model.answer("predict", [Upload(f"{i}.png", b"x") for i in range(too_many)], {})
            tensor = RequestTensor("image", "FP32", (too_many, 96, 96, 3), lambda: np.zeros((too_many, 96, 96, 3), np.float32),
                                   too_many * 96 * 96 * 3 * 4)
            with pytest.raises(TooLarge, match="limit per request"):
                await Backend(models).infer(InferRequest("bloodcell", inputs=[tensor]), "oip_grpc")
        finally:
            batcher._queued_items = 0
        rejected = batcher.stats.rejected_count
        await models.stop()
        return rejected

    assert asyncio.run(scenario()) == 2 and read == []
    pool.shutdown()


def test_room_is_held_from_the_door_so_no_decode_work_is_thrown_away(models_dir):
    """Two uploads arrive together for the queue's last place: one is let in and served, the other is
    refused at the door without being decoded (checking room without holding it let both decode and
    then refused one, wasting its decode work under a flood). A request that fails to decode gives
    its place back."""
    from visionzoo.serving.errors import Overloaded, UnsupportedMedia
    from visionzoo.serving.processing import Upload

    server = config.server_settings()
    pool = ThreadPoolExecutor(2)
    model = ServedModel(config.served_models()["bloodcell"], server, pool)
    models = ModelSet({"bloodcell": model}, server, pool)
    buffer = io.BytesIO()
    Image.fromarray(np.full((120, 110, 3), 180, np.uint8)).save(buffer, "PNG")
    cell = Upload("cell.png", buffer.getvalue())
    decoded = []
    decode = model.decode

    async def counting_decode(uploads, slot, keep_source=False):
        decoded.append(len(uploads))
        await asyncio.sleep(0.05)  # both requests are past the door before either is queued
        return await decode(uploads, slot, keep_source)

    async def scenario():
        await models.start()
        model.decode = counting_decode
        batcher = model.batcher
        others = batcher.settings.max_queue_size - 1  # as if that many items were waiting
        batcher._queued_items = others
        try:
            answers = await asyncio.gather(model.answer("predict", [cell], {}), model.answer("predict", [cell], {}),
                                           return_exceptions=True)
            assert batcher._queued_items == others
            with pytest.raises(UnsupportedMedia):
                await model.answer("predict", [Upload("bad.png", b"not an image")], {})
            assert batcher._queued_items == others  # the failed request's place is free again
        finally:
            batcher._queued_items = 0
        await models.stop()
        return answers

    answers = asyncio.run(scenario())
    served = [a for a in answers if isinstance(a, dict)]
    refused = [a for a in answers if isinstance(a, Overloaded)]
    assert len(served) == 1 and len(refused) == 1 and "at capacity" in str(refused[0])
    assert decoded == [1, 1]  # the served upload and the undecodable one; the refused one never
    pool.shutdown()


def test_grpc_unavailable_carries_the_retry_pushback_of_http_retry_after(grpc_address):
    """mura is not loaded here: UNAVAILABLE, with gRPC's retry pushback trailer in milliseconds (what
    HTTP's Retry-After: 1 says), so a client with a retry policy waits instead of retrying at once."""
    request = pb.ModelInferRequest(model_name="mura")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 320, 320, 1])
    request.raw_input_contents.append(np.zeros((1, 320, 320, 1), np.float32).tobytes())
    with grpc.insecure_channel(grpc_address) as channel, pytest.raises(grpc.RpcError) as error:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(error.value.trailing_metadata())["grpc-retry-pushback-ms"] == "1000"
    with grpc.insecure_channel(grpc_address) as channel, pytest.raises(grpc.RpcError) as error:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(pb.ModelInferRequest(model_name="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "grpc-retry-pushback-ms" not in dict(error.value.trailing_metadata())  # retrying would not help
