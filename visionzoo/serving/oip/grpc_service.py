"""Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService`, on a `grpc.aio` server in
the BentoML worker (started and stopped by the service's lifecycle hooks), beside the standard
`grpc.health.v1.Health` service and server reflection.

Bindings: `tritonclient.grpc.service_pb2(_grpc)`, generated and maintained by NVIDIA from Triton's
`grpc_service.proto`, which is package `inference` and a superset of the OIP proto (same messages
and field numbers). Using them keeps server and client on one definition; nothing is hand-written.

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig,
ModelStatistics, RepositoryIndex, RepositoryModelLoad / Unload (admin token), ModelInfer and
ModelStreamInfer (Triton's bidirectional stream, tritonclient's `start_stream` / `async_stream_infer`:
each request is answered on the stream as soon as it is done, in completion order, its `id` echoed;
a request that fails answers `error_message` and the stream goes on), and SystemSharedMemoryStatus /
Register / Unregister (oip/shared_memory.py; off unless VISIONZOO_SYSTEM_SHARED_MEMORY=on). The other
Triton RPCs (CUDA shared memory, trace, logging) answer UNIMPLEMENTED with a message.

Inputs arrive either all in `raw_input_contents` (what tritonclient sends) or each in its typed
`contents`, or in a registered shared-memory region; outputs go back in `raw_output_contents`, which
is what `InferResult.as_numpy` decodes (an empty entry for an output written to shared memory). A requested output with the `classification` parameter (Triton's classification extension,
tritonclient's `InferRequestedOutput(name, class_count=k)`) comes back as BYTES [N, k]: each image's
top classes as "value:index:label". The server runs on the worker's event loop; inference awaits the same `ServedModel.infer`
as the HTTP endpoints and joins the same batches.

Binding: the interface `bentoml serve --host` gave (or VISIONZOO_GRPC_HOST), port VISIONZOO_GRPC_PORT
(0 disables gRPC). The port is not shared (SO_REUSEPORT off), so a second server on the same port
fails to start instead of silently taking half the traffic (the worker stops the whole `bentoml serve`
rather than letting circus restart it forever); VISIONZOO_GRPC_REUSE_PORT=on shares it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import inspect
import logging
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from .. import config, launcher
from ..errors import Forbidden, ServingError, Unauthenticated
from ..pipeline import ModelSet
from .backend import Backend, InferRequest, InferResponse, classification_count
from .errors import InvalidArgument, NotFound
from .models import RequestTensor
from .shared_memory import reference
from .tensors import check_shape, element_count, from_contents, from_raw, to_raw

logger = logging.getLogger("visionzoo.oip")

SERVICE_NAME = "inference.GRPCInferenceService"
OPEN_METHODS = {"ServerLive", "ServerReady", "ModelReady"}  # health stays open, like /livez and /readyz
ADMIN_METHODS = {"RepositoryModelLoad", "RepositoryModelUnload"}
# gRPC's server pushback (gRFC A6, client-side retries): a client whose channel has a retry policy
# waits this many milliseconds before trying again, as an HTTP client does after Retry-After.
RETRY_PUSHBACK = "grpc-retry-pushback-ms"
# Requests of one ModelStreamInfer stream in flight at once (read, not yet answered): the stream stops
# reading past it, so a client that sends faster than the model answers holds the server's memory to
# this many requests; the rest waits on the client's side under HTTP/2 flow control. Measured: 2,000
# Mars tiles (128 KB each) sent on one stream whose answers were not read for 10 s: the server's RSS
# rose 905 -> 945 MiB (the model at work), the client held the rest.
STREAM_WINDOW = 32


class PortTaken(RuntimeError):
    """The gRPC address cannot be bound (another process holds the port, or binding is not allowed)."""


def decode_infer_request(request: pb.ModelInferRequest) -> InferRequest:
    raw = list(request.raw_input_contents)
    inputs = list(request.inputs)
    shared = [reference("input", t.name, parameter_values(t.parameters)) if t.parameters else None for t in inputs]
    carried = sum(ref is None for ref in shared)  # inputs whose data is in the request (raw contents follow them)
    if raw and len(raw) != carried:
        besides = f" (not counting {len(inputs) - carried} in shared memory)" if carried != len(inputs) else ""
        raise InvalidArgument(f"{len(raw)} raw_input_contents for {carried} inputs{besides}; send one per input, "
                              "in the order of 'inputs'")
    tensors, contents = [], iter(raw)
    for tensor, ref in zip(inputs, shared):
        name, datatype = tensor.name, tensor.datatype
        shape = check_shape(name, list(tensor.shape))
        typed = tensor.HasField("contents") and tensor.contents.ListFields()
        if ref is not None:
            if typed:
                raise InvalidArgument(f"input {name!r} is in shared memory and also has contents; use one or the other")
            tensors.append(RequestTensor(name, datatype, shape, None, ref.byte_size, ref))
            continue
        if raw:
            if typed:
                raise InvalidArgument(
                    f"input {name!r} has typed contents while the request uses raw_input_contents; use one or the other")
            data = next(contents)
            decode = functools.partial(from_raw, name, datatype, shape, data)
            nbytes = len(data)
        else:
            decode = functools.partial(from_contents, name, datatype, shape, tensor.contents)
            nbytes = 8 * element_count(shape)
        tensors.append(RequestTensor(name, datatype, shape, decode, nbytes))
    requested, classification, in_shared_memory = None, {}, {}
    if request.outputs:
        for output in request.outputs:
            parameters = parameter_values(output.parameters)
            count = classification_count(output.name, parameters)
            if count is not None:
                classification[output.name] = count
            ref = reference("output", output.name, parameters)
            if ref is not None:
                in_shared_memory[output.name] = ref
        requested = [output.name for output in request.outputs]
    return InferRequest(request.model_name, request.model_version, request.id, tensors, requested, classification,
                        in_shared_memory)


def parameter_values(parameters) -> dict[str, Any]:
    """A protobuf map of InferParameter -> {key: the value of whichever field is set (None: none)}."""
    return {key: getattr(value, value.WhichOneof("parameter_choice")) if value.WhichOneof("parameter_choice") else None
            for key, value in parameters.items()}


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    for output in response.outputs:
        tensor = reply.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if output.shared_memory is not None:  # written to the client's region: where, and no data
            for key, value in output.shared_memory.items():
                setattr(tensor.parameters[key], "string_param" if isinstance(value, str) else "int64_param", value)
            reply.raw_output_contents.append(b"")  # keeps raw_output_contents[i] the data of outputs[i]
            continue
        reply.raw_output_contents.append(to_raw(output.data, output.datatype))
    return reply


def tensor_metadata(tensors: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(**t) for t in tensors]


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def _bearer(context: grpc.aio.ServicerContext) -> str:
    metadata = dict(context.invocation_metadata() or ())
    given = metadata.get("authorization", "")
    if given.lower().startswith("bearer "):
        return given[7:]
    return metadata.get("x-api-key", "")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """OIP RPCs over a Backend; ServingErrors become status codes with their messages."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def _answer(self, context: grpc.aio.ServicerContext, method: str, call, *args: Any) -> Any:
        trailers: tuple[tuple[str, str], ...] = ()
        try:
            self._authorize(context, method)
            return await call(*args)
        except Exception as error:  # noqa: BLE001 - every failure answers a status (failure() logs the server's own)
            code, message = failure(method, error)
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:  # HTTP's Retry-After, in the form gRPC's retry policies obey
                trailers = ((RETRY_PUSHBACK, str(retry_after * 1000)),)
        await context.abort(code, message, trailers)  # raises: the RPC ends here

    @staticmethod
    def _authorize(context: grpc.aio.ServicerContext, method: str) -> None:
        settings = config.server_settings()
        if method in ADMIN_METHODS:
            token = _secret(settings.admin_token)
            if token is None:
                raise Forbidden("the repository API is disabled; set VISIONZOO_ADMIN_TOKEN to enable it")
            if not hmac.compare_digest(_bearer(context).encode(), token.encode()):
                raise Unauthenticated("missing or wrong admin token (metadata authorization: Bearer <token>)")
            return
        key = _secret(settings.api_key)
        if key is not None and method not in OPEN_METHODS and not hmac.compare_digest(_bearer(context).encode(), key.encode()):
            raise Unauthenticated("missing or wrong API key (metadata authorization: Bearer <key>, or x-api-key)")

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.backend.ready())

    async def ModelReady(self, request, context):
        """ready=false (not NOT_FOUND) for unknown models and versions: a probe wants a yes or no."""

        async def call():
            try:
                return pb.ModelReadyResponse(ready=self.backend.model_ready(request.name, request.version))
            except NotFound:
                return pb.ModelReadyResponse(ready=False)

        return await self._answer(context, "ModelReady", call)

    async def ServerMetadata(self, request, context):
        async def call():
            found = self.backend.server_metadata()
            return pb.ServerMetadataResponse(name=found["name"], version=found["version"], extensions=found["extensions"])

        return await self._answer(context, "ServerMetadata", call)

    async def ModelMetadata(self, request, context):
        async def call():
            found = self.backend.model_metadata(request.name, request.version)
            return pb.ModelMetadataResponse(
                name=found["name"], versions=found["versions"], platform=found["platform"],
                inputs=tensor_metadata(found["inputs"]), outputs=tensor_metadata(found["outputs"]))

        return await self._answer(context, "ModelMetadata", call)

    async def ModelConfig(self, request, context):
        async def call():
            found = self.backend.model_config(request.name, request.version)
            return pb.ModelConfigResponse(config=json_format.ParseDict(found, model_config_pb2.ModelConfig()))

        return await self._answer(context, "ModelConfig", call)

    async def ModelStatistics(self, request, context):
        async def call():
            found = self.backend.statistics(request.name, request.version)
            return json_format.ParseDict({"model_stats": found}, pb.ModelStatisticsResponse())

        return await self._answer(context, "ModelStatistics", call)

    async def RepositoryIndex(self, request, context):
        async def call():
            return json_format.ParseDict({"models": self.backend.repository_index()}, pb.RepositoryIndexResponse())

        return await self._answer(context, "RepositoryIndex", call)

    async def RepositoryModelLoad(self, request, context):
        async def call():
            await self.backend.models[request.model_name].swap()
            return pb.RepositoryModelLoadResponse()

        return await self._answer(context, "RepositoryModelLoad", call)

    async def RepositoryModelUnload(self, request, context):
        async def call():
            await self.backend.models[request.model_name].unload()
            return pb.RepositoryModelUnloadResponse()

        return await self._answer(context, "RepositoryModelUnload", call)

    async def SystemSharedMemoryStatus(self, request, context):
        async def call():
            reply = pb.SystemSharedMemoryStatusResponse()
            for region in self.backend.shared_memory.status(request.name):
                reply.regions[region["name"]].CopyFrom(pb.SystemSharedMemoryStatusResponse.RegionStatus(**region))
            return reply

        return await self._answer(context, "SystemSharedMemoryStatus", call)

    async def SystemSharedMemoryRegister(self, request, context):
        async def call():
            self.backend.shared_memory.register(request.name, request.key, request.offset, request.byte_size)
            return pb.SystemSharedMemoryRegisterResponse()

        return await self._answer(context, "SystemSharedMemoryRegister", call)

    async def SystemSharedMemoryUnregister(self, request, context):
        async def call():
            self.backend.shared_memory.unregister(request.name)
            return pb.SystemSharedMemoryUnregisterResponse()

        return await self._answer(context, "SystemSharedMemoryUnregister", call)

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        return encode_infer_response(await self.backend.infer(decode_infer_request(request), "oip_grpc"))

    async def ModelInfer(self, request, context):
        return await self._answer(context, "ModelInfer", self._infer, request)

    async def ModelStreamInfer(self, request_iterator, context):
        """Each request of the stream is inferred as ModelInfer does, concurrently (so they batch),
        at most STREAM_WINDOW at a time; answers come back in completion order."""
        try:
            self._authorize(context, "ModelStreamInfer")
        except ServingError as error:
            await context.abort(*failure("ModelStreamInfer", error))
        window = asyncio.Semaphore(STREAM_WINDOW)
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def answer(request) -> None:
            await answers.put(await self._stream_answer(request))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await window.acquire()
                    task = asyncio.ensure_future(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.wait(set(tasks))
            finally:
                answers.put_nowait(None)  # every request answered, or the stream broke

        reader = asyncio.ensure_future(read())
        try:
            while (reply := await answers.get()) is not None:
                yield reply
                window.release()
            await reader  # a failed read ends the RPC with its error
        finally:
            for task in (reader, *tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, *tasks, return_exceptions=True)

    async def _stream_answer(self, request) -> pb.ModelStreamInferResponse:
        """One stream request's answer: the inference, or its error as `error_message` (with the id)."""
        if isinstance(request, _Malformed):
            return pb.ModelStreamInferResponse(error_message=request.message)
        try:
            return pb.ModelStreamInferResponse(infer_response=_final(request, await self._infer(request)))
        except Exception as error:  # noqa: BLE001 - one request's fault must not end the other requests' stream
            _, message = failure("ModelStreamInfer", error)
        echo = pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version, id=request.id)
        return pb.ModelStreamInferResponse(error_message=message, infer_response=_final(request, echo))


