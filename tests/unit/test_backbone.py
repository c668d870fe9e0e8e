"""The shared service base through real ZeroMQ sockets: dispatch, errors, publications."""

from __future__ import annotations

from shared import topics
from shared.envelope import Reply, Request, RequestKind, fail, reply_to
from shared.errors import ClientError
from shared.publisher import Publisher
from shared.service import Service, on_connect, on_event
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
