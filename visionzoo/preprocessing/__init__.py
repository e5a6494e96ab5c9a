"""Image preprocessing shared by training and serving (no TensorFlow).

Training's loaders (`visionzoo/training/data/*`) and the service (`visionzoo/serving/processing.py`) both turn an image
file into model pixels with `prepare_image` / `prepare_tiles`. The `ImageSpec` that drives them is
written into every exported model's `metadata.json`, so serving holds no size, colour or scaling
constants of its own. Pixel *scaling* (``/255``, ImageNet statistics) lives inside each model graph:
every model takes float32 pixels in 0..255.

Example:
    >>> spec = ImageSpec(height=96, width=96, color_mode="rgb")
    >>> pixels = prepare_image(Path("cell.jpg").read_bytes(), spec)   # (96, 96, 3) uint8
"""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageDecodeError",
    "ImageSpec",
    "ImageTooLarge",
    "band_count",
    "blend_tiles",
    "load_image",
    "open_image",
    "peek_size",
    "prepare_image",
    "prepare_mask_tiles",
    "prepare_tiles",
    "resize_label_map",
    "stitch_tiles",
    "tile_count",
    "tile_offsets",
]

ImageSource = bytes | bytearray | memoryview | str | Path | Image.Image

# color_mode -> (PIL mode of the working image, channels the model receives)
COLOR_MODES = {"rgb": ("RGB", 3), "grayscale": ("L", 1), "grayscale_rgb": ("L", 3)}
RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
TILINGS = ("none", "rows")


class ImageDecodeError(ValueError):
    """An input could not be decoded as an image; the message names the input."""


class ImageTooLarge(ImageDecodeError):
    """An image's header declares more pixels than the caller allows (checked before decoding)."""


