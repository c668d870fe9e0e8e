"""ModerationService through the real dispatch — bans, mutes, admin actions, the sockets it
counts — and the policy it publishes, as one gateway enforces it: on events
(:class:`EventPolicy`) and on connects (:class:`Gatekeeper`: connect limits, bans)."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from prometheus_client import REGISTRY

from switchboard.gateway.gatekeeper import Gatekeeper
from switchboard.gateway.policing import EventPolicy
from switchboard.services.moderation import Config, ModerationService, create
from switchboard.services.moderation.store import SqliteModerationStore
from switchboard.shared import topics
from switchboard.shared.envelope import (
    PubKind,
    Recovery,
    Reply,
    RequestKind,
    Session,
    SocketState,
)
from switchboard.shared.errors import Refused
from switchboard.shared.policy import (
    PRUNE_AT,
    Change,
    PolicyReplica,
    PolicySnapshot,
    PolicyUpdate,
)
from switchboard.shared.publisher import MemoryPublisher
from switchboard.shared.ratewindow import SlidingWindow, client_key
from switchboard.shared.testing import ServiceHarness


class Clock:
    """A settable wall clock: tests move time instead of sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Gateway:
    """One gateway's side: moderation through the real dispatch (one harness, so one SYNC),
    and the EventPolicy that follows the policy moderation publishes (snapshot, then each
    update, as gateway.policing.PolicyFeed does over the broker)."""

    def __init__(self, svc: ModerationService, publisher: MemoryPublisher, clock: Clock) -> None:
        self.harness = ServiceHarness(svc)
        self.publisher = publisher
        self.replica = PolicyReplica()
        self.policy = EventPolicy(self.replica, required=lambda: True, clock=clock)
        self.gate = Gatekeeper(self.replica, keys_required=lambda: False,
                               policy_required=lambda: True, clock=clock)
        self.seen = 0

    async def follow(self) -> None:
        if not self.replica.ready:
            reply = await self.harness.request(RequestKind.POLICY)
            self.replica.load(PolicySnapshot.from_list((reply.args or [None])[0]))
        for _, pub in self.publisher.published[self.seen:]:
            if pub.kind == PubKind.POLICY:
                self.replica.apply(PolicyUpdate.from_list(pub.args[0]))
        self.seen = len(self.publisher.published)


_gateways: weakref.WeakKeyDictionary[ModerationService, Gateway] = weakref.WeakKeyDictionary()


async def make(tmp_path: Path, clock: Clock | None = None, **kw: Any
               ) -> tuple[ModerationService, MemoryPublisher]:
    """The service opened, as the runner has it (its store open, its bans loaded)."""
    publisher = MemoryPublisher()
    clock = clock or Clock()
    config = Config(moderation_db=str(tmp_path / "moderation.sqlite3"), **kw)
    svc = ModerationService(publisher, config, clock)
    await svc.open()
    _gateways[svc] = Gateway(svc, publisher, clock)
    return svc, publisher


def session(n: int = 1, ns: str = "/", user: str | None = "u1", role: str | None = "user",
            address: str = "10.0.0.1", gateway: str = "gw1") -> Session:
    return Session(sid=f"{gateway}.s{n}", ns=ns, gateway=gateway, address=address,
                   user_id=user, username=user, role=role)


async def run(svc: ModerationService, kind: RequestKind, sess: Session, event: str = "",
              args: list[Any] | None = None, recovery: Recovery = Recovery.NONE) -> Reply:
    """Through the real dispatch (a ClientError is a failed reply, as in production)."""
    return await _gateways[svc].harness.request(kind, session=sess, event=event,
                                                args=args or [], gateway=sess.gateway,
                                                recovery=recovery)


class Verdict(NamedTuple):
    ok: bool
    error: str | None


