"""A small load generator for inference servers: closed loop (N clients, each sends its next request
when the last one is answered) or open loop (requests at a fixed rate, whatever the answers do).

Clients send pre-built requests so the generator spends as little CPU as it can on the 2 cores it
shares with the server (the role Triton's perf_analyzer plays; it is not installable here):

- `GrpcTarget`: OIP `ModelInfer` over `grpc.aio` with tritonclient's generated protobufs; the
  request message is built once. Works against any OIP server (visionzoo, Seldon MLServer, Triton).
- `RestTarget`: OIP REST with the binary tensor data extension, over aiohttp; the body is built once.
- `MultipartTarget`: a multipart upload to a BentoML endpoint, over aiohttp.
- `GrpcSharedMemoryTarget`: `GrpcTarget` with the input in a system shared-memory region.
- `one_stream`: requests back to back on one gRPC ModelStreamInfer stream.

    target = GrpcTarget("127.0.0.1:8001", "bloodcell", "image", images)   # images: (N, H, W, C) float32
    result = asyncio.run(closed_loop(target, clients=32, warmup=3, duration=15))
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class LoadResult:
    """What one load setting measured (latencies of requests that started and ended in the window)."""

    clients: int
    images_per_request: int
    seconds: float
    requests: int
    errors: int
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def images_per_s(self) -> float:
        return self.requests_per_s * self.images_per_request

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict:
        found = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms", "error_latencies_ms")}
        errors = np.array(self.error_latencies_ms) if self.error_latencies_ms else np.array([np.nan])
        return {**found, "requests_per_s": round(self.requests_per_s, 1), "images_per_s": round(self.images_per_s, 1),
                "p50_ms": round(self.percentile(50), 2), "p90_ms": round(self.percentile(90), 2),
                "p99_ms": round(self.percentile(99), 2), "error_p99_ms": round(float(np.nanpercentile(errors, 99)), 2)}


class GrpcTarget:
    def __init__(self, address: str, model: str, input_name: str, images: np.ndarray, datatype: str = "FP32",
                 timeout: float = 60.0, outputs: list[str] | None = None) -> None:
        import grpc
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        self.address, self.images, self.timeout = address, images, timeout
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name=input_name, datatype=datatype, shape=list(images.shape))
        request.raw_input_contents.append(np.ascontiguousarray(images).tobytes())
        for name in outputs or []:  # none named: the server returns every output (Triton's rule)
            request.outputs.add(name=name)
        self.request = request
        self._grpc, self._pb_grpc = grpc, pb_grpc
        self.channel = None
        self.stub = None

    async def open(self) -> None:
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self.channel = self._grpc.aio.insecure_channel(self.address, options=options)
        self.stub = self._pb_grpc.GRPCInferenceServiceStub(self.channel)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def call(self) -> None:
        await self.stub.ModelInfer(self.request, timeout=self.timeout)

    @staticmethod
    def error_kind(error: Exception) -> str:
        code = getattr(error, "code", None)
        return code().name if callable(code) else type(error).__name__


class GrpcSharedMemoryTarget(GrpcTarget):
    """`GrpcTarget` with the input in a system shared-memory region (Triton's extension; the server
    must run with VISIONZOO_SYSTEM_SHARED_MEMORY=on): the region is made and registered by `open`,
    written once, and each request names it instead of carrying the tensor."""

    def __init__(self, address: str, model: str, input_name: str, images: np.ndarray, **kwargs) -> None:
        super().__init__(address, model, input_name, images, **kwargs)
        self.images = np.ascontiguousarray(images)
        self.name = f"loadgen-{model}-{id(self)}"
        self.region = None
        del self.request.raw_input_contents[:]
        parameters = self.request.inputs[0].parameters
        parameters["shared_memory_region"].string_param = self.name
        parameters["shared_memory_byte_size"].int64_param = self.images.nbytes

    async def open(self) -> None:
        import tritonclient.utils.shared_memory as shm
        from tritonclient.grpc import service_pb2 as pb

        await super().open()
        self.region = shm.create_shared_memory_region(self.name, "/" + self.name, self.images.nbytes)
        shm.set_shared_memory_region(self.region, [self.images])
        await self.stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
            name=self.name, key="/" + self.name, byte_size=self.images.nbytes), timeout=self.timeout)

    async def close(self) -> None:
        import tritonclient.utils.shared_memory as shm
        from tritonclient.grpc import service_pb2 as pb

        try:
            if self.stub is not None:
                await self.stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name=self.name),
                                                             timeout=self.timeout)
        finally:
            if self.region is not None:
                shm.destroy_shared_memory_region(self.region)
                self.region = None
            await super().close()


async def one_stream(target: GrpcTarget, warmup: float, duration: float, in_flight: int = 64,
                     images_per_request: int = 1) -> LoadResult:
    """Requests sent back to back on one ModelStreamInfer stream (tritonclient's `start_stream`), at
    most `in_flight` unanswered; the window's answers count, latency from send to answer."""
    from tritonclient.grpc import service_pb2 as pb

    await target.open()
    result = LoadResult(1, images_per_request, duration, 0, 0)
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)
    room = asyncio.Semaphore(in_flight)
    sent: dict[str, float] = {}

    async def requests():
        index = 0
        while time.perf_counter() < window[1]:
            await room.acquire()
            request = pb.ModelInferRequest()
            request.CopyFrom(target.request)
            request.id = str(index)
            sent[request.id] = time.perf_counter()
            index += 1
            yield request

    try:
        async for answer in target.stub.ModelStreamInfer(requests(), timeout=warmup + duration + 60):
            ended = time.perf_counter()
            began = sent.pop(answer.infer_response.id, ended)
            room.release()
            if window[0] <= began and ended <= window[1]:
                _record(result, "stream error" if answer.error_message else None, (ended - began) * 1000)
    finally:
        await target.close()
    return result


