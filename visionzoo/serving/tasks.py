"""What each kind of model does with its outputs, and which endpoints it offers.

A served model's task comes from its metadata.json (`task`); the BentoML service builds one endpoint
per (model, task endpoint) from this table, so a new model of a known task needs only its manifest
entry. Each task turns the decoded images and the engine's outputs into the JSON answer; the
settings that shape it (labels, the decision threshold, the classes training could learn) are read
from metadata.json here and nowhere else.

| task | endpoints | outputs it reads |
|---|---|---|
| `classification` | `predict` | one probability vector per image |
| `multitask` | `predict`, `predict_study` | `abnormal` (sigmoid) and a categorical head (`body_part`) |
| `segmentation` | `segment` | per-pixel probabilities per tile; tiles stitched back to the frame |

Classification and multitask versions exported with a Grad-CAM output (`cam`, metadata.json `explain`)
also answer `explain=true` with a heatmap PNG per image; the engine computes `cam` only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from . import processing
from .processing import DecodedImage, RequestError
from .repository import ModelVersion
from .schemas import (
    ClassificationResponse,
    MultitaskResponse,
    SegmentationResponse,
    StudyResponse,
)


@dataclass(frozen=True)
class Option:
    """One form field of an endpoint besides `images`."""

    name: str
    annotation: Any
    default: Any
    description: str
    examples: tuple = ()


@dataclass(frozen=True)
class Endpoint:
    """One BentoML endpoint of a task: POST /<model>/<verb>, method `<model>_<verb>`."""

    verb: str
    summary: str
    response: type[BaseModel]
    options: tuple[Option, ...] = ()


EXPLAIN = Option("explain", bool, False, "also return heatmap_png per image: the Grad-CAM map of the answer (where the "
                 "model looked) over the image; needs a version exported with a `cam` output", (True,))


class Task:
    """A task kind; one instance per loaded model version."""

    kind: ClassVar[str] = ""
    endpoints: ClassVar[tuple[Endpoint, ...]] = ()

    def __init__(self, version: ModelVersion) -> None:
        self.version = version
        self.metadata = version.metadata

    @property
    def explains(self) -> bool:
        """Whether this version computes a Grad-CAM map (output `cam`)."""
        return any(output["name"] == processing.CAM_OUTPUT for output in self.version.outputs)

    def keep_source(self, options: dict) -> bool:
        """Whether decoding must keep the decoded image (for an overlay or a heatmap)."""
        return bool(options.get("explain"))

    def check(self, verb: str, options: dict) -> None:
        """Raise RequestError for option values this version cannot honour (before any decoding)."""
        if options.get("explain") and not self.explains:
            raise RequestError(f"explain=true: version {self.version.version} of {self.version.served_as!r} has no Grad-CAM "
                               "output; serve a version exported with one (`visionzoo revise VERSION --explain`)")

    def answer_outputs(self) -> tuple[str, ...] | None:
        """The model outputs every answer reads (None: all of them)."""
        return None

    def engine_outputs(self, options: dict) -> tuple[str, ...] | None:
        """The model outputs this answer needs, so the engine skips the Grad-CAM branch unless asked."""
        needed = self.answer_outputs()
        if needed is None or not self.explains:
            return None  # a version without `cam` computes only what answers read anyway
        return needed + ((processing.CAM_OUTPUT,) if options.get("explain") else ())

    def heavy_results(self, options: dict) -> bool:
        """Whether shaping the answer is heavy enough for the thread pool (image encoding)."""
        return bool(options.get("explain"))

    def heatmap(self, image: DecodedImage, cam: np.ndarray) -> str:
        import base64

        return base64.b64encode(processing.heatmap_png(processing.source_image(image), cam)).decode()

    def results(self, verb: str, images: list[DecodedImage], outputs: dict[str, np.ndarray], options: dict) -> dict:
        raise NotImplementedError


def _split(images: list[DecodedImage], values: np.ndarray) -> list[np.ndarray]:
    """Per-image slices of per-tile outputs."""
    parts, start = [], 0
    for image in images:
        stop = start + len(image.tiles)
        parts.append(values[start:stop])
        start = stop
    return parts


class Classification(Task):
    kind = "classification"
    endpoints = (
        Endpoint("predict", "Images -> class probabilities and the top-k labels per image.", ClassificationResponse, (
            Option("top_k", int, 3, "how many of the most likely labels to list per image (1 to the number of classes)", (3, 1)),
            EXPLAIN,
        )),
    )

    def answer_outputs(self) -> tuple[str, ...]:
        return (self.output,)

    @property
    def output(self) -> str:
        return self.version.outputs[0]["name"]

    @property
    def labels(self) -> list[str]:
        return self.version.labels[self.output]

    def check(self, verb: str, options: dict) -> None:
        super().check(verb, options)
        top_k = options.get("top_k", 3)
        if not 1 <= top_k <= len(self.labels):
            raise RequestError(f"top_k must be between 1 and {len(self.labels)}, got {top_k}")

    def results(self, verb, images, outputs, options) -> dict:
        probabilities = outputs[self.output]
        top_k = options.get("top_k", 3)
        predictions = [processing.classification_result(image.name, probabilities[i], self.labels, top_k)
                       for i, image in enumerate(images)]
        if options.get("explain"):
            for i, (image, prediction) in enumerate(zip(images, predictions)):
                prediction["heatmap_png"] = self.heatmap(image, outputs[processing.CAM_OUTPUT][i])
        return {"predictions": predictions}


class Multitask(Task):
    """A binary abnormality head (`abnormal`, sigmoid) beside a categorical head (the MURA design)."""

    kind = "multitask"
    endpoints = (
        Endpoint("predict", "X-ray images -> per image: abnormal probability and label, body-part distribution and "
                 "top body part.", MultitaskResponse, (EXPLAIN,)),
        Endpoint("predict_study", "Several views of one study -> the study's abnormal probability (mean over views, "
                 "as the MURA paper does), its label, and each view's result.", StudyResponse, (EXPLAIN,)),
    )

    def answer_outputs(self) -> tuple[str, ...]:
        return ("abnormal", "body_part")

    @property
    def threshold(self) -> float:
        """The decision threshold chosen at export (metadata.json `threshold`), 0.5 when none was."""
        value = self.metadata.get("threshold")
        return 0.5 if value is None else float(value)

    @property
    def labels(self) -> dict[str, list[str]]:
        labels = dict(self.version.labels)
        labels.setdefault("abnormal", ["normal", "abnormal"])
        return labels

    def results(self, verb, images, outputs, options) -> dict:
        labels, threshold = self.labels, self.threshold
        views = [processing.multitask_result(image.name, float(outputs["abnormal"][i, 0]), outputs["body_part"][i],
                                             labels, threshold)
                 for i, image in enumerate(images)]
        if options.get("explain"):
            for i, (image, view) in enumerate(zip(images, views)):
                view["heatmap_png"] = self.heatmap(image, outputs[processing.CAM_OUTPUT][i])
        if verb == "predict_study":
            return processing.study_result(views, labels, threshold)
        return {"predictions": views}


class Segmentation(Task):
    """Per-pixel classes of tiled frames, stitched back and resized to each frame's own size."""

    kind = "segmentation"
    endpoints = (
        Endpoint("segment", "Terrain images (any size; cut into model tiles without distorting aspect) -> per image "
                 "the class map at the original size, the share of pixels per class, and optionally an overlay.",
                 SegmentationResponse, (
                     Option("mask_format", Literal["png", "npy"], "png",
                            "png: palette PNG whose pixel values are class indices; npy: base64 .npy uint8 array", ("png", "npy")),
                     Option("overlay", bool, False, "also return the image tinted by class, with a legend", (True,)),
                     Option("overlay_opacity", float, processing.OVERLAY_OPACITY,
                            "tint strength of the overlay, 0 (image only) to 1 (classes only)", (0.6,)),
                 )),
    )

    @property
    def output(self) -> str:
        return self.version.outputs[0]["name"]

    @property
    def labels(self) -> list[str]:
        return self.version.labels[self.output]

    @property
    def learnable(self) -> list[int] | None:
        """The classes training could learn (metadata.json `learnable_classes`); the argmax runs over
        these only, so a class that only marked unlabelled pixels is never predicted."""
        value = self.metadata.get("learnable_classes")
        return None if value is None else [int(k) for k in value]

    @property
    def decision_weights(self) -> list[float] | None:
        """Per-class multipliers on the probabilities before the argmax (metadata.json
        `decision_weights`, processing.argmax_classes); None: unweighted."""
        return processing.decision_weights(self.metadata)

    @property
    def tile_overlap(self) -> float:
        """How much the model's tiles overlap (ImageSpec.tile_overlap): their outputs are blended."""
        return self.version.spec.tile_overlap

    def keep_source(self, options: dict) -> bool:
        return bool(options.get("overlay"))

    def heavy_results(self, options: dict) -> bool:
        return True

    def check(self, verb: str, options: dict) -> None:
        super().check(verb, options)
        opacity = options.get("overlay_opacity", processing.OVERLAY_OPACITY)
        if not 0.0 <= opacity <= 1.0:
            raise RequestError(f"overlay_opacity must be between 0 and 1, got {opacity}")
        if options.get("mask_format", "png") not in ("png", "npy"):
            raise RequestError(f"mask_format must be 'png' or 'npy', got {options.get('mask_format')!r}")

    def class_map(self, image: DecodedImage, probabilities: np.ndarray) -> np.ndarray:
        return processing.class_map_from_tiles(probabilities, image.height, image.width, self.learnable,
                                               self.tile_overlap, self.decision_weights)

    def results(self, verb, images, outputs, options) -> dict:
        labels = self.labels
        colors = processing.class_colors(len(labels))
        segmentations = []
        for image, probabilities in zip(images, _split(images, outputs[self.output])):
            class_map = self.class_map(image, probabilities)
            result = {"file": image.name, "height": image.height, "width": image.width, "tiles": len(probabilities),
                      "classes": labels, "class_fractions": processing.class_fractions(class_map, labels),
                      **processing.encode_class_map(class_map, options.get("mask_format", "png"), colors)}
            if options.get("overlay"):
                import base64

                source = image.source if image.source is not None else _tiles_image(image, self.tile_overlap)
                png = processing.overlay_png(source, class_map, colors, labels,
                                             options.get("overlay_opacity", processing.OVERLAY_OPACITY), self.learnable)
                result["overlay_png"] = base64.b64encode(png).decode()
            segmentations.append(result)
        return {"segmentations": segmentations}


def _tiles_image(image: DecodedImage, overlap: float):
    """The image as the model saw it, at its original size (when the decoded source was not kept)."""
    from PIL import Image

    from visionzoo.preprocessing import blend_tiles

    pixels = blend_tiles(image.tiles, overlap)
    stitched = Image.fromarray(np.clip(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, 0, 255).astype(np.uint8))
    return stitched.resize((image.width, image.height), Image.Resampling.BILINEAR)


TASKS: dict[str, type[Task]] = {task.kind: task for task in (Classification, Multitask, Segmentation)}


def task_class(kind: str) -> type[Task]:
    try:
        return TASKS[kind]
    except KeyError:
        raise ValueError(f"unknown task {kind!r} in metadata.json; the service knows {', '.join(TASKS)}") from None


def option_field(option: Option):
    return (option.annotation, Field(option.default, description=option.description, examples=list(option.examples)))
