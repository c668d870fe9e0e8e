"""The room service, handler by handler: direct calls, a MemoryPublisher, a real SQLite file.

Every row of the contract (EVENTS.md, namespaces `/`, `/chat`, `/admin` stats/broadcast) and
every refusal; atomic maxUsers under concurrency; room lifecycle; SYNC rebuild; lost gateways;
persistence across restarts. No sleeps: time is a fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from switchboard.services.room import Config, RoomService, create
from switchboard.services.room.model import iso, parse_iso, to_ms
from switchboard.services.room.store import SqliteStore
from switchboard.shared import topics
from switchboard.shared.config import click_options, from_options
from switchboard.shared.envelope import (
    GatewayStatus,
    PubKind,
    Publication,
    Recovery,
    Reply,
    RequestKind,
    Session,
    SocketState,
)
from switchboard.shared.errors import ClientError
from switchboard.shared.publisher import MemoryPublisher
from switchboard.shared.testing import ServiceHarness

#: argon2 at its cheapest: the tests exercise the logic, not the cost.
FAST_PASSWORDS: dict[str, Any] = {
    "password_time_cost": 1,
    "password_memory_kib": 8,
    "password_parallelism": 1,
}
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20.000Z
ID_CHARS = "roomId: use letters, digits, spaces and - _ . # @ + only"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def room_config(db: Path, **overrides: Any) -> Config:
    return Config(room_db=str(db), **{**FAST_PASSWORDS, **overrides})


async def started(service: RoomService) -> RoomService:
    """The service as the runner has it before the first request: opened (its store open,
    its rooms loaded) and started, with the RESYNC its start published forgotten."""
    await service.open()
    await service.start()
    assert isinstance(service.publisher, MemoryPublisher)
    service.publisher.published.clear()
    return service


def session(
    n: int,
    user: str | None = None,
    ns: str = "/",
    gateway: str = "gw1",
    username: str | None = None,
    anonymous: bool = False,
) -> Session:
    """Socket ``<gateway>.s<n>`` of user ``u<n>`` (or ``user``), named ``user<n>``."""
    return Session(
        sid=f"{gateway}.s{n}",
        ns=ns,
        gateway=gateway,
        address="127.0.0.1",
        user_id=None if anonymous else (user or f"u{n}"),
        username=None if anonymous else (username or f"user{n}"),
        role=None if anonymous else "user",
        connected_at=T0 + n,
    )


class Harness(ServiceHarness[RoomService]):
    """The room service through the real dispatch (:mod:`switchboard.shared.testing`), plus
    the room conveniences of these tests."""

    def __init__(self, service: RoomService, publisher: MemoryPublisher, clock: FakeClock):
        super().__init__(service)
        self.pub = publisher
        self.clock = clock

    async def sync_states(self, gateway: str, *states: tuple[Session, tuple[str, ...]]
                          ) -> Reply:
        return await self.sync(gateway, (SocketState(s, rooms) for s, rooms in states))

    async def create(self, s: Session, room_id: str, **fields: Any) -> None:
        ack = await self.ok(s, "create room", {"roomId": room_id, "roomName": f"Room {room_id}",
                                               **fields})
        assert ack == {"success": True, "roomId": room_id}

    async def join(self, s: Session, room_id: str, password: str | None = None) -> Reply:
        payload: dict[str, Any] = {"roomId": room_id}
        if password is not None:
            payload["password"] = password
        return await self.event(s, "join room", payload)

    def published(self, event: str | None = None) -> list[tuple[bytes, Publication]]:
        return [(topic, p) for topic, p in self.pub.published
                if p.kind == PubKind.EMIT and (event is None or p.event == event)]

    def clear(self) -> None:
        self.pub.published.clear()


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def h(tmp_path: Path, clock: FakeClock, store: dict[str, str]) -> AsyncIterator[Harness]:
    pub = MemoryPublisher()
    service = await started(RoomService(pub, room_config(tmp_path / "room.sqlite3", **store),
                                        clock))
    yield Harness(service, pub, clock)
    await service.stop()


async def connected(h: Harness, *sessions: Session) -> None:
    for s in sessions:
        assert (await h.connect(s)).ok


# -- payloads: the owner validates and cleans its own events ----------------------------------
async def test_the_owner_cleans_its_events_before_the_handler(tmp_path: Path) -> None:
    pub = MemoryPublisher()
    service = await started(RoomService(pub, room_config(tmp_path / "room.sqlite3",
                                                         banned_words="darn, heck no"),
                                        FakeClock()))
    h = Harness(service, pub, FakeClock())
    try:
        s = session(1)
        await connected(h, s)
        ack = await h.ok(s, "chat message",
                         {"content": "<b>darn</b> it, Heck  no... heck NO", "x": 1})
        (_, line), = h.published("chat message")
        assert line.args[0]["content"] == "*** it, Heck  no... ***"
        assert set(line.args[0]) >= {"content", "type"} and "x" not in line.args[0]
        assert ack["success"] is True
    finally:
        await service.stop()


async def test_a_bad_payload_is_refused_with_what_to_fix(h: Harness) -> None:
    s = session(1)
    await connected(h, s)
    reply = await h.event(s, "create room", {"roomId": "r", "roomName": "R", "isPrivate": True})
    assert (reply.ok, reply.error) == (False, "password: required for a private room")
    reply = await h.event(s, "chat message", {"content": "x" * 1001})
    assert (reply.ok, reply.error) == (False, "content: must be 1..1000 characters")
    assert not h.published("chat message")


async def test_limits_come_from_the_room_settings(tmp_path: Path) -> None:
    pub = MemoryPublisher()
    service = await started(RoomService(pub, room_config(tmp_path / "room.sqlite3",
                                                         max_content=5,
                                                         room_max_users_limit=10),
                                        FakeClock()))
    h = Harness(service, pub, FakeClock())
    try:
        s = session(1)
        await connected(h, s)
        reply = await h.event(s, "chat message", "123456")
        assert reply.error == "content: must be 1..5 characters"
        reply = await h.event(s, "create room", {"roomId": "r", "roomName": "R", "maxUsers": 11})
        assert reply.error == "maxUsers: must be 1..10"
    finally:
        await service.stop()


# -- routes and lifecycle ---------------------------------------------------------------------
def test_routes_declare_namespaces_and_events(h: Harness) -> None:
    info = h.service.info()
    assert info.name == "room"
    routes = {(r.kind, r.ns, r.event): r.priority for r in info.routes}
    for ns in ("/", "/chat", "/admin", "*"):
        assert routes[(RequestKind.CONNECT, ns, "")] == 30
    assert (RequestKind.DISCONNECT, "*", "") in routes
    assert (RequestKind.SYNC, "*", "") in routes
    main = {"set username", "user info", "chat message", "private message", "create room",
            "join room", "leave room", "room message", "get rooms", "get room info",
            "get online users", "get history"}
    assert {e for (k, ns, e) in routes if k == RequestKind.EVENT and ns == "/"} == main
    assert {e for (k, ns, e) in routes if k == RequestKind.EVENT and ns == "/chat"} == {
        "chat message", "private message"}
    assert {e for (k, ns, e) in routes if k == RequestKind.EVENT and ns == "/admin"} == {
        "get stats", "get sockets", "broadcast message"}


async def test_start_asks_gateways_to_resync(h: Harness) -> None:
    await h.service.start()
    assert [(t, p.kind) for t, p in h.pub.published] == [(topics.ALL_GATEWAYS, PubKind.RESYNC)]


async def test_create_factory_and_config_options(tmp_path: Path) -> None:
    import click

    service = create(room_config(tmp_path / "x" / "room.sqlite3"), MemoryPublisher())
    assert isinstance(service, RoomService) and service.name == "room"
    assert (tmp_path / "x" / "room.sqlite3").exists()  # its directory is created
    service.passwords.close()
    await service.store.close()

    @click.command()
    @click_options(Config)
    def cmd(**values: Any) -> None:
        raise SystemExit(from_options(Config, values).room_max_users_default)

    result = CliRunner().invoke(cmd, ["--room-max-users-default", "7"])
    assert result.exit_code == 7
    result = CliRunner().invoke(cmd, [], env={"SWITCHBOARD_ROOM_MAX_USERS_DEFAULT": "9"})
    assert result.exit_code == 9
    assert isinstance(cmd, click.Command)


def test_timestamps_are_iso_utc_with_milliseconds() -> None:
    assert iso(to_ms(T0 + 0.0456)) == "2023-11-14T22:13:20.046Z"
    assert parse_iso("2023-11-14T22:13:20.046Z") == to_ms(T0 + 0.046)
    assert parse_iso("2023-11-14T22:13:20.046") == to_ms(T0 + 0.046)  # naive = UTC
    with pytest.raises(ClientError, match="before: must be a message id or an ISO-8601"):
        parse_iso("yesterday")


# -- CONNECT / DISCONNECT ---------------------------------------------------------------------
async def test_connect_main_welcomes_registers_and_announces(h: Harness) -> None:
    s = session(1)
    reply = await h.connect(s)
    assert reply.ok and [e.event for e in reply.emits] == ["welcome"]
    welcome = reply.emits[0].args[0]
    assert welcome == {"message": "Welcome to switchboard!", "socketId": s.sid,
                       "serverId": "gw1", "timestamp": "2023-11-14T22:13:20.000Z"}
    [(topic, pub)] = h.published("user online")
    assert topic == topics.namespace("/")
    assert (pub.args, pub.exclude) == ([{"userId": "u1", "username": "user1"}], (s.sid,))
    entry = h.service.registry.get(s.sid)
    assert entry is not None
    assert (entry.ns, entry.gateway, entry.user_id, entry.username) == ("/", "gw1", "u1", "user1")
    assert entry.connected_at == s.connected_at


async def test_presence_is_per_user_not_per_tab(h: Harness) -> None:
    tab1, tab2 = session(1, user="alice"), session(2, user="alice", gateway="gw2")
    await connected(h, tab1, tab2)
    await h.connect(tab1)  # a repeated CONNECT stage is idempotent
    assert len(h.published("user online")) == 1
    await h.disconnect(tab1)
    assert h.published("user offline") == []
    await h.disconnect(tab2)
    [(topic, pub)] = h.published("user offline")
    assert topic == topics.namespace("/")
    assert (pub.args, pub.exclude) == ([{"userId": "alice", "username": "user2"}], (tab2.sid,))
    assert len(h.service.registry) == 0


async def test_anonymous_socket_is_its_own_identity(h: Harness) -> None:
    s = session(1, anonymous=True)
    await connected(h, s)
    [(_, pub)] = h.published("user online")
    assert pub.args == [{"userId": s.sid, "username": "Anonymous"}]


async def test_other_namespaces_are_registered_silently(h: Harness) -> None:
    for n, ns in enumerate(("/chat", "/admin", "/game", "/custom"), start=1):
        reply = await h.connect(session(n, ns=ns))
        assert reply.ok and reply.emits == () and reply.joins == ()
    assert h.pub.published == []
    assert h.service.registry.count_by_namespace() == {"/chat": 1, "/admin": 1, "/game": 1,
                                                       "/custom": 1}
    await h.disconnect(session(3, ns="/game"))
    assert session(3, ns="/game").sid not in h.service.registry
    assert h.pub.published == []  # presence is about "/" only


async def test_disconnect_leaves_every_room_with_notices(h: Harness) -> None:
    a, b = session(1), session(2)
    await connected(h, a, b)
    await h.create(a, "r1")
    await h.create(a, "r2")
    for room in ("r1", "r2"):
        assert (await h.join(a, room)).ok
    assert (await h.join(b, "r1")).ok
    h.clear()
    await h.disconnect(a)
    [(topic, pub)] = h.published("user left")
    assert topic == topics.room("/", "r1")
    assert (pub.args, pub.exclude) == (
        [{"socketId": a.sid, "username": "user1", "roomId": "r1", "userCount": 1}], (a.sid,))
    assert "r2" in h.service.rooms  # its last member left: kept for its grace period
    assert "r1" in h.service.rooms
    assert [p.args for _, p in h.published("user offline")] == [
        [{"userId": "u1", "username": "user1"}]]


# -- create room ------------------------------------------------------------------------------
async def test_create_room_public_and_private(h: Harness) -> None:
    a = session(1)
    await h.create(a, "lobby")
    await h.create(a, "vault", isPrivate=True, password="s3cret", maxUsers=5)
    lobby, vault = h.service.rooms["lobby"], h.service.rooms["vault"]
    assert (lobby.name, lobby.private, lobby.max_users, lobby.creator) == (
        "Room lobby", False, 100, "u1")
    assert lobby.password_hash is None and lobby.created_ms == to_ms(T0)
    assert vault.private and vault.max_users == 5
    assert vault.password_hash is not None and vault.password_hash.startswith("$argon2id$")
    assert "s3cret" not in vault.password_hash
    # the creator is not joined
    assert h.service.membership.count("lobby") == 0
    assert h.pub.published == []


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"roomId": "lobby", "roomName": "again"}, "room already exists"),
        # ":" is not an id character: no client can name a user's room (user:<id>)
        ({"roomId": "user:42", "roomName": "x"}, ID_CHARS),
        ({"roomId": "a\x00b", "roomName": "x"}, ID_CHARS),
        ({"roomId": "", "roomName": "x"}, "roomId: must be 1..50 characters"),
        ({"roomId": 5, "roomName": "x"}, "roomId: must be a string"),
        ({"roomId": "x"}, "roomName: required"),
        ({"roomId": "x", "roomName": "x", "isPrivate": "yes"}, "isPrivate: must be true or false"),
        ({"roomId": "x", "roomName": "x", "isPrivate": True},
         "password: required for a private room"),
        ({"roomId": "x", "roomName": "x", "isPrivate": True, "password": 123},
         "password: must be a string"),
        ({"roomId": "x", "roomName": "x", "maxUsers": 0}, "maxUsers: must be 1..1000"),
        ({"roomId": "x", "roomName": "x", "maxUsers": 1001}, "maxUsers: must be 1..1000"),
        ({"roomId": "x", "roomName": "x", "maxUsers": True},
         "maxUsers: must be an integer 1..1000"),
        ({"roomId": "x", "roomName": "x", "maxUsers": "10"},
         "maxUsers: must be an integer 1..1000"),
        ("lobby", "payload: must be an object {roomId, roomName, isPrivate?, password?, "
                  "maxUsers?}"),
    ],
)
async def test_create_room_refusals(h: Harness, payload: Any, error: str) -> None:
    a = session(1)
    await h.create(a, "lobby")
    reply = await h.event(a, "create room", payload)
    assert (reply.ok, reply.error) == (False, error)
    assert set(h.service.rooms) == {"lobby"}


async def test_create_room_accepts_integral_float_and_ignores_public_password(
    h: Harness,
) -> None:
    await h.create(session(1), "x", maxUsers=10.0, password="ignored")
    assert h.service.rooms["x"].max_users == 10
    assert h.service.rooms["x"].password_hash is None


async def test_concurrent_creates_of_one_private_room_make_one(h: Harness) -> None:
    a = session(1)
    payload = {"roomId": "x", "roomName": "X", "isPrivate": True, "password": "pw"}
    replies = await asyncio.gather(*(h.event(a, "create room", payload) for _ in range(10)))
    assert sum(r.ok for r in replies) == 1
    assert {r.error for r in replies if not r.ok} == {"room already exists"}


# -- join room --------------------------------------------------------------------------------
async def test_join_room_replies_and_publishes(h: Harness) -> None:
    a, b = session(1), session(2, gateway="gw2")
    await connected(h, a, b)
    await h.create(a, "lobby")
    assert (await h.join(a, "lobby")).ok
    h.clear()
    reply = await h.join(b, "lobby")
    assert reply.ok and reply.ack == [{"success": True, "roomId": "lobby"}]
    assert reply.joins == ("lobby",)
    [joined] = reply.emits
    assert joined.event == "room joined"
    assert joined.args == [{
        "roomId": "lobby", "roomName": "Room lobby", "userCount": 2,
        "users": [{"id": "u1", "username": "user1", "socketId": a.sid},
                  {"id": "u2", "username": "user2", "socketId": b.sid}],
    }]
    [(topic, pub)] = h.published("user joined")
    assert topic == topics.room("/", "lobby")
    assert pub.args == [{"socketId": b.sid, "username": "user2", "roomId": "lobby",
                         "userCount": 2}]
    assert pub.exclude == (b.sid,)


async def test_join_room_twice_is_idempotent(h: Harness) -> None:
    a = session(1)
    await h.create(a, "lobby", maxUsers=1)
    assert (await h.join(a, "lobby")).ok
    h.clear()
    again = await h.join(a, "lobby")  # full room, but a member is already in
    assert again.ok and again.joins == ("lobby",)
    assert again.emits[0].args[0]["userCount"] == 1
    assert h.published("user joined") == []


async def test_join_accepts_a_bare_room_id(h: Harness) -> None:
    await h.create(session(1), "lobby")
    assert (await h.event(session(2), "join room", "lobby")).ok


@pytest.mark.parametrize(
    ("room_id", "password", "error"),
    [
        ("nowhere", None, "room not found"),
        ("vault", "nope", "wrong password"),
        ("vault", None, "wrong password"),
        ("tiny", None, "room is full"),
    ],
)
async def test_join_refusals_send_room_error_and_fail(
    h: Harness, room_id: str, password: str | None, error: str
) -> None:
    a, b = session(1), session(2, gateway="gw2")
    await h.create(a, "vault", isPrivate=True, password="s3cret")
    await h.create(a, "tiny", maxUsers=1)
    assert (await h.join(a, "tiny")).ok
    h.clear()
    reply = await h.join(b, room_id, password)
    assert (reply.ok, reply.error, reply.joins) == (False, error, ())
    assert [(e.event, e.args) for e in reply.emits] == [("room error", [{"message": error}])]
    assert h.pub.published == []
    assert not h.service.membership.is_member(room_id, b.sid)


async def test_join_private_room_with_password(h: Harness) -> None:
    a = session(1)
    await h.create(a, "vault", isPrivate=True, password="s3cret")
    assert (await h.join(a, "vault", "s3cret")).ok
    assert (await h.join(a, "vault")).ok  # already a member: no password needed again


@pytest.mark.parametrize("args", [[], [42], [{"roomId": 1}], [{"roomId": "x", "password": 7}]])
async def test_join_room_bad_types(h: Harness, args: list[Any]) -> None:
    reply = await h.event(session(1), "join room", *args)
    assert not reply.ok and reply.error is not None
    assert reply.error.startswith(("expected an object", "roomId:", "password:"))


@pytest.mark.parametrize("private", [False, True])
async def test_concurrent_joins_admit_exactly_max_users(h: Harness, private: bool) -> None:
    """50 sockets on 5 gateways join at once: exactly maxUsers get in, the rest are refused.

    The private variant has an await (argon2 in a thread) before the capacity check, which is
    where a non-atomic check-then-insert would over-admit."""
    owner = session(0)
    extra: dict[str, Any] = {"isPrivate": True, "password": "pw"} if private else {}
    await h.create(owner, "hot", maxUsers=7, **extra)
    joiners = [session(n, gateway=f"gw{n % 5}") for n in range(1, 51)]
    replies = await asyncio.gather(
        *(h.join(s, "hot", "pw" if private else None) for s in joiners)
    )
    admitted = [r for r in replies if r.ok]
    assert len(admitted) == 7
    assert {r.error for r in replies if not r.ok} == {"room is full"}
    assert h.service.membership.count("hot") == 7
    counts = sorted(p.args[0]["userCount"] for _, p in h.published("user joined"))
    assert counts == [1, 2, 3, 4, 5, 6, 7]
    assert all(r.emits[0].event == "room error" for r in replies if not r.ok)


# -- leave room and the room lifecycle --------------------------------------------------------
async def test_leave_room(h: Harness) -> None:
    a, b = session(1), session(2)
    await h.create(a, "lobby")
    await h.join(a, "lobby")
    await h.join(b, "lobby")
    h.clear()
    reply = await h.event(b, "leave room", "lobby")
    assert reply.ok and reply.ack == [{"success": True, "roomId": "lobby"}]
    assert reply.leaves == ("lobby",)
    [(topic, pub)] = h.published("user left")
    assert topic == topics.room("/", "lobby")
    assert (pub.args, pub.exclude) == (
        [{"socketId": b.sid, "username": "user2", "roomId": "lobby", "userCount": 1}], (b.sid,))
    assert (await h.event(a, "leave room", {"roomId": "lobby"})).ok  # object form too


async def test_leave_room_refusals(h: Harness) -> None:
    a = session(1)
    await h.create(a, "lobby")
    assert (await h.event(a, "leave room", "nowhere")).error == "room not found"
    assert (await h.event(a, "leave room", "lobby")).error == "not a member of room lobby"
    assert (await h.event(a, "leave room")).error == "roomId: required"
    assert (await h.event(a, "leave room", ["x"])).error == "roomId: must be a string"


async def test_an_emptied_room_waits_out_its_grace_then_goes_with_its_history(
    h: Harness,
) -> None:
    a = session(1)
    await h.create(a, "lobby")
    await h.join(a, "lobby")
    await h.ok(a, "chat message", {"content": "hi", "roomId": "lobby"})
    await h.ok(a, "leave room", "lobby")
    # Empty, not gone: within the grace period it is listed, and whoever joins finds its
    # history.
    h.clock.advance(59)
    rooms = (await h.ok(a, "get rooms"))["rooms"]
    assert [(r["id"], r["userCount"]) for r in rooms] == [("lobby", 0)]
    await h.join(a, "lobby")
    history = await h.ok(a, "get history", {"roomId": "lobby"})
    assert [m["content"] for m in history["messages"]] == ["hi"]
    # A join restarted the clock: the grace counts from the last member leaving.
    await h.ok(a, "leave room", "lobby")
    h.clock.advance(59.9)
    assert [r["id"] for r in (await h.ok(a, "get rooms"))["rooms"]] == ["lobby"]
    h.clock.advance(0.1)
    assert (await h.ok(a, "get rooms"))["rooms"] == []
    assert "lobby" not in h.service.rooms
    await h.service.store.committed()  # a deletion is not waited for: nobody is acked
    assert await h.service.store.load_rooms() == []
    assert await h.service.store.history("/", "lobby", 100) == []
    assert (await h.join(a, "lobby")).error == "room not found"
    await h.create(a, "lobby")  # the name is free again, with an empty history
    await h.join(a, "lobby")
    assert (await h.ok(a, "get history", {"roomId": "lobby"}))["messages"] == []


async def test_no_grace_deletes_an_emptied_room_at_once(tmp_path: Path, clock: FakeClock,
                                                       store: dict[str, str]) -> None:
    pub = MemoryPublisher()
    config = room_config(tmp_path / "r.db", **store, room_empty_grace=0)
    service = await started(RoomService(pub, config, clock))
    h = Harness(service, pub, clock)
    try:
        a = session(1)
        await h.create(a, "lobby")
        await h.join(a, "lobby")
        await h.ok(a, "chat message", {"content": "hi", "roomId": "lobby"})
        await h.ok(a, "leave room", "lobby")
        assert "lobby" not in service.rooms
        await service.store.committed()
        assert await service.store.history("/", "lobby", 100) == []
    finally:
        await service.stop()


async def test_each_rooms_messages_are_numbered_through_restarts_and_deletion(
        tmp_path: Path, clock: FakeClock, store: dict[str, str]) -> None:
    db = tmp_path / "room.sqlite3"
    config = room_config(db, **store, room_empty_grace=0)
    a, c = session(1), session(2, ns="/chat")

    def seqs(pub: MemoryPublisher) -> list[tuple[str | None, int | None]]:
        return [(p.args[0]["roomId"], p.args[0]["seq"]) for _, p in pub.published
                if p.kind == PubKind.EMIT and p.event == "chat message"]

    pub = MemoryPublisher()
    first = await started(RoomService(pub, config, clock))
    h1 = Harness(first, pub, clock)
    try:
        await h1.create(a, "lobby")
        await h1.join(a, "lobby")
        await h1.create(a, "other")
        await h1.join(a, "other")
        for room in ("lobby", "lobby", "other", None, "lobby"):
            await h1.ok(a, "chat message", {"content": "x", **({"roomId": room} if room else {})})
        await h1.ok(c, "chat message", {"content": "x", "roomId": "lobby"})  # /chat's own
        assert seqs(pub) == [("lobby", 1), ("lobby", 2), ("other", 1), (None, None),
                             ("lobby", 3), ("lobby", 1)]
    finally:
        await first.stop()

    pub = MemoryPublisher()
    second = await started(RoomService(pub, config, clock))  # a new process counts on
    h2 = Harness(second, pub, clock)
    try:
        await h2.sync_states("gw1", (a, ("lobby",)))
        # Its first messages, at once: the count is read from the store once, and each
        # gets the next number in the order they were sent.
        acks = await asyncio.gather(*(h2.ok(a, "chat message", {"content": f"{n}",
                                                               "roomId": "lobby"})
                                      for n in range(3)))
        assert all(ack["success"] for ack in acks)
        assert seqs(pub) == [("lobby", 4), ("lobby", 5), ("lobby", 6)]
        history = await h2.ok(a, "get history", {"roomId": "lobby"})
        assert [m["seq"] for m in history["messages"]] == [1, 2, 3, 4, 5, 6]
        pub.published.clear()
        await h2.ok(a, "leave room", "lobby")  # no grace: deleted with its history
        assert "lobby" not in second.rooms
        await h2.create(a, "lobby")  # the name again: it starts from 1
        await h2.join(a, "lobby")
        await h2.ok(a, "chat message", {"content": "anew", "roomId": "lobby"})
        assert seqs(pub) == [("lobby", 1)]
    finally:
        await second.stop()


async def test_a_reload_of_what_an_instance_owns_keeps_counting_its_rooms(h: Harness) -> None:
    """A change of members reloads the rooms (and the gateways re-send the sockets), but a
    room's count is kept: a message queued and not yet committed when the reload reads the
    store would otherwise be numbered again (the counts are reset only where the writes
    were drained first, in the lease's release)."""
    a = session(1)
    await h.create(a, "lobby")
    await h.join(a, "lobby")
    await h.ok(a, "chat message", {"content": "one", "roomId": "lobby"})
    await h.service._members_changed(h.service.shards)
    assert h.service.numbering.counts("/", "lobby")
    await h.sync_states("gw1", (a, ("lobby",)))
    h.clear()
    await h.ok(a, "chat message", {"content": "two", "roomId": "lobby"})
    assert [p.args[0]["seq"] for _, p in h.published("chat message")] == [2]


async def test_members_of_a_crashed_gateway_find_their_room_again(h: Harness) -> None:
    """Every member vanishes with a gateway: the room, its seats and its history wait for
    them; they come back through another gateway and fill it to its full size."""
    members = [session(n) for n in range(1, 4)]
    await connected(h, *members)
    await h.create(members[0], "lobby", maxUsers=3)
    for member in members:
        assert (await h.join(member, "lobby")).ok
    await h.ok(members[0], "chat message", {"content": "before the crash", "roomId": "lobby"})
    await h.service.gateway_lost("gw1")
    assert h.service.membership.count("lobby") == 0
    h.clock.advance(30)
    back = [session(n, gateway="gw2") for n in range(1, 4)]
    await connected(h, *back)
    for member in back:
        assert (await h.join(member, "lobby")).ok  # no ghost holds a seat
    assert (await h.join(session(9, gateway="gw2"), "lobby")).error == "room is full"
    history = await h.ok(back[0], "get history", {"roomId": "lobby"})
    assert [m["content"] for m in history["messages"]] == ["before the crash"]


async def test_unjoined_rooms_expire_after_ttl(h: Harness) -> None:
    a = session(1)
    await h.create(a, "idle")
    await h.create(a, "used")
    await h.join(a, "used")
    h.clock.advance(599)
    assert {r["id"] for r in (await h.ok(a, "get rooms"))["rooms"]} == {"idle", "used"}
    h.clock.advance(1)
    assert {r["id"] for r in (await h.ok(a, "get rooms"))["rooms"]} == {"used"}
    await h.service.store.committed()
    assert [r.id for r in await h.service.store.load_rooms()] == ["used"]
    await h.create(a, "idle")  # its name is free again


async def test_unjoined_ttl_zero_keeps_rooms(tmp_path: Path, clock: FakeClock,
                                            store: dict[str, str]) -> None:
    pub = MemoryPublisher()
    config = room_config(tmp_path / "r.db", **store, room_unjoined_ttl=0)
    service = await started(RoomService(pub, config, clock))
    h = Harness(service, pub, clock)
    try:
        await h.create(session(1), "idle")
        clock.advance(10**7)
        assert [r["id"] for r in (await h.ok(session(1), "get rooms"))["rooms"]] == ["idle"]
    finally:
        await service.stop()


# -- get rooms / get room info ----------------------------------------------------------------
async def test_get_rooms_lists_public_rooms_and_emits_room_list(h: Harness) -> None:
    a = session(1)
    await h.create(a, "b-room", maxUsers=3)
    h.clock.advance(1.5)
    await h.create(a, "a-room")
    await h.create(a, "vault", isPrivate=True, password="pw")
    await h.join(a, "b-room")
    reply = await h.event(a, "get rooms")
    listing = {"success": True, "rooms": [
        {"id": "b-room", "name": "Room b-room", "userCount": 1, "maxUsers": 3,
         "createdAt": "2023-11-14T22:13:20.000Z"},
        {"id": "a-room", "name": "Room a-room", "userCount": 0, "maxUsers": 100,
         "createdAt": "2023-11-14T22:13:21.500Z"},
    ]}
    assert reply.ack == [listing]
    # The event instead of the ack, for a client that passed none (the gateway decides).
    assert [(e.event, e.args, e.unless_acked) for e in reply.emits] == [
        ("room list", [listing], True)]


async def test_get_room_info(h: Harness) -> None:
    a, b = session(1), session(2)
    await h.create(a, "lobby", maxUsers=9)
    await h.create(a, "vault", isPrivate=True, password="pw")
    await h.join(a, "lobby")
    await h.join(a, "vault", "pw")
    info = {"id": "lobby", "name": "Room lobby", "userCount": 1, "maxUsers": 9,
            "createdAt": "2023-11-14T22:13:20.000Z", "isPrivate": False,
            "users": [{"id": "u1", "username": "user1", "socketId": a.sid}]}
    reply = await h.event(b, "get room info", "lobby")
    assert reply.ack == [info]
    assert [(e.event, e.args) for e in reply.emits] == [("room info", [info])]
    assert (await h.event(b, "get room info", {"roomId": "nowhere"})).ack == [None]
    hidden = (await h.event(b, "get room info", "vault")).ack
    assert hidden is not None and hidden[0]["userCount"] == 1 and hidden[0]["users"] == []
    shown = (await h.event(a, "get room info", "vault")).ack
    assert shown is not None and [u["socketId"] for u in shown[0]["users"]] == [a.sid]
    assert (await h.event(b, "get room info", 3)).error == "roomId: must be a string"


# -- messages in / ----------------------------------------------------------------------------
async def test_chat_message_to_namespace(h: Harness) -> None:
    a = session(1)
    ack = await h.ok(a, "chat message", {"content": "hello"})
    assert ack["success"] is True and isinstance(ack["messageId"], str)
    [(topic, pub)] = h.published("chat message")
    assert topic == topics.namespace("/") and pub.exclude == (a.sid,)
    assert pub.args == [{"id": ack["messageId"], "from": "u1", "username": "user1",
                         "content": "hello", "type": "text", "roomId": None,
                         "timestamp": "2023-11-14T22:13:20.000Z", "seq": None}]


async def test_chat_message_to_room_members_only(h: Harness) -> None:
    a, b = session(1), session(2)
    await h.create(a, "lobby")
    await h.join(a, "lobby")
    h.clear()
    ack = await h.ok(a, "chat message", {"content": "pic", "roomId": "lobby", "type": "image"})
    [(topic, pub)] = h.published("chat message")
    assert topic == topics.room("/", "lobby") and pub.exclude == (a.sid,)
    assert pub.args[0]["id"] == ack["messageId"]
    assert (pub.args[0]["roomId"], pub.args[0]["type"]) == ("lobby", "image")
    reply = await h.event(b, "chat message", {"content": "hi", "roomId": "lobby"})
    assert reply.error == "not a member of room lobby"
    assert (await h.event(a, "chat message", {"content": "x", "roomId": "user:u2"})).error == \
        ID_CHARS
    assert len(h.published("chat message")) == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "content: required"),
        ([["hello"]], "content: must be a string"),
        ([{"content": ""}], "content: must be 1..1000 characters"),
        ([{"content": "<b></b>"}], "content: must contain text (HTML and surrounding spaces "
                                   "removed)"),
        ([{"content": 5}], "content: must be a string"),
        ([{"content": "x", "type": "video"}], "type: must be text, image or file"),
        ([{"content": "x", "roomId": 3}], "roomId: must be a string"),
    ],
)
async def test_chat_message_bad_payloads(h: Harness, args: list[Any], error: str) -> None:
    reply = await h.event(session(1), "chat message", *args)
    assert (reply.ok, reply.error) == (False, error)
    assert h.pub.published == []


