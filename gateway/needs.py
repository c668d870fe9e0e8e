"""What the request pipelines (:mod:`.pipelines`, :mod:`.connects`, :mod:`.departures`) need
of the rest of the gateway: the small Protocols their constructors take."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from switchboard.gateway.routing import RoutingTable
from switchboard.shared.envelope import Recovery as RecoveryMode
from switchboard.shared.envelope import Reply, RequestKind, Session

#: Runs work a client may be waiting for (the gateway's stop gives it the grace).
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Services(Protocol):
    """The service backbone (:class:`~.backbone.Backbone`)."""

    routing: RoutingTable

    async def request(self, service: str, kind: RequestKind, timeout: float | None = None,
                      sent: asyncio.Future[None] | None = None, **fields: Any) -> Reply: ...


class Judge(Protocol):
    """The policy an event must pass before it goes to its owner (gateway.policing)."""

    def judge(self, session: Session, event: str) -> str | None: ...

    def forget(self, sid: str) -> None: ...


class Gate(Protocol):
    """Who may join a namespace, decided here before any service is asked
    (gateway.gatekeeper)."""

    def admit(self, session: Session, auth: Any, headers: Mapping[str, str],
              recovery: RecoveryMode = RecoveryMode.NONE) -> Session: ...

    def rooms_of(self, session: Session) -> tuple[str, ...]: ...
