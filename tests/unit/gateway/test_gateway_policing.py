"""EventPolicy (judging events by a replica) and PolicyFeed (keeping the replica current),
with a fake backbone and subscriber; moderation's side is tested with the real service in
tests/unit/services/moderation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard.gateway.policing import NOT_LOADED, EventPolicy, PolicyFeed
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication, Reply, RequestKind, Session
from switchboard.shared.errors import ServiceUnavailable
from switchboard.shared.policy import Change, PolicyReplica, PolicySnapshot, PolicyUpdate, Rules

NOW = 1_700_000_000.0


def session(n: int = 1, user: str | None = "u1", ns: str = "/") -> Session:
    return Session(sid=f"gw1.s{n}", ns=ns, gateway="gw1", user_id=user)


def test_no_snapshot_refuses_events_unless_no_policy_service_is_configured() -> None:
    required = EventPolicy(PolicyReplica(), required=lambda: True, clock=lambda: NOW)
    assert required.judge(session(), "chat message") == NOT_LOADED
    unpoliced = EventPolicy(PolicyReplica(), required=lambda: False, clock=lambda: NOW)
    assert all(unpoliced.judge(session(), "chat message") is None for _ in range(100))


def test_new_limits_in_a_new_snapshot_take_effect() -> None:
    replica = PolicyReplica()
    replica.load(PolicySnapshot("m1", 0, Rules(2, 0, 10.0)))
    policy = EventPolicy(replica, required=lambda: True, clock=lambda: NOW)
    assert [policy.judge(session(), "x") for _ in range(3)] == [None, None,
                                                                 "rate limit exceeded"]
    replica.load(PolicySnapshot("m2", 0, Rules(5, 0, 10.0)))
    assert [policy.judge(session(), "x") for _ in range(6)].count(None) == 5
    policy.forget(session().sid)


def test_the_per_user_share_follows_the_spread() -> None:
    replica = PolicyReplica()
    replica.load(PolicySnapshot("m1", 0, Rules(0, 9, 10.0), spread=(("u1", 4),)))
    policy = EventPolicy(replica, required=lambda: True, clock=lambda: NOW)
    assert [policy.judge(session(i), "x") for i in range(4)].count(None) == 2  # 9 // 4
    replica.apply(PolicyUpdate("m1", 1, Change.SPREAD, "u1", count=1))
    assert [policy.judge(session(i), "x") for i in range(10)].count(None) == 7
    replica.apply(PolicyUpdate("m1", 2, Change.SPREAD, "u2", count=100))
    assert policy.judge(session(1, "u2"), "x") is None  # at least one each


class FakeBackbone:
    def __init__(self) -> None:
        self.instances: dict[str, str] = {}
        self.snapshots: list[PolicySnapshot] = []
        self.asked = 0

    async def request(self, service: str, kind: RequestKind, timeout: float | None = None,
                      **fields: Any) -> Reply:
        assert (service, kind) == ("moderation", RequestKind.POLICY)
        self.asked += 1
        if not self.snapshots:
            raise ServiceUnavailable("moderation", "no reply")
        return Reply(1, args=[self.snapshots.pop(0).to_list()])


class FakeSubscriber:
    def __init__(self) -> None:
        self.topics: list[bytes] = []
        self.confirmation: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, topic: bytes) -> asyncio.Future[None] | None:
        self.topics.append(topic)
        return self.confirmation


def subscribed_feed(instance: str, confirmed: bool = True, timeout: float = 1.0
                    ) -> tuple[FakeBackbone, FakeSubscriber, PolicyReplica, PolicyFeed]:
    """A feed of moderation instance ``instance``, subscribed (and the subscription
    confirmed by the broker, unless not ``confirmed``)."""
    backbone, subs, replica = FakeBackbone(), FakeSubscriber(), PolicyReplica()
    if confirmed:
        subs.confirmation.set_result(None)
    feed = PolicyFeed(replica, "moderation", backbone, subs, interval=0.01, timeout=timeout)
    feed.subscribe()
    backbone.instances["moderation"] = instance
    return backbone, subs, replica, feed


def publication(update: PolicyUpdate) -> Publication:
    return Publication(PubKind.POLICY, "", args=[update.to_list()])


async def test_the_feed_subscribes_first_then_asks_and_follows() -> None:
    backbone, subs, replica = FakeBackbone(), FakeSubscriber(), PolicyReplica()
    feed = PolicyFeed(replica, "moderation", backbone, subs, interval=0.01, timeout=1.0)
    feed.subscribe()
    assert subs.topics == [topics.POLICY]
    feed.on_publication(publication(PolicyUpdate("m1", 2, Change.BAN, "u2")))  # before it
    backbone.instances["moderation"] = "m1"
    backbone.snapshots.append(PolicySnapshot("m1", 1, bans=(("u1", None),)))
    refresh = asyncio.ensure_future(feed.refresh())
    await asyncio.sleep(0)
    assert backbone.asked == 0  # not before the broker has the subscription in force
    subs.confirmation.set_result(None)
    assert await refresh
    assert replica.banned("u1", NOW) and replica.banned("u2", NOW) and not feed.stale()
    assert feed.loaded_at is not None


async def test_the_feed_asks_again_after_a_gap_or_a_restart() -> None:
    backbone, _, replica, feed = subscribed_feed("m1")
    assert not await feed.refresh() and not replica.ready  # moderation did not answer
    backbone.snapshots.append(PolicySnapshot("m1", 0))
    keeper = asyncio.ensure_future(feed.keep_current())
    try:
        async with asyncio.timeout(5):
            while not replica.ready:
                await asyncio.sleep(0.01)
            backbone.snapshots.append(PolicySnapshot("m1", 5, bans=(("u5", None),)))
            feed.on_publication(publication(PolicyUpdate("m1", 6, Change.BAN, "u6")))  # a gap
            while not replica.banned("u5", NOW):
                await asyncio.sleep(0.01)
            assert replica.banned("u6", NOW) and replica.version == 6
            backbone.instances["moderation"] = "m2"  # restarted, nothing published yet
            backbone.snapshots.append(PolicySnapshot("m2", 0))
            while replica.instance != "m2":
                await asyncio.sleep(0.01)
            assert not replica.banned("u5", NOW)
    finally:
        keeper.cancel()


def test_a_snapshot_with_the_same_limits_keeps_the_windows() -> None:
    replica = PolicyReplica()
    replica.load(PolicySnapshot("m1", 0, Rules(2, 0, 10.0)))
    policy = EventPolicy(replica, required=lambda: True, clock=lambda: NOW)
    assert policy.judge(session(), "x") is None and policy.judge(session(), "x") is None
    replica.load(PolicySnapshot.decode(PolicySnapshot("m1", 3, Rules(2, 0, 10.0)).encode()))
    assert policy.judge(session(), "x") == "rate limit exceeded"  # not a fresh window


def test_a_malformed_snapshot_leaves_the_replica_as_it_was() -> None:
    replica = PolicyReplica()
    replica.load(PolicySnapshot("m1", 4, bans=(("u1", None),)))
    bad = PolicySnapshot("m2", 0, bans=(("u2", "soon"),))
    with pytest.raises(ValueError):
        replica.load(bad)
    assert (replica.instance, replica.version) == ("m1", 4) and replica.banned("u1", NOW)


async def test_the_feed_drops_late_updates_of_a_gone_instance_and_refusals() -> None:
    backbone, _, replica, feed = subscribed_feed("m2")
    backbone.snapshots.append(PolicySnapshot("m2", 0))
    assert await feed.refresh()
    feed.on_publication(publication(PolicyUpdate("m1", 9, Change.BAN, "u9")))  # the old one
    assert not feed.stale() and not replica.banned("u9", NOW)
    feed.on_publication(publication(PolicyUpdate("m2", 1, Change.BAN, "u1")))
    assert replica.banned("u1", NOW) and not feed.stale()


async def test_a_snapshot_loaded_before_its_subscription_took_effect_is_asked_again() -> None:
    backbone, _, replica, feed = subscribed_feed("m1", confirmed=False, timeout=0.05)
    backbone.snapshots.append(PolicySnapshot("m1", 0, bans=(("u1", None),)))
    assert await feed.refresh()
    assert replica.ready and replica.banned("u1", NOW)  # enforced meanwhile
    assert feed.stale()  # and asked for again
