"""Triton's system shared-memory extension: the region registry on real POSIX shared-memory objects
(made with tritonclient.utils.shared_memory, as clients make them), then inference through it over
OIP REST and gRPC in-process, with tritonclient's own encoders and client (tests/e2e covers the same
through `bentoml serve`)."""

from __future__ import annotations

import asyncio
import os
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.conftest import shipped_input_shape
from tests.serving.test_oip_transports import (
    GRPC_LIMIT,
    grpc_serving,
    http_infer,
    model_set,
    pixels,
    reference,
    rest_serving,
)
from visionzoo.serving import config
from visionzoo.serving.errors import AlreadyExists, Forbidden, InvalidInput, NotFound, TooLarge
from visionzoo.serving.oip.rest import HEADER_LENGTH
from visionzoo.serving.oip.shared_memory import MAX_REGIONS, SharedMemoryRef, SharedMemoryRegions
from visionzoo.serving.oip.shared_memory import reference as ref_of


@pytest.fixture
def objects():
    """make(byte_size) -> (key, handle) of a new shared-memory object; all destroyed afterwards."""
    made = []

    def make(byte_size: int):
        key = f"/visionzoo-test-{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(key.strip("/"), key, byte_size)
        made.append(handle)
        return key, handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


# ---------------------------------------------------------------- the registry


def test_regions_are_registered_read_written_and_unregistered(objects):
    key, handle = objects(64)
    shm.set_shared_memory_region(handle, [np.arange(16, dtype=np.float32)])
    regions = SharedMemoryRegions(enabled=True)
    regions.register("r", key, 8, 32)  # bytes 8..40 of the object: floats 2..9
    assert regions.status() == [{"name": "r", "key": key, "offset": 8, "byte_size": 32}]
    assert regions.status("r") == regions.status()
    region = regions.region("r")
    data = region.read(SharedMemoryRef("r", 16, offset=4), "input 'x'")
    np.testing.assert_array_equal(np.frombuffer(data, np.float32), [3, 4, 5, 6])
    region.write(SharedMemoryRef("r", 8, offset=24), np.array([-1, -2], np.float32).tobytes(), "output 'y'")
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [16])[8:10], [-1, -2])
    with pytest.raises(AlreadyExists, match="'r' is already registered"):
        regions.register("r", key, 0, 8)
    with pytest.raises(InvalidInput, match="do not fit in shared-memory region 'r' \\(32 bytes\\)"):
        region.read(SharedMemoryRef("r", 16, offset=24), "input 'x'")
    with pytest.raises(InvalidInput, match="output 'y' is 12 bytes; shared_memory_byte_size gives it 8"):
        region.write(SharedMemoryRef("r", 8), bytes(12), "output 'y'")
    regions.unregister("r")
    assert regions.status() == []
    with pytest.raises(InvalidInput, match="was unregistered"):
        region.read(SharedMemoryRef("r", 4), "input 'x'")  # a request that looked it up before the unregister
    with pytest.raises(NotFound, match="no system shared-memory region 'r'"):
        regions.region("r")
    regions.unregister("r")  # not registered: no error (Triton's behaviour)
    regions.register("a", key, 0, 64)
    regions.register("b", key, 0, 64)
    regions.unregister()  # every region
    assert regions.status() == []


@pytest.mark.parametrize(("key", "offset", "byte_size", "message"), [
    ("/../etc/passwd", 0, 8, "is not a POSIX shared-memory name"),
    ("a/b", 0, 8, "is not a POSIX shared-memory name"),
    ("/..", 0, 8, "is not a POSIX shared-memory name"),
    ("", 0, 8, "is not a POSIX shared-memory name"),
    (None, 0, 8, "is not a POSIX shared-memory name"),
    ("/visionzoo-test-never-made", 0, 8, "no shared-memory object '/visionzoo-test-never-made'; create it first"),
    ("OBJECT", 60, 8, "offset 60 + byte_size 8 is past the end of shared-memory object"),
    ("OBJECT", 0, 0, "byte_size must be at least 1"),
    ("OBJECT", -1, 8, "offset must be a non-negative integer"),
    ("OBJECT", 0, True, "byte_size must be a non-negative integer"),
])
def test_registering_a_bad_region_says_what_is_wrong(objects, key, offset, byte_size, message):
    made, _ = objects(64)
    regions = SharedMemoryRegions(enabled=True)
    with pytest.raises(InvalidInput, match=message.replace("(", "\\(").replace("+", "\\+")):
        regions.register("r", made if key == "OBJECT" else key, offset, byte_size)
    assert regions.status() == []


