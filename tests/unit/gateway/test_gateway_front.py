"""gateway.front over real HTTP: which request goes where, the per-address limits, and the
operations endpoints, with a stand-in Engine.IO endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from switchboard.gateway.admission import Admission
from switchboard.gateway.config import GatewayConfig
from switchboard.gateway.exchange import Exchange, HttpLimits, Upgrade
from switchboard.gateway.front import Front
from switchboard.gateway.http import HttpResponse
from switchboard.gateway.httpconn import HttpConnection
from switchboard.gateway.web import WebRoutes


class Endpoint:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[str] = []

    def handle(self, exchange: Exchange) -> None:
        self.seen.append(exchange.request.target)
        exchange.respond(HttpResponse(200, (), self.name.encode()))

    def upgrade(self, upgrade: Upgrade) -> None:
        self.seen.append("upgrade " + upgrade.request.target)
        upgrade.refuse(HttpResponse(400, (), b"no"))


@pytest.fixture
async def front() -> AsyncIterator[tuple[Front, Endpoint, Endpoint, str]]:
    engine, echo = Endpoint("engine"), Endpoint("echo")
    front = Front(engine, WebRoutes(GatewayConfig()), lambda: {"gateway": "gw1"},
                  lambda: {"status": "healthy", "httpStatus": 200}, http_rate=5,
                  admission=Admission(3), echo=echo)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(front, HttpLimits()),
                                      "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield front, engine, echo, url
    finally:
        server.close()
        await server.wait_closed()


async def get(url: str, **kw: Any) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as response:
        return response.status, await response.text(), response.headers


async def test_routes(front: tuple[Front, Endpoint, Endpoint, str]) -> None:
    _, engine, echo, url = front
    assert (await get(url + "/socket.io/?EIO=4&transport=polling"))[1] == "engine"
    assert (await get(url + "/socket.io?EIO=4&transport=polling"))[1] == "engine"
    assert (await get(url + "/engine.io/?EIO=4&transport=polling"))[1] == "echo"
    assert json.loads((await get(url + "/stats"))[1]) == {"gateway": "gw1"}
    assert json.loads((await get(url + "/health"))[1]) == {"status": "healthy"}
    status, body, _ = await get(url + "/nowhere")
    assert (status, json.loads(body)) == (404, {"error": "not found"})
    assert len(engine.seen) == 2 and len(echo.seen) == 1


async def test_handshakes_and_plain_routes_have_their_own_limits(
    front: tuple[Front, Endpoint, Endpoint, str]
) -> None:
    _, _engine, _, url = front
    statuses = [(await get(url + "/socket.io/?EIO=4&transport=polling"))[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    # Requests of existing sessions (a sid) are not handshakes: never limited.
    assert (await get(url + "/socket.io/?EIO=4&transport=polling&sid=x"))[0] == 200
    statuses = [(await get(url + "/stats"))[0] for _ in range(6)]
    assert statuses[:5] == [200] * 5 and statuses[5] == 429
    status, _, headers = await get(url + "/stats")
    assert status == 429 and int(headers["Retry-After"]) >= 1


async def test_upgrades_go_to_the_endpoint_or_are_refused(
    front: tuple[Front, Endpoint, Endpoint, str]
) -> None:
    _, engine, _, url = front
    reader, writer = await asyncio.open_connection(*url[7:].split(":"))
    writer.write(b"GET /elsewhere HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    head = await asyncio.wait_for(reader.read(), 5)
    assert head.startswith(b"HTTP/1.1 404")
    reader, writer = await asyncio.open_connection(*url[7:].split(":"))
    writer.write(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nConnection: Upgrade"
                 b"\r\nUpgrade: websocket\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400")
    assert engine.seen == ["upgrade /socket.io/?EIO=4&transport=websocket"]
