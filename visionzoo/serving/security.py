"""The optional API key on HTTP (an ASGI middleware in front of every route); gRPC checks the same key
in `oip/grpc_service.py`.

With VISIONZOO_API_KEY (or VISIONZOO_API_KEY_FILE) set, every route needs `Authorization: Bearer <key>`
or `x-api-key: <key>`, compared in constant time; a missing or wrong key is 401. Health, readiness,
metrics and the API documentation stay open (probes and scrapers carry no keys). The /admin routes
and the repository API take the admin token instead (their own check).
"""

from __future__ import annotations

import hmac
import json

from . import config

OPEN_PATHS = {"/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/schema.json", "/",
              "/v2/health/live", "/v2/health/ready"}
OPEN_PREFIXES = ("/static_content/", "/assets/", "/admin/", "/v2/repository/models/")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes:
    found = {name.lower(): value for name, value in headers}
    authorization = found.get(b"authorization", b"")
    if authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip()
    return found.get(b"x-api-key", b"").strip()


class ApiKeyMiddleware:
    """401 for HTTP requests without the API key, when one is configured."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not is_open(scope["path"]):
            key = config.server_settings().api_key
            if key is not None and not hmac.compare_digest(presented_key(scope["headers"]), key.get_secret_value().encode()):
                body = json.dumps({"error": "missing or wrong API key: send Authorization: Bearer <key> or x-api-key: <key>"}).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
