"""Testing a service: call its handlers through the real dispatch, with no sockets.

As nameko's ``worker_factory`` / ``entrypoint_hook``: the test builds the service with its
dependencies (a :class:`~switchboard.shared.publisher.MemoryPublisher`, stores on a temporary
path, a fake clock) and drives it through :class:`ServiceHarness`, which sends
:class:`~switchboard.shared.envelope.Request` envelopes through the same
:class:`~switchboard.shared.dispatch.Dispatcher` the runner uses — so ``ClientError`` becomes
a failed reply, stateful services ask for a SYNC first, unknown events are refused — exactly
as in production. The same service behind its real ZeroMQ socket is
``tests/support/backbone.py``'s business.

Example::

    publisher = MemoryPublisher()
    hub = ServiceHarness(RoomService(publisher, Config(room_db=str(tmp_path / "r.db"))))
    reply = await hub.connect(session)
    reply = await hub.event(session, "join room", {"roomId": "lobby"})
    assert publisher.events("user joined")
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from switchboard.shared.dispatch import Dispatcher
from switchboard.shared.envelope import (
    GatewayStatus,
    Reply,
    Request,
    RequestKind,
    Session,
    SocketState,
)
from switchboard.shared.service import Service

S = TypeVar("S", bound=Service)


class ServiceHarness(Generic[S]):
    """Requests to one service through its real dispatch, as gateway ``gateway`` sends them.

    A stateful service answers ``resync`` to a gateway it has no SYNC from; the harness then
    sends one (with :attr:`sockets`, empty unless the test fills it) and the request again,
    as a real gateway does.
    """

    def __init__(self, service: S, gateway: str = "gw1", instance: str = "") -> None:
        self.service = service
        self.dispatcher = Dispatcher(service)
        self.gateway = gateway
        self.instance = instance
        #: What a SYNC from this harness reports.
        self.sockets: list[SocketState] = []
        self._ids = itertools.count(1)

    async def request(self, kind: RequestKind, **fields: Any) -> Reply:
        """One request (``id``, ``gateway`` and ``instance`` filled in) and its reply."""
        fields.setdefault("gateway", self.gateway)
        fields.setdefault("instance", self.instance)
        request = Request(kind, next(self._ids), **fields)
        if not self.dispatcher.admit(request):
            raise AssertionError(f"{kind.name} not admitted (a replaced gateway instance, or "
                                 "past its deadline)")
        reply = await self.dispatcher.handle(request)
        if reply.resync and kind != RequestKind.SYNC:
            await self.sync(request.gateway, self.sockets)
            reply = await self.dispatcher.handle(request)
        return reply

    # -- the kinds ---------------------------------------------------------------------------
    async def connect(self, session: Session, auth: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        return await self.request(RequestKind.CONNECT, session=session, auth=auth or {},
                                  headers=headers or {}, gateway=session.gateway)

    async def event(self, session: Session, event: str, *args: Any) -> Reply:
        return await self.request(RequestKind.EVENT, session=session, event=event,
                                  args=list(args), gateway=session.gateway)

    async def filter(self, session: Session, event: str, *args: Any) -> Reply:
        return await self.request(RequestKind.FILTER, session=session, event=event,
                                  args=list(args), gateway=session.gateway)

    async def disconnect(self, session: Session) -> Reply:
        return await self.request(RequestKind.DISCONNECT, session=session,
                                  gateway=session.gateway)

    async def update(self, session: Session) -> Reply:
        return await self.request(RequestKind.UPDATE, session=session, gateway=session.gateway)

    async def sync(self, gateway: str, sockets: Iterable[SocketState]) -> Reply:
        return await self.request(RequestKind.SYNC, gateway=gateway, sockets=tuple(sockets))

    async def heartbeat(self, gateway: str | None = None,
                        status: GatewayStatus | None = None) -> Reply:
        return await self.request(RequestKind.HEARTBEAT, gateway=gateway or self.gateway,
                                  status=status or GatewayStatus())

    async def ok(self, session: Session, event: str, *args: Any) -> dict[str, Any]:
        """An event that must succeed with one ack object ``{success: true, ...}``: that."""
        reply = await self.event(session, event, *args)
        assert reply.ok, reply.error
        assert reply.ack is not None and len(reply.ack) == 1, reply.ack
        ack: dict[str, Any] = reply.ack[0]
        assert ack.get("success") is True, ack
        return ack
