"""A minimal application service for gateway tests: two namespaces, acks, rooms, fan-out.

Run as ``switchboard service tests.support.miniapp --bind ...`` (any module with ``Config``
and ``create`` is a service), which is also how an application adds its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchboard.shared.envelope import Emit, Reply, Request, reply_to
from switchboard.shared.errors import ClientError
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_connect, on_event


@dataclass(frozen=True)
class Config:
    """No settings."""


def _room(args: list[Any]) -> str:
    if not args or not isinstance(args[0], str) or not args[0]:
        raise ClientError("room: required")
    return args[0]


class MiniApp(Service):
    name = "miniapp"

    @on_connect("/")
    async def connect_main(self, request: Request) -> Reply | None:
        auth = request.auth or {}
        if auth.get("refuse"):
            return Reply(request.id, ok=False, error="refused by test")
        return reply_to(request, emits=(Emit("hello", [{"ns": "/"}]),))

    @on_connect("/other")
    async def connect_other(self, request: Request) -> Reply:
        return reply_to(request, emits=(Emit("hello", [{"ns": "/other"}]),))

    @on_event("*", "echo")
    async def echo(self, request: Request) -> Reply:
        return reply_to(request, ack=request.args, emits=(Emit("echoed", request.args),))

    @on_event("*", "join")
    async def join(self, request: Request) -> Reply:
        room = _room(request.args)
        return reply_to(request, joins=(room,), ack=[{"success": True, "room": room}])

    @on_event("*", "leave")
    async def leave(self, request: Request) -> Reply:
        room = _room(request.args)
        return reply_to(request, leaves=(room,), ack=[{"success": True, "room": room}])

    @on_event("*", "say")
    async def say(self, request: Request) -> Reply:
        assert request.session is not None
        room = _room(request.args)
        self.publisher.emit_room(request.session.ns, room, "said", request.args[1:],
                                 exclude=[request.session.sid])
        return reply_to(request, ack=[{"success": True}])

    @on_event("*", "ask")
    async def ask(self, request: Request) -> Reply:
        """Ask the client a question whose ack comes back as the event ``answer``."""
        return reply_to(request, emits=(Emit("question", request.args, ack_event="answer"),))

    @on_event("*", "answer")
    async def answer(self, request: Request) -> Reply:
        return reply_to(request, emits=(Emit("answered", request.args),))

    @on_event("*", "whoami")
    async def whoami(self, request: Request) -> Reply:
        assert request.session is not None
        return reply_to(request, ack=[{"sid": request.session.sid, "ns": request.session.ns}])


def create(config: Config, publisher: Publisher) -> MiniApp:
    return MiniApp(publisher)
