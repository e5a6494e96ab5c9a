"""Bad and odd input against one real `bentoml serve`: the BentoML endpoints, OIP REST and OIP gRPC.

Every bad case must get its exact 4xx status (or gRPC code) with a JSON `{"error": ...}` body that
names the problem and shows no server path; odd but valid images (16-bit, palette, CMYK, EXIF-rotated,
animated, TIFF, WebP ...) must be answered 200. After each group the server still answers a good
request, and at the end its log holds no ERROR line or traceback for any of these client mistakes.

One server for the module, with small limits so the size cases stay small and fast:
20 images, 1 MiB per file, 4 MiB per request body and per gRPC message. The pixel and tile limits
are the documented defaults (serving/config.py): 40,000,000 pixels per image, 16 tiles per image.
"""

from __future__ import annotations

import base64
import functools
import gzip
import io
import json
import re
import socket
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.conftest import shipped_input_shape

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MAX_IMAGES = 20
MAX_IMAGE_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # the documented default, not overridden
BLOOD = (96, 96, 3)
MARS_TILE = "{}x{}".format(*shipped_input_shape("mars_dual_unet")[:2])  # "128x256": the served tile, as errors name it
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# absolute paths of the server's machine must never appear in an answer
PATH_LEAK = re.compile(r"(?<![\w.])/(?:work|tmp|usr|home|root|opt|var|srv|app)/|site-packages|exported_models/")


@pytest.fixture(scope="module")
def served_env() -> dict[str, str]:
    return {
        "VISIONZOO_MAX_IMAGES": str(MAX_IMAGES),
        "VISIONZOO_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "VISIONZOO_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "VISIONZOO_GRPC_MAX_MESSAGE_BYTES": str(MAX_REQUEST_BYTES),
    }


@pytest.fixture(scope="module")
def log_start(served) -> int:
    """Where the server log stood when the cases began (start-up lines are not judged)."""
    return len(served.log_path.read_text(errors="replace"))


@pytest.fixture(scope="module")
def client(served, log_start):
    with httpx.Client(base_url=served.url, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def channel(served):
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(served.grpc_address, options=options) as opened:
        grpc.channel_ready_future(opened).result(timeout=30)
        yield opened


# ---- inputs, made in memory -----------------------------------------------------------------------

def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def rgb(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@functools.cache
def good_png() -> bytes:
    return encoded(rgb(), "PNG")


@functools.cache
def good_jpeg() -> bytes:
    return encoded(rgb(), "JPEG", quality=90)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_header_only(shape: tuple[int, ...], descr: str = "|u1", fortran: bool = False) -> bytes:
    """A .npy header declaring `shape` with no data after it (a 1 TiB array costs 128 bytes)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.cache
def grey_png(width: int, height: int) -> bytes:
    """A black 8-bit grey PNG of any size, written row by row: 20000x20000 is a few hundred KB."""
    squeeze = zlib.compressobj(9)
    rows = bytes(width + 1) * max(1, min(height, (8 << 20) // (width + 1)))  # filter byte + pixels
    per_chunk = len(rows) // (width + 1)
    parts, left = [], height
    while left > 0:
        take = min(per_chunk, left)
        parts.append(squeeze.compress(rows[: take * (width + 1)]))
        left -= take
    parts.append(squeeze.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


@functools.cache
def truncated_jpeg() -> bytes:
    import os

    data_dir = os.environ.get("VISIONZOO_DATA")
    if data_dir:
        samples = sorted((Path(data_dir) / "corrupt_samples").glob("*.jp*g"))
        if samples:
            return samples[0].read_bytes()
    whole = encoded(rgb(256, 256, seed=3), "JPEG", quality=95)
    return whole[: len(whole) // 2]


def random_bytes(size: int, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def exif_rotated_jpeg() -> bytes:
    """80 wide, 40 high as stored; EXIF orientation 6 (rotate 90 clockwise): 40 wide, 80 high as shown."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(rgb(80, 40, seed=5), "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [rgb(64, 48, seed=k).convert("P") for k in range(3)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


ODD_IMAGES: dict[str, Callable[[], bytes]] = {
    "png-16bit-grey": lambda: encoded(Image.fromarray(np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)), "PNG"),
    "png-palette": lambda: encoded(rgb().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "png-rgba": lambda: encoded(rgb().convert("RGBA"), "PNG"),
    "png-grey-alpha": lambda: encoded(rgb().convert("LA"), "PNG"),
    "png-1bit": lambda: encoded(rgb().convert("1"), "PNG"),
    "jpeg-cmyk": lambda: encoded(rgb().convert("CMYK"), "JPEG"),
    "jpeg-grey": lambda: encoded(rgb().convert("L"), "JPEG"),
    "jpeg-progressive": lambda: encoded(rgb(), "JPEG", progressive=True),
    "jpeg-exif-rotated": exif_rotated_jpeg,
    "gif-animated": animated_gif,
    "tiff": lambda: encoded(rgb(), "TIFF"),
    "tiff-16bit-grey": lambda: encoded(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64)), "TIFF"),
    "webp": lambda: encoded(rgb(), "WEBP"),
    "bmp": lambda: encoded(rgb(), "BMP"),
    "npy-uint8-grey": lambda: npy(np.zeros((48, 64), np.uint8)),
    "npy-float-rgb": lambda: npy(np.full((48, 64, 3), 127.5, np.float32)),
}


# ---- requests ------------------------------------------------------------------------------------

def files(*items: tuple[str, bytes], field: str = "images") -> list:
    return [(field, (name, data, "application/octet-stream")) for name, data in items]


def raw_multipart(*parts: tuple[list[str], bytes], boundary: str = "vzBoundary7") -> tuple[bytes, str]:
    """A multipart body written by hand (headers exactly as given): for what clients refuse to send."""
    body = b""
    for headers, data in parts:
        body += f"--{boundary}\r\n".encode() + "".join(h + "\r\n" for h in headers).encode("latin-1") + b"\r\n" + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def raw(body: bytes, content_type: str | None, **headers: str) -> dict:
    sent = {"content-type": content_type} if content_type else {}
    return {"content": body, "headers": {**sent, **headers}}


def file_part(name: str, data: bytes, field: str = "images") -> tuple[list[str], bytes]:
    return [f'Content-Disposition: form-data; name="{field}"; filename="{name}"',
            "Content-Type: application/octet-stream"], data


def check_error(response: httpx.Response, status: int, message: str) -> dict:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert message in body["error"], f"{message!r} not in {body['error']!r}"
    assert not PATH_LEAK.search(body["error"]), f"the message shows a server path: {body['error']!r}"
    assert str(REPO) not in body["error"]
    return body


def good_http(client: httpx.Client) -> None:
    response = client.post("/bloodcell/predict", files=files(("cell.png", good_png())))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["file"] == "cell.png"


def bloodcell_json(**fields) -> dict:
    """One UINT8 image as JSON; a field given as None is left out."""
    tensor = {"name": "image_uint8", "datatype": "UINT8", "shape": [1, *BLOOD], "data": [0] * int(np.prod(BLOOD))}
    tensor.update(fields)
    return {"inputs": [{key: value for key, value in tensor.items() if value is not None}]}


SHARED = {"shared_memory_region": "r", "shared_memory_byte_size": int(np.prod(BLOOD))}  # this server has it off


def oip_json(document, **headers) -> dict:
    return {"content": json.dumps(document).encode(), "headers": {"content-type": "application/json", **headers}}


def oip_binary(tensors: list[tuple[dict, bytes]], header_length: str | None = None, extra: bytes = b"") -> dict:
    """Triton's binary tensor data: the JSON header, then each input's bytes (binary_data_size)."""
    inputs = []
    for tensor, data in tensors:
        inputs.append({**tensor, "parameters": {"binary_data_size": len(data), **tensor.get("parameters", {})}})
    header = json.dumps({"inputs": inputs}).encode()
    body = header + b"".join(data for _, data in tensors) + extra
    return {"content": body, "headers": {"content-type": "application/octet-stream",
                                         "Inference-Header-Content-Length": header_length or str(len(header))}}


def files_json(*elements: bytes, model_input: str = "image_bytes") -> dict:
    return {"inputs": [{"name": model_input, "datatype": "BYTES", "shape": [len(elements)],
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(e).decode() for e in elements]}]}