async def test_room_message(h: Harness) -> None:
    a, b = session(1), session(2)
    await h.create(a, "lobby")
    await h.join(a, "lobby")
    h.clear()
    h.clock.advance(0.25)
    assert (await h.ok(a, "room message", {"roomId": "lobby", "message": "yo"})) == {
        "success": True}
    [(topic, pub)] = h.published("room message")
    assert topic == topics.room("/", "lobby") and pub.exclude == (a.sid,)
    assert pub.args == [{"from": "u1", "username": "user1", "message": "yo", "roomId": "lobby",
                         "timestamp": "2023-11-14T22:13:20.250Z"}]
    reply = await h.event(b, "room message", {"roomId": "lobby", "message": "hi"})
    assert reply.error == "not a member of room lobby"
    reply = await h.event(a, "room message", {"roomId": "lobby"})
    assert reply.error == "message: required"


async def test_private_message(h: Harness) -> None:
    a, b, b2 = session(1), session(2, user="bob"), session(3, user="bob", gateway="gw2")
    await connected(h, a, b, b2)
    h.clear()
    ack = await h.ok(a, "private message", {"to": "bob", "content": "psst"})
    [(topic, pub)] = h.published("private message")
    # one publication to the user's room reaches every socket of bob on every gateway
    assert topic == topics.room("/", "user:bob")
    assert pub.room == "user:bob" and pub.exclude == ()
    assert pub.args == [{"id": ack["messageId"], "from": "u1", "to": "bob", "content": "psst",
                         "type": "private", "timestamp": "2023-11-14T22:13:20.000Z"}]
    assert await h.service.store.messages_count() == 1


