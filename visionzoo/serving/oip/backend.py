"""The protocol's operations on the live `VisionZoo` service, shared by the REST routes and the gRPC
servicer: health, metadata and inference.

Inference calls `VisionZoo.infer`, the path the BentoML endpoints use, so a request over any
protocol lands in the same adaptive-batching dispatcher of the same `ModelRuntime` process: a gRPC
request and a `/bloodcell/predict` upload can share one ONNX Runtime batch. No batcher or session
lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from typing import Any

import anyio
import numpy as np
from bentoml.exceptions import BentoMLException

from .. import config
from ..processing import PayloadTooLarge, RequestError
from ..repository import ModelUnavailable
from .errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    OIPError,
    ResourceExhausted,
    Unavailable,
)
from .models import ModelSignature, RequestTensor, TensorSpec

logger = logging.getLogger("visionzoo.oip")

SERVER_NAME = "visionzoo"
EXTENSIONS = ["binary_tensor_data"]
UNSUPPORTED_OUTPUT_PARAMETERS = {
    "classification": "the classification extension is not supported; request the probabilities output and rank them",
    "shared_memory_region": "shared memory is not supported; receive outputs in the response",
}


def server_version() -> str:
    try:
        return package_metadata.version("visionzoo")
    except package_metadata.PackageNotFoundError:  # a Bento installs requirements, not the package
        return "unknown"


@dataclass
class InferRequest:
    model: str
    version: str = ""
    id: str = ""
    inputs: list[RequestTensor] = field(default_factory=list)
    outputs: list[str] | None = None  # None: every output the input form produces


@dataclass
class OutputTensor:
    name: str
    datatype: str
    data: np.ndarray

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass
class InferResponse:
    model: str
    version: str
    id: str
    outputs: list[OutputTensor]


def check_output_parameters(name: str, parameters: Mapping[str, Any]) -> None:
    for key, reason in UNSUPPORTED_OUTPUT_PARAMETERS.items():
        if key in parameters:
            raise InvalidArgument(f"output {name!r}: {reason}")


class Backend:
    """Protocol operations over a VisionZoo instance (`bentoml.get_current_service()` when served)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}

    async def ready(self) -> bool:
        """Ready when at least one model is served and the runtime process answers ready."""
        if not getattr(self.service, "models", None):
            return False
        runtime = self.service.runtime
        probe = getattr(runtime, "is_ready", None)  # a RemoteProxy when served; a local instance in-process
        try:
            return bool(await probe(5)) if probe is not None else bool(runtime.__is_ready__())
        except Exception:
            logger.debug("runtime readiness probe failed", exc_info=True)
            return False

    def signature(self, name: str, version: str = "") -> ModelSignature:
        """The served version of `name` (which must be `version` when one is given)."""
        if name not in config.SERVED:
            raise NotFound(f"unknown model {name!r}; served models: {', '.join(config.SERVED)}")
        served = self.service.models.get(name)
        if served is None:
            reason = self.service.refused.get(name, "not loaded")
            raise Unavailable(f"model {name!r} is not available: {reason}")
        if version and version != served.version:
            raise NotFound(f"model {name!r} has no version {version!r}; serving version {served.version}")
        return ModelSignature.from_version(served)

    async def model_ready(self, name: str, version: str = "") -> bool:
        """NOT_FOUND for unknown models; otherwise whether the runtime serves this version now."""
        try:
            signature = self.signature(name, version)
        except Unavailable:
            return False
        if not await self.ready():
            return False
        try:
            status = await self.service.runtime.to_async.status()
        except Exception:
            logger.debug("runtime status failed", exc_info=True)
            return False
        live = status.get(name, {})
        return "refused" not in live and str(live.get("version")) == signature.version

    def model_metadata(self, name: str, version: str = "") -> dict:
        return self.signature(name, version).metadata()

    async def infer(self, request: InferRequest) -> InferResponse:
        signature = self.signature(request.model, request.version)
        spec, tensor = signature.select_input(request.inputs)
        data = tensor.decode()
        from_files = spec == signature.files_input
        selected = signature.select_outputs(request.outputs, from_files)
        if from_files:  # decoding and resizing files is CPU work: keep it off the event loop
            prepared = await anyio.to_thread.run_sync(self._prepare, signature, spec, data)
        else:
            prepared = self._prepare(signature, spec, data)
        result = await self._run(signature.name, prepared.batch)
        if from_files:
            arrays = await anyio.to_thread.run_sync(signature.output_arrays, prepared, result.outputs, selected)
        else:
            arrays = signature.output_arrays(prepared, result.outputs, selected)
        outputs = [OutputTensor(s.name, s.datatype, array) for s, array in arrays]
        return InferResponse(signature.name, result.version, request.id, outputs)

    @staticmethod
    def _prepare(signature: ModelSignature, spec: TensorSpec, data: np.ndarray):
        return signature.prepare(spec, data, config.max_images(), config.max_image_bytes())

    async def _run(self, name: str, batch: np.ndarray):
        """One call of the runtime's batchable API through `VisionZoo.infer` (outputs and the version
        that computed them); errors become statuses."""
        try:
            return await self.service.infer(name, batch)
        except OIPError:
            raise
        except PayloadTooLarge as error:
            raise ResourceExhausted(str(error)) from None
        except RequestError as error:
            raise InvalidArgument(str(error)) from None
        except ModelUnavailable as error:
            raise Unavailable(str(error)) from None
        except BentoMLException as error:
            status = getattr(getattr(error, "error_code", None), "value", 500)
            if status in (429, 503):
                raise Unavailable(f"model {name!r} is overloaded; retry later") from None
            if status == 504:
                raise DeadlineExceeded(f"model {name!r} did not answer in time") from None
            logger.exception("runtime call for %s failed", name)
            raise Internal(f"model {name!r} failed: {error}") from None
