"""The shared service base through real ZeroMQ sockets: dispatch, errors, publications."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from switchboard.shared import dispatch, topics
from switchboard.shared.envelope import (
    PubKind,
    Publication,
    Reply,
    Request,
    RequestKind,
    fail,
    reply_to,
)
from switchboard.shared.errors import ClientError
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_connect, on_event, on_sync
from tests.support.backbone import FakeGateway, running_broker, running_service


class Echo(Service):
    name = "echo"

    @on_connect("/")
    async def connect(self, request: Request) -> Reply | None:
        if (request.auth or {}).get("deny"):
            return fail(request, "denied")
        return None

    @on_event("/", "echo")
    async def echo(self, request: Request) -> Reply:
        assert request.session is not None
        sid = request.session.sid
        self.publisher.emit_room("/", "lobby", "echoed", request.args, exclude=[sid])
        return reply_to(request, ack=request.args)

    @on_event("/", "boom")
    async def boom(self, request: Request) -> Reply:
        raise RuntimeError("secret internal detail")

    @on_event("/", "refuse")
    async def refuse(self, request: Request) -> Reply:
        raise ClientError("content: must be 1..1000 characters")


def make(publisher: Publisher) -> Echo:
    return Echo(publisher)


async def test_requests_and_publications_over_real_sockets() -> None:
    with running_broker() as broker:
        async with running_service(make, broker) as (service, cfg):
            gw = FakeGateway(broker=broker)
            try:
                await gw.subscribe(topics.room("/", "lobby"))
                info = (await gw.request(cfg.bind, kind=RequestKind.DESCRIBE)).info
                assert info is not None and info.name == "echo"
                assert {(r.kind, r.ns, r.event) for r in info.routes} >= {
                    (RequestKind.EVENT, "/", "echo"), (RequestKind.CONNECT, "/", "")}
                s = gw.session()
                ok = await gw.request(cfg.bind, kind=RequestKind.CONNECT, session=s, auth={})
                assert ok.ok
                no = await gw.request(cfg.bind, kind=RequestKind.CONNECT, session=s,
                                      auth={"deny": 1})
                assert (no.ok, no.error) == (False, "denied")
                r = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s, event="echo",
                                     args=[1, b"\x00\x01", {"a": "b"}])
                assert r.ok and r.ack == [1, b"\x00\x01", {"a": "b"}]
                topic, pub = await gw.next_publication()
                assert topic == topics.room("/", "lobby")
                assert (pub.event, pub.args, pub.exclude) == ("echoed", r.ack, (s.sid,))
                boom = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s, event="boom")
                assert (boom.ok, boom.error) == (False, "internal error")
                ref = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s,
                                       event="refuse")
                assert ref.error == "content: must be 1..1000 characters"
                unk = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s, event="nope")
                assert unk.error == "unknown event: nope"
                hb = await gw.heartbeat(cfg.bind, {"/": 3})
                assert hb.info is not None and hb.info.instance == service.instance
                assert service.gateways[gw.id].connections == {"/": 3}
            finally:
                gw.close()


class Stateful(Echo):
    """A service with a SYNC route: requests from an unsynced gateway are held back."""

    name = "stateful"
    syncs: list[str]

    @on_sync()
    async def sync(self, request: Request) -> None:
        self.syncs.append(request.gateway)


def make_stateful(publisher: Publisher) -> Stateful:
    service = Stateful(publisher)
    service.syncs = []
    return service


async def test_stateful_service_asks_unsynced_gateways_to_resync_first() -> None:
    with running_broker() as broker:
        async with running_service(make_stateful, broker, gateway_timeout=0.3) as (svc, cfg):
            gw = FakeGateway()
            try:
                s = gw.session()
                raw = await gw._request(cfg.bind, 5.0, kind=RequestKind.EVENT, session=s,
                                        event="echo", args=[1])
                assert (raw.ok, raw.resync, raw.error) == (False, True, "service unavailable")
                assert svc.syncs == []
                ok = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s,
                                      event="echo", args=[1])
                assert ok.ok and ok.ack == [1] and svc.syncs == [gw.id]
                # Declared lost after silence: it must SYNC again before being served.
                await gw.heartbeat(cfg.bind)
                deadline = asyncio.get_running_loop().time() + 5
                while gw.id in svc.gateways:
                    assert asyncio.get_running_loop().time() < deadline, "never declared lost"
                    await asyncio.sleep(0.05)
                again = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s,
                                         event="echo", args=[2])
                assert again.ack == [2] and svc.syncs == [gw.id, gw.id]
            finally:
                gw.close()


class Counting(Echo):
    """Counts the events it handles."""

    name = "counting"
    handled: int = 0

    @on_event("/", "count")
    async def count(self, request: Request) -> Reply:
        self.handled += 1
        return reply_to(request, ack=[self.handled])


def _expired_total() -> float:
    return REGISTRY.get_sample_value(
        "switchboard_service_expired_requests_total", {"service": "counting"}) or 0.0


async def test_a_request_its_gateway_gave_up_on_is_dropped_unhandled() -> None:
    """Under overload a request may wait in the queue past its deadline; by then the gateway
    has told its client it failed, so the service must not act on it."""
    with running_broker() as broker:
        async with running_service(Counting, broker) as (svc, cfg):
            gw = FakeGateway()
            try:
                s = gw.session()
                before = _expired_total()
                stale = time.time() - dispatch.EXPIRY_GRACE - 5.0
                dealer_request = Request(kind=RequestKind.EVENT, id=10_000, gateway=gw.id,
                                         session=s, event="count", deadline=stale)
                gw.connect(cfg.bind)
                await gw.dealers[cfg.bind].send(dealer_request.encode())
                # The same DEALER → handled in order: once this one is answered, the stale
                # one has been seen.
                fresh = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s,
                                         event="count", deadline=time.time() + 5.0)
                assert fresh.ack == [1]
                assert svc.handled == 1
                assert _expired_total() == before + 1
                # Disconnects always run, however late: they keep presence right.
                late = await gw.request(cfg.bind, kind=RequestKind.DISCONNECT, session=s,
                                        deadline=stale)
                assert late.ok
            finally:
                gw.close()


async def test_requests_count_as_signs_of_life_when_heartbeats_are_queued() -> None:
    with running_broker() as broker:
        async with running_service(Counting, broker, gateway_timeout=0.3) as (svc, cfg):
            gw = FakeGateway()
            try:
                await gw.heartbeat(cfg.bind)
                assert gw.id in svc.gateways
                loop = asyncio.get_running_loop()
                end = loop.time() + 1.2  # four gateway timeouts without a heartbeat
                s = gw.session()
                while loop.time() < end:
                    assert (await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s,
                                             event="count")).ok
                assert gw.id in svc.gateways, "declared lost while its requests kept coming"
            finally:
                gw.close()


async def test_publications_are_numbered_beaten_and_replayed_over_real_sockets() -> None:
    """What a gateway uses to recover from a broker crash: numbered publications, beats to
    every gateway, and REPLAY over request/reply."""
    with running_broker() as broker:
        async with running_service(make, broker) as (service, cfg):
            assert service.publisher.journals
            gw = FakeGateway(broker=broker)
            try:
                await gw.subscribe(topics.room("/", "lobby"))
                s = gw.session()
                for n in range(3):
                    assert (await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s,
                                             event="echo", args=[n])).ok
                pubs = [(await gw.next_publication())[1] for _ in range(3)]
                origin = pubs[0].origin
                assert origin and [p.seq for p in pubs] == [1, 2, 3]
                assert [p.args for p in pubs] == [[0], [1], [2]]
                await gw.subscribe(topics.ALL_GATEWAYS)
                _, beat = await gw.next_publication()
                assert (beat.kind, beat.origin, beat.source) == (PubKind.BEAT, origin, "echo")
                assert beat.seq == 3 and beat.epoch >= 1
                replay = await gw.request(cfg.bind, kind=RequestKind.REPLAY, args=[origin, 1])
                assert replay.ok and replay.replay is not None
                assert (replay.replay.origin, replay.replay.upto) == (origin, 3)
                replayed = [Publication.decode(e.body) for e in replay.replay.entries]
                assert [p.args for p in replayed] == [[1], [2]]
                other = await gw.request(cfg.bind, kind=RequestKind.REPLAY, args=["old", 0])
                assert (other.ok, other.error) == (False, "another publisher")
                assert other.replay is not None and other.replay.origin == origin
                bad = await gw.request(cfg.bind, kind=RequestKind.REPLAY, args=["x"])
                assert (bad.ok, bad.error) == (False, "REPLAY takes [origin, seq]")
            finally:
                gw.close()