async def test_private_message_to_offline_user(h: Harness) -> None:
    a = session(1)
    await connected(h, a, session(2, user="carol", ns="/chat"))  # online, but not in "/"
    reply = await h.event(a, "private message", {"to": "carol", "content": "psst"})
    assert (reply.ok, reply.error) == (False, "user not online")
    assert h.published("private message") == []
    assert await h.service.store.messages_count() == 0
    reply = await h.event(a, "private message", {"content": "psst"})
    assert reply.error == "to: required"


async def test_set_username(h: Harness) -> None:
    a = session(1)
    await connected(h, a)
    await h.create(a, "lobby")
    await h.join(a, "lobby")
    reply = await h.event(a, "set username", "Zed")
    assert reply.ok and reply.ack == [{"success": True, "username": "Zed"}]
    assert reply.session == Session(a.sid, "/", "gw1", "127.0.0.1", "u1", "Zed", "user",
                                    a.connected_at)
    users = (await h.ok(a, "get online users"))["users"]
    assert users == [{"id": "u1", "username": "Zed", "socketId": a.sid}]
    info = (await h.event(a, "get room info", "lobby")).ack
    assert info is not None and info[0]["users"][0]["username"] == "Zed"
    for bad, error in (([], "username: required"), ([""], "username: must be 1..50 characters"),
                       ([7], "username: must be a string")):
        assert (await h.event(a, "set username", *bad)).error == error


