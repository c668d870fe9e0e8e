"""Long-polling and the upgrade with no sticky sessions: three gateways behind HAProxy
(``balance roundrobin``), so a client's consecutive requests — handshake, polls, posts, the
WebSocket — land on different gateways, with the clients' default options first.

Also a balancer that refuses WebSocket upgrades (as many corporate proxies do): clients stay
on polling and keep every feature. The chat rows of EVENTS.md over polling-only clients
behind the balancer are ``test_chat_e2e.py``'s second ``chat_cluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
import websockets
from websockets.exceptions import InvalidStatus

from tests.integration.chat_helpers import POLL_MAX_INTERVAL, POLL_TIMEOUT
from tests.support.balancer import balancer
from tests.support.cluster import Cluster, gateway_part, metric, start_chat_cluster, token
from tests.support.node import find_node, run_flow
from tests.support.peer import UserPeer
from tests.support.polling import poll_until

WAIT = 15.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = Path(tmp_path_factory.mktemp("polling"))
    # No event rate limits: the burst test sends 200 messages at once. Short slow-client
    # timeouts: the bad-input test waits them out.
    cluster = start_chat_cluster(workdir, gateways=3, moderation_args=(
        "--event-limit", "0", "--user-event-limit", "0"), gateway_args=(
        "--http-header-timeout", "1", "--http-body-timeout", "1"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def lb(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with balancer(Path(tmp_path_factory.mktemp("lb")), cluster.gateway_ports) as url:
        yield url


@pytest.fixture(scope="module")
def ws_blocked(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with balancer(Path(tmp_path_factory.mktemp("lb-nows")), cluster.gateway_ports,
                  refuse_websocket=True) as url:
        yield url


def total(cluster: Cluster, key: str) -> int:
    return sum(int(cluster.stats(i)[key]) for i in range(len(cluster.gateway_ports)))


@contextlib.asynccontextmanager
async def peers(*items: UserPeer) -> AsyncIterator[tuple[UserPeer, ...]]:
    try:
        yield items
    finally:
        await asyncio.gather(*(p.close() for p in items))


async def chat_between(a: UserPeer, b: UserPeer, room: str) -> None:
    """``a`` and ``b`` share a room and exchange a line each way."""
    assert (await a.call("create room", {"roomId": room, "roomName": room}))["success"]
    for peer in (a, b):
        assert (await peer.call("join room", {"roomId": room}))["success"] is True
    for sender, receiver in ((a, b), (b, a)):
        ack = await sender.call("chat message", {"roomId": room, "content": f"hi {room}"})
        line = await receiver.wait_for("chat message",
                                       functools.partial(has_id, ack["messageId"]))
        assert line["from"] == sender.name


def has_id(sent: str, message: dict[str, Any]) -> bool:
    return bool(message["id"] == sent)


async def transport_of(client: Any) -> str:
    return str(client.client.transport())


# --------------------------------------------------------------- default-option clients


async def test_python_async_clients_on_default_options_upgrade_and_chat(
    cluster: Cluster, lb: str
) -> None:
    handovers = total(cluster, "handovers")
    clients = [UserPeer(f"py-default-{i}") for i in range(6)]
    async with peers(*clients):
        for client in clients:
            await client.connect(lb)
        await chat_between(clients[0], clients[1], "py-default")
        for client in clients:
            await poll_until(functools.partial(transport_of, client),
                             lambda t: t == "websocket", f"{client.name} upgraded", POLL_TIMEOUT,
                             max_interval=POLL_MAX_INTERVAL)
        # Round robin sent some WebSockets to another gateway than the handshake's: the
        # session moved there, before any namespace was connected on it.
        assert len({c.sid.partition(".")[0] for c in clients}) > 1
    assert total(cluster, "handovers") > handovers


def test_python_sync_client_on_default_options_upgrades_and_chats(lb: str) -> None:
    received: list[Any] = []
    got = __import__("threading").Event()
    client = socketio.Client(reconnection=False)

    def on_line(data: Any) -> None:
        received.append(data)
        got.set()

    client.on("chat message", on_line)
    other = socketio.Client(reconnection=False)
    try:
        client.connect(lb, auth={"token": token("sync-a", "a")}, wait_timeout=WAIT)
        other.connect(lb, auth={"token": token("sync-b", "b")}, wait_timeout=WAIT)
        assert client.call("create room", {"roomId": "sync", "roomName": "S"},
                           timeout=WAIT)["success"]
        for c in (client, other):
            assert c.call("join room", {"roomId": "sync"}, timeout=WAIT)["success"] is True
        ack = other.call("chat message", {"roomId": "sync", "content": "sync hi"},
                         timeout=WAIT)
        assert got.wait(WAIT)
        assert received[0]["id"] == ack["messageId"]
        assert client.transport() == "websocket" and other.transport() == "websocket"
    finally:
        client.disconnect()
        other.disconnect()


def test_node_client_on_default_options_through_the_balancer(lb: str) -> None:
    node = find_node("Node client through the balancer")
    r = run_flow(node, {
        "a": {"url": lb, "token": token("lb-alice", "alice"), "userId": "lb-alice"},
        "b": {"url": lb, "token": token("lb-bob", "bob"), "userId": "lb-bob"},
        "roomId": "lb-node", "roomName": "LB", "chat": "hello via haproxy",
        "private": "psst",
    })
    assert r["transports"] == {"a": "websocket", "b": "websocket"}
    assert r["chat"]["received"]["content"] == "hello via haproxy"
    assert r["private"]["received"]["content"] == "psst"


# ---------------------------------------------------------------------- polling members


async def test_a_burst_reaches_polling_members_complete_and_in_order(
    cluster: Cluster, lb: str
) -> None:
    sender = UserPeer("burst-sender")
    members = [UserPeer(f"burst-member-{i}", transports=["polling"]) for i in range(3)]
    async with peers(sender, *members):
        await sender.connect(lb)
        for member in members:
            await member.connect(lb)
        assert (await sender.call("create room", {"roomId": "burst", "roomName": "B"}))[
            "success"]
        for peer in (sender, *members):
            assert (await peer.call("join room", {"roomId": "burst"}))["success"] is True
        count = 200
        # Pipelined: the sender does not wait for each ack, as a busy client would not.
        acks = await asyncio.gather(*(sender.call(
            "room message", {"roomId": "burst", "message": f"{n:04d}"}) for n in range(count)))
        assert all(a == {"success": True} for a in acks)
        for member in members:
            got = [await member.next("room message") for _ in range(count)]
            assert [m["message"] for m in got] == [f"{n:04d}" for n in range(count)]
            assert member.client.transport() == "polling"


async def test_binary_and_server_acks_over_polling(tmp_path: Path) -> None:
    """The miniapp's echo (binary attachments both ways) and a server→client ack, over
    polling-only clients of a two-gateway miniapp cluster behind the balancer."""
    mini = Cluster(tmp_path)
    mini.start_broker()
    mini.start_service("tests.support.miniapp")
    mini.start_gateway()
    mini.start_gateway()
    client = socketio.AsyncClient(reconnection=False)
    questions: asyncio.Queue[Any] = asyncio.Queue()
    answered: asyncio.Queue[Any] = asyncio.Queue()
    def question(*args: Any) -> str:
        questions.put_nowait(args)
        return "yes"

    client.on("question", question)
    client.on("answered", lambda *args: answered.put_nowait(args))
    try:
        with balancer(tmp_path, mini.gateway_ports) as url:
            await client.connect(url, transports=["polling"], wait_timeout=WAIT)
            ack = await client.call("echo", [b"\x00\x01\xff", {"n": 1}], timeout=WAIT)
            assert ack == [b"\x00\x01\xff", {"n": 1}]
            await client.emit("ask", {"q": "ok?"})
            assert await asyncio.wait_for(questions.get(), WAIT) == ({"q": "ok?"},)
            assert await asyncio.wait_for(answered.get(), WAIT) == ("yes",)
            assert client.transport() == "polling"
            await client.disconnect()
    finally:
        mini.stop()


async def test_behind_a_proxy_that_refuses_websocket_default_clients_stay_on_polling(
    ws_blocked: str,
) -> None:
    a, b = UserPeer("nows-a"), UserPeer("nows-b")
    async with peers(a, b):
        await a.connect(ws_blocked)
        await b.connect(ws_blocked)
        await chat_between(a, b, "nows")
        assert (a.client.transport(), b.client.transport()) == ("polling", "polling")


async def test_polling_clients_reconnect_when_their_gateway_is_killed(
    tmp_path: Path,
) -> None:
    """kill -9 the gateway that owns a polling session: the client's next request finds the
    session unknown (whichever gateway gets it), the client reconnects through the
    balancer, and carries on."""
    own = start_chat_cluster(tmp_path, gateways=3)
    try:
        with balancer(tmp_path, own.gateway_ports) as url:
            victim = UserPeer("kill-victim", transports=["polling"], reconnection=True)
            friend = UserPeer("kill-friend", transports=["polling"])
            async with peers(victim, friend):
                await victim.connect(url)
                await friend.connect(url)
                first_sid = victim.sid
                owner = first_sid.partition(".")[0]
                index = next(i for i, port in enumerate(own.gateway_ports)
                             if owner == f"gw{port}")
                part = gateway_part(own, index)
                assert part.process is not None
                os.kill(part.process.pid, signal.SIGKILL)
                await victim.next("welcome", timeout=WAIT)  # welcomed again after reconnecting
                assert victim.sid != first_sid and victim.client.connected
                if friend.sid.partition(".")[0] != owner:
                    # A polling client elsewhere never noticed.
                    ack = await friend.call("get online users")
                    ids = {u["id"] for u in ack["users"]}
                    assert "kill-victim" in ids
    finally:
        own.stop()


async def online_ids(observer: UserPeer) -> set[str]:
    """The user ids ``get online users`` lists, asked through ``observer``."""
    ack = await observer.call("get online users")
    return {u["id"] for u in ack["users"]}


async def held_relayed_poll(http: aiohttp.ClientSession, own: Cluster, user: str
                            ) -> tuple[str, asyncio.Task[tuple[int, str]]]:
    """A polling session of ``user`` owned by gateway 0 (connected, welcomed) and a GET of
    it sent through gateway 1, held at the owner: the session's query and that GET."""
    owner_url, relay_url = own.url(0), own.url(1)
    async with http.get(f"{owner_url}/socket.io/?EIO=4&transport=polling") as response:
        sid = json.loads((await response.text())[1:])["sid"]
    query = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    async with http.post(owner_url + query, data="40" + json.dumps(
            {"token": token(user, user)})) as response:
        assert response.status == 200
    got = ""
    deadline = asyncio.get_running_loop().time() + WAIT
    while '"welcome"' not in got:  # the CONNECT ack, then the welcome
        assert asyncio.get_running_loop().time() < deadline, got
        async with http.get(owner_url + query) as response:
            got += await response.text()
    held = own.stats(0)["peerPollsHeld"]

    async def relayed_poll() -> tuple[int, str]:
        async with http.get(relay_url + query) as response:
            return response.status, await response.text()

    # A poll that finds something queued is answered at once; the next one waits.
    poll = asyncio.create_task(relayed_poll())
    while (await asyncio.to_thread(own.stats, 0))["peerPollsHeld"] != held + 1:
        assert asyncio.get_running_loop().time() < deadline, "no relayed GET held"
        if poll.done():
            assert poll.result()[0] == 200
            poll = asyncio.create_task(relayed_poll())
        await asyncio.sleep(0.05)
    return query, poll


