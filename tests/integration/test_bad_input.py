"""Bad input costs only the client that sends it.

Real processes (broker, the ``tests.support.miniapp`` service, gateways with a small
``--max-payload``). Each malformed case is sent by its own raw WebSocket client; the test
checks that this connection, and only it, is closed, that the gateway logs why (the line
names the Engine.IO sid from the OPEN packet), that ``/stats`` ``closedForBadInput`` counts
the close, and that one python-socketio client, connected once for the whole module, still
gets its ack right after, on the very same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import socketio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.cluster import Cluster, Part

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_PAYLOAD = 10_000
MAX_ATTACHMENTS = 16  # gateway.protocol's ConnectionConfig default; not a gateway option
GOOD_ORIGIN = "http://good.example"
EVIL_ORIGIN = "http://evil.example"
WAIT = 5.0
FLOOD = 1_000
#: Longest an ack round trip of the healthy client may take while another client floods:
#: this, or a third of the time the whole flood took if that is longer (a loaded machine
#: slows both). Unloaded a round trip takes milliseconds and the flood about two seconds;
#: a round trip queued behind the flood would take about as long as the flood itself.
FLOOD_LATENCY = 1.0
PH0 = '{"_placeholder":true,"num":0}'
PH1 = '{"_placeholder":true,"num":1}'


@dataclass
class Gateways:
    cluster: Cluster
    limited: Part  # --max-payload MAX_PAYLOAD
    guarded: Part  # --allowed-origins GOOD_ORIGIN

    @property
    def limited_url(self) -> str:
        return self.cluster.url(0)

    @property
    def guarded_url(self) -> str:
        return self.cluster.url(1)

    def ws_url(self, index: int = 0) -> str:
        base = self.cluster.url(index).replace("http://", "ws://")
        return f"{base}/socket.io/?EIO=4&transport=websocket"

    def closed_for_bad_input(self) -> int:
        return int(self.cluster.stats(0)["closedForBadInput"])


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("bad-input")))
    try:
        cluster.start_broker()
        cluster.start_service("tests.support.miniapp")
        limited = cluster.start_gateway("--max-payload", str(MAX_PAYLOAD))
        guarded = cluster.start_gateway("--allowed-origins", GOOD_ORIGIN)
        yield Gateways(cluster, limited, guarded)
    finally:
        cluster.stop()


class Healthy:
    """One python-socketio client that must never notice anything."""

    def __init__(self, client: socketio.AsyncClient, sid: str) -> None:
        self.client = client
        self.sid = sid
        self.disconnects: list[Any] = []
        self.calls = 0

    async def round_trip(self) -> float:
        """An ack round trip on the same namespace socket as at the start; its duration."""
        assert self.client.connected and not self.disconnects, self.disconnects
        self.calls += 1
        started = time.monotonic()
        ack = await self.client.call("echo", {"n": self.calls, "blob": b"\x00\xff"},
                                     timeout=WAIT)
        elapsed = time.monotonic() - started
        assert ack == {"n": self.calls, "blob": b"\x00\xff"}
        who = await self.client.call("whoami", timeout=WAIT)
        assert who == {"sid": self.sid, "ns": "/"}, "the healthy socket was replaced"
        return elapsed


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def healthy(gateways: Gateways) -> AsyncIterator[Healthy]:
    client = socketio.AsyncClient(reconnection=False)
    hello: asyncio.Queue[Any] = asyncio.Queue()
    client.on("hello", hello.put_nowait)
    await asyncio.wait_for(client.connect(gateways.limited_url, transports=["websocket"]), WAIT)
    assert await asyncio.wait_for(hello.get(), WAIT) == {"ns": "/"}
    sid = client.get_sid("/")
    assert sid
    state = Healthy(client, sid)
    client.on("disconnect", lambda *reason: state.disconnects.append(reason))
    try:
        yield state
    finally:
        await asyncio.wait_for(client.disconnect(), WAIT)


# ------------------------------------------------------------------ raw client helpers


@contextlib.asynccontextmanager
async def raw(url: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    ws = await connect(url, compression=None, ping_interval=None, max_size=None,
                       open_timeout=WAIT, close_timeout=1, **kwargs)
    try:
        yield ws
    finally:
        await ws.close()


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), WAIT)


async def open_sid(ws: ClientConnection) -> str:
    frame = await recv(ws)
    assert isinstance(frame, str) and frame.startswith("0"), frame
    sid = json.loads(frame[1:])["sid"]
    assert isinstance(sid, str) and sid
    return sid


async def connect_main(ws: ClientConnection) -> None:
    await ws.send("40")
    ack = await recv(ws)
    assert isinstance(ack, str) and ack.startswith('40{"sid":"'), ack
    assert await recv(ws) == '42["hello",{"ns":"/"}]'


async def wait_closed(ws: ClientConnection) -> None:
    """The server closes ``ws`` without sending anything else first."""
    async with asyncio.timeout(WAIT):
        try:
            message = await ws.recv()
        except ConnectionClosed:
            return
    pytest.fail(f"expected the connection to close, got {message!r}")


async def wait_log(part: Part, pattern: str) -> str:
    """The first line of ``part``'s log matching ``pattern`` (polled with a deadline)."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + WAIT
    while True:
        for line in part.output().splitlines():
            if regex.search(line):
                return line
        if time.monotonic() > deadline:
            tail = "\n".join(part.output().splitlines()[-15:])
            pytest.fail(f"no log line matching {pattern!r} within {WAIT}s; log ends:\n{tail}")
        await asyncio.sleep(0.02)


