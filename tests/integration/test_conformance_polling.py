"""The long-polling and upgrade cases of both official suites, ported to Python.

``socketio/socket.io-protocol`` (against ``/socket.io/``) and ``socketio/engine.io-protocol``
(against the Engine.IO echo endpoint ``/engine.io/`` of conformance mode) check the same
Engine.IO behaviour; every case of theirs that involves HTTP is here, with the same requests
and the same expected bytes, through a keep-alive HTTP client (aiohttp, as node-fetch or a
browser would reuse connections), plus the engine.io suite's WebSocket message cases. The
server is ``switchboard up --conformance`` (pingInterval 300 ms, pingTimeout 200 ms).

Deviations, each making a case stricter: error responses are checked for their Engine.IO
code, not only their status; "closes the session" is checked by a later request getting
``400 Session ID unknown``; the official suites themselves run by hand (README).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.conformance import PING_INTERVAL, PING_TIMEOUT, WAIT, raw, recv
from tests.support.upserver import Up, running_up

PATHS = ["/socket.io/", "/engine.io/"]
TIMEOUT = aiohttp.ClientTimeout(total=WAIT)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``switchboard up --conformance``; the teardown checks that SIGTERM stops it cleanly."""
    workdir = Path(tmp_path_factory.mktemp("conformance-polling"))
    with running_up(workdir, "--conformance") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


def url(up: Up, path: str, query: str = "EIO=4&transport=polling") -> str:
    return f"{up.url}{path}?{query}"


async def get(http: aiohttp.ClientSession, target: str) -> tuple[int, str]:
    async with http.get(target) as response:
        return response.status, await response.text()


async def post(http: aiohttp.ClientSession, target: str, body: str | bytes
               ) -> tuple[int, str]:
    async with http.post(target, data=body) as response:
        return response.status, await response.text()


async def open_session(http: aiohttp.ClientSession, up: Up, path: str) -> str:
    status, body = await get(http, url(up, path))
    assert status == 200 and body.startswith("0"), body
    sid = json.loads(body[1:])["sid"]
    assert isinstance(sid, str)
    return sid


def session_url(up: Up, path: str, sid: str) -> str:
    return url(up, path, f"EIO=4&transport=polling&sid={sid}")


async def waiting(http: aiohttp.ClientSession, up: Up) -> int:
    async with http.get(up.url + "/stats") as response:
        return int((await response.json())["pollsWaiting"])


async def start_poll(http: aiohttp.ClientSession, up: Up, target: str
                     ) -> asyncio.Future[tuple[int, str]]:
    """A GET that is waiting at the server when this returns (its /stats says so)."""
    before = await waiting(http, up)
    poll = asyncio.ensure_future(get(http, target))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while await waiting(http, up) <= before:
        assert not poll.done(), await poll
        assert loop.time() < deadline, "the poll never waited"
        await asyncio.sleep(0.005)
    return poll


async def assert_unknown(http: aiohttp.ClientSession, up: Up, path: str, sid: str
                         ) -> None:
    status, body = await get(http, session_url(up, path, sid))
    assert (status, json.loads(body)) == (400, {"code": 1, "message": "Session ID unknown"})


# -------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("path", PATHS)
async def test_polling_handshake_opens_a_session(up: Up, http: aiohttp.ClientSession,
                                                 path: str) -> None:
    async with http.get(url(up, path)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
        body = await response.text()
    assert body.startswith("0")
    value = json.loads(body[1:])
    assert list(value) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
    assert isinstance(value["sid"], str)
    assert value["upgrades"] == ["websocket"]
    assert (value["pingInterval"], value["pingTimeout"], value["maxPayload"]) == (
        round(PING_INTERVAL * 1000), round(PING_TIMEOUT * 1000), 1_000_000)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("query", "code"), [
    ("transport=polling", 5), ("EIO=abc&transport=polling", 5), ("EIO=3&transport=polling", 5),
    ("EIO=4", 0), ("EIO=4&transport=abc", 0),
])
async def test_polling_handshake_refusals(up: Up, http: aiohttp.ClientSession,
                                          path: str, query: str, code: int) -> None:
    status, body = await get(http, url(up, path, query))
    assert status == 400 and json.loads(body)["code"] == code


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_handshake_with_another_method_is_refused(
    up: Up, http: aiohttp.ClientSession, path: str, method: str
) -> None:
    async with http.request(method, url(up, path)) as response:
        assert response.status == 400
        assert json.loads(await response.text()) == {"code": 2,
                                                     "message": "Bad handshake method"}


