"""End to end: namespace ``/admin`` of EVENTS.md (stats, broadcast, kick, ban, mute).

The admin and its targets sit on different gateways, so every action crosses the broker.
This module gets its own two-gateway cluster (``chat_cluster`` is module-scoped), which
makes the connection counts of ``get stats`` exact.
"""

from __future__ import annotations

import re
import time
from typing import Any

import socketio

from switchboard.shared.topics import gateway_of
from tests.integration.chat_helpers import (
    POLL_MAX_INTERVAL,
    POLL_TIMEOUT,
    ChatClient,
    Clients,
    assert_iso_utc,
    assert_keys,
    failed,
    policy_agreed,
    policy_applied,
    refusal,
    unique,
)
from tests.support.cluster import Cluster, token
from tests.support.polling import poll_until

STATS_KEYS = ("totalConnections", "chatConnections", "gameConnections", "adminConnections",
              "rooms", "gateways")
#: Additions of the room service to the contract's stats keys.
STATS_EXTRA = ("mainConnections", "namespaces", "timestamp")
MUTED = re.compile(r"^you are muted for (\d+) more seconds?$")


def online_sids(ack: dict[str, Any]) -> set[str]:
    return {user["socketId"] for user in ack["users"]}


def sockets_by_gateway(clients: Clients) -> dict[str, int]:
    """How many of the test's sockets each gateway serves (socket ids embed the gateway)."""
    counts: dict[str, int] = {}
    for client in clients.all:
        for ns in client.connected_namespaces:
            gateway = gateway_of(client.sid_of(ns))
            counts[gateway] = counts.get(gateway, 0) + 1
    return counts


