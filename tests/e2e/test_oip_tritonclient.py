"""The Open Inference Protocol of a real `bentoml serve`, with the reference clients
`tritonclient.grpc` and `tritonclient.http` (binary tensor data, their default): health, metadata,
inference for every model equal to ONNX Runtime on the same inputs (tensors and image files),
bad requests answered with the right status and a message while the server keeps serving, and
concurrent gRPC requests (or one stream's) batched by the runtime's adaptive batching.

One server for the whole module (the `served` fixture in conftest.py), with a 4 MiB OIP message
limit so that the oversized-message case stays small.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from visionzoo.serving import config
from visionzoo.serving.processing import (
    Limits,
    Upload,
    argmax_classes,
    class_map_from_tiles,
    decision_weights,
    decode_upload,
)
from visionzoo.serving.repository import ModelVersion, load_served

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOC_HEADING = "## Open Inference Protocol (HTTP and gRPC)"

MESSAGE_LIMIT = 4 * 1024 * 1024
PROTOCOLS = {"grpc": grpcclient, "http": httpclient}
NOT_FOUND = {"grpc": "StatusCode.NOT_FOUND", "http": "404"}
INVALID = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}
TOO_LARGE = {"grpc": "StatusCode.RESOURCE_EXHAUSTED", "http": "413"}
UNSUPPORTED = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "415"}


@pytest.fixture(scope="module")
def served_env() -> dict[str, str]:
    return {"VISIONZOO_GRPC_MAX_MESSAGE_BYTES": str(MESSAGE_LIMIT), "VISIONZOO_MAX_REQUEST_BYTES": str(MESSAGE_LIMIT),
            "VISIONZOO_SYSTEM_SHARED_MEMORY": "on"}


@dataclass
class Reference:
    """A served model's exported version, run directly by ONNX Runtime."""

    version: ModelVersion
    session: ort.InferenceSession

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        names = [o["name"] for o in self.version.outputs]
        feed = {self.version.inputs[0]["name"]: np.asarray(batch, dtype=np.float32)}
        return dict(zip(names, self.session.run(names, feed)))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.version.inputs[0]["shape"][1:])

    def golden_files(self) -> list[bytes]:
        names = self.version.metadata.get("golden", {}).get("files", [])
        return [(self.version.folder / "golden" / name).read_bytes() for name in names]


@pytest.fixture(scope="module")
def references(served) -> dict[str, Reference]:
    found = {}
    for name in config.served_models():
        version = load_served(name, models_dir=served.models_dir)
        found[name] = Reference(version, ort.InferenceSession(str(version.onnx_path), providers=["CPUExecutionProvider"]))
    return found


@pytest.fixture(scope="module")
def clients(served):
    grpc = grpcclient.InferenceServerClient(served.grpc_address)
    http = httpclient.InferenceServerClient(served.http_address, connection_timeout=120, network_timeout=120)
    yield {"grpc": grpc, "http": http}
    grpc.close()
    http.close()


def tensor(protocol: str, name: str, array: np.ndarray, datatype: str):
    item = PROTOCOLS[protocol].InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def files_tensor(protocol: str, files: list[bytes]):
    return tensor(protocol, "image_bytes", np.array(files, dtype=np.object_), "BYTES")


def pixels(reference: Reference, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, *reference.input_shape)).astype(np.float32)


