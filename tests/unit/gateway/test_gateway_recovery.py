"""Connection state recovery at the gateway (gateway.recovery, gateway.pipelines, the fan-out's
offsets): scripted services, a real index, a real polling session; what the client would get
is read from its poll queue."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from switchboard.gateway import metrics as m
from switchboard.gateway.fanout import Fanout
from switchboard.gateway.recovery import Recovery, RecoverySettings
from switchboard.shared.envelope import (
    Emit,
    PubKind,
    Publication,
    Reply,
    RequestKind,
    Route,
    ServiceInfo,
    Session,
)
from switchboard.shared.envelope import Recovery as Mode
from tests.support.pipeline_world import DEFAULT_SERVICES, K, World, ok

INFOS = (*DEFAULT_SERVICES, ServiceInfo("recovery", "i", (
    Route(K.RECOVER, "*"), Route(K.MISSED, "*"), Route(K.ATTACH, "*"), Route(K.DETACH, "*"),
    Route(K.DISCONNECT, "*"), Route(K.SYNC, "*"))))
OLD = Session("gw0.old", "/", "gw0", user_id="u1", username="alice", recoverable=True)


def packet(text: str) -> Any:
    return json.loads(text[2:])


class Actions:
    def __init__(self, world: RecoveryWorld) -> None:
        self.world = world

    def release(self, pub: Publication) -> None:
        self.world.pipelines.departures.release(pub)


class RecoveryWorld(World):
    def __init__(self, script: Any, holds: bool | None = None, grace: float = 60.0) -> None:
        self.holds_answer = holds
        self.grace = grace
        self.asked_holds: list[tuple[str, str]] = []
        super().__init__(script, INFOS)
        self.fanout = Fanout(self.subs, self.index, Actions(self), m.EventMeters(),  # type: ignore[arg-type]
                             recoverable=frozenset({"/"}))

    def make_recovery(self) -> Recovery:
        self.recovery = Recovery(RecoverySettings(frozenset({"/"}), True, self.grace),
                                 self.services, self._spawn, lambda: "recovery", self._holds)
        return self.recovery

    async def _holds(self, gateway: str, sid: str) -> bool | None:
        self.asked_holds.append((gateway, sid))
        return self.holds_answer

    def told(self, kind: RequestKind) -> list[dict[str, Any]]:
        return [fields for service, k, fields in self.services.seen
                if service == "recovery" and k == kind]


def emit(seq: int, origin: str = "o1", room: str | None = "lobby") -> Publication:
    return Publication(PubKind.EMIT, "/", "chat message", [{"n": seq}], room=room,
                       origin=origin, seq=seq)


def plain(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
    if kind == K.CONNECT and service == "auth":
        return ok(session=fields["session"].with_user("u1", "alice", "user"),
                  joins=("user:u1",))
    if kind == K.CONNECT and service == "room":
        return ok(emits=(Emit("welcome", [{"hi": 1}]),))
    if kind == K.RECOVER:
        return Reply(0, ok=False, error="unknown")
    return ok()


async def test_a_new_socket_gets_a_pid_and_events_carry_offsets() -> None:
    w = RecoveryWorld(plain)
    sock = await w.connected()
    connect, welcome = w.sent()
    assert packet(connect) == {"sid": sock.sid, "pid": sock.pid} and len(sock.pid) >= 20
    # A reply's emit is not in the log: it carries the socket's position so far ("0").
    assert packet(welcome) == ["welcome", {"hi": 1}, "0"]
    await asyncio.gather(*w.tasks)
    [attach] = w.told(K.ATTACH)
    assert attach["sockets"][0].pid == sock.pid
    assert attach["sockets"][0].rooms == ("user:u1",)
    # A logged publication: its offset last, and the socket's position moves to it.
    w.index.join(sock, "lobby")
    w.fanout.deliver(emit(0x2a))
    assert [packet(p) for p in w.sent()] == [["chat message", {"n": 42}, "o1-2a"]]
    assert sock.offset == "o1-2a"
    await asyncio.gather(*w.tasks)
    assert w.told(K.ATTACH)[-1]["sockets"][0].rooms == ("lobby", "user:u1")  # rooms changed


def restoring(missed: list[list[Any]], floor: dict[str, int], during: list[Publication],
              world: list[RecoveryWorld]) -> Any:
    def script(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
        if kind == K.RECOVER:
            return ok(session=OLD, joins=("lobby", "user:u1"))
        if kind == K.MISSED:
            for pub in during:  # live publications arriving while the replay is fetched
                world[0].fanout.deliver(pub)
            return ok(args=[missed, floor])
        if kind == K.CONNECT:
            return ok()
        return ok()
    return script


async def test_a_recovering_connect_restores_the_socket_replays_then_goes_live_once() -> None:
    holder: list[RecoveryWorld] = []
    missed = [["o1-5", "chat message", [{"n": 5}]], ["o2-1", "chat message", [{"n": 100}]],
              ["o1-6", "chat message", [{"n": 6}]]]
    # Arriving during the restore: o1 #6 again (replayed already), o1 #7 (new), o2 #2 (new).
    during = [emit(6), emit(7), emit(2, origin="o2")]
    w = RecoveryWorld(restoring(missed, {"o1": 6, "o2": 1}, during, holder))
    holder.append(w)
    sock = await w.connected({"token": "t", "pid": "P", "offset": "o1-4"})
    assert sock.sid == OLD.sid and sock.pid == "P" and sock.session.gateway == "gw1"
    assert sock.rooms == {"lobby", "user:u1"}
    sent = [packet(p) for p in w.sent()]
    assert sent == [
        {"sid": OLD.sid, "pid": "P"},
        ["chat message", {"n": 5}, "o1-5"],
        ["chat message", {"n": 100}, "o2-1"],
        ["chat message", {"n": 6}, "o1-6"],
        ["chat message", {"n": 7}, "o1-7"],
        ["chat message", {"n": 2}, "o2-2"],
    ]
    # Every CONNECT stage saw a restored socket, middlewares skipped, with its rooms.
    stages = [f for s, k, f in w.services.seen if k == K.CONNECT]
    assert [f["recovery"] for f in stages] == [Mode.SKIP, Mode.SKIP]
    assert stages[0]["sockets"][0].rooms == ("lobby", "user:u1")
    # Live again: what the replay covered is skipped, the rest delivered.
    w.fanout.deliver(emit(6))
    w.fanout.deliver(emit(8))
    assert [packet(p) for p in w.sent()] == [["chat message", {"n": 8}, "o1-8"]]
    # It follows its own socket topic (its id names another gateway).
    assert b"ggw0\x00gw0.old\x00" in w.subs.topics


async def test_an_unknown_pid_is_a_new_socket() -> None:
    w = RecoveryWorld(plain)
    sock = await w.connected({"token": "t", "pid": "nope", "offset": "x-1"})
    assert sock.sid != OLD.sid and sock.pid != "nope"
    assert packet(w.sent()[0]) == {"sid": sock.sid, "pid": sock.pid}


async def test_a_pid_of_another_namespace_is_a_new_socket_and_stays_recoverable() -> None:
    def script(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
        if kind == K.RECOVER:
            return ok(session=replace(OLD, ns="/chat"), joins=("user:u1",))
        return plain(service, kind, fields)

    w = RecoveryWorld(script)
    sock = await w.connected({"token": "t", "pid": "P", "offset": "o1-4"})
    assert sock.sid != OLD.sid and sock.pid != "P"
    assert [f["session"].sid for f in w.told(K.DETACH)] == [OLD.sid]


async def test_a_session_still_connected_elsewhere_is_not_taken() -> None:
    def script(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
        if kind == K.RECOVER:
            return Reply(0, ok=False, error="attached", args=["gw0", OLD.sid])
        return plain(service, kind, fields)

    w = RecoveryWorld(script, holds=True)
    sock = await w.connected({"token": "t", "pid": "P", "offset": "o1-4"})
    assert w.asked_holds == [("gw0", OLD.sid)]
    assert sock.sid != OLD.sid
    assert [f["args"] for f in w.told(K.RECOVER)] == [["P", "o1-4"]]  # not forced


async def test_a_session_attached_to_a_gateway_that_cannot_answer_is_taken() -> None:
    holder: list[RecoveryWorld] = []
    restore = restoring([], {}, [], holder)

    def script(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
        if kind == K.RECOVER and fields["args"][-1] is not True:
            return Reply(0, ok=False, error="attached", args=["gw0", OLD.sid])
        return restore(service, kind, fields)

    w = RecoveryWorld(script, holds=None)
    holder.append(w)
    sock = await w.connected({"token": "t", "pid": "P", "offset": "o1-4"})
    assert sock.sid == OLD.sid
    assert [f["args"] for f in w.told(K.RECOVER)] == [["P", "o1-4"], ["P", "o1-4", True]]


async def test_a_dropped_connection_detaches_and_departs_after_the_grace() -> None:
    w = RecoveryWorld(plain, grace=0.05)
    sock = await w.connected()
    w.pipelines.departures.drop_socket(sock, recoverable=True)
    await asyncio.gather(*w.tasks)
    assert [f["session"].sid for f in w.told(K.DETACH)] == [sock.sid]
    departures = [s for s, k, _ in w.services.seen if k == K.DISCONNECT]
    assert departures == []  # not yet: it may come back
    deadline = asyncio.get_running_loop().time() + 5
    while not [s for s, k, _ in w.services.seen if k == K.DISCONNECT]:
        assert asyncio.get_running_loop().time() < deadline, "never departed"
        await asyncio.sleep(0.01)
        await asyncio.gather(*w.tasks)
    # Everyone who listens but the recovery service, which was told DETACH instead.
    assert sorted(s for s, k, _ in w.services.seen if k == K.DISCONNECT) == ["auth", "room"]


async def test_recovered_elsewhere_within_the_grace_its_departure_is_never_told() -> None:
    w = RecoveryWorld(plain, grace=60.0)
    sock = await w.connected()
    w.pipelines.departures.drop_socket(sock, recoverable=True)
    assert sock.sid in w.recovery.deferred
    w.fanout.deliver(Publication(PubKind.RELEASE, "/", args=["gw2"], sids=(sock.sid,),
                                 origin="r", seq=1))
    assert w.recovery.deferred == {}


async def test_a_socket_that_leaves_on_purpose_is_forgotten_at_once() -> None:
    w = RecoveryWorld(plain)
    sock = await w.connected()
    w.pipelines.drop_socket(sock, "client namespace disconnect")
    await asyncio.gather(*w.tasks)
    assert [f["session"].sid for f in w.told(K.DISCONNECT)] == [sock.sid]
    assert sorted(s for s, k, _ in w.services.seen if k == K.DISCONNECT) == [
        "auth", "recovery", "room"]
    assert w.recovery.deferred == {}
