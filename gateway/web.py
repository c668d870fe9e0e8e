"""Plain HTTP routes of the gateway beyond the protocol and operations endpoints: the web app.

=================================  ==========================================================
``GET /``                          the chat page (``web/static/index.html``)
``GET /game``                      the tic-tac-toe page
``GET /admin``                     the admin dashboard
``GET /static/NAME``               the pages' scripts, styles and icons (one flat directory)
``GET /socket.io/socket.io.min.js``  the official ``socket.io-client`` browser bundle, vendored
                                   in ``web/vendor/`` from the npm package pinned in
                                   ``web/package.json`` (and its ``.map``)
``GET /api/config``                ``{demo}``: what the sign-in form offers
``POST /api/token``                demo mode only: a guest token ``{token, userId, username}``
                                   for the body ``{"name": NAME}`` (JSON, or a form field)
=================================  ==========================================================

Files are read from ``--web-root`` (default: ``web/`` of the package, which is the
repository's ``web/`` in a checkout) and cached in memory by
(mtime, size), so an edited page is served at once. Every response carries the security headers
of :func:`gateway.http.response`; files are served with ``Cache-Control: no-cache`` and an
``ETag`` (a conditional request gets 304): always fresh, cheap to revalidate, and no mismatch
between a new page and an old script. Paths are never joined blindly: a static name must be a
single plain file name (letters, digits, ``._-``) with a known extension, so no percent-encoded
``..``, slash or backslash reaches the file system; the resolved file must still lie inside
its directory (symlinks out of it are refused).

"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from switchboard.gateway import http
from switchboard.gateway.config import GatewayConfig
from switchboard.gateway.http import HttpRequest, HttpResponse, parse_query
from switchboard.shared.tokens import check_secret, issue_token

log = logging.getLogger("switchboard.gateway.web")

#: The repository's web app: ``web/`` beside the ``gateway`` package.
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "web"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".map": "application/json; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}

PAGES = {"/": "index.html", "/index.html": "index.html", "/game": "game.html",
         "/admin": "admin.html"}
#: The browser bundle, vendored from the npm package pinned in web/package.json.
BUNDLE_DIR = Path("vendor") / "socket.io-client"
BUNDLE = {
    "/socket.io/socket.io.min.js": "socket.io.min.js",
    "/socket.io/socket.io.min.js.map": "socket.io.min.js.map",
}
#: A static file name: one path segment, no leading dot, a known extension.
STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
MAX_NAME = 50
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, slots=True)
class _File:
    mtime_ns: int
    size: int
    body: bytes
    etag: str


def guest_name(raw: str) -> str | None:
    """A display name from the sign-in form: trimmed, 1..50 printable characters, else None."""
    name = " ".join(raw.split())
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        return None
    return name


class WebRoutes:
    def __init__(self, config: GatewayConfig | None = None) -> None:
        config = config or GatewayConfig()
        self.root = Path(config.web_root).resolve() if config.web_root else DEFAULT_ROOT
        self.static = self.root / "static"
        self.bundle = self.root / BUNDLE_DIR
        self.demo = config.demo
        self.secret = config.jwt_secret
        self.token_ttl = config.demo_token_ttl
        self._files: dict[Path, _File] = {}
        if self.demo:
            check_secret(self.secret, "HS256")  # a bad secret stops the gateway at start
            log.warning("demo mode: anyone may get a guest token at POST /api/token%s",
                        "" if config.allowed_origins else ", and pages of any origin may "
                        "connect (name them with --allowed-origins, or run with --no-demo)")
        if not (self.bundle / "socket.io.min.js").is_file():
            log.warning("no socket.io-client bundle in %s (a --web-root without vendor/"
                        "socket.io-client/): the web pages cannot connect", self.bundle)

    # -- routing -------------------------------------------------------------------------------
    def handle(self, path: str, request: HttpRequest) -> HttpResponse | None:
        if path == "/api/config":
            return self._only_get(request) or http.json_response(200, {"demo": self.demo})
        if path == "/api/token":
            return self._token(request)
        if path in PAGES:
            return self._only_get(request) or self._file(self.static, PAGES[path], request)
        if path in BUNDLE:
            return self._only_get(request) or self._file(self.bundle, BUNDLE[path], request)
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if not self._static_name(name):
                return None
            return self._only_get(request) or self._file(self.static, name, request)
        return None

    @staticmethod
    def _static_name(name: str) -> bool:
        return (
            len(name) <= 100
            and STATIC_NAME.fullmatch(name) is not None
            and Path(name).suffix in CONTENT_TYPES
        )

    @staticmethod
    def _only_get(request: HttpRequest) -> HttpResponse | None:
        if request.method in ("GET", "HEAD"):
            return None
        return http.json_response(405, {"error": "method not allowed"},
                                  extra=[("Allow", "GET, HEAD")])

    # -- files ---------------------------------------------------------------------------------
    def _load(self, directory: Path, name: str) -> _File | None:
        path = directory / name
        try:
            resolved = path.resolve(strict=True)
            if not resolved.is_relative_to(directory.resolve()) or not resolved.is_file():
                return None
            stat = resolved.stat()
            cached = self._files.get(resolved)
            if cached is not None and (cached.mtime_ns, cached.size) == (
                    stat.st_mtime_ns, stat.st_size):
                return cached
            body = resolved.read_bytes()
        except OSError:
            return None
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        entry = _File(stat.st_mtime_ns, stat.st_size, body, etag)
        self._files[resolved] = entry
        return entry

    def _file(self, directory: Path, name: str, request: HttpRequest) -> HttpResponse | None:
        entry = self._load(directory, name)
        if entry is None:
            return None
        content_type = CONTENT_TYPES[Path(name).suffix]
        extra = [("ETag", entry.etag)]
        extra.append(("Cache-Control", CACHE_CONTROL))
        if entry.etag in _etags(request.headers.get("If-None-Match", "")):
            return http.response(304, b"", content_type, extra)
        return http.response(200, entry.body, content_type, extra)

    # -- demo sign-in --------------------------------------------------------------------------
    def _token(self, request: HttpRequest) -> HttpResponse | None:
        if not self.demo:
            return None  # the route does not exist outside demo mode: 404
        if request.method != "POST":
            return http.json_response(405, {"error": 'use POST /api/token {"name": NAME}'},
                                      extra=[("Allow", "POST")])
        name = guest_name(_name_of(request))
        if name is None:
            return http.json_response(400, {"error": f"name: must be 1..{MAX_NAME} printable "
                                                     "characters"})
        user_id = "guest-" + secrets.token_hex(6)
        token = issue_token(self.secret, user_id, name, role="user", ttl=self.token_ttl)
        log.info("demo token issued to %s (%s)", user_id, name)
        return http.json_response(200, {"token": token, "userId": user_id, "username": name})


def _name_of(request: HttpRequest) -> str:
    """The sign-in name: a JSON body ``{"name": ...}``, a form body ``name=...``, or (older
    pages) the query string."""
    body = request.body
    if body:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            return parse_query(body.decode("utf-8", "replace")).get("name", "")
        try:
            doc = json.loads(body)
        except ValueError:
            return ""
        name = doc.get("name") if isinstance(doc, dict) else None
        return name if isinstance(name, str) else ""
    return request.params().get("name", "")


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
