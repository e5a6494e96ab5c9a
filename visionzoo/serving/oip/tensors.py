"""Tensor codecs of the Open Inference Protocol: raw bytes, typed gRPC contents and JSON data.

Raw tensor data (gRPC `raw_input_contents` / `raw_output_contents`, the REST binary tensor data
extension) is row-major and little-endian, without padding; each BYTES element carries a 4-byte
little-endian length prefix. Typed gRPC contents put the values in the field of their datatype
(`uint_contents` for UINT8/16/32 and so on). JSON data is a flat or nested list in row-major order.
Every decoder checks the values against the declared shape and says what does not match.

Spec: kserve/open-inference-protocol `specification/protocol/inference_grpc.md`,
`inference_rest.md`; Triton's binary tensor data extension (`extension_binary_data.md`).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tritonclient.utils import serialize_byte_tensor, triton_to_np_dtype

from .errors import InvalidArgument

BYTES = "BYTES"
# The protocol's fixed-size datatypes, as numpy reads their raw (little-endian) bytes; the mapping
# itself is tritonclient's (`triton_to_np_dtype`), the one Triton's own clients use.
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(triton_to_np_dtype(name)).newbyteorder("<")
    for name in ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64")
}
DATATYPES = (*DTYPES, BYTES)
# InferTensorContents field per datatype; FP16 (and BF16) have none: they travel raw only.
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}
LENGTH_PREFIX = struct.Struct("<I")


def format_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def check_datatype(name: str, datatype: str) -> None:
    if datatype not in DATATYPES:
        raise InvalidArgument(f"input {name!r}: unknown datatype {datatype!r}; one of {', '.join(DATATYPES)}")


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """A request's shape as a tuple of non-negative ints."""
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"input {name!r}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"input {name!r}: shape {format_shape(shape)} has a negative dimension")
    return tuple(int(d) for d in shape)


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (object arrays hold BYTES)."""
    if array.dtype == np.object_:
        return BYTES
    for datatype, dtype in DTYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            return datatype
    raise TypeError(f"no protocol datatype for numpy dtype {array.dtype}")


def _object_array(elements: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(elements), dtype=np.object_)
    array[:] = elements
    return array.reshape(shape)


def serialize_bytes(elements: Iterable[bytes]) -> bytes:
    """BYTES elements -> length-prefixed raw data (tritonclient's encoder)."""
    found = [bytes(element) for element in elements]
    if not found:
        return b""
    array = _object_array(found, (len(found),))
    return serialize_byte_tensor(array).item()


def deserialize_bytes(name: str, raw: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Length-prefixed raw data -> an object array of `bytes` with the declared shape.

    Our own decoder, not tritonclient's `deserialize_bytes_tensor`: that one trusts its input (a
    length prefix past the end raises a bare struct.error, extra or missing elements go unnoticed),
    while this one is fed by anonymous clients, so it checks each prefix and the element count
    against the declared shape and says which element is wrong."""
    count, view = element_count(shape), memoryview(raw)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if len(elements) == count:
            raise InvalidArgument(
                f"input {name!r}: {len(view) - offset} bytes left after the {count} BYTES elements "
                f"of shape {format_shape(shape)}")
        if offset + LENGTH_PREFIX.size > len(view):
            raise InvalidArgument(f"input {name!r}: BYTES element {len(elements)} has a truncated 4-byte length prefix")
        (length,) = LENGTH_PREFIX.unpack_from(view, offset)
        offset += LENGTH_PREFIX.size
        if offset + length > len(view):
            raise InvalidArgument(
                f"input {name!r}: BYTES element {len(elements)} declares {length} bytes, only {len(view) - offset} follow")
        elements.append(bytes(view[offset:offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidArgument(
            f"input {name!r}: {len(elements)} BYTES elements, shape {format_shape(shape)} needs {count}")
    return _object_array(elements, shape)


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview) -> np.ndarray:
    """Raw tensor data -> array (zero-copy for fixed-size types); the byte count must fit the shape."""
    check_datatype(name, datatype)
    if datatype == BYTES:
        return deserialize_bytes(name, raw, shape)
    dtype = DTYPES[datatype]
    count = element_count(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input {name!r}: {len(raw)} bytes of data, but shape {format_shape(shape)} of {datatype} needs "
            f"{expected} ({count} elements x {dtype.itemsize} bytes)")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Array -> raw tensor data (row-major, little-endian; BYTES length-prefixed)."""
    if datatype == BYTES:
        return serialize_bytes(array.reshape(-1))
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()


def _checked_integers(name: str, datatype: str, values: np.ndarray) -> np.ndarray:
    info = np.iinfo(DTYPES[datatype])
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise InvalidArgument(
            f"input {name!r}: values must lie in {info.min}..{info.max} for {datatype}, "
            f"got {values.min()}..{values.max()}")
    return values.astype(DTYPES[datatype])


def from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> np.ndarray:
    """Typed gRPC `InferTensorContents` -> array."""
    check_datatype(name, datatype)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidArgument(f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents")
    populated = [descriptor.name for descriptor, _ in contents.ListFields()]
    if populated and field not in populated:
        raise InvalidArgument(
            f"input {name!r}: {datatype} values go in contents.{field}, got contents.{', contents.'.join(populated)}")
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidArgument(
            f"input {name!r}: {len(values)} values in contents.{field}, shape {format_shape(shape)} needs {count}")
    if datatype == BYTES:
        return _object_array(list(values), shape)
    array = np.asarray(values)
    if DTYPES[datatype].kind in "iu":
        array = _checked_integers(name, datatype, array)
    return array.astype(DTYPES[datatype]).reshape(shape)


def _flatten(data: Any) -> list:
    if isinstance(data, list):
        return [item for part in data for item in _flatten(part)]
    return [data]


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any, parameters: dict | None = None) -> np.ndarray:
    """JSON `data` (flat or nested, row-major) -> array.

    BYTES elements are strings sent as UTF-8; with the input parameter `"content_type": "base64"`
    (Seldon MLServer's convention) they are base64 text, which is how binary files fit in JSON.
    """
    check_datatype(name, datatype)
    if not isinstance(data, list):
        raise InvalidArgument(f"input {name!r}: 'data' must be a list, got {type(data).__name__}")
    count = element_count(shape)
    if datatype == BYTES:
        elements = _flatten(data)
        if not all(isinstance(e, str) for e in elements):
            raise InvalidArgument(f"input {name!r}: BYTES data must be strings")
        if (parameters or {}).get("content_type") == "base64":
            try:
                encoded = [base64.b64decode(e, validate=True) for e in elements]
            except (binascii.Error, ValueError) as error:
                raise InvalidArgument(f"input {name!r}: not valid base64 ({error})") from None
        else:
            encoded = [e.encode("utf-8") for e in elements]
        if len(encoded) != count:
            raise InvalidArgument(f"input {name!r}: {len(encoded)} BYTES elements, shape {format_shape(shape)} needs {count}")
        return _object_array(encoded, shape)
    kind = DTYPES[datatype].kind
    try:
        values = np.asarray(data, dtype=np.float64 if kind == "f" else None)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidArgument(f"input {name!r}: data is not a regular array of numbers ({error})") from None
    if values.dtype.kind not in "biuf":
        raise InvalidArgument(f"input {name!r}: data must hold numbers for {datatype}, got {values.dtype.kind!r} values")
    if values.size != count:
        raise InvalidArgument(f"input {name!r}: {values.size} values in 'data', shape {format_shape(shape)} needs {count}")
    if kind in "iu":
        if values.dtype.kind == "f" and not np.all(np.mod(values, 1) == 0):
            raise InvalidArgument(f"input {name!r}: {datatype} data must be integers")
        values = _checked_integers(name, datatype, values)
    return values.astype(DTYPES[datatype]).reshape(shape)


def to_json(array: np.ndarray) -> list:
    """Array -> flat row-major JSON list (BYTES as UTF-8 strings)."""
    if array.dtype == np.object_:
        return [bytes(e).decode("utf-8", errors="replace") for e in array.reshape(-1)]
    return array.reshape(-1).tolist()