def deep_list(depth: int) -> bytes:
    return b"[" * depth + b"0" + b"]" * depth


# ---- 1. BentoML endpoints: the multipart body itself ----------------------------------------------

FORM_CASES = [
    pytest.param("/bloodcell/predict", lambda: raw(b"--x\r\n\r\nhello\r\n--x--\r\n", "multipart/form-data"),
                 400, "multipart/form-data without a boundary parameter", id="multipart-without-boundary"),
    pytest.param("/models", lambda: raw(b"{}", "multipart/form-data"), 400, "without a boundary parameter",
                 id="bentoml-json-route-multipart-without-boundary"),
    pytest.param("/admin/reload", lambda: raw(b'{"model": "mars"}', "multipart/form-data; charset=utf-8"), 400,
                 "without a boundary parameter", id="admin-route-multipart-without-boundary"),
    pytest.param("/bloodcell/predict", lambda: raw(*raw_multipart(
        (["Content-Type: image/png"], good_png()))), 400, "Content-Disposition", id="part-without-content-disposition"),
    pytest.param("/bloodcell/predict", lambda: raw(b"garbage without any boundary line", "multipart/form-data; boundary=zz"),
                 400, "malformed multipart/form-data body: Invalid multipart data. (Expected boundary character",
                 id="multipart-body-without-parts"),
    pytest.param("/bloodcell/predict", lambda: raw(b"--zz\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n\r\n"
                                                   + good_png()[:100], "multipart/form-data; boundary=zz"),
                 400, "no images", id="multipart-truncated-mid-part"),
    pytest.param("/bloodcell/predict", lambda: raw(b"images=http%3A%2F%2F127.0.0.1%3A1%2Fx.png", "application/x-www-form-urlencoded"),
                 400, "URLs are not fetched", id="urlencoded-images-url"),
    pytest.param("/bloodcell/predict", lambda: raw(b"top_k=3", "application/x-www-form-urlencoded"),
                 400, "no images", id="urlencoded-without-images"),
    pytest.param("/mars/segment", lambda: {"data": {"images": "http://127.0.0.1:1/x.png"}, "files": files(("a.png", good_png()), field="top")},
                 400, "URLs are not fetched", id="multipart-images-url-as-text-and-unknown-field"),
    pytest.param("/mars/segment", lambda: raw(*raw_multipart(
        (['Content-Disposition: form-data; name="images"'], b"http://127.0.0.1:1/x.png"))),
                 400, "URLs are not fetched", id="multipart-images-url-as-text"),
    pytest.param("/bloodcell/predict", lambda: {"files": files(("a.png", good_png()), field="image")},
                 400, "unknown field 'image'", id="wrong-field-name"),
    pytest.param("/bloodcell/predict", lambda: {"files": files(("a.png", good_png()), ("k.txt", b"3"), field="images")
                                                + files(("k.txt", b"3"), field="top_k")},
                 400, "field 'top_k' must be a form value, not a file", id="option-sent-as-file"),
    pytest.param("/bloodcell/predict", lambda: {"files": files(("a.png", good_png())), "data": {"top_k": ["1", "2"]}},
                 400, "field 'top_k' was sent more than once", id="option-repeated"),
    pytest.param("/bloodcell/predict", lambda: {"data": {"top_k": "1"}}, 400, "no images", id="no-images"),
    pytest.param("/mura/predict_study", lambda: raw(b"", "multipart/form-data; boundary=zz"), 400, "no images",
                 id="study-empty-body"),
    pytest.param("/bloodcell/predict", lambda: raw(good_png(), "image/png"), 415, "multipart/form-data", id="raw-png-body"),
    pytest.param("/bloodcell/predict", lambda: raw(b'{"images": ["a.png"]}', "application/json"), 415, "multipart/form-data",
                 id="json-body"),
    pytest.param("/bloodcell/predict", lambda: raw(b"hello", None), 415, "no Content-Type", id="no-content-type"),
    pytest.param("/bloodcell/predict", lambda: raw(b"x" * (MAX_REQUEST_BYTES + 1), "multipart/form-data; boundary=zz"),
                 413, "VISIONZOO_MAX_REQUEST_BYTES", id="body-over-request-limit"),
    pytest.param("/bloodcell/predict", lambda: {"files": files(*[(f"{i}.png", good_png()) for i in range(MAX_IMAGES + 1)])},
                 413, "VISIONZOO_MAX_IMAGES", id="too-many-images"),
    pytest.param("/bloodcell/predict", lambda: {"files": files(("big.png", random_bytes(MAX_IMAGE_BYTES + 1)))},
                 413, "VISIONZOO_MAX_IMAGE_BYTES", id="file-over-byte-limit"),
]


