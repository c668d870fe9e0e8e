"""Ownership leases in a real PostgreSQL server (``services/room/leases.py``): members from
live leases, fail-over when one lapses, fencing of a lapsed or replaced holder's writes,
and the hand-over that waits for the old owner to let go. Lapses are real (a short lease,
waited for with a deadline); each renewal is called by the test, as the instance's loop
would call it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from switchboard.services.room.leases import Leases
from switchboard.services.room.model import Message
from switchboard.services.room.store import PostgresStore
from switchboard.shared.errors import Fenced
from switchboard.shared.partitions import Membership
from switchboard.shared.store import StoreConfig
from tests.support.postgres import PostgresServer

NAMES = ("room-0", "room-1")
TTL = 0.6
WAIT = 10.0


@dataclass
class Instance:
    """One instance: its store (its own pool) and its lease, as the room service has them."""

    store: PostgresStore
    leases: Leases
    changes: list[Membership] = field(default_factory=list)
    #: Seconds this instance's clock is ahead of the real one (a freeze it slept through).
    skew: list[float] = field(default_factory=lambda: [0.0])

    def frozen_for(self, seconds: float) -> None:
        self.skew[0] += seconds

    def write(self, n: int) -> None:
        self.store.insert_message(Message(f"{self.leases.instance}-{n}-{time.monotonic_ns()}",
                                          "/", "lobby", "u", None, "A", "x", "text", n))


MakeInstance = Callable[[str, str], Awaitable[Instance]]


@pytest.fixture
async def instances(postgres: PostgresServer) -> AsyncIterator[MakeInstance]:
    url = postgres.fresh_url()
    made: list[Instance] = []

    async def make(name: str, holder: str) -> Instance:
        store = PostgresStore(StoreConfig(url))
        await asyncio.wait_for(store.open(), WAIT)
        changes: list[Membership] = []

        async def changed(members: Membership) -> None:
            changes.append(members)

        skew = [0.0]
        leases = Leases(store, name, holder, NAMES, TTL, changed,
                        clock=lambda: time.monotonic() + skew[0])
        store.fence(leases)
        instance = Instance(store, leases, changes, skew)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        await instance.store.close()


@contextlib.asynccontextmanager
async def renewing(instance: Instance) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(instance.leases.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


def key_of(owner: str) -> str:
    group = Membership.of(NAMES)
    return next(f"r{n}" for n in range(100) if group.owner(f"r{n}") == owner)


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_members_are_the_live_leases_and_a_lapsed_one_is_taken_over(
        instances: MakeInstance) -> None:
    a: Instance = await instances("room-0", "p0")
    b: Instance = await instances("room-1", "p1")
    await a.leases.acquire(WAIT)
    async with renewing(a):  # as a's own loop does, while b joins
        await b.leases.acquire(WAIT)  # returns once a has applied b's joining
    assert a.leases.membership == b.leases.membership
    assert a.leases.membership.members == NAMES
    theirs = key_of("room-1")
    assert b.leases.accepts(theirs) and not a.leases.accepts(theirs)
    epoch = a.leases.epoch

    # b stops renewing (dead, or frozen): a's renewals drop it once its lease lapsed.
    async def dropped() -> bool:
        await a.leases.renew()
        return a.leases.membership.members == ("room-0",)

    deadline = time.monotonic() + WAIT
    while not await dropped():
        assert time.monotonic() < deadline, "b's lapse not seen"
        await asyncio.sleep(a.leases.interval)
    assert a.leases.epoch == epoch + 1
    assert a.leases.accepts(theirs)  # at once: b is not alive to wait for
    assert a.changes[-1] == a.leases.membership

    # b, by its own clock, knows its lease lapsed: it serves nothing.
    assert not b.leases.valid() and not b.leases.accepts(theirs)
    # And what it still writes is refused by the store.
    b.write(1)
    with pytest.raises(Fenced):
        await asyncio.wait_for(b.store.committed(), WAIT)
    a.write(1)
    await asyncio.wait_for(a.store.committed(), WAIT)  # a writes, under the new epoch


async def test_a_returning_instance_waits_until_the_old_owner_let_go(
        instances: MakeInstance) -> None:
    a: Instance = await instances("room-0", "p0")
    await a.leases.acquire(WAIT)
    assert a.leases.membership.members == ("room-0",)
    theirs = key_of("room-1")
    assert a.leases.accepts(theirs)  # alone, a owns every key

    b: Instance = await instances("room-1", "p1")
    await b.leases.renew()  # b is live: the members move on, a has not applied it yet
    assert b.leases.membership.members == NAMES
    assert not b.leases.accepts(theirs)  # a may still be serving it
    # a has not applied b's joining yet: it still serves every key (b does not serve its
    # own yet), and its writes commit.
    a.write(1)
    await asyncio.wait_for(a.store.committed(), WAIT)

    await a.leases.renew()  # a applies: it lets go of b's keys
    assert not a.leases.accepts(theirs) and a.leases.accepts(key_of("room-0"))
    await b.leases.renew()  # b sees that a applied
    assert b.leases.accepts(theirs)


async def test_a_new_process_of_an_instance_takes_its_lease_over_and_fences_the_old(
        instances: MakeInstance) -> None:
    old: Instance = await instances("room-0", "process-1")
    await old.leases.acquire(WAIT)
    epoch = old.leases.epoch
    new: Instance = await instances("room-0", "process-2")
    await new.leases.acquire(WAIT)  # restarted in place: nothing to wait for
    assert new.leases.membership == old.leases.membership and new.leases.epoch == epoch
    assert new.leases.accepts(key_of("room-1"))
    old.write(1)
    with pytest.raises(Fenced):
        await asyncio.wait_for(old.store.committed(), WAIT)
    new.write(1)
    await asyncio.wait_for(new.store.committed(), WAIT)
    # The old process, alive after all, does not take the lease back: it stops.
    assert not await old.leases.renew()
    assert old.leases.replaced and not old.leases.valid()
    assert not old.leases.accepts(key_of("room-1"))
    assert await new.leases.renew() and new.leases.valid()
    new.write(2)
    await asyncio.wait_for(new.store.committed(), WAIT)


async def test_what_a_lapsed_instance_queues_never_commits(
        instances: MakeInstance) -> None:
    """A frozen process wakes up: by its own clock its lease lapsed, so what it writes is
    refused until it renewed, and the renewal starts a new term with the members reloaded."""
    a = await instances("room-0", "p0")
    await a.leases.acquire(WAIT)
    a.write(1)
    await asyncio.wait_for(a.store.committed(), WAIT)
    term = a.leases.term
    a.frozen_for(TTL)  # its clock jumps, as after a SIGSTOP
    assert not a.leases.valid()
    a.write(2)
    with pytest.raises(Fenced):
        await asyncio.wait_for(a.store.committed(), WAIT)
    await a.leases.renew()  # woken: renewed, a new term, everything reloaded
    assert a.leases.term == term + 1 and a.leases.valid()
    assert a.changes[-1] == a.leases.membership
    a.write(3)
    await asyncio.wait_for(a.store.committed(), WAIT)


async def test_an_unreachable_store_lets_the_lease_lapse_by_the_instances_clock(
        instances: MakeInstance) -> None:
    a: Instance = await instances("room-0", "p0")
    await a.leases.acquire(WAIT)
    assert a.leases.valid()
    await a.store.close()  # from now on every renewal fails
    assert not await a.leases.renew()
    await until(lambda: not a.leases.valid(), "the lease did not lapse")
    assert not a.leases.accepts(key_of("room-0"))


async def test_a_commit_after_the_lease_expired_is_refused_by_the_store(
        postgres: PostgresServer) -> None:
    """The guard's check and the COMMIT are two moments: a writer frozen between them must
    not commit. The lease row's deferred trigger checks the expiry again at COMMIT."""
    import asyncpg

    from switchboard.shared.postgres import FENCED_SQLSTATE

    url = postgres.fresh_url()
    store = PostgresStore(StoreConfig(url))
    await asyncio.wait_for(store.open(), WAIT)
    try:
        await store.renew("room-0", "p0", 0.3, 0, NAMES)
        conn = await asyncpg.connect(url)
        try:
            with pytest.raises(asyncpg.PostgresError) as refused:
                async with conn.transaction():
                    assert await conn.fetchval(  # the guard passes: the lease holds now
                        "UPDATE room_leases SET holder = holder WHERE instance = 'room-0' "
                        "AND holder = 'p0' AND expires_at > clock_timestamp() RETURNING 1")
                    await conn.execute("SELECT pg_sleep(0.4)")  # frozen past the expiry
            assert refused.value.sqlstate == FENCED_SQLSTATE
            async with conn.transaction():  # within the lease, the same commits
                await store.renew("room-0", "p0", 5.0, 0, NAMES)
                assert await conn.fetchval(
                    "UPDATE room_leases SET holder = holder WHERE instance = 'room-0' "
                    "AND holder = 'p0' AND expires_at > clock_timestamp() RETURNING 1")
        finally:
            await conn.close()
    finally:
        await store.close()


