"""Several brokers: each topic lives on one (shared.topics.broker_of), publishers send it
there and number each broker path on its own, gateways subscribe it there and watch each
broker's liveness, and a broker's crash makes only its own paths replay.

Real brokers (threads), a real publisher and the gateway's real SUB sockets; the gateway's
delivery logic (Fanout, Continuity) with its I/O replaced by what the sockets delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq.asyncio
from test_gateway_fanout import Actions

from switchboard.broker.broker import Broker, BrokerConfig
from switchboard.gateway import metrics as m
from switchboard.gateway.continuity import Continuity
from switchboard.gateway.fanout import Fanout
from switchboard.gateway.index import LocalIndex
from switchboard.gateway.subscriptions import Subscriptions, wait_all
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication, Request, RequestKind, reply_to
from switchboard.shared.journal import Journal
from switchboard.shared.publisher import Publisher, ZmqPublisher
from switchboard.shared.service import Service, on_event
from tests.support.backbone import FakeGateway, running_brokers, running_service
from tests.support.gateway_parts import Subs
from tests.support.polling import poll_until
from tests.support.ports import tcp

WAIT = 5.0


def room_on(k: int, brokers: int = 2, prefix: str = "room") -> str:
    """A room id whose topic lives on broker ``k``."""
    return next(f"{prefix}{n}" for n in range(10_000)
                if topics.broker_of(topics.room("/", f"{prefix}{n}"), brokers) == k)


def test_every_topic_lives_on_one_broker_and_a_socket_with_its_gateway() -> None:
    assert {topics.broker_of(topics.room("/", f"r{n}"), 1) for n in range(100)} == {0}
    for brokers in (2, 3, 5):
        spread = Counter(topics.broker_of(topics.room("/", f"r{n}"), brokers)
                         for n in range(3000))
        assert sorted(spread) == list(range(brokers))
        assert min(spread.values()) > 3000 / brokers * 0.8, spread  # near even
        for gw in ("gw1", "gw2", "gw3000-ab12"):
            home = topics.broker_of(topics.gateway(gw), brokers)
            # The gateway's one subscription covers its sockets by prefix: same broker.
            assert {topics.broker_of(topics.socket(f"{gw}.{n}"), brokers)
                    for n in range(50)} == {home}
    assert topics.everywhere(topics.ALL_GATEWAYS) and topics.everywhere(topics.POLICY)
    assert topics.everywhere(topics.BROKER_HEARTBEAT)
    assert not topics.everywhere(topics.room("/", "r")) and not topics.everywhere(
        topics.gateway("gw1"))


def test_a_journal_for_each_path_numbers_on_its_own() -> None:
    base = Journal(size=10, keep=5.0, origin="abc")
    paths = [base.for_path(k) for k in range(2)]
    assert [j.origin for j in paths] == ["abc/0", "abc/1"]
    assert all((j.size, j.keep) == (10, 5.0) for j in paths)
    assert [paths[0].stamp().seq, paths[0].stamp().seq, paths[1].stamp().seq] == [1, 2, 1]


class Arrivals:
    """What the gateway's SUB sockets delivered, with the broker each came from."""

    def __init__(self) -> None:
        self.subs: Subscriptions | None = None
        self.got: list[tuple[int, bytes, Publication]] = []

    def __call__(self, frames: list[bytes], broker: int) -> None:
        topic, body = frames
        if body == topics.SUBSCRIBED_MARKER:
            assert self.subs is not None
            self.subs.confirmed(topic, broker)
        elif topic != topics.BROKER_HEARTBEAT:
            self.got.append((broker, topic, Publication.decode(body)))


async def test_each_topic_goes_through_its_own_broker_numbered_per_path() -> None:
    a, b = room_on(0), room_on(1)
    with running_brokers(2) as brokers:
        ctx = zmq.asyncio.Context()
        arrivals = Arrivals()
        subs = Subscriptions(ctx, [x.config.subscribe_bind for x in brokers], arrivals)
        arrivals.subs = subs
        publisher = ZmqPublisher(ctx, [x.config.publish_bind for x in brokers], "room",
                                 journal=Journal(origin="p"))
        try:
            subs.start()
            wanted = [topics.room("/", a), topics.room("/", b), topics.gateway("gw1"),
                      topics.ALL_GATEWAYS]
            await asyncio.wait_for(wait_all([subs.add(t) for t in wanted], WAIT), WAIT)
            assert await publisher.wait_ready(WAIT)
            # Each broker holds the subscriptions of its own topics, and the control ones
            # (confirmed by their home broker only: polled for at the other).
            home = topics.broker_of(topics.gateway("gw1"), 2)
            expected = [
                {topics.room("/", a), topics.ALL_GATEWAYS,
                 *([topics.gateway("gw1")] if home == 0 else [])},
                {topics.room("/", b), topics.ALL_GATEWAYS,
                 *([topics.gateway("gw1")] if home == 1 else [])}]
            await poll_until(lambda: asyncio.sleep(0, [set(x.stats.topics) for x in brokers]),
                             lambda held: held == expected, "each broker's topics", WAIT)

            publisher.emit_room("/", a, "chat message", ["to a"])
            publisher.emit_room("/", b, "chat message", ["to b"])
            publisher.emit_room("/", b, "chat message", ["to b again"])
            publisher.emit_socket("gw1.7", "/", "hello", [])
            publisher.beat()
            await poll_until(lambda: asyncio.sleep(0, len(arrivals.got)), lambda n: n >= 6,
                             "four publications and a beat on each path", WAIT)
            got = {(broker, p.kind, tuple(p.args), p.origin, p.seq)
                   for broker, _, p in arrivals.got}
            assert got == {
                (0, PubKind.EMIT, ("to a",), "p/0", 1),
                (1, PubKind.EMIT, ("to b",), "p/1", 1),
                (1, PubKind.EMIT, ("to b again",), "p/1", 2),
                (home, PubKind.EMIT, (), f"p/{home}", 2 if home == 0 else 3),
                (0, PubKind.BEAT, (), "p/0", 2 if home == 0 else 1),
                (1, PubKind.BEAT, (), "p/1", 3 if home == 1 else 2),
            }
            assert len(arrivals.got) == 6  # nothing twice
        finally:
            publisher.close()
            subs.close()
            ctx.term()


