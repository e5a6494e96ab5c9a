"""Open Inference Protocol v2 over HTTP/REST, on BentoML's HTTP port, with the binary tensor data
extension that `tritonclient.http` uses by default.

    GET  /v2                                          server metadata
    GET  /v2/health/live, /v2/health/ready            200, or 503 when not ready
    GET  /v2/models/{model}[/versions/{version}]      model metadata
    GET  /v2/models/{model}[/versions/{version}]/ready
    GET  /v2/models/{model}[/versions/{version}]/config   model configuration (Triton's ModelConfig)
    GET  /v2/models[/{model}[/versions/{version}]]/stats  statistics (Triton's ModelStatistics)
    POST /v2/models/{model}[/versions/{version}]/infer
    POST /v2/repository/index                         every model and its state
    POST /v2/repository/models/{model}/load, /unload  (admin token, as /admin/reload)
    GET  /v2/systemsharedmemory[/region/{name}]/status    system shared memory (oip/shared_memory.py;
    POST /v2/systemsharedmemory/region/{name}/register    off unless VISIONZOO_SYSTEM_SHARED_MEMORY=on)
    POST /v2/systemsharedmemory[/region/{name}]/unregister
    GET  /docs                                        the API documentation (Swagger UI over /docs.json,
                                                      which links GET /docs/oip.json: these routes)

Binary tensor data: the JSON header comes first and `Inference-Header-Content-Length` gives its
length; each input with `parameters.binary_data_size` takes that many bytes of what follows, in
input order. Outputs are binary when the request asks (`binary_data` per requested output, else the
request parameter `binary_data_output`), JSON lists otherwise. An output requested with
`"parameters": {"classification": k}` (Triton's classification extension) is returned as BYTES [N, k],
each image's top k classes as "value:index:label", highest first. gzip/deflate request bodies
(`Content-Encoding`) are accepted. Errors answer `{"error": message}` with the status in
`errors.py`; unknown models get 404 (Triton answers 400; 404 says what happened).

The app is mounted at "/" so that `GET /v2` itself matches: under a "/v2" mount Starlette would
redirect it to "/v2/", which tritonclient does not follow. The mount is passive (BentoML's
`PassiveMount`): paths outside these routes still reach the BentoML endpoints.
"""

from __future__ import annotations

import functools
import json
import logging
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .. import config
from ..errors import Forbidden, ServingError, Unauthenticated, http_headers
from ..http_inputs import read_limited
from .backend import Backend, InferRequest, InferResponse, classification_count
from .errors import InvalidArgument, NotFound, ResourceExhausted
from .models import RequestTensor
from .shared_memory import reference
from .tensors import check_shape, element_count, from_json, from_raw, to_json, to_raw

logger = logging.getLogger("visionzoo.oip")

HEADER_LENGTH = "Inference-Header-Content-Length"


