"""HTTP/1.1 connections on httptools (llhttp, the parser uvicorn and Node use).

One asyncio Protocol per TCP connection, no task per request: persistent connections,
request bodies, pipelined requests answered in order (a long-poll GET ahead of others holds
their answers back, as HTTP/1.1 requires), ``Connection: close`` whenever the gateway
closes, and bounds on everything a client controls:

- head (request line + headers) over ``max_head`` bytes → 431, body over ``max_body`` →
  413, a malformed request → 400; each answered, then the connection is closed;
- a request head not complete ``head_timeout`` seconds after its first byte (slow headers),
  or a body not complete ``body_timeout`` after its head (slow body) → 408 and close;
- an idle keep-alive connection is closed after ``keep_alive`` seconds (announced in
  ``Keep-Alive: timeout=N`` so that clients do not reuse a connection being closed);
- at most ``max_pipelined`` requests wait for answers; beyond that it stops reading.

A WebSocket upgrade leaves HTTP entirely: the application answers the handshake and the
transport is handed to the WebSocket protocol object (``transport.set_protocol``), whose
frames then never pass through this class.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import httptools

from switchboard.gateway.exchange import Exchange, HttpApp, HttpLimits, Upgrade
from switchboard.gateway.http import HeaderMap, HttpRequest, HttpResponse, text_response

log = logging.getLogger("switchboard.gateway.http")

#: Seconds a connection closed for a bad request keeps draining what the client still sends.
LINGER = 2.0


class HttpConnection(asyncio.Protocol):
    """See the module docstring."""

    __slots__ = (
        "_body",
        "_body_size",
        "_broken",
        "_complete",
        "_deadline",
        "_exchanges",
        "_head_size",
        "_headers",
        "_on_deadline",
        "_paused",
        "_timer",
        "_upgrade_request",
        "_upgrading",
        "_url",
        "address",
        "app",
        "limits",
        "lost",
        "parser",
        "peer",
        "transport",
    )

    def __init__(self, app: HttpApp, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.address = ""
        self.lost = False
        self._exchanges: deque[Exchange] = deque()
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._on_deadline: Callable[[], None] | None = None
        self._paused = False
        self._upgrading = False
        self._upgrade_request: HttpRequest | None = None
        #: Requests completed by the current ``feed_data``, dispatched after it returns (so
        #: that application code never runs inside the parser).
        self._complete: list[HttpRequest] = []
        self._broken = False

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = self.address = peer[0] if peer else ""
        # A connection that never sends a complete head is dropped like a slow one.
        self._arm(self.limits.head_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._upgrading or self._broken or self.lost:
            return  # an upgrade is being decided, or a bad request's rest is drained
        rest: bytes | None = None
        failure: tuple[int, str] | None = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0]:]
        except httptools.HttpParserError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                failure = (refused.status, refused.text)
            else:
                log.info("malformed HTTP request from %s: %s", self.address, exc)
                failure = (400, "malformed HTTP request")
        complete, self._complete = self._complete, []
        for request in complete:
            self._dispatch(request)
        if failure is not None:
            self._fail(*failure)
        elif rest is not None:
            self._upgrade(rest)

    def eof_received(self) -> bool | None:
        return None  # close once the client half-closes; answers in flight are dropped

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        exchanges, self._exchanges = self._exchanges, deque()
        for exchange in exchanges:
            callback, exchange.on_abort = exchange.on_abort, None
            if callback is not None and exchange.response is None:
                try:
                    callback()
                except Exception:
                    log.exception("abort callback failed")

    # -- httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._body = []
        self._body_size = 0
        self._arm(self.limits.head_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value) + 4)
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            if name.lower() == "content-length" and value.isdigit() and \
                    int(value) > self.limits.max_body:
                raise _Refused(413, "request body too large")
        self._arm(self.limits.body_timeout, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body:
            raise _Refused(413, "request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._disarm()
        parser = self.parser
        try:
            target = self._url.decode("ascii")
        except UnicodeDecodeError:
            raise _Refused(400, "non-ASCII request target") from None
        request = HttpRequest.build(
            parser.get_method().decode("ascii"), target, HeaderMap.of(self._headers),
            b"".join(self._body), parser.should_keep_alive(), parser.get_http_version(),
        )
        if parser.should_upgrade():
            # feed_data raises HttpParserUpgrade next, with the bytes after the head.
            self._upgrade_request = request
        else:
            self._complete.append(request)

    def _dispatch(self, request: HttpRequest) -> None:
        self.address = self.app.client_address(self.peer, request)
        exchange = Exchange(self, request)
        self._exchanges.append(exchange)
        if len(self._exchanges) >= self.limits.max_pipelined and not self._paused:
            self._paused = True
            self._pause()
        try:
            self.app.handle(exchange)
        except Exception:
            log.exception("HTTP handler failed for %s %s", request.method, request.path)
            exchange.respond(_closing(text_response(500, "internal error\n")))

    # -- responses -------------------------------------------------------------------------
    def answered(self) -> None:
        """Write every answer that is next in line (pipelining keeps request order)."""
        transport = self.transport
        exchanges = self._exchanges
        while exchanges and exchanges[0].response is not None:
            exchange = exchanges.popleft()
            response = exchange.response
            assert response is not None
            request = exchange.request
            keep = request.keep_alive and not response.close and not self.lost
            if transport is not None and not self.lost:
                transport.write(response.serialize(
                    keep, int(self.limits.keep_alive), head=request.method == "HEAD"))
            if not keep:
                if self._broken:
                    self._linger()
                else:
                    self._close()
                return
        if self._paused and len(exchanges) < self.limits.max_pipelined // 2:
            self._paused = False
            self._resume()
        if not exchanges and not self.lost:
            self._arm(self.limits.keep_alive, self._idle)

    # -- upgrade ---------------------------------------------------------------------------
    def _upgrade(self, rest: bytes) -> None:
        request, self._upgrade_request = self._upgrade_request, None
        if request is None or self._exchanges:
            # An upgrade behind unanswered requests cannot be ordered: refuse it.
            self._fail(400, "upgrade while requests are pending")
            return
        self.address = self.app.client_address(self.peer, request)
        self._upgrading = True
        self._disarm()
        self._pause()
        self.app.upgrade(Upgrade(self, request, rest))

    def finish_upgrade(self, protocol: asyncio.Protocol | None, head: bytes, rest: bytes,
                       ready: Callable[[], None] | None) -> None:
        transport = self.transport
        if transport is None or self.lost:
            return
        transport.write(head)
        if protocol is None:
            self._close()
            return
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if ready is not None:
            ready()
        transport.resume_reading()
        if rest:
            protocol.data_received(rest)

    # -- internals -------------------------------------------------------------------------
    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.limits.max_head:
            raise _Refused(431, "request head too large")

    def _fail(self, status: int, text: str) -> None:
        """Answer a broken request (after those before it) and close."""
        self._disarm()
        self._broken = True
        exchange = Exchange(self, HttpRequest.build("GET", "/", keep_alive=False))
        self._exchanges.append(exchange)
        self._pause()  # nothing more is read from a connection being closed
        exchange.respond(_closing(text_response(status, text + "\n")))

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in ``delay`` seconds unless re-armed or disarmed first.

        Every request arms this up to three times (head, body, keep-alive) and nearly always
        disarms it in time: so one loop timer stays scheduled and is only moved, lazily, when
        it fires before the current deadline — instead of a cancel and a new timer each time.
        """
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + delay
        self._on_deadline = callback
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._fire)

    def _disarm(self) -> None:
        self._on_deadline = None

    def _fire(self) -> None:
        self._timer = None
        callback = self._on_deadline
        if callback is None or self.lost:
            return
        loop = asyncio.get_running_loop()
        if loop.time() + 0.002 < self._deadline:  # moved since: wait for the new deadline
            self._timer = loop.call_at(self._deadline, self._fire)
            return
        self._on_deadline = None
        callback()

    def _head_timed_out(self) -> None:
        if self._head_size or self._url:
            log.info("closing connection from %s: request head too slow", self.address)
            self._fail(408, "request head not received in time")
        else:
            self._close()  # nothing started: just an idle connection

    def _body_timed_out(self) -> None:
        log.info("closing connection from %s: request body too slow", self.address)
        self._fail(408, "request body not received in time")

    def _idle(self) -> None:
        if not self._exchanges:
            self._close()

    def _linger(self) -> None:
        """Close after a refused request without losing the answer: a client may still be
        sending the body we refused (a 413), and closing with unread input would make the
        kernel reset the connection, discarding the response before the client reads it.
        So stop writing, read and drop the rest for a moment, then close."""
        transport = self.transport
        if transport is None or self.lost:
            return
        if not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()
        self._arm(LINGER, self._close)
        transport.resume_reading()

    def _pause(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def _close(self) -> None:
        self._disarm()
        if self.transport is not None:
            self.transport.close()


def _closing(response: HttpResponse) -> HttpResponse:
    return HttpResponse(response.status, response.headers, response.body, close=True)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing and answer with ``status``."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