@dataclass(frozen=True)
class ImageSpec:
    """How raw images become model input pixels.

    Args:
        height, width: the model's input size (one tile's size when `tiling="rows"`).
        color_mode: "rgb"; "grayscale" (1 channel); "grayscale_rgb" (grey replicated to 3 channels,
            as the MURA sources read their X-rays).
        resize_method: Pillow resampling filter (see RESIZE_METHODS).
        tiling: "none" resizes the whole image to height x width. "rows" keeps the aspect ratio:
            the image is resized to `width` wide and a whole number of tiles high, then cut into
            height x width tiles top to bottom (the Mars segmenter's 64x128 tiles: a 256x256 frame
            becomes two tiles, exactly its two halves downsampled x2).
        draft: decode JPEG files at a reduced scale (1/2, 1/4 or 1/8, whichever is the smallest
            still at least the model's size) before resizing. Several times faster on photos larger
            than the model (a 2304x2880 radiograph decodes at 288x360 for a 224x224 model), and the
            result is much the same whatever size the file was saved at. It changes the pixels, so
            it is a property of the model (training and serving both follow metadata.json); models
            exported before it existed decode at full size.
        tile_overlap: with `tiling="rows"`, how much consecutive tiles overlap, as a fraction of a
            band (0 <= overlap < 1). 0 cuts the frame into its bands (how the segmenters train);
            0.5 adds a tile straddling every seam (N bands -> 2N-1 tiles), and `blend_tiles`
            averages the tiles' outputs with weights that fall off towards each tile's top and
            bottom edge, so the stitched map has no seam. An inference setting: training tiles are
            always the bands.
    """

    height: int
    width: int
    color_mode: str = "rgb"
    resize_method: str = "bilinear"
    tiling: str = "none"
    draft: bool = False
    tile_overlap: float = 0.0

    def __post_init__(self) -> None:
        if self.color_mode not in COLOR_MODES:
            raise ValueError(f"color_mode must be one of {sorted(COLOR_MODES)}, got {self.color_mode!r}")
        if self.resize_method not in RESIZE_METHODS:
            raise ValueError(
                f"resize_method must be one of {sorted(RESIZE_METHODS)}, got {self.resize_method!r}"
            )
        if self.tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {TILINGS}, got {self.tiling!r}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"height and width must be positive, got {self.height}x{self.width}")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ValueError(f"tile_overlap must be in [0, 1), got {self.tile_overlap}")
        if self.tile_overlap and self.tiling == "none":
            raise ValueError("tile_overlap needs tiling='rows'")

    @property
    def channels(self) -> int:
        return COLOR_MODES[self.color_mode][1]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImageSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ImageSpec keys {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_metadata(cls, preprocessing: dict) -> ImageSpec:
        """The spec in a metadata.json `preprocessing` block, which also describes what is not
        decided here (value range, layout, dtype, where scaling happens): those keys are skipped."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in preprocessing.items() if key in known})


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return str(source)
    return "uploaded image"


def open_image(source: ImageSource, name: str | None = None, max_pixels: int | None = None,
               draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image fully (bytes, a path or a PIL image); EXIF rotation applied.

    Args:
        max_pixels: refuse images whose header declares more pixels, before decoding them.
        draft: (width, height) the decoded image must still cover; JPEGs then decode at the
            smallest reduced scale that does (ImageSpec.draft).

    Raises:
        ImageTooLarge: over `max_pixels`.
        ImageDecodeError: naming the input, for anything Pillow cannot decode completely
            (truncated files, non-images, decompression bombs).
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        label = _describe(source, name)
        try:
            if isinstance(source, (bytes, bytearray, memoryview)):
                if len(source) == 0:
                    raise ImageDecodeError(f"{label}: empty file")
                image = Image.open(io.BytesIO(source))
            else:
                image = Image.open(source)
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ImageTooLarge(f"{label}: {image.width}x{image.height} pixels, more than the {max_pixels} allowed")
            if draft is not None and image.format == "JPEG":
                image.draft(None, _unrotated(image, draft))
            image.load()  # force the full decode now: truncated files fail here, not later
        except ImageDecodeError:
            raise
        except FileNotFoundError as error:
            raise ImageDecodeError(f"{label}: file not found") from error
        except UnidentifiedImageError as error:
            raise ImageDecodeError(f"{label}: not an image format Pillow can read") from error
        except Image.DecompressionBombError as error:
            raise ImageDecodeError(f"{label}: image too large to decode safely ({error})") from error
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError ...
            raise ImageDecodeError(f"{label}: cannot decode image ({error})") from error
    if _orientation(image) in (None, 1):
        return image  # nothing to turn (exif_transpose would copy the pixels anyway)
    return ImageOps.exif_transpose(image)


EXIF_ORIENTATION = 0x0112


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - a broken EXIF block: leave the pixels as stored
        return None


def _unrotated(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """`size` in the file's stored orientation (EXIF orientations 5-8 swap width and height)."""
    return (size[1], size[0]) if _orientation(image) in (5, 6, 7, 8) else size


def _draft_size(spec: ImageSpec, width: int, height: int) -> tuple[int, int] | None:
    """What a JPEG must still cover after reduced-scale decoding, for `spec` (None: no draft)."""
    if not spec.draft:
        return None
    if spec.tiling == "none":
        return (spec.width, spec.height)
    rows = band_count(height, width, spec)
    return (spec.width, rows * spec.height)


def load_image(source: ImageSource, spec: ImageSpec, name: str | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode `source` the way `spec` asks (reduced-scale JPEG decoding when `spec.draft`), EXIF
    rotation applied; what prepare_image and prepare_tiles start from."""
    if not spec.draft or isinstance(source, Image.Image):
        return open_image(source, name, max_pixels)
    size = peek_size(source)
    return open_image(source, name, max_pixels, draft=_draft_size(spec, *size) if size else None)


def peek_size(source: ImageSource) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF rotation applied), from the header alone; None when the
    header cannot be read (open_image then reports why, with the file's name)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source) as image:
            width, height = image.size
            return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)
    except Exception:  # noqa: BLE001 - open_image reports the problem with the file's name
        return None


def _to_working_mode(image: Image.Image, color_mode: str) -> Image.Image:
    """Convert any Pillow mode (RGBA, P, 16-bit grey, float ...) to L or RGB."""
    target = COLOR_MODES[color_mode][0]
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit-depth grey (common for radiographs): stretch the used range to 0..255; Pillow's
        # own convert("L") would clip everything above 255 to white.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        image = Image.fromarray(np.round(scaled).astype(np.uint8))
    elif image.mode in ("RGBA", "LA", "P", "PA"):
        # Composite transparency onto black instead of letting Pillow drop alpha arbitrarily.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == target else image.convert(target)


def _to_array(image: Image.Image, color_mode: str) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if color_mode == "grayscale_rgb":
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels)


def prepare_image(source: ImageSource, spec: ImageSpec, name: str | None = None) -> np.ndarray:
    """Decode, convert colour and resize one image to the model's (H, W, C) uint8 pixels."""
    if spec.tiling != "none":
        raise ValueError("prepare_image is for untiled specs; use prepare_tiles")
    image = _to_working_mode(load_image(source, spec, name), spec.color_mode)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), RESIZE_METHODS[spec.resize_method])
    return _to_array(image, spec.color_mode)


def band_count(height: int, width: int, spec: ImageSpec) -> int:
    """How many spec-sized bands (stacked top to bottom) keep an HxW image's aspect ratio."""
    if spec.tiling == "none":
        return 1
    rows = height * spec.width / (width * spec.height)
    return max(1, math.floor(rows + 0.5))


def tile_offsets(bands: int, overlap: float) -> list[float]:
    """Top edge of every model tile, in bands, for a frame of `bands` bands: 0, 1, ... without
    overlap; 0, 0.5, 1, ... with overlap 0.5 (the last tile always ends at the frame's bottom)."""
    step = 1.0 - overlap
    count = math.ceil((bands - 1) / step - 1e-9) + 1
    return [min(k * step, bands - 1.0) for k in range(count)]


