"""HTTP messages of the gateway, as values: requests, responses, Engine.IO errors and CORS.

Pure: no sockets. :mod:`gateway.httpconn` parses requests into :class:`HttpRequest` and
writes :class:`HttpResponse`; everything that decides what to answer works on these.

Engine.IO's HTTP errors are the reference server's: status 400 (403 for ``Forbidden``) with
the JSON ``{"code": N, "message": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import IntEnum
from http import HTTPStatus
from typing import Any, overload
from urllib.parse import unquote_plus

ENGINE_PATH = "/socket.io/"

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; "
     "img-src 'self' data:; frame-ancestors 'none'"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


class HeaderMap(dict[str, str]):
    """Request headers by lower-case name (a repeated one's values joined with ``, ``);
    looked up case-insensitively. Cheaper than a multidict on the per-request path."""

    __slots__ = ()

    @classmethod
    def of(cls, items: Iterable[tuple[str, str]]) -> HeaderMap:
        headers = cls()
        for name, value in items:
            key = name.lower()
            old = dict.get(headers, key)
            dict.__setitem__(headers, key, value if old is None else f"{old}, {value}")
        return headers

    @overload  # type: ignore[override]
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One parsed request. ``headers`` is case-insensitive; ``path`` excludes the query."""

    method: str
    target: str
    headers: HeaderMap
    body: bytes = b""
    keep_alive: bool = True
    version: str = "1.1"
    path: str = ""
    query: str = ""

    @classmethod
    def build(cls, method: str, target: str,
              headers: HeaderMap | Iterable[tuple[str, str]] = (), body: bytes = b"",
              keep_alive: bool = True, version: str = "1.1") -> HttpRequest:
        path, _, query = target.partition("?")
        if not isinstance(headers, HeaderMap):
            headers = HeaderMap.of(headers)
        return cls(method, target, headers, body, keep_alive, version, path, query)

    def params(self) -> dict[str, str]:
        return parse_query(self.query)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response; ``close`` asks the connection to close after it (``Connection: close``)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    close: bool = False
    #: The status line and ``headers`` already serialized (:func:`prepared`), for responses
    #: sent very often: only the length and the connection's fate are added per response.
    head: bytes = b""

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    def with_headers(self, extra: Iterable[tuple[str, str]]) -> HttpResponse:
        """These headers replace any of the same name."""
        extra = tuple(extra)
        if not extra:
            return self
        names = {name.lower() for name, _ in extra}
        kept = tuple(h for h in self.headers if h[0].lower() not in names)
        return replace(self, headers=kept + extra)

    def with_status(self, status: int) -> HttpResponse:
        return replace(self, status=status)

    def serialize(self, keep_alive: bool, keep_alive_timeout: int = 5, head: bool = False) -> bytes:
        """The bytes on the wire; ``head`` leaves the body out (HEAD requests)."""
        if self.head:
            tail = (b"\r\nConnection: keep-alive\r\nKeep-Alive: timeout=%d\r\n\r\n"
                    % keep_alive_timeout if keep_alive else b"\r\nConnection: close\r\n\r\n")
            parts = [self.head, b"Content-Length: %d" % len(self.body), tail]
            if not head:
                parts.append(self.body)
            return b"".join(parts)
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if self.status not in (204, 304) or self.body:
            lines.append(f"Content-Length: {len(self.body)}")
        if keep_alive:
            lines.append("Connection: keep-alive")
            lines.append(f"Keep-Alive: timeout={keep_alive_timeout}")
        else:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head_bytes if head else head_bytes + self.body


def parse_query(query: str) -> dict[str, str]:
    """``a=1&b=2`` → ``{"a": "1", "b": "2"}``; the first of repeated names wins."""
    params: dict[str, str] = {}
    if not query:
        return params
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name, value = unquote_plus(name), unquote_plus(value)
        params.setdefault(name, value)
    return params


def response(
    status: int, body: bytes, content_type: str, extra: Iterable[tuple[str, str]] = ()
) -> HttpResponse:
    """A response with the security headers every gateway response carries."""
    headers = (("Content-Type", content_type), ("Cache-Control", "no-store"), *SECURITY_HEADERS)
    return HttpResponse(status, headers, body).with_headers(extra)


def prepared(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """Serialized status line and headers for :attr:`HttpResponse.head`."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def json_response(status: int, doc: Any, extra: Iterable[tuple[str, str]] = ()) -> HttpResponse:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return response(status, body, "application/json", extra)


def text_response(status: int, body: str, content_type: str = "text/plain; charset=UTF-8",
                  extra: Iterable[tuple[str, str]] = ()) -> HttpResponse:
    return response(status, body.encode(), content_type, extra)


def route_path(path: str) -> str:
    return path.partition("?")[0]


# ------------------------------------------------------------------ Engine.IO errors


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


def engine_error(code: EngineError, status: int | None = None) -> HttpResponse:
    if status is None:
        status = 403 if code is EngineError.FORBIDDEN else 400
    return json_response(status, {"code": int(code), "message": _MESSAGES[code]})


TRANSPORTS = ("polling", "websocket")


@dataclass(frozen=True, slots=True)
class EngineQuery:
    """The Engine.IO parameters of a request to :data:`ENGINE_PATH`."""

    eio: str
    transport: str
    sid: str | None

    @classmethod
    def of(cls, params: Mapping[str, str]) -> EngineQuery:
        return cls(params.get("EIO", ""), params.get("transport", ""), params.get("sid"))


#: Query parameters Engine.IO itself uses (the rest of a v3 handshake's query is its auth).
ENGINE_PARAMS = frozenset({"EIO", "transport", "t", "sid", "b64", "j"})


def check_engine_request(query: EngineQuery, method: str, upgrade: bool,
                         allow_eio3: bool = False) -> EngineError | None:
    """What the reference server checks before looking the session up (``verify``)."""
    if query.transport not in TRANSPORTS:
        return EngineError.UNKNOWN_TRANSPORT
    if query.sid is None:
        if query.eio != "4" and not (allow_eio3 and query.eio == "3"):
            return EngineError.UNSUPPORTED_PROTOCOL_VERSION
        if method != "GET":
            return EngineError.BAD_HANDSHAKE_METHOD
        if query.transport == "websocket" and not upgrade:
            return EngineError.BAD_REQUEST
    elif query.transport == "websocket" and not upgrade:
        return EngineError.BAD_REQUEST
    return None


# ------------------------------------------------------------------------------ CORS


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Which pages may use the Engine.IO endpoint, as the seed configures Socket.IO: an
    origin allow-list, methods GET and POST, credentials.

    - A request without ``Origin`` (a non-browser client) is always served, and so is a
      same-origin page (the ``Origin``'s host and port are the request's ``Host``): CORS is
      about other origins, and a page served by the gateway or by the proxy in front of it
      must work whatever the list says.
    - ``allowed_origins`` names the other origins; ``*`` among them allows any.
    - With none named, no other origin is served, as Node's socket.io sends no CORS headers
      until the application configures them; ``any_when_unset`` (demo mode) allows any
      instead.

    The request's origin is echoed (never ``*``: browsers refuse ``*`` with credentials).
    A request from an origin not allowed is refused outright (403), not merely left without
    CORS headers: a page may send a simple POST that the browser never lets it read, and
    the server would still have acted on it.
    """

    allowed_origins: frozenset[str] = frozenset()
    credentials: bool = True
    any_when_unset: bool = False
    methods: str = "GET, POST"
    max_age: int = 600

    def allows(self, request: HttpRequest) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        if _same_origin(origin, request.headers.get("Host")):
            return True
        return self.any_when_unset and not self.allowed_origins

    def headers(self, request: HttpRequest) -> tuple[tuple[str, str], ...]:
        """Headers for an actual (non-preflight) response to ``request``."""
        origin = request.headers.get("Origin")
        if origin is None or not self.allows(request):
            return ()
        out = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.credentials:
            out.append(("Access-Control-Allow-Credentials", "true"))
        return tuple(out)

    def preflight(self, request: HttpRequest) -> HttpResponse:
        if not self.allows(request):
            return engine_error(EngineError.FORBIDDEN)
        extra = [*self.headers(request), ("Access-Control-Allow-Methods", self.methods),
                 ("Access-Control-Max-Age", str(self.max_age))]
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            # Only header-name characters are echoed (no response splitting, no junk).
            names = [n.strip() for n in asked.split(",")]
            safe = ", ".join(n for n in names if n and _is_token(n))[:1000]
            if safe:
                extra.append(("Access-Control-Allow-Headers", safe))
            extra = [(k, "Origin, Access-Control-Request-Headers" if k == "Vary" else v)
                     for k, v in extra]
        return HttpResponse(204, tuple(extra))


def _same_origin(origin: str, host: str | None) -> bool:
    """``origin``'s host[:port] is ``host`` (the scheme is left out: a balancer may end TLS)."""
    if not host:
        return False
    _, sep, authority = origin.partition("://")
    if not sep:
        return False
    default = {"http": ":80", "https": ":443"}.get(origin.partition(":")[0].lower(), "")
    authority, host = authority.lower(), host.lower()
    return authority == host or authority == host.removesuffix(default) or \
        authority + default == host


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(text: str) -> bool:
    return all(c in _TOKEN for c in text)
