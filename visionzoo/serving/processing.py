"""Pure request and response processing, driven by each model's metadata.json.

Decoding, resizing and colour conversion go through `visionzoo.preprocessing` (the functions training
used), so a served model sees the pixels it was trained on. Nothing here knows a model's size, colour
mode or classes except through the `ImageSpec` and labels it is given.

Every upload is bounded before it costs memory: bytes per file, pixels per image (read from the
header, before decoding), model tiles per image and per request, and `.npy` arrays by their header.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from visionzoo.preprocessing import (
    ImageDecodeError,
    ImageSpec,
    ImageTooLarge,
    blend_tiles,
    load_image,
    peek_size,
    prepare_tiles,
    resize_label_map,
    tile_count,
)

NPY_MAGIC = b"\x93NUMPY"
NPY_DTYPES = "uif"  # unsigned, signed, float
OVERLAY_OPACITY = 0.5


from .errors import InvalidInput as RequestError
from .errors import TooLarge as PayloadTooLarge
from .errors import UnsupportedMedia as UnsupportedMediaType


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name (for error messages) and bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Limits:
    """The work one request may cause (serving/config.py: VISIONZOO_MAX_*)."""

    max_images: int = 64
    max_image_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_tiles_per_image: int = 16
    max_tiles_per_request: int = 128


@dataclass(frozen=True)
class DecodedImage:
    """One image after preprocessing: model input tiles (1 unless tiled) and the original size."""

    name: str
    tiles: np.ndarray  # (tiles, H, W, C) float32 pixels in 0..255
    height: int
    width: int
    source: Image.Image | None = None  # the decoded image, kept only when an overlay needs it


def check_count(count: int, limits: Limits, field: str = "images") -> None:
    if count == 0:
        raise RequestError(f"no images: send one or more files in the multipart field '{field}'")
    if count > limits.max_images:
        raise PayloadTooLarge(f"too many images: {count} in one request, the limit is {limits.max_images} (VISIONZOO_MAX_IMAGES)")


def check_size(upload: Upload, limits: Limits) -> None:
    if len(upload.data) > limits.max_image_bytes:
        raise PayloadTooLarge(
            f"{upload.name}: {len(upload.data)} bytes, the limit per file is {limits.max_image_bytes} (VISIONZOO_MAX_IMAGE_BYTES)")


def check_tiles(name: str, tiles: int, limits: Limits) -> None:
    if tiles > limits.max_tiles_per_image:
        raise PayloadTooLarge(
            f"{name}: this image would be cut into {tiles} model tiles, the limit is {limits.max_tiles_per_image} "
            "(VISIONZOO_MAX_TILES_PER_IMAGE); send frames closer to the model's aspect ratio or crop them")


def read_npy_header(upload: Upload) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a .npy file, from its header alone."""
    stream = io.BytesIO(upload.data)
    try:
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported; save with numpy.save")
        shape, fortran, dtype = readers[version](stream, max_header_size=10_000)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise RequestError(f"{upload.name}: not a readable .npy array ({error})") from None
    if dtype.hasobject or dtype.kind not in NPY_DTYPES:
        raise UnsupportedMediaType(f"{upload.name}: array dtype {dtype} is not numeric; send uint8 or float pixels 0..255")
    if fortran:
        raise RequestError(f"{upload.name}: Fortran-ordered arrays are not accepted; save a C-ordered array")
    return tuple(int(d) for d in shape), dtype, stream.tell()