async def test_websocket_handshake_on_the_echo_endpoint(up: Up) -> None:
    async with raw(f"ws://{up.url[7:]}/engine.io/?EIO=4&transport=websocket") as ws:
        frame = await recv(ws)
        assert isinstance(frame, str) and json.loads(frame[1:])["upgrades"] == []


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize("body", ["4hello", "4test1\x1e4test2\x1e4test3", "4hello\x1ebAQIDBA=="])
async def test_echo_payloads_over_polling(up: Up, http: aiohttp.ClientSession,
                                          body: str) -> None:
    sid = await open_session(http, up, "/engine.io/")
    assert await post(http, session_url(up, "/engine.io/", sid), body) == (200, "ok")
    assert await get(http, session_url(up, "/engine.io/", sid)) == (200, body)


async def test_echo_over_websocket_text_and_binary(up: Up) -> None:
    async with raw(f"ws://{up.url[7:]}/engine.io/?EIO=4&transport=websocket") as ws:
        await recv(ws)
        await ws.send("4hello")
        assert await recv(ws) == "4hello"
        await ws.send(bytes([1, 2, 3, 4]))
        assert await recv(ws) == bytes([1, 2, 3, 4])


@pytest.mark.parametrize("path", PATHS)
async def test_invalid_packet_format_closes_the_session(
    up: Up, http: aiohttp.ClientSession, path: str
) -> None:
    sid = await open_session(http, up, path)
    status, _ = await post(http, session_url(up, path, sid), "abc")
    assert status == 400
    await assert_unknown(http, up, path, sid)


async def test_invalid_packet_over_websocket_closes_it(up: Up) -> None:
    async with raw(f"ws://{up.url[7:]}/engine.io/?EIO=4&transport=websocket") as ws:
        await recv(ws)
        await ws.send("abc")
        await asyncio.wait_for(ws.wait_closed(), WAIT)


@pytest.mark.parametrize("path", PATHS)
async def test_duplicate_poll_requests_close_the_session(
    up: Up, http: aiohttp.ClientSession, path: str
) -> None:
    sid = await open_session(http, up, path)
    first = await start_poll(http, up, session_url(up, path, sid))
    second = await get(http, session_url(up, path, sid) + "&t=burst")
    assert await asyncio.wait_for(first, WAIT) == (200, "1")
    assert second[0] in (400, 500)
    await assert_unknown(http, up, path, sid)


# -------------------------------------------------------------------------- heartbeat


@pytest.mark.parametrize("path", PATHS)
async def test_ping_pong_over_polling(up: Up, http: aiohttp.ClientSession,
                                      path: str) -> None:
    sid = await open_session(http, up, path)
    for _ in range(3):
        assert await get(http, session_url(up, path, sid)) == (200, "2")
        assert await post(http, session_url(up, path, sid), "3") == (200, "ok")


@pytest.mark.parametrize("path", PATHS)
async def test_ping_timeout_over_polling_closes_the_session(
    up: Up, http: aiohttp.ClientSession, path: str
) -> None:
    sid = await open_session(http, up, path)
    # No pong is ever sent: the session must be gone by pingInterval + pingTimeout (and
    # the ping it got meanwhile must say so). A poll tells when it is over.
    status, body = await get(http, session_url(up, path, sid))
    assert (status, body) == (200, "2")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PING_INTERVAL + PING_TIMEOUT + WAIT
    while True:
        status, body = await get(http, session_url(up, path, sid))
        if status == 400:
            assert json.loads(body)["code"] == 1
            break
        assert (status, body) == (200, "1"), body  # a poll that waited learns it is over
        assert loop.time() < deadline


async def test_ping_pong_and_timeout_over_websocket(up: Up) -> None:
    async with raw(f"ws://{up.url[7:]}/engine.io/?EIO=4&transport=websocket") as ws:
        await recv(ws)
        for _ in range(3):
            assert await recv(ws) == "2"
            await ws.send("3")
    async with raw(f"ws://{up.url[7:]}/engine.io/?EIO=4&transport=websocket") as ws:
        await recv(ws)
        await asyncio.wait_for(ws.wait_closed(), WAIT)  # no pong: closed


