"""Failures of DESIGN.md with real processes and real clients, each bounded in time:

- the broker dies (kill -9) and comes back on the same endpoints: fan-out resumes on every
  one of three gateways without restarting anything else (no deaf gateway);
- a gateway is stopped with SIGTERM: its clients hear ``server shutdown``, an ack in flight
  still arrives, the room service hears the sockets leave at once (not after its gateway
  timeout), and the process exits 0 within its grace;
- a client stops reading while others flood its room: the gateway disconnects it once its
  unsent bytes pass ``--write-limit`` and drops its TCP connection after the close timeout,
  its memory stays bounded, and nobody else notices.

A gateway killed with kill -9 (presence and room counts after the room service's gateway
timeout, clients reconnecting elsewhere) is covered by test_restart.py (explicit reconnect)
and test_multihost.py (python-socketio's own reconnection through the load balancer).

Nothing sleeps to let things settle: every wait is an ack, an event, or a poll with a
deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from switchboard.gateway.config import GatewayConfig
from tests.support.cluster import (
    Cluster,
    Part,
    gateway_part,
    http_text,
    metric,
    start_chat_cluster,
    token,
)
from tests.support.peer import UserPeer
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(120)

WAIT = 10.0
#: Between two polls that are client events: moderation allows a user 20 events per 10 s.
EVENT_POLL = 0.6


# -- helpers ------------------------------------------------------------------------------------
#: What a poll retries: an ack that timed out, a request refused, a field not there yet.
RETRY = (socketio.exceptions.TimeoutError, OSError, KeyError)


def rss_kib(part: Part) -> int:
    """VmRSS of a part's process, from /proc/<pid>/status."""
    assert part.process is not None
    for line in Path(f"/proc/{part.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def pids(cluster: Cluster) -> dict[str, int]:
    out = {}
    for name, part in cluster.parts.items():
        assert part.process is not None and part.process.poll() is None, f"{name} exited"
        out[name] = part.process.pid
    return out


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    clusters: list[Cluster] = []

    def start(**kw: Any) -> Cluster:
        cluster = start_chat_cluster(tmp_path, **kw)
        clusters.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.stop()


# -- (a) the broker restarts ----------------------------------------------------------------------
async def test_broker_killed_and_restarted_fan_out_resumes_on_every_gateway(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(gateways=3)
    peers = [await UserPeer(f"b{i}").connect(cluster.url(i % 3)) for i in range(6)]
    try:
        assert (await peers[0].call("create room", {"roomId": "hub", "roomName": "Hub"}))[
            "success"]
        for peer in peers:
            assert (await peer.call("join room", {"roomId": "hub"}))["success"] is True

        async def say(sender: UserPeer, content: str, timeout: float = WAIT) -> None:
            ack = await sender.call("chat message", {"roomId": "hub", "content": content})
            assert ack["success"] is True, ack
            for peer in peers:
                if peer is not sender:
                    await peer.wait_for("chat message", lambda m: m["content"] == content,
                                        timeout=timeout)

        await say(peers[0], "before")
        before = pids(cluster)

        cluster.parts["broker"].kill()
        killed = time.monotonic()
        # Every gateway notices the silence (its /health says so).
        for index in range(3):
            await poll_until(lambda i=index: asyncio.to_thread(  # type: ignore[misc]
                http_text, cluster.url(i) + "/health"),
                lambda text: "broker unreachable" in text, "gateway sees the broker gone", WAIT,
                retry_on=RETRY)
        cluster.start_broker()  # same endpoints (Cluster keeps them)

        # Fan-out resumes: a message from gateway 0 reaches members on all three gateways.
        attempt = 0

        async def probe() -> bool:
            nonlocal attempt
            attempt += 1
            try:
                await say(peers[attempt % 2 * 3], f"probe {attempt}", timeout=1.0)
            except AssertionError:
                return False
            return True

        await poll_until(probe, bool, "fan-out to every gateway after the broker restart", 20,
                         interval=EVENT_POLL, retry_on=RETRY)
        resumed = time.monotonic() - killed
        # ...and from every gateway to every other one, with nothing restarted but the broker.
        for index, sender in enumerate(peers[:3]):
            await say(sender, f"after from gateway {index}")
        # New subscriptions are confirmed by the new broker (a join waits for that).
        assert (await peers[1].call("create room", {"roomId": "new", "roomName": "New"}))[
            "success"]
        for peer in peers:
            assert (await peer.call("join room", {"roomId": "new"}))["success"] is True
        ack = await peers[2].call("chat message", {"roomId": "new", "content": "fresh"})
        assert ack["success"] is True
        for peer in peers:
            if peer is not peers[2]:
                await peer.wait_for("chat message", lambda m: m["content"] == "fresh")
        # Namespace-wide fan-out (presence) reaches every gateway too.
        late = await UserPeer("b-late").connect(cluster.url(1))
        peers.append(late)
        for peer in peers[:-1]:
            await peer.wait_for("user online", lambda u: u["userId"] == "b-late")
        after = pids(cluster)
        assert {k: v for k, v in after.items() if k != "broker"} == {
            k: v for k, v in before.items() if k != "broker"}, "something else restarted"
        for index in range(3):
            health = json.loads(http_text(cluster.url(index) + "/health"))
            assert health["broker"] is True and health["status"] == "healthy", health
        print(f"\nbroker restart: fan-out on all three gateways again {resumed:.2f}s "
              f"after the kill ({attempt} probes)")
    finally:
        await asyncio.gather(*(p.close() for p in peers))


# -- (c) a gateway is stopped gracefully -----------------------------------------------------------
async def test_sigterm_gateway_shuts_down_gracefully(
    cluster_factory: Callable[..., Cluster],
) -> None:
    gateway_timeout, grace = 60.0, 8.0
    cluster = cluster_factory(
        gateways=2,
        # A high argon2 cost (about a second per hash here) keeps a `create room` with a
        # password in flight; the long gateway timeout proves departures are not timeouts.
        room_args=("--gateway-timeout", str(gateway_timeout), "--password-time-cost", "8",
                   "--password-memory-kib", "65536"),
        gateway_args=("--shutdown-grace", str(grace)),
    )
    bob = await UserPeer("bob").connect(cluster.url(0))  # stays
    alice = await UserPeer("alice").connect(cluster.url(1))  # on the gateway that stops
    peers = [bob, alice]
    alice_sid = alice.sid
    try:
        await bob.wait_for("user online", lambda u: u["userId"] == "alice")
        assert (await bob.call("create room", {"roomId": "lobby", "roomName": "Lobby"}))[
            "success"]
        for peer in peers:
            assert (await peer.call("join room", {"roomId": "lobby"}))["success"] is True
        await bob.next("user joined")
        part = gateway_part(cluster, 1)
        url = cluster.url(1)
        received = metric(url, "switchboard_gateway_events_received_total", event="create room")

        in_flight = asyncio.create_task(alice.call("create room", {
            "roomId": "vault", "roomName": "Vault", "isPrivate": True, "password": "hunter22"}))
        await poll_until(lambda: asyncio.to_thread(
            metric, url, "switchboard_gateway_events_received_total", event="create room"),
            lambda n: n > received, "the gateway got the create room", WAIT, interval=0.01,
            retry_on=RETRY)
        assert not in_flight.done()
        part.signal(signal.SIGTERM)
        stopped = time.monotonic()

        shutdown = await alice.next("server shutdown")
        assert isinstance(shutdown, dict) and isinstance(shutdown.get("message"), str)
        assert shutdown["message"]
        # The listener is closed before the notice goes out: nobody new gets in.
        with pytest.raises(OSError):
            await asyncio.to_thread(urllib.request.urlopen, url + "/health", None, 2)
        # The request in flight when SIGTERM came still gets its ack...
        assert await asyncio.wait_for(in_flight, WAIT) == {"success": True, "roomId": "vault"}
        acked = time.monotonic() - stopped
        assert len(alice.seen("server shutdown")) == 1
        # ...then the connection closes.
        await alice.wait_disconnected(timeout=grace + 2)

        # The room service heard alice's socket leave at once, not after its gateway timeout.
        left = await bob.next("user left", timeout=WAIT)
        assert left == {"socketId": alice_sid, "username": "alice",
                        "roomId": "lobby", "userCount": 1}
        assert await bob.next("user offline", timeout=WAIT) == {
            "userId": "alice", "username": "alice"}
        heard = time.monotonic() - stopped
        assert heard < gateway_timeout / 4, f"departure heard after {heard:.1f}s"

        code = await asyncio.to_thread(part.process.wait, grace + 5)  # type: ignore[union-attr]
        exited = time.monotonic() - stopped
        assert code == 0, part.output()[-3000:]
        assert exited < grace + 2, f"exited {exited:.1f}s after SIGTERM"
        # The room created in flight is real; the survivor sees the right counts.
        rooms = await bob.call("get rooms")
        assert {r["id"]: r["userCount"] for r in rooms["rooms"]}.get("lobby") == 1
        assert await bob.call("get online users") == {"success": True, "users": [
            {"id": "bob", "username": "bob", "socketId": bob.sid}]}
        info = await bob.call("get room info", "vault")
        assert info.get("id") == "vault" and info.get("isPrivate") is True, info
        print(f"\ngraceful stop: in-flight ack {acked:.2f}s, departure heard {heard:.2f}s, "
              f"exit 0 after {exited:.2f}s "
              f"(gateway timeout {gateway_timeout:.0f}s, grace {grace:.0f}s)")
    finally:
        await asyncio.gather(*(p.close() for p in peers))


# -- (d) a client that stops reading ---------------------------------------------------------------
class RawClient:
    """A bare TCP Socket.IO client with a tiny receive buffer: it does the handshakes and a
    join, then never reads again (until the test drains it at the end)."""

    def __init__(self, host: str, port: int, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv(self) -> str:
        """The next text message (answering Engine.IO pings)."""
        while True:
            while len(self.buffer) < 2:
                self.buffer += self._recv()
            n = self.buffer[1] & 0x7F
            start = 2
            if n == 126:
                while len(self.buffer) < 4:
                    self.buffer += self._recv()
                n, start = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif n == 127:
                while len(self.buffer) < 10:
                    self.buffer += self._recv()
                n, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
            while len(self.buffer) < start + n:
                self.buffer += self._recv()
            opcode = self.buffer[0] & 0x0F
            payload = self.buffer[start:start + n]
            self.buffer = self.buffer[start + n:]
            if opcode == 0x8:
                raise ConnectionError("close frame")
            if opcode != 0x1:
                continue
            text = payload.decode()
            if text == "2":
                self.send("3")
                continue
            return text

    def join(self, user: str, room: str) -> None:
        assert self.recv().startswith("0{")
        self.send("40" + json.dumps({"token": token(user, user)}))
        while not (answer := self.recv()).startswith(("40", "44")):
            pass
        assert answer.startswith("40{"), answer
        self.send('421["join room",' + json.dumps({"roomId": room}) + "]")
        while not (answer := self.recv()).startswith("431"):
            pass
        assert json.loads(answer[3:]) == [{"success": True, "roomId": room}], answer

    def drain(self, timeout: float) -> int:
        """Read until the server's close; the bytes that were still on their way."""
        self.sock.settimeout(timeout)
        total = len(self.buffer)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = self.sock.recv(65536)
                if not data:
                    return total
                total += len(data)
        except ConnectionResetError:
            return total
        raise AssertionError(f"the server kept the connection open ({total} bytes read)")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def write_limit_args(limit_bytes: int) -> tuple[str, ...]:
    """The gateway's bound on what one client may leave unread."""
    fields = GatewayConfig.__dataclass_fields__
    if "write_limit" in fields:
        return ("--write-limit", str(limit_bytes))
    return ("--outbox-limit", "64")  # frames, before --write-limit existed


SIZE = 100_000  # characters of one flood message (the room service's --max-content is raised to it)


class Flood:
    """A one-gateway cluster with a room ``flood``: ``flooders`` that send, ``readers`` that
    read everything, and ``slow``, a raw client that joined and then stopped reading."""

    def __init__(self, cluster: Cluster, flooders: list[UserPeer], readers: list[UserPeer],
                 slow: RawClient) -> None:
        self.cluster = cluster
        self.url = cluster.url(0)
        self.part = gateway_part(cluster, 0)
        self.flooders = flooders
        self.readers = readers
        self.slow = slow
        self.sent = 0

    @property
    def peers(self) -> list[UserPeer]:
        return [*self.flooders, *self.readers]

    def slow_closes(self) -> float:
        return metric(self.url, "switchboard_gateway_closes_total", reason="slow consumer")

    async def send(self, count: int) -> None:
        """``count`` more messages, the flooders sending at once (each in order)."""
        body = "x" * (SIZE - 12)

        async def one(flooder: UserPeer, numbers: range) -> None:
            for n in numbers:
                ack = await flooder.call("room message", {
                    "roomId": "flood", "message": f"{n:012d}{body}"})
                assert ack == {"success": True}, ack

        first, k = self.sent, len(self.flooders)
        self.sent += count
        await asyncio.gather(*(one(f, range(first + i, first + count, k))
                               for i, f in enumerate(self.flooders)))

    async def close(self) -> None:
        self.slow.close()
        await asyncio.gather(*(p.close() for p in self.peers))


@contextlib.asynccontextmanager
async def flood_room(factory: Callable[..., Cluster], write_limit: int,
                     flooders: int = 3, readers: int = 2) -> Any:
    cluster = factory(
        gateways=1,
        moderation_args=("--event-limit", "0", "--user-event-limit", "0"),
        room_args=("--max-content", str(SIZE)),
        gateway_args=write_limit_args(write_limit),
    )
    url = cluster.url(0)
    senders = [await UserPeer(f"flooder{i}").connect(url) for i in range(flooders)]
    others = [await UserPeer(f"reader{i}").connect(url) for i in range(readers)]
    slow = await asyncio.to_thread(RawClient, cluster.host, cluster.gateway_ports[0])
    flood = Flood(cluster, senders, others, slow)
    try:
        assert (await senders[0].call("create room", {"roomId": "flood", "roomName": "F"}))[
            "success"]
        for peer in flood.peers:
            assert (await peer.call("join room", {"roomId": "flood"}))["success"] is True
        await asyncio.to_thread(slow.join, "sloth", "flood")
        info = await senders[0].call("get room info", "flood")
        assert info["userCount"] == flooders + readers + 1
        yield flood
    finally:
        await flood.close()


async def test_slow_client_is_disconnected_and_memory_stays_bounded(
    cluster_factory: Callable[..., Cluster],
) -> None:
    count, limit = 160, 256 * 1024  # 16 MB for the client that stops reading
    async with flood_room(cluster_factory, limit) as flood:
        closes = flood.slow_closes()
        connections = json.loads(http_text(flood.url + "/stats"))["connections"]
        rss_before = rss_kib(flood.part)
        started = time.monotonic()
        await flood.send(count)
        flooded = time.monotonic() - started

        # Everyone else got every message, each flooder's in order.
        for reader in flood.readers:
            async def received(r: UserPeer = reader) -> int:
                return len(r.seen("room message"))

            await poll_until(received, lambda n: n >= count, f"{reader.name} got the flood", 30,
                             retry_on=RETRY)
            got = [await reader.next("room message") for _ in range(count)]
            assert sorted(int(m["message"][:12]) for m in got) == list(range(count))
            for flooder in flood.flooders:
                mine = [int(m["message"][:12]) for m in got if m["from"] == flooder.name]
                assert mine == sorted(mine) and mine, flooder.name
        await poll_until(lambda: asyncio.to_thread(flood.slow_closes), lambda n: n == closes + 1,
                         "the slow client disconnected", WAIT, retry_on=RETRY)
        rss_after = rss_kib(flood.part)

        # The room service heard it leave; the others still chat.
        first = flood.flooders[0]
        info = await first.call("get room info", "flood")
        assert info["userCount"] == len(flood.peers), info
        assert "sloth" not in {u["id"] for u in info["users"]}
        reader = flood.readers[0]
        ack = await reader.call("room message", {"roomId": "flood", "message": "still here"})
        assert ack == {"success": True}
        for peer in flood.peers:
            if peer is not reader:
                got = await peer.wait_for("room message", lambda m: m["message"] == "still here")
                assert got["from"] == reader.name
        stats = await poll_until(lambda: asyncio.to_thread(
            lambda: json.loads(http_text(flood.url + "/stats"))),
            lambda st: st["connections"] == connections - 1, "the slow connection dropped", WAIT,
            interval=0.1, retry_on=RETRY)
        assert stats["namespaces"]["/"] == len(flood.peers), stats
        growth = (rss_after - rss_before) / 1024
        volume = SIZE * count / 2**20
        # What was still on its way to the slow client when it was cut off (kernel buffers
        # and the transport's, up to the write limit) is all it gets.
        unread = await asyncio.to_thread(flood.slow.drain, WAIT)
        print(f"\nslow client: {count} x {SIZE} B = {volume:.0f} MB flooded in {flooded:.1f}s; "
              f"gateway RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MB "
              f"(+{growth:.1f} MB); {unread / 1024:.0f} KiB reached the slow client "
              f"(write limit {limit // 1024} KiB); connections {connections} -> "
              f"{stats['connections']}")
        assert growth < volume / 2, f"gateway RSS grew {growth:.1f} MB for {volume:.0f} MB"
        assert unread < volume * 2**20 / 2, f"{unread} bytes were still sent to the slow client"


async def test_slow_client_connection_is_dropped_after_the_close_timeout(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The client that never reads does not keep its TCP connection (and the unsent bytes
    buffered for it) either: the closing handshake it ignores times out and the gateway drops
    the connection."""
    from switchboard.gateway.transport import CLOSE_TIMEOUT

    async with flood_room(cluster_factory, 64 * 1024, flooders=1, readers=1) as flood:
        closes = flood.slow_closes()
        connections = json.loads(http_text(flood.url + "/stats"))["connections"]
        for _ in range(100):  # 10 MB at most; the kernel's buffers fill first
            await flood.send(5)
            if await asyncio.to_thread(flood.slow_closes) > closes:
                break
        else:
            raise AssertionError("the client that does not read was never disconnected")
        cut = time.monotonic()
        await poll_until(lambda: asyncio.to_thread(
            lambda: json.loads(http_text(flood.url + "/stats"))["connections"]),
            lambda n: n == connections - 1, "the slow client's connection dropped",
            CLOSE_TIMEOUT + 5, interval=0.1, retry_on=RETRY)
        assert time.monotonic() - cut < CLOSE_TIMEOUT + 5


async def test_clients_of_a_gateway_stopped_gracefully_reconnect_on_either_transport(
        tmp_path: Path, cluster_factory: Callable[..., Cluster]) -> None:
    """python-socketio reconnects from a dropped transport, but not from an Engine.IO CLOSE
    the server sent (it takes that as a deliberate disconnect). A gateway that shuts down
    therefore ends its polling sessions without one: every client of a stopped gateway,
    on polling or upgraded to WebSocket, reconnects through the balancer to the other."""
    from tests.support.balancer import balancer

    cluster = cluster_factory(gateways=2)
    stopping = f"gw{cluster.gateway_ports[1]}"
    with balancer(tmp_path, cluster.gateway_ports) as url:
        clients: list[tuple[str, socketio.AsyncClient]] = []
        try:
            for n in range(8):  # round robin: half of them on the gateway that stops
                transports = ["polling"] if n % 2 else None  # None: the defaults
                client = socketio.AsyncClient()
                await asyncio.wait_for(client.connect(
                    url, auth={"token": token(f"u{n}", f"user{n}")},
                    transports=transports), WAIT)
                clients.append(("polling" if transports else "default", client))
            on_it = [(kind, c) for kind, c in clients
                     if (c.get_sid("/") or "").startswith(stopping)]
            assert {kind for kind, _ in on_it} == {"polling", "default"}, [
                (kind, c.get_sid("/")) for kind, c in clients]
            part = gateway_part(cluster, 1)
            part.signal(signal.SIGTERM)
            assert part.process is not None
            assert await asyncio.to_thread(part.process.wait, WAIT) == 0

            def back() -> list[str]:
                return [f"{kind}: {c.get_sid('/')}" for kind, c in on_it
                        if not c.connected or (c.get_sid("/") or stopping).startswith(
                            stopping)]

            await poll_until(lambda: asyncio.sleep(0, back()), lambda left: not left,
                             "every client of the stopped gateway reconnected elsewhere",
                             3 * WAIT)
            # Each works there, and presence is exactly the sockets connected now.
            expected = sorted(c.get_sid("/") or "" for _, c in clients)

            async def online() -> list[str]:
                users = await clients[0][1].call("get online users", timeout=WAIT)
                return sorted(u["socketId"] for u in users["users"])

            # Client events, so paced under the per-user event limit.
            await poll_until(online, lambda sids: sids == expected,
                             "presence exactly the reconnected sockets", 3 * WAIT,
                             interval=EVENT_POLL, retry_on=RETRY)
        finally:
            for _, client in clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), WAIT)
