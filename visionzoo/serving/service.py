"""The visionzoo BentoML service: every model of the manifest (serving/models.yaml), over HTTP and gRPC.

    bentoml serve .                 # from the repository root (bentofile.yaml names VisionZoo)

One process serves everything: the BentoML endpoints, the Open Inference Protocol REST routes
(mounted at /v2) and the OIP gRPC server all call the same `ServedModel` objects (serving/pipeline.py),
whose dynamic batchers form batches across protocols. The endpoints are generated from the manifest
and each model's task (serving/tasks.py): `POST /<model>/<verb>`, API method `<model>_<verb>`, e.g.
`/bloodcell/predict` (bloodcell_predict), `/mura/predict_study`, `/mars/segment`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import bentoml
from starlette.responses import JSONResponse

from . import config, draining, launcher
from .errors import Forbidden, InvalidInput, ServingError, Unauthenticated, http_headers
from .http_inputs import ParseFailure, display_name, input_model
from .metrics import Metrics
from .oip import rest_app, start_grpc, stop_grpc
from .pipeline import ModelSet
from .processing import Upload
from .repository import available_versions
from .security import ApiKeyMiddleware
from .tasks import TASKS, Endpoint, option_field

launcher.harden_supervisor()  # in the `bentoml serve` supervisor only: private control socket and metrics

logger = logging.getLogger("visionzoo.service")


def error_response(error: ServingError) -> JSONResponse:
    if error.http_status >= 500 and not error.retry_after:
        logger.error("%s", error, exc_info=error.__cause__)
    return JSONResponse({"error": str(error)}, status_code=error.http_status, headers=http_headers(error))


def as_upload(item: Any, index: int) -> Upload:
    """What an endpoint receives: parsed uploads from HTTP, or paths/bytes from in-process callers."""
    if isinstance(item, Upload):
        return item
    if isinstance(item, (str, Path)):
        path = Path(item)
        return Upload(display_name(path.name, index), path.read_bytes())
    if isinstance(item, (bytes, bytearray)):
        return Upload(display_name(None, index), bytes(item))
    raise InvalidInput(f"images[{index}]: expected a file, got {type(item).__name__}")


def task_of(name: str, settings: config.ModelSettings) -> str | None:
    """The task a served model performs, from its newest (or pinned) export's metadata.json; None when
    there is no export to read (the model is then only reachable over OIP, which explains why)."""
    server = config.server_settings()
    versions = available_versions(server.models_dir, settings.export)
    version = settings.version or (versions[-1] if versions else None)
    if version is None:
        return None
    try:
        return json.loads((server.models_dir / settings.export / version / "metadata.json").read_text())["task"]
    except (OSError, ValueError, KeyError):
        return None


def _camel(text: str) -> str:
    return "".join(part.capitalize() for part in text.split("_"))


def endpoint_method(model: str, endpoint: Endpoint):
    """The BentoML API `POST /<model>/<verb>` for one task endpoint of one model."""
    options = {option.name: option_field(option) for option in endpoint.options}
    input_spec = input_model(f"{_camel(model)}{_camel(endpoint.verb)}Input", options)

    async def method(self, **fields):
        return await self.respond(model, endpoint.verb, fields)

    method.__name__ = method.__qualname__ = f"{model}_{endpoint.verb}"
    method.__doc__ = endpoint.summary
    from _bentoml_sdk.io_models import ensure_io_descriptor

    return bentoml.api(route=f"/{model}/{endpoint.verb}", input_spec=input_spec,
                       output_spec=ensure_io_descriptor(endpoint.response))(method)


class ServiceBase:
    """The service's behaviour; `VisionZoo` adds one endpoint per (model, task endpoint)."""

    def __init__(self) -> None:
        self.models = ModelSet.from_settings(metrics=process_metrics())
        self.grpc = None
        self._loading: asyncio.Task | None = None

    @bentoml.on_startup
    async def start_serving(self) -> None:
        """Start gRPC, and load the models in the background: the worker answers /readyz (503) and
        requests (503, "loading") at once instead of holding connections until every model is warm.
        After SIGTERM, new HTTP connections are answered 503 at once while the worker drains (draining.py)."""
        draining.answer_new_connections_while_draining()
        self.grpc = await start_grpc(self.models)
        self._loading = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        await self.models.start()
        if self.grpc is not None:
            await self.grpc.update_health()
        logger.info("serving %s", ", ".join(f"{m.name} v{m.slot.number}" if m.slot else f"{m.name} (refused)"
                                            for m in self.models))

    @bentoml.on_shutdown
    async def stop_serving(self) -> None:
        """Stop taking requests (gRPC), let those in flight finish within the grace period, then stop."""
        grace = config.server_settings().shutdown_grace_seconds
        await stop_grpc(self.grpc, grace)
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await self.models.stop(drain_seconds=grace)

    def __is_ready__(self) -> bool:
        return self.models.ready()

    async def respond(self, model: str, verb: str, fields: dict):
        images = fields.pop("images", None)
        if isinstance(images, ParseFailure):
            return error_response(images.error)
        try:
            uploads = [as_upload(item, i) for i, item in enumerate(images or [])]
            body = await self.models[model].answer(verb, uploads, fields, protocol="http")
        except ServingError as error:
            return error_response(error)
        return JSONResponse(body)

    @bentoml.api(route="/models")
    async def models_status(self) -> dict:
        """Each model's served export and version, engine, device and precision, batching, or why it is refused."""
        return self.models.status()

    @staticmethod
    def _admin(context: bentoml.Context) -> None:
        token = config.server_settings().admin_token
        if token is None:
            raise Forbidden("admin routes are disabled; set VISIONZOO_ADMIN_TOKEN to enable them")
        given = context.request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
            raise Unauthenticated("missing or wrong admin token (Authorization: Bearer $VISIONZOO_ADMIN_TOKEN)")

    async def _administer(self, context: bentoml.Context, action) -> Any:
        try:
            self._admin(context)
            slot = await action()
        except ServingError as error:
            context.response.status_code = error.http_status  # with a context parameter BentoML takes the status from here
            return error_response(error)
        if self.grpc is not None:
            await self.grpc.update_health()
        return {"ok": True, **slot.version.describe(), "pinned": slot.version.version == (self.models[slot.version.served_as].settings.version or "")}

    @bentoml.api(route="/admin/reload")
    async def admin_reload(self, model: str, version: str = "", context: bentoml.Context = None) -> dict:
        """Serve another exported version without a restart: `version`, or the newest when empty (a
        VISIONZOO_<MODEL>_VERSION pin does not hold a reload back; the answer names the version served).
        The new version is loaded and warmed beside the old one, then swapped in: no request fails.
        Needs `Authorization: Bearer $VISIONZOO_ADMIN_TOKEN`."""
        return await self._administer(context, lambda: self.models[model].swap(version or None))

    @bentoml.api(route="/admin/rollback")
    async def admin_rollback(self, model: str, context: bentoml.Context = None) -> dict:
        """Go back to the version served before the last reload (same token as /admin/reload)."""
        return await self._administer(context, lambda: self.models[model].rollback())


