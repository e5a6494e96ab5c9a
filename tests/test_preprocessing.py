"""The TF-free preprocessing shared by training and serving."""

import io

import numpy as np
import pytest
from PIL import Image

from visionzoo.preprocessing import (
    ImageDecodeError,
    ImageSpec,
    blend_tiles,
    prepare_image,
    prepare_mask_tiles,
    prepare_tiles,
    resize_label_map,
    stitch_tiles,
    tile_count,
    tile_offsets,
)


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_spec_round_trips_through_a_dict_and_rejects_unknown_keys():
    spec = ImageSpec(64, 128, "grayscale", tiling="rows")
    assert ImageSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown ImageSpec keys"):
        ImageSpec.from_dict({**spec.to_dict(), "mean": 0.5})


@pytest.mark.parametrize("bad", [{"color_mode": "cmyk"}, {"resize_method": "magic"}, {"tiling": "grid"}, {"height": 0}])
def test_spec_validates_its_fields(bad):
    with pytest.raises(ValueError):
        ImageSpec(**{"height": 8, "width": 8, **bad})


def test_rgb_image_is_resized_to_the_model_shape():
    pixels = np.random.default_rng(0).integers(0, 255, size=(50, 70, 3), dtype=np.uint8)
    out = prepare_image(encode(pixels), ImageSpec(32, 32, "rgb"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_grayscale_rgb_replicates_one_grey_channel():
    pixels = np.random.default_rng(0).integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    out = prepare_image(encode(pixels), ImageSpec(40, 40, "grayscale_rgb"))
    assert out.shape == (40, 40, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_sixteen_bit_grey_is_stretched_not_clipped():
    values = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)  # 12-bit data in 16 bits
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = prepare_image(image, ImageSpec(64, 64, "grayscale"))
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 200


def test_alpha_is_composited_onto_black():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0  # fully transparent red
    out = prepare_image(encode(rgba, mode="RGBA"), ImageSpec(8, 8, "rgb"))
    assert out.max() == 0


@pytest.mark.parametrize(
    "payload, message",
    [(b"", "empty file"), (b"not an image at all", "not an image format"), (encode(np.zeros((64, 64, 3), np.uint8), "JPEG")[:300], "cannot decode")],
)
def test_undecodable_inputs_raise_an_error_that_names_the_input(payload, message):
    with pytest.raises(ImageDecodeError, match=message) as info:
        prepare_image(payload, ImageSpec(8, 8), name="upload-3.jpg")
    assert "upload-3.jpg" in str(info.value)


def test_truncated_real_jpegs_are_rejected(real_data):
    for path in sorted((real_data / "corrupt_samples").glob("*.jpg")):
        with pytest.raises(ImageDecodeError, match="truncated"):
            prepare_image(path, ImageSpec(32, 32, "grayscale_rgb"))


def test_row_tiling_keeps_aspect_and_matches_the_source_halves():
    """A 256x256 AI4Mars frame becomes its top and bottom halves, each downsampled x2."""
    spec = ImageSpec(64, 128, "grayscale", tiling="rows")
    assert tile_count(256, 256, spec) == 2
    assert tile_count(1024, 1024, spec) == 2
    assert tile_count(64, 128, spec) == 1
    assert tile_count(100, 1000, spec) == 1  # never zero tiles
    assert tile_count(600, 200, spec) == 6
    frame = np.zeros((256, 256), dtype=np.uint8)
    frame[128:] = 200
    tiles = prepare_tiles(encode(frame), spec)
    assert tiles.shape == (2, 64, 128, 1)
    assert tiles[0].max() == 0 and tiles[1].min() == 200


def test_mask_tiles_use_nearest_neighbour_and_stitch_back():
    spec = ImageSpec(64, 128, "grayscale", tiling="rows")
    mask = np.random.default_rng(0).integers(0, 5, size=(256, 256)).astype(np.uint8)
    tiles = prepare_mask_tiles(mask, spec, 2)
    assert tiles.shape == (2, 64, 128)
    assert set(np.unique(tiles)) <= set(range(5))  # labels stay labels
    stitched = stitch_tiles(tiles)
    assert stitched.shape == (128, 128)
    restored = resize_label_map(stitched, 256, 256)
    assert restored.shape == (256, 256) and set(np.unique(restored)) <= set(range(5))


def _jpeg(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_draft_decodes_large_jpegs_at_a_reduced_scale_still_covering_the_model_size():
    from visionzoo.preprocessing import load_image

    smooth = np.linspace(0, 255, 2000, dtype=np.float32)
    large = _jpeg(np.add.outer(smooth, smooth[::-1]).clip(0, 255).astype(np.uint8))  # 2000x2000 grey
    assert load_image(large, ImageSpec(224, 224, "grayscale")).size == (2000, 2000)
    assert load_image(large, ImageSpec(224, 224, "grayscale", draft=True)).size == (250, 250)  # 1/8 >= 224
    assert load_image(large, ImageSpec(300, 300, "grayscale", draft=True)).size == (500, 500)  # 1/4: 1/8 would be too small
    tiles = prepare_tiles(large, ImageSpec(64, 128, "grayscale", tiling="rows", draft=True))
    assert tiles.shape == (2, 64, 128, 1)


def test_draft_makes_the_model_input_nearly_independent_of_the_file_size():
    """The same picture saved at its own size and four times larger gives nearly the same model input
    with draft decoding (what the X-ray model needs from radiographs of any resolution)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(rng.integers(0, 255, (60, 50), dtype=np.uint8)).resize((400, 480), Image.Resampling.BICUBIC))
    spec = ImageSpec(224, 224, "grayscale", draft=True)
    small = prepare_image(_jpeg(base), spec).astype(np.float32)
    big = prepare_image(_jpeg(np.asarray(Image.fromarray(base).resize((1600, 1920), Image.Resampling.BICUBIC))), spec)
    assert np.abs(small - big.astype(np.float32)).mean() < 3.0


def test_overlapping_tiles_add_one_over_every_seam():
    spec = ImageSpec(64, 128, "grayscale", tiling="rows", tile_overlap=0.5)
    assert tile_offsets(2, 0.5) == [0.0, 0.5, 1.0] and tile_offsets(1, 0.5) == [0.0] and tile_offsets(3, 0.0) == [0.0, 1.0, 2.0]
    assert tile_count(256, 256, spec) == 3 and tile_count(64, 128, spec) == 1 and tile_count(600, 200, spec) == 11
    frame = np.zeros((256, 256), dtype=np.uint8)
    frame[:, :] = np.arange(256, dtype=np.uint8)[:, None]  # brightness = row
    tiles = prepare_tiles(encode(frame), spec)
    assert tiles.shape == (3, 64, 128, 1)
    plain = prepare_tiles(encode(frame), ImageSpec(64, 128, "grayscale", tiling="rows"))
    np.testing.assert_array_equal(tiles[[0, 2]], plain)  # the bands are still there, unchanged
    assert abs(float(tiles[1, 0].mean()) - 64) <= 2 and abs(float(tiles[1, -1].mean()) - 191) <= 2  # rows 64..191


def test_blending_is_seamless_and_reduces_to_stitching_without_overlap():
    rng = np.random.default_rng(0)
    tiles = rng.random((2, 8, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(blend_tiles(tiles, 0.0), stitch_tiles(tiles))
    # Tiles that agree where they overlap blend back to the frame exactly.
    frame = rng.random((24, 4, 3)).astype(np.float32)
    overlapping = np.stack([frame[top : top + 8] for top in (0, 4, 8, 12, 16)])
    np.testing.assert_allclose(blend_tiles(overlapping, 0.5), frame, rtol=1e-6)
    # Tiles that disagree change smoothly across the seam: no step at the band edge.
    disagreeing = np.stack([np.zeros((8, 1)), np.full((8, 1), 0.5), np.ones((8, 1))]).astype(np.float32)
    blended = blend_tiles(disagreeing, 0.5)[:, 0]
    assert blended.shape == (16,) and np.all(np.diff(blended) >= 0) and np.abs(np.diff(blended)).max() < 0.2


def test_specs_read_from_metadata_skip_descriptive_keys_and_check_the_overlap():
    preprocessing = {"height": 64, "width": 128, "color_mode": "grayscale", "tiling": "rows", "tile_overlap": 0.5,
                     "value_range": [0, 255], "layout": "NHWC", "dtype": "float32", "scaling": "inside the model"}
    assert ImageSpec.from_metadata(preprocessing).tile_overlap == 0.5
    with pytest.raises(ValueError, match="tile_overlap must be in"):
        ImageSpec(64, 128, tiling="rows", tile_overlap=1.0)
    with pytest.raises(ValueError, match="needs tiling"):
        ImageSpec(64, 128, tile_overlap=0.5)
