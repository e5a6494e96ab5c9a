"""Tier 1: the service's pure request/response functions, no server."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from visionzoo.preprocessing import ImageSpec
from visionzoo.serving.processing import (
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
    Upload,
    class_map_from_tiles,
    classification_result,
    decode_uploads,
    mura_result,
    pack_outputs,
    segmentation_result,
    split_outputs,
    study_result,
)

BLOOD = ImageSpec(96, 96, "rgb")
TILE = ImageSpec(64, 128, "grayscale", tiling="rows")


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_images_of_any_size_and_mode_become_model_inputs():
    rng = np.random.default_rng(0)
    uploads = [
        Upload("grey.png", png(rng.integers(0, 255, (40, 50), dtype=np.uint8))),
        Upload("rgba.png", png(rng.integers(0, 255, (300, 200, 4), dtype=np.uint8))),
        Upload("colour.png", png(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))),
    ]
    decoded = decode_uploads(uploads, BLOOD, max_images=8, max_bytes=10**7)
    assert [d.tiles.shape for d in decoded] == [(1, 96, 96, 3)] * 3
    assert all(d.tiles.dtype == np.float32 for d in decoded)
    assert (decoded[1].height, decoded[1].width) == (300, 200)


def test_npy_arrays_single_and_batched_and_exact_float_values_kept():
    exact = np.random.default_rng(1).uniform(0, 255, (96, 96, 3)).astype(np.float32)
    batch = np.random.default_rng(2).integers(0, 255, (3, 50, 60, 3)).astype(np.uint8)
    decoded = decode_uploads([Upload("one.npy", npy(exact)), Upload("three.npy", npy(batch))], BLOOD, 8, 10**7)
    assert len(decoded) == 4
    np.testing.assert_array_equal(decoded[0].tiles[0], exact)  # model-size float input is not re-quantised
    assert decoded[3].name == "three.npy[2]"


@pytest.mark.parametrize(
    "upload, error, message",
    [
        (Upload("junk.jpg", b"definitely not a jpeg"), UnsupportedMediaType, "junk.jpg: not an image format"),
        (Upload("empty.png", b""), RequestError, "empty.png: empty file"),
        (Upload("strings.npy", npy(np.array(["a", "b"]))), UnsupportedMediaType, "not numeric"),
        (Upload("nan.npy", npy(np.full((8, 8), np.nan))), RequestError, "NaN"),
        (Upload("five_d.npy", npy(np.zeros((1, 2, 3, 4, 5)))), RequestError, "got shape"),
        (Upload("channels.npy", npy(np.zeros((8, 8, 7)))), RequestError, "(H, W, 4)"),
    ],
)
def test_bad_uploads_are_client_errors_that_name_the_file(upload, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_uploads([upload], BLOOD, 8, 10**7)


def test_empty_and_oversized_requests_are_rejected():
    with pytest.raises(RequestError, match="no images"):
        decode_uploads([], BLOOD, 8, 10**7)
    many = [Upload(f"{i}.npy", npy(np.zeros((96, 96, 3), np.uint8))) for i in range(3)]
    with pytest.raises(PayloadTooLarge, match="limit is 2"):
        decode_uploads(many, BLOOD, 2, 10**7)
    with pytest.raises(PayloadTooLarge, match="limit is 2"):  # a .npy batch counts its images
        decode_uploads([Upload("batch.npy", npy(np.zeros((3, 96, 96, 3), np.uint8)))], BLOOD, 2, 10**7)
    with pytest.raises(PayloadTooLarge, match="bytes"):
        decode_uploads([many[0]], BLOOD, 8, 100)


def test_outputs_pack_and_unpack_in_metadata_order():
    outputs = [{"name": "abnormal", "shape": [-1, 1]}, {"name": "body_part", "shape": [-1, 7]}]
    results = {"abnormal": np.random.rand(5, 1).astype(np.float32), "body_part": np.random.rand(5, 7).astype(np.float32)}
    unpacked = split_outputs(pack_outputs(results, outputs), outputs)
    for name in results:
        np.testing.assert_array_equal(unpacked[name], results[name])
    with pytest.raises(ValueError, match="metadata expects 8"):
        split_outputs(np.zeros((5, 9), np.float32), outputs)


def test_classification_and_mura_results():
    labels = ["a", "b", "c"]
    result = classification_result("x.png", np.array([0.2, 0.7, 0.1]), labels, top_k=2)
    assert result["label"] == "b" and [r["label"] for r in result["top_k"]] == ["b", "a"]
    mura = mura_result("v.png", 0.8, np.array([0.1, 0.9]), {"abnormal": ["normal", "abnormal"], "body_part": ["hand", "leg"]}, 0.5)
    assert mura["label"] == "abnormal" and mura["body_part"] == "leg"


def test_study_probability_is_the_mean_of_the_views():
    labels = {"abnormal": ["normal", "abnormal"], "body_part": ["hand", "leg"]}
    views = [mura_result(f"{i}.png", p, np.array([0.9, 0.1]), labels, 0.5) for i, p in enumerate([0.2, 0.4, 0.9])]
    study = study_result(views, labels, 0.5)
    assert study["abnormal_probability"] == pytest.approx(0.5) and study["label"] == "abnormal"
    assert study["body_part"] == "hand" and len(study["views"]) == 3


def test_segmentation_result_restores_the_original_size_and_counts_classes():
    frame = np.zeros((256, 256), dtype=np.uint8)
    decoded = decode_uploads([Upload("frame.png", png(frame))], TILE, 4, 10**7)[0]
    assert decoded.tiles.shape == (2, 64, 128, 1)
    probabilities = np.zeros((2, 64, 128, 5), dtype=np.float32)
    probabilities[0, ..., 1] = 1  # top tile: soil
    probabilities[1, ..., 3] = 1  # bottom tile: sand
    result = segmentation_result(decoded, probabilities, ["background", "soil", "bedrock", "sand", "big_rock"], "png", overlay=True)
    assert (result["height"], result["width"], result["tiles"]) == (256, 256, 2)
    assert result["class_fractions"]["soil"] == pytest.approx(0.5) and result["class_fractions"]["sand"] == pytest.approx(0.5)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask_png"]))))
    assert mask.shape == (256, 256) and mask[0, 0] == 1 and mask[-1, -1] == 3  # pixel value = class index
    overlay = Image.open(io.BytesIO(base64.b64decode(result["overlay_png"])))
    assert overlay.size == (256, 256) and overlay.mode == "RGB"
    as_npy = segmentation_result(decoded, probabilities, ["background", "soil", "bedrock", "sand", "big_rock"], "npy", overlay=False)
    np.testing.assert_array_equal(np.load(io.BytesIO(base64.b64decode(as_npy["mask_npy"]))), mask)


def test_class_map_from_tiles_stitches_top_to_bottom():
    probabilities = np.zeros((3, 2, 4, 2))
    probabilities[1, ..., 1] = 1
    class_map = class_map_from_tiles(probabilities, 6, 4)
    assert class_map[:2].max() == 0 and class_map[2:4].min() == 1 and class_map[4:].max() == 0
