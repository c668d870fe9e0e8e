"""Every WebSocket case of the official Socket.IO protocol test suite, ported to Python.

The official suite (socket.io-protocol, ``test-suite/test-suite.js``) cannot be fetched in CI,
so this is our own port of its facts, not of its code: the same frames are sent byte for byte
over a raw WebSocket (the ``websockets`` library, no Socket.IO client) and the same exact
strings and bytes are expected back. The long-polling and upgrade cases of this suite and of
the engine.io-protocol one are in ``test_conformance_polling.py``.

The server is the real thing: ``switchboard up --conformance`` as a subprocess on free ports
(broker + the conformance service + one gateway, pingInterval 300 ms, pingTimeout 200 ms,
maxPayload 1000000, connect timeout 2 s). At the end it gets SIGTERM and must exit 0 on its
own, well within its kill grace, with none of its children left.

Deviations from the suite, each only making a case stricter or less timing-sensitive:

* After the OPEN packet, pings are answered with ``"3"`` and skipped wherever the next
  packet is not itself about the heartbeat. The suite does this in ``waitForPackets`` and
  elsewhere relies on its server being fast: with a 300 ms pingInterval a ping can land
  between a CONNECT ack and the ``auth`` event on a loaded machine.
* The heartbeat case CONNECTs to ``/`` first (see :func:`test_heartbeat_ping_pong`).
* Bad handshakes are checked for their HTTP status and JSON body, not only for a close.
* Invalid input must close the connection *promptly*, not merely eventually (a server that
  ignored bad input would still pass the suite, closed by its own ping timeout). See
  :data:`PROMPT_CLOSE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.cluster import http_get
from tests.support.conformance import PING_INTERVAL, PING_TIMEOUT, WAIT, raw, recv
from tests.support.upserver import HOST, Up, running_up

CONNECT_TIMEOUT = 2.0

#: How soon after a bad frame the server must have closed the connection.
#:
#: The close caused by checking the input takes milliseconds on loopback. The heartbeat can
#: close a connection at the earliest pingTimeout after a ping, and a ping comes pingInterval
#: after the previous pong: 500 ms of a fresh cycle. 450 ms is below that yet leaves a loaded
#: CI machine hundreds of milliseconds of scheduling slack. On top of the bound, the reader
#: answers every ping while it waits, so the heartbeat cannot be what closes the connection.
PROMPT_CLOSE = PING_INTERVAL + PING_TIMEOUT - 0.05

OPEN_TEMPLATE = (
    '0{{"sid":"{sid}","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}}'
)
PH0 = '{"_placeholder":true,"num":0}'
PH1 = '{"_placeholder":true,"num":1}'


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``switchboard up --conformance``; the teardown checks that SIGTERM stops it cleanly."""
    with running_up(Path(tmp_path_factory.mktemp("conformance")), "--conformance") as server:
        children = server.children()
        assert sorted(children) == ["broker", "conformance", f"gateway:{server.port}"], children
        yield server


# ------------------------------------------------------------------ raw WebSocket helpers


async def recv_packet(ws: ClientConnection, timeout: float = WAIT) -> str | bytes:
    """The next message that is not a ping; pings are answered (the suite ignores them)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            if message != "2":
                return message
            await ws.send("3")


async def recv_open(ws: ClientConnection) -> dict[str, object]:
    """Read the Engine.IO OPEN packet and check it byte for byte; return its JSON."""
    frame = await recv(ws)
    assert isinstance(frame, str) and frame.startswith("0"), frame
    value = json.loads(frame[1:])
    assert isinstance(value, dict)
    sid = value.get("sid")
    assert isinstance(sid, str) and sid
    assert frame == OPEN_TEMPLATE.format(sid=sid)
    return value


def connect_ack_sid(frame: str | bytes, namespace: str = "/") -> str:
    """Check ``40[/ns,]{"sid":...}`` (exactly one key, a string) and return the sid."""
    prefix = "40" if namespace == "/" else f"40{namespace},"
    assert isinstance(frame, str) and frame.startswith(prefix), frame
    handshake = json.loads(frame[len(prefix):])
    assert isinstance(handshake, dict) and list(handshake) == ["sid"], frame
    assert isinstance(handshake["sid"], str) and handshake["sid"]
    return handshake["sid"]


async def init_socketio(url: str, stack: contextlib.AsyncExitStack) -> ClientConnection:
    """The suite's ``initSocketIOConnection``: open, CONNECT to /, its ack, the auth event."""
    ws = await stack.enter_async_context(raw(url))
    await recv_open(ws)
    await ws.send("40")
    connect_ack_sid(await recv_packet(ws))
    assert await recv_packet(ws) == '42["auth",{}]'
    return ws


