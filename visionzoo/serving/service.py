"""The visionzoo BentoML service: MURA abnormality + body part, blood cells, Mars terrain.

Two BentoML services in one `bentoml serve`:
- `ModelRuntime` (internal) holds one ONNX Runtime session per model behind `batchable=True`
  APIs that take and return float32 tensors. BentoML's adaptive batching lives here, so every
  protocol that reaches a model is batched by the same dispatcher.
- `VisionZoo` (the entry service) speaks to users: it decodes uploads with the shared
  preprocessing, calls the runtime, and shapes answers. The Open Inference Protocol REST routes
  and the gRPC server (visionzoo/serving/oip) run here too and call the same runtime APIs.

    bentoml serve .                 # from the repository root (bentofile.yaml names VisionZoo)
"""

from __future__ import annotations

import functools
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import bentoml
import numpy as np
from starlette.responses import JSONResponse

from . import config
from .oip import rest_app, start_grpc, stop_grpc
from .processing import (
    DecodedImage,
    RequestError,
    Upload,
    classification_result,
    decode_uploads,
    mura_result,
    pack_outputs,
    segmentation_result,
    split_outputs,
    stack_tiles,
    study_result,
)
from .repository import ModelUnavailable, ModelVersion, load_version
from .runtime import ModelSlots
from .schemas import BloodCellResponse, MarsResponse, MuraResponse, MuraStudyResponse

logger = logging.getLogger("visionzoo.service")

BATCHING = {name: config.batch_settings(name) for name in config.SERVED}
TEMPFILE_PREFIX = len("tmp") + 8  # tempfile.NamedTemporaryFile names: "tmp" + 8 random chars + suffix


@dataclass(frozen=True)
class Inference:
    """A runtime answer: outputs keyed by tensor name, and the version that computed them."""

    outputs: dict[str, np.ndarray]
    version: str


# runner_connection: BentoML 1.4.39 renews the entry service's connection to a dependency after 100
# requests or 300 s by closing it while requests are still in flight on it (they fail with "Server
# disconnected"); both sides live in one `bentoml serve`, so the connection is kept instead.
@bentoml.service(
    name="visionzoo-runtime",
    workers=1,
    threads=config.runtime_threads(),
    traffic={"timeout": 120},
    runner_connection={"max_requests": 1_000_000_000, "max_age": 1e9},
)
class ModelRuntime:
    """Internal: ONNX Runtime sessions behind BentoML's adaptive batching (tensors in, tensors out)."""

    def __init__(self) -> None:
        self.slots = ModelSlots.load_all()

    def __is_ready__(self) -> bool:
        return self.slots.ready()

    def _infer(self, name: str, images: np.ndarray) -> np.ndarray:
        """Outputs packed in one float32 array, plus a last column naming the version that computed
        them (a hot swap can land between a request's arrival and its batch)."""
        model = self.slots.get(name)
        inputs = {model.version.inputs[0]["name"]: np.ascontiguousarray(images, dtype=np.float32)}
        packed = pack_outputs(model.run(inputs), model.version.outputs)
        version = np.full((len(packed), 1), float(model.version.version), dtype=np.float32)
        return np.concatenate([packed, version], axis=1)

    @bentoml.api(**BATCHING["mura"].api_options())
    def mura(self, images: np.ndarray) -> np.ndarray:
        """(N, 224, 224, 3) pixels -> (N, 1 + body parts): abnormal probability, body-part probabilities."""
        return self._infer("mura", images)

    @bentoml.api(**BATCHING["bloodcell"].api_options())
    def bloodcell(self, images: np.ndarray) -> np.ndarray:
        """(N, 96, 96, 3) pixels -> (N, 8) class probabilities."""
        return self._infer("bloodcell", images)

    @bentoml.api(**BATCHING["mars"].api_options())
    def mars(self, images: np.ndarray) -> np.ndarray:
        """(N, 64, 128, 1) tiles -> (N, 64*128*5) per-pixel class probabilities, flattened."""
        return self._infer("mars", images)

    @bentoml.api
    def status(self) -> dict:
        return self.slots.status()

    @bentoml.api
    def swap(self, model: str, version: str = "") -> dict:
        """Load a version (newest when empty) beside the live one, warm it, then make it live."""
        try:
            return {"ok": True, **self.slots.swap(model, version or None).version.describe()}
        except ModelUnavailable as error:
            return {"ok": False, "error": str(error)}

    @bentoml.api
    def rollback(self, model: str) -> dict:
        try:
            return {"ok": True, **self.slots.rollback(model).version.describe()}
        except ModelUnavailable as error:
            return {"ok": False, "error": str(error)}


