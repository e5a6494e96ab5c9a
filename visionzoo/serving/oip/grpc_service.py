"""Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService`, served by a `grpc.aio`
server inside the BentoML worker (started and stopped by VisionZoo's lifecycle hooks).

Bindings: `tritonclient.grpc.service_pb2(_grpc)`, generated and maintained by NVIDIA from Triton's
`grpc_service.proto`, which is package `inference` and a superset of the OIP proto (same messages
and field numbers). Using them keeps server and client on one definition; nothing is hand-written.

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer.
The Triton-only RPCs (streaming, model config and statistics, repository, shared memory, trace,
logging) answer UNIMPLEMENTED with a message.

Inputs arrive either all in `raw_input_contents` (what tritonclient sends) or each in its typed
`contents`; outputs always go back in `raw_output_contents`, which is what `InferResult.as_numpy`
decodes. The server runs on the worker's event loop, so inference awaits the same
`VisionZoo.infer` as the HTTP endpoints and shares their adaptive batching.

Settings (visionzoo/serving/config.py): VISIONZOO_GRPC_PORT (8001; 0 disables gRPC) and
VISIONZOO_GRPC_MAX_MESSAGE_BYTES (64 MiB; both directions; a larger request is refused with
RESOURCE_EXHAUSTED by gRPC itself, -1 lifts the limit). SO_REUSEPORT is on, so several workers
can share the port.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from .. import config
from .backend import Backend, InferRequest, InferResponse, check_output_parameters
from .errors import InvalidArgument, NotFound, OIPError
from .models import RequestTensor
from .tensors import check_shape, from_contents, from_raw, to_raw

logger = logging.getLogger("visionzoo.oip")


def decode_infer_request(request: pb.ModelInferRequest) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input, in the order of 'inputs'")
    tensors = []
    for index, tensor in enumerate(request.inputs):
        shape = check_shape(tensor.name, list(tensor.shape))
        if "shared_memory_region" in tensor.parameters:
            raise InvalidArgument(f"input {tensor.name!r}: shared memory is not supported; send the data in the request")
        if raw:
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise InvalidArgument(
                    f"input {tensor.name!r} has typed contents while the request uses raw_input_contents; use one or the other")
            decode = functools.partial(from_raw, tensor.name, tensor.datatype, shape, raw[index])
        else:
            decode = functools.partial(from_contents, tensor.name, tensor.datatype, shape, tensor.contents)
        tensors.append(RequestTensor(tensor.name, tensor.datatype, shape, decode))
    for output in request.outputs:
        check_output_parameters(output.name, output.parameters)
    requested = [output.name for output in request.outputs] or None
    return InferRequest(request.model_name, request.model_version, request.id, tensors, requested)


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    for output in response.outputs:
        reply.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        reply.raw_output_contents.append(to_raw(output.data, output.datatype))
    return reply


def tensor_metadata(tensors: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(**t) for t in tensors]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """OIP RPCs over a Backend; OIPErrors become status codes with their messages."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def _answer(self, context: grpc.aio.ServicerContext, call, *args: Any) -> Any:
        try:
            return await call(*args)
        except OIPError as error:
            code, message = grpc.StatusCode[error.grpc_code], str(error)
        except Exception as error:
            logger.exception("OIP gRPC call failed")
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"
        await context.abort(code, message)  # raises: the RPC ends here

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=await self.backend.ready())

    async def ModelReady(self, request, context):
        """ready=false (not NOT_FOUND) for unknown models and versions: a probe wants a yes or no."""

        async def call():
            try:
                return pb.ModelReadyResponse(ready=await self.backend.model_ready(request.name, request.version))
            except NotFound:
                return pb.ModelReadyResponse(ready=False)

        return await self._answer(context, call)

    async def ServerMetadata(self, request, context):
        found = self.backend.server_metadata()
        return pb.ServerMetadataResponse(name=found["name"], version=found["version"], extensions=found["extensions"])

    async def ModelMetadata(self, request, context):
        async def call():
            found = self.backend.model_metadata(request.name, request.version)
            return pb.ModelMetadataResponse(
                name=found["name"], versions=found["versions"], platform=found["platform"],
                inputs=tensor_metadata(found["inputs"]), outputs=tensor_metadata(found["outputs"]))

        return await self._answer(context, call)

    async def ModelInfer(self, request, context):
        async def call():
            return encode_infer_response(await self.backend.infer(decode_infer_request(request)))

        return await self._answer(context, call)


IMPLEMENTED = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")


def _unimplemented(method: str):
    async def handler(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"{method} is not implemented by this server; implemented: {', '.join(IMPLEMENTED)}")

    handler.__name__ = method
    return handler


# The Triton-only RPCs answer UNIMPLEMENTED with a message (the generated base class raises
# NotImplementedError, which gRPC reports as an unexpected exception and logs as an error).
for _method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
    if _method.name not in IMPLEMENTED:
        setattr(InferenceServicer, _method.name, _unimplemented(_method.name))


class GRPCServer:
    """A grpc.aio server for one Backend on `port` (all interfaces)."""

    def __init__(self, backend: Backend, port: int, max_message_bytes: int) -> None:
        self.backend = backend
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
        server = grpc.aio.server(options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.backend), server)
        for address in (f"[::]:{self.port}", f"0.0.0.0:{self.port}"):  # IPv4 only where IPv6 is off
            try:
                server.add_insecure_port(address)
                break
            except RuntimeError:
                continue
        else:
            raise RuntimeError(f"cannot bind the OIP gRPC server to port {self.port} (VISIONZOO_GRPC_PORT)")
        await server.start()
        self.server = server
        logger.info("Open Inference Protocol gRPC on port %d (max message %d bytes)", self.port, self.max_message_bytes)

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let calls in flight finish for `grace` seconds, then cancel them."""
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
            logger.info("Open Inference Protocol gRPC on port %d stopped", self.port)


async def start_grpc(service: Any) -> GRPCServer | None:
    """Start gRPC for a VisionZoo instance on VISIONZOO_GRPC_PORT; None when the port is 0."""
    if logger.getEffectiveLevel() > logging.INFO and logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # bentoml serve leaves the root logger at WARNING: say where gRPC listens
    port = config.grpc_port()
    if port == 0:
        logger.info("OIP gRPC disabled (VISIONZOO_GRPC_PORT=0)")
        return None
    server = GRPCServer(Backend(service), port, config.grpc_max_message_bytes())
    await server.start()
    return server


async def stop_grpc(server: GRPCServer | None) -> None:
    if server is not None:
        await server.stop()