@dataclass
class HeldPoll:
    """Two gateways, an observer (WebSocket), and a session of ``user`` owned by gateway 0
    with a GET of it relayed by gateway 1 and held at the owner (:func:`held_relayed_poll`)."""

    own: Cluster
    observer: UserPeer
    http: aiohttp.ClientSession
    query: str
    poll: asyncio.Task[tuple[int, str]]

    def gateway(self, index: int) -> Any:
        part = gateway_part(self.own, index)
        assert part.process is not None
        return part

    async def gone(self, user: str, what: str, bound: float) -> None:
        await poll_until(lambda: online_ids(self.observer), lambda ids: user not in ids,
                         what, bound, max_interval=POLL_MAX_INTERVAL)


@contextlib.asynccontextmanager
async def held_poll(tmp_path: Path, user: str, observe_on: int,
                    *gateway_args: str) -> AsyncIterator[HeldPoll]:
    own = start_chat_cluster(tmp_path, gateways=2, gateway_args=gateway_args)
    try:
        observer = UserPeer(f"{user}-observer", transports=["websocket"])
        timeout = aiohttp.ClientTimeout(total=3 * WAIT)
        async with peers(observer), aiohttp.ClientSession(timeout=timeout) as http:
            await observer.connect(own.url(observe_on))
            query, poll = await held_relayed_poll(http, own, user)
            assert user in await online_ids(observer)
            yield HeldPoll(own, observer, http, query, poll)
    finally:
        own.stop()


