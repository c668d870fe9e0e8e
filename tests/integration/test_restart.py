"""Failures with real processes and SIGKILL (DESIGN.md, "Failures"): the room and moderation
services die and come back on the same endpoints with the same database files, a gateway
dies for good, and one is paused (SIGSTOP) long enough to be declared lost, then resumes.
python-socketio clients on two gateways check what users see throughout.

Every wait is bounded (an ack, an event, or a poll with a deadline); nothing sleeps to let the
system settle. Each test starts its own cluster: they kill parts of it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.support.backbone import FakeGateway
from tests.support.cluster import Cluster, Part, http_get, start_chat_cluster, token
from tests.support.peer import QueuedPeer, user_auth
from tests.support.polling import poll_until, until

pytestmark = pytest.mark.timeout(150)

WAIT = 10.0
#: The gateway's --request-timeout (default): a request nobody answers fails after it.
REQUEST_TIMEOUT = 5.0
#: The room service's --gateway-timeout in these clusters (default 5 s): short, so that the
#: lost-gateway test is quick; the gateways heartbeat every 0.2 s (tests/support/cluster.py).
GATEWAY_TIMEOUT = 2.0
#: How long a killed service may take to be back (a Python process start).
RESTART_WAIT = 30.0
#: Between two polls that go through moderation: its rate limit is 20 events / 10 s per user.
EVENT_POLL = 0.6
UNAVAILABLE = {"success": False, "error": "service unavailable"}


async def services_answer(cluster: Cluster, timeout: float = RESTART_WAIT) -> None:
    """Every service answers a heartbeat (a bounded poll over ZeroMQ, as a gateway would)."""
    probe = FakeGateway("readiness-probe")
    deadline = time.monotonic() + timeout
    try:
        for name, endpoint in cluster.services.items():
            while True:
                try:
                    await probe.heartbeat(endpoint)
                    break
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise AssertionError(f"service {name} silent for {timeout}s") from None
    finally:
        probe.close()


def two_gateway_cluster(workdir: Path, **kw: Any) -> Cluster:
    """``start_chat_cluster`` with two gateways started once every service answers.

    A gateway starting while a service is still starting heartbeats only the missing one
    (``Backbone.wait_described``), so the room service hears nothing from it meanwhile and,
    with the short ``--gateway-timeout`` used here, may declare it lost before it is even
    ready. That is a scenario of its own (a lost gateway coming back), not what these tests
    are about, so they start the gateways once every service is up.
    """
    cluster = start_chat_cluster(workdir, gateways=0, **kw)
    try:
        asyncio.run(services_answer(cluster))
        for _ in range(2):
            cluster.start_gateway()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = two_gateway_cluster(
        tmp_path, room_args=("--gateway-timeout", str(GATEWAY_TIMEOUT))
    )
    try:
        yield cluster
    finally:
        cluster.stop()


#: What a poll retries: an ack that timed out, a request refused.
RETRY = (socketio.exceptions.TimeoutError, OSError)


def websocket_peer(name: str, ns: str = "/") -> QueuedPeer:
    """A client of one namespace (WebSocket only), named ``name``."""
    return QueuedPeer(name, ns=ns, transports=["websocket"])


async def user(cluster: Cluster, gateway: int, user_id: str, name: str, ns: str = "/",
               role: str = "user") -> QueuedPeer:
    """A connected client of user ``user_id``; on ``/`` its ``welcome`` is checked."""
    peer = websocket_peer(name, ns)
    await peer.connect(cluster.url(gateway), auth=user_auth(user_id, name, role))
    if ns == "/":
        welcome = await peer.next("welcome")
        assert welcome["socketId"] == peer.sid
        assert welcome["serverId"] == f"gw{cluster.gateway_ports[gateway]}"
    return peer


async def refusal(url: str, tok: str) -> Any:
    """Connect to ``/`` expecting a CONNECT_ERROR; its data (bounded waits throughout)."""
    peer = websocket_peer("refused")
    try:
        await peer.connect(url, auth={"token": tok})
    except socketio.exceptions.ConnectionError:
        pass
    else:
        await peer.close()
        raise AssertionError("CONNECT to / succeeded")
    finally:
        await peer.close()
    return await peer.next("connect_error")


def services_up(cluster: Cluster, names: tuple[str, ...], up: bool) -> Callable[[], bool]:
    """Whether every gateway reports each of ``names`` as up (or each as down)."""

    def check() -> bool:
        for index in range(len(cluster.gateway_ports)):
            services = cluster.stats(index)["services"]
            if any(services[name] is not up for name in names):
                return False
        return True

    return check


def restart(cluster: Cluster, name: str) -> Part:
    """Start service ``name`` again: same endpoint, same options (database files), same env."""
    old = cluster.parts[name]
    args = old.argv[old.argv.index("--broker-pub") + 2:]
    part = cluster.start_service(name, *args, env=old.env)
    assert part is cluster.parts[name] and part is not old
    assert part.argv == old.argv  # ``--bind <same endpoint>`` and ``--room-db``/``--moderation-db``
    return part


def alive(cluster: Cluster, *names: str) -> None:
    for name in names:
        process = cluster.parts[name].process
        assert process is not None and process.poll() is None, f"{name} exited"


def member(peer: QueuedPeer, user_id: str) -> dict[str, str]:
    return {"id": user_id, "username": peer.name, "socketId": peer.sid}


def by_sid(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(users, key=lambda u: u["socketId"])


def chat(msg_id: str, sender: QueuedPeer, user_id: str, content: str, room: str,
         timestamp: str, seq: int) -> dict[str, Any]:
    return {"id": msg_id, "from": user_id, "username": sender.name, "content": content,
            "type": "text", "roomId": room, "timestamp": timestamp, "seq": seq}


async def say(sender: QueuedPeer, user_id: str, room: str, content: str,
              receivers: list[QueuedPeer], seq: int | None = None) -> dict[str, Any]:
    """A room ``chat message``; every receiver gets exactly the saved message (the room's
    message number ``seq``, when given). Returns it."""
    ack = await sender.call("chat message", {"content": content, "roomId": room})
    assert ack == {"success": True, "messageId": ack["messageId"]}
    got = [await peer.next("chat message") for peer in receivers]
    number = got[0]["seq"] if seq is None else seq
    assert isinstance(number, int) and number >= 1, got[0]
    expected = chat(ack["messageId"], sender, user_id, content, room, got[0]["timestamp"],
                    number)
    assert got == [expected] * len(receivers)
    return expected


async def join(peer: QueuedPeer, room: str, witnesses: list[QueuedPeer], count: int,
               password: str | None = None) -> dict[str, Any]:
    """``join room``: ack, ``room joined`` to the joiner, ``user joined`` to ``witnesses``."""
    payload = {"roomId": room} if password is None else {"roomId": room, "password": password}
    assert await peer.call("join room", payload) == {"success": True, "roomId": room}
    joined = await peer.next("room joined")
    assert joined["roomId"] == room and joined["userCount"] == count
    notice = {"socketId": peer.sid, "username": peer.name, "roomId": room, "userCount": count}
    for witness in witnesses:
        assert await witness.next("user joined") == notice
    return joined


@pytest.fixture
def stored_cluster(tmp_path: Path, store: dict[str, str]) -> Iterator[Cluster]:
    """As ``cluster``, on each store: SQLite files, or one PostgreSQL database."""
    cluster = two_gateway_cluster(
        tmp_path, room_args=("--gateway-timeout", str(GATEWAY_TIMEOUT)),
        store=store.get("store"))
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_room_and_moderation_services_killed_and_restarted(
        stored_cluster: Cluster) -> None:
    cluster = stored_cluster
    gw0, gw1 = (f"gateway-{port}" for port in cluster.gateway_ports)
    alice = await user(cluster, 0, "u-alice", "alice")
    bob = await user(cluster, 1, "u-bob", "bob")
    carol = await user(cluster, 0, "u-carol", "carol")
    dave = await user(cluster, 1, "u-dave", "dave")
    erin = await user(cluster, 1, "u-erin", "erin")
    watcher = await user(cluster, 0, "u-watch", "watcher")  # polls; in no room
    admin = await user(cluster, 0, "u-admin", "admin", ns="/admin", role="admin")
    peers = [alice, bob, carol, dave, erin, watcher, admin]
    try:
        # -- before: rooms (one private), members on both gateways, history, a ban ---------
        assert await alice.call("create room", {"roomId": "lobby", "roomName": "Lobby"}) == {
            "success": True, "roomId": "lobby"}
        assert await bob.call("create room", {
            "roomId": "secret", "roomName": "Secret", "isPrivate": True, "password": "s3cret",
            "maxUsers": 5}) == {"success": True, "roomId": "secret"}
        joined = await join(alice, "lobby", [], 1)
        assert joined == {"roomId": "lobby", "roomName": "Lobby", "userCount": 1,
                          "users": [member(alice, "u-alice")]}
        await join(bob, "lobby", [alice], 2)
        await join(carol, "lobby", [alice, bob], 3)
        await join(dave, "lobby", [alice, bob, carol], 4)
        await join(bob, "secret", [], 1, password="s3cret")
        await join(carol, "secret", [bob], 2, password="s3cret")
        lobby_lines = [
            await say(alice, "u-alice", "lobby", "hello lobby", [bob, carol, dave], seq=1),
            await say(bob, "u-bob", "lobby", "hi alice", [alice, carol, dave], seq=2),
        ]
        secret_lines = [await say(carol, "u-carol", "secret", "psst", [bob], seq=1)]

        assert await admin.call("ban user", {
            "userId": "u-dave", "reason": "spamming", "seconds": 3600}) == {"success": True}
        assert await dave.next("banned") == {"reason": "spamming"}
        await dave.wait_disconnected(timeout=WAIT)
        left = {"socketId": dave.sid, "username": "dave", "roomId": "lobby", "userCount": 3}
        for peer in (alice, bob, carol):
            assert await peer.next("user left") == left
        assert await refusal(cluster.url(0), token("u-dave", "dave")) == {"message": "Banned"}

        rooms_before = await erin.call("get rooms")
        assert rooms_before == {"success": True, "rooms": [{
            "id": "lobby", "name": "Lobby", "userCount": 3, "maxUsers": 100,
            "createdAt": rooms_before["rooms"][0]["createdAt"]}]}  # the private room is unlisted
        lobby_before = await watcher.call("get room info", "lobby")
        assert lobby_before == {
            "id": "lobby", "name": "Lobby", "userCount": 3, "maxUsers": 100,
            "createdAt": rooms_before["rooms"][0]["createdAt"], "isPrivate": False,
            "users": [member(alice, "u-alice"), member(bob, "u-bob"), member(carol, "u-carol")]}
        secret_before = await bob.call("get room info", "secret")
        assert secret_before["userCount"] == 2 and secret_before["isPrivate"] is True
        assert secret_before["users"] == [member(bob, "u-bob"), member(carol, "u-carol")]
        online_before = await erin.call("get online users")
        # Every `/` socket still connected, on both gateways, in connection order; not dave.
        assert online_before == {"success": True, "users": [
            member(alice, "u-alice"), member(bob, "u-bob"), member(carol, "u-carol"),
            member(erin, "u-erin"), member(watcher, "u-watch")]}
        assert await alice.call("get history", {"roomId": "lobby"}) == {
            "success": True, "messages": lobby_lines}
        assert await bob.call("get history", {"roomId": "secret"}) == {
            "success": True, "messages": secret_lines}

        # -- the room service dies: requests fail cleanly, nothing hangs -------------------
        cluster.parts["room"].kill()
        started = time.monotonic()
        assert await erin.call("get rooms", timeout=REQUEST_TIMEOUT + 5) == UNAVAILABLE
        assert time.monotonic() - started < REQUEST_TIMEOUT + 2
        await until(services_up(cluster, ("room",), up=False),
                   "both gateways see the room service down", WAIT, in_thread=True,
                   retry_on=RETRY)
        assert http_get(cluster.url(0) + "/health")[0] == 503
        started = time.monotonic()
        assert await bob.call("get history", {"roomId": "lobby"},
                              timeout=REQUEST_TIMEOUT + 5) == UNAVAILABLE
        assert time.monotonic() - started < REQUEST_TIMEOUT + 2

        # -- and moderation too (it filters every event and vets every CONNECT) ------------
        cluster.parts["moderation"].kill()
        await until(services_up(cluster, ("moderation",), up=False),
                   "both gateways see moderation down", WAIT, in_thread=True,
                   retry_on=RETRY)
        started = time.monotonic()
        assert await alice.call("get rooms", timeout=REQUEST_TIMEOUT + 5) == UNAVAILABLE
        assert time.monotonic() - started < REQUEST_TIMEOUT + 2
        assert await refusal(cluster.url(1), token("u-frank", "frank")) == {
            "message": "Service unavailable"}
        alive(cluster, "broker", "auth", "game", gw0, gw1)
        assert all(peer.client.connected for peer in peers if peer is not dave)

        # -- both come back on the same endpoints with the same database files -------------
        restart(cluster, "room")
        restart(cluster, "moderation")
        await until(services_up(cluster, ("room", "moderation"), up=True),
                   "both gateways see room and moderation again", RESTART_WAIT, in_thread=True,
                   retry_on=RETRY)
        # Rooms from the database; userCount from both gateways' SYNC.
        rooms_after = await poll_until(lambda: erin.call("get rooms"),
                                       lambda ack: ack == rooms_before,
                                       "get rooms as before the restart", WAIT, EVENT_POLL,
                                       retry_on=RETRY)
        assert rooms_after == rooms_before
        lobby_after = await poll_until(lambda: watcher.call("get room info", "lobby"),
                                       lambda info: info and info.get("userCount") == 3,
                                       "lobby membership rebuilt", WAIT, EVENT_POLL,
                                       retry_on=RETRY)
        # Membership comes back from the gateways, one gateway at a time: the same members,
        # not necessarily in join order (the contract gives `users` no order).
        assert {**lobby_after, "users": by_sid(lobby_after["users"])} == {
            **lobby_before, "users": by_sid(lobby_before["users"])}
        secret_after = await bob.call("get room info", "secret")
        assert {**secret_after, "users": by_sid(secret_after["users"])} == {
            **secret_before, "users": by_sid(secret_before["users"])}
        assert await erin.call("get online users") == online_before

        # The private room still wants its password (the argon2 hash came from the file).
        for attempt in ({"roomId": "secret", "password": "nope"}, {"roomId": "secret"}):
            assert await erin.call("join room", attempt) == {
                "success": False, "error": "wrong password"}
            assert await erin.next("room error") == {"message": "wrong password"}
        joined = await join(erin, "secret", [bob, carol], 3, password="s3cret")
        assert by_sid(joined["users"]) == by_sid(
            [*secret_before["users"], member(erin, "u-erin")])

        assert await alice.call("get history", {"roomId": "lobby"}) == {
            "success": True, "messages": lobby_lines}
        assert await bob.call("get history", {"roomId": "secret"}) == {
            "success": True, "messages": secret_lines}
        assert await refusal(cluster.url(1), token("u-dave", "dave")) == {"message": "Banned"}

        # Fan-out to the rebuilt membership, on both gateways.
        lobby_lines.append(
            # The restarted room service numbers on from what it kept.
            await say(alice, "u-alice", "lobby", "still here?", [bob, carol], seq=3))
        relay = {"from": "u-bob", "username": "bob", "message": "yes", "roomId": "secret"}
        assert await bob.call("room message", {"roomId": "secret", "message": "yes"}) == {
            "success": True}
        for peer in (carol, erin):
            got = await peer.next("room message")
            assert got == {**relay, "timestamp": got["timestamp"]}
        assert await carol.call("get history", {"roomId": "lobby"}) == {
            "success": True, "messages": lobby_lines}
        assert await carol.call("leave room", "lobby") == {"success": True, "roomId": "lobby"}
        left = {"socketId": carol.sid, "username": "carol", "roomId": "lobby", "userCount": 2}
        for peer in (alice, bob):
            assert await peer.next("user left") == left
        # Nobody got what was not theirs: the sender is excluded, non-members are outside.
        assert alice.unread("chat message") == 0 and watcher.unread("chat message") == 0
        assert bob.unread("room message") == 0 and alice.unread("room message") == 0
        alive(cluster, "broker", "auth", "game", "room", "moderation", gw0, gw1)
    finally:
        for peer in peers:
            await peer.close()


async def test_killed_gateway_sockets_are_dropped(cluster: Cluster) -> None:
    gw0, gw1 = (f"gw{port}" for port in cluster.gateway_ports)
    alice = await user(cluster, 0, "u-alice", "alice")
    bob = await user(cluster, 1, "u-bob", "bob")
    carol = await user(cluster, 1, "u-carol", "carol")
    admin = await user(cluster, 0, "u-admin", "admin", ns="/admin", role="admin")
    peers = [alice, bob, carol, admin]
    try:
        assert (await alice.call("create room", {"roomId": "lobby", "roomName": "Lobby"}))[
            "success"]
        await join(alice, "lobby", [], 1)
        await join(bob, "lobby", [alice], 2)
        online = await alice.call("get online users")
        assert online == {"success": True, "users": [
            member(alice, "u-alice"), member(bob, "u-bob"), member(carol, "u-carol")]}
        # Live gateways by heartbeat (the readiness probe's entry, if still there, expires).
        await poll_until(lambda: admin.call("get stats"),
                         lambda stats: sorted(g["id"] for g in stats["gateways"])
                         == sorted([gw0, gw1]),
                         "get stats lists both gateways", WAIT, EVENT_POLL, retry_on=RETRY)
        came = [await alice.next("user online") for _ in range(2)]
        assert came == [{"userId": "u-bob", "username": "bob"},
                        {"userId": "u-carol", "username": "carol"}]

        cluster.parts[f"gateway-{cluster.gateway_ports[1]}"].kill()
        killed = time.monotonic()
        # The room service notices the silence within its gateway timeout and drops the
        # dead gateway's sockets, with the usual notices to the survivors.
        assert await alice.next("user left", timeout=GATEWAY_TIMEOUT + 5) == {
            "socketId": bob.sid, "username": "bob", "roomId": "lobby", "userCount": 1}
        offline = [await alice.next("user offline", timeout=5) for _ in range(2)]
        assert sorted(offline, key=lambda u: u["userId"]) == [
            {"userId": "u-bob", "username": "bob"}, {"userId": "u-carol", "username": "carol"}]
        noticed = time.monotonic() - killed
        assert noticed < GATEWAY_TIMEOUT + 3, f"lost gateway noticed after {noticed:.1f}s"
        assert await alice.call("get online users") == {
            "success": True, "users": [member(alice, "u-alice")]}
        info = await alice.call("get room info", "lobby")
        assert info["userCount"] == 1 and info["users"] == [member(alice, "u-alice")]
        rooms = await alice.call("get rooms")
        assert [(r["id"], r["userCount"]) for r in rooms["rooms"]] == [("lobby", 1)]
        stats = await admin.call("get stats")
        assert [g["id"] for g in stats["gateways"]] == [gw0]
        assert stats["totalConnections"] == 2 and stats["adminConnections"] == 1
        for peer in (bob, carol):
            await peer.wait_disconnected(timeout=WAIT)

        # Clients reconnect elsewhere and are everybody again.
        bob2 = await user(cluster, 0, "u-bob", "bob")
        peers.append(bob2)
        assert await alice.next("user online") == {"userId": "u-bob", "username": "bob"}
        await join(bob2, "lobby", [alice], 2)
        assert await alice.call("get online users") == {
            "success": True, "users": [member(alice, "u-alice"), member(bob2, "u-bob")]}
        await say(bob2, "u-bob", "lobby", "back again", [alice])
        alive(cluster, "broker", "auth", "moderation", "room", "game",
              f"gateway-{cluster.gateway_ports[0]}")
    finally:
        for peer in peers:
            await peer.close()


async def test_paused_gateway_sockets_come_back(cluster: Cluster) -> None:
    """A gateway that misses heartbeats (SIGSTOP) is declared lost and its sockets dropped;
    when it resumes (SIGCONT), its sockets, still connected, are known again within a few
    heartbeats, whether or not they send anything."""
    gateway1 = cluster.parts[f"gateway-{cluster.gateway_ports[1]}"]
    alice = await user(cluster, 0, "u-alice", "alice")
    bob = await user(cluster, 1, "u-bob", "bob")
    peers = [alice, bob]
    try:
        assert (await alice.call("create room", {"roomId": "lobby", "roomName": "Lobby"}))[
            "success"]
        await join(alice, "lobby", [], 1)
        await join(bob, "lobby", [alice], 2)
        gateway1.signal(signal.SIGSTOP)
        try:
            assert await alice.next("user left", timeout=GATEWAY_TIMEOUT + 5) == {
                "socketId": bob.sid, "username": "bob", "roomId": "lobby", "userCount": 1}
        finally:
            gateway1.signal(signal.SIGCONT)
        assert await alice.next("user offline") == {"userId": "u-bob", "username": "bob"}
        assert bob.client.connected
        everyone = {"success": True, "users": [member(alice, "u-alice"), member(bob, "u-bob")]}
        await poll_until(lambda: alice.call("get online users"), lambda ack: ack == everyone,
                         "bob (idle, on the resumed gateway) listed again", GATEWAY_TIMEOUT + 3,
                         EVENT_POLL, retry_on=RETRY)
        info = await alice.call("get room info", "lobby")
        assert info["userCount"] == 2
        assert by_sid(info["users"]) == by_sid([member(alice, "u-alice"), member(bob, "u-bob")])
    finally:
        gateway1.signal(signal.SIGCONT)
        for peer in peers:
            await peer.close()


async def test_no_member_is_refused_while_membership_is_rebuilt(tmp_path: Path) -> None:
    """Between a room-service restart and its membership being rebuilt, a member's request
    may fail with ``service unavailable`` (retry later) but must never be answered as if
    the member were not one. Gateways heartbeat at the default interval (1 s) here, and
    rate limits are off so that the member can ask often.

    (It failed before the resync reply: requests reached the new instance as soon as the
    gateway's DEALER reconnected, before its SYNC, and got ``not a member of room lobby``.)"""
    cluster = start_chat_cluster(tmp_path, gateways=0, moderation_args=(
        "--event-limit", "0", "--user-event-limit", "0"))
    peers: list[QueuedPeer] = []
    try:
        for _ in range(2):
            cluster.start_gateway("--heartbeat-interval", "1")
        alice = await user(cluster, 0, "u-alice", "alice")
        bob = await user(cluster, 1, "u-bob", "bob")
        peers += [alice, bob]
        assert (await alice.call("create room", {"roomId": "lobby", "roomName": "Lobby"}))[
            "success"]
        await join(alice, "lobby", [], 1)
        await join(bob, "lobby", [alice], 2)
        line = await say(bob, "u-bob", "lobby", "before", [alice])
        history = {"success": True, "messages": [line]}

        cluster.parts["room"].kill()
        await until(services_up(cluster, ("room",), up=False),
                   "both gateways see the room service down", WAIT, in_thread=True,
                   retry_on=RETRY)
        restart(cluster, "room")
        answers: list[Any] = []
        deadline = time.monotonic() + RESTART_WAIT
        while time.monotonic() < deadline:
            answer = await alice.call("get history", {"roomId": "lobby"},
                                      timeout=REQUEST_TIMEOUT + 5)
            if not answers or answers[-1] != answer:
                answers.append(answer)
            if answer == history:
                break
            await asyncio.sleep(0.01)
        assert answers[-1] == history, answers
        assert all(answer in (UNAVAILABLE, history) for answer in answers), answers
    finally:
        for peer in peers:
            await peer.close()
        cluster.stop()
