"""What Open Inference Protocol clients see of a served model, and how their tensors become the
runtime's float32 batch (and its outputs become response tensors).

Every model accepts one input per request, in one of three forms. ModelMetadata lists the model's
own input (`image`), which is always enough to build a request; ModelConfig lists all three, each
`optional`, since a request sends exactly one of them:

| input | datatype | shape | holds |
|---|---|---|---|
| `image` (metadata.json's name) | FP32 | [-1, H, W, C] | the model's own input: pixels 0..255 at model size |
| `image_uint8` | UINT8 | [-1, H, W, C] | the same pixels as bytes (4x smaller on the wire) |
| `image_bytes` | BYTES | [-1] | encoded image files (PNG, JPEG, any Pillow format, or .npy), any size |

Files go through `visionzoo.serving.processing` with the model's ImageSpec from metadata.json, exactly as the
BentoML endpoints do, so every protocol sees the same pixels.

Outputs are metadata.json's outputs. A tiled model (Mars: tiles of its input size, H x W) also offers
`class_map` (UINT8, [-1, -1, -1]): the per-pixel argmax of its first output. With tile inputs (`image`,
`image_uint8`) it is [N, H, W], one per tile; with `image_bytes` each file becomes several tiles,
so the per-tile probabilities no longer line up with the request's images and only `class_map` is
returned: [N, H, W], each image's class map at its original size, stitched from its tiles as
`/mars/segment` does. All files of one such request must then share one size (the output is one
tensor); send differently sized images in separate requests.

Outputs of shape [-1, classes] (one score per class: blood-cell `probabilities`, MURA `body_part`) can
be requested ranked, with Triton's classification extension: BYTES [N, k], "value:index:label" per class.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from visionzoo.preprocessing import ImageSpec

from ..processing import (
    DecodedImage,
    Limits,
    Upload,
    argmax_classes,
    class_map_from_tiles,
    decision_weights,
    decode_upload,
    stack_tiles,
)
from ..repository import ModelVersion
from .errors import InvalidArgument, ResourceExhausted
from .shared_memory import SharedMemoryRef
from .tensors import BYTES, format_shape

PLATFORM = "onnxruntime_onnx"  # Triton's name for ONNX Runtime models
CLASS_MAP = "class_map"
PIXELS_SUFFIX = "_uint8"
FILES_SUFFIX = "_bytes"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as ModelMetadata lists it; -1 is a dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def accepts(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.shape) and all(want in (-1, got) for want, got in zip(self.shape, shape))

    def describe(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def __str__(self) -> str:
        return f"{self.name} ({self.datatype} {format_shape(self.shape)})"


@dataclass
class RequestTensor:
    """An input as a request declares it; `decode` turns its data into an array of that shape.

    Decoding waits until the model and the declaration are checked, so a request for an unknown
    model is answered NOT_FOUND whatever its data holds.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    decode: Callable[[], np.ndarray] | None  # None while the data waits in shared memory (the backend reads it)
    nbytes: int = 0  # the size on the wire, to decide whether decoding leaves the event loop
    shared_memory: SharedMemoryRef | None = None  # where the data is, when the request put it in shared memory


@dataclass
class PreparedBatch:
    """The runtime's float32 batch and, for file inputs, the decoded images (sizes, tile counts)."""

    batch: np.ndarray
    images: list[DecodedImage] | None = None

    @property
    def from_files(self) -> bool:
        return self.images is not None


