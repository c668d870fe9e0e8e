"""The gateway's HTTP front (a :class:`~switchboard.gateway.httpconn.HttpApp`): which
request goes where — the Engine.IO endpoint, the operations endpoints, the web app — and
the per-address rate limits in front of them.

=================  ==================================================================
``/socket.io/``    Engine.IO (:class:`~.engine.Engine`): handshakes limited per address
                   (:class:`~.admission.Admission`)
``/engine.io/``    the Engine.IO echo endpoint (conformance mode only)
``/health``        JSON health, 200 or 503
``/stats``         JSON counters
``/metrics``       Prometheus text
anything else      the web app (:class:`~.web.WebRoutes`), or a JSON 404
=================  ==================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from switchboard.gateway import http
from switchboard.gateway import metrics as m
from switchboard.gateway.admission import Admission
from switchboard.gateway.echo import ENGINE_ECHO_PATH
from switchboard.gateway.exchange import Exchange, Upgrade
from switchboard.gateway.http import HttpRequest, HttpResponse
from switchboard.gateway.proxies import Network, client_address
from switchboard.gateway.ratelimit import TokenBuckets, retry_after
from switchboard.gateway.web import WebRoutes

ENGINE_PATHS = (http.ENGINE_PATH, http.ENGINE_PATH.rstrip("/"))


class Endpoint(Protocol):
    """An Engine.IO endpoint (:class:`~.engine.Engine`)."""

    def handle(self, exchange: Exchange) -> None: ...

    def upgrade(self, upgrade: Upgrade) -> None: ...


class Front:
    def __init__(
        self,
        engine: Endpoint,
        web: WebRoutes,
        stats: Callable[[], dict[str, Any]],
        health: Callable[[], dict[str, Any]],
        trusted_proxies: tuple[Network, ...] = (),
        http_rate: int = 600,
        token_rate: int = 10,
        admission: Admission | None = None,
        echo: Endpoint | None = None,
    ) -> None:
        self.engine = engine
        self.echo = echo
        self.web = web
        self.stats = stats
        self.health = health
        self.trusted_proxies = trusted_proxies
        self.http_buckets = TokenBuckets(http_rate, 60.0)
        self.token_buckets = TokenBuckets(token_rate, 60.0)
        self.admission = admission or Admission(600)

    def client_address(self, peer: str, request: HttpRequest) -> str:
        return client_address(peer, request.headers.get("X-Forwarded-For"), self.trusted_proxies)

    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        path = request.path
        now = time.monotonic()
        if self.echo is not None and path == ENGINE_ECHO_PATH:
            self.echo.handle(exchange)
            return
        if path in ENGINE_PATHS:
            if "sid=" not in request.query and request.method == "GET":
                wait = self.admission.admit(exchange.address, now)
                if wait:
                    exchange.respond(too_many(wait))
                    return
            self.engine.handle(exchange)
            return
        buckets = self.token_buckets if path.startswith("/api/token") else self.http_buckets
        wait = buckets.take(exchange.address, now)
        if wait:
            m.HTTP_REQUESTS.labels("limited", "429").inc()
            exchange.respond(too_many(wait))
            return
        response = self.route(path, request)
        m.HTTP_REQUESTS.labels(path if path in ("/health", "/stats", "/metrics") else "other",
                               str(response.status)).inc()
        exchange.respond(response)

    def upgrade(self, upgrade: Upgrade) -> None:
        request = upgrade.request
        if self.echo is not None and request.path == ENGINE_ECHO_PATH:
            self.echo.upgrade(upgrade)
            return
        if request.path not in ENGINE_PATHS:
            upgrade.refuse(http.json_response(404, {"error": "not found"}))
            return
        if "sid=" not in request.query:
            wait = self.admission.admit(upgrade.address, time.monotonic())
            if wait:
                upgrade.refuse(too_many(wait))
                return
        self.engine.upgrade(upgrade)

    def route(self, path: str, request: HttpRequest) -> HttpResponse:
        if path == "/stats":
            return http.json_response(200, self.stats())
        if path == "/health":
            doc = self.health()
            return http.json_response(doc.pop("httpStatus"), doc)
        if path == "/metrics":
            return http.response(200, generate_latest(), CONTENT_TYPE_LATEST)
        response = self.web.handle(path, request)
        if response is not None:
            return response
        return http.json_response(404, {"error": "not found"})


def too_many(wait: float) -> HttpResponse:
    return http.json_response(429, {"error": "too many requests"},
                              extra=[("Retry-After", retry_after(wait))])
