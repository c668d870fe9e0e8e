"""HTTP side of the gateway: the Engine.IO handshake checks and plain HTTP routes.

Requests to ``/socket.io/`` that are not a valid Engine.IO v4 WebSocket handshake get HTTP 400
with the Engine.IO error JSON (``{"code": N, "message": ...}``), like the reference server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import IntEnum
from typing import Any
from urllib.parse import parse_qs

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

ENGINE_PATH = "/socket.io/"

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; "
     "img-src 'self' data:; frame-ancestors 'none'"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


class EngineError(IntEnum):
    """Engine.IO's HTTP error codes (the reference server's ``Server.errors``)."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5


_MESSAGES = {
    EngineError.UNKNOWN_TRANSPORT: "Transport unknown",
    EngineError.UNKNOWN_SID: "Session ID unknown",
    EngineError.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    EngineError.BAD_REQUEST: "Bad request",
    EngineError.FORBIDDEN: "Forbidden",
    EngineError.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


def response(
    status: int, body: bytes, content_type: str, extra: Iterable[tuple[str, str]] = ()
) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    for name, value in SECURITY_HEADERS:
        headers[name] = value
    for name, value in extra:
        headers[name] = value
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
               429: "Too Many Requests", 503: "Service Unavailable"}
    return Response(status, reasons.get(status, "Error"), headers, body)


def json_response(status: int, doc: Any, extra: Iterable[tuple[str, str]] = ()) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return response(status, body, "application/json", extra)


def engine_error(code: EngineError, status: int = 400) -> Response:
    return json_response(status, {"code": int(code), "message": _MESSAGES[code]})


def check_handshake(request: Request, allowed_origins: frozenset[str]) -> Response | None:
    """None when ``request`` is a WebSocket handshake we accept, else the error response."""
    _, _, query = request.path.partition("?")
    params = parse_qs(query)
    if params.get("EIO") != ["4"]:
        return engine_error(EngineError.UNSUPPORTED_PROTOCOL_VERSION)
    transport = params.get("transport")
    if transport != ["websocket"]:
        # Long-polling is deliberately unsupported: clients use transports: ['websocket'].
        return engine_error(EngineError.UNKNOWN_TRANSPORT)
    if "sid" in params:
        return engine_error(EngineError.UNKNOWN_SID)  # no polling sessions to upgrade
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return engine_error(EngineError.BAD_REQUEST)
    origin = request.headers.get("Origin")
    if allowed_origins and origin is not None and origin not in allowed_origins:
        return engine_error(EngineError.FORBIDDEN, 403)
    return None


def route_path(path: str) -> str:
    return path.partition("?")[0]