async def event(svc: ModerationService, sess: Session, name: str, *args: Any) -> Verdict:
    """How the gateway judges event ``name`` of ``sess`` by the policy moderation published."""
    gateway = _gateways[svc]
    await gateway.follow()
    refusal = gateway.policy.judge(sess, name)
    return Verdict(refusal is None, refusal)


async def admin(svc: ModerationService, name: str, payload: Any, role: str = "admin") -> Reply:
    return await run(svc, RequestKind.EVENT, session(99, "/admin", "root", role), name, [payload])


async def connect(svc: ModerationService, sess: Session,
                  recovery: Recovery = Recovery.NONE, via: Gateway | None = None) -> Verdict:
    """How the gateway (``via``, else the first) admits ``sess`` by the policy moderation
    published; one admitted is told to moderation (CONNECTED), as the gateway's pipeline
    does."""
    gateway = via or _gateways[svc]
    await gateway.follow()
    try:
        gateway.gate.admit(sess, {}, {}, recovery)
    except Refused as exc:
        return Verdict(False, exc.message)
    await run(svc, RequestKind.CONNECTED, sess, recovery=recovery)
    return Verdict(True, None)


def refusals(reason: str) -> float:
    """Events the gateways refused (gateway.policing)."""
    value = REGISTRY.get_sample_value("switchboard_gateway_policy_refusals_total",
                                      {"reason": reason})
    return value or 0.0


async def test_routes(tmp_path: Path) -> None:
    svc, _ = await make(tmp_path)
    routes = {(r.kind, r.ns, r.event, r.priority) for r in svc.info().routes}
    assert not any(r[0] == RequestKind.FILTER for r in routes)  # events never come here
    assert not any(r[0] == RequestKind.CONNECT for r in routes)  # nor are connects
    assert (RequestKind.CONNECTED, "*", "", 100) in routes
    assert (RequestKind.DISCONNECT, "*", "", 100) in routes
    assert (RequestKind.POLICY, "*", "", 100) in routes
    assert (RequestKind.SYNC, "*", "", 100) in routes
    assert {(r[1], r[2]) for r in routes if r[0] == RequestKind.EVENT} == {
        ("/admin", "ban user"), ("/admin", "mute user"), ("/admin", "kick user")}


# -- event limits, as the gateway enforces them ----------------------------------------------------

async def test_rate_limit_per_socket(tmp_path: Path) -> None:
    clock = Clock()
    svc, _ = await make(tmp_path, clock, user_event_limit=0)
    anon = session(user=None)
    for _ in range(20):
        assert (await event(svc, anon, "get rooms")).ok
        clock.advance(0.1)
    before = refusals("rate_limit")
    refused = await event(svc, anon, "get rooms")
    assert (refused.ok, refused.error) == (False, "rate limit exceeded")
    assert refusals("rate_limit") == before + 1
    assert (await event(svc, session(2, user=None), "get rooms")).ok  # other sockets unaffected
    clock.advance(8.05)  # the first hit (at t=0) leaves the 10 s window, the second not
    assert (await event(svc, anon, "get rooms")).ok
    assert not (await event(svc, anon, "get rooms")).ok


async def test_sliding_window_has_no_boundary_burst(tmp_path: Path) -> None:
    clock = Clock()
    svc, _ = await make(tmp_path, clock, user_event_limit=0)
    clock.advance(9.9)
    for _ in range(20):
        assert (await event(svc, session(), "get rooms")).ok
    clock.advance(0.2)  # a fixed window would reset here
    assert not (await event(svc, session(), "get rooms")).ok


async def test_rate_limit_per_user_across_sockets(tmp_path: Path) -> None:
    svc, _ = await make(tmp_path, event_limit=100, user_event_limit=20)
    for i in range(20):
        assert (await event(svc, session(1 + i % 4), "get rooms")).ok
    assert (await event(svc, session(5), "get rooms")).error == "rate limit exceeded"
    assert (await event(svc, session(6, user="u2"), "get rooms")).ok