class _HttpTarget:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.session = None

    async def open(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def _post(self, url: str, data: bytes, headers: dict) -> None:
        async with self.session.post(url, data=data, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise HttpError(response.status)

    @staticmethod
    def error_kind(error: Exception) -> str:
        return f"HTTP {error.status}" if isinstance(error, HttpError) else type(error).__name__


class HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class RestTarget(_HttpTarget):
    """OIP REST, binary tensor data (what tritonclient.http sends by default)."""

    def __init__(self, url: str, model: str, input_name: str, images: np.ndarray, datatype: str = "FP32",
                 timeout: float = 60.0, outputs: list[str] | None = None) -> None:
        super().__init__(timeout)
        raw = np.ascontiguousarray(images).tobytes()
        request = {"inputs": [{"name": input_name, "datatype": datatype, "shape": list(images.shape),
                               "parameters": {"binary_data_size": len(raw)}}],
                   "parameters": {"binary_data_output": True}}
        if outputs:
            request["outputs"] = [{"name": name, "parameters": {"binary_data": True}} for name in outputs]
        header = json.dumps(request).encode()
        self.url = f"{url}/v2/models/{model}/infer"
        self.body = header + raw
        self.headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}

    async def call(self) -> None:
        await self._post(self.url, self.body, self.headers)


class MultipartTarget(_HttpTarget):
    """A multipart/form-data upload of files in the field `images` to a BentoML endpoint."""

    def __init__(self, url: str, route: str, files: list[tuple[str, bytes]], timeout: float = 60.0) -> None:
        super().__init__(timeout)
        boundary = "visionzoo-bench-boundary"
        parts = []
        for name, data in files:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
                         "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        self.body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        self.url = f"{url}{route}"
        self.headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    async def call(self) -> None:
        await self._post(self.url, self.body, self.headers)


async def closed_loop(target, clients: int, warmup: float, duration: float, images_per_request: int = 1) -> LoadResult:
    """`clients` workers calling back to back for warmup + duration seconds; the window's requests count."""
    await target.open()
    result = LoadResult(clients, images_per_request, duration, 0, 0)
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)

    async def worker() -> None:
        while True:
            began = time.perf_counter()
            if began >= window[1]:
                return
            try:
                await target.call()
                kind = None
            except Exception as error:  # noqa: BLE001 - counted by kind and reported
                kind = target.error_kind(error)
            ended = time.perf_counter()
            if window[0] <= began and ended <= window[1]:
                _record(result, kind, (ended - began) * 1000)

    try:
        await asyncio.gather(*(worker() for _ in range(clients)))
    finally:
        await target.close()
    return result


async def open_loop(target, rate: float, warmup: float, duration: float, images_per_request: int = 1,
                    max_outstanding: int = 4096) -> LoadResult:
    """Requests started at `rate` per second (Poisson arrivals), answered or not; what a busy
    production client population does, unlike a closed loop that slows down with the server."""
    await target.open()
    result = LoadResult(0, images_per_request, duration, 0, 0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)
    pending: set[asyncio.Task] = set()

    async def one(began: float) -> None:
        try:
            await target.call()
            kind = None
        except Exception as error:  # noqa: BLE001
            kind = target.error_kind(error)
        ended = time.perf_counter()
        if window[0] <= began < window[1]:
            _record(result, kind, (ended - began) * 1000)

    next_at = start
    try:
        while next_at < window[1]:
            now = time.perf_counter()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            if len(pending) >= max_outstanding:  # the generator's own bound: count as a client-side drop
                result.errors += 1
                result.error_kinds["client backlog full"] = result.error_kinds.get("client backlog full", 0) + 1
            else:
                task = asyncio.get_running_loop().create_task(one(next_at))
                pending.add(task)
                task.add_done_callback(pending.discard)
            next_at += rng.exponential(1.0 / rate)
        if pending:
            await asyncio.wait(pending, timeout=120)
    finally:
        await target.close()
    result.clients = 0
    return result


def _record(result: LoadResult, kind: str | None, latency_ms: float) -> None:
    if kind is None:
        result.requests += 1
        result.latencies_ms.append(latency_ms)
    else:
        result.errors += 1
        result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
        result.error_latencies_ms.append(latency_ms)


def answer_outputs(metadata: dict) -> list[str]:
    """The outputs a client asks for to get the answer: every output but the Grad-CAM map, which
    the engine computes only when it is requested (or when a request names no outputs)."""
    from visionzoo.serving.processing import CAM_OUTPUT

    return [output["name"] for output in metadata["outputs"] if output["name"] != CAM_OUTPUT]
