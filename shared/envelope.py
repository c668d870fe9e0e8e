"""Envelopes: every message that crosses ZeroMQ, as frozen dataclasses with encode/decode.

Wire format: one msgpack array per envelope, fields in declaration order (no keys on the
wire: compact and fast). New fields are appended with a default: an older decoder ignores
trailing fields it does not know, a newer one defaults the ones an older peer left out.
Binary attachments of Socket.IO packets travel as msgpack ``bin``, never base64. Nested
envelopes (a :class:`Session` inside a :class:`Request`) are nested arrays. ``decode``
raises :class:`~shared.errors.EnvelopeError` for anything malformed.

Request/reply (gateway DEALER → service ROUTER), frames ``[body, ...]``: every frame one
envelope, as many as were ready in one loop iteration (shared.loopsocket):
    :class:`Request` → :class:`Reply` (same ``id``)
Publish (service PUB → broker → gateway SUB), frames ``[topic, body]``:
    :class:`Publication`
Gateway to gateway (DEALER → the owner's peer ROUTER), frames ``[body]``:
    :class:`PeerRequest` → :class:`PeerReply` (same ``id``), a :class:`Handover` inside

This is the codec's one table of every message, which is why it runs past the ~400 lines the
other modules keep to.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

import msgpack

from switchboard.shared.errors import EnvelopeError

T = TypeVar("T", bound="Envelope")


_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def _pack(obj: Any) -> bytes:
    return _packer.pack(obj)


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise EnvelopeError(f"undecodable msgpack: {exc.__class__.__name__}") from None


# Per-field conversions a plan applies (everything else goes through msgpack as is: tuples
# pack as arrays and IntEnums as ints).
_NESTED, _NESTED_LIST, _ENUM, _TUPLE = 1, 2, 3, 4


class Envelope:
    """Array codec shared by all envelopes: subclasses list nested envelope fields.

    The field layout is turned once per class into a plan (which positions need nesting,
    enums or tuples), because envelopes are encoded and decoded on every hop of every
    message: the generic per-field reflection would cost more than the rest of the hop.
    """

    _nested: ClassVar[dict[str, type[Envelope]]] = {}
    _nested_lists: ClassVar[dict[str, type[Envelope]]] = {}
    _enums: ClassVar[dict[str, type[IntEnum]]] = {}
    _plan: ClassVar[tuple[int, Any, tuple[tuple[int, int, Any], ...], tuple[int, ...]] | None]

    @classmethod
    def _get_plan(
        cls,
    ) -> tuple[int, Any, tuple[tuple[int, int, Any], ...], tuple[int, ...]]:
        plan = cls.__dict__.get("_plan")
        if plan is None:
            flds = fields(cls)  # type: ignore[arg-type]
            names = [f.name for f in flds]
            steps: list[tuple[int, int, Any]] = []
            nested_out: list[int] = []
            for i, f in enumerate(flds):
                if f.name in cls._nested:
                    steps.append((i, _NESTED, cls._nested[f.name]))
                    nested_out.append(i)
                elif f.name in cls._nested_lists:
                    steps.append((i, _NESTED_LIST, cls._nested_lists[f.name]))
                    nested_out.append(i)
                elif f.name in cls._enums:
                    steps.append((i, _ENUM, cls._enums[f.name]))
                elif str(f.type).startswith("tuple"):
                    steps.append((i, _TUPLE, None))
            getter = operator.attrgetter(*names) if len(names) > 1 else (
                lambda obj, n=names[0]: (getattr(obj, n),)
            )
            plan = (len(names), getter, tuple(steps), tuple(nested_out))
            cls._plan = plan
        return plan

    def to_list(self) -> list[Any]:
        _, getter, steps, nested_out = self._get_plan()
        out = list(getter(self))
        if nested_out:
            for i, op, _arg in steps:
                if op == _NESTED:
                    value = out[i]
                    out[i] = None if value is None else value.to_list()
                elif op == _NESTED_LIST:
                    out[i] = [item.to_list() for item in out[i]]
        return out

    @classmethod
    def from_list(cls: type[T], items: Any) -> T:
        size, _, steps, _ = cls._get_plan()
        if not isinstance(items, list):
            raise EnvelopeError(f"{cls.__name__}: expected an array")
        if len(items) > size:
            # Fields are only ever appended: a newer peer's extra fields are ignored, so
            # parts of different versions interoperate during a rolling upgrade.
            del items[size:]
        count = len(items)
        try:
            for i, op, arg in steps:
                if i >= count:
                    break
                value = items[i]
                if op == _NESTED:
                    if value is not None:
                        items[i] = arg.from_list(value)
                elif op == _NESTED_LIST:
                    items[i] = tuple(arg.from_list(v) for v in value)
                elif op == _ENUM:
                    items[i] = arg(value)
                elif isinstance(value, list):
                    items[i] = tuple(value)
            return cls(*items)
        except EnvelopeError:
            raise
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"{cls.__name__}: {exc}") from None

    def encode(self) -> bytes:
        return _pack(self.to_list())

    @classmethod
    def decode(cls: type[T], data: bytes) -> T:
        return cls.from_list(_unpack(data))


@dataclass(frozen=True, slots=True)
class Session(Envelope):
    """Who one namespace socket is, as every service sees it.

    ``[sid, ns, gateway, address, user_id, username, role, connected_at, avatar,
    transport]``. ``sid`` is the
    Socket.IO socket id (``<gateway>.<random>``), unique cluster-wide. Services are
    stateless about sockets: the gateway sends the session with every request, and a stage
    (auth on CONNECT, ``set username``) may return an updated one.
    """

    sid: str
    ns: str
    gateway: str
    address: str = ""
    user_id: str | None = None
    username: str | None = None
    role: str | None = None
    connected_at: float = 0.0
    avatar: str | None = None
    #: The Engine.IO transport the socket's connection uses now: polling or websocket.
    transport: str = ""
    #: Its namespace has connection state recovery: a dropped connection may come back
    #: (elsewhere) within the window, so services wait a grace before they forget it.
    recoverable: bool = False

    @property
    def identity(self) -> str:
        """Who the socket is for presence and partitioning: its user, or the socket itself
        when anonymous."""
        return self.user_id if self.user_id is not None else self.sid

    def with_user(self, user_id: str | None, username: str | None, role: str | None) -> Session:
        return replace(self, user_id=user_id, username=username, role=role)


class RequestKind(IntEnum):
    DESCRIBE = 0  #: what do you handle? (readiness handshake)
    CONNECT = 1  #: a socket asks to join a namespace; every CONNECT stage must accept
    EVENT = 2  #: a client event: its filters first (if any), then the owner
    DISCONNECT = 3  #: a socket left (no reply needed, but one is sent)
    HEARTBEAT = 4  #: gateway liveness; reply carries the service instance id
    SYNC = 5  #: a gateway's full list of sockets and rooms (after a service restart)
    FILTER = 6  #: an EVENT seen by a filter stage before its owner
    UPDATE = 7  #: the gateway changed a socket's session itself (its transport upgraded)
    REPLAY = 8  #: publications a gateway missed: ``args`` [origin, after seq] (a broker crash)
    RECOVER = 9  #: connection state recovery: take the session of ``args`` [pid] (its state)
    MISSED = 10  #: what session ``args`` [pid, offset] missed: ``args`` [[offset, event, args]…]
    ATTACH = 11  #: a recoverable socket's state (``sockets`` one, with its pid) on this gateway
    DETACH = 12  #: a recoverable socket's connection dropped: the window for recovery starts
    POLICY = 13  #: the policy a gateway enforces on events: ``args`` [snapshot] (shared.policy)
    KEYS = 14  #: what a gateway checks tokens with at CONNECT: ``args`` [key set] (shared.access)
    CONNECTED = 15  #: a socket joined a namespace (told once its CONNECT was accepted)


class Recovery(IntEnum):
    """How a CONNECT came about (``Request.recovery``)."""

    NONE = 0  #: a new socket
    SKIP = 1  #: restored by connection state recovery; middlewares (token checks) skipped
    CHECK = 2  #: restored, and every stage checks it as a new CONNECT (skipMiddlewares off)


@dataclass(frozen=True, slots=True)
class SocketState(Envelope):
    """One socket and its rooms, as a gateway reports it in SYNC: ``[session, rooms, pid]``;
    ``pid``: its recovery id (connection state recovery), for the recovery service."""

    _nested: ClassVar[dict[str, type[Envelope]]] = {"session": Session}

    session: Session
    rooms: tuple[str, ...] = ()
    pid: str = ""


@dataclass(frozen=True, slots=True)
class GatewayStatus(Envelope):
    """A gateway's state, sent with each HEARTBEAT: ``[started_at, connections, address]``.

    ``connections`` counts sockets per namespace; ``address`` is where clients reach it.
    """

    started_at: float = 0.0
    connections: dict[str, int] = field(default_factory=dict)
    address: str = ""


@dataclass(frozen=True, slots=True)
class Emit(Envelope):
    """An event for the requesting socket, sent after the ack / CONNECT ack.

    ``[event, args, ack_event, unless_acked]``. With ``ack_event`` the client is asked for an
    ack, and its ack arguments come back to the services as the event ``ack_event`` from that
    socket. With ``unless_acked`` it is sent only to a client that passed no ack with its
    event (the answer then comes as this event instead); only the gateway knows which.
    """

    event: str
    args: list[Any] = field(default_factory=list)
    ack_event: str = ""
    unless_acked: bool = False


@dataclass(frozen=True, slots=True)
class Request(Envelope):
    """``[kind, id, gateway, session, event, args, auth, headers, sockets, deadline, status,
    instance, recovery, route, forwarded, joins, emits]``.

    - ``id``: per-gateway counter; the reply echoes it.
    - ``session``: the socket concerned (None for DESCRIBE / HEARTBEAT / SYNC).
    - ``event``/``args``: EVENT and FILTER (``args`` excludes the event name).
    - ``auth``/``headers``: CONNECT payload and the handshake's HTTP headers (lower-case names).
    - ``sockets``: SYNC; ``deadline``: wall-clock time after which the gateway gave up.
    - ``status``: HEARTBEAT (and DESCRIBE) carry the gateway's :class:`GatewayStatus`.
    - ``instance``: random per gateway process start. A gateway restarted under the same id
      is a new process whose predecessor's sockets are gone: a service that sees a new
      instance drops the old one's sockets at once (see :class:`shared.runner.Runner`).
    - ``recovery``: CONNECT of a socket restored by connection state recovery
      (:class:`Recovery`); ``sockets`` then holds its state (rooms).
    - ``route``: FILTER of an event on its way to its owner: the services it goes on to
      once this one let it pass, the further filters then the owner (last). Each passes
      it on itself (as FILTER, the last as EVENT, with the cleaned ``args``): one request
      per event, and the owner's reply goes straight to the gateway
      (:func:`gateway_identity`). ``forwarded``: it came from a service, not the gateway.
      CONNECT goes the same way through the namespace's CONNECT stages: each stage that
      accepts passes it on with the session as it left it, and ``joins``/``emits`` carry
      what the stages before asked for; the last one answers with all of it.
    """

    _nested: ClassVar[dict[str, type[Envelope]]] = {"session": Session, "status": GatewayStatus}
    _nested_lists: ClassVar[dict[str, type[Envelope]]] = {"sockets": SocketState,
                                                           "emits": Emit}
    _enums: ClassVar[dict[str, type[IntEnum]]] = {"kind": RequestKind, "recovery": Recovery}

    kind: RequestKind
    id: int
    gateway: str = ""
    session: Session | None = None
    event: str = ""
    args: list[Any] = field(default_factory=list)
    auth: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    sockets: tuple[SocketState, ...] = ()
    deadline: float = 0.0
    status: GatewayStatus | None = None
    instance: str = ""
    recovery: Recovery = Recovery.NONE
    route: tuple[str, ...] = ()
    forwarded: bool = False
    joins: tuple[str, ...] = ()
    emits: tuple[Emit, ...] = ()


def gateway_identity(gateway: str, instance: str) -> bytes:
    """The ZeroMQ routing id of a gateway process's DEALERs: a service answers a request
    passed on to it by another service straight to the gateway that sent it."""
    return f"{gateway}/{instance}".encode()


@dataclass(frozen=True, slots=True)
class Route(Envelope):
    """One thing a service handles: ``[kind, ns, event, priority, key]``; ``ns`` may be ``*``.

    ``key`` matters for a partitioned service only (:attr:`ServiceInfo.group`): which
    instance of the group a request goes to (:func:`switchboard.shared.partitions.key_of`
    reads it; ``all``: every instance, answers merged).
    """

    _enums: ClassVar[dict[str, type[IntEnum]]] = {"kind": RequestKind}

    kind: RequestKind
    ns: str
    event: str = ""
    priority: int = 100
    key: str = ""


@dataclass(frozen=True, slots=True)
class ServiceInfo(Envelope):
    """A service's self-description: ``[name, instance, routes]``.

    ``instance`` is random per process start, so a gateway notices a restart and resyncs.
    Routes: CONNECT (pipeline stage, ordered by priority; declaring one also makes the
    namespace exist), EVENT (owner of ``event`` in ``ns``), FILTER (sees every event of ``ns``
    before the owner, by priority), DISCONNECT (wants to hear of departures), SYNC.
    """

    _nested_lists: ClassVar[dict[str, type[Envelope]]] = {"routes": Route}

    name: str
    instance: str
    routes: tuple[Route, ...] = ()
    #: A partitioned service: the group this instance belongs to, and all of its instances
    #: (names as in ``--services``) as of ``epoch``; each owns the keys that hash to it.
    group: str = ""
    members: tuple[str, ...] = ()
    epoch: int = 0
    #: Every instance the group may have (its configured ones); ``members`` are those live
    #: now. One configured but not a member (its lease lapsed, or it never started) is not
    #: needed: the members serve its share.
    configured: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JournalEntry(Envelope):
    """``[seq, topic, body]``: one remembered publication, as it was published."""

    seq: int
    topic: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class ReplayBatch(Envelope):
    """A REPLAY's answer: ``[origin, epoch, upto, complete, more, entries]``.

    ``entries`` are the publications after the asked ``seq`` up to ``upto`` (oldest first);
    ``complete`` False: some were already forgotten (the journal is bounded); ``more``: ask
    again after ``upto`` for the rest. ``origin`` names the publisher process that answered
    (a restarted service has a new one and cannot answer for its predecessor)."""

    _nested_lists: ClassVar[dict[str, type[Envelope]]] = {"entries": JournalEntry}

    origin: str
    epoch: int
    upto: int
    complete: bool = True
    more: bool = False
    entries: tuple[JournalEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply(Envelope):
    """``[id, ok, error, ack, args, session, emits, joins, leaves, disconnect, info, resync,
    replay, service]``.

    - ``ok=False`` + ``error``: refusal (CONNECT_ERROR message) or failure (failed ack);
      ``error`` is client-facing text.
    - ``ack``: the ack arguments for the client (None: this stage does not ack).
    - ``args``: a filter's cleaned arguments, passed on to the next stage instead.
    - ``session``: the socket's updated session (kept by the gateway from now on).
    - ``emits``/``joins``/``leaves``: applied by the gateway to the requesting socket, in the
      order joins, leaves, ack, emits. ``disconnect``: then disconnect it from the namespace.
    - ``info``: DESCRIBE answers with a :class:`ServiceInfo`; HEARTBEAT with one too (its
      ``instance`` tells the gateway whether the service restarted).
    - ``resync``: a stateful service has not had this gateway's SYNC since it started (or
      since it declared the gateway lost): the gateway sends SYNC, then the request again.
    - ``replay``: REPLAY's answer.
    - ``service``: who answered, when not the service asked (a request with a ``route``):
      the one a ``resync`` is for.
    """

    _nested: ClassVar[dict[str, type[Envelope]]] = {
        "session": Session, "info": ServiceInfo, "replay": ReplayBatch,
    }
    _nested_lists: ClassVar[dict[str, type[Envelope]]] = {"emits": Emit}

    id: int
    ok: bool = True
    error: str | None = None
    ack: list[Any] | None = None
    args: list[Any] | None = None
    session: Session | None = None
    emits: tuple[Emit, ...] = ()
    joins: tuple[str, ...] = ()
    leaves: tuple[str, ...] = ()
    disconnect: bool = False
    info: ServiceInfo | None = None
    resync: bool = False
    replay: ReplayBatch | None = None
    service: str = ""


class PubKind(IntEnum):
    EMIT = 0  #: send ``event(*args)`` to the target's sockets
    JOIN = 1  #: the sockets in ``sids`` join ``room``
    LEAVE = 2  #: the sockets in ``sids`` leave ``room``
    DISCONNECT = 3  #: disconnect the target's sockets from ``ns`` (after emitting, if any)
    RESYNC = 4  #: a service (re)started: gateways send it SYNC
    CLOSE = 5  #: close the whole connection of the target's sockets
    PEER = 6  #: a gateway announces itself: ``source`` its id, ``args`` [instance, endpoint]
    BEAT = 7  #: a publisher's beat: ``seq`` its latest publication, ``epoch`` the beat's
    REPORT = 8  #: the Admin UI socket ``sids[0]`` of ``ns`` asks every gateway for its sockets
    RELEASE = 9  #: socket ``sids[0]`` was recovered on gateway ``args[0]``: others forget it
    POLICY = 10  #: a change of the moderation policy: ``args`` [update] (shared.policy)


@dataclass(frozen=True, slots=True)
class Publication(Envelope):
    """``[kind, ns, event, args, room, sids, exclude, source, ack_event, origin, seq, epoch]``,
    published on a topic.

    The topic (see :mod:`shared.topics`) chooses which gateways receive it; the body says
    which of their sockets act on it: members of ``room`` in ``ns`` (room / user targets),
    every socket of ``ns`` (``room`` None, ``sids`` empty), or exactly ``sids``. ``exclude``
    lists socket ids left out (the sender, for "to others"). ``source`` names the publisher.
    ``ack_event`` (EMIT): ask each receiving client for an ack, delivered back to the
    services as that event from the acking socket (as with :class:`Emit`).
    ``origin``/``seq``/``epoch``: the publisher process, its number for this publication and
    its last beat before it (see :mod:`shared.journal`); ``seq`` 0: not numbered (gateways'
    own announcements).
    """

    _enums: ClassVar[dict[str, type[IntEnum]]] = {"kind": PubKind}

    kind: PubKind
    ns: str
    event: str = ""
    args: list[Any] = field(default_factory=list)
    room: str | None = None
    sids: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    source: str = ""
    ack_event: str = ""
    origin: str = ""
    seq: int = 0
    epoch: int = 0

    def encode_stamped(self, origin: str, seq: int, epoch: int) -> bytes:
        """:meth:`encode` with the publisher's numbering in place of the last three fields."""
        items = self.to_list()
        items[-3:] = (origin, seq, epoch)
        return _pack(items)


