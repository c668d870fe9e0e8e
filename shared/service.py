"""The service base class: plain classes with plain async handlers.

Decorators only register; nothing is wrapped or patched. A handler takes the
:class:`~shared.envelope.Request` and returns a :class:`~shared.envelope.Reply` (use
:func:`~shared.envelope.reply_to` / :func:`~shared.envelope.fail`), or None for "accepted,
nothing to say". Raising :class:`~shared.errors.ClientError` is the same as returning
``fail(request, message)``. Dependencies (publisher, stores, clocks, settings) come in
through the constructor, so tests call handlers directly; :func:`shared.runner.serve` runs
the same object behind its real ZeroMQ socket.

Example::

    class Echo(Service):
        name = "echo"

        @on_event("/", "ping")
        async def ping(self, request: Request) -> Reply:
            return reply_to(request, ack=request.args)
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from switchboard.shared.envelope import (
    GatewayStatus,
    Reply,
    Request,
    RequestKind,
    Route,
    ServiceInfo,
)
from switchboard.shared.errors import ClientError, ServiceUnavailable
from switchboard.shared.partitions import ALL, Membership, key_of
from switchboard.shared.publisher import Publisher
from switchboard.shared.schema import Cleaner, EventSchema

Handler = Callable[[Any, Request], Awaitable[Reply | None]]
BoundHandler = Callable[[Request], Awaitable[Reply | None]]
log = logging.getLogger("switchboard.service")

F = TypeVar("F", bound=Handler)

_ROUTES_ATTR = "__switchboard_routes__"


def _register(route: Route, schema: EventSchema | None = None) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        routes = getattr(func, _ROUTES_ATTR, [])
        routes.append((route, schema))
        setattr(func, _ROUTES_ATTR, routes)
        return func

    return decorate


def on_connect(ns: str, priority: int = 100, key: str = "") -> Callable[[F], F]:
    """A CONNECT stage for ``ns`` (``*``: every namespace); stages run by ascending priority.

    Declaring a CONNECT stage for a namespace also makes that namespace exist: CONNECTs to a
    namespace nobody declared are refused with ``Invalid namespace``. ``key``: for a
    partitioned service, which instance is the stage (:func:`shared.partitions.key_of`).
    """
    return _register(Route(RequestKind.CONNECT, ns, "", priority, key))


def on_event(ns: str, event: str, schema: EventSchema | None = None,
             key: str = "") -> Callable[[F], F]:
    """The owner of ``event`` in ``ns``; its reply becomes the client's ack.

    ``schema``: the event's payload declaration (:mod:`shared.schema`). The framework
    applies it with the service's :attr:`Service.cleaner` before the handler runs: the
    handler gets the canonical args, and a bad payload is refused with what to fix.
    ``key``: for a partitioned service, which instance owns the event
    (:func:`shared.partitions.key_of`).
    """
    return _register(Route(RequestKind.EVENT, ns, event, key=key), schema)


def on_filter(ns: str, priority: int = 100) -> Callable[[F], F]:
    """Sees every event of ``ns`` before its owner; may refuse it or replace its args."""
    return _register(Route(RequestKind.FILTER, ns, "", priority))


def on_connected(ns: str) -> Callable[[F], F]:
    """Told when a socket of ``ns`` has joined (its CONNECT accepted by every stage); unlike
    a CONNECT stage, it is not asked and cannot refuse, so it is off the CONNECT's path."""
    return _register(Route(RequestKind.CONNECTED, ns))


def on_disconnect(ns: str) -> Callable[[F], F]:
    """Told when a socket of ``ns`` leaves (client, server or gateway shutdown)."""
    return _register(Route(RequestKind.DISCONNECT, ns))


def on_update(ns: str) -> Callable[[F], F]:
    """Told when the gateway changes a socket's session on its own (the connection upgraded
    from polling to WebSocket: ``session.transport``)."""
    return _register(Route(RequestKind.UPDATE, ns))


def on_request(kind: RequestKind, ns: str = "*") -> Callable[[F], F]:
    """Handles requests of ``kind`` (e.g. the recovery service's RECOVER, MISSED, ATTACH,
    DETACH); the gateway finds the handler by its route."""
    return _register(Route(kind, ns))


def on_sync() -> Callable[[F], F]:
    """Receives a gateway's full socket list after this service (re)started."""
    return _register(Route(RequestKind.SYNC, "*"))


