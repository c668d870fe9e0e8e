"""Emit to Socket.IO clients from any Python process that is not one: a web view, a task
queue worker, a cron job (as Node's ``@socket.io/redis-emitter`` or python-socketio's
write-only managers do).

An emitter is a publisher on the broker, like the services: it connects to the broker's
publish side (``switchboard up``: ``tcp://127.0.0.1:5550``; environment
``SWITCHBOARD_BROKER_PUB``) and sends the same fan-out publications, which every gateway
holding a target socket delivers::

    from switchboard.emitter import Emitter

    with Emitter() as io:
        io.to("r1").emit("room message", {"text": "build 1234 is green"})
        io.of("/chat").to_user("u42").emit("notice", "your export is ready")
        io.to_socket(sid).emit("progress", 0.5, b"\\x89PNG...")   # binary goes as binary
        io.except_(sender_sid).emit("announcement", "maintenance at 18:00")  # namespace

:class:`AsyncEmitter` is the same for asyncio code (``await io.to("r1").emit(...)``).

Targets are views: ``of``, ``to``, ``to_user``, ``to_socket`` and ``except_`` return a new
view and leave the emitter as it was, so one emitter serves a whole process (it holds one
ZeroMQ socket; it is not thread-safe, as ZeroMQ sockets are not: one per thread).

What it promises: a publication reaches every gateway the broker knows at that moment,
which delivers it to the target's sockets there; it is at-most-once, as Node's emitter is.
Publications are not numbered (docs/delivery.md): a broker crash in the instant one passes
through loses it, and nothing is stored in history (a room message meant to be kept goes
through the room service, as a client's does). The first emit waits (bounded) until the
broker has subscribed to the emitter, so nothing is lost to ZeroMQ's slow joiner; closing
waits (bounded) until what was sent has left the process.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import zmq

from switchboard.shared import checks, ports
from switchboard.shared.config import setting, split_items
from switchboard.shared.errors import SwitchboardError
from switchboard.shared.publisher import ZmqPublisher

#: The brokers' publish sides as ``switchboard up`` lays them out by default.
DEFAULT_BROKER = split_items(
    [os.environ.get("SWITCHBOARD_BROKER_PUB", ports.local(ports.BROKER_PUBLISH))])
#: Events a Socket.IO client keeps for itself (socket.io's ``RESERVED_EVENTS``).
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})

V = TypeVar("V", bound="_View")


class EmitterError(SwitchboardError):
    """The broker is not there, or an emit cannot be expressed (local misuse)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Whom a view emits to: a room, a user, one socket, or (none of them) the namespace."""

    namespace: str = "/"
    room: str | None = None
    user: str | None = None
    sid: str | None = None
    exclude: tuple[str, ...] = ()


class _Link:
    """The emitter's one connection to the broker, shared by all its views."""

    def __init__(self, broker: str | Sequence[str], ready_timeout: float,
                 flush_timeout: float, source: str) -> None:
        listed = split_items([broker]) if isinstance(broker, str) else tuple(broker)
        self.broker = ", ".join(listed)
        self.ready_timeout = ready_timeout
        self.flush_timeout = flush_timeout
        self.context: zmq.Context[Any] = zmq.Context()
        self.publisher = ZmqPublisher(self.context, listed, source)
        self.ready = False

    def not_ready(self) -> EmitterError:
        return EmitterError(f"no broker at {self.broker} within {self.ready_timeout:g} s")


class _View:
    """The fluent part shared by both emitters: a target and the link it sends on."""

    _link: _Link
    _target: Target

    def of(self: V, namespace: str) -> V:
        """The same emitter, in ``namespace`` (``/`` by default), aimed at its whole."""
        if not isinstance(namespace, str) or not namespace.startswith("/"):
            raise EmitterError(f"a namespace starts with '/': {namespace!r}")
        return self._aim(Target(namespace))

    def to(self: V, room: str) -> V:
        """Aim at the members of ``room`` (in this view's namespace), on every gateway."""
        return self._aim(replace(self._target, room=_name(room, "room"), user=None, sid=None))

    in_ = to

    def to_user(self: V, user_id: str) -> V:
        """Aim at every socket of user ``user_id`` (their ``user:<id>`` room)."""
        return self._aim(replace(self._target, user=_name(user_id, "user id"), room=None,
                                 sid=None))

    def to_socket(self: V, sid: str) -> V:
        """Aim at one socket, by its Socket.IO id."""
        return self._aim(replace(self._target, sid=_name(sid, "socket id"), room=None,
                                 user=None))

    def except_(self: V, *sids: str) -> V:
        """Leave out these sockets (by id), e.g. the one whose request caused the emit."""
        for sid in sids:
            _name(sid, "socket id")
        return self._aim(replace(self._target, exclude=(*self._target.exclude, *sids)))

    def _aim(self: V, target: Target) -> V:
        view = object.__new__(type(self))
        view._link, view._target = self._link, target
        return view

    def _publish(self, event: str, args: Iterable[Any]) -> None:
        if not isinstance(event, str) or not event:
            raise EmitterError("an event name is a non-empty string")
        if event in RESERVED_EVENTS:
            raise EmitterError(f"{event!r} is reserved by Socket.IO clients")
        t, payload = self._target, list(args)
        publisher = self._link.publisher
        if t.sid is not None:
            if t.exclude:
                raise EmitterError("except_ does not apply to one socket")
            try:
                publisher.emit_socket(t.sid, t.namespace, event, payload)
            except ValueError:
                raise EmitterError(f"not a switchboard socket id: {t.sid!r}") from None
        elif t.user is not None:
            publisher.emit_user(t.namespace, t.user, event, payload, t.exclude)
        elif t.room is not None:
            publisher.emit_room(t.namespace, t.room, event, payload, t.exclude)
        else:
            publisher.emit_namespace(t.namespace, event, payload, t.exclude)


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise EmitterError(f"a {what} is a non-empty string without NUL: {value!r}")
    return value