def expect_error(call, status: str, message: str) -> None:
    with pytest.raises(InferenceServerException) as raised:
        call()
    assert raised.value.status() == status, raised.value
    assert message in raised.value.message(), raised.value


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_and_server_metadata(clients, protocol):
    client = clients[protocol]
    assert client.is_server_live() and client.is_server_ready()
    for name in config.served_models():
        assert client.is_model_ready(name)
    assert not client.is_model_ready("mura", model_version="999")
    metadata = client.get_server_metadata(as_json=True) if protocol == "grpc" else client.get_server_metadata()
    assert metadata["name"] == "visionzoo"
    assert {"binary_tensor_data", "classification", "model_configuration", "model_repository",
            "statistics", "system_shared_memory"} <= set(metadata["extensions"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(config.served_models()))
def test_model_metadata_lists_exactly_what_is_accepted(clients, references, protocol, name):
    version = references[name].version
    client = clients[protocol]
    metadata = client.get_model_metadata(name, as_json=True) if protocol == "grpc" else client.get_model_metadata(name)
    if protocol == "grpc":  # protobuf JSON writes int64 as strings
        for item in metadata["inputs"] + metadata["outputs"]:
            item["shape"] = [int(d) for d in item["shape"]]
    (source,) = version.inputs
    assert metadata["name"] == name and metadata["versions"] == [version.version]
    assert metadata["inputs"] == [source]  # the model's own input: always enough to build a request
    class_map = [{"name": "class_map", "datatype": "UINT8", "shape": [-1, -1, -1]}] if version.spec.tiling != "none" else []
    assert metadata["outputs"] == version.outputs + class_map


ENGINE_TOLERANCE = {"cam": 1e-3, "probabilities": 1e-4, "abnormal": 1e-4, "body_part": 1e-4}  # cam: divided by its peak


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(config.served_models()))
def test_tensor_inference_equals_onnxruntime(clients, references, protocol, name):
    reference, client = references[name], clients[protocol]
    batch = pixels(reference, 2 if name == "mars" else 3, seed=len(name))
    result = client.infer(name, [tensor(protocol, "image", batch, "FP32")])
    expected = reference.run(batch)
    for output, values in expected.items():
        # float32 sums in another order (the server's thread count and batch): the export's parity bound
        np.testing.assert_allclose(result.as_numpy(output), values, atol=ENGINE_TOLERANCE[output], rtol=1e-5)
    if name == "mars":
        learnable = reference.version.metadata.get("learnable_classes")
        np.testing.assert_array_equal(result.as_numpy("class_map"), argmax_classes(result.as_numpy("probabilities"), learnable,
                                                                                   decision_weights(reference.version.metadata)))
    # The same pixels as UINT8: the same answer.
    rounded = np.round(batch).astype(np.uint8)
    as_uint8 = client.infer(name, [tensor(protocol, "image_uint8", rounded, "UINT8")])
    for output, values in reference.run(rounded).items():
        np.testing.assert_allclose(as_uint8.as_numpy(output), values, atol=ENGINE_TOLERANCE[output], rtol=1e-5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(config.served_models()))
def test_image_files_are_decoded_like_the_bentoml_endpoints(clients, references, protocol, name):
    reference, client = references[name], clients[protocol]
    files = reference.golden_files()[:2]
    assert files, f"{name} has no golden files"
    decoded = [decode_upload(Upload(f"file{i}", data), reference.version.spec, Limits())[0] for i, data in enumerate(files)]
    result = client.infer(name, [files_tensor(protocol, files)])
    if name == "mars":
        version = reference.version
        expected = [class_map_from_tiles(reference.run(image.tiles)["probabilities"], image.height, image.width,
                                         version.metadata.get("learnable_classes"), version.spec.tile_overlap,
                                         decision_weights(version.metadata))
                    for image in decoded]
        class_map = result.as_numpy("class_map")
        assert class_map.shape == (len(files), decoded[0].height, decoded[0].width)
        assert result.as_numpy("probabilities") is None  # per tile: not returned for files
        # argmax may flip where two classes tie within float noise: allow a handful of pixels
        assert np.mean(class_map != np.stack(expected)) < 1e-3
    else:
        expected = reference.run(np.concatenate([image.tiles for image in decoded]))
        for output, values in expected.items():
            np.testing.assert_allclose(result.as_numpy(output), values, atol=ENGINE_TOLERANCE[output], rtol=1e-5)


