"""A world for gateway.pipelines unit tests: scripted services (the Services protocol), a
real local index over a fake subscriber, a real session on the polling transport whose
queued packets a test reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from switchboard.gateway import metrics as m
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.index import LocalIndex, RoomObservers
from switchboard.gateway.output import Corker
from switchboard.gateway.pipelines import Pipelines
from switchboard.gateway.protocol import Connection, ConnectionConfig, ConnectRequested
from switchboard.gateway.protocol import EventReceived as Ev
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.recovery import Recovery
from switchboard.gateway.routing import RoutingTable
from switchboard.shared.envelope import Reply, Request, RequestKind, Route, ServiceInfo
from switchboard.shared.runner import ROUTED, answer_for, passed_on

K = RequestKind

#: auth and room CONNECT stages, a filter, the room's one event.
DEFAULT_SERVICES = (
    ServiceInfo("auth", "i", (Route(K.CONNECT, "/", "", 10), Route(K.DISCONNECT, "/"))),
    ServiceInfo("mod", "i", (Route(K.FILTER, "*", "", 10),)),
    ServiceInfo("room", "i", (Route(K.CONNECT, "/", "", 30), Route(K.EVENT, "/", "say"),
                              Route(K.DISCONNECT, "*"), Route(K.UPDATE, "*"))),
)


class Subscriber:
    def __init__(self) -> None:
        self.topics: dict[bytes, int] = {}

    def add(self, topic: bytes) -> asyncio.Future[None] | None:
        self.topics[topic] = self.topics.get(topic, 0) + 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def remove(self, topic: bytes) -> None:
        self.topics[topic] -= 1
        if not self.topics[topic]:
            del self.topics[topic]


class Services:
    """Answers requests with ``script(service, kind, fields)``; records them."""

    def __init__(self, script: Callable[[str, RequestKind, dict[str, Any]], Reply],
                 infos: Iterable[ServiceInfo] = DEFAULT_SERVICES) -> None:
        self.routing = RoutingTable(infos)
        self.script = script
        #: Every stage that handled something (a routed event: each one along its route).
        self.seen: list[tuple[str, RequestKind, dict[str, Any]]] = []
        #: What the gateway asked: (service, kind, route).
        self.asked: list[tuple[str, RequestKind, tuple[str, ...]]] = []

    async def request(self, service: str, kind: RequestKind, timeout: float | None = None,
                      sent: asyncio.Future[None] | None = None, **fields: Any) -> Reply:
        if sent is not None and not sent.done():
            sent.set_result(None)
        route: tuple[str, ...] = fields.pop("route", ())
        self.asked.append((service, kind, route))
        # What the services' runners do with a routed request: the real pass-on rules.
        request = Request(kind, 0, route=route, **fields)
        names = set(fields)
        while True:
            given = {name: getattr(request, name) for name in names}
            for carried in ("joins", "emits"):
                if getattr(request, carried):
                    given[carried] = getattr(request, carried)
            self.seen.append((service, request.kind, given))
            reply = self.script(service, request.kind, given)
            if not (request.route and reply.ok and request.kind in ROUTED):
                return answer_for(request, reply, service)
            service, request = passed_on(request, reply)


def ok(**fields: Any) -> Reply:
    return Reply(0, **fields)


class World:
    def __init__(self, script: Callable[[str, RequestKind, dict[str, Any]], Reply],
                 infos: Iterable[ServiceInfo] = DEFAULT_SERVICES) -> None:
        self.services = Services(script, infos)
        self.subs = Subscriber()
        self.tasks: list[asyncio.Task[None]] = []
        observers = RoomObservers()
        self.index = LocalIndex(self.subs, "gw1", observers)
        recovery = self.make_recovery()
        if recovery is not None:
            observers.add(recovery)
        self.pipelines = Pipelines("gw1", self.services, self.index, m.EventMeters(),
                                   self._spawn, recovery=recovery)
        conn = Connection("gw1.e", ConnectionConfig(), 0.0, ("websocket",))
        self.client = Client(conn, "10.0.0.1", {"authorization": "Bearer t"}, 1_000_000,
                             lambda c: None, Corker(), polling=Polling())
        self.client.flush()
        assert self.client.polling is not None
        self.client.polling.get()  # the OPEN packet

    def make_recovery(self) -> Recovery | None:
        """The gateway's connection state recovery, if the world has it."""
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    def sent(self) -> list[str]:
        """Everything queued for the client since the last look, packet by packet."""
        assert self.client.polling is not None
        body = self.client.polling.get()
        self.client.polling.abandon()
        return [] if body is None else body.split("\x1e")

    async def connected(self, auth: dict[str, Any] | None = None) -> NsSocket:
        self.client.conn.receive_frame("40", 0.0)
        await self.pipelines.connect(self.client,
                                     ConnectRequested("/", auth or {"token": "t"}))
        return self.client.sockets["/"]

    async def event(self, event: Ev) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        async def work(turn: Any) -> None:
            await self.pipelines.event(self.client, event, turn)
            done.set_result(None)

        self.client.lane.submit(work)
        await asyncio.wait_for(done, 5)