_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """The Prometheus instruments, created once per process."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics.create()
    return _metrics


# What the endpoints answer besides BentoML's own 200/400/404/500 (serving/errors.py), for the OpenAPI document.
ERROR_STATUSES = {
    401: "missing or wrong API key (VISIONZOO_API_KEY)",
    403: "admin routes disabled (no VISIONZOO_ADMIN_TOKEN)",
    409: "a reload the live model cannot take (changed signature) or nothing to roll back to",
    413: "more images, bytes, pixels or tiles than allowed (VISIONZOO_MAX_*)",
    415: "not multipart/form-data, or a file that is not a decodable image",
    503: "model loading, refused or overloaded (with Retry-After)",
    504: "the request's deadline passed",
}
ADMIN_ONLY = (403, 409)


class MultipartBoundaryMiddleware:
    """400 for a multipart body without a boundary, on every route: BentoML's own JSON routes (/models,
    /admin/*) accept multipart bodies too, and answer a missing boundary with a 500."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            media_type, _, parameters = content_type.partition(";")
            if media_type.strip().lower().startswith("multipart/") and "boundary=" not in parameters.lower():
                error = InvalidInput(f"{media_type.strip()} without a boundary parameter: let the client library "
                                     "write the Content-Type of a multipart body (curl -F, requests files=...)")
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _required_fields(media) -> list:
    schema = media.get("schema") if isinstance(media, dict) else getattr(media, "schema", None)
    found = schema.get("required") if isinstance(schema, dict) else getattr(schema, "required", None)
    return list(found or [])


def document_errors(spec):
    """BentoML's OpenAPI document plus the error answers the service gives: every error is `ErrorBody`,
    and the 400 of BentoML's own JSON routes (/models, /admin/*) carries pydantic's `detail` list."""
    from .schemas import ErrorBody

    schemas = spec.components["schemas"]
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    schemas["InvalidArgument"] = {"type": "object", "title": "InvalidArgument", "description": "Bad Request",
                                  "required": ["error"], "properties": {"error": {"type": "string", "title": "Message"},
                                                                        "detail": {"title": "Error Detail"}}}
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for route, item in spec.paths.items():
        operation = item.post if isinstance(item.post, dict) else None
        if operation is None or "responses" not in operation:
            continue
        body = operation.get("requestBody")
        if isinstance(body, dict) and any(_required_fields(media) for media in body.get("content", {}).values()):
            body["required"] = True  # a request without a body is refused (no images / no model name)
        admin = route.startswith("/admin/")
        for status, description in ERROR_STATUSES.items():
            if status in ADMIN_ONLY and not admin:
                continue
            operation["responses"].setdefault(status, {"description": description, "content": reference})
    return spec


# Request fields of BentoML's own JSON routes (/admin/*), described for the OpenAPI document.
FIELD_DOCS = {
    "model": ("served model name (serving/models.yaml)", "bloodcell"),
    "version": ("exported version to serve (a folder under exported_models/<export>/); empty: the newest", "1"),
}
# served name -> an example upload's file name (the export's first golden file), filled by build_service.
EXAMPLE_FILES: dict[str, str] = {}
DESCRIPTION = """Blood-cell type, X-ray abnormality and body part, and Mars terrain segmentation, served from the
exported models under `exported_models/` (ONNX Runtime, dynamic batching across protocols).

* **BentoML endpoints** (this page): `POST /<model>/<verb>` with the images as multipart/form-data field
  `images` (repeat it for several), e.g. `curl -F images=@BA_126424.jpg -F top_k=3 .../bloodcell/predict`.
* **Open Inference Protocol v2** (KServe / Triton): REST under `/v2` (listed below, tag *Open Inference
  Protocol*; their OpenAPI document: [/docs/oip.json](./docs/oip.json); request body: schema
  `OipInferRequest`) and gRPC `inference.GRPCInferenceService` on VISIONZOO_GRPC_PORT (default 8001), with
  grpc.health.v1 and server reflection. Routes: `GET /v2`, `GET /v2/health/live|ready`,
  `GET /v2/models/{model}[/versions/{version}][/ready|/config|/stats]`, `POST /v2/models/{model}[/versions/{version}]/infer`,
  `POST /v2/repository/index`, `POST /v2/repository/models/{model}/load|unload` (admin token).
* `/metrics` (Prometheus), `/livez`, `/readyz`; the same models in-process: `visionzoo.load("bloodcell")`.
"""


def _get(node, key):
    return node.get(key) if isinstance(node, dict) else getattr(node, key, None)


def _with(node, **values):
    """A schema node (a dict, or one of BentoML's frozen attrs classes) with `values` set."""
    if isinstance(node, dict):
        return {**node, **values}
    import attr

    return attr.evolve(node, **values)


def _example_file(name: str, settings: config.ModelSettings) -> str:
    """The first golden file of the served version (a real file name of the model's data), for the docs."""
    server = config.server_settings()
    versions = available_versions(server.models_dir, settings.export)
    version = settings.version or (versions[-1] if versions else None)
    try:
        files = json.loads((server.models_dir / settings.export / str(version) / "metadata.json").read_text())["golden"]["files"]
        return str(files[0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "scan.png"


def _document_fields(schema, model: str | None, admin: bool):
    """A request schema with every field's example (and the /admin fields' descriptions) filled in."""
    properties = _get(schema, "properties")
    if not properties:
        return schema
    properties = dict(properties)
    for field, prop in properties.items():
        if field == "images" and model is not None:
            properties[field] = _with(prop, example=[EXAMPLE_FILES[model]])
        elif field in FIELD_DOCS and admin:
            description, example = FIELD_DOCS[field]
            properties[field] = _with(prop, description=description, example=example)
        elif isinstance(prop, dict) and prop.get("examples") and "example" not in prop:
            properties[field] = _with(prop, example=prop["examples"][0])  # OpenAPI 3.0 (Swagger UI) reads `example`
    return _with(schema, properties=properties)


def document_api(spec):
    """The OpenAPI document's title (visionzoo and its version), description, every request field's
    description and example, and the OIP REST routes (serving/oip/rest.py) under their own tag."""
    import attr
    from bentoml._internal.service.openapi.specification import (
        ExternalDocumentation,
        Info,
        Tag,
    )

    import visionzoo

    from .oip.rest import OIP_DOCUMENT, OIP_TAG, openapi_document

    tags = list(spec.tags or [])
    if not any(_get(tag, "name") == OIP_TAG for tag in tags):
        tags.append(Tag(name=OIP_TAG, description="Open Inference Protocol v2 over REST (also over gRPC: "
                                                  "inference.GRPCInferenceService)",
                        externalDocs=ExternalDocumentation(url="." + OIP_DOCUMENT, description="the OIP REST routes "
                                                                                               "(OpenAPI document)")))
    spec = attr.evolve(spec, info=Info(title="visionzoo", version=visionzoo.__version__, description=DESCRIPTION),
                       tags=tags)
    schemas = spec.components["schemas"]
    prefixes = {_camel(name): name for name in EXAMPLE_FILES}
    for title in list(schemas):
        model = next((name for prefix, name in prefixes.items() if title.startswith(prefix) and title.endswith("Input")), None)
        schemas[title] = _document_fields(schemas[title], model, admin=title.endswith("__Input"))
    for route, item in spec.paths.items():  # BentoML writes each request body's schema inline too
        body = _get(item.post, "requestBody") if item.post is not None else None
        content = _get(body, "content") if body is not None else None
        if not isinstance(content, dict):
            continue
        model = route.strip("/").split("/")[0]
        for media_type, media in content.items():
            if _get(media, "schema") is not None:
                content[media_type] = _with(media, schema=_document_fields(
                    _get(media, "schema"), model if model in EXAMPLE_FILES else None, admin=route.startswith("/admin/")))
    _paths, oip_schemas = openapi_document()  # the routes themselves: GET /docs/oip.json (see oip/rest.py)
    for name, schema in oip_schemas.items():
        schemas.setdefault(name, schema)
    return spec


def build_service():
    namespace: dict[str, Any] = {"__module__": __name__, "__doc__": "X-ray abnormality and body part, blood-cell type, "
                                 "Mars terrain segmentation (visionzoo)."}
    for name, settings in config.served_models().items():
        kind = task_of(name, settings)
        if kind is None:
            logger.warning("%s: no export to read its task from; it gets no BentoML endpoint (OIP answers why)", name)
            continue
        EXAMPLE_FILES[name] = _example_file(name, settings)
        for endpoint in TASKS[kind].endpoints if kind in TASKS else ():
            method = endpoint_method(name, endpoint)
            namespace[method.func.__name__ if hasattr(method, "func") else f"{name}_{endpoint.verb}"] = method
    cls = type("VisionZoo", (ServiceBase,), namespace)
    settings = config.server_settings()
    # BentoML's own per-request instruments (its HTTP metrics and an OpenTelemetry span per request)
    # cost more than the model on a small model; the service counts requests itself (metrics.py,
    # served at /metrics by the OIP app) and traces only when asked (VISIONZOO_TRACING=on).
    service = bentoml.service(name="visionzoo", workers=1, traffic={"timeout": 60},
                              logging={"access": {"enabled": settings.access_log}},
                              metrics={"enabled": False},
                              tracing={} if settings.tracing else {"excluded_urls": ".*"})(cls)
    service.add_asgi_middleware(ApiKeyMiddleware)
    service.add_asgi_middleware(MultipartBoundaryMiddleware)

    class DocumentedService(type(service)):  # the same service; /docs.json also lists the error answers,
        # the field examples and the OIP routes, under the title visionzoo <version>
        __slots__ = ()

        @property
        def openapi_spec(self):
            return document_api(document_errors(super().openapi_spec))

    service.__class__ = DocumentedService
    return bentoml.asgi_app(rest_app, path="/")(service)  # OIP REST: /v2/... (serving/oip/rest.py)


VisionZoo = build_service()