async def test_refused_events_do_not_count(tmp_path: Path) -> None:
    clock = Clock()
    svc, _ = await make(tmp_path, clock, event_limit=2, user_event_limit=100)
    assert (await event(svc, session(), "get rooms")).ok
    assert (await event(svc, session(), "get rooms")).ok
    for _ in range(50):
        assert not (await event(svc, session(), "get rooms")).ok
    clock.advance(10.0)
    assert (await event(svc, session(), "get rooms")).ok


async def test_a_user_spread_over_gateways_shares_its_limit_between_them(
        tmp_path: Path) -> None:
    """Moderation counts on how many gateways a user's sockets are; each gateway then lets
    it send its share, so that together they never exceed the limit."""
    svc, publisher = await make(tmp_path, event_limit=100, user_event_limit=20)
    here, there = session(1), session(2, gateway="gw2")
    assert (await connect(svc, here)).ok and (await connect(svc, there)).ok
    spread = [PolicyUpdate.from_list(p.args[0]) for _, p in publisher.published
              if p.kind == PubKind.POLICY]
    assert [(u.user, u.count) for u in spread] == [("u1", 2)]
    sent = 0
    while (await event(svc, here, "get rooms")).ok:
        sent += 1
    assert sent == 10  # the other gateway may let it send the other 10
    await run(svc, RequestKind.DISCONNECT, there)
    assert (await event(svc, here, "get rooms")).ok  # all of the limit is here again


async def test_a_lost_gateway_and_a_sync_correct_the_spread(tmp_path: Path) -> None:
    svc, _ = await make(tmp_path)
    assert (await connect(svc, session(1))).ok
    assert (await connect(svc, session(2, gateway="gw2"))).ok
    assert svc.spread.count("u1") == 2
    await svc.gateway_lost("gw2")
    assert svc.spread.count("u1") == 1
    harness = ServiceHarness(svc, gateway="gw3")
    await harness.sync("gw3", [SocketState(session(3, gateway="gw3"), ())])
    assert svc.spread.count("u1") == 2
    await harness.sync("gw3", [])
    assert svc.spread.count("u1") == 1


def test_sliding_window_prunes_quiet_keys() -> None:
    clock = Clock()
    window = SlidingWindow(3, 10.0, clock)
    for key in "abc":
        assert window.hit(key)
    clock.advance(11)
    assert window.hit("d")
    assert len(window) == 1
    assert window.retry_after("d") == 0.0
    assert window.hit("d") and window.hit("d") and not window.hit("d")
    assert window.retry_after("d") == pytest.approx(10.0)
    unlimited = SlidingWindow(0, 10.0, clock)
    assert all(unlimited.hit("x") for _ in range(1000))


# -- connect -------------------------------------------------------------------------------------

async def test_anonymous_connects_are_limited_per_address(tmp_path: Path) -> None:
    clock = Clock()
    svc, _ = await make(tmp_path, clock, connect_limit=50, connect_window=60.0)
    for i in range(50):
        assert (await connect(svc, session(i, user=None, address="192.0.2.7"))).ok
    refused = await connect(svc, session(51, user=None, address="192.0.2.7"))
    assert (refused.ok, refused.error) == (False, "Rate limit exceeded")
    assert (await connect(svc, session(52, user=None, address="192.0.2.8"))).ok
    clock.advance(60.0)
    assert (await connect(svc, session(53, user=None, address="192.0.2.7"))).ok


async def test_users_with_valid_tokens_are_limited_each_not_per_address(tmp_path: Path) -> None:
    """A thousand users behind one NAT address are no flood: each has the limit."""
    clock = Clock()
    svc, _ = await make(tmp_path, clock, connect_limit=3, connect_window=60.0)
    for i in range(1000):
        assert (await connect(svc, session(i, user=f"u{i}", address="192.0.2.7"))).ok, i
    for i in range(2):
        assert (await connect(svc, session(2000 + i, user="u1", address="192.0.2.7"))).ok
    refused = await connect(svc, session(3000, user="u1", address="192.0.2.9"))
    assert (refused.ok, refused.error) == (False, "Rate limit exceeded")  # u1's 4th
    # Anonymous sockets of that address have their own budget, untouched by the users'.
    assert (await connect(svc, session(4000, user=None, address="192.0.2.7"))).ok


