"""The gateway's HTTP/1.1 layer over real loopback sockets: persistence, pipelining, bodies,
limits, timeouts, closing and the hand-over to a WebSocket protocol.

Every read is bounded; the timeouts under test are configured short (tenths of seconds) and
waited for by reading until the server acts, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from switchboard.gateway.exchange import Exchange, HttpLimits, Upgrade
from switchboard.gateway.http import HttpRequest, HttpResponse, text_response
from switchboard.gateway.httpconn import HttpConnection
from tests.support.polling import until

BOUND = 5.0


class App:
    """Answers ``/echo`` with the method and body, ``/later`` when told, ``/upgrade``
    by switching the connection to :class:`Raw`."""

    def __init__(self) -> None:
        self.later: list[Exchange] = []
        self.aborted: list[str] = []
        self.upgraded: list[Raw] = []

    def client_address(self, peer: str, request: HttpRequest) -> str:
        return peer

    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.path == "/later":
            self.later.append(exchange)
            exchange.on_abort = lambda: self.aborted.append(request.target)
            return
        body = f"{request.method} {request.target} {request.body.decode()}".encode()
        exchange.respond(HttpResponse(200, (("Content-Type", "text/plain"),), body))

    def upgrade(self, upgrade: Upgrade) -> None:
        if upgrade.request.path != "/upgrade":
            upgrade.refuse(text_response(404, "no\n"))
            return
        raw = Raw()
        self.upgraded.append(raw)
        upgrade.accept(raw, b"HTTP/1.1 101 Switching Protocols\r\n\r\n")


class Raw(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data
        assert self.transport is not None
        self.transport.write(b"raw:" + data)


@contextlib.asynccontextmanager
async def server(limits: HttpLimits | None = None) -> AsyncIterator[tuple[App, int]]:
    app = App()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: HttpConnection(app, limits or HttpLimits()),
                                   "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield app, port
    finally:
        srv.close()
        await srv.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), BOUND) if length else b""
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection (within the bound)."""
    try:
        data = await asyncio.wait_for(reader.read(1024), BOUND)
    except ConnectionResetError:
        return True
    return data == b""


async def test_persistent_connection_serves_requests_one_after_another() -> None:
    async with server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for n in range(3):
            writer.write(f"GET /echo?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, body = await read_response(reader)
            assert (status, body) == (200, f"GET /echo?n={n} ".encode())
            assert headers["connection"] == "keep-alive"
            assert headers["keep-alive"] == "timeout=5"
        writer.close()


async def test_request_bodies_by_length_and_chunked() -> None:
    async with server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert (await read_response(reader))[2] == b"POST /echo hello"
        writer.write(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert (await read_response(reader))[2] == b"POST /echo abcde"
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    """The first request is answered last by the application; its response still comes
    first on the wire, as HTTP/1.1 requires."""
    async with server() as (app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /later HTTP/1.1\r\n\r\nGET /echo?2 HTTP/1.1\r\n\r\n"
                     b"POST /echo?3 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
        await until(lambda: len(app.later) == 1, "the application holds /later", BOUND, 0.01)
        app.later[0].respond(HttpResponse(200, (), b"first"))
        bodies = [(await read_response(reader))[2] for _ in range(3)]
        assert bodies == [b"first", b"GET /echo?2 ", b"POST /echo?3 x"]
        writer.close()


@pytest.mark.parametrize("request_bytes", [
    b"GET /echo HTTP/1.0\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n",
])
async def test_connection_close_is_said_and_done(request_bytes: bytes) -> None:
    async with server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed(reader)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /echo HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
    (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + b"y" * 64
     + b"\r\n" + b"40\r\n" + b"y" * 64 + b"\r\n", 413),
    (b"GET /echo HTTP/1.1\r\nX-Big: " + b"z" * 300 + b"\r\n\r\n", 431),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
])
async def test_bad_requests_are_answered_and_closed(request_bytes: bytes, status: int) -> None:
    async with server(HttpLimits(max_head=256, max_body=100)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        got, headers, body = await read_response(reader)
        assert got == status and headers["connection"] == "close" and body
        assert await closed(reader)


async def test_slow_head_and_slow_body_get_408_and_are_closed() -> None:
    limits = HttpLimits(head_timeout=0.2, body_timeout=0.2)
    async with server(limits) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        status, headers, _ = await read_response(reader)
        assert status == 408 and headers["connection"] == "close"
        assert await closed(reader)

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        status, headers, _ = await read_response(reader)
        assert status == 408 and headers["connection"] == "close"
        assert await closed(reader)


async def test_idle_connections_are_closed_without_a_word() -> None:
    limits = HttpLimits(head_timeout=0.2, keep_alive=0.2)
    async with server(limits) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed(reader)  # connected, never sent anything
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /echo HTTP/1.1\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        assert await closed(reader)  # idle past the keep-alive timeout


async def test_a_waiting_exchange_hears_that_its_client_left() -> None:
    async with server() as (app, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /later?who=me HTTP/1.1\r\n\r\n")
        await until(lambda: len(app.later) == 1, "the application holds /later", BOUND, 0.01)
        assert app.later[0].open
        writer.close()
        await until(lambda: app.aborted == ["/later?who=me"], "the exchange aborted", BOUND,
                    0.01)
        assert not app.later[0].open
        app.later[0].respond(HttpResponse(200))  # answering a gone client is harmless


async def test_many_pipelined_requests_are_all_answered() -> None:
    async with server(HttpLimits(max_pipelined=4)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(f"GET /echo?{n} HTTP/1.1\r\n\r\n".encode() for n in range(40)))
        bodies = [(await read_response(reader))[2] for _ in range(40)]
        assert bodies == [f"GET /echo?{n} ".encode() for n in range(40)]
        writer.close()


async def test_upgrade_hands_the_connection_over_with_the_bytes_after_the_head() -> None:
    async with server() as (app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /upgrade HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                     b"\r\nearly")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        assert head.startswith(b"HTTP/1.1 101")
        assert await asyncio.wait_for(reader.readexactly(9), BOUND) == b"raw:early"
        writer.write(b"later")
        assert await asyncio.wait_for(reader.readexactly(9), BOUND) == b"raw:later"
        assert app.upgraded[0].data == b"earlylater"
        writer.close()


async def test_a_refused_upgrade_is_answered_and_closed() -> None:
    async with server() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /elsewhere HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket"
                     b"\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 404 and headers["connection"] == "close"
        assert await closed(reader)