def close_line(sid: str, reason: str) -> str:
    """The gateway's log line for a connection closed for bad input (``reason``: a regex)."""
    return rf"closing connection {re.escape(sid)} from 127\.0\.0\.1: {reason}$"


# ------------------------------------------------------------------ malformed input

#: The wording is the gateway's; it has to say the message was too big.
OVERSIZE_REASON = r".*(?i:too large|too big|exceed|over maxpayload).*"

CASES: list[tuple[str, bool, list[str | bytes], str]] = [
    # (id, CONNECT to / first, frames, reason logged: a regex)
    ("unknown-engineio-type", True, ["9"], re.escape("unknown Engine.IO packet type")),
    ("engineio-open-from-client", False, ["0{}"],
     re.escape("unexpected Engine.IO packet from client")),
    ("empty-message", True, [""], re.escape("empty Engine.IO packet")),
    ("unknown-socketio-type", True, ['47["echo"]'],
     re.escape("unknown Socket.IO packet type")),
    ("unknown-socketio-type-before-connect", False, ["4abc"],
     re.escape("unknown Socket.IO packet type")),
    ("bad-json", True, ['42["echo",'], re.escape("invalid JSON payload")),
    ("event-not-array", True, ['42{"event":"echo"}'],
     re.escape("EVENT payload must be an array")),
    ("event-empty-array", True, ["42[]"], re.escape("EVENT payload must not be empty")),
    ("ack-id-not-a-number", True, ['42abc["echo",1]'], re.escape("invalid JSON payload")),
    ("ack-id-too-long", True, ['421234567890123456["echo",1]'],
     re.escape("ack id too long")),
    ("ack-without-id", True, ['43["echo"]'], re.escape("ACK without ack id")),
    ("binary-frame-unexpected", True, [b"\x01\x02\x03"],
     re.escape("unexpected binary frame")),
    ("text-while-awaiting-binary", True, [f'451-["echo",{PH0}]', '42["echo"]'],
     re.escape("text packet while awaiting binary attachments")),
    ("too-many-attachments", True,
     [f'45{MAX_ATTACHMENTS + 1}-["echo",' + ",".join(
         f'{{"_placeholder":true,"num":{i}}}' for i in range(MAX_ATTACHMENTS + 1)) + "]"],
     re.escape("too many binary attachments")),
    ("attachments-over-max-payload", True,
     [f'452-["echo",{PH0},{PH1}]', b"a" * (MAX_PAYLOAD // 2 + 1), b"b" * (MAX_PAYLOAD // 2 + 1)],
     re.escape("binary attachments too large")),
    ("connect-error-from-client", True, ['44{"message":"nope"}'],
     re.escape("CONNECT_ERROR from client")),
    ("oversize-text-message", True, ['42["echo","' + "x" * MAX_PAYLOAD + '"]'],
     OVERSIZE_REASON),
    ("oversize-binary-frame", True, [f'451-["echo",{PH0}]', b"z" * (MAX_PAYLOAD + 1)],
     OVERSIZE_REASON),
]


@pytest.mark.parametrize(("connected", "frames", "reason"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
async def test_malformed_input_closes_only_that_connection(
    gateways: Gateways, healthy: Healthy, connected: bool, frames: list[str | bytes],
    reason: str,
) -> None:
    before = gateways.closed_for_bad_input()
    async with raw(gateways.ws_url()) as ws:
        sid = await open_sid(ws)
        if connected:
            await connect_main(ws)
        for frame in frames:
            await ws.send(frame)
        await wait_closed(ws)
    await wait_log(gateways.limited, close_line(sid, reason))
    assert gateways.closed_for_bad_input() == before + 1
    await healthy.round_trip()


async def test_bad_input_close_frame_tells_the_client_why(gateways: Gateways) -> None:
    """The close frame says what the log says: code 1002 (protocol error) and the reason, so
    a client can tell a rejected packet from a normal close (1000, no reason)."""
    async with raw(gateways.ws_url()) as ws:
        await open_sid(ws)
        await connect_main(ws)
        await ws.send("9")
        await wait_closed(ws)
        assert (ws.close_code, ws.close_reason) == (1002, "unknown Engine.IO packet type")


async def test_valid_input_right_below_the_limits_is_served(
    gateways: Gateways, healthy: Healthy
) -> None:
    """The limits are not off by one: the largest message and attachment count allowed pass."""
    before = gateways.closed_for_bad_input()
    async with raw(gateways.ws_url()) as ws:
        await open_sid(ws)
        await connect_main(ws)
        head = '42["echo","'
        text = "y" * (MAX_PAYLOAD - len(head) - 2)
        await ws.send(head + text + '"]')
        assert await recv(ws) == f'42["echoed","{text}"]'
        placeholders = ",".join(f'{{"_placeholder":true,"num":{i}}}'
                                for i in range(MAX_ATTACHMENTS))
        await ws.send(f'45{MAX_ATTACHMENTS}-["echo",{placeholders}]')
        blobs = [bytes([i]) * (MAX_PAYLOAD // MAX_ATTACHMENTS) for i in range(MAX_ATTACHMENTS)]
        for blob in blobs:
            await ws.send(blob)
        assert await recv(ws) == f'45{MAX_ATTACHMENTS}-["echoed",{placeholders}]'
        for blob in blobs:
            assert await recv(ws) == blob
    assert gateways.closed_for_bad_input() == before
    await healthy.round_trip()


async def test_flood_from_one_client_costs_others_nothing(
    gateways: Gateways, healthy: Healthy
) -> None:
    """1,000 events sent back to back by one raw client. A socket's events are pipelined but
    kept in order, and past 256 in flight its connection is no longer read (backpressure), so
    the flood is served in order at the services' pace; the healthy client's round trips run
    alongside it. The flood is well-formed, so it is served rather than closed."""
    before = gateways.closed_for_bad_input()
    latencies: list[float] = []
    async with raw(gateways.ws_url()) as ws:
        await open_sid(ws)
        await connect_main(ws)

        async def flood() -> None:
            for i in range(FLOOD):
                await ws.send(f'42["echo",{i}]')

        async def collect() -> list[str | bytes]:
            got: list[str | bytes] = []
            while len(got) < FLOOD:
                message = await ws.recv()
                if message == "2":
                    await ws.send("3")
                    continue
                got.append(message)
            return got

        async with asyncio.timeout(30):
            started = time.monotonic()
            flooding = asyncio.create_task(flood())
            collecting = asyncio.create_task(collect())
            while not collecting.done():
                latencies.append(await healthy.round_trip())
            await flooding
            echoes = await collecting
            duration = time.monotonic() - started
    assert echoes == [f'42["echoed",{i}]' for i in range(FLOOD)]
    assert latencies, "the flood was over before it could be measured"
    bound = max(FLOOD_LATENCY, duration / 3)
    assert max(latencies) < bound, f"flood took {duration:.2f}s; round trips: {latencies}"
    assert gateways.closed_for_bad_input() == before
    await healthy.round_trip()


async def test_many_bad_clients_at_once(gateways: Gateways, healthy: Healthy) -> None:
    """Twenty clients misbehaving concurrently: each closed, each counted, each logged."""
    before = gateways.closed_for_bad_input()

    async def offender(frame: str | bytes) -> str:
        async with raw(gateways.ws_url()) as ws:
            sid = await open_sid(ws)
            await connect_main(ws)
            await ws.send(frame)
            await wait_closed(ws)
            return sid

    frames: list[str | bytes] = ["9", "42{}", b"\x00", '44"x"', '42["echo",'] * 4
    sids = await asyncio.gather(*(offender(frame) for frame in frames))
    for sid in sids:
        await wait_log(gateways.limited, close_line(sid, ".+"))
    assert gateways.closed_for_bad_input() == before + len(frames)
    await healthy.round_trip()


# ------------------------------------------------------------------ Origin allow-list


async def test_foreign_origin_is_forbidden(gateways: Gateways) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with raw(gateways.ws_url(1), origin=EVIL_ORIGIN):
            pass
    response = info.value.response
    assert response.status_code == 403
    assert json.loads(response.body) == {"code": 4, "message": "Forbidden"}
    assert response.headers["Content-Type"] == "application/json"


async def test_allowed_origin_connects(gateways: Gateways) -> None:
    async with raw(gateways.ws_url(1), origin=GOOD_ORIGIN) as ws:
        await open_sid(ws)
        await connect_main(ws)
        await ws.send('421["echo","from a good origin"]')
        assert await recv(ws) == '431["from a good origin"]'


def _polling_handshake(base: str, origin: str, host: str | None = None
                       ) -> tuple[int, dict[str, str]]:
    headers = {"Origin": origin, **({"Host": host} if host else {})}
    request = urllib.request.Request(f"{base}/socket.io/?EIO=4&transport=polling",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


async def test_with_no_allowed_origins_only_same_origin_pages_connect(
        gateways: Gateways) -> None:
    """A gateway given no ``--allowed-origins`` (and not in demo mode): like Node's socket.io
    with no ``cors`` option, a page of another origin gets a 403 and no CORS headers, over
    polling and WebSocket; a page the gateway (or its balancer) served itself connects."""
    base = gateways.limited_url
    status, headers = await asyncio.to_thread(_polling_handshake, base, EVIL_ORIGIN)
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers
    assert "Access-Control-Allow-Credentials" not in headers
    own = base.replace("127.0.0.1", "localhost")  # the Host header a browser would send
    status, headers = await asyncio.to_thread(_polling_handshake, base, own,
                                              own.removeprefix("http://"))
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == own


async def test_with_no_allowed_origins_a_foreign_websocket_is_forbidden(
        gateways: Gateways) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with raw(gateways.ws_url(0), origin=EVIL_ORIGIN):
            pass
    assert info.value.response.status_code == 403


async def test_client_without_origin_header_connects(gateways: Gateways) -> None:
    """Only browsers send Origin; the allow-list guards against cross-site pages, so clients
    that send none (python-socketio, Node) are let in."""
    client = socketio.AsyncClient(reconnection=False)
    await asyncio.wait_for(client.connect(gateways.guarded_url, transports=["websocket"]), WAIT)
    try:
        assert await client.call("echo", "no origin", timeout=WAIT) == "no origin"
    finally:
        await asyncio.wait_for(client.disconnect(), WAIT)
