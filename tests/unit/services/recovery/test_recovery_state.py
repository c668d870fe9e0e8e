"""services.recovery.state: the log, the sessions, taking and what was missed (pure)."""

from __future__ import annotations

from switchboard.services.recovery.state import (
    START,
    Attached,
    Missed,
    RecoveryState,
    Refusal,
    Taken,
)
from switchboard.shared.envelope import PubKind, Publication, Session, SocketState
from switchboard.shared.journal import offset, parse_offset

NS = frozenset({"/"})


def state_of(sid: str = "gwA.1", rooms: tuple[str, ...] = ("r1",), pid: str = "p1",
             ns: str = "/") -> SocketState:
    return SocketState(Session(sid, ns, "gwA", user_id="u1"), rooms, pid)


def emit(seq: int, room: str | None = "r1", origin: str = "o1", ns: str = "/",
         sids: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
         ack_event: str = "") -> Publication:
    return Publication(PubKind.EMIT, ns, "chat message", [seq], room=room, sids=sids,
                       exclude=exclude, ack_event=ack_event, origin=origin, seq=seq)


def contents(missed: Missed | Refusal) -> list[int]:
    assert isinstance(missed, Missed)
    return [pub.args[0] for _, pub in missed.entries]


def test_offsets_round_trip() -> None:
    assert offset("ab12", 255) == "ab12-ff"
    assert parse_offset("ab12-ff") == ("ab12", 255)
    assert parse_offset("nope") is None and parse_offset("a-zz") is None


def test_only_recoverable_emits_are_logged() -> None:
    s = RecoveryState(NS)
    s.publication(emit(1), 0.0)
    s.publication(emit(2, ns="/other"), 0.0)  # a namespace without recovery
    s.publication(emit(3, ack_event="answer"), 0.0)  # asks for an ack: not stored (as Node)
    s.publication(Publication(PubKind.EMIT, "/", "x", [], room="r1"), 0.0)  # unnumbered
    s.publication(emit(1), 0.0)  # a duplicate
    assert [key for _, key, _, _ in s.entries] == ["o1-1"]


def test_missed_is_what_reaches_the_socket_after_its_offset_in_log_order() -> None:
    s = RecoveryState(NS)
    s.publication(emit(1), 0.0)
    s.attach(state_of(), "gwA", 0.0)
    s.publication(emit(2), 0.0)
    s.publication(emit(3, room="elsewhere"), 0.0)
    s.publication(emit(4, room=None), 0.0)  # the whole namespace
    s.publication(emit(5, room=None, sids=("gwA.1",)), 0.0)  # to the socket itself
    s.publication(emit(6, room=None, sids=("gwA.2",)), 0.0)  # to another socket
    s.publication(emit(7, exclude=("gwA.1",)), 0.0)  # "to others": the socket sent it
    s.publication(emit(1, origin="o2"), 0.0)  # another publisher, interleaved
    s.publication(emit(8), 0.0)
    s.detach("gwA.1", "gwA", 1.0)
    taken = s.take("p1", "gwB", 2.0, "o1-2")
    assert isinstance(taken, Taken) and taken.previous == "gwA"
    assert taken.state.session.gateway == "gwB"
    missed = s.missed("p1", "o1-2")
    assert contents(missed) == [4, 5, 1, 8]
    assert isinstance(missed, Missed)
    assert [key for key, _ in missed.entries] == ["o1-4", "o1-5", "o2-1", "o1-8"]
    assert missed.floor == {"o1": 8, "o2": 1}
    # No offset yet (START): everything since the session began.
    assert contents(s.missed("p1", START)) == [2, 4, 5, 1, 8]