class Service:
    """Base for every service. Subclasses set :attr:`name` and decorate async methods."""

    #: What gateways know the service by (``--services``); an instance may set its own.
    name: str = "service"
    _routes: ClassVar[dict[tuple[RequestKind, str, str], str]] = {}
    _declared: ClassVar[dict[tuple[RequestKind, str, str], Route]] = {}
    _schemas: ClassVar[dict[tuple[RequestKind, str, str], EventSchema]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[tuple[RequestKind, str, str], str] = {}
        declared: dict[tuple[RequestKind, str, str], Route] = {}
        schemas: dict[tuple[RequestKind, str, str], EventSchema] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for route, schema in getattr(value, _ROUTES_ATTR, ()):
                    key = (route.kind, route.ns, route.event)
                    table[key] = attr
                    declared[key] = route
                    if schema is not None:
                        schemas[key] = schema
                    else:
                        schemas.pop(key, None)
        cls._routes = table
        cls._declared = declared
        cls._schemas = schemas

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        #: Random per process start; gateways compare it to notice a restart and resync.
        self.instance = secrets.token_hex(8)
        #: Live gateways and their last reported status (kept up to date by the runner).
        self.gateways: dict[str, GatewayStatus] = {}
        #: Applies the ``schema`` of this service's events; a service with its own limits
        #: or banned words replaces it in its constructor.
        self.cleaner = Cleaner()
        #: Set by a partitioned service: its group's name and instances (it is one of them).
        self.group = ""
        self.partition: Membership | None = None
        #: Every instance of the group, live or not (as configured).
        self.configured: tuple[str, ...] = ()
        #: Raised by a stateful service that dropped what the gateways' SYNC gave it (its
        #: members changed): the dispatcher then asks every gateway for a SYNC again.
        self.generation = 0

    @classmethod
    def routes(cls) -> tuple[Route, ...]:
        """Everything the service's decorators registered, with priorities."""
        return tuple(cls._declared[key] for key in cls._routes)

    @classmethod
    def schemas(cls) -> dict[tuple[str, str], EventSchema]:
        """The payload declaration of each event this service owns, by (namespace, event)."""
        return {(ns, event): schema for (kind, ns, event), schema in cls._schemas.items()
                if kind == RequestKind.EVENT}

    def info(self) -> ServiceInfo:
        if self.partition is None:
            return ServiceInfo(self.name, self.instance, self.routes())
        return ServiceInfo(self.name, self.instance, self.routes(), self.group,
                           self.partition.members, self.partition.epoch, self.configured)

    def _route_of(self, request: Request) -> tuple[RequestKind, str, str] | None:
        ns = request.session.ns if request.session is not None else "*"
        event = request.event if request.kind == RequestKind.EVENT else ""
        for key in ((request.kind, ns, event), (request.kind, "*", event)):
            if key in self._routes:
                return key
        return None

    def handler_for(self, request: Request) -> BoundHandler | None:
        """The bound handler for a request, trying the exact namespace then ``*``."""
        found = self.handling(request)
        return found[0] if found is not None else None

    def handling(self, request: Request
                 ) -> tuple[BoundHandler, EventSchema | None, str] | None:
        """The bound handler for a request, the schema its route declares and the route's
        partition key (one lookup for all: the dispatcher's, on every request)."""
        key = self._route_of(request)
        if key is None:
            return None
        return getattr(self, self._routes[key]), self._schemas.get(key), self._declared[key].key

    def prepared(self, request: Request, schema: EventSchema | None, key: str = "") -> Request:
        """``request`` with the canonical args of ``schema``, if there is one
        (:class:`~shared.schema.PayloadError`, a :class:`ClientError`, if they are bad).

        A partitioned service refuses first what is not its own (fencing): the gateway
        that sent it sees the instances otherwise than this one does.
        """
        partition = self.partition
        if key not in ("", ALL) and partition is not None and request.session is not None \
                and (len(partition.members) > 1 or self.leased):
            self._fence(request, partition, key)
        if schema is None:
            return request
        return replace(request, args=self.cleaner.apply(schema, request.args))

    def _fence(self, request: Request, partition: Membership, spec: str) -> None:
        session = request.session
        assert session is not None
        key = key_of(spec, session.identity, request.args)
        owner = partition.owner(key) if partition.members else "none"
        if owner != self.name:
            log.warning("%s %r for key %r refused: %s owns it (epoch %d); the sender's view of "
                        "the instances differs", request.kind.name, request.event, key, owner,
                        partition.epoch)
            raise ClientError(ServiceUnavailable.client_message)
        if not self.accepting(key):
            raise ClientError(ServiceUnavailable.client_message)

    #: Whether this service's ownership comes from leases (:meth:`accepting` decides too).
    leased = False

    def accepting(self, key: str) -> bool:
        """Whether this instance may serve ``key`` now, beyond owning it (a leased
        service: its lease holds, and a key just moved here has been let go)."""
        return True

    async def hand_over(self) -> None:
        """Called when the process is asked to stop, while requests are still answered
        (before :meth:`stop`): a partitioned service hands what it owns over here."""

    async def gateway_lost(self, gateway_id: str) -> None:
        """A gateway stopped sending heartbeats (crashed or partitioned); drop its sockets.

        Called after :attr:`gateways` no longer lists it.
        """

    async def open(self) -> None:
        """Called first, before the broker is waited for: open what the service keeps (its
        store), so that a store that names nothing real stops the process at once."""

    async def start(self) -> None:
        """Called once before the first request, after :meth:`open` and once the brokers
        are reachable (or their wait timed out): start timers, ask for state."""

    async def stop(self) -> None:
        """Called once on shutdown, after the last request was answered."""
