"""The game service behind its real ROUTER socket, observed through the broker."""

from __future__ import annotations

from typing import Any

from switchboard.services.game import Config, GameService, create
from switchboard.shared import topics
from switchboard.shared.envelope import Publication, Reply, RequestKind
from switchboard.shared.publisher import Publisher
from tests.support.backbone import FakeGateway, running_broker, running_service

NS = "/game"
ROOM = topics.room(NS, "game:g1")


def make(publisher: Publisher) -> GameService:
    return create(Config(), publisher)


async def next_on(gw: FakeGateway, topic: bytes) -> Publication:
    got, pub = await gw.next_publication(timeout=5.0)
    assert got == topic
    return pub


async def test_a_game_played_over_real_sockets() -> None:
    with running_broker() as broker:
        async with running_service(make, broker) as (_, cfg):
            gw = FakeGateway(broker=broker)
            try:
                await gw.subscribe(ROOM)
                await gw.subscribe(topics.namespace(NS))
                x, o = gw.session(1, ns=NS), gw.session(2, ns=NS)

                async def send(kind: RequestKind, session: Any, event: str = "",
                               *args: Any) -> Reply:
                    return await gw.request(cfg.bind, kind=kind, session=session, event=event,
                                            args=list(args))

                for s, role in ((x, "X"), (o, "O")):
                    assert (await send(RequestKind.CONNECT, s)).ok
                    reply = await send(RequestKind.EVENT, s, "join game", "g1")
                    assert reply.ok and reply.joins == ("game:g1",)
                    assert reply.ack is not None and reply.ack[0]["role"] == role
                    joined = await next_on(gw, ROOM)
                    assert (joined.event, joined.exclude) == ("player joined", (s.sid,))
                    assert (await next_on(gw, ROOM)).event == "game update"

                for s, cell in ((x, 0), (o, 3), (x, 1), (o, 4), (x, 2)):
                    reply = await send(RequestKind.EVENT, s, "game action",
                                       {"gameId": "g1", "action": "move", "cell": cell})
                    assert reply.ok and reply.ack is not None
                    update = await next_on(gw, ROOM)
                    assert (update.event, update.args) == ("game update", [reply.ack[0]["state"]])
                state = update.args[0]
                assert (state["winner"], state["line"], state["moveCount"]) == ("X", [0, 1, 2], 5)

                late = await send(RequestKind.EVENT, o, "game action",
                                  {"gameId": "g1", "action": "move", "cell": 8})
                assert (late.ok, late.error) == (False, "game is over")

                await send(RequestKind.DISCONNECT, o)
                gone = await next_on(gw, topics.namespace(NS))
                assert (gone.event, gone.args) == ("player disconnected", [o.sid])
                update = await next_on(gw, ROOM)
                assert update.args[0]["players"] == {"X": x.sid, "O": None}
            finally:
                gw.close()


async def test_a_silent_gateway_loses_its_players() -> None:
    """The runner notices the missing heartbeats and calls gateway_lost (bounded wait)."""
    with running_broker() as broker:
        async with running_service(make, broker, gateway_timeout=0.3) as (service, cfg):
            assert isinstance(service, GameService)
            gw = FakeGateway("gwgone", broker=broker)
            try:
                await gw.subscribe(topics.namespace(NS))
                s = gw.session(1, ns=NS)
                await gw.heartbeat(cfg.bind, {NS: 1})
                reply = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=s,
                                         event="join game", args=["g1"])
                assert reply.ok and service.sockets.keys() == {s.sid}
                gone = await next_on(gw, topics.namespace(NS))  # no more heartbeats
                assert (gone.event, gone.args) == ("player disconnected", [s.sid])
                assert service.tables == {} and service.sockets == {}
            finally:
                gw.close()
