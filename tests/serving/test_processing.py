"""Tier 1: the service's pure request/response functions, no server."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionzoo.preprocessing import ImageSpec
from visionzoo.serving.processing import (
    Limits,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
    Upload,
    argmax_classes,
    class_map_from_tiles,
    classification_result,
    decode_uploads,
    multitask_result,
    overlay_png,
    study_result,
)
from visionzoo.serving.repository import ModelVersion
from visionzoo.serving.tasks import Segmentation

BLOOD = ImageSpec(96, 96, "rgb")
TILE = ImageSpec(64, 128, "grayscale", tiling="rows")
MARS_LABELS = ["background", "soil", "bedrock", "sand", "big_rock"]


def limits(max_images: int = 8, max_bytes: int = 10**7, **others) -> Limits:
    return Limits(max_images=max_images, max_image_bytes=max_bytes, **others)


def decode(uploads, spec, max_images=8, max_bytes=10**7, **others):
    return decode_uploads(uploads, spec, limits(max_images, max_bytes, **others))


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
    decoded = decode(uploads, BLOOD)
    assert [d.tiles.shape for d in decoded] == [(1, 96, 96, 3)] * 3
    assert all(d.tiles.dtype == np.float32 for d in decoded)
    assert (decoded[1].height, decoded[1].width) == (300, 200)


def test_npy_arrays_single_and_batched_and_exact_float_values_kept():
    exact = np.random.default_rng(1).uniform(0, 255, (96, 96, 3)).astype(np.float32)
    batch = np.random.default_rng(2).integers(0, 255, (3, 50, 60, 3)).astype(np.uint8)
    decoded = decode([Upload("one.npy", npy(exact)), Upload("three.npy", npy(batch))], BLOOD)
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
        (Upload("huge.npy", npy(np.full((8, 8), 1e30, np.float32))), RequestError, "must lie in 0..255"),
        (Upload("negative.npy", npy(np.full((96, 96, 3), -5.0, np.float32))), RequestError, "must lie in 0..255"),
        (Upload("pickle.npy", npy(np.array([{"a": 1}], dtype=object))), UnsupportedMediaType, "not numeric"),
        (Upload("short.npy", npy(np.zeros((8, 8), np.uint8))[:-10]), RequestError, "declares"),
        (Upload("fortran.npy", npy(np.asfortranarray(np.zeros((8, 9), np.uint8)))), RequestError, "Fortran"),
    ],
)
def test_bad_uploads_are_client_errors_that_name_the_file(upload, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode([upload], BLOOD)


def npy_header_only(shape: tuple, descr: str = "<f4") -> bytes:
    """A .npy header declaring `shape` with (almost) no data after it: what a 1 TiB lie looks like."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (118 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64


def test_work_is_bounded_before_decoding():
    """Pixels are read from headers and tiles counted from sizes before anything is decoded."""
    with pytest.raises(PayloadTooLarge, match="pixels per image"):  # a header declaring 1 TiB
        decode([Upload("tib.npy", npy_header_only((1 << 20, 1 << 20)))], BLOOD)
    with pytest.raises(PayloadTooLarge, match="4000x4000 pixels"):
        decode([Upload("big.png", png(np.zeros((4000, 4000), np.uint8)))], BLOOD, max_image_pixels=10_000_000)
    tall = Upload("tall.png", png(np.zeros((6000, 40), np.uint8)))  # a thin strip: hundreds of 64x128 tiles
    with pytest.raises(PayloadTooLarge, match="VISIONZOO_MAX_TILES_PER_IMAGE"):
        decode([tall], TILE, max_tiles_per_image=16)
    frames = [Upload(f"{i}.png", png(np.zeros((256, 256), np.uint8))) for i in range(5)]  # 2 tiles each
    with pytest.raises(PayloadTooLarge, match="VISIONZOO_MAX_TILES_PER_REQUEST"):
        decode(frames, TILE, max_tiles_per_request=8)
    assert len(decode(frames[:4], TILE, max_tiles_per_request=8)) == 4


def test_empty_and_oversized_requests_are_rejected():
    with pytest.raises(RequestError, match="no images"):
        decode([], BLOOD)
    many = [Upload(f"{i}.npy", npy(np.zeros((96, 96, 3), np.uint8))) for i in range(3)]
    with pytest.raises(PayloadTooLarge, match="limit is 2"):
        decode(many, BLOOD, 2)
    with pytest.raises(PayloadTooLarge, match="limit is 2"):  # a .npy batch counts its images
        decode([Upload("batch.npy", npy(np.zeros((3, 96, 96, 3), np.uint8)))], BLOOD, 2)
    with pytest.raises(PayloadTooLarge, match="bytes"):
        decode([many[0]], BLOOD, 8, 100)