def error_response(error: ServingError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=error.http_status, headers=http_headers(error))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, inflated when compressed; over `limit` bytes is RESOURCE_EXHAUSTED (413)."""
    too_large = ResourceExhausted(f"request body over the limit of {limit} bytes (VISIONZOO_MAX_REQUEST_BYTES)")
    body = await read_limited(request, limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidArgument(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise InvalidArgument(f"the {encoding} request body cannot be decompressed ({error})") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise too_large
    if not inflater.eof:
        raise InvalidArgument(f"the {encoding} request body cannot be decompressed (the stream is truncated)")
    return inflated


def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview]:
    """JSON header and the binary tensor data after it."""
    if header_length is None:
        json_part, binary = body, memoryview(b"")
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidArgument(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= length <= len(body):
            raise InvalidArgument(f"{HEADER_LENGTH} is {length}, the body has {len(body)} bytes")
        json_part, binary = body[:length], memoryview(body)[length:]
    try:
        return json.loads(json_part), binary
    except RecursionError:
        raise InvalidArgument("the request's JSON is nested too deeply; tensor data is a flat or shallow list") from None
    except (ValueError, UnicodeDecodeError) as error:
        hint = f" (binary tensor data needs the {HEADER_LENGTH} header)" if header_length is None else ""
        raise InvalidArgument(f"the request's JSON header is not valid JSON: {error}{hint}") from None


def _parameters(item: dict, where: str) -> dict:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"{where}: 'parameters' must be an object")
    return parameters


def parse_infer_request(model: str, version: str, document: Any, binary: memoryview) -> tuple[InferRequest, dict[str, bool], bool]:
    """An infer request body -> the request, per-output binary choices and the default for the rest."""
    if not isinstance(document, dict):
        raise InvalidArgument("the request must be a JSON object with 'inputs'")
    items = document.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidArgument("the request needs a non-empty 'inputs' list")
    tensors, offset = [], 0
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(item.get("datatype"), str):
            raise InvalidArgument(f"inputs[{index}] must be an object with 'name', 'datatype', 'shape' and data")
        name, datatype = item["name"], item["datatype"]
        shape = check_shape(name, item.get("shape"))
        parameters = _parameters(item, f"input {name!r}")
        size = parameters.get("binary_data_size")
        ref = reference("input", name, parameters)
        if ref is not None:
            if "data" in item or size is not None:
                raise InvalidArgument(f"input {name!r} is in shared memory and also has data; use one or the other")
            tensors.append(RequestTensor(name, datatype, shape, None, ref.byte_size, ref))
            continue
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
            if offset + size > len(binary):
                raise InvalidArgument(
                    f"input {name!r}: binary_data_size is {size}, only {len(binary) - offset} bytes of binary data remain")
            decode = functools.partial(from_raw, name, datatype, shape, binary[offset:offset + size])
            offset += size
            nbytes = size
        elif "data" in item:
            decode = functools.partial(from_json, name, datatype, shape, item["data"], parameters)
            nbytes = 8 * element_count(shape)
        else:
            raise InvalidArgument(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        tensors.append(RequestTensor(name, datatype, shape, decode, nbytes))
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input's binary_data_size")
    request_parameters = _parameters(document, "request")
    default_binary = bool(request_parameters.get("binary_data_output", False))
    requested, binary_outputs, classification, in_shared_memory = None, {}, {}, {}
    if document.get("outputs") is not None:
        if not isinstance(document["outputs"], list):
            raise InvalidArgument("'outputs' must be a list of {'name': ...} objects")
        requested = []
        for item in document["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidArgument("each requested output needs a 'name'")
            parameters = _parameters(item, f"output {item['name']!r}")
            count = classification_count(item["name"], parameters)
            if count is not None:
                classification[item["name"]] = count
            ref = reference("output", item["name"], parameters)
            if ref is not None:
                in_shared_memory[item["name"]] = ref
            requested.append(item["name"])
            binary_outputs[item["name"]] = bool(parameters.get("binary_data", default_binary))
    request_id = document.get("id", "")
    request = InferRequest(model, version, str(request_id) if request_id is not None else "", tensors, requested,
                           classification, in_shared_memory)
    return request, binary_outputs, default_binary


def encode_infer_response(response: InferResponse, binary_outputs: dict[str, bool], default_binary: bool) -> Response:
    header: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.id:
        header["id"] = response.id
    header["outputs"], blobs = [], []
    for output in response.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        if output.shared_memory is not None:  # written to the client's region: where, and no data
            entry["parameters"] = output.shared_memory
        elif binary_outputs.get(output.name, default_binary):
            raw = to_raw(output.data, output.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = to_json(output.data)
        header["outputs"].append(entry)
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(text + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(text))})


Handler = Callable[[Request, Backend], Awaitable[Response]]


def admin_check(request: Request) -> None:
    """The repository's load and unload need the admin token (the one /admin/reload takes)."""
    import hmac

    token = config.server_settings().admin_token
    if token is None:
        raise Forbidden("the repository API is disabled; set VISIONZOO_ADMIN_TOKEN to enable it")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
        raise Unauthenticated("missing or wrong admin token (Authorization: Bearer $VISIONZOO_ADMIN_TOKEN)")


def docs_page() -> Path:
    """BentoML's Swagger UI page (the one it serves at "/")."""
    from _bentoml_impl import server

    return Path(server.__file__).parent / "main-openapi.html"


OIP_TAG = "Open Inference Protocol"
OIP_SPEC = "https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/"


