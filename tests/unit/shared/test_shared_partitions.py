"""shared.partitions: rendezvous ownership over a numbered membership, byte for byte where
it matters (the weights must agree across processes), and the movement bounds a change of
members keeps to."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from switchboard.shared.errors import ConfigError, ServiceUnavailable
from switchboard.shared.partitions import Membership, weight

KEYS = [f"room-{n}" for n in range(4000)]


def test_weights_are_fixed_values_not_per_process_hashes() -> None:
    # BLAKE2b-64 of "room-0\0lobby", big-endian: a golden value another language can check.
    assert weight("room-0", "lobby") == 10771561999982283287
    assert weight("room-0", "lobby") != weight("room-1", "lobby")
    # Another interpreter (another hash salt) computes the same owner.
    script = ("from switchboard.shared.partitions import Membership; "
              "print(Membership.of(['a', 'b', 'c']).owner('lobby'))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True, env={"PYTHONHASHSEED": "12345"})
    assert done.stdout.strip() == Membership.of(["a", "b", "c"]).owner("lobby")


def test_keys_spread_over_the_members() -> None:
    members = Membership.of(["room-0", "room-1", "room-2", "room-3"])
    counts = Counter(members.owner(key) for key in KEYS)
    assert set(counts) == set(members.members)
    assert all(800 <= n <= 1200 for n in counts.values()), counts  # 1000 each, ±20 %


def test_a_new_member_takes_about_its_share_and_nothing_else_moves() -> None:
    before = Membership.of(["room-0", "room-1", "room-2"], epoch=4)
    after = before.joined("room-3")
    assert after.epoch == 5 and after.members == ("room-0", "room-1", "room-2", "room-3")
    moved = before.moves(KEYS, after)
    assert {to for _, to in moved.values()} == {"room-3"}  # only towards the new member
    assert 800 <= len(moved) <= 1200  # a quarter of 4000, ±20 %


def test_a_member_that_leaves_gives_up_only_its_own_keys() -> None:
    before = Membership.of(["room-0", "room-1", "room-2", "room-3"])
    after = before.left("room-2")
    moved = before.moves(KEYS, after)
    assert {was for was, _ in moved.values()} == {"room-2"}
    assert len(moved) == sum(1 for key in KEYS if before.owner(key) == "room-2")
    assert "room-2" not in {to for _, to in moved.values()}


def test_only_the_owner_at_the_current_epoch_is_accepted() -> None:
    old = Membership.of(["room-0", "room-1"], epoch=7)
    new = old.joined("room-2")
    key = next(k for k in KEYS if new.owner(k) == "room-2")
    was = old.owner(key)
    assert new.accepts("room-2", key, 8)
    assert not new.accepts(was, key, 8)  # moved away: the former owner is fenced off
    assert not new.accepts("room-2", key, 7)  # routed under the old epoch: refused
    assert old.accepts(was, key, 7) and not old.accepts(was, key, 8)


def test_no_member_means_no_owner() -> None:
    empty = Membership.of([])
    with pytest.raises(ServiceUnavailable):
        empty.owner("lobby")
    assert not empty.accepts("room-0", "lobby", 0)


@pytest.mark.parametrize(("epoch", "members"), [
    (-1, ("a",)), (0, ("b", "a")), (0, ("a", "a")), (0, ("",)), (0, ("a\0b",)),
])
def test_malformed_memberships_are_refused(epoch: int, members: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        Membership(epoch, members)


def test_joining_twice_or_leaving_as_a_stranger_is_refused() -> None:
    members = Membership.of(["a"])
    with pytest.raises(ConfigError):
        members.joined("a")
    with pytest.raises(ConfigError):
        members.left("b")


def test_the_key_of_a_request_comes_from_its_raw_arguments() -> None:
    from switchboard.shared.partitions import key_of

    room = "arg.roomId|arg"
    assert key_of(room, "me", [{"roomId": " lobby "}]) == "lobby"
    assert key_of(room, "me", ["lobby"]) == "lobby"
    assert key_of("arg.to", "me", [{"to": 42}]) == "42"  # user ids may be numbers
    # No key: the sender's own instance (which refuses a bad payload as any owner does).
    cases: list[list[Any]] = [[], [{}], [{"roomId": ""}], [{"roomId": True}], [["lobby"]],
                              [None]]
    for args in cases:
        assert key_of(room, "me", args) == "me", args
    # A chat message's plain string is its content, never a room id.
    assert key_of("arg.roomId", "me", ["hello"]) == "me"
    assert key_of("identity", "me", [{"roomId": "lobby"}]) == "me"