def test_classification_and_mura_results():
    labels = ["a", "b", "c"]
    result = classification_result("x.png", np.array([0.2, 0.7, 0.1]), labels, top_k=2)
    assert result["label"] == "b" and [r["label"] for r in result["top_k"]] == ["b", "a"]
    mura = multitask_result("v.png", 0.8, np.array([0.1, 0.9]), {"abnormal": ["normal", "abnormal"], "body_part": ["hand", "leg"]}, 0.5)
    assert mura["label"] == "abnormal" and mura["body_part"] == "leg"


def test_study_probability_is_the_mean_of_the_views():
    labels = {"abnormal": ["normal", "abnormal"], "body_part": ["hand", "leg"]}
    views = [multitask_result(f"{i}.png", p, np.array([0.9, 0.1]), labels, 0.5) for i, p in enumerate([0.2, 0.4, 0.9])]
    study = study_result(views, labels, 0.5)
    assert study["abnormal_probability"] == pytest.approx(0.5) and study["label"] == "abnormal"
    assert study["body_part"] == "hand" and len(study["views"]) == 3


def mars_task(**metadata) -> Segmentation:
    version = ModelVersion("mars", "mars_dual_unet", "1", Path("."), {
        "task": "segmentation", "labels": {"probabilities": MARS_LABELS},
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 64, 128, 5]}],
        "preprocessing": TILE.to_dict(), **metadata})
    return Segmentation(version)


def test_segmentation_results_restore_the_original_size_and_count_classes():
    frame = np.zeros((256, 256), dtype=np.uint8)
    decoded = decode([Upload("frame.png", png(frame))], TILE, max_tiles_per_image=4)
    assert decoded[0].tiles.shape == (2, 64, 128, 1)
    probabilities = np.zeros((2, 64, 128, 5), dtype=np.float32)
    probabilities[0, ..., 1] = 1  # top tile: soil
    probabilities[1, ..., 3] = 1  # bottom tile: sand
    task = mars_task()
    (result,) = task.results("segment", decoded, {"probabilities": probabilities}, {"overlay": True})["segmentations"]
    assert (result["height"], result["width"], result["tiles"]) == (256, 256, 2)
    assert result["class_fractions"]["soil"] == pytest.approx(0.5) and result["class_fractions"]["sand"] == pytest.approx(0.5)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask_png"]))))
    assert mask.shape == (256, 256) and mask[0, 0] == 1 and mask[-1, -1] == 3  # pixel value = class index
    overlay = Image.open(io.BytesIO(base64.b64decode(result["overlay_png"])))
    assert overlay.size == (256, 256) and overlay.mode == "RGB"
    (as_npy,) = task.results("segment", decoded, {"probabilities": probabilities}, {"mask_format": "npy"})["segmentations"]
    np.testing.assert_array_equal(np.load(io.BytesIO(base64.b64decode(as_npy["mask_npy"]))), mask)


def test_the_class_map_never_holds_a_class_training_could_not_learn():
    """With `learnable_classes` in metadata.json (models trained with an ignored label) the argmax
    runs over those classes only, even where the ignored class has the highest probability."""
    probabilities = np.zeros((1, 64, 128, 5), dtype=np.float32)
    probabilities[..., 0] = 0.6  # "background": only meant unlabelled in AI4Mars
    probabilities[..., 2] = 0.3
    probabilities[..., 1] = 0.1
    assert set(np.unique(argmax_classes(probabilities, None))) == {0}
    restricted = mars_task(learnable_classes=[1, 2, 3, 4]).class_map(
        decode([Upload("f.png", png(np.zeros((64, 128), np.uint8)))], TILE)[0], probabilities)
    assert set(np.unique(restricted)) == {2}


def test_decision_weights_shift_the_class_map_where_the_classes_are_close():
    """metadata.json `decision_weights` multiply the probabilities before the arg-max (a prior
    correction for oversampled classes): a pixel that is narrowly sand becomes soil when sand's
    weight is halved, a pixel that is clearly sand stays sand, and "background" stays out."""
    probabilities = np.zeros((1, 64, 128, 5), dtype=np.float32)
    probabilities[..., :64, 0] = 0.5  # left half: "background" highest, then sand just above soil
    probabilities[..., :64, 3], probabilities[..., :64, 1] = 0.3, 0.2
    probabilities[..., 64:, 3], probabilities[..., 64:, 1] = 0.9, 0.1  # right half: clearly sand
    frame = decode([Upload("f.png", png(np.zeros((64, 128), np.uint8)))], TILE)[0]
    plain = mars_task(learnable_classes=[1, 2, 3, 4]).class_map(frame, probabilities)
    weighted = mars_task(learnable_classes=[1, 2, 3, 4], decision_weights=[1, 1, 1, 0.5, 1]).class_map(frame, probabilities)
    assert set(np.unique(plain)) == {3}
    assert set(np.unique(weighted[:, :64])) == {1} and set(np.unique(weighted[:, 64:])) == {3}