def read_npy(upload: Upload, limits: Limits) -> list[tuple[str, np.ndarray]]:
    """A .npy file holding one image (H, W[, C]) or a batch (N, H, W, C); pixels 0..255."""
    shape, dtype, offset = read_npy_header(upload)
    if len(shape) not in (2, 3, 4):
        raise RequestError(f"{upload.name}: expected an image (H, W[, C]) or a batch (N, H, W, C), got shape {shape}")
    count = math.prod(shape)
    if count == 0:
        raise RequestError(f"{upload.name}: the array is empty {shape}")
    images = shape[0] if len(shape) == 4 else 1
    if images > limits.max_images:
        raise PayloadTooLarge(f"{upload.name}: {images} images in one array, the limit is {limits.max_images} (VISIONZOO_MAX_IMAGES)")
    pixels = math.prod(shape[-3:-1] if len(shape) == 4 else shape[:2])
    if pixels > limits.max_image_pixels:
        raise PayloadTooLarge(f"{upload.name}: {pixels} pixels per image, more than the {limits.max_image_pixels} allowed "
                              "(VISIONZOO_MAX_IMAGE_PIXELS)")
    expected = count * dtype.itemsize
    if len(upload.data) - offset != expected:
        raise RequestError(f"{upload.name}: the header declares {shape} {dtype} ({expected} bytes), "
                           f"the file holds {len(upload.data) - offset} bytes of data")
    array = np.frombuffer(upload.data, dtype=dtype, count=count, offset=offset).reshape(shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(f"{upload.name}: the array contains NaN or infinity")
    if len(shape) == 4:
        return [(f"{upload.name}[{i}]", item) for i, item in enumerate(array)]
    return [(upload.name, array)]


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise RequestError(f"{name}: an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.dtype != np.uint8:
        if array.size and (float(array.min()) < 0 or float(array.max()) > 255):
            raise RequestError(f"{name}: pixel values must lie in 0..255, got {float(array.min()):g}..{float(array.max()):g}")
        array = np.round(array).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _from_array(name: str, array: np.ndarray, spec: ImageSpec, limits: Limits, keep_source: bool) -> DecodedImage:
    if array.ndim == 2:
        array = array[..., None]
    if array.shape == spec.shape:
        # Already one model-size input: use the values as they are (float inputs keep their precision).
        pixels = array.astype(np.float32)
        if pixels.size and (float(pixels.min()) < 0 or float(pixels.max()) > 255):
            raise RequestError(f"{name}: pixel values must lie in 0..255, got {float(pixels.min()):g}..{float(pixels.max()):g}")
        return DecodedImage(name, pixels[None], spec.height, spec.width)
    return _from_image(name, _array_to_image(array, name), spec, limits, keep_source)


def _from_image(name: str, image: Image.Image, spec: ImageSpec, limits: Limits, keep_source: bool) -> DecodedImage:
    check_tiles(name, tile_count(image.height, image.width, spec), limits)
    try:
        tiles = prepare_tiles(image, spec, name)
    except ImageDecodeError as error:
        raise UnsupportedMediaType(str(error)) from error
    return DecodedImage(name, tiles.astype(np.float32), image.height, image.width, image if keep_source else None)


def decode_upload(upload: Upload, spec: ImageSpec, limits: Limits, keep_source: bool = False) -> list[DecodedImage]:
    """Turn one uploaded file (PNG, JPEG, any Pillow format, or .npy) into model inputs."""
    check_size(upload, limits)
    if upload.data.startswith(NPY_MAGIC):
        return [_from_array(name, array, spec, limits, keep_source) for name, array in read_npy(upload, limits)]
    size = peek_size(upload.data)
    if size is not None:  # bound the work from the header, before decoding anything
        if size[0] * size[1] > limits.max_image_pixels:
            raise PayloadTooLarge(f"{upload.name}: {size[0]}x{size[1]} pixels, more than the {limits.max_image_pixels} "
                                  "allowed (VISIONZOO_MAX_IMAGE_PIXELS)")
        check_tiles(upload.name, tile_count(size[1], size[0], spec), limits)
    try:
        image = load_image(upload.data, spec, upload.name, max_pixels=limits.max_image_pixels)
    except ImageTooLarge as error:
        raise PayloadTooLarge(f"{error} (VISIONZOO_MAX_IMAGE_PIXELS)") from error
    except ImageDecodeError as error:
        if isinstance(error.__cause__, Image.DecompressionBombError):  # too large for Pillow even to read its header
            raise PayloadTooLarge(f"{upload.name}: more pixels than Pillow decodes safely, and more than the "
                                  f"{limits.max_image_pixels} allowed (VISIONZOO_MAX_IMAGE_PIXELS)") from error
        status = RequestError if "empty file" in str(error) else UnsupportedMediaType
        raise status(f"{error}; send PNG or JPEG files (or .npy arrays)") from error
    return [_from_image(upload.name, image, spec, limits, keep_source)]


def decode_uploads(uploads: list[Upload], spec: ImageSpec, limits: Limits, keep_source: bool = False) -> list[DecodedImage]:
    check_count(len(uploads), limits)
    images: list[DecodedImage] = []
    tiles = 0
    for upload in uploads:
        for image in decode_upload(upload, spec, limits, keep_source):
            images.append(image)
            tiles += len(image.tiles)
            check_count(len(images), limits)
            if tiles > limits.max_tiles_per_request:
                raise PayloadTooLarge(f"this request becomes more than {limits.max_tiles_per_request} model inputs "
                                      f"({len(images)} images so far); the limit is VISIONZOO_MAX_TILES_PER_REQUEST: "
                                      "send fewer images per request")
    return images


def stack_tiles(images: list[DecodedImage]) -> np.ndarray:
    return np.concatenate([image.tiles for image in images]).astype(np.float32, copy=False)


def check_finite(name: str, outputs: dict[str, np.ndarray]) -> None:
    """A model that answers NaN or infinity is refused rather than sent (JSON has no NaN)."""
    for output, values in outputs.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"model {name!r} produced non-finite values in {output!r}")


# ---- results ----------------------------------------------------------------------------------

def classification_result(name: str, probabilities: np.ndarray, labels: list[str], top_k: int) -> dict:
    values = probabilities.tolist()  # a few classes: plain Python is faster than numpy calls here
    order = sorted(range(len(values)), key=lambda k: -values[k])  # stable: ties keep label order
    return {
        "file": name,
        "label": labels[order[0]],
        "probability": values[order[0]],
        "top_k": [{"label": labels[k], "probability": values[k]} for k in order[: max(1, top_k)]],
        "probabilities": dict(zip(labels, values)),
    }


def binary_label(probability: float, names: list[str], threshold: float) -> str:
    return names[int(probability >= threshold)]


def multitask_result(name: str, abnormal: float, body_part: np.ndarray, labels: dict, threshold: float) -> dict:
    part = int(np.argmax(body_part))
    return {
        "file": name,
        "abnormal_probability": float(abnormal),
        "label": binary_label(abnormal, labels["abnormal"], threshold),
        "body_part": labels["body_part"][part],
        "body_part_probability": float(body_part[part]),
        "body_part_probabilities": {label: float(p) for label, p in zip(labels["body_part"], body_part)},
    }


def study_result(views: list[dict], labels: dict, threshold: float) -> dict:
    """MURA paper: the study's abnormality probability is the mean over its views."""
    probability = float(np.mean([view["abnormal_probability"] for view in views]))
    parts = [view["body_part"] for view in views]
    return {
        "abnormal_probability": probability,
        "label": binary_label(probability, labels["abnormal"], threshold),
        "body_part": max(set(parts), key=parts.count),
        "views": views,
    }


# ---- explanations ----------------------------------------------------------------------------

CAM_OUTPUT = "cam"  # the Grad-CAM output of exports with `explain` (visionzoo/training/gradcam.py)
HEATMAP_OPACITY = 0.5
# Samples of the "turbo" colour map (Google, 2019): low attention dark blue, high attention red.
HEATMAP_STOPS = ((0.0, (48, 18, 59)), (0.2, (70, 134, 251)), (0.4, (27, 229, 181)), (0.6, (164, 252, 60)),
                 (0.8, (251, 128, 34)), (1.0, (122, 4, 3)))


def heatmap_png(source: Image.Image, cam: np.ndarray, opacity: float = HEATMAP_OPACITY) -> bytes:
    """An (h, w) Grad-CAM map in 0..1, resized to the image (bilinear), coloured and laid over it."""
    values = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32), mode="F").resize(source.size, Image.Resampling.BILINEAR)
    values = np.clip(np.asarray(values), 0.0, 1.0)
    positions = [position for position, _ in HEATMAP_STOPS]
    colours = np.array([colour for _, colour in HEATMAP_STOPS], dtype=np.float32)
    tint = np.stack([np.interp(values, positions, colours[:, k]) for k in range(3)], axis=-1)
    base = np.asarray(source.convert("RGB"), dtype=np.float32)
    blended = np.clip((1 - opacity) * base + opacity * tint, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blended).save(buffer, format="PNG")
    return buffer.getvalue()