async def test_a_session_whose_poll_died_with_its_relay_ends_at_once(tmp_path: Path) -> None:
    """A GET forwarded by another gateway is held at the owner; kill -9 that relay: the
    client saw its poll fail (and an official client opens a new session then), so once
    the relay is known dead (it stops announcing itself) the owner ends the session — its
    socket leaves presence long before the 45 s ping timeout that would otherwise keep a
    ghost online."""
    async with held_poll(tmp_path, "u-relayed", 0) as held:
        os.kill(held.gateway(1).process.pid, signal.SIGKILL)
        with pytest.raises(aiohttp.ClientError):
            await held.poll
        # Within WAIT, well before the ping timeout (25 s + 20 s) alone would end it.
        await held.gone("u-relayed", "the relayed session leaving presence", WAIT)
        async with held.http.get(held.own.url(0) + held.query) as response:
            assert response.status == 400  # the session is gone


#: How soon a ghost must be gone: the services' gateway timeout (5 s), and a second.
GHOST_BOUND = 6.0


async def test_a_session_whose_relay_died_with_its_answer_in_flight_ends(
        tmp_path: Path) -> None:
    """The relay of a held GET freezes; the owner answers that GET (a message for its
    user), so the owner holds no GET any more and the answer sits in the frozen relay; the
    relay is then killed (the answer dies with it) and restarted, as a supervisor does. The
    client saw its poll fail and opens a new session: the old one must not stay online as a
    ghost until its ping timeout (45 s) — it ends once the relay's new instance is heard."""
    async with held_poll(tmp_path, "u-inflight", 0) as held:
        before = held.own.stats(0)["peerPollsHeld"]
        relay = held.gateway(1)
        os.kill(relay.process.pid, signal.SIGSTOP)
        ack = await held.observer.call("private message", {"to": "u-inflight",
                                                           "content": "into the void"})
        assert ack["success"]
        await poll_until(lambda: asyncio.to_thread(held.own.stats, 0),
                         lambda st: st["peerPollsHeld"] == before - 1,
                         "the owner answering the held GET", WAIT,
                         max_interval=POLL_MAX_INTERVAL)
        os.kill(relay.process.pid, signal.SIGKILL)
        relay.process.wait(WAIT)
        with pytest.raises(aiohttp.ClientError):
            await held.poll
        relay.start()  # the same gateway id, a new instance
        held.own.wait_ready(held.own.gateway_ports[1])
        await held.gone("u-inflight", "the ghost leaving presence", GHOST_BOUND)
        async with held.http.get(held.own.url(0) + held.query) as response:
            assert response.status == 400  # the session is gone