def test_take_refuses_unknown_expired_and_forgotten_offsets() -> None:
    s = RecoveryState(NS, window=10.0, max_entries=3)
    assert s.take("nobody", "gwB", 0.0) is Refusal.UNKNOWN
    s.attach(state_of(), "gwA", 0.0)
    for seq in range(1, 6):
        s.publication(emit(seq), 0.0)
    s.detach("gwA.1", "gwA", 0.0)
    assert s.take("p1", "gwB", 1.0, "o1-1") is Refusal.OFFSET  # beyond max_entries
    assert s.take("p1", "gwB", 1.0, "o9-1") is Refusal.OFFSET  # never logged
    assert isinstance(s.take("p1", "gwB", 1.0, "o1-4"), Taken)
    s.detach("gwA.1", "gwB", 2.0)
    assert s.take("p1", "gwC", 12.5, "o1-4") is Refusal.EXPIRED
    assert s.take("p1", "gwC", 12.5) is Refusal.UNKNOWN  # forgotten with its expiry


def test_an_attached_session_is_taken_only_with_force() -> None:
    s = RecoveryState(NS)
    s.attach(state_of(), "gwA", 0.0)
    assert s.take("p1", "gwB", 1.0) == Attached("gwA", "gwA.1")
    assert isinstance(s.take("p1", "gwB", 1.0, force=True), Taken)
    # A late report from the gateway it left does not take it back.
    s.attach(state_of(rooms=("old",)), "gwA", 2.0)
    assert s.sessions["p1"].gateway == "gwB"
    s.detach("gwA.1", "gwA", 2.0)
    assert s.sessions["p1"].attached
    s.discard("gwA.1", "gwA")
    assert "p1" in s.sessions
    s.discard("gwA.1", "gwB")
    assert "p1" not in s.sessions


def test_a_lost_gateway_detaches_its_sessions_and_a_sync_replaces_its_list() -> None:
    s = RecoveryState(NS)
    s.attach(state_of("gwA.1", pid="p1"), "gwA", 0.0)
    s.attach(state_of("gwA.2", pid="p2"), "gwA", 0.0)
    s.gateway_lost("gwA", 3.0)
    assert [h.attached for h in s.sessions.values()] == [False, False]
    s.synced("gwA", (state_of("gwA.2", pid="p2", rooms=("r9",)),), 4.0)
    assert not s.sessions["p1"].attached and s.sessions["p2"].attached
    assert s.sessions["p2"].state.rooms == ("r9",)


def test_a_server_side_disconnect_ends_the_sessions_it_reaches() -> None:
    s = RecoveryState(NS)
    s.attach(state_of("gwA.1", rooms=("user:u1",), pid="p1"), "gwA", 0.0)
    s.attach(state_of("gwA.2", rooms=("user:u2",), pid="p2"), "gwA", 0.0)
    s.detach("gwA.1", "gwA", 1.0)
    # A ban disconnects every socket of the user (its user room): not recoverable after.
    s.publication(Publication(PubKind.DISCONNECT, "/", "banned", [], room="user:u1",
                              origin="m", seq=1), 2.0)
    assert list(s.sessions) == ["p2"]
    s.publication(Publication(PubKind.DISCONNECT, "*", sids=("gwA.2",), origin="m", seq=2), 2.0)
    assert not s.sessions


def test_expiry_forgets_old_entries_and_detached_sessions_only() -> None:
    s = RecoveryState(NS, window=10.0)
    s.attach(state_of("gwA.1", pid="p1"), "gwA", 0.0)
    s.attach(state_of("gwA.2", pid="p2"), "gwA", 0.0)
    s.publication(emit(1), 0.0)
    s.publication(emit(2), 8.0)
    s.detach("gwA.1", "gwA", 1.0)
    s.expire(12.0)
    assert [key for _, key, _, _ in s.entries] == ["o1-2"]
    assert list(s.sessions) == ["p2"]
    assert s.stats()["expired"] == 1 and s.stats()["logEntries"] == 1


def test_sessions_are_bounded() -> None:
    s = RecoveryState(NS, max_sessions=2)
    for n in range(3):
        s.attach(state_of(f"gwA.{n}", pid=f"p{n}"), "gwA", 0.0)
    assert list(s.sessions) == ["p1", "p2"]
    assert "gwA.0" not in s.pid_of