def _oip_operation(summary: str, response: str, parameters: tuple[str, ...] = (), body: str | None = None,
                   admin: bool = False) -> dict:
    """One OIP route as an OpenAPI operation (paths documented here, served by `create_app`)."""
    described = {"model": ("served model name", "bloodcell"), "version": ("exported version", "1"),
                 "region": ("a shared-memory region's name (yours)", "input_0")}
    operation: dict[str, Any] = {
        "tags": [OIP_TAG], "summary": summary,
        "externalDocs": {"url": OIP_SPEC, "description": "Open Inference Protocol v2 (KServe)"},
        "parameters": [{"name": name, "in": "path", "required": True, "description": described[name][0],
                        "schema": {"type": "string", "example": described[name][1]}} for name in parameters],
        "responses": {"200": {"description": response, "content": {"application/json": {"schema": {"type": "object"}}}},
                      "404": {"description": "unknown model or version",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}},
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
        operation["responses"]["400"] = {"description": "malformed request or a tensor that does not fit the model",
                                         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    if admin:
        operation["responses"]["401"] = {"description": "missing or wrong admin token (Authorization: Bearer $VISIONZOO_ADMIN_TOKEN)"}
        operation["responses"]["403"] = {"description": "the repository API is disabled (no VISIONZOO_ADMIN_TOKEN)"}
    return operation


OIP_INFER_REQUEST = {
    "type": "object", "title": "OipInferRequest", "required": ["inputs"],
    "description": "An OIP v2 inference request. Send exactly one input: `image` (FP32 pixels 0..255, "
                   "[N, H, W, C]), `image_uint8` (UINT8 pixels) or `image_bytes` (BYTES: encoded image files, "
                   "base64 in JSON or raw with the binary tensor extension). GET .../config lists each model's "
                   "tensors, labels and preprocessing.",
    "properties": {
        "id": {"type": "string", "description": "echoed in the response", "example": "request-1"},
        "inputs": {"type": "array", "description": "the one input tensor", "items": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string", "description": "input name (model metadata)", "example": "image_bytes"},
                "shape": {"type": "array", "items": {"type": "integer"}, "description": "tensor shape", "example": [1]},
                "datatype": {"type": "string", "description": "FP32, UINT8 or BYTES", "example": "BYTES"},
                "data": {"type": "array", "items": {}, "description": "row-major values (omit with binary_data_size)",
                         "example": ["<base64 of BA_126424.jpg>"]},
                "parameters": {"type": "object", "description": "binary_data_size: bytes of this input after the JSON "
                               "header (Inference-Header-Content-Length)", "example": {"binary_data_size": 9013}},
            }}},
        "outputs": {"type": "array", "description": "outputs to return (default: all); binary_data per output",
                    "items": {"type": "object", "properties": {
                        "name": {"type": "string", "description": "output name", "example": "probabilities"},
                        "parameters": {"type": "object", "description": "binary_data: return raw bytes; "
                                       "classification: k, return the top k classes as BYTES \"value:index:label\"",
                                       "example": {"binary_data": False}}}}},
        "parameters": {"type": "object", "description": "binary_data_output: every output as raw bytes",
                       "example": {"binary_data_output": False}},
    },
    "example": {"id": "request-1", "inputs": [{"name": "image", "shape": [1, 224, 224, 3], "datatype": "FP32",
                                               "data": [0.0]}], "outputs": [{"name": "probabilities"}]},
}
OIP_SHARED_MEMORY_REGISTER = {
    "type": "object", "title": "OipSharedMemoryRegister", "required": ["key", "byte_size"],
    "description": "a region of a POSIX shared-memory object you created (tritonclient.utils.shared_memory)",
    "properties": {"key": {"type": "string", "description": "the object's name", "example": "/input_0"},
                   "offset": {"type": "integer", "description": "where the region starts in the object", "example": 0},
                   "byte_size": {"type": "integer", "description": "the region's size in bytes", "example": 110592}},
}
OIP_REPOSITORY_REQUEST = {"type": "object", "title": "OipRepositoryRequest",
                          "description": "optional `ready`/`parameters` (ignored: every served model is listed)",
                          "properties": {"ready": {"type": "boolean", "description": "only ready models (ignored)",
                                                   "example": False}}}