def original_name(path: Path, index: int) -> str:
    """The uploaded file's own name (BentoML keeps it as the temporary file's suffix)."""
    name = path.name[TEMPFILE_PREFIX:] if path.name.startswith("tmp") else path.name
    return name or f"images[{index}]"


def client_errors(func):
    """Answer client mistakes and unavailable models with a status and a message, not a 500."""

    @functools.wraps(func)
    async def wrapper(self, *args, **kwargs):
        try:
            return await func(self, *args, **kwargs)
        except RequestError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        except ModelUnavailable as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        except bentoml.exceptions.BentoMLException as error:
            status = error.error_code.value
            if status in (429, 503):  # the runtime shed load: tell the client to come back
                return JSONResponse({"error": "the model is overloaded; retry later"}, status_code=503, headers={"Retry-After": "1"})
            raise

    return wrapper


@bentoml.asgi_app(rest_app, path="/")  # Open Inference Protocol REST: /v2/... (visionzoo/serving/oip/rest.py)
@bentoml.service(name="visionzoo", workers=1, traffic={"timeout": 60})
class VisionZoo:
    """X-ray abnormality and body part (MURA architecture), blood-cell type, Mars terrain segmentation."""

    runtime = bentoml.depends(ModelRuntime)

    def __init__(self) -> None:
        self.models: dict[str, ModelVersion] = {}
        self.refused: dict[str, str] = {}
        for name in config.SERVED:
            try:
                self.models[name] = load_version(name)
            except ModelUnavailable as error:
                self.refused[name] = str(error)

    def __is_ready__(self) -> bool:
        return bool(self.models)

    @bentoml.on_startup
    async def start_oip_grpc(self) -> None:
        """Open Inference Protocol gRPC on VISIONZOO_GRPC_PORT in this worker (visionzoo/serving/oip)."""
        self.grpc_server = await start_grpc(self)

    @bentoml.on_shutdown
    async def stop_oip_grpc(self) -> None:
        await stop_grpc(getattr(self, "grpc_server", None))

    def model(self, name: str) -> ModelVersion:
        if name not in self.models:
            raise ModelUnavailable(self.refused.get(name, f"unknown model {name!r}"))
        return self.models[name]

    async def infer(self, name: str, batch: np.ndarray) -> Inference:
        """Run a float32 batch through the runtime's batchable API: outputs keyed by tensor name, and
        the version that computed them."""
        served = self.model(name)
        packed = np.asarray(await getattr(self.runtime.to_async, name)(images=batch))
        version = str(int(packed[0, -1])) if len(packed) else served.version
        return Inference(split_outputs(packed[:, :-1], served.outputs), version)

    async def decode(self, name: str, images: list[Path]) -> list[DecodedImage]:
        spec = self.model(name).spec

        def read() -> list[DecodedImage]:
            uploads = [Upload(original_name(path, i), path.read_bytes()) for i, path in enumerate(images)]
            return decode_uploads(uploads, spec, config.max_images(), config.max_image_bytes())

        return await anyio.to_thread.run_sync(read)

    def info(self, name: str, version: str) -> dict:
        return {"name": name, "export": self.model(name).export_name, "version": version}

    async def _mura_views(self, images: list[Path]) -> tuple[ModelVersion, list[dict]]:
        version = self.model("mura")
        decoded = await self.decode("mura", images)
        result = await self.infer("mura", stack_tiles(decoded))
        threshold = version.metadata.get("threshold") or 0.5
        views = [
            mura_result(image.name, float(result.outputs["abnormal"][i, 0]), result.outputs["body_part"][i], version.labels, threshold)
            for i, image in enumerate(decoded)
        ]
        return result.version, version, views

    @bentoml.api(route="/mura/predict")
    @client_errors
    async def mura_predict(self, images: list[Path]) -> MuraResponse:
        """X-ray images (multipart field `images`, repeatable; PNG/JPEG/.npy, any size, grey or colour) ->
        per image: abnormal probability and label, body-part distribution and top body part."""
        computed_by, _, views = await self._mura_views(images)
        return MuraResponse(model=self.info("mura", computed_by), predictions=views)

    @bentoml.api(route="/mura/predict_study")
    @client_errors
    async def mura_predict_study(self, images: list[Path]) -> MuraStudyResponse:
        """Several views of one study -> the study's abnormal probability (mean over views, as the
        MURA paper does), its label, and each view's result."""
        computed_by, version, views = await self._mura_views(images)
        study = study_result(views, version.labels, version.metadata.get("threshold") or 0.5)
        return MuraStudyResponse(model=self.info("mura", computed_by), **study)

    @bentoml.api(route="/bloodcell/predict")
    @client_errors
    async def bloodcell_predict(self, images: list[Path], top_k: int = 3) -> BloodCellResponse:
        """Blood-cell images -> 8-class probabilities and the top-k labels per image."""
        version = self.model("bloodcell")
        if not 1 <= top_k <= len(version.labels["probabilities"]):
            raise RequestError(f"top_k must be between 1 and {len(version.labels['probabilities'])}, got {top_k}")
        decoded = await self.decode("bloodcell", images)
        result = await self.infer("bloodcell", stack_tiles(decoded))
        probabilities = result.outputs["probabilities"]
        labels = version.labels["probabilities"]
        predictions = [classification_result(image.name, probabilities[i], labels, top_k) for i, image in enumerate(decoded)]
        return BloodCellResponse(model=self.info("bloodcell", result.version), predictions=predictions)

    @bentoml.api(route="/mars/segment")
    @client_errors
    async def mars_segment(self, images: list[Path], mask_format: Literal["png", "npy"] = "png", overlay: bool = False) -> MarsResponse:
        """Mars terrain images (any size; cut into 64x128 tiles without distorting aspect) -> per image
        the class map at the original size (palette PNG, or .npy with mask_format=npy), the share of
        pixels per class, and with overlay=true a colour overlay PNG."""
        version = self.model("mars")
        decoded = await self.decode("mars", images)
        result = await self.infer("mars", stack_tiles(decoded))
        probabilities = result.outputs["probabilities"]
        labels = version.labels["probabilities"]

        def shape() -> list[dict]:
            results, start = [], 0
            for image in decoded:
                stop = start + len(image.tiles)
                results.append(segmentation_result(image, probabilities[start:stop], labels, mask_format, overlay))
                start = stop
            return results

        return MarsResponse(model=self.info("mars", result.version), segmentations=await anyio.to_thread.run_sync(shape))

    @bentoml.api(route="/models")
    async def models_status(self) -> dict:
        """Which export and version each model serves, on which execution provider, or why it is refused."""
        return await self.runtime.to_async.status()

    @staticmethod
    def _answer(context: bentoml.Context, status: int, body: dict, headers: dict | None = None) -> JSONResponse:
        # With a context parameter BentoML takes the status from context.response, not the Response.
        context.response.status_code = status
        return JSONResponse(body, status_code=status, headers=headers)

    def _refuse(self, model: str, context: bentoml.Context) -> JSONResponse | None:
        """An error answer for an unknown model or a missing/wrong admin token; None when allowed."""
        if model not in config.SERVED:
            return self._answer(context, 404, {"error": f"unknown model {model!r}; served models: {sorted(config.SERVED)}"})
        token = config.admin_token()
        if token is None:
            return self._answer(context, 403, {"error": "admin routes are disabled; set VISIONZOO_ADMIN_TOKEN to enable them"})
        given = context.request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return self._answer(context, 401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"})
        return None

    async def _apply(self, model: str, result: dict, context: bentoml.Context) -> dict | JSONResponse:
        if not result.get("ok"):
            return self._answer(context, 409, {"error": result.get("error", "reload failed")})
        self.models[model] = load_version(model, result["version"])
        self.refused.pop(model, None)
        logger.info("%s now serves version %s", model, result["version"])
        return result

    @bentoml.api(route="/admin/reload")
    async def admin_reload(self, model: str, version: str = "", context: bentoml.Context = None) -> dict:
        """Serve another exported version without a restart (newest when `version` is empty). The new
        version is loaded and warmed beside the old one, then swapped in: no request fails.
        Needs `Authorization: Bearer $VISIONZOO_ADMIN_TOKEN`."""
        refused = self._refuse(model, context)
        if refused is not None:
            return refused
        return await self._apply(model, await self.runtime.to_async.swap(model=model, version=version), context)

    @bentoml.api(route="/admin/rollback")
    async def admin_rollback(self, model: str, context: bentoml.Context = None) -> dict:
        """Go back to the version served before the last reload (same token as /admin/reload)."""
        refused = self._refuse(model, context)
        if refused is not None:
            return refused
        return await self._apply(model, await self.runtime.to_async.rollback(model=model), context)