def failure(method: str, error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and message an RPC answers for `error`; the server's own faults are logged."""
    if isinstance(error, ServingError):
        code = grpc.StatusCode[error.grpc_code]
        if code == grpc.StatusCode.INTERNAL:
            logger.error("OIP gRPC %s: %s", method, error, exc_info=error.__cause__)
        return code, str(error)
    logger.error("OIP gRPC %s failed", method, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"


def _final(request, reply: pb.ModelInferResponse) -> pb.ModelInferResponse:
    """Triton's final-response flag, for clients that ask for it (tritonclient's
    `async_stream_infer(..., enable_empty_final_response=True)`): every answer here is its request's
    last, so it carries `triton_final_response: true` and no empty response follows."""
    asked = request.parameters.get("triton_enable_empty_final_response")
    if asked is not None and asked.bool_param:
        reply.parameters["triton_final_response"].bool_param = True
    return reply


IMPLEMENTED = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
               "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload", "ModelInfer",
               "ModelStreamInfer", "SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
               "SystemSharedMemoryUnregister")


def _unimplemented(method: str):
    async def handler(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"{method} is not implemented by this server; implemented: {', '.join(IMPLEMENTED)}")

    handler.__name__ = method
    return handler


# The other Triton RPCs answer UNIMPLEMENTED with a message (the generated base class raises
# NotImplementedError, which gRPC reports as an unexpected exception and logs as an error).
for _method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
    if _method.name not in IMPLEMENTED:
        setattr(InferenceServicer, _method.name, _unimplemented(_method.name))


class _Malformed:
    """Stands in for a request whose bytes are not the method's protobuf message."""

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(deserialize):
    kind = getattr(getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None), "full_name", "request")

    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as error:  # noqa: BLE001 - protobuf's DecodeError (and friends, by implementation)
            return _Malformed(f"the request is not a valid {kind} message ({type(error).__name__}: {error})")

    return parse


