"""The policy replica a gateway keeps: snapshot, updates in order, behind on a gap or a new
instance, and what it answers; every message byte for byte through its codec."""

from __future__ import annotations

from switchboard.shared.policy import (
    PRUNE_AT,
    Applied,
    Change,
    PolicyReplica,
    PolicySnapshot,
    PolicyUpdate,
    ReplicaState,
    Rules,
)

NOW = 1_700_000_000.0


def update(version: int, change: Change, user: str = "u1", until: float | None = None,
           count: int = 1, instance: str = "m1") -> PolicyUpdate:
    return PolicyUpdate(instance, version, change, user, until, count)


def test_messages_round_trip_through_their_codec() -> None:
    rules = Rules(5, 7, 3.0, ("/ chat message",))
    snapshot = PolicySnapshot("m1", 4, rules, (("u1", None), ("u2", NOW + 5)),
                              (("u3", NOW + 9),), (("u4", 2),))
    decoded = PolicySnapshot.decode(snapshot.encode())
    assert decoded.encode() == snapshot.encode() and decoded.rules == rules
    assert decoded.instance == "m1" and [list(b) for b in decoded.bans] == [
        ["u1", None], ["u2", NOW + 5]]
    change = update(5, Change.SPREAD, count=3)
    assert PolicyUpdate.decode(change.encode()) == change
    assert change.to_list() == ["m1", 5, 4, "u1", None, 3]


def test_an_empty_replica_holds_updates_until_its_snapshot() -> None:
    replica = PolicyReplica()
    assert not replica.ready and replica.wants_snapshot
    assert replica.apply(update(3, Change.BAN)) == Applied.HELD  # in the snapshot already
    assert replica.apply(update(4, Change.MUTE, "u2", NOW + 60)) == Applied.HELD
    replica.load(PolicySnapshot("m1", 3, Rules(), (("u1", None),)))
    assert replica.state == ReplicaState.CURRENT and replica.version == 4
    assert replica.banned("u1", NOW) and replica.muted_until("u2", NOW) == NOW + 60


def test_updates_apply_in_order_and_old_ones_are_dropped() -> None:
    replica = PolicyReplica()
    replica.load(PolicySnapshot("m1", 0))
    assert replica.apply(update(1, Change.BAN, until=NOW + 10)) == Applied.APPLIED
    assert replica.banned("u1", NOW) and not replica.banned("u1", NOW + 10)
    assert replica.apply(update(1, Change.BAN)) == Applied.STALE
    assert replica.apply(update(2, Change.UNBAN)) == Applied.APPLIED
    assert not replica.banned("u1", NOW)
    assert replica.apply(update(3, Change.SPREAD, count=3)) == Applied.APPLIED
    assert replica.spread("u1") == 3 and replica.spread("u9") == 1
    assert replica.apply(update(4, Change.SPREAD, count=1)) == Applied.APPLIED
    assert replica.spread("u1") == 1
    assert replica.apply(update(5, Change.MUTE, until=NOW + 1)) == Applied.APPLIED
    assert replica.apply(update(6, Change.UNMUTE)) == Applied.APPLIED
    assert replica.muted_until("u1", NOW) is None


def test_a_gap_or_another_instance_puts_it_behind_and_it_keeps_judging() -> None:
    replica = PolicyReplica()
    replica.load(PolicySnapshot("m1", 0, bans=(("u1", None),)))
    assert replica.apply(update(2, Change.BAN, "u2")) == Applied.BEHIND  # 1 was lost
    assert replica.state == ReplicaState.BEHIND and replica.wants_snapshot
    assert replica.ready and replica.banned("u1", NOW)  # what it has still holds
    assert replica.apply(update(3, Change.BAN, "u3")) == Applied.BEHIND
    replica.load(PolicySnapshot("m1", 2, bans=(("u1", None), ("u2", None))))
    assert replica.state == ReplicaState.CURRENT and replica.version == 3
    assert replica.banned("u3", NOW)
    assert replica.apply(update(1, Change.BAN, "u9", instance="m2")) == Applied.BEHIND
    replica.load(PolicySnapshot("m2", 1, bans=(("u9", None),)))
    assert replica.instance == "m2" and not replica.banned("u1", NOW)
    assert replica.banned("u9", NOW)


def test_rules_name_the_events_a_mute_stops() -> None:
    rules = Rules(muted_events=("/ chat message", "/chat private message"))
    assert rules.mutes("/", "chat message") and rules.mutes("/chat", "private message")
    assert not rules.mutes("/", "join room") and not rules.mutes("/chat", "chat message")


def test_throttles_end_and_ended_ones_are_swept_once_the_table_doubles() -> None:
    replica = PolicyReplica()
    replica.load(PolicySnapshot("m1", 0))
    for n in range(PRUNE_AT + 1):  # anonymous addresses throttled once each, ending at once
        assert replica.apply(update(n + 1, Change.THROTTLE, f"a{n}", NOW + 1)) == \
            Applied.APPLIED
    assert replica.apply(update(PRUNE_AT + 2, Change.THROTTLE, "u1", NOW + 60)) == \
        Applied.APPLIED
    assert replica.held()["throttles"] == PRUNE_AT + 2
    assert replica.throttled("u1", NOW + 2)  # the sweep keeps what is still in force
    assert replica.held()["throttles"] == 1
    assert replica.apply(update(PRUNE_AT + 3, Change.THROTTLE, "a0", NOW + 9)) == \
        Applied.APPLIED
    assert replica.throttled("a0", NOW + 2) and replica.held()["throttles"] == 2
    assert not replica.throttled("u1", NOW + 60) and replica.held()["throttles"] == 1  # a0
