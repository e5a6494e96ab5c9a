"""Open Inference Protocol tensor codecs (visionzoo/serving/oip/tensors.py), checked against tritonclient's
own encoders so server and reference client agree byte for byte."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from visionzoo.serving.oip import tensors
from visionzoo.serving.oip.errors import InvalidArgument


@pytest.mark.parametrize("datatype", sorted(tensors.DTYPES))
def test_raw_round_trip_every_datatype(datatype):
    dtype = tensors.DTYPES[datatype]
    values = (np.arange(24) % 2 == 0) if dtype.kind == "b" else np.arange(24) % 100
    array = values.astype(dtype).reshape(2, 3, 4)
    raw = tensors.to_raw(array, datatype)
    assert raw == array.astype(dtype.newbyteorder("<")).tobytes()
    decoded = tensors.from_raw("x", datatype, (2, 3, 4), raw)
    np.testing.assert_array_equal(decoded, array)
    assert tensors.datatype_of(decoded) == datatype


def test_raw_byte_count_must_match_shape():
    raw = np.zeros((1, 96, 96, 3), np.float32).tobytes()
    with pytest.raises(InvalidArgument, match=r"110592 bytes of data, but shape \[2, 96, 96, 3\] of FP32 needs 221184"):
        tensors.from_raw("image", "FP32", (2, 96, 96, 3), raw)


def test_unknown_datatype_is_named():
    with pytest.raises(InvalidArgument, match="unknown datatype 'FLOAT'"):
        tensors.from_raw("image", "FLOAT", (1,), b"\0\0\0\0")


def test_bytes_match_tritonclient_serialization():
    elements = np.array([b"\x89PNG\r\n", b"", b"\xff\xd8\xff" * 100], dtype=np.object_)
    raw = serialize_byte_tensor(elements).item()
    assert tensors.serialize_bytes(elements) == raw
    decoded = tensors.from_raw("files", "BYTES", (3,), raw)
    assert list(decoded) == list(elements)
    assert list(deserialize_bytes_tensor(tensors.to_raw(decoded, "BYTES"))) == list(elements)


@pytest.mark.parametrize(
    ("raw", "shape", "message"),
    [
        (b"\x05\x00\x00\x00abc", (1,), "declares 5 bytes, only 3 follow"),
        (b"\x01\x00", (1,), "truncated 4-byte length prefix"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b", (1,), "bytes left after the 1 BYTES elements"),
        (b"\x01\x00\x00\x00a", (2,), "1 BYTES elements, shape \\[2\\] needs 2"),
    ],
)
def test_bytes_malformed(raw, shape, message):
    with pytest.raises(InvalidArgument, match=message):
        tensors.from_raw("files", "BYTES", shape, raw)


def test_typed_contents():
    contents = pb.InferTensorContents(uint_contents=[0, 7, 255, 3])
    decoded = tensors.from_contents("pixels", "UINT8", (2, 2), contents)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, [[0, 7], [255, 3]])
    floats = tensors.from_contents("image", "FP32", (3,), pb.InferTensorContents(fp32_contents=[0.5, 1.5, 2.5]))
    np.testing.assert_array_equal(floats, np.array([0.5, 1.5, 2.5], np.float32))
    files = tensors.from_contents("files", "BYTES", (2,), pb.InferTensorContents(bytes_contents=[b"a", b"bc"]))
    assert list(files) == [b"a", b"bc"]


def test_typed_contents_errors():
    with pytest.raises(InvalidArgument, match="must lie in 0..255 for UINT8, got 0..256"):
        tensors.from_contents("pixels", "UINT8", (2,), pb.InferTensorContents(uint_contents=[0, 256]))
    with pytest.raises(InvalidArgument, match="FP32 values go in contents.fp32_contents, got contents.uint_contents"):
        tensors.from_contents("image", "FP32", (2,), pb.InferTensorContents(uint_contents=[0, 1]))
    with pytest.raises(InvalidArgument, match=r"3 values in contents.fp32_contents, shape \[2\] needs 2"):
        tensors.from_contents("image", "FP32", (2,), pb.InferTensorContents(fp32_contents=[0, 1, 2]))
    with pytest.raises(InvalidArgument, match="FP16 has no typed contents field"):
        tensors.from_contents("image", "FP16", (1,), pb.InferTensorContents())


def test_json_data_flat_or_nested():
    flat = tensors.from_json("image", "FP32", (2, 2), [1, 2, 3, 4.5])
    nested = tensors.from_json("image", "FP32", (2, 2), [[1, 2], [3, 4.5]])
    np.testing.assert_array_equal(flat, nested)
    assert flat.dtype == np.float32
    pixels = tensors.from_json("pixels", "UINT8", (3,), [0, 128, 255])
    assert pixels.dtype == np.uint8


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP32", (3,), [1, 2], r"2 values in 'data', shape \[3\] needs 3"),
        ("FP32", (2,), [[1, 2], [3]], "not a regular array"),
        ("FP32", (1,), ["a"], "not a regular array"),
        ("UINT8", (1,), [300], "must lie in 0..255"),
        ("UINT8", (1,), [1.5], "must be integers"),
        ("FP32", (1,), {"a": 1}, "'data' must be a list"),
    ],
)
def test_json_data_errors(datatype, shape, data, message):
    with pytest.raises(InvalidArgument, match=message):
        tensors.from_json("x", datatype, shape, data)


def test_json_bytes_utf8_or_base64():
    png = b"\x89PNG\r\n\x1a\n"
    decoded = tensors.from_json("files", "BYTES", (1,), [base64.b64encode(png).decode()], {"content_type": "base64"})
    assert decoded[0] == png
    assert tensors.from_json("text", "BYTES", (2,), ["a", "é"])[1] == "é".encode()
    with pytest.raises(InvalidArgument, match="not valid base64"):
        tensors.from_json("files", "BYTES", (1,), ["@@@"], {"content_type": "base64"})


def test_shape_checks():
    assert tensors.check_shape("x", [1, 2]) == (1, 2)
    for bad in ([1, -1], [1.0], "1,2", [True]):
        with pytest.raises(InvalidArgument):
            tensors.check_shape("x", bad)


def test_to_json_is_flat_row_major():
    assert tensors.to_json(np.arange(6, dtype=np.float32).reshape(2, 3)) == [0, 1, 2, 3, 4, 5]