async def test_user_info_renames_and_keeps_the_avatar_in_the_session(h: Harness) -> None:
    a = session(1)
    await connected(h, a)
    reply = await h.event(a, "user info", {"username": "Alice", "avatar": "avatar-url"})
    assert reply.ok and reply.ack == [{"success": True, "username": "Alice",
                                       "avatar": "avatar-url"}]
    assert reply.session is not None
    assert (reply.session.username, reply.session.avatar) == ("Alice", "avatar-url")
    users = (await h.ok(a, "get online users"))["users"]
    assert users == [{"id": "u1", "username": "Alice", "socketId": a.sid}]
    plain = await h.event(a, "user info", {"username": "Al"})
    assert plain.ack == [{"success": True, "username": "Al"}]
    assert (await h.event(a, "user info", 7)).error == "username: must be a string"


async def test_get_online_users_across_gateways(h: Harness) -> None:
    a, b, c = session(1), session(2, gateway="gw2"), session(3, gateway="gw3")
    await connected(h, a, b, c, session(4, ns="/chat"))
    ack = await h.ok(a, "get online users")
    assert ack == {"success": True, "users": [
        {"id": "u1", "username": "user1", "socketId": a.sid},
        {"id": "u2", "username": "user2", "socketId": b.sid},
        {"id": "u3", "username": "user3", "socketId": c.sid},
    ]}