@pytest.mark.parametrize("path, request_of, status, message", FORM_CASES)
def test_malformed_forms_are_refused_by_name(client, path, request_of, status, message):
    check_error(client.post(path, **request_of()), status, message)


def test_text_urls_in_images_are_never_fetched(client):
    """A URL in the images field is refused, and the server never connects to it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(1.0)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.png"
        check_error(client.post("/bloodcell/predict", data={"images": url}), 400, "URLs are not fetched")
        check_error(client.post("/bloodcell/predict", content=f"images={url}".encode(),
                                headers={"content-type": "application/x-www-form-urlencoded"}), 400, "URLs are not fetched")
        with pytest.raises(TimeoutError):
            listener.accept()


# Odd file names: the answer shows them printable and bounded (http_inputs.display_name); a header
# line the multipart parser refuses (a bare CR, over python-multipart's 4 KiB per header line) is a
# 400 that says why.
NAME_CASES = [
    pytest.param('filename="a\nb.png"', 200, "a?b.png", id="filename-newline"),
    pytest.param('filename="a\rb.png"', 400, "Did not find LF character at end of header", id="filename-bare-cr"),
    pytest.param('filename="a%0Ab.png"', 200, "a%0Ab.png", id="filename-escaped-newline"),
    pytest.param('filename="../../etc/passwd"', 200, "passwd", id="filename-traversal"),
    pytest.param('filename="C:\\\\x\\\\scan.png"', 200, "scan.png", id="filename-windows-path"),
    pytest.param('filename="' + "n" * 10_000 + '.png"', 400, "Maximum header size exceeded", id="filename-10000-chars"),
    pytest.param('filename="' + "n" * 3000 + '.png"', 200, "n" * 197 + "...", id="filename-3000-chars"),
    pytest.param('filename="\x00\x7f.png"', 200, "??.png", id="filename-nul-del"),
    pytest.param('filename=""', 200, "images[0]", id="filename-empty"),
]


@pytest.mark.parametrize("filename, status, shown", NAME_CASES)
def test_odd_file_names_are_answered_printable_and_bounded(client, filename, status, shown):
    disposition = f'Content-Disposition: form-data; name="images"; {filename}'
    body, content_type = raw_multipart(([disposition, "Content-Type: image/png"], good_png()))
    response = client.post("/bloodcell/predict", content=body, headers={"content-type": content_type})
    if status != 200:
        check_error(response, status, shown)
        return
    assert response.status_code == 200, response.text
    name = response.json()["predictions"][0]["file"]
    assert name == shown and len(name) <= 200 and not re.search(r"[\x00-\x1f\x7f]", name)


def test_odd_file_names_in_errors_are_printable_too(client):
    body, content_type = raw_multipart(file_part("bad\r\nX-Injected: 1\r\n" + "z" * 5000 + ".jpg", b"not an image"))
    response = client.post("/bloodcell/predict", content=body, headers={"content-type": content_type})
    if response.status_code == 400:
        check_error(response, 400, "multipart")
        return
    error = check_error(response, 415, "cannot")["error"]
    assert "\r" not in error and "\n" not in error and len(error) < 1000
    assert "x-injected" not in {k.lower() for k in response.headers}


def test_forms_group_leaves_the_server_serving(client):
    good_http(client)


# ---- 2. BentoML endpoints: the files ---------------------------------------------------------------

FILE_CASES = [
    pytest.param("/bloodcell/predict", lambda: [("empty.png", b"")], 400, "empty.png: empty file", id="zero-byte-file"),
    pytest.param("/bloodcell/predict", lambda: [("noise.jpg", random_bytes(5000))], 415, "noise.jpg: not an image format",
                 id="random-bytes"),
    pytest.param("/mura/predict", lambda: [("cut.jpg", truncated_jpeg())], 415, "cut.jpg: cannot decode image",
                 id="truncated-jpeg"),
    pytest.param("/bloodcell/predict", lambda: [("notes.txt", b"hello world\n")], 415, "notes.txt", id="text-file"),
    pytest.param("/bloodcell/predict", lambda: [("broken.gif", b"GIF89a broken")], 415, "broken.gif", id="broken-gif-header"),
    pytest.param("/bloodcell/predict", lambda: [("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>')], 415, "x.svg",
                 id="svg"),
    pytest.param("/bloodcell/predict", lambda: [("png-header.png", good_png()[:33])], 415, "png-header.png", id="png-header-only"),
    pytest.param("/bloodcell/predict", lambda: [("bomb.png", grey_png(20_000, 20_000))], 413, "VISIONZOO_MAX_IMAGE_PIXELS",
                 id="decompression-bomb-png-20000x20000"),
    pytest.param("/mars/segment", lambda: [("bomb.png", grey_png(20_000, 20_000))], 413, "VISIONZOO_MAX_IMAGE_PIXELS",
                 id="decompression-bomb-png-mars"),
    pytest.param("/mars/segment", lambda: [("tall.png", encoded(Image.new("L", (64, 60_000)), "PNG"))], 413,
                 "VISIONZOO_MAX_TILES_PER_IMAGE", id="mars-tall-thin-64x60000"),
    pytest.param("/mars/segment", lambda: [(f"{i}.png", grey_png(8000, 8000)) for i in range(16)], 413,
                 "VISIONZOO_MAX_IMAGE_PIXELS", id="16-grey-pngs-8000x8000"),
    pytest.param("/mars/segment", lambda: [(f"{i}.png", encoded(Image.new("L", (128, 512)), "PNG")) for i in range(9)], 413,  # 15 overlapping tiles each
                 "VISIONZOO_MAX_TILES_PER_REQUEST", id="mars-tiles-over-request-limit"),
    pytest.param("/bloodcell/predict", lambda: [("tib.npy", npy_header_only((1 << 20, 1 << 20)))], 413,
                 "VISIONZOO_MAX_IMAGE_PIXELS", id="npy-header-declares-1-TiB"),
    pytest.param("/bloodcell/predict", lambda: [("batch.npy", npy_header_only((1 << 30, 96, 96, 3)))], 413,
                 "VISIONZOO_MAX_IMAGES", id="npy-header-declares-a-billion-images"),
    pytest.param("/bloodcell/predict", lambda: [("pickle.npy", npy(np.array([{"a": 1}, None], dtype=object)))], 415,
                 "dtype object is not numeric", id="npy-pickle-object-dtype"),
    pytest.param("/bloodcell/predict", lambda: [("huge.npy", npy(np.full((48, 64, 3), 1e38, np.float32)))], 400,
                 "pixel values must lie in 0..255", id="npy-huge-finite-values"),
    pytest.param("/bloodcell/predict", lambda: [("huge.npy", npy(np.full(BLOOD, 1e38, np.float32)))], 400,
                 "pixel values must lie in 0..255", id="npy-huge-values-at-model-size"),
    pytest.param("/mars/segment", lambda: [("huge.npy", npy(np.full((64, 128, 1), 3e38, np.float32)))], 400,
                 "pixel values must lie in 0..255", id="npy-huge-values-mars-tile"),
    pytest.param("/bloodcell/predict", lambda: [("nan.npy", npy(np.full((48, 64), np.nan, np.float32)))], 400,
                 "NaN or infinity", id="npy-nan"),
    pytest.param("/mura/predict", lambda: [("inf.npy", npy(np.array([[0, np.inf], [1, 2]], np.float64)))], 400,
                 "NaN or infinity", id="npy-inf"),
    pytest.param("/bloodcell/predict", lambda: [("neg.npy", npy(np.full((48, 64), -1, np.int16)))], 400,
                 "pixel values must lie in 0..255", id="npy-negative"),
    pytest.param("/bloodcell/predict", lambda: [("short.npy", npy(np.zeros((48, 64), np.uint8))[:-10])], 400,
                 "the header declares", id="npy-truncated-data"),
    pytest.param("/bloodcell/predict", lambda: [("bad.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': ???}   \n")], 400,
                 "not a readable .npy array", id="npy-bad-header"),
    pytest.param("/bloodcell/predict", lambda: [("v9.npy", b"\x93NUMPY\x09\x00" + bytes(10))], 400,
                 "not a readable .npy array", id="npy-unknown-version"),
    pytest.param("/bloodcell/predict", lambda: [("f.npy", npy(np.asfortranarray(np.zeros((48, 64), np.uint8))))], 400,
                 "Fortran-ordered", id="npy-fortran-order"),
    pytest.param("/bloodcell/predict", lambda: [("empty.npy", npy(np.zeros((0, 64), np.uint8)))], 400, "the array is empty",
                 id="npy-empty-array"),
    pytest.param("/bloodcell/predict", lambda: [("5d.npy", npy(np.zeros((1, 1, 4, 4, 3), np.uint8)))], 400, "got shape",
                 id="npy-5d"),
    pytest.param("/bloodcell/predict", lambda: [("2ch.npy", npy(np.zeros((8, 8, 2), np.uint8)))], 400,
                 "an image array must be", id="npy-two-channels"),
    pytest.param("/bloodcell/predict", lambda: [("c.npy", npy(np.zeros((8, 8), np.complex64)))], 415, "is not numeric",
                 id="npy-complex"),
    pytest.param("/bloodcell/predict", lambda: [("s.npy", npy(np.array([["ab"]])))], 415, "is not numeric", id="npy-strings"),
    pytest.param("/bloodcell/predict", lambda: [("ok.png", good_png()), ("empty.jpg", b"")], 400, "empty.jpg: empty file",
                 id="one-bad-file-among-good"),
]


@pytest.mark.parametrize("path, uploads_of, status, message", FILE_CASES)
def test_bad_files_are_refused_by_name(client, path, uploads_of, status, message):
    started = time.monotonic()
    check_error(client.post(path, files=files(*uploads_of())), status, message)
    assert time.monotonic() - started < 30, "refusing a file must not cost its decoding"


OPTION_CASES = [
    pytest.param("/bloodcell/predict", {"top_k": "0"}, "top_k must be between 1 and", id="top_k-0"),
    pytest.param("/bloodcell/predict", {"top_k": "-1"}, "top_k must be between 1 and", id="top_k-negative"),
    pytest.param("/bloodcell/predict", {"top_k": "abc"}, "top_k", id="top_k-text"),
    pytest.param("/bloodcell/predict", {"top_k": "1000"}, "top_k must be between 1 and", id="top_k-1000"),
    pytest.param("/bloodcell/predict", {"top_k": "2.5"}, "top_k", id="top_k-fraction"),
    pytest.param("/bloodcell/predict", {"top_k": "99999999999999999999999"}, "top_k", id="top_k-huge"),
    pytest.param("/mars/segment", {"mask_format": "jpeg"}, "mask_format", id="mask_format-jpeg"),
    pytest.param("/mars/segment", {"mask_format": ""}, "mask_format", id="mask_format-empty"),
    pytest.param("/mars/segment", {"overlay": "maybe"}, "overlay", id="overlay-not-boolean"),
    pytest.param("/mars/segment", {"overlay_opacity": "2"}, "overlay_opacity must be between 0 and 1", id="overlay_opacity-2"),
    pytest.param("/mars/segment", {"overlay_opacity": "NaN"}, "overlay_opacity", id="overlay_opacity-nan"),
    pytest.param("/mura/predict", {"top_k": "3"}, "unknown field 'top_k'", id="option-of-another-endpoint"),
]


@pytest.mark.parametrize("path, data, message", OPTION_CASES)
def test_bad_options_are_400(client, path, data, message):
    check_error(client.post(path, files=files(("a.png", good_png())), data=data), 400, message)


@pytest.mark.parametrize("path", ["/bloodcell/predict", "/mura/predict", "/mura/predict_study", "/mars/segment"])
@pytest.mark.parametrize("kind", list(ODD_IMAGES))
def test_odd_but_valid_images_are_answered(client, path, kind):
    data = ODD_IMAGES[kind]()
    response = client.post(path, files=files((f"{kind}.img", data)))
    assert response.status_code == 200, f"{kind}: {response.status_code} {response.text[:300]}"
    body = response.json()
    if path == "/mars/segment":
        (segmentation,) = body["segmentations"]
        expected = (80, 40) if kind == "jpeg-exif-rotated" else (48, 64)
        assert (segmentation["height"], segmentation["width"]) == expected
        assert abs(sum(segmentation["class_fractions"].values()) - 1) < 1e-6
    elif path == "/mura/predict_study":
        assert 0 <= body["abnormal_probability"] <= 1
    else:
        assert len(body["predictions"]) == 1 and body["predictions"][0]["file"] == f"{kind}.img"


def test_valid_option_edges_are_answered(client):
    response = client.post("/bloodcell/predict", files=files(("a.png", good_png())), data={"top_k": "8"})
    assert response.status_code == 200 and len(response.json()["predictions"][0]["top_k"]) == 8
    response = client.post("/mars/segment", files=files(("a.png", good_png())),
                           data={"mask_format": "npy", "overlay": "true", "overlay_opacity": "0"})
    assert response.status_code == 200, response.text
    assert {"mask_npy", "overlay_png"} <= set(response.json()["segmentations"][0])


def test_unknown_routes_and_methods_are_404_or_405(client):
    # BentoML answers routes it does not know itself (plain text "Not Found"): the status is what counts here
    assert client.post("/nope/predict", files=files(("a.png", good_png()))).status_code == 404
    assert client.get("/bloodcell/predict").status_code in (404, 405)


def test_files_group_leaves_the_server_serving(client):
    good_http(client)


# ---- 3. OIP REST -----------------------------------------------------------------------------------

def _gzip_bomb() -> dict:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    body = b"".join(squeeze.compress(block) for _ in range(64)) + squeeze.flush()  # 64 MiB of zeros in ~64 KB
    return {"content": body, "headers": {"content-type": "application/json", "content-encoding": "gzip"}}


def _pixels_binary(count: int, datatype: str = "UINT8", shape=None, data: bytes | None = None, name="image_uint8", **kw) -> dict:
    itemsize = 4 if datatype == "FP32" else 1
    payload = data if data is not None else bytes(count * int(np.prod(BLOOD)) * itemsize)
    return oip_binary([({"name": name, "datatype": datatype, "shape": shape or [count, *BLOOD]}, payload)], **kw)


def _two_inputs() -> dict:
    document = bloodcell_json()
    document["inputs"].append(dict(document["inputs"][0], name="image"))
    return oip_json(document)


REST_CASES = [
    pytest.param("bloodcell", lambda: {"content": b"this is not json", "headers": {"content-type": "application/json"}},
                 400, "not valid JSON", id="body-not-json"),
    pytest.param("bloodcell", lambda: {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "application/json"}},
                 400, "not valid JSON", id="body-not-utf8"),
    pytest.param("bloodcell", lambda: {"content": b'{"inputs": [{"name": "image_uint8", "datatype": "UINT8", "shape": [1], "data": '
                                                   + deep_list(100_000) + b"}]}",
                                       "headers": {"content-type": "application/json"}},
                 400, "nested too deeply", id="json-nested-100000-deep-list"),
    pytest.param("bloodcell", lambda: {"content": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                       "headers": {"content-type": "application/json"}},
                 400, "nested too deeply", id="json-nested-100000-deep-object"),
    pytest.param("bloodcell", lambda: oip_json([1, 2, 3]), 400, "must be a JSON object", id="json-array"),
    pytest.param("bloodcell", lambda: oip_json({"inputs": []}), 400, "non-empty 'inputs'", id="no-inputs"),
    pytest.param("bloodcell", lambda: oip_json({"inputs": ["image"]}), 400, "inputs[0] must be an object", id="input-not-object"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(shape=[1, 32, 32, 3], data=[0] * 3072)), 400,
                 "has shape [-1, 96, 96, 3], got [1, 32, 32, 3]", id="wrong-shape"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(shape=[1, 96, 96])), 400, "has shape", id="wrong-rank"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(name="image")), 400, "is FP32, got UINT8", id="wrong-datatype"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(datatype="FP128")), 400, "got FP128", id="unknown-datatype"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(data=[0] * 100)), 400, "100 values in 'data'",
                 id="data-length-mismatch"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(data="zeros")), 400, "'data' must be a list", id="data-not-list"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(data=["a"] * 27648)), 400, "must hold numbers",
                 id="data-strings-for-uint8"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(data=[[0, 0], [0]])), 400, "not a regular array", id="data-ragged"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(data=[300] * 27648)), 400, "values must lie in 0..255 for UINT8",
                 id="uint8-out-of-range"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(data=[0.5] * 27648)), 400, "UINT8 data must be integers",
                 id="uint8-fractions"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(shape=[-1, 96, 96, 3])), 400, "negative dimension",
                 id="negative-dimension"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(shape="1,96,96,3")), 400, "shape must be a list of integers",
                 id="shape-not-list"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(shape=[1.5, 96, 96, 3])), 400, "shape must be a list of integers",
                 id="shape-fraction"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(shape=[10**30, 96, 96, 3])), 400, "values in 'data'",
                 id="shape-astronomical"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(name="image", datatype="FP32", data=[1e38] * 27648)), 400,
                 "pixel values must lie in 0..255", id="fp32-huge-finite"),
    pytest.param("bloodcell", lambda: {"content": json.dumps(bloodcell_json(name="image", datatype="FP32", data=[0] * 27648))
                                       .replace("[0, ", "[NaN, ", 1).encode(), "headers": {"content-type": "application/json"}},
                 400, "NaN or infinity", id="fp32-nan-literal"),
    pytest.param("bloodcell", lambda: {"content": json.dumps(bloodcell_json(name="image", datatype="FP32", data=[0] * 27648))
                                       .replace("[0, ", "[1e999, ", 1).encode(), "headers": {"content-type": "application/json"}},
                 400, "NaN or infinity", id="fp32-overflowing-literal"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(name="image", datatype="FP32", data=[10**400] + [0] * 27647)),
                 400, "not a regular array of numbers", id="fp32-huge-integer"),
    pytest.param("bloodcell", lambda: _pixels_binary(1, header_length="999999999"), 400, "Inference-Header-Content-Length is 999999999",
                 id="binary-header-length-larger-than-body"),
    pytest.param("bloodcell", lambda: _pixels_binary(1, header_length="-5"), 400, "Inference-Header-Content-Length is -5",
                 id="binary-header-length-negative"),
    pytest.param("bloodcell", lambda: _pixels_binary(1, header_length="ten"), 400, "must be an integer, got 'ten'",
                 id="binary-header-length-not-a-number"),
    pytest.param("bloodcell", lambda: _pixels_binary(1, header_length="10"), 400, "not valid JSON", id="binary-header-length-short"),
    pytest.param("bloodcell", lambda: _pixels_binary(1, data=bytes(100)), 400, "100 bytes of data, but shape [1, 96, 96, 3]",
                 id="binary-data-shorter-than-shape"),
    pytest.param("bloodcell", lambda: _pixels_binary(1, extra=b"12345"), 400, "belong to no input", id="binary-trailing-bytes"),
    pytest.param("bloodcell", lambda: {**_pixels_binary(1), "content": _pixels_binary(1)["content"][:-50]}, 400,
                 "bytes of binary data remain", id="binary-data-size-larger-than-body"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(parameters={"binary_data_size": -1})), 400,
                 "binary_data_size must be a non-negative integer", id="binary-data-size-negative"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(parameters={"shared_memory_region": "r"})), 400,
                 "needs both shared_memory_region and shared_memory_byte_size", id="shared-memory-half"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(parameters=SHARED)), 400,
                 "is in shared memory and also has data", id="shared-memory-and-data"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(parameters=SHARED, data=None)), 403,
                 "system shared memory is off on this server", id="shared-memory-off"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(parameters="x")), 400, "'parameters' must be an object",
                 id="parameters-not-object"),
    pytest.param("nope", lambda: oip_json(bloodcell_json()), 404, "unknown model 'nope'", id="unknown-model"),
    pytest.param("bloodcell/versions/999", lambda: oip_json(bloodcell_json()), 404, "has no version '999'", id="unknown-version"),
    pytest.param("bloodcell", lambda: oip_json(bloodcell_json(name="pixels")), 400, "has no input 'pixels'", id="unknown-input"),
    pytest.param("bloodcell", _two_inputs, 400, "takes exactly one input", id="two-inputs"),
    pytest.param("bloodcell", lambda: oip_json({**bloodcell_json(), "outputs": [{"name": "logits"}]}), 400,
                 "has no output 'logits'", id="unknown-output"),
    pytest.param("bloodcell", lambda: oip_json({**bloodcell_json(), "outputs": [{"name": "probabilities",
                                                                                   "parameters": {"classification": 0}}]}),
                 400, "a positive integer; got 0", id="classification-count-zero"),
    pytest.param("bloodcell", lambda: oip_json({**bloodcell_json(), "outputs": [{"name": "cam",
                                                                                   "parameters": {"classification": 2}}]}),
                 400, "ranks outputs of shape [-1, classes]", id="classification-of-a-heatmap"),
    pytest.param("mars", lambda: oip_json({**files_json(good_png()), "outputs": [{"name": "probabilities"}]}), 400,
                 f"is per {MARS_TILE} tile", id="mars-files-with-tile-output"),
    pytest.param("bloodcell", lambda: oip_json({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                                                            "parameters": {"content_type": "base64"}, "data": ["not base64!"]}]}),
                 400, "not valid base64", id="bytes-bad-base64"),
    pytest.param("bloodcell", lambda: oip_json(files_json(random_bytes(3000))), 415, "image_bytes[0]", id="bytes-random"),
    pytest.param("bloodcell", lambda: oip_json(files_json(b"")), 400, "image_bytes[0]: empty file", id="bytes-empty-file"),
    pytest.param("bloodcell", lambda: oip_json(files_json(truncated_jpeg())), 415, "image_bytes[0]: cannot decode",
                 id="bytes-truncated-jpeg"),
    pytest.param("bloodcell", lambda: oip_json(files_json(grey_png(20_000, 20_000))), 413, "VISIONZOO_MAX_IMAGE_PIXELS",
                 id="bytes-decompression-bomb"),
    pytest.param("bloodcell", lambda: oip_json(files_json(npy(np.full((8, 8), 1e38, np.float32)))), 400,
                 "pixel values must lie in 0..255", id="bytes-npy-huge-values"),
    pytest.param("mars", lambda: oip_json(files_json(good_png(), encoded(rgb(32, 32), "PNG"))), 400, "must share a size",
                 id="mars-files-of-two-sizes"),
    pytest.param("bloodcell", lambda: _pixels_binary(MAX_IMAGES + 1), 413, "VISIONZOO_MAX_IMAGES", id="too-many-images"),
    pytest.param("bloodcell", lambda: _pixels_binary(0), 400, "holds no images", id="zero-images"),
    pytest.param("bloodcell", lambda: {"content": bytes(MAX_REQUEST_BYTES + 1), "headers": {"content-type": "application/json"}},
                 413, "VISIONZOO_MAX_REQUEST_BYTES", id="body-over-limit"),
    pytest.param("bloodcell", _gzip_bomb, 413, "VISIONZOO_MAX_REQUEST_BYTES", id="gzip-bomb"),
    pytest.param("bloodcell", lambda: {"content": b"\x1f\x8b\x08\x00broken", "headers": {"content-type": "application/json",
                                                                                         "content-encoding": "gzip"}},
                 400, "cannot be decompressed", id="gzip-corrupt"),
    pytest.param("bloodcell", lambda: {"content": b"{}", "headers": {"content-encoding": "br"}}, 400, "'br' is not supported",
                 id="content-encoding-unsupported"),
]


@pytest.mark.parametrize("model, request_of, status, message", REST_CASES)
def test_oip_rest_bad_requests(client, model, request_of, status, message):
    check_error(client.post(f"/v2/models/{model}/infer", **request_of()), status, message)


@pytest.mark.parametrize("path, status, message", [
    pytest.param("/v2/models/nope", 404, "unknown model 'nope'", id="metadata-unknown-model"),
    pytest.param("/v2/models/bloodcell/versions/999", 404, "has no version '999'", id="metadata-unknown-version"),
    pytest.param("/v2/models/nope/config", 404, "unknown model 'nope'", id="config-unknown-model"),
    pytest.param("/v2/models/nope/stats", 404, "unknown model 'nope'", id="stats-unknown-model"),
    pytest.param("/v2/cudasharedmemory/status", 404, "not an Open Inference Protocol route", id="unserved-extension"),
])
def test_oip_rest_unknown_names_are_404(client, path, status, message):
    check_error(client.get(path), status, message)


def test_oip_rest_good_requests_after_the_bad(client):
    response = client.post("/v2/models/bloodcell/infer", **oip_json(bloodcell_json()))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [1, 8]
    response = client.post("/v2/models/bloodcell/infer", **oip_json(files_json(good_jpeg())),)
    assert response.status_code == 200, response.text
    gzipped = gzip.compress(json.dumps(bloodcell_json()).encode())
    response = client.post("/v2/models/bloodcell/infer", content=gzipped,
                           headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    good_http(client)


# ---- 4. OIP gRPC -----------------------------------------------------------------------------------

def infer_request(model: str = "bloodcell", name: str = "image_uint8", datatype: str = "UINT8", shape=None,
                  raw: list[bytes] | None = None, version: str = "", **tensor) -> pb.ModelInferRequest:
    shape = [1, *BLOOD] if shape is None else shape
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name=name, datatype=datatype, shape=shape, **tensor)
    if raw is None and not tensor:
        itemsize = 4 if datatype == "FP32" else 1
        raw = [bytes(int(np.prod(shape)) * itemsize)]
    request.raw_input_contents.extend(raw or [])
    return request


def bytes_request(*elements: bytes, model: str = "bloodcell") -> pb.ModelInferRequest:
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    return infer_request(model, "image_bytes", "BYTES", [len(elements)], [raw])


def _typed(field: str, values, datatype="FP32", name="image") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="bloodcell")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=[1, *BLOOD])
    getattr(tensor.contents, field).extend(values)
    return request


def _mixed() -> pb.ModelInferRequest:
    request = infer_request()
    request.inputs[0].contents.uint_contents.extend([0])
    return request


GRPC_CASES = [
    pytest.param(lambda: infer_request(shape=[1, 32, 32, 3]), grpc.StatusCode.INVALID_ARGUMENT,
                 "has shape [-1, 96, 96, 3], got [1, 32, 32, 3]", id="wrong-shape"),
    pytest.param(lambda: infer_request(name="image"), grpc.StatusCode.INVALID_ARGUMENT, "is FP32, got UINT8", id="wrong-datatype"),
    pytest.param(lambda: infer_request(datatype="FP128"), grpc.StatusCode.INVALID_ARGUMENT, "got FP128", id="unknown-datatype"),
    pytest.param(lambda: infer_request(raw=[bytes(100)]), grpc.StatusCode.INVALID_ARGUMENT,
                 "100 bytes of data, but shape [1, 96, 96, 3] of UINT8 needs 27648", id="raw-length-mismatch"),
    pytest.param(lambda: infer_request(raw=[bytes(27648), bytes(27648)]), grpc.StatusCode.INVALID_ARGUMENT,
                 "2 raw_input_contents for 1 inputs", id="raw-count-mismatch"),
    pytest.param(lambda: infer_request(shape=[-1, 96, 96, 3], raw=[b""]), grpc.StatusCode.INVALID_ARGUMENT, "negative dimension",
                 id="negative-dimension"),
    pytest.param(lambda: infer_request(shape=[1 << 40, 96, 96, 3], raw=[bytes(10)]), grpc.StatusCode.INVALID_ARGUMENT,
                 "bytes of data, but shape", id="shape-astronomical"),
    pytest.param(_mixed, grpc.StatusCode.INVALID_ARGUMENT, "use one or the other", id="typed-and-raw-contents"),
    pytest.param(lambda: _typed("int_contents", [0] * 27648), grpc.StatusCode.INVALID_ARGUMENT,
                 "values go in contents.fp32_contents", id="typed-contents-wrong-field"),
    pytest.param(lambda: _typed("fp32_contents", [0.0] * 10), grpc.StatusCode.INVALID_ARGUMENT, "10 values in contents.fp32_contents",
                 id="typed-contents-count-mismatch"),
    pytest.param(lambda: _typed("fp32_contents", [float("nan")] * 27648), grpc.StatusCode.INVALID_ARGUMENT, "NaN or infinity",
                 id="typed-nan"),
    pytest.param(lambda: _typed("fp32_contents", [3e38] * 27648), grpc.StatusCode.INVALID_ARGUMENT,
                 "pixel values must lie in 0..255", id="typed-huge-finite"),
    pytest.param(lambda: _typed("uint_contents", [300] * 27648, "UINT8", "image_uint8"), grpc.StatusCode.INVALID_ARGUMENT,
                 "values must lie in 0..255 for UINT8", id="typed-uint8-out-of-range"),
    pytest.param(lambda: infer_request(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'", id="unknown-model"),
    pytest.param(lambda: infer_request(version="999"), grpc.StatusCode.NOT_FOUND, "has no version '999'", id="unknown-version"),
    pytest.param(lambda: infer_request(name="pixels"), grpc.StatusCode.INVALID_ARGUMENT, "has no input 'pixels'", id="unknown-input"),
    pytest.param(lambda: infer_request(shape=[MAX_IMAGES + 1, *BLOOD]), grpc.StatusCode.RESOURCE_EXHAUSTED, "VISIONZOO_MAX_IMAGES",
                 id="too-many-images"),
    pytest.param(lambda: infer_request(name="image", datatype="FP32", shape=[40, *BLOOD]), grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "", id="message-over-limit"),
    pytest.param(lambda: bytes_request(random_bytes(3000)), grpc.StatusCode.INVALID_ARGUMENT, "image_bytes[0]", id="bytes-random"),
    pytest.param(lambda: bytes_request(b""), grpc.StatusCode.INVALID_ARGUMENT, "image_bytes[0]: empty file", id="bytes-empty-file"),
    pytest.param(lambda: bytes_request(grey_png(20_000, 20_000)), grpc.StatusCode.RESOURCE_EXHAUSTED, "VISIONZOO_MAX_IMAGE_PIXELS",
                 id="bytes-decompression-bomb"),
    pytest.param(lambda: bytes_request(encoded(Image.new("L", (64, 60_000)), "PNG"), model="mars"),
                 grpc.StatusCode.RESOURCE_EXHAUSTED, "VISIONZOO_MAX_TILES_PER_IMAGE", id="bytes-mars-tall-thin"),
    pytest.param(lambda: bytes_request(npy_header_only((1 << 20, 1 << 20))), grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "VISIONZOO_MAX_IMAGE_PIXELS", id="bytes-npy-1-TiB"),
    pytest.param(lambda: bytes_request(npy(np.array([None], dtype=object))), grpc.StatusCode.INVALID_ARGUMENT, "is not numeric",
                 id="bytes-npy-pickle"),
    pytest.param(lambda: infer_request("bloodcell", "image_bytes", "BYTES", [1], [b"\x01\x00"]), grpc.StatusCode.INVALID_ARGUMENT,
                 "truncated 4-byte length prefix", id="bytes-truncated-length-prefix"),
    pytest.param(lambda: infer_request("bloodcell", "image_bytes", "BYTES", [1], [struct.pack("<I", 1 << 31) + b"ab"]),
                 grpc.StatusCode.INVALID_ARGUMENT, "declares 2147483648 bytes, only 2 follow", id="bytes-length-prefix-lies"),
    pytest.param(lambda: infer_request("bloodcell", "image_bytes", "BYTES", [2], [struct.pack("<I", 1) + b"a"]),
                 grpc.StatusCode.INVALID_ARGUMENT, "1 BYTES elements, shape [2] needs 2", id="bytes-fewer-elements"),
]


def grpc_error(channel, request, **kwargs) -> grpc.RpcError:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=60, **kwargs)
    return caught.value


def check_grpc(error: grpc.RpcError, code: grpc.StatusCode, message: str) -> None:
    assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
    assert message in (error.details() or ""), f"{message!r} not in {error.details()!r}"
    assert not PATH_LEAK.search(error.details() or ""), error.details()


@pytest.mark.parametrize("request_of, code, message", GRPC_CASES)
def test_oip_grpc_bad_requests(channel, request_of, code, message):
    check_grpc(grpc_error(channel, request_of()), code, message)


@pytest.mark.parametrize("garbage", [
    pytest.param(b"\xff\xff\xff\xff\xff", id="invalid-wire-type"),
    pytest.param(b"\x0a\xff\xff\xff\xff\x0f", id="length-past-the-end"),
    pytest.param(b"\x0a\x02\xc3\x28", id="invalid-utf8-model-name"),
    pytest.param(random_bytes(2048, seed=11), id="random-2k"),
])
def test_oip_grpc_garbage_bytes_are_invalid_argument(channel, garbage):
    call = channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as caught:
        call(garbage, timeout=30)
    check_grpc(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "ModelInferRequest")


def test_oip_grpc_unknown_metadata_is_not_found(channel):
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=30)
    check_grpc(caught.value, grpc.StatusCode.NOT_FOUND, "unknown model 'nope'")


def test_oip_grpc_good_requests_after_the_bad(channel, client):
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    reply = stub.ModelInfer(infer_request(), timeout=60)
    assert list(reply.outputs[0].shape) == [1, 8]
    reply = stub.ModelInfer(bytes_request(good_jpeg(), good_png()), timeout=60)
    assert list(reply.outputs[0].shape) == [2, 8]
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    good_http(client)


# ---- 5. the server log -----------------------------------------------------------------------------

def test_client_mistakes_are_not_logged_as_errors(served, log_start, client):
    good_http(client)
    log = served.log_path.read_text(errors="replace")[log_start:]
    problems = [line for line in log.splitlines() if "Traceback" in line or "[ERROR]" in line or " ERROR " in line]
    assert not problems, "client mistakes were logged as server errors:\n" + "\n".join(problems[:20]) + "\n" + log[-4000:]