RANKED = {"bloodcell": "probabilities", "mura": "body_part"}  # the served outputs with one score per class


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(RANKED))
def test_classification_extension_returns_the_top_classes_with_their_labels(clients, references, protocol, name):
    """tritonclient's `InferRequestedOutput(name, class_count=k)`, as Triton's image_client uses it."""
    reference, client, output = references[name], clients[protocol], RANKED[name]
    files = reference.golden_files()[:2]
    decoded = [decode_upload(Upload(f"file{i}", data), reference.version.spec, Limits())[0] for i, data in enumerate(files)]
    scores = reference.run(np.concatenate([image.tiles for image in decoded]))[output]
    labels = reference.version.labels[output]
    result = client.infer(name, [files_tensor(protocol, files)], outputs=[PROTOCOLS[protocol].InferRequestedOutput(output, class_count=2)])
    found = result.as_numpy(output)
    assert found.shape == (len(files), 2)
    for row, expected in zip(found, scores):
        value, index, label = row[0].decode().split(":")
        assert int(index) == int(expected.argmax()) and label == labels[int(index)]
        assert float(value) == pytest.approx(float(expected.max()), abs=1e-4)
    assert result.as_numpy("cam") is None  # only what was asked for
    if name == "mura":  # one probability, not a score per class: refused with the reason
        abnormal = PROTOCOLS[protocol].InferRequestedOutput("abnormal", class_count=1)
        expect_error(lambda: client.infer(name, [files_tensor(protocol, files)], outputs=[abnormal]), INVALID[protocol],
                     "it is one probability (of 'abnormal'), not a score per class")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_requests_get_a_status_and_a_message_and_the_server_keeps_serving(clients, references, protocol):
    client, bloodcell = clients[protocol], references["bloodcell"]
    good = pixels(bloodcell, 1, seed=7)
    expected = bloodcell.run(good)["probabilities"]

    short = tensor(protocol, "image", good, "FP32")
    short.set_shape([2, *good.shape[1:]])  # declares two images, carries one
    oversized = pixels(references["mura"], 8, seed=8)  # 4.8 MB > the 4 MiB limit
    cases = [
        (lambda: client.infer("nope", [tensor(protocol, "image", good, "FP32")]), NOT_FOUND, "unknown model 'nope'"),
        (lambda: client.infer("bloodcell", [tensor(protocol, "image", good, "FP32")], model_version="999"),
         NOT_FOUND, "has no version '999'"),
        (lambda: client.get_model_metadata("nope"), NOT_FOUND, "unknown model 'nope'"),
        (lambda: client.infer("bloodcell", [tensor(protocol, "image", np.zeros((1, 32, 32, 3), np.float32), "FP32")]),
         INVALID, "has shape [-1, 96, 96, 3], got [1, 32, 32, 3]"),
        (lambda: client.infer("bloodcell", [tensor(protocol, "image", good.astype(np.uint8), "UINT8")]),
         INVALID, "is FP32, got UINT8 (UINT8 pixels go in 'image_uint8')"),
        (lambda: client.infer("bloodcell", [short]), INVALID, "110592 bytes of data, but shape [2, 96, 96, 3] of FP32 needs 221184"),
        (lambda: client.infer("bloodcell", [tensor(protocol, "pixels", good, "FP32")]), INVALID, "has no input 'pixels'"),
        (lambda: client.infer("bloodcell", [files_tensor(protocol, [b"GIF89a broken"])]), UNSUPPORTED, "image_bytes[0]: "),
        (lambda: client.infer("mura", [tensor(protocol, "image", oversized, "FP32")]), TOO_LARGE,
         "larger than max" if protocol == "grpc" else f"the limit is {MESSAGE_LIMIT}"),
    ]
    for call, status, message in cases:
        expect_error(call, status[protocol], message)
        result = client.infer("bloodcell", [tensor(protocol, "image", good, "FP32")])
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tensors_pass_through_system_shared_memory(clients, references, protocol):
    """tritonclient's shared-memory calls, as its simple_*_shm_client examples make them: the input
    read from the region, the output written back into it, equal to ONNX Runtime's."""
    client, bloodcell, module = clients[protocol], references["bloodcell"], PROTOCOLS[protocol]
    batch = pixels(bloodcell, 4, seed=11)
    expected = bloodcell.run(batch)["probabilities"]
    name, key, size = f"e2e-{protocol}", f"/visionzoo-e2e-{protocol}-{os.getpid()}", batch.nbytes + expected.nbytes
    region = shm.create_shared_memory_region(name, key, size)
    try:
        shm.set_shared_memory_region(region, [batch])
        client.register_system_shared_memory(name, key, size)
        # one registry per server: what one protocol registered, the other sees
        assert name in clients["grpc"].get_system_shared_memory_status(as_json=True)["regions"]
        assert name in [r["name"] for r in clients["http"].get_system_shared_memory_status()]
        image = module.InferInput("image", list(batch.shape), "FP32")
        image.set_shared_memory(name, batch.nbytes)
        wanted = module.InferRequestedOutput("probabilities")
        wanted.set_shared_memory(name, expected.nbytes, offset=batch.nbytes)
        result = client.infer("bloodcell", [image], outputs=[wanted])
        output = result.get_output("probabilities")
        assert list(output["shape"] if protocol == "http" else output.shape) == list(expected.shape)
        found = shm.get_contents_as_numpy(region, np.float32, list(expected.shape), offset=batch.nbytes)
        np.testing.assert_allclose(found, expected, atol=ENGINE_TOLERANCE["probabilities"], rtol=1e-5)
        small = module.InferRequestedOutput("probabilities")
        small.set_shared_memory(name, expected.nbytes - 4, offset=batch.nbytes)
        expect_error(lambda: client.infer("bloodcell", [image], outputs=[small]), INVALID[protocol],
                     f"is {expected.nbytes} bytes; shared_memory_byte_size gives it {expected.nbytes - 4}")
        client.unregister_system_shared_memory(name)
        expect_error(lambda: client.infer("bloodcell", [image]), NOT_FOUND[protocol], f"no system shared-memory region {name!r}")
    finally:
        client.unregister_system_shared_memory(name)
        shm.destroy_shared_memory_region(region)