# -- history ----------------------------------------------------------------------------------
async def test_history_order_limit_and_cursors(h: Harness) -> None:
    a, b = session(1), session(2)
    await h.create(a, "lobby")
    await h.join(a, "lobby")
    await h.create(a, "other")
    await h.join(a, "other")
    ids = []
    for i in range(6):
        h.clock.advance(1)
        ids.append((await h.ok(a, "chat message", {"content": f"m{i}", "roomId": "lobby"}))
                   ["messageId"])
    await h.ok(a, "chat message", {"content": "elsewhere", "roomId": "other"})
    await h.ok(a, "chat message", {"content": "everyone"})

    def contents(ack: dict[str, Any]) -> list[str]:
        return [m["content"] for m in ack["messages"]]

    full = await h.ok(a, "get history", {"roomId": "lobby"})
    assert contents(full) == [f"m{i}" for i in range(6)]  # newest last
    assert full["messages"][0] == {"id": ids[0], "from": "u1", "username": "user1",
                                   "content": "m0", "type": "text", "roomId": "lobby",
                                   "timestamp": "2023-11-14T22:13:21.000Z", "seq": 1}
    assert [m["seq"] for m in full["messages"]] == [1, 2, 3, 4, 5, 6]
    assert contents(await h.ok(a, "get history", {"roomId": "lobby", "limit": 2})) == \
        ["m4", "m5"]
    assert contents(await h.ok(a, "get history", {"roomId": "lobby", "before": ids[3],
                                                  "limit": 2})) == ["m1", "m2"]
    before_time = iso(to_ms(T0 + 3))  # m2 was said at T0+3: strictly before it
    assert contents(await h.ok(a, "get history", {"roomId": "lobby",
                                                  "before": before_time})) == ["m0", "m1"]
    await h.join(b, "lobby")
    assert contents(await h.ok(b, "get history", {"roomId": "lobby", "limit": 1})) == ["m5"]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"roomId": "lobby", "limit": 0}, "limit: must be 1..100"),
        ({"roomId": "lobby", "limit": 101}, "limit: must be 1..100"),
        ({"roomId": "lobby", "limit": "5"}, "limit: must be an integer 1..100"),
        ({"roomId": "lobby", "before": "last tuesday"},
         "before: must be a message id or an ISO-8601 timestamp"),
        ({"roomId": "lobby", "before": -5}, "before: must be a timestamp or message id"),
        ({"roomId": "lobby", "before": [5]}, "before: must be a timestamp or message id"),
        ({"roomId": "nowhere"}, "not a member of room nowhere"),
        ({}, "roomId: required"),
    ],
)
async def test_history_refusals(h: Harness, payload: dict[str, Any], error: str) -> None:
    a = session(1)
    await h.create(a, "lobby")
    await h.join(a, "lobby")
    assert (await h.event(a, "get history", payload)).error == error


