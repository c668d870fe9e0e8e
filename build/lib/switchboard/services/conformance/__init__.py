"""The configuration the official Socket.IO protocol test suite expects (socket.io-protocol,
``test-suite/``): namespaces ``/`` and ``/custom``; ``message`` echoed back as
``message-back``; ``message-with-ack`` acknowledged with its own arguments; on connect, each
namespace emits ``auth`` with the CONNECT payload right after the CONNECT ack."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared.envelope import Emit, Reply, Request, reply_to
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_connect, on_event


@dataclass(frozen=True)
class Config:
    """No settings: the suite fixes everything."""


class ConformanceService(Service):
    name = "conformance"

    @on_connect("/")
    async def connect_main(self, request: Request) -> Reply:
        return self._auth_echo(request)

    @on_connect("/custom")
    async def connect_custom(self, request: Request) -> Reply:
        return self._auth_echo(request)

    @staticmethod
    def _auth_echo(request: Request) -> Reply:
        return reply_to(request, emits=(Emit("auth", [request.auth or {}]),))

    @on_event("*", "message")
    async def message(self, request: Request) -> Reply:
        return reply_to(request, emits=(Emit("message-back", request.args),))

    @on_event("*", "message-with-ack")
    async def message_with_ack(self, request: Request) -> Reply:
        return reply_to(request, ack=request.args)


def create(config: Config, publisher: Publisher) -> ConformanceService:
    return ConformanceService(publisher)
