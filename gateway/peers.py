"""Gateway to gateway: who the other gateways are, and requests to the one owning a session.

Long-polling needs no sticky sessions because any gateway can serve any request: a request
for a session another gateway owns (the sid names it) is sent to that gateway over
ZeroMQ, answered there, and the answer relayed (see ``docs/polling.md``).

- **Directory.** Every gateway binds a ROUTER (``--peer-bind``) and announces it on the
  broker every heartbeat interval (a ``PEER`` publication on the all-gateways topic:
  its id, instance id and endpoint). Others connect a DEALER to each gateway they hear
  of; a new instance under a known id replaces the old entry (and its socket), and an
  entry not announced for ``stale_after`` seconds is dropped.
- **Requests.** :meth:`Peers.request` sends a :class:`~shared.envelope.PeerRequest` and
  awaits its :class:`~shared.envelope.PeerReply` (matched by id, with a deadline, like
  the service backbone). Requests that reach this gateway go to ``on_request(identity,
  request)``; :meth:`reply` answers them, now or later (a long-poll GET).
- **Liveness.** Each DEALER is watched (a ZeroMQ socket monitor): requests go out only
  once its connection is up (waiting a moment for a peer just heard of), and when it
  drops — the peer died, or froze past the ZeroMQ heartbeat timeout — every request
  waiting on that peer fails at once, so that a client whose session died with its
  gateway hears ``Session ID unknown`` and reconnects instead of waiting out its poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq
import zmq.asyncio

from switchboard.shared.envelope import PeerReply, PeerRequest, PubKind, Publication
from switchboard.shared.errors import EnvelopeError
from switchboard.shared.loopsocket import LoopSocket, SocketMonitor, plain_socket, watched_dealer

log = logging.getLogger("switchboard.gateway.peers")


class Crowds(Protocol):
    """Who learns of the crowds peers hold, and when a peer's connection drops
    (:class:`~.admission.Admission`)."""

    def crowds(self) -> list[list[str | int]]: ...

    def peer_crowds(self, gateway: str, crowds: Iterable[object]) -> None: ...

    def peer_dropped(self, gateway: str, now: float) -> None: ...


class PeerUnavailable(Exception):
    """The gateway asked for is unknown, unreachable or did not answer in time."""


class PeerConnectionLost(PeerUnavailable):
    """The connection to the gateway dropped while the request was out: the gateway may only
    be frozen, and still hold it (then it hears an ABORT once reachable again)."""


#: How long a request waits for the connection to a peer that was just heard of.
CONNECT_WAIT = 1.0
_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


@dataclass(slots=True, eq=False)
class Peer:
    gateway: str
    instance: str
    endpoint: str
    seen: float
    dealer: LoopSocket | None = None
    monitor: SocketMonitor | None = None
    up: bool = False
    #: Requests waiting for this peer's answers (their ids), failed if it drops.
    waiting: set[int] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
        if self.dealer is not None:
            self.dealer.close()


def _expire(future: asyncio.Future[PeerReply]) -> None:
    if not future.done():
        future.set_exception(PeerUnavailable("no answer in time"))


class Peers:
    def __init__(
        self,
        gateway_id: str,
        instance: str,
        context: zmq.asyncio.Context,
        bind: str,
        advertise: str,
        on_request: Callable[[bytes, PeerRequest], None],
        stale_after: float = 10.0,
        hwm: int = 100_000,
        crowds: Crowds | None = None,
    ) -> None:
        self.crowds = crowds
        self.gateway_id = gateway_id
        self.instance = instance
        self.context = context
        self.on_request = on_request
        self.stale_after = stale_after
        self.hwm = hwm
        router = plain_socket(context, zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, hwm)
        router.setsockopt(zmq.SNDHWM, hwm)
        router.bind(bind)
        bound = router.getsockopt(zmq.LAST_ENDPOINT)
        self.endpoint = advertise or (bound.decode() if isinstance(bound, bytes) else str(bound))
        if not advertise and ("0.0.0.0" in self.endpoint or "[::]" in self.endpoint):
            router.close(0)
            raise ValueError("--peer-bind listens on every address: give --peer-address, the "
                             "endpoint other gateways reach this one at")
        self.router = LoopSocket(router, self._on_router)
        self.peers: dict[str, Peer] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[PeerReply]] = {}
        self._learned = asyncio.Event()
        #: Told (gateway id, instance) when a peer's process is gone: a new instance
        #: replaced it, or it stopped announcing itself for ``stale_after`` seconds.
        self.on_lost: Callable[[str, str], None] | None = None
        #: Told each time the connection to a peer is (again) up.
        self.on_connected: Callable[[Peer], None] | None = None

    def start(self) -> None:
        self.router.start()

    def close(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable("gateway closing"))
        for peer in self.peers.values():
            peer.close()
        self.peers.clear()
        self.router.close()

    # -- directory -------------------------------------------------------------------------
    def announcement(self) -> Publication:
        crowds = self.crowds.crowds() if self.crowds is not None else []
        return Publication(PubKind.PEER, "", args=[self.instance, self.endpoint, crowds],
                           source=self.gateway_id)

    def learn(self, pub: Publication) -> None:
        """A PEER announcement from the broker (our own included, and ignored)."""
        gateway = pub.source
        if gateway == self.gateway_id or len(pub.args) < 2:
            return
        instance, endpoint = pub.args[0], pub.args[1]
        if not isinstance(instance, str) or not isinstance(endpoint, str):
            return
        if self.crowds is not None and len(pub.args) > 2 and isinstance(pub.args[2], list):
            self.crowds.peer_crowds(gateway, pub.args[2])
        now = time.monotonic()
        known = self.peers.get(gateway)
        if known is not None and (known.instance, known.endpoint) == (instance, endpoint):
            known.seen = now
            return
        if known is not None:
            log.info("gateway %s restarted (instance %s)", gateway, instance)
            self._drop(known)
        else:
            log.info("gateway %s is at %s", gateway, endpoint)
        peer = Peer(gateway, instance, endpoint, now)
        self._connect(peer)
        self.peers[gateway] = peer
        self._learned.set()
        self._learned = asyncio.Event()

    def prune(self) -> None:
        """Forget gateways that stopped announcing themselves."""
        cutoff = time.monotonic() - self.stale_after
        for gateway, peer in list(self.peers.items()):
            if peer.seen < cutoff:
                log.info("gateway %s gone (no announcement for %.0fs)", gateway,
                         self.stale_after)
                self._drop(peer)
                del self.peers[gateway]

    @property
    def count(self) -> int:
        """Other gateways known."""
        return len(self.peers)

    @property
    def connected(self) -> int:
        """Other gateways known whose connection is up now."""
        return sum(1 for peer in self.peers.values() if peer.up)

    async def find(self, gateway: str, timeout: float) -> Peer | None:
        """The peer, waiting (bounded) for its announcement if it is not known yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (peer := self.peers.get(gateway)) is None:
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self._learned.wait(), left)
            except TimeoutError:
                return None
        return peer

    def _connect(self, peer: Peer) -> None:
        # ZeroMQ heartbeats: a peer that froze (no RST ever comes) counts as gone after 3 s.
        dealer, peer.monitor = watched_dealer(self.context, [peer.endpoint], self.hwm,
                                              _WATCHED, lambda event: self._on_event(peer, event))
        peer.dealer = LoopSocket(dealer, self._on_reply)
        peer.dealer.start()
        peer.monitor.start()

    def _on_event(self, peer: Peer, event: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            peer.up = True
            peer.ready.set()
            if self.on_connected is not None:
                try:
                    self.on_connected(peer)
                except Exception:
                    log.exception("handling the connection to gateway %s failed", peer.gateway)
        elif event == zmq.EVENT_DISCONNECTED:
            if peer.up:
                log.info("connection to gateway %s lost", peer.gateway)
                if self.crowds is not None:  # its clients come back now, through the others
                    self.crowds.peer_dropped(peer.gateway, time.monotonic())
            peer.up = False
            peer.ready.clear()
            # Not lost yet: a peer that froze (past the ZeroMQ heartbeat) still holds its
            # clients' requests and answers them when it resumes. It is lost when a new
            # instance replaces it or it stops announcing itself (``_drop``).
            self._fail_waiting(peer, "connection lost", PeerConnectionLost)

    def _drop(self, peer: Peer) -> None:
        self._fail_waiting(peer, "gone")
        peer.close()
        self._lost(peer)

    def _lost(self, peer: Peer) -> None:
        if self.on_lost is not None:
            try:
                self.on_lost(peer.gateway, peer.instance)
            except Exception:
                log.exception("handling the loss of gateway %s failed", peer.gateway)

    def _fail_waiting(self, peer: Peer, why: str,
                      error: type[PeerUnavailable] = PeerUnavailable) -> None:
        for request_id in list(peer.waiting):
            future = self._pending.get(request_id)
            if future is not None and not future.done():
                future.set_exception(error(f"gateway {peer.gateway}: {why}"))
        peer.waiting.clear()

    # -- requests out ----------------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    async def request(self, peer: Peer, request: PeerRequest, timeout: float) -> PeerReply:
        if not peer.up:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.ready.wait(), CONNECT_WAIT)
        dealer = peer.dealer
        if not peer.up or dealer is None:
            raise PeerUnavailable(f"gateway {peer.gateway} not connected")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PeerReply] = loop.create_future()
        self._pending[request.id] = future
        peer.waiting.add(request.id)
        timer = loop.call_later(timeout, _expire, future)
        try:
            try:
                dealer.send(request.encode())
            except zmq.ZMQError as exc:
                raise PeerUnavailable(f"gateway {peer.gateway} unreachable: {exc}") from None
            return await future
        finally:
            timer.cancel()
            self._pending.pop(request.id, None)
            peer.waiting.discard(request.id)

    def send(self, peer: Peer, request: PeerRequest) -> None:
        """Fire and forget (ABORT)."""
        if peer.dealer is not None:
            with contextlib.suppress(zmq.ZMQError):
                peer.dealer.send(request.encode())

    def new_request(self, **fields: Any) -> PeerRequest:
        return PeerRequest(id=self.next_id(), gateway=self.gateway_id, instance=self.instance,
                           deadline=time.time() + 60, **fields)

    def _on_reply(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 1:
                raise EnvelopeError(f"{len(frames)} frames instead of 1")
            reply = PeerReply.decode(frames[0])
        except EnvelopeError as exc:
            log.warning("undecodable peer reply dropped: %s", exc)
            return
        future = self._pending.get(reply.id)
        if future is not None and not future.done():
            future.set_result(reply)

    # -- requests in -----------------------------------------------------------------------
    def _on_router(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        identity, body = frames
        try:
            request = PeerRequest.decode(body)
        except EnvelopeError as exc:
            log.warning("undecodable peer request dropped: %s", exc)
            return
        try:
            self.on_request(identity, request)
        except Exception:
            log.exception("peer request %s for %s failed", request.kind.name, request.sid)
            self.reply(identity, PeerReply(request.id, 500))

    def reply(self, identity: bytes, reply: PeerReply) -> None:
        if self.router.socket.closed:
            return
        try:
            self.router.send_multipart((identity, reply.encode()))
        except zmq.ZMQError as exc:  # the asking gateway is gone: nobody to answer
            log.debug("peer reply dropped: %s", exc)