def test_a_shrunk_object_is_an_error_not_a_crash(objects):
    key, _ = objects(1024)
    regions = SharedMemoryRegions(enabled=True)
    regions.register("r", key, 0, 1024)
    os.truncate(f"/dev/shm{key}", 10)  # the client shrinks its object after registering it
    with pytest.raises(InvalidInput, match="ends before its 512 bytes .* made smaller after it was registered"):
        regions.region("r").read(SharedMemoryRef("r", 512), "input 'image'")
    regions.close()


def test_the_registry_is_bounded_and_off_unless_enabled(objects):
    key, _ = objects(8)
    regions = SharedMemoryRegions(enabled=True)
    for index in range(MAX_REGIONS):
        regions.register(f"r{index}", key, 0, 8)
    with pytest.raises(TooLarge, match=f"{MAX_REGIONS} shared-memory regions are registered"):
        regions.register("one-more", key, 0, 8)
    regions.close()
    off = SharedMemoryRegions(enabled=False)
    for call in (lambda: off.register("r", key, 0, 8), lambda: off.unregister(), lambda: off.region("r")):
        with pytest.raises(Forbidden, match="VISIONZOO_SYSTEM_SHARED_MEMORY=on enables it"):
            call()
    assert off.status() == []


@pytest.mark.parametrize(("parameters", "message"), [
    ({"shared_memory_region": "r"}, "needs both shared_memory_region and shared_memory_byte_size"),
    ({"shared_memory_byte_size": 8}, "needs both"),
    ({"shared_memory_offset": 8}, "shared_memory_offset without"),
    ({"shared_memory_region": "", "shared_memory_byte_size": 8}, "must be a region's name"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": -8}, "shared_memory_byte_size must be a non-negative integer"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 8, "shared_memory_offset": "0"}, "shared_memory_offset must be"),
])
def test_tensor_parameters_are_checked(parameters, message):
    with pytest.raises(InvalidInput, match=message):
        ref_of("input", "image", parameters)
    assert ref_of("output", "probabilities", {"binary_data": True}) is None
    assert ref_of("input", "image", {"shared_memory_region": "r", "shared_memory_byte_size": 8}) == SharedMemoryRef("r", 8, 0)


# ---------------------------------------------------------------- inference, in-process


@pytest.fixture(scope="module")
def enabled(models_dir):
    patch = pytest.MonkeyPatch()
    patch.setenv("VISIONZOO_SYSTEM_SHARED_MEMORY", "on")
    config.reload()
    yield
    patch.undo()
    config.reload()


@pytest.fixture(scope="module")
def rest(enabled):
    with rest_serving(model_set()) as client:
        yield client


@pytest.fixture(scope="module")
def grpc_client(enabled):
    with grpc_serving(model_set()) as address:
        client = grpcclient.InferenceServerClient(address)
        yield client
        client.close()


def test_rest_input_and_output_through_shared_memory(rest, objects):
    assert "system_shared_memory" in rest.get("/v2").json()["extensions"]
    batch = pixels(2, seed=3)
    expected = reference("bloodcell", batch)["probabilities"]
    in_key, in_handle = objects(batch.nbytes)
    out_key, out_handle = objects(expected.nbytes + 16)
    shm.set_shared_memory_region(in_handle, [batch])
    for name, key, size in (("in", in_key, batch.nbytes), ("out", out_key, expected.nbytes + 16)):
        answer = rest.post(f"/v2/systemsharedmemory/region/{name}/register", json={"key": key, "offset": 0, "byte_size": size})
        assert answer.status_code == 200, answer.text
    assert {r["name"] for r in rest.get("/v2/systemsharedmemory/status").json()} == {"in", "out"}
    assert rest.get("/v2/systemsharedmemory/region/in/status").json() == [
        {"name": "in", "key": in_key, "offset": 0, "byte_size": batch.nbytes}]
    image = httpclient.InferInput("image", list(batch.shape), "FP32")
    image.set_shared_memory("in", batch.nbytes)
    wanted = httpclient.InferRequestedOutput("probabilities")
    wanted.set_shared_memory("out", expected.nbytes, offset=16)
    answer = http_infer(rest, "bloodcell", [image], outputs=[wanted])
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert HEADER_LENGTH not in answer.headers and "data" not in output
    assert output["shape"] == list(expected.shape) and output["parameters"] == {
        "shared_memory_region": "out", "shared_memory_byte_size": expected.nbytes, "shared_memory_offset": 16}
    found = shm.get_contents_as_numpy(out_handle, np.float32, list(expected.shape), offset=16)
    np.testing.assert_allclose(found, expected, atol=1e-5)
    # A request that puts its input in shared memory and in the body, or names a region that is not there
    both = {"inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32", "data": [0.0],
                        "parameters": {"shared_memory_region": "in", "shared_memory_byte_size": batch.nbytes}}]}
    answer = rest.post("/v2/models/bloodcell/infer", json=both)
    assert answer.status_code == 400 and "in shared memory and also has data" in answer.json()["error"]
    assert rest.post("/v2/systemsharedmemory/region/in/unregister").status_code == 200
    answer = http_infer(rest, "bloodcell", [image])
    assert answer.status_code == 404 and "no system shared-memory region 'in'" in answer.json()["error"]
    small = httpclient.InferRequestedOutput("probabilities")
    small.set_shared_memory("out", expected.nbytes - 4)
    plain = httpclient.InferInput("image", list(batch.shape), "FP32").set_data_from_numpy(batch)
    answer = http_infer(rest, "bloodcell", [plain], outputs=[small])
    assert answer.status_code == 400 and f"is {expected.nbytes} bytes; shared_memory_byte_size gives it" in answer.json()["error"]
    big_key, _ = objects(80 << 20)  # not written: the pages are never touched
    assert rest.post("/v2/systemsharedmemory/region/big/register", json={"key": big_key, "byte_size": 80 << 20}).status_code == 200
    huge = httpclient.InferInput("image", [640, 96, 96, 3], "FP32")  # 70.8 MB, over the 64 MiB a body may carry
    huge.set_shared_memory("big", 640 * 96 * 96 * 3 * 4)
    answer = http_infer(rest, "bloodcell", [huge])
    assert answer.status_code == 413 and "VISIONZOO_MAX_REQUEST_BYTES" in answer.json()["error"]
    answer = rest.post("/v2/systemsharedmemory/region/x/register", content=b"not json")
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]
    assert rest.post("/v2/systemsharedmemory/unregister").status_code == 200
    assert rest.get("/v2/systemsharedmemory/status").json() == []