class MalformedRequests(grpc.aio.ServerInterceptor):
    """Bytes that do not parse as the method's request message answer INVALID_ARGUMENT with a message
    (on ModelStreamInfer, an answer on the stream whose error_message says so).

    grpc.aio itself reports a failed request deserialization as UNKNOWN and logs it at ERROR with a
    traceback: a client's mistake would look like a server fault."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is not None and details.method == f"/{SERVICE_NAME}/ModelStreamInfer":
            # a message that does not parse is answered on the stream (error_message); other streaming
            # RPCs (server reflection) keep their own handling
            return grpc.stream_stream_rpc_method_handler(handler.stream_stream,
                                                         request_deserializer=_tolerant(handler.request_deserializer),
                                                         response_serializer=handler.response_serializer)
        if (handler is None or handler.request_streaming or handler.response_streaming
                or handler.unary_unary is None or handler.request_deserializer is None):
            return handler
        behaviour = handler.unary_unary

        async def guarded(request, context):
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            answer = behaviour(request, context)
            return await answer if inspect.isawaitable(answer) else answer

        return grpc.unary_unary_rpc_method_handler(guarded, request_deserializer=_tolerant(handler.request_deserializer),
                                                   response_serializer=handler.response_serializer)


class GRPCServer:
    """A grpc.aio server for one ModelSet on host:port, with grpc.health.v1 and reflection."""

    def __init__(self, models: ModelSet, host: str, port: int, max_message_bytes: int, reuse_port: bool) -> None:
        self.backend = Backend(models)
        self.host, self.port = host, port
        self.max_message_bytes = max_message_bytes
        self.reuse_port = reuse_port
        self.server: grpc.aio.Server | None = None
        self.health = None

    async def start(self) -> None:
        from grpc_health.v1 import health, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
        ]
        server = grpc.aio.server(options=options, interceptors=[MalformedRequests()])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.backend), server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        if self.host in ("0.0.0.0", "::", ""):  # every interface: dual-stack where IPv6 is on
            addresses = [f"[::]:{self.port}", f"0.0.0.0:{self.port}"]
        else:
            addresses = [f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"]
        for address in addresses:
            try:
                if server.add_insecure_port(address):
                    break
            except RuntimeError:
                continue
        else:
            raise PortTaken(f"cannot bind the OIP gRPC server to {addresses[-1]}: the port is in use or not allowed; "
                               "stop the other server or choose another VISIONZOO_GRPC_PORT (VISIONZOO_GRPC_HOST)")
        await server.start()
        self.server = server
        await self.update_health()
        logger.info("Open Inference Protocol gRPC on %s (max message %d bytes)", address, self.max_message_bytes)

    async def update_health(self) -> None:
        """grpc.health.v1: SERVING once every model serves (the overall service "" and the OIP one)."""
        if self.health is None:
            return
        from grpc_health.v1 import health_pb2

        status = health_pb2.HealthCheckResponse.SERVING if self.backend.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let calls in flight finish for `grace` seconds, then cancel them."""
        if self.server is not None:
            if self.health is not None:
                await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)
            self.server = None
            logger.info("Open Inference Protocol gRPC on port %d stopped", self.port)


async def start_grpc(models: ModelSet) -> GRPCServer | None:
    """Start gRPC for the served models; None when VISIONZOO_GRPC_PORT is 0."""
    if logger.getEffectiveLevel() > logging.INFO and logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # bentoml serve leaves the root logger at WARNING: say where gRPC listens
    settings = config.server_settings()
    if settings.grpc_port == 0:
        logger.info("OIP gRPC disabled (VISIONZOO_GRPC_PORT=0)")
        return None
    host = settings.grpc_host or launcher.http_socket_host() or "0.0.0.0"
    server = GRPCServer(models, host, settings.grpc_port, settings.grpc_max_message_bytes, settings.grpc_reuse_port)
    try:
        await server.start()
    except PortTaken as error:
        launcher.stop_supervisor(str(error))
        raise
    return server


async def stop_grpc(server: GRPCServer | None, grace: float = 5.0) -> None:
    if server is not None:
        await server.stop(grace)