async def test_history_is_for_members_only(h: Harness) -> None:
    a = session(1)
    await h.create(a, "lobby")
    assert (await h.event(session(2), "get history", {"roomId": "lobby"})).error == \
        "not a member of room lobby"


# -- /chat ------------------------------------------------------------------------------------
async def test_chat_namespace_chat_message(h: Harness) -> None:
    a = session(1, ns="/chat")
    ack = await h.ok(a, "chat message", {"content": "hey"})
    [(topic, pub)] = h.published("chat message")
    assert topic == topics.namespace("/chat") and pub.ns == "/chat"
    assert pub.exclude == ()  # "to all of /chat": the sender too
    assert pub.args[0]["id"] == ack["messageId"] and pub.args[0]["roomId"] is None
    h.clear()
    await h.ok(a, "chat message", {"content": "hey", "roomId": "team"})
    [(topic, pub)] = h.published("chat message")
    assert topic == topics.room("/chat", "team") and pub.exclude == (a.sid,)
    reply = await h.event(a, "chat message", {"content": "x", "roomId": "user:u2"})
    assert reply.error == ID_CHARS
    stored = await h.service.store.history("/chat", "team", 10)
    assert [(m.namespace, m.content) for m in stored] == [("/chat", "hey")]


async def test_chat_namespace_private_message(h: Harness) -> None:
    a = session(1, ns="/chat")
    reply = await h.event(a, "private message", {"to": "u9", "content": "secret"})
    assert reply.ok and reply.ack is not None
    message_id = reply.ack[0]["messageId"]
    assert reply.ack == [{"success": True, "messageId": message_id}]
    assert [(e.event, e.args) for e in reply.emits] == [
        ("message sent", [{"messageId": message_id}])]
    [(topic, pub)] = h.published("private message")
    assert topic == topics.room("/chat", "user:u9") and pub.ns == "/chat"
    assert pub.args == [{"id": message_id, "from": "u1", "to": "u9", "content": "secret",
                         "type": "private", "timestamp": "2023-11-14T22:13:20.000Z"}]
    assert (await h.event(a, "private message", {"to": "u9"})).error == "content: required"


# -- /admin -----------------------------------------------------------------------------------
async def test_admin_stats(h: Harness) -> None:
    main1, main2 = session(1), session(2, gateway="gw2")
    await connected(h, main1, main2, session(3, ns="/chat"), session(4, ns="/game"),
                    session(5, ns="/game", gateway="gw2"), session(6, ns="/admin"))
    await h.create(main1, "lobby", maxUsers=5)
    await h.create(main1, "vault", isPrivate=True, password="pw")
    await h.join(main1, "lobby")
    await h.join(main2, "lobby")
    h.service.gateways["gw1"] = GatewayStatus(T0 - 100, {"/": 1, "/chat": 1, "/game": 1,
                                                         "/admin": 1})
    h.service.gateways["gw2"] = GatewayStatus(T0 - 2.5, {"/": 1, "/game": 1})
    h.clock.advance(10)
    reply = await h.event(session(6, ns="/admin"), "get stats")
    stats = {
        "totalConnections": 6,
        "mainConnections": 2,
        "chatConnections": 1,
        "gameConnections": 2,
        "adminConnections": 1,
        "namespaces": {"/": 2, "/admin": 1, "/chat": 1, "/game": 2},
        "rooms": [
            {"id": "lobby", "name": "Room lobby", "userCount": 2, "maxUsers": 5,
             "createdAt": "2023-11-14T22:13:20.000Z", "isPrivate": False},
            {"id": "vault", "name": "Room vault", "userCount": 0, "maxUsers": 100,
             "createdAt": "2023-11-14T22:13:20.000Z", "isPrivate": True},
        ],
        "gateways": [{"id": "gw1", "connections": 4, "uptime": 110.0},
                     {"id": "gw2", "connections": 2, "uptime": 12.5}],
        "timestamp": "2023-11-14T22:13:30.000Z",
    }
    assert reply.ack == [{"success": True, **stats}]
    assert [(e.event, e.args) for e in reply.emits] == [("stats", [stats])]