@dataclass(frozen=True)
class ModelSignature:
    """The OIP view of one served model version."""

    name: str
    version: str
    spec: ImageSpec
    model_input: TensorSpec
    model_outputs: tuple[TensorSpec, ...]
    tiled: bool = field(default=False)
    labels: dict = field(default_factory=dict, compare=False)
    learnable: tuple[int, ...] | None = None
    decision_weights: tuple[float, ...] | None = None

    @classmethod
    def from_version(cls, version: ModelVersion) -> ModelSignature:
        (source,) = version.inputs  # every served model takes one image tensor
        model_input = TensorSpec(source["name"], source["datatype"], tuple(source["shape"]))
        outputs = tuple(TensorSpec(o["name"], o["datatype"], tuple(o["shape"])) for o in version.outputs)
        spec = version.spec
        learnable = version.metadata.get("learnable_classes")
        weights = decision_weights(version.metadata)
        return cls(version.served_as, version.version, spec, model_input, outputs, spec.tiling != "none",
                   dict(version.labels), tuple(learnable) if learnable is not None else None,
                   tuple(weights) if weights is not None else None)

    @functools.cached_property
    def pixels_input(self) -> TensorSpec:
        return TensorSpec(self.model_input.name + PIXELS_SUFFIX, "UINT8", self.model_input.shape)

    @functools.cached_property
    def files_input(self) -> TensorSpec:
        return TensorSpec(self.model_input.name + FILES_SUFFIX, BYTES, (-1,))

    @functools.cached_property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self.model_input, self.pixels_input, self.files_input)

    @functools.cached_property
    def _inputs_by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.inputs}

    @property
    def class_map(self) -> TensorSpec | None:
        return TensorSpec(CLASS_MAP, "UINT8", (-1, -1, -1)) if self.tiled else None

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.model_outputs + ((self.class_map,) if self.tiled else ())

    def metadata(self) -> dict:
        """ModelMetadata: the model's own input (enough to build a request) and every output."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [self.model_input.describe()],
            "outputs": [t.describe() for t in self.outputs],
        }

    def _choices(self) -> str:
        return ", ".join(str(t) for t in self.inputs)

    def select_input(self, tensors: Sequence[RequestTensor]) -> tuple[TensorSpec, RequestTensor]:
        """The one input a request may send, checked against ModelMetadata (name, datatype, shape)."""
        if len(tensors) != 1:
            names = ", ".join(repr(t.name) for t in tensors) or "none"
            raise InvalidArgument(f"model {self.name!r} takes exactly one input, one of {self._choices()}; got {names}")
        (tensor,) = tensors
        known = self._inputs_by_name
        if tensor.name not in known:
            raise InvalidArgument(f"model {self.name!r} has no input {tensor.name!r}; inputs: {self._choices()}")
        spec = known[tensor.name]
        if tensor.datatype != spec.datatype:
            hint = {"FP32": f"FP32 pixels go in {self.model_input.name!r}",
                    "UINT8": f"UINT8 pixels go in {self.pixels_input.name!r}",
                    BYTES: f"encoded files go in {self.files_input.name!r}"}.get(tensor.datatype, f"inputs: {self._choices()}")
            raise InvalidArgument(
                f"input {tensor.name!r} of model {self.name!r} is {spec.datatype}, got {tensor.datatype} ({hint})")
        if not spec.accepts(tensor.shape):
            raise InvalidArgument(
                f"input {tensor.name!r} of model {self.name!r} has shape {format_shape(spec.shape)}, "
                f"got {format_shape(tensor.shape)}")
        return spec, tensor

    def select_outputs(self, requested: Sequence[str] | None, from_files: bool) -> list[TensorSpec]:
        """The outputs to return: the requested ones, else all that the input form produces."""
        available = [self.class_map] if (self.tiled and from_files) else list(self.outputs)
        if not requested:
            return available
        known = {t.name: t for t in self.outputs}
        chosen = []
        for name in requested:
            if name not in known:
                raise InvalidArgument(
                    f"model {self.name!r} has no output {name!r}; outputs: {', '.join(str(t) for t in self.outputs)}")
            if known[name] not in available:
                raise InvalidArgument(
                    f"output {name!r} of model {self.name!r} is per {self.spec.height}x{self.spec.width} tile and is "
                    f"returned for tile inputs ({self.model_input.name!r}, {self.pixels_input.name!r}); with "
                    f"{self.files_input.name!r} request {CLASS_MAP!r}, each image's class map at its own size")
            if known[name] not in chosen:
                chosen.append(known[name])
        return chosen

    def _per_class(self, spec: TensorSpec) -> bool:
        """Whether an output holds one score per class ([-1, classes], one label per score when labelled)."""
        labels = self.labels.get(spec.name)
        return (spec.datatype != BYTES and len(spec.shape) == 2 and spec.shape[0] == -1 and spec.shape[1] > 0
                and (labels is None or len(labels) == spec.shape[1]))

    def check_classification(self, spec: TensorSpec) -> None:
        """Triton's classification extension applies to outputs with one score per class."""
        if self._per_class(spec):
            return
        name, labels = spec.name, self.labels.get(spec.name)
        if labels is not None and len(spec.shape) == 2 and spec.shape[1] == 1:
            reason = f"it is one probability (of {labels[-1]!r}), not a score per class; request it without classification"
        else:
            reason = "the classification parameter ranks outputs of shape [-1, classes]"
        ranked = [repr(t.name) for t in self.outputs if self._per_class(t)]
        where = f"outputs that can be ranked: {', '.join(ranked)}" if ranked else "this model has none"
        raise InvalidArgument(f"output {name!r} of model {self.name!r} is {spec.datatype} {format_shape(spec.shape)}: "
                              f"{reason} ({where})")

    def classified(self, name: str, scores: np.ndarray, count: int) -> np.ndarray:
        """[N, classes] scores -> BYTES [N, min(count, classes)]: each image's top classes, highest first, as
        "value:index:label" (Triton's classification extension; the value printed as C's %f, as Triton does)."""
        labels = self.labels.get(name)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :count]
        rows = [[(f"{float(row[k]):f}:{k}" + (f":{labels[k]}" if labels else "")).encode() for k in order]
                for row, order in zip(scores, top)]
        found = np.empty(top.shape, dtype=np.object_)
        found[...] = rows
        return found

    def engine_outputs(self, selected: Sequence[TensorSpec]) -> tuple[str, ...]:
        """The exported outputs the engine must compute for `selected` (class_map needs the probabilities)."""
        names = {self.model_outputs[0].name if spec.name == CLASS_MAP else spec.name for spec in selected}
        return tuple(spec.name for spec in self.model_outputs if spec.name in names)

    def config(self, batcher, slot) -> dict:
        """Triton's ModelConfig (JSON form): batching, inputs (each optional: a request sends one of
        them), outputs with their labels, preprocessing as parameters."""

        def tensor(spec: TensorSpec, optional: bool | None = None) -> dict:
            dims = [int(d) for d in spec.shape[1:]] if spec.shape[0] == -1 else [int(d) for d in spec.shape]
            found = {"name": spec.name, "data_type": "TYPE_STRING" if spec.datatype == BYTES else f"TYPE_{spec.datatype}",
                     "dims": dims or [1]}
            if optional is not None:
                found["optional"] = optional
            return found

        outputs = []
        for spec in self.outputs:
            entry = tensor(spec)
            if spec.name in self.labels:
                entry["label_filename"] = f"labels/{spec.name}.txt"
            outputs.append(entry)
        parameters = {f"labels.{name}": {"string_value": ",".join(values)} for name, values in self.labels.items()}
        parameters.update({f"preprocessing.{key}": {"string_value": str(value)} for key, value in self.spec.to_dict().items()})
        parameters["input_forms"] = {"string_value": f"send exactly one of {', '.join(t.name for t in self.inputs)}"}
        if self.learnable is not None:
            parameters["learnable_classes"] = {"string_value": ",".join(str(k) for k in self.learnable)}
        if self.decision_weights is not None:
            parameters["decision_weights"] = {"string_value": ",".join(f"{w:g}" for w in self.decision_weights)}
        kind = "KIND_GPU" if slot.engine.device == "cuda" else "KIND_CPU"
        return {
            "name": self.name,
            "platform": PLATFORM,
            "backend": slot.engine.kind,
            "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": batcher.max_batch_size,
            "input": [tensor(spec, optional=True) for spec in self.inputs],
            "output": outputs,
            "dynamic_batching": {
                "preferred_batch_size": list(batcher.preferred_batch_sizes),
                "max_queue_delay_microseconds": batcher.max_queue_delay_us,
                "default_queue_policy": {"timeout_action": "REJECT", "default_timeout_microseconds": batcher.queue_timeout_us,
                                         "max_queue_size": batcher.max_queue_size},
            },
            "instance_group": [{"name": f"{self.name}_0", "kind": kind, "count": batcher.instances}],
            "model_transaction_policy": {"decoupled": False},  # one answer per request, on a stream too
            "parameters": parameters,
        }

    def prepare(self, spec: TensorSpec, data: np.ndarray, limits: Limits) -> PreparedBatch:
        """A checked input array -> the engine's float32 batch (decoding files for `image_bytes`)."""
        count = data.shape[0]
        if count == 0:
            raise InvalidArgument(f"input {spec.name!r} holds no images (shape {format_shape(data.shape)})")
        if count > limits.max_images:
            raise ResourceExhausted(
                f"input {spec.name!r} holds {count} images, the limit per request is {limits.max_images} (VISIONZOO_MAX_IMAGES)")
        if spec is self.model_input:
            low, high = float(data.min()), float(data.max())  # NaN makes both comparisons false
            if not (0.0 <= low and high <= 255.0):
                problem = "contains NaN or infinity" if not (np.isfinite(low) and np.isfinite(high)) else \
                    f"pixel values must lie in 0..255, got {low:g}..{high:g}"
                raise InvalidArgument(f"input {spec.name!r}: {problem}")
            return PreparedBatch(np.ascontiguousarray(data, dtype=np.float32))
        if spec is self.pixels_input:
            return PreparedBatch(data.astype(np.float32))
        images = [self._decode_file(f"{spec.name}[{i}]", element, limits) for i, element in enumerate(data)]
        tiles = sum(len(image.tiles) for image in images)
        if tiles > limits.max_tiles_per_request:
            raise ResourceExhausted(f"input {spec.name!r} becomes {tiles} model inputs, the limit is "
                                    f"{limits.max_tiles_per_request} (VISIONZOO_MAX_TILES_PER_REQUEST)")
        if self.tiled:
            sizes = sorted({(image.height, image.width) for image in images})
            if len(sizes) > 1:
                shown = ", ".join(f"{h}x{w}" for h, w in sizes)
                raise InvalidArgument(
                    f"input {spec.name!r}: the images of one request must share a size, because {CLASS_MAP!r} "
                    f"returns them as one [N, H, W] tensor; got {shown}: send them in separate requests")
        return PreparedBatch(stack_tiles(images), images)

    def _decode_file(self, label: str, element: bytes, limits: Limits) -> DecodedImage:
        decoded = decode_upload(Upload(label, bytes(element)), self.spec, limits)
        if len(decoded) != 1:
            raise InvalidArgument(f"{label}: holds {len(decoded)} images (a .npy batch); send one image per element")
        return decoded[0]

    def output_arrays(self, prepared: PreparedBatch, results: dict[str, np.ndarray],
                      selected: Sequence[TensorSpec]) -> list[tuple[TensorSpec, np.ndarray]]:
        """Runtime outputs (keyed by metadata.json name) -> the selected response tensors."""
        arrays = []
        for spec in selected:
            if spec.name == CLASS_MAP and self.tiled:
                probabilities = results[self.model_outputs[0].name]
                if prepared.from_files:
                    arrays.append((spec, self._class_maps(prepared.images, probabilities)))
                else:
                    arrays.append((spec, argmax_classes(probabilities, self.learnable, self.decision_weights)))
            else:
                arrays.append((spec, np.ascontiguousarray(results[spec.name], dtype=np.float32)))
        return arrays

    def _class_maps(self, images: list[DecodedImage], probabilities: np.ndarray) -> np.ndarray:
        maps, start = [], 0
        for image in images:
            stop = start + len(image.tiles)
            maps.append(class_map_from_tiles(probabilities[start:stop], image.height, image.width, self.learnable,
                                             self.spec.tile_overlap, self.decision_weights))
            start = stop
        return np.stack(maps).astype(np.uint8)