@contextlib.contextmanager
def broker_thread(config: BrokerConfig) -> Iterator[Broker]:
    broker, stop = Broker(config, zmq.Context()), threading.Event()
    thread = threading.Thread(target=broker.run, args=(stop,), daemon=True)
    thread.start()
    assert broker.ready.wait(WAIT)
    try:
        yield broker
    finally:
        stop.set()
        thread.join(WAIT)
        broker.context.term()


async def test_a_restart_of_one_broker_is_told_with_that_broker() -> None:
    """Each broker's socket is watched on its own: a restart of broker 1 (its connection
    lost, then a new one) is told as broker 1's, so only the paths through it replay."""
    with running_brokers(1) as (first,):
        second = BrokerConfig(publish_bind=tcp(), subscribe_bind=tcp(), heartbeat_interval=0.2)
        ctx = zmq.asyncio.Context()
        told: list[int] = []
        subs = Subscriptions(ctx, [first.config.subscribe_bind, second.subscribe_bind],
                             lambda frames, broker: None,
                             on_reconnect=lambda lost_at, broker: told.append(broker))
        try:
            subs.start()
            with broker_thread(second):
                await poll_until(lambda: asyncio.sleep(0, [x.connected for x in subs.links]),
                                 all, "connected to both brokers", WAIT)
            await poll_until(lambda: asyncio.sleep(0, subs.links[1].connected),
                             lambda up: not up, "broker 1's loss seen", WAIT)
            with broker_thread(second):
                await poll_until(lambda: asyncio.sleep(0, list(told)), lambda t: t == [1],
                                 "the new connection to broker 1 told", WAIT)
            assert subs.links[0].connected
        finally:
            subs.close()
            ctx.term()


class Echo(Service):
    name = "echo"

    @on_event("/", "say")
    async def say(self, request: Request) -> Any:
        room = request.args[0]
        self.publisher.emit_room("/", room, "said", [room])
        return reply_to(request, ack=True)


async def test_a_replay_answers_for_the_path_asked_through_the_real_dispatch() -> None:
    a, b = room_on(0), room_on(1)

    def make(publisher: Publisher) -> Echo:
        return Echo(publisher)

    with running_brokers(2) as brokers:
        async with running_service(make, [x.config for x in brokers]) as (service, cfg):
            gw = FakeGateway()
            try:
                session = gw.session()
                for room in (a, b, b):
                    assert (await gw.request(cfg.bind, kind=RequestKind.EVENT, session=session,
                                             event="say", args=[room])).ok
                origins = [j.origin for j in service.publisher.journals]
                assert len(origins) == 2 and origins[1].endswith("/1")
                for origin, rooms in zip(origins, ([a], [b, b]), strict=True):
                    reply = await gw.request(cfg.bind, kind=RequestKind.REPLAY,
                                             args=[origin, 0])
                    assert reply.ok and reply.replay is not None, reply
                    assert reply.replay.origin == origin and reply.replay.complete
                    pubs = [Publication.decode(e.body) for e in reply.replay.entries]
                    assert [p.args[0] for p in pubs] == rooms
                    assert [p.seq for p in pubs] == list(range(1, len(rooms) + 1))
                gone = await gw.request(cfg.bind, kind=RequestKind.REPLAY,
                                        args=[origins[0].rpartition("/")[0] + "/9", 0])
                assert (gone.ok, gone.error) == (False, "another publisher")
            finally:
                gw.close()


# -- the gateway's side: per-broker liveness and suspicion (pure) -------------------------------
def numbered(origin: str, seq: int, epoch: int = 1) -> Publication:
    pub = Publication(PubKind.EMIT, "/", "e", [seq], room="r", source="room")
    return Publication.decode(pub.encode_stamped(origin, seq, epoch))