async def test_admin_broadcast(h: Harness) -> None:
    admin = session(1, ns="/admin")
    assert (await h.ok(admin, "broadcast message", {"message": "maintenance at 5"})) == {
        "success": True}
    [(topic, pub)] = h.published("system message")
    assert topic == topics.namespace("/") and pub.ns == "/" and pub.exclude == ()
    assert pub.args == [{"type": "announcement", "content": "maintenance at 5",
                         "from": "system", "timestamp": "2023-11-14T22:13:20.000Z"}]
    assert (await h.event(admin, "broadcast message", {"message": ""})).error == \
        "message: must be 1..1000 characters"


# -- SYNC, lost gateways, restarts ------------------------------------------------------------
async def test_sync_rebuilds_registry_and_membership_after_restart(
    tmp_path: Path, clock: FakeClock, store: dict[str, str]
) -> None:
    db = tmp_path / "room.sqlite3"
    pub = MemoryPublisher()
    before = await started(RoomService(pub, room_config(db, **store), clock))
    h1 = Harness(before, pub, clock)
    a, b, c = session(1), session(2), session(3, ns="/game")
    await h1.create(a, "lobby")
    await h1.create(a, "vault", isPrivate=True, password="pw")
    await h1.join(a, "lobby")
    await h1.join(b, "lobby")
    await h1.ok(a, "chat message", {"content": "remember me", "roomId": "lobby"})
    await before.stop()

    pub2 = MemoryPublisher()
    after = await started(RoomService(pub2, room_config(db, **store), clock))  # a new process
    h2 = Harness(after, pub2, clock)
    try:
        assert set(after.rooms) == {"lobby", "vault"}
        assert after.rooms["vault"].password_hash is not None
        assert len(after.registry) == 0 and after.membership.count("lobby") == 0
        reply = await h2.sync_states("gw1", (a, ("user:u1", "lobby")), (b, ("lobby", "gone-room")),
                              (c, ("game:1",)))
        assert reply.ok and pub2.published == []  # silent: clients already know all this
        assert len(after.registry) == 3 and after.registry.is_online("/", "u2")
        assert [m.sid for m in after.membership.members("lobby")] == [a.sid, b.sid]
        assert after.membership.rooms_of(b.sid) == ["lobby"]
        history = await h2.ok(a, "get history", {"roomId": "lobby"})
        assert [m["content"] for m in history["messages"]] == ["remember me"]
        assert (await h2.join(session(4), "vault", "pw")).ok  # the stored hash still verifies
        assert (await h2.join(session(5), "vault", "no")).error == "wrong password"
        pub2.published.clear()
        # a second SYNC in which b is gone and a left the room: both depart with notices
        await h2.sync_states("gw1", (a, ("user:u1",)), (c, ("game:1",)), (session(4), ("vault",)))
        assert b.sid not in after.registry
        assert after.membership.count("lobby") == 0  # its members are gone: in its grace
        assert "lobby" in after.rooms
        assert [p.args[0]["userId"] for _, p in h2.published("user offline")] == ["u2"]
    finally:
        await after.stop()


async def test_sync_keeps_loaded_rooms_until_ttl(tmp_path: Path, clock: FakeClock,
                                                 store: dict[str, str]) -> None:
    db = tmp_path / "room.sqlite3"
    pub1 = MemoryPublisher()
    first = await started(RoomService(pub1, room_config(db, **store), clock))
    h1 = Harness(first, pub1, clock)
    await h1.create(session(1), "lobby")
    await h1.join(session(1), "lobby")
    await first.stop()
    clock.advance(10_000)  # long after creation: a loaded room's TTL counts from the load
    pub = MemoryPublisher()
    second = await started(RoomService(pub, room_config(db, **store), clock))
    h2 = Harness(second, pub, clock)
    try:
        clock.advance(599)
        assert [r["id"] for r in (await h2.ok(session(2), "get rooms"))["rooms"]] == ["lobby"]
        clock.advance(1)
        assert (await h2.ok(session(2), "get rooms"))["rooms"] == []
    finally:
        await second.stop()


async def test_gateway_lost_drops_its_sockets_with_notices(h: Harness) -> None:
    a1, a2 = session(1), session(2)  # on gw1
    b = session(3, gateway="gw2")
    await connected(h, a1, a2, b, session(4, ns="/game"))
    await h.create(b, "lobby")
    for s in (a1, a2, b):
        await h.join(s, "lobby")
    await h.create(b, "gw1-only")
    await h.join(a1, "gw1-only")
    h.clear()
    await h.service.gateway_lost("gw1")
    assert [e.sid for e in h.service.registry.in_namespace("/")] == [b.sid]
    assert h.service.registry.count_by_namespace() == {"/": 1}
    assert [m.sid for m in h.service.membership.members("lobby")] == [b.sid]
    assert h.service.membership.count("gw1-only") == 0  # empty; kept for its grace period
    assert "gw1-only" in h.service.rooms
    left = [p.args[0] for _, p in h.published("user left")]
    assert [(n["socketId"], n["userCount"]) for n in left] == [(a1.sid, 2), (a2.sid, 1)]
    assert sorted(p.args[0]["userId"] for _, p in h.published("user offline")) == ["u1", "u2"]
    # (If gw1 turns out to be alive, the runner makes it SYNC before any of its requests
    # reach a handler again: tests/unit/test_backbone.py covers that.)


async def test_membership_without_registration_is_cleaned_on_gateway_loss(h: Harness) -> None:
    """A join that arrives before the SYNC after a restart still gets cleaned up."""
    a, b = session(1), session(2, gateway="gw2")
    await h.create(b, "lobby")
    await h.join(a, "lobby")  # a never CONNECTed to this instance
    await h.join(b, "lobby")
    h.clear()
    await h.service.gateway_lost("gw1")
    assert [m.sid for m in h.service.membership.members("lobby")] == [b.sid]
    assert [p.args[0]["userId"] for _, p in h.published("user offline")] == ["u1"]


async def test_wrong_arguments_never_crash_any_handler(h: Harness) -> None:
    """Every event with every kind of wrong argument gets a ClientError text, not a crash."""
    events = {ns: [e for (k, n, e) in h.service._routes if k == RequestKind.EVENT and n == ns]
              for ns in ("/", "/chat", "/admin")}
    weird: list[list[Any]] = [[], [None], [1], [[1, 2]], [{"roomId": None}], [b"\x00"],
                              [{"content": {}, "to": [], "roomId": {}, "message": 1}]]
    for ns, names in events.items():
        s = session(1, ns=ns)
        for name in names:
            for args in weird:
                reply = await h.event(s, name, *args)  # raises on a non-ClientError exception
                assert reply.ok or reply.error, (ns, name, args)


