"""The Open Inference Protocol's names for the service's errors (serving/errors.py owns the mapping
to HTTP and gRPC statuses; these aliases keep the protocol code in the protocol's vocabulary)."""

from __future__ import annotations

from ..errors import DeadlineExceeded, Internal, NotFound, ServingError, Unavailable
from ..errors import InvalidInput as InvalidArgument
from ..errors import TooLarge as ResourceExhausted

OIPError = ServingError

__all__ = ["DeadlineExceeded", "Internal", "InvalidArgument", "NotFound", "OIPError", "ResourceExhausted", "Unavailable"]