class PeerKind(IntEnum):
    POLL = 0  #: a long-polling request (``method``, ``body``) for a session the receiver owns
    ABORT = 1  #: the client of forwarded request ``id`` went away before its answer
    CLAIM = 2  #: a WebSocket for session ``sid`` reached the sender: hand the session over
    HOLDS = 3  #: is namespace socket ``sid`` connected here? 200 yes, 404 no (recovery)


@dataclass(frozen=True, slots=True)
class PeerRequest(Envelope):
    """``[kind, id, gateway, instance, sid, method, body, deadline]``: from gateway ``gateway``
    (process ``instance``) to the gateway that owns Engine.IO session ``sid``."""

    _enums: ClassVar[dict[str, type[IntEnum]]] = {"kind": PeerKind}

    kind: PeerKind
    id: int
    gateway: str
    instance: str
    sid: str
    method: str = ""
    body: bytes = b""
    deadline: float = 0.0


@dataclass(frozen=True, slots=True)
class Handover(Envelope):
    """An Engine.IO session moving to the gateway that received its WebSocket, before any
    namespace was connected on it: ``[sid, address, headers, queued, held]``. ``queued``
    are packets for the client not yet delivered, ``held`` packets from it not yet handled
    (text packets as ``str``, binary as ``bytes``)."""

    sid: str
    address: str
    headers: dict[str, str] = field(default_factory=dict)
    queued: list[str | bytes] = field(default_factory=list)
    held: list[str | bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PeerReply(Envelope):
    """``[id, status, body, content_type, handover]``: for POLL the HTTP answer the
    forwarding gateway gives its client; for CLAIM 200 with the ``handover``, 409 when the
    session cannot move (it stays where it is), 400 when it is unknown."""

    _nested: ClassVar[dict[str, type[Envelope]]] = {"handover": Handover}

    id: int
    status: int
    body: bytes = b""
    content_type: str = ""
    handover: Handover | None = None


def decode_args(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise EnvelopeError("args must be an array")
    return value


def as_tuple(items: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(items) if items else ()


def reply_to(request: Request, **kwargs: Any) -> Reply:
    """A successful reply to ``request`` (``kwargs`` are :class:`Reply` fields)."""
    return Reply(id=request.id, **kwargs)


def fail(request: Request, message: str) -> Reply:
    """A failed reply to ``request``; ``message`` is shown to the client."""
    return Reply(id=request.id, ok=False, error=message)