async def test_a_leaving_instance_commits_what_it_queued_and_its_keys_move_at_once(
        instances: MakeInstance) -> None:
    a: Instance = await instances("room-0", "p0")
    b: Instance = await instances("room-1", "p1")
    await a.leases.acquire(WAIT)
    async with renewing(a):
        await b.leases.acquire(WAIT)
    theirs = key_of("room-1")
    assert b.leases.accepts(theirs)
    epoch = b.leases.epoch
    b.write(1)  # queued before the stop: committed, under the lease it was made under
    await asyncio.wait_for(b.leases.leave(), WAIT)
    assert not b.leases.accepts(theirs) and not await b.leases.renew()
    assert await a.store.history("/", "lobby", 10) != []
    # a's next renewal (not a lapse, which would take TTL) moves its keys to a.
    started = time.monotonic()
    await a.leases.renew()
    assert a.leases.membership.members == ("room-0",) and a.leases.epoch == epoch + 1
    assert a.leases.accepts(theirs) and time.monotonic() - started < TTL
    b.write(2)  # anything b still writes is refused: its lease is gone
    with pytest.raises(Fenced):
        await asyncio.wait_for(b.store.committed(), WAIT)
    # A new process of room-1 joins again as any instance does.
    again: Instance = await instances("room-1", "p2")
    async with renewing(a):
        await again.leases.acquire(WAIT)
    assert again.leases.membership.members == NAMES and again.leases.accepts(theirs)