def tile_count(height: int, width: int, spec: ImageSpec) -> int:
    """How many model tiles an HxW image becomes (its bands, plus the overlapping ones)."""
    return len(tile_offsets(band_count(height, width, spec), spec.tile_overlap))


def _bands(height: int, rows: int) -> list[tuple[int, int]]:
    """Row ranges that cut an image of `height` rows into `rows` horizontal bands."""
    edges = [round(k * height / rows) for k in range(rows + 1)]
    return list(itertools.pairwise(edges))


def _tile_rows(height: int, rows: int, overlap: float) -> list[tuple[int, int]]:
    """Row ranges of the model tiles of an image of `height` rows and `rows` bands."""
    if not overlap:
        return _bands(height, rows)
    return [(round(top * height / rows), round((top + 1) * height / rows)) for top in tile_offsets(rows, overlap)]


def prepare_tiles(source: ImageSource, spec: ImageSpec, name: str | None = None) -> np.ndarray:
    """Decode one image into (n_tiles, H, W, C) uint8 model tiles (n_tiles=1 without tiling).

    With `tiling="rows"` the image is first cut into horizontal bands, then each band is resized
    to the tile size, so no tile borrows pixels from its neighbour (the source split a 256x256
    frame into halves, then downsampled each). With `spec.tile_overlap` further tiles of a band's
    height straddle the seams (`tile_offsets`); `blend_tiles` puts their outputs back together.
    """
    image = _to_working_mode(load_image(source, spec, name), spec.color_mode)
    rows = band_count(image.height, image.width, spec)
    tiles = []
    for top, bottom in _tile_rows(image.height, rows, spec.tile_overlap):
        band = image.crop((0, top, image.width, bottom))
        if band.size != (spec.width, spec.height):
            band = band.resize((spec.width, spec.height), RESIZE_METHODS[spec.resize_method])
        tiles.append(_to_array(band, spec.color_mode))
    return np.stack(tiles)


def prepare_mask_tiles(mask: np.ndarray, spec: ImageSpec, rows: int) -> np.ndarray:
    """Cut an (H, W) integer label map like `prepare_tiles`, resizing with nearest neighbour."""
    if mask.ndim != 2:
        raise ValueError(f"a label map must be 2-D, got shape {mask.shape}")
    tiles = []
    for top, bottom in _bands(mask.shape[0], rows):
        band = Image.fromarray(np.ascontiguousarray(mask[top:bottom]).astype(np.uint8))
        if band.size != (spec.width, spec.height):
            band = band.resize((spec.width, spec.height), Image.Resampling.NEAREST)
        tiles.append(np.asarray(band, dtype=np.uint8))
    return np.stack(tiles)


def stitch_tiles(tiles: np.ndarray) -> np.ndarray:
    """Inverse of the tiling: (n, H, W, ...) tiles stacked top to bottom -> (n*H, W, ...)."""
    return tiles.reshape(tiles.shape[0] * tiles.shape[1], *tiles.shape[2:])


def bands_for_tiles(count: int, overlap: float) -> int:
    """The number of bands whose frame gives `count` tiles at `overlap` (inverse of tile_offsets)."""
    bands = 1
    while len(tile_offsets(bands, overlap)) < count:
        bands += 1
    if len(tile_offsets(bands, overlap)) != count:
        raise ValueError(f"{count} tiles do not come from one frame at tile_overlap {overlap}")
    return bands


def tile_weights(height: int) -> np.ndarray:
    """Per-row blending weights of one tile: a tent, highest in the middle rows, small but not zero
    at the top and bottom rows (a frame's first and last rows are covered by one tile only)."""
    centre = (np.arange(height) + 0.5) / height
    return np.maximum(1.0 - np.abs(2.0 * centre - 1.0), 1e-3)


def blend_tiles(tiles: np.ndarray, overlap: float) -> np.ndarray:
    """Put overlapping tile outputs back together: (n, H, W, ...) -> (bands*H, W, ...) float32,
    each row the tent-weighted mean of the tiles covering it (`stitch_tiles` when overlap is 0)."""
    if not overlap:
        return stitch_tiles(tiles)
    count, height = tiles.shape[:2]
    bands = bands_for_tiles(count, overlap)
    weights = tile_weights(height).astype(np.float32).reshape((height,) + (1,) * (tiles.ndim - 2))
    total = np.zeros((bands * height, *tiles.shape[2:]), dtype=np.float32)
    norm = np.zeros((bands * height,) + (1,) * (tiles.ndim - 2), dtype=np.float32)
    for tile, offset in zip(tiles, tile_offsets(bands, overlap)):
        top = round(offset * height)
        total[top : top + height] += weights * tile
        norm[top : top + height] += weights
    return total / norm


def resize_label_map(label_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (h, w) class map to (height, width) with nearest neighbour (labels stay labels)."""
    if label_map.shape == (height, width):
        return label_map.astype(np.uint8)
    image = Image.fromarray(label_map.astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST), dtype=np.uint8)