def source_image(image: DecodedImage) -> Image.Image:
    """The decoded image when it was kept, else the model's own view of it (an untiled .npy input)."""
    if image.source is not None:
        return image.source
    pixels = np.clip(image.tiles[0], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


# ---- segmentation -------------------------------------------------------------------------------

# Okabe-Ito colours: distinct for colour-blind readers and bright enough over dark terrain.
SEGMENTATION_COLORS = ["#000000", "#E69F00", "#56B4E9", "#F0E442", "#D55E00", "#CC79A7", "#009E73", "#0072B2"]


def class_colors(count: int) -> list[str]:
    return (SEGMENTATION_COLORS * (count // len(SEGMENTATION_COLORS) + 1))[:count]


def decision_weights(metadata: dict) -> list[float] | None:
    """metadata.json `decision_weights`: one finite, positive multiplier per class of the first
    output, or None when the version has none. A malformed list is refused when the version loads."""
    value = metadata.get("decision_weights")
    if value is None:
        return None
    labels = metadata.get("labels", {}).get(metadata.get("outputs", [{}])[0].get("name"), [])
    weights = [float(w) for w in value]
    if len(weights) != len(labels) or not all(np.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"metadata.json decision_weights must be {len(labels)} positive numbers (one per class), got {value}")
    return weights


def argmax_classes(probabilities: np.ndarray, learnable: list[int] | None,
                   weights: list[float] | None = None) -> np.ndarray:
    """Per-pixel class over the last axis, restricted to `learnable` classes (None: all).

    `weights` (metadata.json `decision_weights`, one per class) multiply the probabilities before
    the arg-max: a prior correction for a training set whose class shares were changed by
    oversampling, chosen on validation (benchmarks/mars_decision.py). None: unweighted."""
    if weights is not None:
        probabilities = probabilities * np.asarray(weights, dtype=np.float32)
    if learnable is None or len(learnable) == probabilities.shape[-1]:
        return probabilities.argmax(axis=-1).astype(np.uint8)
    index = np.asarray(learnable)
    return index[probabilities[..., index].argmax(axis=-1)].astype(np.uint8)


def class_map_from_tiles(probabilities: np.ndarray, height: int, width: int, learnable: list[int] | None = None,
                         overlap: float = 0.0, weights: list[float] | None = None) -> np.ndarray:
    """(tiles, h, w, classes) probabilities of one image -> (height, width) class indices.

    Tiles cut with `overlap` (ImageSpec.tile_overlap) are blended (preprocessing.blend_tiles)
    before the argmax, so the map has no seam where two tiles meet. `learnable` and `weights`: as
    `argmax_classes`."""
    if overlap:
        return resize_label_map(argmax_classes(blend_tiles(probabilities, overlap), learnable, weights), height, width)
    return resize_label_map(blend_tiles(argmax_classes(probabilities, learnable, weights), 0.0), height, width)


def palette_png(class_map: np.ndarray, colors: list[str]) -> bytes:
    image = Image.fromarray(class_map.astype(np.uint8), mode="L").convert("P")
    palette = []
    for color in colors:
        palette += [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    image.putpalette(palette + [0] * (768 - len(palette)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(source: Image.Image, class_map: np.ndarray, colors: list[str], labels: list[str],
                opacity: float = OVERLAY_OPACITY, shown: list[int] | None = None) -> bytes:
    """The image with each pixel tinted by its class, and a legend of the classes shown."""
    from PIL import ImageDraw

    base = np.asarray(source.convert("RGB"), dtype=np.float32)
    table = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=np.float32)
    tint = table[class_map]
    weight = np.full(class_map.shape + (1,), opacity, dtype=np.float32)
    if shown is not None:  # classes outside `shown` (e.g. unlabelled) are left untinted
        weight[~np.isin(class_map, shown)] = 0.0
    blended = Image.fromarray(np.clip((1 - weight) * base + weight * tint, 0, 255).astype(np.uint8))
    classes = shown if shown is not None else list(range(len(labels)))
    row = max(12, min(blended.height // 16, 24))
    legend_height = row * len(classes) + 6
    legend_width = min(blended.width, max(80, row * 7))
    draw = ImageDraw.Draw(blended, "RGBA")
    draw.rectangle([0, 0, legend_width, legend_height], fill=(0, 0, 0, 170))
    for i, k in enumerate(classes):
        top = 3 + i * row
        draw.rectangle([4, top + 2, 4 + row - 4, top + row - 2], fill=tuple(int(v) for v in table[k]))
        draw.text((row + 4, top + max(0, (row - 11) // 2)), labels[k], fill=(255, 255, 255, 255))
    buffer = io.BytesIO()
    blended.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_class_map(class_map: np.ndarray, mask_format: str, colors: list[str]) -> dict:
    if mask_format == "png":
        return {"mask_png": base64.b64encode(palette_png(class_map, colors)).decode()}
    if mask_format == "npy":
        buffer = io.BytesIO()
        np.save(buffer, class_map)
        return {"mask_npy": base64.b64encode(buffer.getvalue()).decode()}
    raise RequestError(f"mask_format must be 'png' or 'npy', got {mask_format!r}")


def class_fractions(class_map: np.ndarray, labels: list[str]) -> dict[str, float]:
    counts = np.bincount(class_map.reshape(-1), minlength=len(labels))
    return {label: float(c) / class_map.size for label, c in zip(labels, counts)}
