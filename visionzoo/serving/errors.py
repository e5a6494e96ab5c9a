"""The errors a request can end in, each with its HTTP status, gRPC status and metrics reason.

Every front door (BentoML endpoints, OIP REST, OIP gRPC) maps errors through this one table, so a
problem gets the same answer on every protocol. Messages name the problem (and the fix, where there
is one); they never show the server's file system.

| error | HTTP | gRPC | reason label | when |
|---|---|---|---|---|
| InvalidInput | 400 | INVALID_ARGUMENT | invalid | malformed request, bad parameter, tensor name/datatype/shape/length |
| Unauthenticated | 401 | UNAUTHENTICATED | unauthenticated | missing or wrong API key or admin token |
| Forbidden | 403 | PERMISSION_DENIED | forbidden | a disabled route (admin routes without VISIONZOO_ADMIN_TOKEN) |
| NotFound | 404 | NOT_FOUND | not_found | unknown model, version or route |
| Conflict | 409 | FAILED_PRECONDITION | conflict | a reload the live model cannot take (changed signature) |
| AlreadyExists | 409 | ALREADY_EXISTS | conflict | a shared-memory region name that is already registered |
| TooLarge | 413 | RESOURCE_EXHAUSTED | too_large | more images, bytes, pixels or tiles than allowed, or more shared-memory regions |
| UnsupportedMedia | 415 | INVALID_ARGUMENT | unsupported_media | a file that is not a decodable image |
| Unavailable | 503 + Retry-After | UNAVAILABLE + grpc-retry-pushback-ms | unavailable | model loading, refused (missing or altered file) or shutting down |
| Overloaded | 503 + Retry-After | UNAVAILABLE + grpc-retry-pushback-ms | overloaded | the model's queue is full, or a request waited past the queue timeout |
| DeadlineExceeded | 504 | DEADLINE_EXCEEDED | deadline | the client's deadline passed |
| Internal | 500 | INTERNAL | internal | a bug or an engine failure (logged with its traceback) |
"""

from __future__ import annotations


class ServingError(Exception):
    """A request the service answers with an error status and this message."""

    http_status = 500
    grpc_code = "INTERNAL"
    reason = "internal"
    retry_after: int | None = None


class InvalidInput(ServingError):
    http_status, grpc_code, reason = 400, "INVALID_ARGUMENT", "invalid"


class Unauthenticated(ServingError):
    http_status, grpc_code, reason = 401, "UNAUTHENTICATED", "unauthenticated"


class Forbidden(ServingError):
    http_status, grpc_code, reason = 403, "PERMISSION_DENIED", "forbidden"


class NotFound(ServingError):
    http_status, grpc_code, reason = 404, "NOT_FOUND", "not_found"


class Conflict(ServingError):
    http_status, grpc_code, reason = 409, "FAILED_PRECONDITION", "conflict"


class AlreadyExists(Conflict):
    grpc_code = "ALREADY_EXISTS"


class TooLarge(ServingError):
    http_status, grpc_code, reason = 413, "RESOURCE_EXHAUSTED", "too_large"


class UnsupportedMedia(ServingError):
    http_status, grpc_code, reason = 415, "INVALID_ARGUMENT", "unsupported_media"


class Unavailable(ServingError):
    http_status, grpc_code, reason, retry_after = 503, "UNAVAILABLE", "unavailable", 1


class Overloaded(Unavailable):
    reason = "overloaded"


class DeadlineExceeded(ServingError):
    http_status, grpc_code, reason = 504, "DEADLINE_EXCEEDED", "deadline"


class Internal(ServingError):
    pass


def http_headers(error: ServingError) -> dict[str, str]:
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return headers