async def test_a_ghost_held_by_a_frozen_owner_ends_when_it_resumes(tmp_path: Path) -> None:
    """The owner of a session freezes (SIGSTOP) past the ZeroMQ heartbeat while a GET of it,
    relayed by another gateway, is held there: the relay answers its client ``Session ID
    unknown`` (the client opens a new session), and once the owner resumes it hears that
    the GET it still holds was given up, so the session ends then, not at its ping
    timeout."""
    async with held_poll(tmp_path, "u-owner-frozen", 1, "--heartbeat-interval", "1") as held:
        owner = held.gateway(0)
        os.kill(owner.process.pid, signal.SIGSTOP)
        try:
            status, _ = await asyncio.wait_for(held.poll, WAIT)
            assert status == 400  # the relay gave up on the frozen owner
        finally:
            os.kill(owner.process.pid, signal.SIGCONT)
        await held.gone("u-owner-frozen", "the ghost leaving presence after the owner resumed",
                        GHOST_BOUND)


async def test_a_session_whose_relay_froze_survives_the_freeze(tmp_path: Path) -> None:
    """The same held GET, but its relay freezes (SIGSTOP) past the 3 s ZeroMQ heartbeat, so
    the owner loses its connection to the relay: a frozen relay still holds the client's
    request and answers it when it resumes, so the owner keeps the session; what is sent to
    it meanwhile arrives through that very GET."""
    async with held_poll(tmp_path, "u-frozen", 0, "--heartbeat-interval", "1") as held:
        relay = held.gateway(1)
        os.kill(relay.process.pid, signal.SIGSTOP)
        try:
            await poll_until(lambda: asyncio.to_thread(held.own.stats, 0),
                             lambda st: st["peersConnected"] == 0,
                             "the owner losing its connection to the frozen relay", WAIT,
                             max_interval=POLL_MAX_INTERVAL)
            ack = await held.observer.call("private message", {"to": "u-frozen",
                                                               "content": "while frozen"})
            assert ack["success"]
        finally:
            os.kill(relay.process.pid, signal.SIGCONT)
        status, body = await asyncio.wait_for(held.poll, 2 * WAIT)
        assert status == 200 and "while frozen" in body
        assert "u-frozen" in await online_ids(held.observer)