async def test_get_stats_counts_the_whole_cluster(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("stats")
        # Gateway 0: two `/` sockets (one with /chat too) and an anonymous /game socket.
        alice = await clients.user(0, unique("alice"), "Alice")
        await clients.user(0, unique("bob"), "Bob", namespaces=("/", "/chat"))
        await clients.anonymous(0, ("/game",))
        # Gateway 1: one `/`, one /chat, and the admin.
        await clients.user(1, unique("carol"), "Carol")
        await clients.user(1, unique("dave"), "Dave", namespaces=("/chat",))
        admin = await clients.admin(1)
        assert await alice.call("create room", {"roomId": room, "roomName": "Stats",
                                                "maxUsers": 5}) == {"success": True,
                                                                    "roomId": room}
        assert (await alice.call("join room", room))["success"] is True

        expected = {"totalConnections": 7, "mainConnections": 3, "chatConnections": 2,
                    "gameConnections": 1, "adminConnections": 1}
        placed = sockets_by_gateway(clients)
        if chat_cluster.balancer_url is None:  # each client is on the gateway it dialled
            gw0, gw1 = await clients.gateway_id(0), await clients.gateway_id(1)
            assert placed == {gw0: 4, gw1: 3}

        def settled(ack: dict[str, Any]) -> bool:
            by_gateway = {g["id"]: g["connections"] for g in ack.get("gateways", [])
                          if g["connections"]}
            return {k: ack.get(k) for k in expected} == expected and by_gateway == placed

        await poll_until(lambda: admin.call("get stats", ns="/admin"), settled,
                         "cluster-wide stats", POLL_TIMEOUT, max_interval=POLL_MAX_INTERVAL)
        ack = await admin.call("get stats", ns="/admin")
        assert settled(ack), ack
        assert ack["success"] is True
        stats = {k: v for k, v in ack.items() if k != "success"}
        assert_keys(stats, STATS_KEYS, STATS_EXTRA)
        assert stats["namespaces"] == {"/": 3, "/admin": 1, "/chat": 2, "/game": 1}
        assert_iso_utc(stats["timestamp"])
        for gateway in stats["gateways"]:
            assert_keys(gateway, ("id", "connections", "uptime"))
            assert isinstance(gateway["uptime"], (int, float)) and gateway["uptime"] > 0
        ours = [r for r in stats["rooms"] if r["id"] == room]
        assert len(ours) == 1
        assert_keys(ours[0], ("id", "name", "userCount", "maxUsers", "createdAt"),
                    ("isPrivate",))
        assert ours[0] == {**ours[0], "name": "Stats", "userCount": 1, "maxUsers": 5}
        # The same object also comes as a `stats` event.
        assert await admin.wait_for("stats", lambda p: p == stats, ns="/admin") == stats

        # A socket closing is counted out, on its own gateway.
        gone = alice.gateway
        await alice.close()
        placed[gone] -= 1
        placed = {gw: n for gw, n in placed.items() if n}
        await poll_until(lambda: admin.call("get stats", ns="/admin"),
                         lambda s: s["mainConnections"] == 2 and s["totalConnections"] == 6
                         and {g["id"]: g["connections"] for g in s["gateways"]
                              if g["connections"]} == placed
                         and room not in [r["id"] for r in s["rooms"]],
                         "stats after a disconnect", POLL_TIMEOUT,
                         max_interval=POLL_MAX_INTERVAL)


async def test_broadcast_reaches_every_main_socket_on_both_gateways(chat_cluster: Cluster
                                                                    ) -> None:
    async with Clients(chat_cluster) as clients:
        admin = await clients.admin(0)
        near = await clients.user(0, unique("near"), "Near")
        far = await clients.user(1, unique("far"), "Far")
        chat_only = await clients.user(1, unique("chatter"), "Chatter", namespaces=("/chat",))

        ack = await admin.call("broadcast message", {"message": "<b>Maintenance</b> at noon"},
                               ns="/admin")
        assert ack == {"success": True}
        for client in (near, far):
            announcement = await client.next("system message")
            assert_keys(announcement, ("type", "content", "from", "timestamp"))
            assert announcement == {**announcement, "type": "announcement",
                                    "content": "Maintenance at noon", "from": "system"}
            assert_iso_utc(announcement["timestamp"])
        # Barrier for the /chat socket: its own line to all of /chat.
        await chat_only.call("chat message", {"content": "barrier"}, ns="/chat")
        await chat_only.next("chat message", ns="/chat")
        assert not chat_only.seen("system message", ns="/chat")
        assert not admin.seen("system message", ns="/admin")

        assert await admin.call("broadcast message", {"message": ""}, ns="/admin") == failed(
            "message: must be 1..1000 characters")


async def test_kick_disconnects_one_socket_on_the_other_gateway(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        admin = await clients.admin(0)
        victim_id = unique("victim")
        tab1 = await clients.user(1, victim_id, "Victim")
        tab2 = await clients.user(0, victim_id, "Victim")
        watcher = await clients.user(0, unique("watcher"), "Watcher")
        room = unique("kick")
        assert (await watcher.call("create room", {"roomId": room, "roomName": "K"}))["success"]
        assert (await watcher.call("join room", room))["success"]
        assert (await tab1.call("join room", room))["success"]
        tab1_sid, tab2_sid = tab1.sid, tab2.sid

        ack = await admin.call("kick user", {"socketId": tab1_sid, "reason": "spamming"},
                               ns="/admin")
        assert ack == {"success": True}
        assert await tab1.next("kicked") == {"reason": "spamming"}
        await tab1.wait_disconnected("/")
        assert not tab1.connected_namespaces
        left = await watcher.wait_for("user left", lambda p: p["socketId"] == tab1_sid)
        assert left == {"socketId": tab1_sid, "username": "Victim", "roomId": room,
                        "userCount": 1}

        # Only that socket: the user's other tab stays, and the user stays online.
        users = await poll_until(lambda: watcher.call("get online users"),
                                 lambda a: tab1_sid not in online_sids(a), "kicked socket gone",
                                 POLL_TIMEOUT, max_interval=POLL_MAX_INTERVAL)
        assert tab2_sid in online_sids(users)
        assert (await tab2.call("get online users"))["success"] is True
        assert not tab2.seen("kicked")
        assert not watcher.seen("user offline", predicate=lambda p: p["userId"] == victim_id)

        # A bare socket id works too, with the default reason.
        assert await admin.call("kick user", tab2_sid, ns="/admin") == {"success": True}
        assert await tab2.next("kicked") == {"reason": "kicked by an administrator"}
        await tab2.wait_disconnected("/")
        offline = await watcher.wait_for("user offline", lambda p: p["userId"] == victim_id)
        assert offline == {"userId": victim_id, "username": "Victim"}

        assert await admin.call("kick user", {"socketId": "nope"}, ns="/admin") == failed(
            "socketId: not a socket id")


async def test_ban_disconnects_every_socket_and_refuses_new_ones(chat_cluster: Cluster
                                                                ) -> None:
    async with Clients(chat_cluster) as clients:
        admin = await clients.admin(0)
        victim_id = unique("banned")
        both = await clients.user(0, victim_id, "Banned", namespaces=("/", "/chat"))
        other_gw = await clients.user(1, victim_id, "Banned")
        player = await clients.user(1, victim_id, "Banned", namespaces=("/game",))
        bystander = await clients.user(1, unique("bystander"), "Bystander")
        victims = [(both, "/"), (both, "/chat"), (other_gw, "/"), (player, "/game")]

        # No `seconds`: the ban lasts until lifted, so the refusals below are not a race.
        ack = await admin.call("ban user", {"userId": victim_id, "reason": "abuse"},
                               ns="/admin")
        assert ack == {"success": True}
        for client, ns in victims:
            assert await client.next("banned", ns=ns) == {"reason": "abuse"}
            await client.wait_disconnected(ns)
        for client in (both, other_gw, player):
            assert not client.connected_namespaces
        offline = await bystander.wait_for("user offline", lambda p: p["userId"] == victim_id)
        assert offline == {"userId": victim_id, "username": "Banned"}

        # New connections are refused, on either gateway, in every namespace.
        jwt = token(victim_id, "Banned")
        banned = {"message": "Banned"}
        assert await refusal(chat_cluster.url(1), "/", auth={"token": jwt}) == banned
        assert await refusal(chat_cluster.url(0), "/chat", auth={"token": jwt}) == banned
        assert await refusal(chat_cluster.url(0), "/game", auth={"token": jwt}) == banned
        # ... while the same person without a token may still watch games anonymously.
        assert (await clients.anonymous(1)).connected_namespaces == {"/game"}

        # Nobody else was touched.
        assert (await bystander.call("get online users"))["success"] is True
        assert bystander.connected_namespaces == {"/"}

        assert await admin.call("ban user", {"userId": admin.user_id, "reason": "oops"},
                                ns="/admin") == failed("userId: you cannot ban yourself")
        assert await admin.call("ban user", {"userId": victim_id}, ns="/admin") == failed(
            "reason: required")


async def test_temporary_ban_ends(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        admin = await clients.admin(1)
        victim_id = unique("benched")
        victim = await clients.user(0, victim_id, "Benched")
        seconds = 3
        ack = await admin.call("ban user", {"userId": victim_id, "reason": "cool down",
                                            "seconds": seconds}, ns="/admin")
        assert ack == {"success": True}
        banned_at = time.monotonic()
        assert await victim.next("banned") == {"reason": "cool down"}
        await victim.wait_disconnected("/")

        jwt = token(victim_id, "Benched")
        refusals: list[Any] = []

        async def try_connect() -> ChatClient | None:
            client = clients.new("returning", victim_id, "Benched")
            client.listen("/")
            try:
                return await client.connect(chat_cluster.url(1), ["/"], auth={"token": jwt})
            except socketio.exceptions.ConnectionError:
                refusals.append(await client.next("connect_error"))
                await client.close()
                return None

        back = await poll_until(try_connect, lambda c: c is not None, "reconnect after the ban",
                                seconds + 12, max_interval=POLL_MAX_INTERVAL)
        assert back is not None
        # The ban ended on the server's clock; from here it can only look a little shorter.
        assert time.monotonic() - banned_at > seconds - 1
        assert refusals and all(r == {"message": "Banned"} for r in refusals), refusals
        assert (await back.next("welcome"))["socketId"] == back.sid


async def test_mute_refuses_messages_of_that_user_only(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        admin = await clients.admin(0)
        muted_id = unique("muted")
        muted = await clients.user(1, muted_id, "Muted", namespaces=("/", "/chat"))
        other = await clients.user(0, unique("other"), "Other", namespaces=("/", "/chat"))
        room = unique("mute")
        assert (await other.call("create room", {"roomId": room, "roomName": "M"}))["success"]
        assert (await other.call("join room", room))["success"]
        assert (await muted.call("join room", room))["success"]

        before = await policy_agreed(chat_cluster, "mutes")
        assert await admin.call("mute user", {"userId": muted_id, "seconds": 60},
                                ns="/admin") == {"success": True}
        await policy_applied(chat_cluster, before, "mutes")  # on every gateway within 1 s

        def check_muted(ack: Any) -> None:
            assert ack["success"] is False, ack
            match = MUTED.match(ack["error"])
            assert match and 55 <= int(match.group(1)) <= 60, ack

        check_muted(await muted.call("chat message", {"content": "can you hear me"}))
        check_muted(await muted.call("chat message", {"content": "room?", "roomId": room}))
        check_muted(await muted.call("room message", {"roomId": room, "message": "hello"}))
        check_muted(await muted.call("private message", {"to": other.user_id,
                                                         "content": "psst"}))
        check_muted(await muted.call("chat message", {"content": "chat ns"}, ns="/chat"))
        check_muted(await muted.call("private message", {"to": other.user_id,
                                                         "content": "psst"}, ns="/chat"))
        await muted.emit("chat message", {"content": "no ack"})
        error = await muted.next("error")
        assert error["event"] == "chat message"
        check_muted({"success": False, "error": error["message"]})

        # Everything else still works for the muted user, and others may talk.
        assert (await muted.call("get online users"))["success"] is True
        sent = await other.call("chat message", {"content": "only me", "roomId": room})
        heard = await muted.next("chat message")
        assert heard["id"] == sent["messageId"] and heard["from"] == other.user_id
        # Barrier for `other`: a broadcast reaches it after anything the muted user sent.
        await admin.call("broadcast message", {"message": "barrier"}, ns="/admin")
        await other.next("system message")
        assert not other.seen("chat message") and not other.seen("room message")
        assert not other.seen("private message")
        assert not other.seen("private message", ns="/chat")

        assert await admin.call("mute user", {"userId": muted_id, "seconds": 0},
                                ns="/admin") == failed("seconds: must be 1..315360000")


async def test_mute_ends(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        admin = await clients.admin(0)
        muted = await clients.user(1, unique("hushed"), "Hushed")
        listener = await clients.user(0, unique("listener"), "Listener")
        before = await policy_agreed(chat_cluster, "mutes")
        assert await admin.call("mute user", {"userId": muted.user_id, "seconds": 2},
                                ns="/admin") == {"success": True}
        await policy_applied(chat_cluster, before, "mutes")
        ack = await muted.call("chat message", {"content": "first try"})
        assert ack in (failed("you are muted for 2 more seconds"),
                       failed("you are muted for 1 more second")), ack
        ack = await poll_until(lambda: muted.call("chat message", {"content": "later"}),
                               lambda a: a["success"], "the mute to end", POLL_TIMEOUT,
                               max_interval=POLL_MAX_INTERVAL)
        line = await listener.wait_for("chat message", lambda p: p["from"] == muted.user_id)
        assert line["id"] == ack["messageId"] and line["content"] == "later"
        assert not listener.seen("chat message", predicate=lambda p: p["content"] == "first try")


async def test_kick_of_a_chat_socket(chat_cluster: Cluster) -> None:
    """"That socket ... wherever it is": a /chat socket id is kicked too (the same client's
    ``/`` socket stays)."""
    async with Clients(chat_cluster) as clients:
        admin = await clients.admin(0)
        target = await clients.user(1, unique("chatter"), "Chatter", namespaces=("/", "/chat"))
        ack = await admin.call("kick user", {"socketId": target.sid_of("/chat"), "reason": "off"},
                               ns="/admin")
        assert ack == {"success": True}
        assert await target.next("kicked", ns="/chat") == {"reason": "off"}
        await target.wait_disconnected("/chat")
        assert target.connected_namespaces == {"/"}
        assert (await target.call("get online users"))["success"] is True
        assert not target.seen("kicked")