def test_grpc_moves_an_answer_larger_than_the_message_limit_through_shared_memory(grpc_client, objects):
    assert "system_shared_memory" in grpc_client.get_server_metadata().extensions
    batch = pixels(2, shipped_input_shape("mars_dual_unet"), seed=5)
    expected = reference("mars", batch)["probabilities"]
    assert expected.nbytes > GRPC_LIMIT  # would not fit in a gRPC answer of this server
    in_key, in_handle = objects(batch.nbytes)
    out_key, out_handle = objects(expected.nbytes)
    shm.set_shared_memory_region(in_handle, [batch])
    grpc_client.register_system_shared_memory("in", in_key, batch.nbytes)
    grpc_client.register_system_shared_memory("out", out_key, expected.nbytes)
    status = grpc_client.get_system_shared_memory_status(as_json=True)["regions"]
    assert set(status) == {"in", "out"} and status["in"]["key"] == in_key
    image = grpcclient.InferInput("image", list(batch.shape), "FP32")
    image.set_shared_memory("in", batch.nbytes)
    probabilities = grpcclient.InferRequestedOutput("probabilities")
    probabilities.set_shared_memory("out", expected.nbytes)
    result = grpc_client.infer("mars", [image], outputs=[probabilities, grpcclient.InferRequestedOutput("class_map")])
    output = result.get_output("probabilities")
    assert list(output.shape) == list(expected.shape)
    assert output.parameters["shared_memory_region"].string_param == "out"
    assert output.parameters["shared_memory_byte_size"].int64_param == expected.nbytes
    np.testing.assert_allclose(shm.get_contents_as_numpy(out_handle, np.float32, list(expected.shape)), expected, atol=1e-5)
    assert result.as_numpy("class_map").shape == expected.shape[:3]  # the other output, in the answer as usual
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.register_system_shared_memory("in", in_key, batch.nbytes)
    assert raised.value.status() == "StatusCode.ALREADY_EXISTS"
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.register_system_shared_memory("bad", "/../etc/passwd", 8)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT" and "POSIX shared-memory name" in raised.value.message()
    grpc_client.unregister_system_shared_memory()
    assert grpc_client.get_system_shared_memory_status(as_json=True) == {}
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.infer("mars", [image])
    assert raised.value.status() == "StatusCode.NOT_FOUND"


def test_the_benchmark_clients_get_answers(enabled):
    """`make bench`'s shared-memory and stream clients (benchmarks/loadgen.py) against this server:
    every request answered, the region unregistered and its object gone afterwards."""
    from benchmarks.loadgen import GrpcSharedMemoryTarget, GrpcTarget, closed_loop, one_stream

    with grpc_serving(model_set()) as address:
        batch = pixels(2)
        shared = GrpcSharedMemoryTarget(address, "bloodcell", "image", batch, outputs=["probabilities"])
        found = asyncio.run(closed_loop(shared, 1, 0.2, 1.0, 2))
        assert found.requests > 0 and found.errors == 0, found.error_kinds
        assert not os.path.exists(f"/dev/shm/{shared.name}")
        streamed = asyncio.run(one_stream(GrpcTarget(address, "bloodcell", "image", batch[:1]), 0.2, 1.0, in_flight=8))
        assert streamed.requests > 0 and streamed.errors == 0, streamed.error_kinds