# -------------------------------------------------------------------------- bad input


async def test_bad_http_input_costs_only_its_sender(cluster: Cluster, lb: str,
                                                    tmp_path: Path) -> None:
    """Oversize POSTs, malformed payloads, overlapping polls, unknown sids, a slow client:
    each is answered (or dropped) plainly, and a bystander polling client goes on."""
    bystander = UserPeer("bystander", transports=["polling"])
    async with peers(bystander), aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
        await bystander.connect(lb)
        base = f"{lb}/socket.io/?EIO=4&transport=polling"

        async def new_sid() -> str:
            async with http.get(base) as response:
                return json.loads((await response.text())[1:])["sid"]

        sid = await new_sid()
        async with http.post(f"{base}&sid={sid}", data=b"4" + b"x" * 1_000_001) as response:
            assert response.status == 413
        async with http.post(f"{base}&sid={sid}", data=b"\xff\xfe") as response:
            assert response.status == 400
            assert json.loads(await response.text()) == {"code": 3, "message": "Bad request"}
        async with http.get(f"{base}&sid={sid}") as response:  # closed for its bad payload
            assert response.status == 400
        async with http.get(f"{base}&sid=gw0.nope") as response:
            assert json.loads(await response.text()) == {"code": 1,
                                                         "message": "Session ID unknown"}
        async with http.get(f"{base}&sid=no-gateway-at-all") as response:
            assert response.status == 400

        # Slow senders: a head that never ends, a body that never ends. Each gets 408 and
        # its connection closed; meanwhile the bystander's requests go on.
        port = cluster.gateway_ports[0]
        for partial in (b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n",
                        b"POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\n"
                        b"Content-Length: 100\r\n\r\n4"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(partial)
            assert (await bystander.call("get online users"))["success"] is True
            answer = await asyncio.wait_for(reader.read(), WAIT)  # until the server closes
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
            assert b"Connection: close" in answer
            writer.close()
        assert (await bystander.call("get online users"))["success"] is True


async def test_a_flood_of_handshakes_is_limited_per_address(tmp_path: Path) -> None:
    own = start_chat_cluster(tmp_path, gateways=1, gateway_args=("--handshake-rate", "20"))
    try:
        url = own.url(0) + "/socket.io/?EIO=4&transport=polling"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
            statuses = []
            for _ in range(30):
                async with http.get(url) as response:
                    statuses.append(response.status)
                    if response.status == 429:
                        assert int(response.headers["Retry-After"]) >= 1
        assert statuses.count(200) == 20 and statuses.count(429) == 10
        # The sessions it opened are ordinary ones that time out; health is unaffected.
        assert own.stats(0)["connections"] == 20
    finally:
        own.stop()


async def _handshake_from(source: str, port: int) -> int:
    """A polling handshake from loopback address ``source``: its HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"
                     b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), WAIT)
        return int(status.split()[1])
    finally:
        writer.close()


async def test_a_flood_of_failed_authentications_is_bounded_and_costs_others_nothing(
        tmp_path: Path) -> None:
    """Bad tokens from one address: on one session, the services are asked 10 times and the
    gateway refuses the rest itself; on new sessions, each pays a handshake, so the flood
    stops at the address's handshake budget. Another address still gets in, and a user with
    a valid token on that address is unaffected."""
    own = start_chat_cluster(tmp_path, gateways=1, gateway_args=("--handshake-rate", "20"))
    try:
        port = own.gateway_ports[0]
        url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        async with websockets.connect(url) as ws:
            assert str(await ws.recv()).startswith("0")
            answers = []
            for _ in range(15):
                await ws.send('40{"token":"not-a-token"}')
                answers.append(json.loads(str(await asyncio.wait_for(ws.recv(), WAIT))[2:]))
        assert answers[:10] == [{"message": "Authentication error: Invalid token"}] * 10
        assert answers[10:] == [{"message": "Too many refused connections"}] * 5
        statuses = []
        for _ in range(25):  # one bad CONNECT per new session
            try:
                async with websockets.connect(url) as ws:
                    await ws.recv()
                    await ws.send('40{"token":"not-a-token"}')
                    await asyncio.wait_for(ws.recv(), WAIT)
                    statuses.append(101)
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)
        assert statuses.count(101) == 19 and statuses.count(429) == 6, statuses
        # Another address costs nothing; a user with a valid token there gets in.
        assert await _handshake_from("127.0.0.2", port) == 200
        with socket.socket() as raw:
            raw.bind(("127.0.0.3", 0))
            raw.connect(("127.0.0.1", port))
            raw.setblocking(False)
            async with websockets.connect(url, sock=raw) as ws:
                assert str(await ws.recv()).startswith("0")
                await ws.send("40" + json.dumps({"token": token("calm", "Calm")}))
                accepted = str(await asyncio.wait_for(ws.recv(), WAIT))
        assert accepted.startswith("40") and "sid" in json.loads(accepted[2:]), accepted
    finally:
        own.stop()


async def test_a_polling_client_that_stops_polling_is_cut_off(tmp_path: Path) -> None:
    """The slow-reader bound holds for polling: what queues for a client that never polls
    is bounded by --write-limit, then its session ends (slow consumer)."""
    own = start_chat_cluster(
        tmp_path, gateways=1, gateway_args=("--write-limit", str(64 * 1024)),
        moderation_args=("--event-limit", "0", "--user-event-limit", "0"),
        room_args=("--max-content", "20000"))
    try:
        url = own.url(0)
        sender = UserPeer("slowpoll-sender")
        async with peers(sender), aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
            await sender.connect(url)
            assert (await sender.call("create room", {"roomId": "sp", "roomName": "SP"}))[
                "success"]
            await sender.call("join room", {"roomId": "sp"})
            base = f"{url}/socket.io/?EIO=4&transport=polling"
            async with http.get(base) as response:
                sid = json.loads((await response.text())[1:])["sid"]
            target = f"{base}&sid={sid}"
            jwt = token("slowpoll", "slowpoll")
            async with http.post(target, data='40{"token":"' + jwt + '"}') as response:
                assert response.status == 200
            body = ""
            while '"room joined"' not in body:  # CONNECT ack, welcome, ... then the join
                async with http.get(target) as response:
                    body = await response.text()
                    if body.startswith("40{"):
                        async with http.post(target, data='42["join room",{"roomId":"sp"}]'):
                            pass
            closes = metric(url, "switchboard_gateway_closes_total", reason="slow consumer")
            for n in range(40):  # 800 kB for a client allowed 64 kB
                ack = await sender.call("room message", {"roomId": "sp",
                                                         "message": f"{n}" + "y" * 19_000})
                assert ack == {"success": True}
            await poll_until(lambda: asyncio.to_thread(
                metric, url, "switchboard_gateway_closes_total", reason="slow consumer"),
                lambda n: n == closes + 1, "the polling client cut off", POLL_TIMEOUT,
                max_interval=POLL_MAX_INTERVAL)
            async with http.get(target) as response:
                assert response.status == 400  # its session is gone
            ack = await sender.call("room message", {"roomId": "sp", "message": "still"})
            assert ack == {"success": True}
            info = await sender.call("get room info", "sp")
            assert [u["id"] for u in info["users"]] == ["slowpoll-sender"]
    finally:
        own.stop()


async def test_a_probe_at_another_gateway_for_a_session_that_cannot_move_is_refused(
    cluster: Cluster,
) -> None:
    """A polling session whose namespace is connected stays on its gateway; a probe for it
    reaching another gateway is refused at the handshake (400), not accepted and closed
    (python-engineio's client dies of a probe closed after its handshake), and the session
    goes on polling where it is."""
    owner, other = cluster.url(0), cluster.url(1)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(f"{owner}/socket.io/?EIO=4&transport=polling") as response:
            opened = json.loads((await response.text())[1:])
        sid = opened["sid"]
        poll = f"{owner}/socket.io/?EIO=4&transport=polling&sid={sid}"
        auth = {"token": token("u-stuck", "stuck")}
        async with http.post(poll, data="40" + json.dumps(auth)) as response:
            assert response.status == 200
        got = ""
        deadline = asyncio.get_running_loop().time() + WAIT
        while '"sid"' not in got:  # the CONNECT ack (and the welcome)
            assert asyncio.get_running_loop().time() < deadline, got
            async with http.get(poll) as response:
                got += await response.text()
        ws_url = other.replace("http", "ws") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(ws_url, open_timeout=WAIT):
                pass
        assert refused.value.response.status_code == 400
        assert json.loads(refused.value.response.body) == {"code": 3, "message": "Bad request"}
        # Still a polling session on its gateway: an event is answered there.
        async with http.post(poll, data='421["get online users"]') as response:
            assert response.status == 200
        got = ""
        while "431[" not in got:
            assert asyncio.get_running_loop().time() < deadline, got
            async with http.get(poll) as response:
                got += await response.text()
        assert "u-stuck" in got