def test_a_new_instance_of_one_broker_makes_only_its_paths_replay() -> None:
    cont = Continuity()
    for broker, origin in ((0, "p/0"), (1, "p/1")):
        out, ask = cont.receive(numbered(origin, 1), broker)
        assert [p.seq for p in out] == [1] and ask is None
    cont.broker_changed(1)
    out, ask = cont.receive(numbered("p/0", 2), 0)
    assert [p.seq for p in out] == [2] and ask is None  # broker 0's path: untouched
    out, ask = cont.receive(numbered("p/1", 2), 1)
    assert out == [] and ask is not None
    assert (ask.origin, ask.after, ask.broker) == ("p/1", 0, 1)


async def test_every_broker_must_be_heard_and_each_is_watched_on_its_own(
        caplog: pytest.LogCaptureFixture) -> None:
    subs = Subs()
    fanout = Fanout(subs, LocalIndex(subs), Actions(), m.EventMeters(), brokers=2)
    fanout.on_message([topics.BROKER_HEARTBEAT, msgpack.packb(("b0", 1))], 0)
    assert not fanout.broker_seen.is_set()  # broker 1 not yet heard
    fanout.on_message([topics.BROKER_HEARTBEAT, msgpack.packb(("b1", 1))], 1)
    assert fanout.broker_seen.is_set() and fanout.broker_up
    fanout.brokers[1].missed = fanout.liveness
    assert not fanout.broker_up and fanout.brokers_down() == [1]
    # A new instance of broker 1: only the tracks through it become suspect.
    fanout.on_message([topics.BROKER_HEARTBEAT, msgpack.packb(("b1-new", 1))], 1)
    assert fanout.broker_up and fanout.brokers[1].changed_since is not None
    assert fanout.brokers[0].changed_since is None
    # A publisher whose path 1 arrives from our broker 0 lists the brokers otherwise.
    with caplog.at_level(logging.ERROR, "switchboard.gateway.fanout"):
        for origin in ("q/1", "q/0", "q/1"):
            beat = Publication(PubKind.BEAT, "", source="room").encode_stamped(origin, 1, 1)
            fanout.on_message([topics.ALL_GATEWAYS, beat], 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors  # once per origin
    assert "q/1" in errors[0] and "same brokers in the same order" in errors[0], errors


# -- the other parts that talk to brokers: the emitter and the recovery service -----------------
async def test_the_emitter_sends_each_topic_to_its_broker() -> None:
    from switchboard.emitter import Emitter

    a, b = room_on(0), room_on(1)
    with running_brokers(2) as brokers:
        ctx = zmq.asyncio.Context()
        arrivals = Arrivals()
        subs = Subscriptions(ctx, [x.config.subscribe_bind for x in brokers], arrivals)
        arrivals.subs = subs
        try:
            subs.start()
            await wait_all([subs.add(topics.room("/", r)) for r in (a, b)], WAIT)

            def emit() -> None:
                # One string with commas, as SWITCHBOARD_BROKER_PUB gives it.
                with Emitter(",".join(x.config.publish_bind for x in brokers)) as io:
                    io.to(a).emit("notice", "for a")
                    io.to(b).emit("notice", "for b")

            await asyncio.to_thread(emit)
            await poll_until(lambda: asyncio.sleep(0, len(arrivals.got)), lambda n: n >= 2,
                             "both emits", WAIT)
            assert sorted((broker, p.args[0]) for broker, _, p in arrivals.got) == [
                (0, "for a"), (1, "for b")]
        finally:
            subs.close()
            ctx.term()


async def test_the_recovery_service_records_what_passes_every_broker() -> None:
    from switchboard.services.recovery.config import Config as RecoveryConfig
    from switchboard.services.recovery.service import RecoveryService

    a, b = room_on(0), room_on(1)
    with running_brokers(2) as brokers:
        ctx = zmq.asyncio.Context()
        publisher = ZmqPublisher(ctx, [x.config.publish_bind for x in brokers], "room",
                                 journal=Journal())
        service = RecoveryService(publisher, RecoveryConfig(
            recovery_namespaces=("/",),
            broker_sub=tuple(x.config.subscribe_bind for x in brokers)))
        try:
            await service.start()
            assert await publisher.wait_ready(WAIT)
            # Its prefixes are in force at both brokers before anything is published.
            await poll_until(lambda: asyncio.sleep(0, [set(x.stats.topics) for x in brokers]),
                             lambda held: all(topics.rooms_of("/") in t for t in held),
                             "the recovery prefixes at both brokers", WAIT)
            publisher.emit_room("/", a, "chat message", ["for a"])
            publisher.emit_room("/", b, "chat message", ["for b"])
            await poll_until(lambda: asyncio.sleep(0, service.state.stats()["logEntries"]),
                             lambda n: n == 2, "both publications recorded", WAIT)
        finally:
            await service.stop()
            publisher.close()
            ctx.term()