async def test_connects_spread_over_gateways_are_limited_cluster_wide(tmp_path: Path) -> None:
    """Each gateway sees half of a user's connects; moderation counts them all and throttles
    the user on every gateway once they reach the limit, until its window frees."""
    clock = Clock()
    svc, publisher = await make(tmp_path, clock, connect_limit=4, connect_window=60.0)
    gateways = [_gateways[svc], Gateway(svc, publisher, clock)]
    for i in range(4):
        assert (await connect(svc, session(i, gateway=f"gw{i % 2 + 1}"),
                              via=gateways[i % 2])).ok, i
    for n, gateway in enumerate(gateways):
        refused = await connect(svc, session(10 + n), via=gateway)
        assert refused.error == "Rate limit exceeded", n
    [throttle] = [PolicyUpdate.from_list(p.args[0]) for _, p in publisher.published
                  if p.kind == PubKind.POLICY
                  and PolicyUpdate.from_list(p.args[0]).change == Change.THROTTLE]
    assert (throttle.user, throttle.until) == ("user:u1", clock() + 60.0)
    late = Gateway(svc, publisher, clock)  # a gateway that starts now has it in its snapshot
    assert (await connect(svc, session(20), via=late)).error == "Rate limit exceeded"
    assert (await connect(svc, session(21, user="u2"), via=late)).ok
    clock.advance(60.0)
    assert (await connect(svc, session(22), via=gateways[1])).ok


def test_client_key() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("192.0.2.7:5555") == "192.0.2.7"
    assert client_key("[2001:db8::1]:443") == "2001:db8::/64"
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("unix-socket") == "unix-socket"


async def test_anonymous_connect_without_address_is_not_limited(tmp_path: Path) -> None:
    svc, _ = await make(tmp_path, connect_limit=1)
    for i in range(5):
        assert (await connect(svc, session(i, user=None, address=""))).ok


# -- bans ----------------------------------------------------------------------------------------

async def test_ban_disconnects_every_namespace_and_refuses_reconnects(tmp_path: Path) -> None:
    clock = Clock()
    svc, publisher = await make(tmp_path, clock)
    reply = await admin(svc, "ban user", {"userId": "u1", "reason": "<b>spam</b>",
                                          "seconds": 3600})
    assert reply.ok and reply.ack == [{"success": True}]
    assert [(topic, p.kind, p.ns, p.room, p.event, p.args) for topic, p in publisher.published
            if p.kind != PubKind.POLICY] == [
        (topics.room(ns, "user:u1"), PubKind.DISCONNECT, ns, "user:u1", "banned",
         [{"reason": "spam"}]) for ns in ("/", "/chat", "/game", "/admin")]
    [(topic, change)] = [(t, PolicyUpdate.from_list(p.args[0])) for t, p in publisher.published
                         if p.kind == PubKind.POLICY]
    assert topic == topics.POLICY and (change.user, change.until) == ("u1", clock() + 3600)
    refused = await connect(svc, session())
    assert (refused.ok, refused.error) == (False, "Banned")
    assert (await event(svc, session(), "get rooms")).error == "you are banned"
    assert (await connect(svc, session(2, user="u2"))).ok
    clock.advance(3600)
    assert (await connect(svc, session())).ok  # the ban ended


