"""Errors of the Open Inference Protocol layer, one per status the protocol answers with.

Each transport maps them once: gRPC status codes in `grpc_service.py`, HTTP statuses in `rest.py`.

| error | gRPC | HTTP | when |
|---|---|---|---|
| InvalidArgument | INVALID_ARGUMENT | 400 | bad tensor name, datatype, shape, byte count, undecodable image |
| NotFound | NOT_FOUND | 404 | unknown model or version |
| Unavailable | UNAVAILABLE | 503 | model refused at start-up, not ready yet, runtime overloaded |
| ResourceExhausted | RESOURCE_EXHAUSTED | 413 | message over the size limit, too many images in one request |
| DeadlineExceeded | DEADLINE_EXCEEDED | 504 | the runtime did not answer in time |
| Internal | INTERNAL | 500 | a bug or a runtime failure (logged with the traceback) |
"""

from __future__ import annotations


class OIPError(Exception):
    """A request the protocol layer answers with an error status and this message."""

    grpc_code = "INTERNAL"
    http_status = 500


class InvalidArgument(OIPError):
    grpc_code = "INVALID_ARGUMENT"
    http_status = 400


class NotFound(OIPError):
    grpc_code = "NOT_FOUND"
    http_status = 404


class Unavailable(OIPError):
    grpc_code = "UNAVAILABLE"
    http_status = 503


class ResourceExhausted(OIPError):
    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 413


class DeadlineExceeded(OIPError):
    grpc_code = "DEADLINE_EXCEEDED"
    http_status = 504


class Internal(OIPError):
    grpc_code = "INTERNAL"
    http_status = 500