async def test_store_survives_restart_with_private_messages(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "room.sqlite3"
    pub = MemoryPublisher()
    first = await started(RoomService(pub, room_config(db), clock))
    h1 = Harness(first, pub, clock)
    await connected(h1, session(1), session(2))
    ack = await h1.ok(session(1), "private message", {"to": "u2", "content": "kept"})
    await first.stop()
    second = await started(RoomService(MemoryPublisher(), room_config(db), clock))
    try:
        assert isinstance(second.store, SqliteStore)
        row = second.store.db.execute(
            "SELECT id, namespace, room, sender, recipient, content, type FROM messages"
        ).fetchall()
        assert row == [(ack["messageId"], "/", None, "u1", "u2", "kept", "private")]
        mode = second.store.db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        await second.stop()


async def test_corrupt_password_hash_refuses_instead_of_crashing(h: Harness) -> None:
    a = session(1)
    await h.create(a, "vault", isPrivate=True, password="pw")
    h.service.rooms["vault"] = replace(h.service.rooms["vault"], password_hash="not-a-hash")
    assert (await h.join(a, "vault", "pw")).error == "wrong password"


async def test_sockets_of_a_lost_gateway_that_comes_back_are_announced_again(h: Harness) -> None:
    a = session(1)  # on gw1
    b = session(3, gateway="gw2")
    await connected(h, a, b)
    await h.create(b, "lobby")
    await h.join(a, "lobby")
    await h.join(b, "lobby")
    await h.service.gateway_lost("gw1")
    h.clear()
    await h.sync_states("gw1", (a, ("lobby",)))
    online = [p.args[0] for _, p in h.published("user online")]
    assert [n["userId"] for n in online] == ["u1"]
    joined = [p.args[0] for _, p in h.published("user joined")]
    assert [(n["socketId"], n["roomId"], n["userCount"]) for n in joined] == [
        (a.sid, "lobby", 2)]
    # A plain resync (e.g. after this service restarted) stays silent.
    h.clear()
    await h.sync_states("gw1", (a, ("lobby",)))
    assert h.published("user online") == [] and h.published("user joined") == []


async def test_get_sockets_lists_every_socket_with_its_transport(h: Harness) -> None:
    a, b = session(1), session(2, gateway="gw2", ns="/chat")
    a = replace(a, transport="polling")
    await connected(h, a, b)
    admin = replace(session(9, ns="/admin"), role="admin")
    await connected(h, admin)
    ack = await h.ok(admin, "get sockets")
    by_sid = {s["socketId"]: s for s in ack["sockets"]}
    assert by_sid[a.sid]["transport"] == "polling"
    assert (by_sid[b.sid]["ns"], by_sid[b.sid]["gateway"]) == ("/chat", "gw2")
    assert set(by_sid[a.sid]) == {"socketId", "ns", "gateway", "userId", "username",
                                  "transport", "connectedAt"}
    # The connection upgraded: the gateway says so with an UPDATE.
    reply = await h.update(replace(a, transport="websocket"))
    assert reply.ok
    ack = await h.ok(admin, "get sockets")
    assert {s["socketId"]: s["transport"] for s in ack["sockets"]}[a.sid] == "websocket"


# -- connection state recovery (docs/recovery.md) ----------------------------------------------
async def recovered(h: Harness, s: Session, gateway: str, rooms: tuple[str, ...]) -> Reply:
    """The CONNECT of socket ``s`` restored on ``gateway`` (its rooms from the recovery
    service), as the gateway sends it."""
    moved = replace(s, gateway=gateway)
    return await h.request(RequestKind.CONNECT, session=moved, auth={}, headers={},
                           gateway=gateway, recovery=Recovery.SKIP,
                           sockets=(SocketState(moved, rooms, "pid"),))


async def recoverable_in_lobby(h: Harness) -> tuple[Session, Session]:
    """A recoverable socket on gw1 and a plain one on gw2, both in room lobby."""
    a, b = replace(session(1), recoverable=True), session(2, gateway="gw2")
    await connected(h, a, b)
    await h.create(b, "lobby")
    await h.join(a, "lobby")
    await h.join(b, "lobby")
    return a, b


async def test_a_recovered_socket_moves_to_its_new_gateway_unseen(h: Harness) -> None:
    a, _ = await recoverable_in_lobby(h)
    h.clear()
    reply = await recovered(h, a, "gw3", ("lobby", "user:u1"))
    assert reply.ok and reply.emits == ()  # no welcome: the socket goes on
    assert h.published() == []  # nobody hears a thing
    entry = h.service.registry.get(a.sid)
    assert entry is not None and entry.gateway == "gw3"
    # The old gateway's late news of it, and that gateway's loss, are about another place.
    await h.request(RequestKind.DISCONNECT, session=a, gateway="gw1")
    await h.service.gateway_lost("gw1")
    assert h.published() == []
    assert h.service.membership.is_member("lobby", a.sid)


async def test_a_recovered_socket_that_had_departed_comes_back_announced(h: Harness) -> None:
    a, _ = await recoverable_in_lobby(h)
    await h.request(RequestKind.DISCONNECT, session=a, gateway="gw1")
    h.clear()
    assert (await recovered(h, a, "gw2", ("lobby",))).ok
    assert [p.args[0]["userId"] for _, p in h.published("user online")] == ["u1"]
    assert [(p.args[0]["socketId"], p.args[0]["userCount"])
            for _, p in h.published("user joined")] == [(a.sid, 2)]


async def test_recoverable_sockets_of_a_lost_gateway_depart_after_the_grace(
        tmp_path: Path, clock: FakeClock) -> None:
    pub = MemoryPublisher()
    config = room_config(tmp_path / "r.sqlite3", recovery_grace=0.05)
    service = await started(RoomService(pub, config, clock))
    h = Harness(service, pub, clock)
    try:
        kept, plain = replace(session(1), recoverable=True), session(2)
        await connected(h, kept, plain)
        h.clear()
        await h.service.gateway_lost("gw1")
        assert [p.args[0]["userId"] for _, p in h.published("user offline")] == ["u2"]
        deadline = asyncio.get_running_loop().time() + 5
        while len(h.published("user offline")) < 2:
            assert asyncio.get_running_loop().time() < deadline, "never departed"
            await asyncio.sleep(0.01)
        assert [p.args[0]["userId"] for _, p in h.published("user offline")] == ["u2", "u1"]
    finally:
        await service.stop()


async def test_a_recoverable_socket_back_within_the_grace_never_departs(
        tmp_path: Path, clock: FakeClock) -> None:
    pub = MemoryPublisher()
    config = room_config(tmp_path / "r.sqlite3", recovery_grace=0.2)
    service = await started(RoomService(pub, config, clock))
    h = Harness(service, pub, clock)
    try:
        kept = replace(session(1), recoverable=True)
        await connected(h, kept)
        await h.service.gateway_lost("gw1")
        assert kept.sid in h.service._departing
        assert (await recovered(h, kept, "gw2", ())).ok
        # The pending departure is cancelled, not merely late.
        assert kept.sid not in h.service._departing
        assert h.published("user offline") == []
        assert h.service.registry.get(kept.sid) is not None
    finally:
        await service.stop()