async def test_ban_persists_across_instances(tmp_path: Path, store: dict[str, str]) -> None:
    clock = Clock()
    svc, _ = await make(tmp_path, clock, **store)
    assert (await admin(svc, "ban user", {"userId": "u1", "reason": "spam"})).ok
    assert (await admin(svc, "ban user", {"userId": "u2", "reason": "x", "seconds": 60})).ok
    await svc.stop()
    clock.advance(120)
    again, _ = await make(tmp_path, clock, **store)
    assert set(again.bans) == {"u1"}  # the timed ban ended while the service was down
    assert (await connect(again, session())).error == "Banned"
    assert (await connect(again, session(2, user="u2"))).ok
    await again.stop()


async def test_ban_namespaces_configurable(tmp_path: Path) -> None:
    svc, publisher = await make(tmp_path, ban_namespaces=("/", "/chat"))
    assert (await admin(svc, "ban user", {"userId": "u1", "reason": "r"})).ok
    assert [p.ns for _, p in publisher.published if p.kind == PubKind.DISCONNECT] == ["/", "/chat"]


async def test_admin_cannot_ban_themselves(tmp_path: Path) -> None:
    svc, publisher = await make(tmp_path)
    reply = await admin(svc, "ban user", {"userId": "root", "reason": "oops"})
    assert (reply.ok, reply.error) == (False, "userId: you cannot ban yourself")
    assert publisher.published == []


# -- mutes ---------------------------------------------------------------------------------------

async def test_mute_refuses_messages_until_it_ends(tmp_path: Path) -> None:
    clock = Clock()
    svc, _ = await make(tmp_path, clock, event_limit=0, user_event_limit=0)
    assert (await admin(svc, "mute user", {"userId": "u1", "seconds": 30})).ok
    before = refusals("muted")
    for ns, name, payload in [
        ("/", "chat message", {"content": "hi"}),
        ("/", "private message", {"to": "u2", "content": "hi"}),
        ("/", "room message", {"roomId": "r", "message": "hi"}),
        ("/chat", "chat message", {"content": "hi"}),
        ("/chat", "private message", {"to": "u2", "content": "hi"}),
    ]:
        reply = await event(svc, session(ns=ns), name, payload)
        assert (reply.ok, reply.error) == (False, "you are muted for 30 more seconds")
    assert refusals("muted") == before + 5
    assert (await event(svc, session(), "join room", "r")).ok  # only messages are muted
    assert (await event(svc, session(user="u2"), "chat message", "hi")).ok
    clock.advance(29.5)
    assert (await event(svc, session(), "chat message", "hi")).error == (
        "you are muted for 1 more second")
    clock.advance(0.5)
    assert (await event(svc, session(), "chat message", "hi")).ok



async def test_mute_persists_across_instances(tmp_path: Path, store: dict[str, str]) -> None:
    clock = Clock()
    svc, _ = await make(tmp_path, clock, **store)
    assert (await admin(svc, "mute user", {"userId": "u1", "seconds": 300})).ok
    await svc.stop()
    clock.advance(100)
    again, _ = await make(tmp_path, clock, **store)
    assert (await event(again, session(), "chat message", "hi")).error == (
        "you are muted for 200 more seconds")
    await again.stop()


# -- kick and the admin check ---------------------------------------------------------------------

async def test_kick_user(tmp_path: Path) -> None:
    svc, publisher = await make(tmp_path)
    assert (await admin(svc, "kick user", "gw7.abc")).ack == [{"success": True}]
    assert (await admin(svc, "kick user", {"socketId": "gw8.x", "reason": "flood"})).ok
    assert [(t, p.kind, p.ns, p.sids, p.event, p.args) for t, p in publisher.published] == [
        (topics.socket("gw7.abc"), PubKind.DISCONNECT, "*", ("gw7.abc",), "kicked",
         [{"reason": "kicked by an administrator"}]),
        (topics.socket("gw8.x"), PubKind.DISCONNECT, "*", ("gw8.x",), "kicked",
         [{"reason": "flood"}]),
    ]
    bad = await admin(svc, "kick user", "nonsense")
    assert (bad.ok, bad.error) == (False, "socketId: not a socket id")