# ------------------------------------------------------------------------------ close


@pytest.mark.parametrize("path", PATHS)
async def test_client_close_over_polling(up: Up, http: aiohttp.ClientSession,
                                         path: str) -> None:
    sid = await open_session(http, up, path)
    poll = await start_poll(http, up, session_url(up, path, sid))
    assert await post(http, session_url(up, path, sid), "1") == (200, "ok")
    assert await asyncio.wait_for(poll, WAIT) == (200, "6")
    await assert_unknown(http, up, path, sid)


async def test_client_close_over_websocket(up: Up) -> None:
    async with raw(f"ws://{up.url[7:]}/engine.io/?EIO=4&transport=websocket") as ws:
        await recv(ws)
        await ws.send("1")
        await asyncio.wait_for(ws.wait_closed(), WAIT)


# ---------------------------------------------------------------------------- upgrade


def ws_url(up: Up, path: str, sid: str) -> str:
    return f"ws://{up.url[7:]}{path}?EIO=4&transport=websocket&sid={sid}"


@pytest.mark.parametrize("path", PATHS)
async def test_upgrade_from_polling_to_websocket(up: Up, http: aiohttp.ClientSession,
                                                 path: str) -> None:
    sid = await open_session(http, up, path)
    async with raw(ws_url(up, path, sid)) as ws:
        await ws.send("2probe")
        assert await recv(ws) == "3probe"
        # A poll now ends at once with a NOOP, so that the client can finish upgrading.
        assert await get(http, session_url(up, path, sid)) == (200, "6")
        await ws.send("5")
        if path == "/engine.io/":
            await ws.send("4hello")
            assert await recv(ws) == "4hello"


@pytest.mark.parametrize("path", PATHS)
async def test_polling_after_the_upgrade_is_refused(up: Up, http: aiohttp.ClientSession,
                                                    path: str) -> None:
    sid = await open_session(http, up, path)
    async with raw(ws_url(up, path, sid)) as ws:
        await ws.send("2probe")
        assert await recv(ws) == "3probe"
        await ws.send("5")
        # The "5" and the poll race on two connections: the poll is either released with
        # a NOOP (upgrade not seen yet) or refused; once the upgrade is in, it is refused.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            status, body = await get(http, session_url(up, path, sid))
            if status == 400:
                assert json.loads(body) == {"code": 3, "message": "Bad request"}
                break
            assert (status, body) == (200, "6") and loop.time() < deadline
        if path == "/engine.io/":
            await ws.send("4hello")
            assert await recv(ws) == "4hello"


@pytest.mark.parametrize("path", PATHS)
async def test_a_second_websocket_for_an_upgraded_session_is_closed(
    up: Up, http: aiohttp.ClientSession, path: str
) -> None:
    """Accepted, then closed, as the official suite expects (it has no error handler for a
    refused handshake here)."""
    sid = await open_session(http, up, path)
    async with raw(ws_url(up, path, sid)) as ws:
        await ws.send("2probe")
        assert await recv(ws) == "3probe"
        await ws.send("5")
        async with raw(ws_url(up, path, sid)) as second:
            await asyncio.wait_for(second.wait_closed(), WAIT)
        if path == "/engine.io/":
            await ws.send("4hello")
            assert await recv(ws) == "4hello"


async def test_packets_queued_during_the_probe_go_out_over_websocket_in_order(
    up: Up, http: aiohttp.ClientSession
) -> None:
    """Nothing is lost or reordered across the switch: messages echoed while probing are
    polled or, once upgraded, come over the WebSocket, each exactly once, in order."""
    path = "/engine.io/"
    sid = await open_session(http, up, path)
    target = session_url(up, path, sid)
    assert await post(http, target, "4a\x1e4b") == (200, "ok")
    async with raw(ws_url(up, path, sid)) as ws:
        await ws.send("2probe")
        assert await recv(ws) == "3probe"
        assert await post(http, target, "4c\x1e4d") == (200, "ok")
        await ws.send("5")
        await ws.send("4e")
        got: list[str] = []
        while len(got) < 5:
            message = await recv(ws)
            assert isinstance(message, str)
            if message != "2":
                got.append(message)
    # What was polled before the upgrade came first: the probe answered it... or not at all.
    assert got == ["4a", "4b", "4c", "4d", "4e"]