class Emitter(_View):
    """Emit from blocking code. ``broker``: the broker's publish endpoint (with several
    brokers, all of them, in the order every part lists them: a sequence, or one string
    with commas between)."""

    def __init__(self, broker: str | Sequence[str] = DEFAULT_BROKER, *, ready_timeout: float = 5.0,
                 flush_timeout: float = 2.0, source: str = "emitter") -> None:
        self._link = _Link(broker, ready_timeout, flush_timeout, source)
        self._target = Target()

    def emit(self, event: str, *args: Any) -> None:
        """Send ``event(*args)`` to this view's target (JSON-like values and bytes)."""
        link = self._link
        if not link.ready:
            if not link.publisher.wait_subscribed(link.ready_timeout):
                raise link.not_ready()
            link.ready = True
        self._publish(event, args)

    def close(self) -> None:
        """Send what is queued (within ``flush_timeout``), then release the socket."""
        link = self._link
        link.publisher.close(linger_ms=int(link.flush_timeout * 1000))
        link.context.term()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEmitter(_View):
    """Emit from asyncio code: ``await io.to(room).emit(event, *args)``."""

    def __init__(self, broker: str | Sequence[str] = DEFAULT_BROKER, *, ready_timeout: float = 5.0,
                 flush_timeout: float = 2.0, source: str = "emitter") -> None:
        self._link = _Link(broker, ready_timeout, flush_timeout, source)
        self._target = Target()

    async def emit(self, event: str, *args: Any) -> None:
        """Send ``event(*args)`` to this view's target (JSON-like values and bytes)."""
        link = self._link
        if not link.ready:
            if not await link.publisher.wait_ready(link.ready_timeout):
                raise link.not_ready()
            link.ready = True
        self._publish(event, args)

    async def close(self) -> None:
        """Send what is queued (within ``flush_timeout``), then release the socket."""
        link = self._link
        # Terminating waits out the linger until the queue drains: off the loop.
        def close() -> None:
            link.publisher.close(linger_ms=int(link.flush_timeout * 1000))
            link.context.term()

        await asyncio.to_thread(close)

    async def __aenter__(self) -> AsyncEmitter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- the command line: ``switchboard emit`` -----------------------------------------------------


@dataclass(frozen=True)
class EmitConfig:
    broker_pub: tuple[str, ...] = setting(
        DEFAULT_BROKER, "The brokers' publish endpoints, in the order every part lists them.",
        env="SWITCHBOARD_BROKER_PUB", check=checks.connect_endpoint)
    namespace: str = setting("/", "Namespace to emit in.", env="SWITCHBOARD_EMIT_NAMESPACE")
    room: str | None = setting(None, "Emit to the members of this room.",
                               env="SWITCHBOARD_EMIT_ROOM")
    user: str | None = setting(None, "Emit to every socket of this user id.",
                               env="SWITCHBOARD_EMIT_USER")
    socket: str | None = setting(None, "Emit to this one socket id.", env="SWITCHBOARD_EMIT_SOCKET")
    exclude: tuple[str, ...] = setting((), "Leave out this socket id.",
                                       env="SWITCHBOARD_EMIT_EXCLUDE")
    ready_timeout: float = setting(5.0, "Seconds to wait for the broker.",
                                   env="SWITCHBOARD_EMIT_READY_TIMEOUT")


def run_emit(config: EmitConfig, event: str, args: list[Any]) -> None:
    """Emit once as ``config`` says (one of room, user, socket; none: the namespace)."""
    chosen = [name for name in ("room", "user", "socket") if getattr(config, name) is not None]
    if len(chosen) > 1:
        raise EmitterError(f"give one target, not {' and '.join(chosen)}")
    with Emitter(config.broker_pub, ready_timeout=config.ready_timeout) as io:
        view = io.of(config.namespace)
        if config.room is not None:
            view = view.to(config.room)
        elif config.user is not None:
            view = view.to_user(config.user)
        elif config.socket is not None:
            view = view.to_socket(config.socket)
        view.except_(*config.exclude).emit(event, *args)