@pytest.mark.parametrize(("name", "payload"), [
    ("ban user", {"userId": "u1", "reason": "r"}),
    ("mute user", {"userId": "u1", "seconds": 5}),
    ("kick user", "gw1.s1"),
])
async def test_admin_events_need_the_admin_role(tmp_path: Path, name: str, payload: Any) -> None:
    svc, publisher = await make(tmp_path)
    reply = await admin(svc, name, payload, role="user")
    assert (reply.ok, reply.error) == (False, "Access denied: admin role required")
    assert publisher.published == [] and not svc.bans and not svc.mutes


async def test_create_uses_config(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "dir" / "m.sqlite3"
    svc = create(Config(moderation_db=str(db)), MemoryPublisher())
    assert isinstance(svc, ModerationService) and db.exists()
    assert isinstance(svc.store, SqliteModerationStore)
    mode = svc.store.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    await svc.store.close()


async def test_a_socket_recovered_on_another_gateway_is_counted_where_it_is(
        tmp_path: Path) -> None:
    """Recovery keeps the sid and changes the gateway: the socket moves; the DISCONNECT that
    comes late from the gateway it left does not forget it, nor does that gateway's loss."""
    svc, _ = await make(tmp_path)
    assert (await connect(svc, session(1, gateway="gw1"))).ok
    assert (await connect(svc, session(2, gateway="gw2"))).ok
    assert svc.spread.count("u1") == 2
    moved = Session(sid="gw1.s1", ns="/", gateway="gw2", address="10.0.0.1", user_id="u1",
                    username="u1", role="user")
    assert (await connect(svc, moved)).ok
    assert svc.spread.count("u1") == 1  # both sockets on gw2 now
    await run(svc, RequestKind.DISCONNECT, session(1, gateway="gw1"))
    await svc.gateway_lost("gw1")
    assert svc.spread.counted("gw1.s1") and svc.spread.count("u1") == 1
    await run(svc, RequestKind.DISCONNECT, moved)
    assert not svc.spread.counted("gw1.s1")


async def test_a_socket_told_twice_is_counted_once_and_a_refused_one_not_at_all(
        tmp_path: Path) -> None:
    svc, _ = await make(tmp_path, connect_limit=1)
    first = session(1)
    assert (await connect(svc, first)).ok
    await run(svc, RequestKind.CONNECTED, first)  # told again: still one socket
    assert svc.spread.count("u1") == 1
    assert (await connect(svc, session(2))).error == "Rate limit exceeded"
    assert not svc.spread.counted(session(2).sid)
    assert svc.spread.counted(first.sid)


async def test_a_recovered_socket_is_no_new_connect_but_its_ban_holds(tmp_path: Path) -> None:
    svc, _ = await make(tmp_path, connect_limit=1)
    assert (await connect(svc, session(1))).ok
    assert (await connect(svc, session(1), Recovery.SKIP)).ok  # not counted against it
    assert (await connect(svc, session(2), Recovery.CHECK)).error == "Rate limit exceeded"
    assert (await admin(svc, "ban user", {"userId": "u1", "reason": "spam"})).ok
    assert (await connect(svc, session(1), Recovery.SKIP)).error == "Banned"


async def test_ended_throttles_are_swept_once_the_table_doubles(tmp_path: Path) -> None:
    """Each anonymous address that fills its window leaves a throttle; ended ones go."""
    clock = Clock()
    svc, _ = await make(tmp_path, clock, connect_limit=1, connect_window=60.0)
    for n in range(PRUNE_AT + 1):
        assert (await connect(svc, session(n, user=None, address=f"10.1.{n // 250}.{n % 250}"),
                              )).ok, n
    assert len(svc.throttles) == PRUNE_AT + 1
    clock.advance(61.0)
    assert (await connect(svc, session(9999, user=None, address="10.9.9.9"))).ok
    assert list(svc.throttles) == ["10.9.9.9"]
