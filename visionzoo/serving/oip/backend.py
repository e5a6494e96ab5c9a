"""The protocol's operations over the served models, shared by the REST routes and the gRPC servicer:
health, metadata, configuration, statistics, repository and inference.

Inference goes through `ServedModel.infer`, the path the BentoML endpoints use, so a request over any
protocol joins the same queue and batch as the others. No batcher or engine lives here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import __version__
from .. import config
from ..errors import ServingError
from ..pipeline import ModelSet, ServedModel, Slot
from .errors import InvalidArgument, NotFound, ResourceExhausted
from .models import ModelSignature, PreparedBatch, RequestTensor, TensorSpec
from .shared_memory import SharedMemoryRef, regions_of
from .tensors import BYTES, from_raw, to_raw

SERVER_NAME = "visionzoo"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository", "statistics",
              "schedule_policy"]
OFFLOAD_BYTES = 256 * 1024  # tensors larger than this are converted in the thread pool, not on the event loop


@dataclass
class InferRequest:
    model: str
    version: str = ""
    id: str = ""
    inputs: list[RequestTensor] = field(default_factory=list)
    outputs: list[str] | None = None  # None: every output the input form produces
    classification: dict[str, int] = field(default_factory=dict)  # output -> top classes to return as BYTES
    shared_memory: dict[str, SharedMemoryRef] = field(default_factory=dict)  # output -> where to write it


@dataclass
class OutputTensor:
    name: str
    datatype: str
    data: np.ndarray
    shared_memory: dict[str, Any] | None = None  # written to shared memory: the parameters that say where (no data)

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass
class InferResponse:
    model: str
    version: str
    id: str
    outputs: list[OutputTensor]


_signatures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def signature_of(slot: Slot) -> ModelSignature:
    """The OIP view of a loaded version, built once per slot."""
    found = _signatures.get(slot)
    if found is None:
        found = _signatures[slot] = ModelSignature.from_version(slot.version)
    return found


def classification_count(name: str, parameters: Mapping[str, Any]) -> int | None:
    """A requested output's parameters (plain values) -> the count of its `classification` parameter
    (Triton's classification extension: the top classes as "value:index:label" strings), or None.
    Other parameters are shared memory's (shared_memory.reference) or the transport's (binary_data)."""
    if "classification" not in parameters:
        return None
    count = parameters["classification"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidArgument(f"output {name!r}: the classification parameter is the number of top classes to return, "
                              f"a positive integer; got {count!r}")
    return count


class Backend:
    """Protocol operations over a ModelSet."""

    def __init__(self, models: ModelSet) -> None:
        self.models = models
        self.shared_memory = regions_of(models, config.server_settings().system_shared_memory)

    def server_metadata(self) -> dict:
        extensions = [*EXTENSIONS, "system_shared_memory"] if self.shared_memory.enabled else list(EXTENSIONS)
        return {"name": SERVER_NAME, "version": __version__, "extensions": extensions}

    def ready(self) -> bool:
        return self.models.ready()

    def served(self, name: str, version: str = "") -> tuple[ServedModel, Slot]:
        """The model and its live slot (which must be `version` when one is given)."""
        model = self.models[name]
        slot = model.live()
        if version and version != slot.number:
            raise NotFound(f"model {name!r} has no version {version!r} loaded; serving version {slot.number}")
        return model, slot

    def signature(self, name: str, version: str = "") -> ModelSignature:
        return signature_of(self.served(name, version)[1])

    def model_ready(self, name: str, version: str = "") -> bool:
        """NOT_FOUND for unknown models; otherwise whether this version serves now."""
        model = self.models[name]
        if model.slot is None or model.state != "ready":
            return False
        return not version or version == model.slot.number

    def model_metadata(self, name: str, version: str = "") -> dict:
        return self.signature(name, version).metadata()

    def model_config(self, name: str, version: str = "") -> dict:
        model, slot = self.served(name, version)
        return signature_of(slot).config(model.settings.batcher, slot)

    def statistics(self, name: str = "", version: str = "") -> list[dict]:
        names = [name] if name else list(self.models.models)
        found = []
        for model_name in names:
            model = self.models[model_name]
            if version and (model.slot is None or model.slot.number != version):
                raise NotFound(f"model {model_name!r} has no version {version!r} loaded")
            found.append(model.statistics())
        return found

    def repository_index(self) -> list[dict]:
        return self.models.repository_index()

    async def infer(self, request: InferRequest, protocol: str) -> InferResponse:
        model, slot = self.served(request.model, request.version)
        started = time.perf_counter()
        try:
            response = await self._infer(model, slot, request)
        except ServingError as error:
            model.count(slot.number, protocol, started, error.reason)
            raise
        except Exception:
            model.count(slot.number, protocol, started, "internal")
            raise
        model.count(response.version, protocol, started)
        return response

    async def _infer(self, model: ServedModel, slot: Slot, request: InferRequest) -> InferResponse:
        signature = signature_of(slot)
        spec, tensor = signature.select_input(request.inputs)
        if tensor.shared_memory is not None:
            tensor = self._in_shared_memory(tensor)
        from_files = spec == signature.files_input
        selected = signature.select_outputs(request.outputs, from_files)
        for output in selected:
            if output.name in request.classification:
                signature.check_classification(output)
        for ref in request.shared_memory.values():  # an unknown region is refused before any work
            self.shared_memory.region(ref.region)
        heavy = from_files or tensor.nbytes > OFFLOAD_BYTES
        # one model input per image or file, or more (tiles); a shapeless tensor is refused with its reason later
        with model.reserve(tensor.shape[0] if tensor.shape else 0) as room:
            prepared: PreparedBatch = await self._maybe_offload(heavy, self._prepare, model, signature, spec, tensor)
            inference = await model.infer(prepared.batch, signature.engine_outputs(selected), slot=slot,
                                          reservation=room)
        done = signature_of(inference.slot)
        arrays = await self._maybe_offload(from_files and done.tiled, done.output_arrays, prepared, inference.outputs, selected)
        outputs = [OutputTensor(s.name, BYTES, done.classified(s.name, array, request.classification[s.name]))
                   if s.name in request.classification else OutputTensor(s.name, s.datatype, array) for s, array in arrays]
        for output in outputs:
            if output.name in request.shared_memory:
                self._to_shared_memory(output, request.shared_memory[output.name])
        return InferResponse(signature.name, inference.slot.number, request.id, outputs)

    def _in_shared_memory(self, tensor: RequestTensor) -> RequestTensor:
        """The input with its data read from its registered region when decoded; no more than a
        request body may carry (what a transport's limit would have refused)."""
        ref, region = tensor.shared_memory, self.shared_memory.region(tensor.shared_memory.region)
        what = f"input {tensor.name!r}"
        limit = config.server_settings().max_request_bytes
        if ref.byte_size > limit:
            raise ResourceExhausted(f"{what}: {ref.byte_size} bytes in shared memory, more than the {limit} one request "
                                    "may carry (VISIONZOO_MAX_REQUEST_BYTES)")

        def decode() -> np.ndarray:
            return from_raw(tensor.name, tensor.datatype, tensor.shape, region.read(ref, what))

        return dataclasses.replace(tensor, decode=decode, shared_memory=None)

    def _to_shared_memory(self, output: OutputTensor, ref: SharedMemoryRef) -> None:
        """Write the output's raw bytes into its region; the answer then carries where, not the data."""
        raw = to_raw(output.data, output.datatype)
        self.shared_memory.region(ref.region).write(ref, raw, f"output {output.name!r}")
        output.shared_memory = ref.parameters(len(raw))

    @staticmethod
    def _prepare(model: ServedModel, signature: ModelSignature, spec: TensorSpec, tensor: RequestTensor) -> PreparedBatch:
        return signature.prepare(spec, tensor.decode(), model.limits())

    async def _maybe_offload(self, offload: bool, function, *args):
        if not offload:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self.models.decode_pool, function, *args)