def openapi_document() -> tuple[dict[str, dict], dict[str, dict]]:
    """(paths, schemas) of the OIP REST routes, for the service's OpenAPI document (/docs.json)."""
    model, versioned = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    paths: dict[str, dict] = {
        "/v2": {"get": _oip_operation("server metadata (name, version, extensions)", "server metadata")},
        "/v2/health/live": {"get": _oip_operation("server live", "{\"live\": true}")},
        "/v2/health/ready": {"get": _oip_operation("server ready: 200 when every model serves, else 503", "{\"ready\": true}")},
        "/v2/models/stats": {"get": _oip_operation("statistics of every model (Triton's ModelStatistics)", "model_stats")},
        "/v2/repository/index": {"post": _oip_operation("every model of the manifest and its state", "a list of "
                                                        "{name, version, state, reason}", body="OipRepositoryRequest")},
        "/v2/repository/models/{model}/load": {"post": _oip_operation(
            "load (serve) the newest version of a model; admin token", "{}", ("model",), admin=True)},
        "/v2/repository/models/{model}/unload": {"post": _oip_operation(
            "stop serving a model until it is loaded again; admin token", "{}", ("model",), admin=True)},
    }
    shared = "system shared memory (VISIONZOO_SYSTEM_SHARED_MEMORY=on): "
    paths.update({
        "/v2/systemsharedmemory/status": {"get": _oip_operation(shared + "every registered region", "a list of "
                                                                 "{name, key, offset, byte_size}")},
        "/v2/systemsharedmemory/region/{region}/status": {"get": _oip_operation(shared + "one region", "[{name, key, "
                                                                                 "offset, byte_size}]", ("region",))},
        "/v2/systemsharedmemory/region/{region}/register": {"post": _oip_operation(
            shared + "register a region of your object under a name", "{}", ("region",), body="OipSharedMemoryRegister")},
        "/v2/systemsharedmemory/unregister": {"post": _oip_operation(shared + "forget every region", "{}")},
        "/v2/systemsharedmemory/region/{region}/unregister": {"post": _oip_operation(shared + "forget one region", "{}",
                                                                                      ("region",))},
    })
    for base, parameters in ((model, ("model",)), (versioned, ("model", "version"))):
        paths[base] = {"get": _oip_operation("model metadata: inputs, outputs, labels, preprocessing", "model metadata", parameters)}
        paths[base + "/ready"] = {"get": _oip_operation("model ready (200) or not (503)", "{name, ready}", parameters)}
        paths[base + "/config"] = {"get": _oip_operation("model configuration (Triton's ModelConfig): batching, "
                                                         "tensors, labels and preprocessing parameters", "model config", parameters)}
        paths[base + "/stats"] = {"get": _oip_operation("model statistics (Triton's ModelStatistics)", "model_stats", parameters)}
        paths[base + "/infer"] = {"post": _oip_operation(
            "inference on tensors or encoded image files; answers {model_name, model_version, id, outputs}",
            "the output tensors", parameters, body="OipInferRequest")}
    return paths, {"OipInferRequest": OIP_INFER_REQUEST, "OipRepositoryRequest": OIP_REPOSITORY_REQUEST,
                   "OipSharedMemoryRegister": OIP_SHARED_MEMORY_REGISTER}


OIP_DOCUMENT = "/docs/oip.json"


def oip_openapi() -> dict:
    """The OIP REST routes as an OpenAPI document of their own (GET /docs/oip.json), linked from the
    service's /docs.json (tag "Open Inference Protocol"). Kept out of /docs.json's paths so that the
    fuzzer over /docs.json (tests/e2e/test_fuzz.py) checks the BentoML endpoints it was written for."""
    import visionzoo

    from ..schemas import ErrorBody

    paths, schemas = openapi_document()
    return {"openapi": "3.0.2",
            "info": {"title": "visionzoo: Open Inference Protocol v2 (REST)", "version": visionzoo.__version__,
                     "description": "KServe/Triton OIP v2 over HTTP, with the binary tensor data extension "
                                    "(tritonclient.http). The same routes over gRPC: inference.GRPCInferenceService."},
            "externalDocs": {"url": OIP_SPEC, "description": "Open Inference Protocol v2 (KServe)"},
            "servers": [{"url": "."}], "tags": [{"name": OIP_TAG}], "paths": paths,
            "components": {"schemas": {**schemas, "ErrorBody": ErrorBody.model_json_schema()}}}