def engine_runs(metrics: str, model: str) -> float:
    """visionzoo_inference_exec_count_total for one model (engine runs, all versions)."""
    runs = 0.0
    for family in text_string_to_metric_families(metrics):
        if family.name == "visionzoo_inference_exec_count":
            runs += sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels.get("model") == model)
    return runs


def test_concurrent_grpc_requests_are_batched(served, clients, references):
    """32 clients, one image per request: the model's batcher merges them into larger batches, and
    every client still gets the answer for its own image."""
    bloodcell = references["bloodcell"]
    images = pixels(bloodcell, 32, seed=9)
    expected = bloodcell.run(images)["probabilities"]
    before = engine_runs(served.metrics(), "bloodcell")

    def client_loop(index: int) -> list[np.ndarray]:
        image = images[index : index + 1]
        answers = []
        for _ in range(8):
            result = clients["grpc"].infer("bloodcell", [tensor("grpc", "image", image, "FP32")], client_timeout=120)
            answers.append(result.as_numpy("probabilities"))
        return answers

    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(client_loop, range(32)))
    elapsed = time.perf_counter() - started
    for index, per_client in enumerate(answers):
        for answer in per_client:
            np.testing.assert_allclose(answer, expected[index : index + 1], atol=1e-5, rtol=1e-5)

    batches = engine_runs(served.metrics(), "bloodcell") - before
    assert 0 < batches < 256, f"256 requests took {batches:.0f} engine runs: nothing was batched"
    print(f"256 gRPC requests in {elapsed:.1f}s: {batches:.0f} engine runs")


def test_one_grpc_stream_is_answered_in_batches(served, references):
    """tritonclient's start_stream / async_stream_infer: 64 one-image requests on one stream are in
    flight together, so the batcher merges them, and every answer carries its request's id."""
    import queue

    bloodcell = references["bloodcell"]
    images = pixels(bloodcell, 64, seed=11)
    expected = bloodcell.run(images)["probabilities"]
    before = engine_runs(served.metrics(), "bloodcell")
    client, answers = grpcclient.InferenceServerClient(served.grpc_address), queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index in range(64):
            client.async_stream_infer("bloodcell", [tensor("grpc", "image", images[index : index + 1], "FP32")],
                                      request_id=str(index))
    finally:
        client.stop_stream()
        client.close()
    found = [answers.get_nowait() for _ in range(answers.qsize())]
    assert [error for _, error in found if error is not None] == [] and len(found) == 64
    for result, _ in found:
        index = int(result.get_response().id)
        np.testing.assert_allclose(result.as_numpy("probabilities")[0], expected[index], atol=1e-5, rtol=1e-5)
    batches = engine_runs(served.metrics(), "bloodcell") - before
    assert 0 < batches < 64, f"64 streamed requests took {batches:.0f} engine runs: nothing was batched"


def doc_examples(language: str) -> list[str]:
    """Code blocks of the README's OIP section."""
    for path in (REPO / "README.md",):
        text = path.read_text() if path.is_file() else ""
        if DOC_HEADING in text:
            section = text.split(DOC_HEADING, 1)[1]
            section = re.split(r"\n## ", section, maxsplit=1)[0]
            return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)
    raise AssertionError(f"no {DOC_HEADING!r} section in README.md")


def as_served(code: str, served) -> str:
    """The documented commands, pointed at this test's server and models instead of make serve's."""
    return (code.replace("localhost:3000", served.http_address).replace("localhost:8001", served.grpc_address)
            .replace("exported_models", str(served.models_dir)))


def test_documented_python_examples_run(served):
    examples = doc_examples("python")
    assert len(examples) >= 7
    for index, code in enumerate(examples):
        exec(compile(as_served(code, served), f"<OIP docs, python example {index + 1}>", "exec"), {"__name__": "example"})  # noqa: S102 - the documented code itself


def test_documented_curl_examples_run(served):
    examples = doc_examples("bash")
    assert examples
    for code in examples:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", as_served(code, served)], cwd=REPO,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert '"error"' not in done.stdout and done.stdout.strip(), done.stdout
        if "/infer" in code:
            assert json.loads(done.stdout)["outputs"][0]["name"] == "probabilities"