async def expect_prompt_close(ws: ClientConnection, sent_at: float) -> float:
    """Wait for the server to close ``ws``; fail unless it closed within :data:`PROMPT_CLOSE`
    of ``sent_at`` without sending anything else. Pings are answered meanwhile, so the
    heartbeat cannot be what closes it. Returns the seconds from ``sent_at`` to the close."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed:
                break
            if message != "2":
                pytest.fail(f"expected the connection to close, got {message!r}")
            with contextlib.suppress(ConnectionClosed):
                await ws.send("3")
    elapsed = time.monotonic() - sent_at
    assert elapsed < PROMPT_CLOSE, (
        f"closed {elapsed:.3f}s after the bad frame: not promptly (a heartbeat close?)")
    return elapsed


async def handshake_refused(url: str) -> tuple[int, dict[str, object], str]:
    """Try a WebSocket handshake expected to be refused; (status, JSON body, content type)."""
    with pytest.raises(InvalidStatus) as info:
        async with raw(url):
            pass
    response = info.value.response
    return (response.status_code, json.loads(response.body),
            response.headers.get("Content-Type", ""))


# ================================================================== Engine.IO: handshake


async def test_open_packet(up: Up) -> None:
    async with raw(up.ws_url) as ws:
        value = await recv_open(ws)
    assert list(value) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
    assert value["upgrades"] == []
    assert value["pingInterval"] == 300
    assert value["pingTimeout"] == 200
    assert value["maxPayload"] == 1000000


async def test_open_packets_have_distinct_sids(up: Up) -> None:
    async with raw(up.ws_url) as a, raw(up.ws_url) as b:
        assert (await recv_open(a))["sid"] != (await recv_open(b))["sid"]


@pytest.mark.parametrize("query", ["transport=websocket", "EIO=abc&transport=websocket",
                                   "EIO=3&transport=websocket", "EIO=5&transport=websocket"])
async def test_invalid_eio_is_refused(up: Up, query: str) -> None:
    status, body, content_type = await handshake_refused(
        f"ws://{HOST}:{up.port}/socket.io/?{query}")
    assert status == 400
    assert body == {"code": 5, "message": "Unsupported protocol version"}
    assert content_type == "application/json"


@pytest.mark.parametrize("query", ["EIO=4", "EIO=4&transport=abc"])
async def test_invalid_transport_is_refused(up: Up, query: str) -> None:
    status, body, content_type = await handshake_refused(
        f"ws://{HOST}:{up.port}/socket.io/?{query}")
    assert status == 400
    assert body == {"code": 0, "message": "Transport unknown"}
    assert content_type == "application/json"


async def test_websocket_handshake_naming_polling_is_bad_request(up: Up) -> None:
    status, body, _ = await handshake_refused(
        f"ws://{HOST}:{up.port}/socket.io/?EIO=4&transport=polling")
    assert status == 400
    assert body == {"code": 3, "message": "Bad request"}


def test_plain_http_get_without_upgrade_is_bad_request(up: Up) -> None:
    status, headers, body = http_get(up.url + "/socket.io/?EIO=4&transport=websocket")
    assert status == 400
    assert json.loads(body) == {"code": 3, "message": "Bad request"}
    assert headers["Content-Type"] == "application/json"


# ================================================================== Engine.IO: heartbeat


async def test_heartbeat_ping_pong(up: Up) -> None:
    """Three ping/pong cycles. Unlike the suite, the socket first CONNECTs to ``/``: ``up
    --conformance`` closes connections without a namespace after 1 s, and the third ping is
    due at 0.9 s plus two round trips, a margin a loaded machine can eat (the suite's server
    has no such timeout). The heartbeat itself is the same with or without a namespace."""
    # Lower bounds on when a ping may arrive: pingInterval after the server accepted the
    # handshake (so after this instant), then pingInterval after it got our pong (so after
    # we sent it). Taken on our side, they hold however late packets are delivered.
    not_before = time.monotonic() + PING_INTERVAL

    def auth_event(message: str | bytes) -> None:
        assert message == '42["auth",{}]'

    expected: list[Callable[[str | bytes], object]] = [connect_ack_sid, auth_event]
    pings = 0
    async with raw(up.ws_url) as ws:
        await recv_open(ws)
        await ws.send("40")
        async with asyncio.timeout(3 * PING_INTERVAL + WAIT):
            while pings < 3 or expected:
                message = await ws.recv()
                if message != "2":
                    assert expected, f"unexpected {message!r}"
                    expected.pop(0)(message)  # the CONNECT ack, then the auth event
                    continue
                now = time.monotonic()
                assert now >= not_before - 0.01, f"ping {(not_before - now):.3f}s early"
                pings += 1
                not_before = time.monotonic() + PING_INTERVAL
                await ws.send("3")


async def test_ping_timeout_closes(up: Up) -> None:
    requested = time.monotonic()
    async with raw(up.ws_url) as ws:
        await recv_open(ws)
        assert await recv(ws, timeout=PING_INTERVAL + WAIT) == "2"
        # No pong: the server closes the connection pingTimeout after its ping.
        with pytest.raises(ConnectionClosed):
            await recv(ws, timeout=PING_TIMEOUT + WAIT)
        assert (ws.close_code, ws.close_reason) == (1002, "ping timeout")
        # Not early: the server accepted the handshake after ``requested``.
        waited = time.monotonic() - requested
        assert waited >= PING_INTERVAL + PING_TIMEOUT - 0.01, f"closed after {waited:.3f}s"


# ================================================================== Engine.IO: close


async def test_client_close_packet_closes(up: Up) -> None:
    async with raw(up.ws_url) as ws:
        await recv_open(ws)
        sent = time.monotonic()
        await ws.send("1")
        await expect_prompt_close(ws, sent)


# ================================================================== Socket.IO: connect


@pytest.mark.parametrize(
    ("namespace", "connect", "auth"),
    [
        ("/", "40", '42["auth",{}]'),
        ("/", '40{"token":"123"}', '42["auth",{"token":"123"}]'),
        ("/custom", "40/custom,", '42/custom,["auth",{}]'),
        ("/custom", '40/custom,{"token":"abc"}', '42/custom,["auth",{"token":"abc"}]'),
    ],
    ids=["main", "main-with-payload", "custom", "custom-with-payload"],
)
async def test_connect_to_namespace(up: Up, namespace: str, connect: str,
                                    auth: str) -> None:
    async with raw(up.ws_url) as ws:
        await recv_open(ws)
        await ws.send(connect)
        connect_ack_sid(await recv_packet(ws), namespace)
        assert await recv_packet(ws) == auth


async def test_namespace_sids_differ_from_engine_sid(up: Up) -> None:
    async with raw(up.ws_url) as ws:
        engine_sid = (await recv_open(ws))["sid"]
        await ws.send("40")
        main = connect_ack_sid(await recv_packet(ws))
        assert await recv_packet(ws) == '42["auth",{}]'
        await ws.send("40/custom,")
        custom = connect_ack_sid(await recv_packet(ws), "/custom")
        assert len({engine_sid, main, custom}) == 3


async def test_unknown_namespace_is_refused(up: Up) -> None:
    async with raw(up.ws_url) as ws:
        await recv_open(ws)
        await ws.send("40/random")
        assert await recv_packet(ws) == '44/random,{"message":"Invalid namespace"}'


async def test_invalid_handshake_closes(up: Up) -> None:
    async with raw(up.ws_url) as ws:
        await recv_open(ws)
        sent = time.monotonic()
        await ws.send("4abc")
        await expect_prompt_close(ws, sent)


async def test_no_handshake_closes(up: Up) -> None:
    """Without a CONNECT the connect timeout (2 s here) closes the connection, even for a
    client that answers every ping."""
    # The server starts the clock when it accepts the handshake, after this instant; the
    # OPEN packet may reach us later than that on a loaded machine, so it is no reference.
    requested = time.monotonic()
    async with raw(up.ws_url) as ws:
        await recv_open(ws)
        async with asyncio.timeout(CONNECT_TIMEOUT + WAIT):
            with pytest.raises(ConnectionClosed):
                while True:
                    assert await ws.recv() == "2"
                    await ws.send("3")
        waited = time.monotonic() - requested
        assert (ws.close_code, ws.close_reason) == (1002, "connect timeout")
        assert waited >= CONNECT_TIMEOUT - 0.01, f"closed after {waited:.3f}s"


# ================================================================== Socket.IO: disconnect


async def test_disconnect_from_main_namespace_keeps_connection(up: Up) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ws = await init_socketio(up.ws_url, stack)
        await ws.send("41")
        # Nothing answers a DISCONNECT; the connection stays open, so the next message is
        # the heartbeat's ping.
        assert await recv(ws, timeout=PING_INTERVAL + WAIT) == "2"


async def test_connect_then_disconnect_custom_namespace(up: Up) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ws = await init_socketio(up.ws_url, stack)
        assert await recv(ws, timeout=PING_INTERVAL + WAIT) == "2"
        await ws.send("3")
        await ws.send("40/custom")
        connect_ack_sid(await recv_packet(ws), "/custom")
        assert await recv_packet(ws) == '42/custom,["auth",{}]'
        await ws.send("41/custom")
        await ws.send('42["message","message to main namespace"]')
        assert await recv_packet(ws) == '42["message-back","message to main namespace"]'


# ================================================================== Socket.IO: message


async def test_plain_text_event(up: Up) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ws = await init_socketio(up.ws_url, stack)
        await ws.send('42["message",1,"2",{"3":[true]}]')
        assert await recv_packet(ws) == '42["message-back",1,"2",{"3":[true]}]'


async def test_event_with_binary_attachments(up: Up) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ws = await init_socketio(up.ws_url, stack)
        await ws.send(f'452-["message",{PH0},{PH1}]')
        await ws.send(bytes([1, 2, 3]))
        await ws.send(bytes([4, 5, 6]))
        assert await recv_packet(ws) == f'452-["message-back",{PH0},{PH1}]'
        assert await recv_packet(ws) == b"\x01\x02\x03"  # bytes: a binary frame
        assert await recv_packet(ws) == b"\x04\x05\x06"


async def test_plain_text_event_with_ack(up: Up) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ws = await init_socketio(up.ws_url, stack)
        await ws.send('42456["message-with-ack",1,"2",{"3":[false]}]')
        assert await recv_packet(ws) == '43456[1,"2",{"3":[false]}]'


async def test_binary_event_with_ack(up: Up) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ws = await init_socketio(up.ws_url, stack)
        await ws.send(f'452-789["message-with-ack",{PH0},{PH1}]')
        await ws.send(bytes([1, 2, 3]))
        await ws.send(bytes([4, 5, 6]))
        assert await recv_packet(ws) == f"462-789[{PH0},{PH1}]"
        assert await recv_packet(ws) == b"\x01\x02\x03"
        assert await recv_packet(ws) == b"\x04\x05\x06"


@pytest.mark.parametrize(
    "frame",
    ["4abc", "42{}", '42abc["message-with-ack",1,"2",{"3":[false]}]'],
    ids=["unknown-packet-type", "invalid-payload-format", "invalid-ack-id"],
)
async def test_invalid_format_closes(up: Up, frame: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        ws = await init_socketio(up.ws_url, stack)
        sent = time.monotonic()
        await ws.send(frame)
        await expect_prompt_close(ws, sent)
