"""Request bodies of the BentoML endpoints, parsed here rather than by BentoML's multipart serde.

BentoML's own parsing of a `list[Path]` field writes every upload to a temporary file named after
the client's file name (a newline or a 300-character name is a 500), fetches the URL when the field
arrives as text, answers validation errors with a list where its schema says a string, and logs
each one with a traceback. Parsing here instead:

- reads at most VISIONZOO_MAX_REQUEST_BYTES (refused with 413 from Content-Length before reading);
- keeps file parts in memory and never fetches anything;
- refuses unknown fields, text where files belong, files where values belong, repeated values;
- answers every problem with a `ServingError` (4xx + `{"error": message}`) naming it.

The input model still declares `images: list[Path]`, so the OpenAPI document, /docs and BentoML's
own client see an ordinary file upload.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from _bentoml_sdk.io_models import IODescriptor
from pydantic import ConfigDict, Field, ValidationError, create_model
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import InvalidInput, ServingError, TooLarge, UnsupportedMedia
from .processing import Upload

FILES_FIELD = "images"
NAME_LIMIT = 200
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


class ParseFailure:
    """Stands in for the uploads when the request could not be parsed; the endpoint answers with it."""

    def __init__(self, error: ServingError) -> None:
        self.error = error


class _InMemoryParser(MultiPartParser):
    spool_max_size = 1 << 40  # the body is already bounded: keep every part in memory, never on disk


def display_name(name: str | None, index: int) -> str:
    """A client's file name as it may appear in answers and messages: printable, bounded."""
    if not name:
        return f"{FILES_FIELD}[{index}]"
    name = _UNPRINTABLE.sub("?", name.replace("\\", "/").rsplit("/", 1)[-1])
    return name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 3] + "..."


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes (from Content-Length when sent, else while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise TooLarge(f"request body of {int(declared)} bytes, the limit is {limit} (VISIONZOO_MAX_REQUEST_BYTES)")
        except ValueError:
            raise InvalidInput(f"Content-Length must be a number, got {declared!r}") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body over the limit of {limit} bytes (VISIONZOO_MAX_REQUEST_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_form(request: Request, option_names: set[str], limit: int, max_files: int) -> tuple[list[Upload], dict[str, Any]]:
    """multipart/form-data (or a urlencoded form, which can carry no files) -> (uploads of the
    `images` field, the other fields as text)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        shown = media_type or "no Content-Type"
        raise UnsupportedMedia(f"{shown} is not accepted here: send multipart/form-data with the files in the field "
                               f"{FILES_FIELD!r} (curl -F {FILES_FIELD}=@scan.png ...)")
    body = await read_limited(request, limit)

    async def stream():
        yield body

    if media_type == "multipart/form-data":
        parser = _InMemoryParser(Headers(scope=request.scope), stream(), max_files=max_files + 1, max_fields=64,
                                 max_part_size=64 * 1024)
    else:
        parser = FormParser(Headers(scope=request.scope), stream())
    try:
        form = await parser.parse()
    except MultiPartException as error:
        cause = f" ({error.__cause__})" if error.__cause__ is not None else ""  # python-multipart's reason
        raise InvalidInput(f"malformed multipart/form-data body: {error}{cause}") from None
    except Exception as error:  # noqa: BLE001 - python-multipart raises plain exceptions on broken framing
        raise InvalidInput(f"malformed multipart/form-data body ({type(error).__name__})") from None
    uploads: list[Upload] = []
    options: dict[str, Any] = {}
    try:
        for key, value in form.multi_items():
            if key == FILES_FIELD:
                if not isinstance(value, UploadFile):
                    raise InvalidInput(f"field {FILES_FIELD!r} must carry files (a part with a filename: "
                                       f"curl -F {FILES_FIELD}=@scan.png), got a text value; URLs are not fetched")
                if len(uploads) >= max_files:
                    raise TooLarge(f"too many images: more than {max_files} in one request (VISIONZOO_MAX_IMAGES)")
                uploads.append(Upload(display_name(value.filename, len(uploads)), await value.read()))
            elif key in option_names:
                if isinstance(value, UploadFile):
                    raise InvalidInput(f"field {key!r} must be a form value, not a file")
                if key in options:
                    raise InvalidInput(f"field {key!r} was sent more than once")
                options[key] = _form_value(value)
            else:
                known = ", ".join([FILES_FIELD, *sorted(option_names)])
                raise InvalidInput(f"unknown field {key!r}; this endpoint takes: {known}")
    finally:
        await form.close()
    return uploads, options


def _form_value(text: str):
    """A form value as BentoML's clients send it: JSON-encoded (`"npy"`, `3`, `true`), or plain text."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


class UploadsInput(IODescriptor):
    """Base of every endpoint's input model: parses its own request (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def from_http_request(cls, request: Request, serde) -> IODescriptor:
        from . import config

        settings = config.server_settings()
        names = set(cls.model_fields) - {FILES_FIELD}
        try:
            uploads, options = await parse_form(request, names, settings.max_request_bytes, settings.max_images)
            if not uploads:
                raise InvalidInput(f"no images: send one or more files in the multipart field {FILES_FIELD!r}")
            try:  # the options are validated here; the uploads replace a placeholder afterwards
                model = cls.model_validate({**options, FILES_FIELD: [Path(".")]})
            except ValidationError as error:
                raise InvalidInput(describe_validation(error)) from None
        except ServingError as error:
            model = cls.model_construct(**{FILES_FIELD: ParseFailure(error)})
            return model
        model.__dict__[FILES_FIELD] = uploads  # the parsed uploads, not Paths: the endpoint reads them as they are
        return model


def describe_validation(error: ValidationError) -> str:
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(p) for p in problem["loc"]) or "request"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


def input_model(name: str, options: dict[str, tuple[Any, Any]]) -> type[UploadsInput]:
    """The input model of one endpoint: `images` plus the endpoint's options."""
    images = (list[Path], Field(description="image files (PNG, JPEG, TIFF, WebP, any Pillow format, or .npy arrays "
                                             "(H, W[, C]) or (N, H, W, C), pixels 0..255); repeat the field for several",
                                min_length=1))
    return create_model(name, __base__=UploadsInput, __module__=__name__, images=images, **options)