@pytest.mark.parametrize("weights", [[1, 1, 1, 0.5], [1, 1, 1, 0, 1], [1, 1, float("nan"), 1, 1]])
def test_decision_weights_that_do_not_fit_the_classes_are_refused_by_name(weights):
    with pytest.raises(ValueError, match="decision_weights must be 5 positive numbers"):
        _ = mars_task(decision_weights=weights).decision_weights


def test_overlay_tints_by_class_with_the_requested_opacity_and_draws_a_legend():
    source = Image.fromarray(np.full((120, 240), 40, np.uint8))
    class_map = np.zeros((120, 240), np.uint8)
    class_map[:, 120:] = 3
    colors = ["#000000", "#E69F00", "#56B4E9", "#F0E442", "#D55E00"]
    none = np.asarray(Image.open(io.BytesIO(overlay_png(source, class_map, colors, MARS_LABELS, opacity=0.0))))
    full = np.asarray(Image.open(io.BytesIO(overlay_png(source, class_map, colors, MARS_LABELS, opacity=1.0))))
    assert tuple(none[-1, -1]) == (40, 40, 40)  # opacity 0: the image as it was
    assert tuple(full[-1, -1]) == (0xF0, 0xE4, 0x42)  # opacity 1: the class colour (sand)
    assert (none[:20, :60] != 40).any()  # the legend sits in the top-left corner


def test_class_map_from_tiles_stitches_top_to_bottom():
    probabilities = np.zeros((3, 2, 4, 2))
    probabilities[1, ..., 1] = 1
    class_map = class_map_from_tiles(probabilities, 6, 4)
    assert class_map[:2].max() == 0 and class_map[2:4].min() == 1 and class_map[4:].max() == 0


def test_overlapping_tiles_are_blended_before_the_argmax():
    """Three tiles of a 2-band frame (the middle one straddles the seam): the blended map follows
    the tiles' agreement, and a class that only the seam tile sees in its edge rows does not cut a
    hard line where the bands meet."""
    probabilities = np.zeros((3, 4, 2, 2), dtype=np.float32)
    probabilities[..., 0] = 1.0  # every tile: class 0 ...
    probabilities[1, 1:3, :, 0], probabilities[1, 1:3, :, 1] = 0.0, 1.0  # ... but the seam tile's centre rows say class 1
    class_map = class_map_from_tiles(probabilities, 8, 2, overlap=0.5)
    assert class_map.shape == (8, 2)
    assert class_map[3:5].min() == 1 and class_map[:2].max() == 0 and class_map[6:].max() == 0


def test_heatmaps_are_drawn_at_the_image_size_and_warmest_where_the_map_peaks():
    from visionzoo.serving.processing import heatmap_png

    source = Image.fromarray(np.full((90, 120, 3), 128, np.uint8))
    cam = np.zeros((3, 3), np.float32)
    cam[1, 2] = 1.0  # middle row, right column
    heatmap = np.asarray(Image.open(io.BytesIO(heatmap_png(source, cam))).convert("RGB")).astype(int)
    assert heatmap.shape == (90, 120, 3)
    red_minus_blue = heatmap[..., 0] - heatmap[..., 2]
    assert red_minus_blue[45, 100] > red_minus_blue[45, 20] + 50  # warm on the right, cool on the left


def test_explain_needs_a_cam_output_and_asks_the_engine_for_it_only_when_requested():
    from visionzoo.serving.tasks import Classification

    def classifier(with_cam: bool) -> Classification:
        outputs = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
        if with_cam:
            outputs.append({"name": "cam", "datatype": "FP32", "shape": [-1, 3, 3]})
        return Classification(ModelVersion("cells", "cells", "4", Path("."), {
            "task": "classification", "labels": {"probabilities": ["a", "b"]}, "outputs": outputs}))

    plain, explaining = classifier(False), classifier(True)
    with pytest.raises(RequestError, match="version 4 of 'cells' has no Grad-CAM output"):
        plain.check("predict", {"explain": True, "top_k": 1})
    plain.check("predict", {"top_k": 1})  # without explain: fine
    assert plain.engine_outputs({"explain": False}) is None  # all outputs: the model has only the answer
    assert explaining.engine_outputs({}) == ("probabilities",)  # the Grad-CAM branch is skipped
    assert explaining.engine_outputs({"explain": True}) == ("probabilities", "cam")
    images = decode([Upload("x.png", png(np.full((8, 8, 3), 90, np.uint8)))], ImageSpec(8, 8))
    cam = np.zeros((1, 3, 3), np.float32)
    cam[0, 0, 0] = 1.0
    (prediction,) = explaining.results("predict", images, {"probabilities": np.array([[0.2, 0.8]], np.float32), "cam": cam},
                                       {"explain": True, "top_k": 1})["predictions"]
    assert prediction["label"] == "b" and Image.open(io.BytesIO(base64.b64decode(prediction["heatmap_png"]))).size == (8, 8)
