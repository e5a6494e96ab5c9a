"""Pure request and response processing for the service, driven by each model's metadata.json.

Decoding, resizing and colour conversion go through `preprocessing` (the same functions training
used), so a served model sees the pixels it was trained on. Nothing here knows a model's size,
colour mode or classes except through the `ImageSpec` and labels it is given.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from visionzoo.preprocessing import ImageDecodeError, ImageSpec, prepare_image, prepare_tiles, resize_label_map, stitch_tiles

NPY_MAGIC = b"\x93NUMPY"
SEGMENTATION_COLORS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]  # class palette of the Mars source


class RequestError(ValueError):
    """A client mistake; `status` is the HTTP status to answer with."""

    status = 400


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name (for error messages) and bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class DecodedImage:
    """One image after preprocessing: model input tiles (1 unless tiled) and the original size."""

    name: str
    tiles: np.ndarray  # (tiles, H, W, C) float32 pixels in 0..255
    height: int
    width: int
    source: Image.Image | None = None  # kept for overlays


def check_count(count: int, limit: int) -> None:
    if count == 0:
        raise RequestError("no images: send one or more files in the multipart field 'images'")
    if count > limit:
        raise PayloadTooLarge(f"too many images: {count} in one request, the limit is {limit} (VISIONZOO_MAX_IMAGES)")


def check_size(upload: Upload, limit: int) -> None:
    if len(upload.data) > limit:
        raise PayloadTooLarge(f"{upload.name}: {len(upload.data)} bytes, the limit per file is {limit} (VISIONZOO_MAX_IMAGE_BYTES)")


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise RequestError(f"{name}: an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def read_npy(upload: Upload) -> list[tuple[str, np.ndarray]]:
    """A .npy file holding one image (H, W[, C]) or a batch (N, H, W, C); pixels 0..255."""
    try:
        array = np.load(io.BytesIO(upload.data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise RequestError(f"{upload.name}: not a readable .npy array ({error})") from error
    if array.dtype.kind not in "uif":
        raise UnsupportedMediaType(f"{upload.name}: array dtype {array.dtype} is not numeric; send uint8 or float pixels 0..255")
    if array.size == 0:
        raise RequestError(f"{upload.name}: the array is empty {array.shape}")
    if not np.isfinite(array).all():
        raise RequestError(f"{upload.name}: the array contains NaN or infinity")
    if array.ndim == 4:
        return [(f"{upload.name}[{i}]", item) for i, item in enumerate(array)]
    if array.ndim in (2, 3):
        return [(upload.name, array)]
    raise RequestError(f"{upload.name}: expected an image (H, W[, C]) or a batch (N, H, W, C), got shape {array.shape}")


def _from_array(name: str, array: np.ndarray, spec: ImageSpec) -> DecodedImage:
    if array.ndim == 2:
        array = array[..., None]
    if array.shape == spec.shape:
        # Already one model-size input: use the values as they are (float inputs keep their precision).
        return DecodedImage(name, array[None].astype(np.float32), spec.height, spec.width)
    return _from_image(name, _array_to_image(array, name), spec)


def _from_image(name: str, image: Image.Image, spec: ImageSpec) -> DecodedImage:
    try:
        tiles = prepare_tiles(image, spec, name) if spec.tiling != "none" else prepare_image(image, spec, name)[None]
    except ImageDecodeError as error:
        raise UnsupportedMediaType(str(error)) from error
    return DecodedImage(name, tiles.astype(np.float32), image.height, image.width, image)


def decode_upload(upload: Upload, spec: ImageSpec, max_bytes: int) -> list[DecodedImage]:
    """Turn one uploaded file (PNG, JPEG, any Pillow format, or .npy) into model inputs."""
    check_size(upload, max_bytes)
    if upload.data.startswith(NPY_MAGIC):
        return [_from_array(name, array, spec) for name, array in read_npy(upload)]
    from visionzoo.preprocessing import open_image

    try:
        image = open_image(upload.data, upload.name)
    except ImageDecodeError as error:
        status = RequestError if "empty file" in str(error) else UnsupportedMediaType
        raise status(f"{error}; send PNG or JPEG files (or .npy arrays)") from error
    return [_from_image(upload.name, image, spec)]


def decode_uploads(uploads: list[Upload], spec: ImageSpec, max_images: int, max_bytes: int) -> list[DecodedImage]:
    check_count(len(uploads), max_images)
    images = [image for upload in uploads for image in decode_upload(upload, spec, max_bytes)]
    check_count(len(images), max_images)
    return images


def stack_tiles(images: list[DecodedImage]) -> np.ndarray:
    return np.concatenate([image.tiles for image in images]).astype(np.float32)


def split_outputs(flat: np.ndarray, outputs: list[dict]) -> dict[str, np.ndarray]:
    """Undo the runtime's packing of several outputs into one array (last axis, metadata order)."""
    widths = [int(np.prod(o["shape"][1:])) for o in outputs]
    flat = flat.reshape(len(flat), -1)
    if flat.shape[1] != sum(widths):
        raise ValueError(f"runtime returned {flat.shape[1]} values per item, metadata expects {sum(widths)}")
    parts = np.split(flat, np.cumsum(widths)[:-1], axis=1)
    return {o["name"]: part.reshape(len(part), *o["shape"][1:]) for o, part in zip(outputs, parts)}


