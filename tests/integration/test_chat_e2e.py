"""End to end: namespaces ``/``, ``/chat`` and ``/game`` of EVENTS.md with python-socketio.

The whole application runs behind two gateways (separate processes, ``chat_cluster``);
clients are spread over both so that every delivery crosses the broker. Each test uses its
own user ids (the event rate limit is per user) and disconnects its clients at the end.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt as pyjwt
import pytest

from switchboard.shared.tokens import issue_token
from tests.integration.chat_helpers import (
    POLL_MAX_INTERVAL,
    POLL_TIMEOUT,
    ROOM_GRACE,
    WAIT,
    ChatClient,
    Clients,
    assert_iso_utc,
    assert_keys,
    failed,
    refusal,
    unique,
)
from tests.support.cluster import JWT_SECRET, Cluster, token
from tests.support.polling import poll_until

MESSAGE_KEYS = ("id", "from", "username", "content", "type", "roomId", "timestamp", "seq")
PRIVATE_KEYS = ("id", "from", "to", "content", "type", "timestamp")
ROOM_SUMMARY_KEYS = ("id", "name", "userCount", "maxUsers", "createdAt")
#: ``room info`` may say whether the room is private (an addition to the contract's keys).
ROOM_INFO_EXTRA = ("isPrivate",)
MEMBER_KEYS = ("id", "username", "socketId")
CONTENT_SIZE = "content: must be 1..1000 characters"


def member(client: ChatClient) -> dict[str, Any]:
    """How a client appears in ``users`` lists (``room joined``, ``get online users``)."""
    return {"id": client.user_id, "username": client.username, "socketId": client.sid}


async def create_room(owner: ChatClient, room_id: str, name: str = "Room", **fields: Any
                      ) -> None:
    ack = await owner.call("create room", {"roomId": room_id, "roomName": name, **fields})
    assert ack == {"success": True, "roomId": room_id}


async def join(client: ChatClient, room_id: str, password: str | None = None) -> dict[str, Any]:
    """Join; returns the ``room joined`` payload."""
    payload: dict[str, Any] = {"roomId": room_id}
    if password is not None:
        payload["password"] = password
    assert await client.call("join room", payload) == {"success": True, "roomId": room_id}
    return await client.next("room joined")


# -- connecting ------------------------------------------------------------------------------


async def test_welcome_and_presence_across_gateways(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        alice = await clients.user(0, unique("alice"), "Alice")
        bob_id = unique("bob")
        bob = await clients.user(1, bob_id, "Bob")

        welcome = await bob.next("welcome")
        assert_keys(welcome, ("message", "socketId", "serverId", "timestamp"))
        assert welcome["socketId"] == bob.sid
        assert welcome["serverId"] == bob.gateway
        assert welcome["socketId"].startswith(bob.gateway + ".")
        if chat_cluster.balancer_url is None:  # each client is on the gateway it dialled
            gw0, gw1 = await clients.gateway_id(0), await clients.gateway_id(1)
            assert gw0 != gw1 and (alice.gateway, bob.gateway) == (gw0, gw1)
        assert isinstance(welcome["message"], str) and welcome["message"]
        assert_iso_utc(welcome["timestamp"])
        assert (await alice.next("welcome"))["serverId"] == alice.gateway

        # Alice (gateway 0) hears that Bob (gateway 1) came online; Bob does not hear himself.
        online = await alice.wait_for("user online", lambda p: p["userId"] == bob_id)
        assert online == {"userId": bob_id, "username": "Bob"}
        barrier = await alice.call("chat message", {"content": "hi bob"})
        await bob.wait_for("chat message", lambda p: p["id"] == barrier["messageId"])
        assert not bob.seen("user online", predicate=lambda p: p["userId"] == bob_id)


async def test_second_tab_is_not_news_and_last_tab_goes_offline(chat_cluster: Cluster) -> None:
    """Presence is per user (room service choice): one ``user online`` / ``user offline``."""
    async with Clients(chat_cluster) as clients:
        alice = await clients.user(0, unique("alice"), "Alice")
        bob_id = unique("bob")
        room = unique("presence")
        bob_tab1 = await clients.user(1, bob_id, "Bob")
        await alice.wait_for("user online", lambda p: p["userId"] == bob_id)
        bob_tab2 = await clients.user(0, bob_id, "Bob")
        await create_room(alice, room)
        await join(alice, room)
        await join(bob_tab1, room)
        tab1_sid = bob_tab1.sid

        await bob_tab1.close()
        # The disconnect leaves the room: Alice gets `user left` (the same departure would
        # have announced `user offline` right after it, had it been Bob's last socket).
        left = await alice.wait_for("user left", lambda p: p["socketId"] == tab1_sid)
        assert left == {"socketId": tab1_sid, "username": "Bob", "roomId": room, "userCount": 1}
        # Barrier: a line published after that departure was handled.
        await bob_tab2.call("chat message", {"content": "still here"})
        await alice.wait_for("chat message", lambda p: p["content"] == "still here")
        assert not alice.seen("user offline", predicate=lambda p: p["userId"] == bob_id)

        await bob_tab2.close()
        offline = await alice.wait_for("user offline", lambda p: p["userId"] == bob_id)
        assert offline == {"userId": bob_id, "username": "Bob"}
        assert len(alice.seen("user online", predicate=lambda p: p["userId"] == bob_id)) == 1
        assert len(alice.seen("user offline", predicate=lambda p: p["userId"] == bob_id)) == 1


async def test_connect_refusals(chat_cluster: Cluster) -> None:
    url = chat_cluster.url(0)
    no_token = {"message": "Authentication error: No token provided"}
    invalid = {"message": "Authentication error: Invalid token"}
    assert await refusal(url, "/") == no_token
    assert await refusal(chat_cluster.url(1), "/chat") == no_token
    assert await refusal(url, "/", auth={"token": ""}) == no_token

    expired = issue_token(JWT_SECRET, unique("late"), "Late", ttl=60, now=time.time() - 3600)
    assert await refusal(url, "/", auth={"token": expired}) == invalid
    forged = issue_token("another-secret-0123456789-0123456789-x", unique("forger"), "F")
    assert await refusal(chat_cluster.url(1), "/", auth={"token": forged}) == invalid
    assert await refusal(url, "/", auth={"token": "not.a.jwt"}) == invalid
    assert await refusal(url, "/chat", headers={"Authorization": "Bearer garbage"}) == invalid
    assert await refusal(url, "/", auth={"token": 42}) == invalid

    user = token(unique("plain"), "Plain")
    denied = {"message": "Access denied: admin role required"}
    assert await refusal(url, "/admin", auth={"token": user}) == denied
    assert await refusal(chat_cluster.url(1), "/admin") == no_token


async def test_token_in_authorization_header(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        carol_id = unique("carol")
        carol = await clients.user(1, carol_id, "Carol", via_header=True,
                                   namespaces=("/", "/chat"))
        assert (await carol.next("welcome"))["socketId"] == carol.sid
        assert carol.connected_namespaces == {"/", "/chat"}
        users = (await carol.call("get online users"))["users"]
        assert member(carol) in users


async def test_token_claims(chat_cluster: Cluster) -> None:
    """``userId`` or ``sub``; ``username`` defaults to the id; ``exp`` is required."""
    now = int(time.time())
    sub_only = unique("sub")
    bare = unique("bare")
    async with Clients(chat_cluster) as clients:
        first = clients.new("sub-only", sub_only, "Subby")
        await first.connect(chat_cluster.url(0), auth={"token": pyjwt.encode(
            {"sub": sub_only, "username": "Subby", "exp": now + 600}, JWT_SECRET)})
        second = clients.new("no-username", bare, bare)
        await second.connect(chat_cluster.url(1), auth={"token": pyjwt.encode(
            {"userId": bare, "exp": now + 600}, JWT_SECRET)})
        users = (await first.call("get online users"))["users"]
        assert member(first) in users and member(second) in users

    invalid = {"message": "Authentication error: Invalid token"}
    no_exp = pyjwt.encode({"userId": unique("forever"), "username": "F"}, JWT_SECRET)
    assert await refusal(chat_cluster.url(0), "/", auth={"token": no_exp}) == invalid
    unsigned = pyjwt.encode({"userId": unique("none"), "exp": now + 600}, "",
                            algorithm="none")
    assert await refusal(chat_cluster.url(1), "/", auth={"token": unsigned}) == invalid


# -- namespace / : messages ------------------------------------------------------------------


async def test_set_username_is_used_by_later_events(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        dave_id = unique("dave")
        dave = await clients.user(0, dave_id, "Dave")
        erin = await clients.user(1, unique("erin"), "Erin")
        ack = await dave.call("set username", "  Dave the <b>Brave</b> ")
        assert ack["success"] is True
        dave.username = "Dave the Brave"

        sent = await dave.call("chat message", {"content": "hi"})
        line = await erin.wait_for("chat message", lambda p: p["content"] == "hi")
        assert sent == {"success": True, "messageId": line["id"]}
        assert line["username"] == "Dave the Brave" and line["from"] == dave_id

        users = (await erin.call("get online users"))["users"]
        assert member(dave) in users

        assert await dave.call("set username", "") == failed(
            "username: must be 1..50 characters")
        assert await dave.call("set username", "x" * 51) == failed(
            "username: must be 1..50 characters")

        room = unique("names")
        await create_room(dave, room)
        await join(dave, room)
        assert (await join(erin, room))["users"] == [member(dave), member(erin)]
        dave_sid = dave.sid
        await dave.close()
        left = await erin.wait_for("user left", lambda p: p["socketId"] == dave_sid)
        assert left["username"] == "Dave the Brave"
        offline = await erin.wait_for("user offline", lambda p: p["userId"] == dave_id)
        assert offline == {"userId": dave_id, "username": "Dave the Brave"}


async def test_chat_message_to_room_members_on_the_other_gateway(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("room")
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        carol = await clients.user(1, unique("carol"), "Carol")  # not a member, gateway 1
        dave = await clients.user(0, unique("dave"), "Dave")  # not a member, gateway 0
        await create_room(alice, room, "Members")
        await join(alice, room)
        await join(bob, room)

        ack = await alice.call("chat message", {
            "roomId": room, "content": "  hello <img src=x onerror=alert(1)><script>x()</script>",
            "color": "red"})
        assert ack["success"] is True and isinstance(ack["messageId"], str)
        line = await bob.next("chat message")
        assert_keys(line, MESSAGE_KEYS)
        assert line == {**line, "id": ack["messageId"], "from": alice.user_id,
                        "username": "Alice", "content": "hello", "type": "text",
                        "roomId": room, "seq": 1}  # the room's first message
        assert_iso_utc(line["timestamp"])

        image = await bob.call("chat message", {"roomId": room, "content": "cat.png",
                                                "type": "image"})
        assert (await alice.next("chat message"))["type"] == "image"
        assert image["success"] is True

        # Barrier: a namespace-wide line from Carol (no roomId) reaches everyone else.
        everyone = await carol.call("chat message", {"content": "to everyone"})
        for client in (alice, bob, dave):
            wide = await client.wait_for("chat message", lambda p: p["content"] == "to everyone")
            assert wide["roomId"] is None and wide["id"] == everyone["messageId"]
            assert wide["from"] == carol.user_id and wide["username"] == "Carol"
        # ... and nothing of the room line reached non-members or the sender.
        for client in (carol, dave):
            assert not client.seen("chat message", predicate=lambda p: p["roomId"] == room)
        assert not alice.seen("chat message", predicate=lambda p: p["content"] == "hello")
        # Carol's own namespace line is not echoed to her.
        barrier = await dave.call("chat message", {"content": "barrier"})
        assert (await carol.wait_for("chat message", lambda p: p["content"] == "barrier"))[
            "id"] == barrier["messageId"]
        assert not carol.seen("chat message", predicate=lambda p: p["content"] == "to everyone")

        # The sender must be a member of roomId.
        assert await carol.call("chat message", {"roomId": room, "content": "let me in"}) == \
            failed(f"not a member of room {room}")


async def test_events_of_one_socket_are_handled_in_order(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("order")
        alice = await clients.user(1, unique("alice"), "Alice")
        bob = await clients.user(0, unique("bob"), "Bob")
        await create_room(alice, room, "Order")
        await join(alice, room)
        await join(bob, room)
        acks: list[Any] = []
        # Ten lines sent back to back, none waiting for the previous one's ack.
        for i in range(10):
            await alice.client.emit("chat message", {"roomId": room, "content": f"n{i}"},
                                    callback=lambda ack: acks.append(ack))
        lines = [await bob.next("chat message") for _ in range(10)]
        assert [line["content"] for line in lines] == [f"n{i}" for i in range(10)]
        await poll_until(lambda: _ready(acks), lambda n: n == 10, "ten acks", POLL_TIMEOUT,
                         max_interval=POLL_MAX_INTERVAL)
        assert [ack["messageId"] for ack in acks] == [line["id"] for line in lines]
        history = await bob.call("get history", {"roomId": room})
        assert [m["id"] for m in history["messages"]] == [line["id"] for line in lines]


async def _ready(items: list[Any]) -> int:
    return len(items)


async def test_payload_validation_errors(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        bad = [
            ("chat message", {"content": ""}, CONTENT_SIZE),
            ("chat message", {"content": "x" * 1001}, CONTENT_SIZE),
            ("chat message", {"content": "<b></b>  "},
             "content: must contain text (HTML and surrounding spaces removed)"),
            ("chat message", {"content": "hi", "type": "video"},
             "type: must be text, image or file"),
            ("create room", {"roomName": "No id"}, "roomId: required"),
            ("create room", {"roomId": unique("p"), "roomName": "Secret", "isPrivate": True},
             "password: required for a private room"),
            ("create room", {"roomId": unique("z"), "roomName": "Zero", "maxUsers": 0},
             "maxUsers: must be 1..1000"),
            ("create room", {"roomId": unique("b"), "roomName": "Big", "maxUsers": 1001},
             "maxUsers: must be 1..1000"),
            ("private message", {"to": bob.user_id}, "content: required"),
        ]
        for event, payload, error in bad:
            assert await alice.call(event, payload) == failed(error), (event, payload)
        # Without an ack callback the same error comes as an `error` event.
        for event, payload, error in bad:
            await alice.emit(event, payload)
            assert await alice.next("error") == {"event": event, "message": error}

        # 1000 characters are fine; bad payloads reached no one (the barrier is after them).
        ok = await alice.call("chat message", {"content": "y" * 1000})
        assert ok["success"] is True
        assert (await bob.next("chat message"))["id"] == ok["messageId"]
        assert not bob.seen("private message")
        assert bob.unread("chat message") == 0


async def test_private_message_reaches_every_socket_of_the_user(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        alice = await clients.user(0, unique("alice"), "Alice")
        bob_id = unique("bob")
        bob_gw1 = await clients.user(1, bob_id, "Bob")
        bob_gw0 = await clients.user(0, bob_id, "Bob")

        ack = await alice.call("private message", {"to": bob_id, "content": "psst <i>hi</i>"})
        assert ack["success"] is True and isinstance(ack["messageId"], str)
        for tab in (bob_gw1, bob_gw0):
            private = await tab.next("private message")
            assert_keys(private, PRIVATE_KEYS)
            assert private == {**private, "id": ack["messageId"], "from": alice.user_id,
                               "to": bob_id, "content": "psst hi", "type": "private"}
            assert_iso_utc(private["timestamp"])

        nobody = unique("nobody")
        assert await alice.call("private message", {"to": nobody, "content": "hello?"}) == \
            failed("user not online")
        await alice.emit("private message", {"to": nobody, "content": "hello?"})
        assert await alice.next("error") == {"event": "private message",
                                             "message": "user not online"}
        # Barrier: Bob answers; Alice got nothing but the answer.
        await bob_gw0.call("private message", {"to": alice.user_id, "content": "yes?"})
        assert (await alice.next("private message"))["content"] == "yes?"
        assert len(alice.seen("private message")) == 1


# -- namespace / : rooms ---------------------------------------------------------------------


async def test_room_lifecycle_join_leave_and_deletion(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("life")
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        await create_room(alice, room, " <i>Life</i> ")  # room names are sanitised too
        assert await bob.call("create room", {"roomId": room, "roomName": "Again"}) == \
            failed("room already exists")

        joined = await join(alice, room)
        assert joined == {"roomId": room, "roomName": "Life", "userCount": 1,
                          "users": [member(alice)]}
        joined = await join(bob, room)
        assert joined == {"roomId": room, "roomName": "Life", "userCount": 2,
                          "users": [member(alice), member(bob)]}
        notice = await alice.next("user joined")
        assert notice == {"socketId": bob.sid, "username": "Bob", "roomId": room,
                          "userCount": 2}

        info = await bob.call("get room info", room)
        assert_keys(info, (*ROOM_SUMMARY_KEYS, "users"), ROOM_INFO_EXTRA)
        assert info["userCount"] == 2 and info["users"] == [member(alice), member(bob)]

        assert await bob.call("leave room", room) == {"success": True, "roomId": room}
        notice = await alice.next("user left")
        assert notice == {"socketId": bob.sid, "username": "Bob", "roomId": room,
                          "userCount": 1}
        assert await bob.call("leave room", room) == failed(f"not a member of room {room}")
        assert not bob.seen("user left")
        # Left means left: a line to the room right after the ack does not reach Bob.
        await alice.call("chat message", {"roomId": room, "content": "bob is gone"})
        barrier = await alice.call("chat message", {"content": "barrier"})
        await bob.wait_for("chat message", lambda p: p["id"] == barrier["messageId"])
        assert not bob.seen("chat message", predicate=lambda p: p["roomId"] == room)

        # The last member leaves: the room stays, empty, for its grace period, then goes.
        left_at = time.monotonic()
        assert await alice.call("leave room", room) == {"success": True, "roomId": room}
        info = await bob.call("get room info", room)
        assert info is not None and (info["userCount"], info["users"]) == (0, [])
        await poll_until(lambda: bob.call("get room info", room), lambda i: i is None,
                         "the empty room to be deleted", ROOM_GRACE + POLL_TIMEOUT,
                         max_interval=POLL_MAX_INTERVAL)
        assert time.monotonic() - left_at >= ROOM_GRACE - 0.05, "deleted before its grace"
        assert await alice.call("leave room", room) == failed("room not found")
        assert await bob.call("join room", {"roomId": room}) == failed("room not found")
        assert await bob.next("room error") == {"message": "room not found"}
        rooms = (await bob.call("get rooms"))["rooms"]
        assert room not in [r["id"] for r in rooms]


async def test_join_refusals_fail_the_ack_and_emit_room_error(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        secret, tiny = unique("secret"), unique("tiny")
        await create_room(alice, secret, "Secret", isPrivate=True, password="s3cret!")
        await create_room(alice, tiny, "Tiny", maxUsers=1)

        cases = [
            ({"roomId": unique("missing")}, "room not found"),
            ({"roomId": secret}, "wrong password"),
            ({"roomId": secret, "password": "guess"}, "wrong password"),
        ]
        for payload, error in cases:
            assert await bob.call("join room", payload) == failed(error)
            assert await bob.next("room error") == {"message": error}
        await join(alice, tiny)
        assert await bob.call("join room", {"roomId": tiny}) == failed("room is full")
        assert await bob.next("room error") == {"message": "room is full"}
        # Without an ack: the `error` event and the `room error` event.
        await bob.emit("join room", {"roomId": tiny})
        assert await bob.next("error") == {"event": "join room", "message": "room is full"}
        assert await bob.next("room error") == {"message": "room is full"}

        joined = await join(bob, secret, password="s3cret!")
        assert joined["roomName"] == "Secret" and joined["userCount"] == 1
        assert not alice.seen("user joined")  # refused joins told nobody; Alice is not in it
        info = await bob.call("get room info", tiny)
        assert info["userCount"] == 1 and info["users"] == [member(alice)]


async def test_room_message_is_for_members_only(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("talk")
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        carol = await clients.user(1, unique("carol"), "Carol")
        await create_room(alice, room, "Talk")
        await join(alice, room)
        await join(bob, room)

        ack = await alice.call("room message", {"roomId": room,
                                                "message": "<em>quiet</em> please"})
        assert ack["success"] is True
        relay = await bob.next("room message")
        assert_keys(relay, ("from", "username", "message", "roomId", "timestamp"))
        assert relay == {**relay, "from": alice.user_id, "username": "Alice",
                         "message": "quiet please", "roomId": room}
        assert_iso_utc(relay["timestamp"])

        assert await carol.call("room message", {"roomId": room, "message": "hi"}) == \
            failed(f"not a member of room {room}")
        # Barrier: a line to the room from Bob reaches Alice; Carol and Alice saw nothing else.
        await bob.call("room message", {"roomId": room, "message": "ok"})
        assert (await alice.next("room message"))["message"] == "ok"
        assert not carol.seen("room message") and len(alice.seen("room message")) == 1
        assert len(bob.seen("room message")) == 1


async def test_get_rooms_lists_public_rooms_and_room_info(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        public, private = unique("pub"), unique("priv")
        await create_room(alice, public, "Public", maxUsers=7)
        await create_room(alice, private, "Private", isPrivate=True, password="pw")
        await join(alice, public)

        listing = await bob.call("get rooms")
        assert listing["success"] is True and isinstance(listing["rooms"], list)
        ours = [r for r in listing["rooms"] if r["id"] in (public, private)]
        assert len(ours) == 1
        assert_keys(ours[0], ROOM_SUMMARY_KEYS)
        assert ours[0] == {**ours[0], "id": public, "name": "Public", "userCount": 1,
                           "maxUsers": 7}
        assert_iso_utc(ours[0]["createdAt"])
        # Without an ack the list comes as a `room list` event (and only then: the call
        # above brought none, or it would be read first from the same connection).
        await bob.emit("get rooms")
        emitted = await bob.wait_for("room list",
                                     lambda p: public in [r["id"] for r in p["rooms"]])
        assert private not in [r["id"] for r in emitted["rooms"]]
        assert len(bob.seen("room list")) == 1

        info = await bob.call("get room info", {"roomId": public})
        assert_keys(info, (*ROOM_SUMMARY_KEYS, "users"), ROOM_INFO_EXTRA)
        assert info == {**info, "id": public, "name": "Public", "userCount": 1, "maxUsers": 7,
                        "createdAt": ours[0]["createdAt"], "users": [member(alice)]}
        await bob.emit("get room info", public)
        assert await bob.wait_for("room info", lambda p: p is not None and p.get(
            "users")) == info
        assert len(bob.seen("room info")) == 1  # the call before it brought none
        assert await bob.call("get room info", unique("none")) is None
        # A private room's existence is not secret; who is in it is (room service choice).
        hidden = await bob.call("get room info", private)
        assert hidden["id"] == private and hidden["users"] == []


async def test_get_online_users_across_both_gateways(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        ack = await alice.call("get online users")
        assert ack["success"] is True
        for entry in ack["users"]:
            assert_keys(entry, MEMBER_KEYS)
        assert member(alice) in ack["users"] and member(bob) in ack["users"]
        assert (await bob.call("get online users"))["users"] == ack["users"]
        # A /chat-only socket is not a `/` user.
        carol = await clients.user(1, unique("carol"), "Carol", namespaces=("/chat",))
        users = (await alice.call("get online users"))["users"]
        assert carol.user_id not in [u["id"] for u in users]


async def test_get_history_newest_last_with_limit_and_before(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("hist")
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        carol = await clients.user(1, unique("carol"), "Carol")
        await create_room(alice, room, "History")
        await join(alice, room)
        await join(bob, room)
        ids = []
        for i in range(5):
            sender = alice if i % 2 == 0 else bob
            ack = await sender.call("chat message", {"roomId": room, "content": f"line {i}"})
            ids.append(ack["messageId"])
        # A namespace-wide line is not part of the room's history.
        await alice.call("chat message", {"content": "elsewhere"})

        history = await bob.call("get history", {"roomId": room})
        assert history["success"] is True
        messages = history["messages"]
        assert [m["id"] for m in messages] == ids
        assert [m["content"] for m in messages] == [f"line {i}" for i in range(5)]
        for m in messages:
            assert_keys(m, MESSAGE_KEYS)
            assert m["roomId"] == room and m["type"] == "text"
            assert_iso_utc(m["timestamp"])
        assert messages[1]["from"] == bob.user_id and messages[1]["username"] == "Bob"

        last2 = await alice.call("get history", {"roomId": room, "limit": 2})
        assert [m["id"] for m in last2["messages"]] == ids[3:]
        before = await alice.call("get history", {"roomId": room, "before": ids[2]})
        assert [m["id"] for m in before["messages"]] == ids[:2]
        page = await alice.call("get history", {"roomId": room, "before": ids[2], "limit": 1})
        assert [m["id"] for m in page["messages"]] == ids[1:2]

        # `before` may also be an ISO-8601 timestamp.
        past = await alice.call("get history", {"roomId": room, "before": "2000-01-01T00:00:00Z"})
        assert past == {"success": True, "messages": []}
        future = await alice.call("get history", {"roomId": room,
                                                  "before": "2999-01-01T00:00:00.000Z"})
        assert [m["id"] for m in future["messages"]] == ids

        assert await alice.call("get history", {"roomId": room, "limit": 101}) == failed(
            "limit: must be 1..100")
        assert await carol.call("get history", {"roomId": room}) == failed(
            f"not a member of room {room}")


async def test_get_history_before_a_numeric_timestamp(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("epoch")
        alice = await clients.user(0, unique("alice"), "Alice")
        await create_room(alice, room, "Epoch")
        await join(alice, room)
        sent = await alice.call("chat message", {"roomId": room, "content": "then"})
        # Milliseconds since the epoch (JavaScript's Date.now()), an hour from now.
        later = int(time.time() * 1000) + 3_600_000
        history = await alice.call("get history", {"roomId": room, "before": later})
        assert history["success"] is True, history
        assert [m["id"] for m in history["messages"]] == [sent["messageId"]]


async def test_disconnect_leaves_rooms_and_goes_offline(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("bye")
        alice = await clients.user(0, unique("alice"), "Alice")
        bob = await clients.user(1, unique("bob"), "Bob")
        await create_room(alice, room, "Bye")
        await join(alice, room)
        await join(bob, room)
        bob_sid = bob.sid

        await bob.close()
        left = await alice.wait_for("user left", lambda p: p["socketId"] == bob_sid)
        assert left == {"socketId": bob_sid, "username": "Bob", "roomId": room, "userCount": 1}
        offline = await alice.wait_for("user offline", lambda p: p["userId"] == bob.user_id)
        assert offline == {"userId": bob.user_id, "username": "Bob"}
        info = await alice.call("get room info", room)
        assert info["userCount"] == 1 and info["users"] == [member(alice)]
        users = (await alice.call("get online users"))["users"]
        assert bob.user_id not in [u["id"] for u in users]

        # The last member disconnecting empties it too: deleted after its grace.
        observer = await clients.user(1, unique("observer"), "Observer")
        await alice.close()
        await poll_until(lambda: observer.call("get room info", room), lambda info: info is None,
                         "the empty room to be deleted", ROOM_GRACE + POLL_TIMEOUT,
                         max_interval=POLL_MAX_INTERVAL)


async def test_user_count_counts_sockets(chat_cluster: Cluster) -> None:
    """Two tabs of one user take two places (room service choice: rooms are socket sets)."""
    async with Clients(chat_cluster) as clients:
        room = unique("tabs")
        tab1 = await clients.user(0, unique("tabby"), "Tabby")
        assert tab1.user_id is not None
        tab2 = await clients.user(1, tab1.user_id, "Tabby")
        other = await clients.user(1, unique("other"), "Other")
        await create_room(tab1, room, "Tabs", maxUsers=2)
        await join(tab1, room)
        joined = await join(tab2, room)
        assert joined["userCount"] == 2 and joined["users"] == [member(tab1), member(tab2)]
        assert await tab1.next("user joined") == {"socketId": tab2.sid, "username": "Tabby",
                                                  "roomId": room, "userCount": 2}
        assert await other.call("join room", room) == failed("room is full")
        # Joining again is not a second place.
        assert await tab2.call("join room", room) == {"success": True, "roomId": room}
        assert (await tab2.next("room joined"))["userCount"] == 2


# -- namespace /chat -------------------------------------------------------------------------


async def test_chat_namespace_messages(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        ns = "/chat"
        alice = await clients.user(0, unique("alice"), "Alice", namespaces=(ns,))
        bob = await clients.user(1, unique("bob"), "Bob", namespaces=(ns,))
        main_only = await clients.user(1, unique("main"), "Main")  # `/` only: hears nothing

        ack = await alice.call("chat message", {"content": "all of <u>chat</u>"}, ns=ns)
        assert ack["success"] is True
        for client in (bob, alice):  # "to all of /chat": the sender too
            line = await client.next("chat message", ns=ns)
            assert_keys(line, MESSAGE_KEYS)
            assert line == {**line, "id": ack["messageId"], "from": alice.user_id,
                            "username": "Alice", "content": "all of chat", "type": "text",
                            "roomId": None, "seq": None}  # no room: no number
            assert_iso_utc(line["timestamp"])

        # With a roomId only that room's members hear it: nobody has joined "side".
        side = await bob.call("chat message", {"content": "aside", "roomId": unique("side")},
                              ns=ns)
        assert side["success"] is True
        barrier = await bob.call("chat message", {"content": "barrier"}, ns=ns)
        line = await alice.next("chat message", ns=ns)
        assert line["id"] == barrier["messageId"]
        assert (await bob.next("chat message", ns=ns))["id"] == barrier["messageId"]
        assert not main_only.seen("chat message")
        assert await alice.call("chat message", {"content": "x", "roomId": f"user:{bob.user_id}"},
                                ns=ns) == failed("roomId: " + _ID_CHARS_HELP)


_ID_CHARS_HELP = "use letters, digits, spaces and - _ . # @ + only"


async def test_chat_namespace_private_message_and_message_sent(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        ns = "/chat"
        alice = await clients.user(0, unique("alice"), "Alice", namespaces=(ns,))
        bob_id = unique("bob")
        bob_gw1 = await clients.user(1, bob_id, "Bob", namespaces=(ns,))
        bob_gw0 = await clients.user(0, bob_id, "Bob", namespaces=(ns,))
        eve = await clients.user(1, unique("eve"), "Eve", namespaces=(ns,))

        ack = await alice.call("private message", {"to": bob_id, "content": "for bob"}, ns=ns)
        assert ack["success"] is True and isinstance(ack["messageId"], str)
        assert await alice.next("message sent", ns=ns) == {"messageId": ack["messageId"]}
        for tab in (bob_gw1, bob_gw0):
            private = await tab.next("private message", ns=ns)
            assert_keys(private, PRIVATE_KEYS)
            assert private == {**private, "id": ack["messageId"], "from": alice.user_id,
                               "to": bob_id, "content": "for bob", "type": "private"}
            assert_iso_utc(private["timestamp"])
        # Without an ack the sender still gets `message sent`.
        await alice.emit("private message", {"to": bob_id, "content": "again"}, ns=ns)
        sent = await alice.next("message sent", ns=ns)
        again = await bob_gw1.next("private message", ns=ns)
        assert sent == {"messageId": again["id"]}
        # Barrier for Eve: a /chat line to all.
        await bob_gw0.call("chat message", {"content": "barrier"}, ns=ns)
        await eve.wait_for("chat message", lambda p: p["content"] == "barrier", ns=ns)
        assert not eve.seen("private message", ns=ns)
        assert not alice.seen("private message", ns=ns)


# -- namespace /game -------------------------------------------------------------------------


async def test_game_two_players_on_different_gateways(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        ns = "/game"
        game = unique("ttt")
        x_player = await clients.anonymous(0)  # anonymous allowed in /game
        o_id = unique("olga")
        o_player = await clients.user(1, o_id, "Olga", namespaces=(ns,))
        watcher = await clients.anonymous(1)
        x_sid = x_player.sid_of(ns)

        joined = await x_player.call("join game", game, ns=ns)
        assert_keys(joined, ("success", "gameId", "role", "state"))
        assert joined["success"] is True and joined["gameId"] == game and joined["role"] == "X"
        assert joined["state"]["status"] == "waiting"
        joined = await o_player.call("join game", {"gameId": game}, ns=ns)
        assert joined["role"] == "O" and joined["state"]["status"] == "playing"
        assert await x_player.next("player joined", ns=ns) == {"playerId": o_id, "gameId": game}
        assert joined["state"]["players"] == {"X": x_sid, "O": o_id}

        def after(moves: int):
            return lambda state: state["moveCount"] == moves

        # X: 0, 1, 2 wins the top row; O: 3, 4.
        for moves, (player, cell) in enumerate(
            [(x_player, 0), (o_player, 3), (x_player, 1), (o_player, 4), (x_player, 2)], 1
        ):
            ack = await player.call("game action", {"gameId": game, "action": "move",
                                                    "cell": cell}, ns=ns)
            assert ack["success"] is True and ack["state"]["moveCount"] == moves
            for client in (x_player, o_player):
                update = await client.wait_for("game update", after(moves), ns=ns)
                assert update == ack["state"]
            if moves == 1:
                assert await o_player.call("game action", {"gameId": game, "action": "move",
                                                           "cell": 0}, ns=ns) == failed(
                    "cell already taken")
                assert await x_player.call("game action", {"gameId": game, "action": "move",
                                                           "cell": 5}, ns=ns) == failed(
                    "not your turn")
        final = ack["state"]
        assert_keys(final, ("gameId", "board", "turn", "players", "winner", "draw", "line",
                            "moveCount", "status"))
        assert final == {"gameId": game, "board": ["X", "X", "X", "O", "O", None, None, None,
                                                   None],
                         "turn": None, "players": {"X": x_sid, "O": o_id}, "winner": "X",
                         "draw": False, "line": [0, 1, 2], "moveCount": 5, "status": "won"}
        assert await o_player.call("game action", {"gameId": game, "action": "move",
                                                   "cell": 8}, ns=ns) == failed("game is over")
        assert await o_player.call("game action", {"gameId": unique("nogame"), "action": "move",
                                                   "cell": 8}, ns=ns) == failed("game not found")

        spectating = await watcher.call("join game", game, ns=ns)
        assert spectating["role"] == "spectator" and spectating["state"] == final
        watcher_sid = watcher.sid_of(ns)
        for client in (x_player, o_player):
            assert await client.wait_for("player joined", lambda p: p["playerId"] == watcher_sid,
                                         ns=ns) == {"playerId": watcher_sid, "gameId": game}
        assert await watcher.call("game action", {"gameId": game, "action": "rematch"},
                                  ns=ns) == failed("you are not a player in this game")

        o_sid = o_player.sid_of(ns)
        await o_player.close()
        gone = await x_player.wait_for("player disconnected", lambda p: p == o_sid, ns=ns)
        assert gone == o_sid
        await watcher.wait_for("player disconnected", lambda p: p == o_sid, ns=ns)


# -- concurrency -----------------------------------------------------------------------------


async def test_fifty_clients_race_for_ten_places(chat_cluster: Cluster) -> None:
    async with Clients(chat_cluster) as clients:
        room = unique("race")
        owner = await clients.user(0, unique("owner"), "Owner")
        await create_room(owner, room, "Race", maxUsers=10)
        racers = await asyncio.gather(*(
            clients.user(i % 2, unique(f"racer{i}"), f"Racer {i}") for i in range(50)
        ))
        if chat_cluster.balancer_url is None:
            gw0 = await clients.gateway_id(0)
            assert sum(c.gateway == gw0 for c in racers) == 25
        else:  # the balancer spreads them
            assert len({c.gateway for c in racers}) > 1

        acks = await asyncio.gather(*(c.call("join room", {"roomId": room}) for c in racers))
        winners = [c for c, ack in zip(racers, acks, strict=True) if ack.get("success")]
        losers = [c for c, ack in zip(racers, acks, strict=True) if not ack.get("success")]
        assert len(winners) == 10 and len(losers) == 40
        for ack in acks:
            assert ack in ({"success": True, "roomId": room}, failed("room is full")), ack
        await asyncio.gather(*(_expect(c, "room error", {"message": "room is full"})
                               for c in losers))
        await asyncio.gather(*(c.next("room joined") for c in winners))

        info = await owner.call("get room info", room)
        assert info["userCount"] == 10 and info["maxUsers"] == 10
        assert sorted(u["socketId"] for u in info["users"]) == sorted(c.sid for c in winners)

        # Every join was in force when it was acked, on both gateways: a line sent right
        # away reaches the nine other winners and none of the losers.
        speaker, *listeners = winners
        sent = await speaker.call("chat message", {"roomId": room, "content": "we made it"})
        lines = await asyncio.gather(*(c.wait_for("chat message", lambda p: p["roomId"] == room)
                                       for c in listeners))
        assert {line["id"] for line in lines} == {sent["messageId"]}
        barrier = await owner.call("chat message", {"content": "race over"})
        await asyncio.gather(*(c.wait_for("chat message", lambda p: p["id"] == barrier[
            "messageId"]) for c in losers))
        assert not any(c.seen("chat message", predicate=lambda p: p["roomId"] == room)
                       for c in losers)


async def test_concurrent_creates_and_password_joins(chat_cluster: Cluster) -> None:
    """The password paths await argon2 in a thread: the checks after it must still hold."""
    async with Clients(chat_cluster) as clients:
        room = unique("vault")
        racers = await asyncio.gather(*(
            clients.user(i % 2, unique(f"vault{i}"), f"Vault {i}") for i in range(12)
        ))
        spec = {"roomId": room, "roomName": "Vault", "isPrivate": True, "password": "open",
                "maxUsers": 3}
        acks = await asyncio.gather(*(c.call("create room", spec) for c in racers))
        assert sorted(acks, key=str) == sorted(
            [{"success": True, "roomId": room}] + [failed("room already exists")] * 11, key=str)

        acks = await asyncio.gather(*(c.call("join room", {"roomId": room, "password": "open"})
                                      for c in racers))
        assert acks.count({"success": True, "roomId": room}) == 3
        assert acks.count(failed("room is full")) == 9
        winners = [c for c, ack in zip(racers, acks, strict=True) if ack["success"]]
        info = await winners[0].call("get room info", room)
        assert info["userCount"] == 3 and info["isPrivate"] is True
        assert sorted(u["socketId"] for u in info["users"]) == sorted(c.sid for c in winners)


async def _expect(client: ChatClient, event: str, payload: Any) -> None:
    assert await client.next(event, timeout=WAIT) == payload


@pytest.mark.parametrize("gateway", [0, 1])
async def test_namespace_wide_chat_line_reaches_both_gateways(chat_cluster: Cluster,
                                                             gateway: int) -> None:
    async with Clients(chat_cluster) as clients:
        sender = await clients.user(gateway, unique("sender"), "Sender")
        near = await clients.user(gateway, unique("near"), "Near")
        far = await clients.user(1 - gateway, unique("far"), "Far")
        ack = await sender.call("chat message", {"content": "hello both"})
        for client in (near, far):
            line = await client.wait_for("chat message", lambda p: p["content"] == "hello both")
            assert line["id"] == ack["messageId"] and line["roomId"] is None


async def test_server_shutdown_is_announced_before_a_gateway_drains(chat_cluster: Cluster
                                                                   ) -> None:
    """A third gateway joins the cluster and is stopped (SIGTERM) under its clients."""
    part = await asyncio.to_thread(chat_cluster.start_gateway)
    index = len(chat_cluster.gateway_ports) - 1
    async with Clients(chat_cluster) as clients:
        try:
            alice = await clients.user(0, unique("alice"), "Alice")
            leaving_id = unique("leaving")
            leaving = await clients.user(index, leaving_id, "Leaving", namespaces=("/", "/chat"))
            await alice.wait_for("user online", lambda p: p["userId"] == leaving_id)

            stopping = asyncio.ensure_future(asyncio.to_thread(part.stop))
            for ns in ("/", "/chat"):
                notice = await leaving.next("server shutdown", ns=ns)
                assert_keys(notice, ("message",))
                assert isinstance(notice["message"], str) and notice["message"]
                await leaving.wait_disconnected(ns)
            offline = await alice.wait_for("user offline", lambda p: p["userId"] == leaving_id)
            assert offline == {"userId": leaving_id, "username": "Leaving"}
            assert await asyncio.wait_for(stopping, WAIT) == 0
        finally:
            await asyncio.to_thread(part.stop)