def create_app(get_backend: Callable[[], Backend] | None = None) -> Starlette:
    """The OIP REST app over the served models (by default those of the live VisionZoo service)."""
    if get_backend is None:
        def get_backend() -> Backend:
            return Backend(bentoml.get_current_service().models)

    def route(path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, get_backend())
            except ServingError as error:
                if error.http_status >= 500 and not error.retry_after:
                    logger.error("OIP REST %s %s: %s", request.method, request.url.path, error, exc_info=error.__cause__)
                return error_response(error)
            except Exception as error:
                logger.exception("OIP REST %s %s failed", request.method, request.url.path)
                return JSONResponse({"error": f"internal error ({type(error).__name__}); see the server log"}, status_code=500)

        return Route(path, endpoint, methods=list(methods))

    async def server_metadata(request: Request, backend: Backend) -> Response:
        return JSONResponse(backend.server_metadata())

    async def live(request: Request, backend: Backend) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request, backend: Backend) -> Response:
        is_ready = backend.ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    def params(request: Request) -> tuple[str, str]:
        return request.path_params.get("model", ""), request.path_params.get("version", "")

    async def model_metadata(request: Request, backend: Backend) -> Response:
        metadata = backend.model_metadata(*params(request))
        signature = backend.signature(*params(request))
        return JSONResponse({**metadata, "parameters": {"labels": signature.labels,
                                                        "preprocessing": signature.spec.to_dict()}})

    async def model_ready(request: Request, backend: Backend) -> Response:
        name, version = params(request)
        is_ready = backend.model_ready(name, version)
        return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)

    async def model_config(request: Request, backend: Backend) -> Response:
        return JSONResponse(backend.model_config(*params(request)))

    async def statistics(request: Request, backend: Backend) -> Response:
        return JSONResponse({"model_stats": backend.statistics(*params(request))})

    async def infer(request: Request, backend: Backend) -> Response:
        name, version = params(request)
        backend.served(name, version)  # 404 / 503 before reading a large body
        body = await read_body(request, config.server_settings().max_request_bytes)
        document, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        parsed, binary_outputs, default_binary = parse_infer_request(name, version, document, binary)
        return encode_infer_response(await backend.infer(parsed, "oip_rest"), binary_outputs, default_binary)

    async def repository_index(request: Request, backend: Backend) -> Response:
        return JSONResponse(backend.repository_index())

    async def repository_load(request: Request, backend: Backend) -> Response:
        admin_check(request)
        await backend.models[request.path_params["model"]].swap()
        return JSONResponse({})

    async def repository_unload(request: Request, backend: Backend) -> Response:
        admin_check(request)
        await backend.models[request.path_params["model"]].unload()
        return JSONResponse({})

    async def shared_memory_status(request: Request, backend: Backend) -> Response:
        return JSONResponse(backend.shared_memory.status(request.path_params.get("region", "")))

    async def shared_memory_register(request: Request, backend: Backend) -> Response:
        backend.shared_memory.require_enabled()  # before reading the body: the answer that helps
        shape = 'a JSON object {"key": "/name", "offset": 0, "byte_size": N}'
        try:
            document = json.loads(await read_body(request, 64 * 1024))
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument(f"the register request's body is not JSON; send {shape}") from None
        if not isinstance(document, dict) or set(document) - {"key", "offset", "byte_size"}:
            raise InvalidArgument(f"the register request is {shape}")
        backend.shared_memory.register(request.path_params["region"], document.get("key"), document.get("offset", 0),
                                       document.get("byte_size"))
        return JSONResponse({})

    async def shared_memory_unregister(request: Request, backend: Backend) -> Response:
        backend.shared_memory.unregister(request.path_params.get("region", ""))
        return JSONResponse({})

    async def docs(request: Request, backend: Backend) -> Response:
        return FileResponse(docs_page(), media_type="text/html")

    async def oip_docs(request: Request, backend: Backend) -> Response:
        return JSONResponse(oip_openapi())

    async def metrics(request: Request, backend: Backend) -> Response:
        from ..metrics import exposition

        body, media_type = exposition()
        return Response(body, media_type=media_type)

    async def not_served(request: Request, backend: Backend) -> Response:
        raise NotFound(f"{request.method} {request.url.path} is not an Open Inference Protocol route served here")

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    routes = [
        route("/v2", server_metadata),
        route("/v2/health/live", live),
        route("/v2/health/ready", ready),
        route("/v2/models/stats", statistics),
        route("/v2/repository/index", repository_index, ("POST",)),
        route("/v2/repository/models/{model}/load", repository_load, ("POST",)),
        route("/v2/repository/models/{model}/unload", repository_unload, ("POST",)),
        route(model, model_metadata),
        route(versioned, model_metadata),
        route(model + "/ready", model_ready),
        route(versioned + "/ready", model_ready),
        route(model + "/config", model_config),
        route(versioned + "/config", model_config),
        route(model + "/stats", statistics),
        route(versioned + "/stats", statistics),
        route("/v2/systemsharedmemory/status", shared_memory_status),
        route("/v2/systemsharedmemory/region/{region}/status", shared_memory_status),
        route("/v2/systemsharedmemory/region/{region}/register", shared_memory_register, ("POST",)),
        route("/v2/systemsharedmemory/unregister", shared_memory_unregister, ("POST",)),
        route("/v2/systemsharedmemory/region/{region}/unregister", shared_memory_unregister, ("POST",)),
        route(model + "/infer", infer, ("POST",)),
        route(versioned + "/infer", infer, ("POST",)),
        route("/docs", docs),
        route(OIP_DOCUMENT, oip_docs),
        route("/metrics", metrics),
        # Everything else under /v2 (other Triton extensions): JSON 404.
        route("/v2/{path:path}", not_served, ("GET", "POST", "PUT", "DELETE")),
    ]
    return Starlette(routes=routes)


app = create_app()