def pack_outputs(results: dict[str, np.ndarray], outputs: list[dict]) -> np.ndarray:
    """Several named outputs -> one (N, total) float32 array (what a batchable API can return)."""
    return np.concatenate([results[o["name"]].reshape(len(results[o["name"]]), -1) for o in outputs], axis=1).astype(np.float32)


def ranked(probabilities: np.ndarray, labels: list[str], top_k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
    return [{"label": labels[k], "probability": float(probabilities[k])} for k in order]


def classification_result(name: str, probabilities: np.ndarray, labels: list[str], top_k: int) -> dict:
    best = int(np.argmax(probabilities))
    return {
        "file": name,
        "label": labels[best],
        "probability": float(probabilities[best]),
        "top_k": ranked(probabilities, labels, top_k),
        "probabilities": {label: float(p) for label, p in zip(labels, probabilities)},
    }


def mura_result(name: str, abnormal: float, body_part: np.ndarray, labels: dict, threshold: float) -> dict:
    part = int(np.argmax(body_part))
    abnormal_names = labels.get("abnormal", ["normal", "abnormal"])
    return {
        "file": name,
        "abnormal_probability": float(abnormal),
        "label": abnormal_names[int(abnormal >= threshold)],
        "body_part": labels["body_part"][part],
        "body_part_probability": float(body_part[part]),
        "body_part_probabilities": {label: float(p) for label, p in zip(labels["body_part"], body_part)},
    }


def study_result(views: list[dict], labels: dict, threshold: float) -> dict:
    """MURA paper: the study's abnormality probability is the mean over its views."""
    probability = float(np.mean([view["abnormal_probability"] for view in views]))
    parts = [view["body_part"] for view in views]
    abnormal_names = labels.get("abnormal", ["normal", "abnormal"])
    return {
        "abnormal_probability": probability,
        "label": abnormal_names[int(probability >= threshold)],
        "body_part": max(set(parts), key=parts.count),
        "views": views,
    }


def _palette_png(class_map: np.ndarray, colors: list[str]) -> bytes:
    image = Image.fromarray(class_map.astype(np.uint8))
    image = image.convert("P")
    palette = []
    for color in colors:
        palette += [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    image.putpalette(palette + [0] * (768 - len(palette)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(source: Image.Image, class_map: np.ndarray, colors: list[str], alpha: float = 0.45) -> bytes:
    base = np.asarray(source.convert("RGB"), dtype=np.float32)
    table = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=np.float32)
    blended = (1 - alpha) * base + alpha * table[class_map]
    buffer = io.BytesIO()
    Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def class_map_from_tiles(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """(tiles, h, w, classes) probabilities of one image -> (height, width) class indices."""
    return resize_label_map(stitch_tiles(probabilities.argmax(axis=-1)), height, width)


def segmentation_result(image: DecodedImage, probabilities: np.ndarray, labels: list[str], mask_format: str, overlay: bool) -> dict:
    class_map = class_map_from_tiles(probabilities, image.height, image.width)
    counts = np.bincount(class_map.reshape(-1), minlength=len(labels))
    colors = (SEGMENTATION_COLORS * (len(labels) // len(SEGMENTATION_COLORS) + 1))[: len(labels)]
    result = {
        "file": image.name,
        "height": image.height,
        "width": image.width,
        "tiles": int(len(probabilities)),
        "class_fractions": {label: float(c) / class_map.size for label, c in zip(labels, counts)},
        "classes": labels,
    }
    if mask_format == "png":
        result["mask_png"] = base64.b64encode(_palette_png(class_map, colors)).decode()
    elif mask_format == "npy":
        buffer = io.BytesIO()
        np.save(buffer, class_map)
        result["mask_npy"] = base64.b64encode(buffer.getvalue()).decode()
    else:
        raise RequestError(f"mask_format must be 'png' or 'npy', got {mask_format!r}")
    if overlay:
        source = image.source if image.source is not None else Image.fromarray(stitch_tiles(image.tiles).squeeze(-1).astype(np.uint8))
        result["overlay_png"] = base64.b64encode(overlay_png(source, class_map, colors)).decode()
    return result
