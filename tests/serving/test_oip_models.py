"""The OIP view of the served models (visionzoo/serving/oip/models.py): metadata, input checks and the
preparation of tensors and files, without a server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visionzoo.preprocessing import prepare_image, prepare_tiles
from visionzoo.serving import config
from visionzoo.serving.errors import UnsupportedMedia
from visionzoo.serving.oip.errors import InvalidArgument, ResourceExhausted
from visionzoo.serving.oip.models import ModelSignature, RequestTensor
from visionzoo.serving.processing import Limits, class_map_from_tiles
from visionzoo.serving.repository import load_served


@pytest.fixture(scope="module")
def signatures(models_dir) -> dict[str, ModelSignature]:
    return {name: ModelSignature.from_version(load_served(name)) for name in config.served_models()}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def request(name: str, datatype: str, shape: tuple[int, ...]) -> RequestTensor:
    return RequestTensor(name, datatype, shape, lambda: np.zeros(shape))


@pytest.mark.parametrize("name", list(config.served_models()))
def test_metadata_lists_the_model_input_and_the_exported_outputs(signatures, name):
    version = load_served(name)
    found = signatures[name].metadata()
    (source,) = version.inputs
    assert found["name"] == name and found["versions"] == [version.version]
    assert found["platform"] == "onnxruntime_onnx"
    assert found["inputs"] == [source]  # one input, enough to build a request; the config lists the other forms
    assert [t.name for t in signatures[name].inputs] == [source["name"], source["name"] + "_uint8", source["name"] + "_bytes"]
    tiled = version.spec.tiling != "none"
    extra = [{"name": "class_map", "datatype": "UINT8", "shape": [-1, -1, -1]}] if tiled else []
    assert found["outputs"] == version.outputs + extra


def test_select_input_names_the_problem(signatures):
    bloodcell = signatures["bloodcell"]
    spec, _ = bloodcell.select_input([request("image", "FP32", (2, 96, 96, 3))])
    assert spec == bloodcell.model_input
    with pytest.raises(InvalidArgument, match="has no input 'pixels'; inputs: image \\(FP32"):
        bloodcell.select_input([request("pixels", "FP32", (1, 96, 96, 3))])
    with pytest.raises(InvalidArgument, match="is FP32, got UINT8 \\(UINT8 pixels go in 'image_uint8'\\)"):
        bloodcell.select_input([request("image", "UINT8", (1, 96, 96, 3))])
    with pytest.raises(InvalidArgument, match=r"has shape \[-1, 96, 96, 3\], got \[1, 64, 64, 3\]"):
        bloodcell.select_input([request("image", "FP32", (1, 64, 64, 3))])
    with pytest.raises(InvalidArgument, match="takes exactly one input"):
        bloodcell.select_input([request("image", "FP32", (1, 96, 96, 3)), request("image_uint8", "UINT8", (1, 96, 96, 3))])
    with pytest.raises(InvalidArgument, match=r"has shape \[-1\], got \[1, 1\]"):
        bloodcell.select_input([request("image_bytes", "BYTES", (1, 1))])


def test_select_outputs(signatures):
    mars, mura = signatures["mars"], signatures["mura"]
    assert [t.name for t in mars.select_outputs(None, from_files=False)] == ["probabilities", "class_map"]
    assert [t.name for t in mars.select_outputs(None, from_files=True)] == ["class_map"]
    assert [t.name for t in mura.select_outputs(["body_part"], from_files=True)] == ["body_part"]
    with pytest.raises(InvalidArgument, match=f"is per {mars.spec.height}x{mars.spec.width} tile"):
        mars.select_outputs(["probabilities"], from_files=True)
    with pytest.raises(InvalidArgument, match="has no output 'logits'"):
        mura.select_outputs(["logits"], from_files=False)


def test_prepare_tensors(signatures):
    bloodcell = signatures["bloodcell"]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    prepared = bloodcell.prepare(bloodcell.pixels_input, pixels, Limits(max_images=64, max_image_bytes=1 << 20))
    assert prepared.batch.dtype == np.float32 and not prepared.from_files
    np.testing.assert_array_equal(prepared.batch, pixels)
    with pytest.raises(InvalidArgument, match="NaN or infinity"):
        bloodcell.prepare(bloodcell.model_input, np.full((1, 96, 96, 3), np.nan, np.float32), Limits(max_images=64, max_image_bytes=1 << 20))
    with pytest.raises(ResourceExhausted, match="holds 3 images, the limit per request is 2"):
        bloodcell.prepare(bloodcell.model_input, np.zeros((3, 96, 96, 3), np.float32), Limits(max_images=2, max_image_bytes=1 << 20))
    with pytest.raises(InvalidArgument, match="holds no images"):
        bloodcell.prepare(bloodcell.model_input, np.zeros((0, 96, 96, 3), np.float32), Limits(max_images=2, max_image_bytes=1 << 20))


def _files(*elements: bytes) -> np.ndarray:
    array = np.empty(len(elements), dtype=np.object_)
    array[:] = list(elements)
    return array


def test_prepare_files_uses_the_shared_preprocessing(signatures):
    bloodcell = signatures["bloodcell"]
    rng = np.random.default_rng(1)
    files = [png(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)) for _ in range(2)]
    prepared = bloodcell.prepare(bloodcell.files_input, _files(*files), Limits(max_images=64, max_image_bytes=1 << 20))
    expected = np.stack([prepare_image(f, bloodcell.spec) for f in files]).astype(np.float32)
    np.testing.assert_array_equal(prepared.batch, expected)
    assert [(image.height, image.width) for image in prepared.images] == [(72, 80), (72, 80)]


def test_prepare_files_errors(signatures):
    bloodcell, mars = signatures["bloodcell"], signatures["mars"]
    with pytest.raises(UnsupportedMedia, match=r"image_bytes\[0\]: not an image format"):  # 415 / INVALID_ARGUMENT
        bloodcell.prepare(bloodcell.files_input, _files(b"not an image"), Limits(max_images=64, max_image_bytes=1 << 20))
    with pytest.raises(ResourceExhausted, match="the limit per file is 10"):
        bloodcell.prepare(bloodcell.files_input, _files(png(np.zeros((8, 8, 3), np.uint8))), Limits(max_images=64, max_image_bytes=10))
    batch = io.BytesIO()
    np.save(batch, np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(InvalidArgument, match="holds 2 images"):
        bloodcell.prepare(bloodcell.files_input, _files(batch.getvalue()), Limits(max_images=64, max_image_bytes=1 << 20))
    grey = [png(np.zeros((128, 128), np.uint8)), png(np.zeros((64, 128), np.uint8))]
    with pytest.raises(InvalidArgument, match="must share a size.*got 64x128, 128x128"):
        mars.prepare(mars.files_input, _files(*grey), Limits(max_images=64, max_image_bytes=1 << 20))


def test_mars_class_map_for_files_is_stitched_at_original_size(signatures):
    mars = signatures["mars"]
    image = np.random.default_rng(2).integers(0, 256, (200, 160), dtype=np.uint8)
    prepared = mars.prepare(mars.files_input, _files(png(image), png(image)), Limits(max_images=64, max_image_bytes=1 << 20))
    tiles = prepare_tiles(png(image), mars.spec)
    np.testing.assert_array_equal(prepared.batch, np.concatenate([tiles, tiles]).astype(np.float32))
    probabilities = np.random.default_rng(3).random((len(prepared.batch), mars.spec.height, mars.spec.width, 5)).astype(np.float32)
    ((spec, class_map),) = mars.output_arrays(prepared, {"probabilities": probabilities}, [mars.class_map])
    assert spec.name == "class_map" and class_map.dtype == np.uint8 and class_map.shape == (2, 200, 160)
    half = len(tiles)
    np.testing.assert_array_equal(class_map[1], class_map_from_tiles(probabilities[half:], 200, 160, mars.learnable,
                                                                     mars.spec.tile_overlap, mars.decision_weights))


def test_mars_class_map_for_tiles_is_the_argmax(signatures):
    mars = signatures["mars"]
    tile = (mars.spec.height, mars.spec.width)
    prepared = mars.prepare(mars.model_input, np.zeros((3, *tile, 1), np.float32), Limits(max_images=64, max_image_bytes=1 << 20))
    probabilities = np.random.default_rng(4).random((3, *tile, 5)).astype(np.float32)
    arrays = {spec.name: array for spec, array in mars.output_arrays(prepared, {"probabilities": probabilities}, mars.outputs)}
    learnable = list(mars.learnable) if mars.learnable else list(range(5))  # an ignored label is never the answer
    weighted = probabilities * np.asarray(mars.decision_weights or [1.0] * 5, np.float32)  # the version's prior correction
    np.testing.assert_array_equal(arrays["class_map"], np.asarray(learnable)[weighted[..., learnable].argmax(-1)])
    np.testing.assert_array_equal(arrays["probabilities"], probabilities)
