"""python-socketio clients for integration tests that queue everything they receive.

- :class:`QueuedPeer` wraps one ``socketio.AsyncClient`` (no reconnection unless given a
  client that does; the client's default transports — polling, then the upgrade — unless
  told others). Every event of each namespace it listens to is logged in arrival order and
  queued under ``(namespace, event)``; so are its connects, disconnects and CONNECT_ERRORs,
  as the events ``connect``, ``disconnect`` and ``connect_error``. Tests read them with
  :meth:`~QueuedPeer.next` / :meth:`~QueuedPeer.wait_for`, and check that something did *not*
  arrive with :meth:`~QueuedPeer.seen` / :meth:`~QueuedPeer.unread` after a later event did.
- :class:`UserPeer` is a user of the chat app on ``/``: it connects with a token for its
  name and returns once its ``welcome`` came.

Every wait is bounded: by the peer's ``wait`` seconds unless a call says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import reprlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self

import socketio

from tests.support.cluster import token

WAIT = 10.0


@dataclass(frozen=True)
class Received:
    ns: str
    event: str
    args: tuple[Any, ...]

    @property
    def data(self) -> Any:
        """The payload: the single argument, or the tuple of them (None when there are none)."""
        if len(self.args) == 1:
            return self.args[0]
        return self.args or None


def user_auth(user_id: str, username: str | None = None, role: str = "user") -> dict[str, str]:
    """CONNECT auth of user ``user_id`` (named ``username``, by default its id)."""
    return {"token": token(user_id, username or user_id, role=role)}


def _data(args: tuple[Any, ...]) -> Any:
    """What python-socketio emits as ``args``: nothing, the one argument, or several."""
    if not args:
        return None
    return args[0] if len(args) == 1 else args


class QueuedPeer:
    """One python-socketio client named ``name``; ``ns`` is the namespace its calls and waits
    use unless told another, and the one :attr:`sid` is of."""

    def __init__(self, name: str, client: socketio.AsyncClient | None = None, *,
                 ns: str = "/", auth: Any = None, transports: list[str] | None = None,
                 wait: float = WAIT) -> None:
        self.name = name
        self.client = client if client is not None else socketio.AsyncClient(
            reconnection=False)
        self.ns = ns
        self.auth = auth  # CONNECT auth unless connect() is given other
        self.transports = transports
        self.wait = wait
        self.log: list[Received] = []
        #: The socket id of each namespace, the latest one: kept after a disconnect.
        self.sids: dict[str, str] = {}
        self.disconnects: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._queues: defaultdict[tuple[str, str], asyncio.Queue[Received]] = defaultdict(
            asyncio.Queue)
        self._listening: set[str] = set()
        self.listen(ns)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- connecting ------------------------------------------------------------------------
    def listen(self, ns: str) -> None:
        """Record what comes on ``ns`` (before connecting, so that nothing is missed)."""
        if ns in self._listening:
            return
        self._listening.add(ns)

        def record(event: str, *args: Any) -> None:
            self._record(Received(ns, event, args))

        def connected() -> None:
            self.sids[ns] = self.client.get_sid(ns) or ""
            self._record(Received(ns, "connect", (self.sids[ns],)))

        def disconnected(*args: Any) -> None:
            self.disconnects[ns].set()
            self._record(Received(ns, "disconnect", args))

        def connect_error(*args: Any) -> None:
            self._record(Received(ns, "connect_error", args))

        self.client.on("*", record, namespace=ns)
        self.client.on("connect", connected, namespace=ns)
        self.client.on("disconnect", disconnected, namespace=ns)
        self.client.on("connect_error", connect_error, namespace=ns)

    def _record(self, item: Received) -> None:
        self.log.append(item)
        self._queues[(item.ns, item.event)].put_nowait(item)

    async def connect(self, url: str, namespaces: Iterable[str] | None = None, *,
                      auth: Any = None, headers: dict[str, str] | None = None,
                      wait_timeout: float | None = None) -> Self:
        """Connect to ``namespaces`` (by default ``ns``); ``wait_timeout`` is how long the
        client waits for their CONNECT answers (by default ``wait``)."""
        names = [self.ns] if namespaces is None else list(namespaces)
        for ns in names:
            self.listen(ns)
        options: dict[str, Any] = {} if self.transports is None else {
            "transports": self.transports}
        await asyncio.wait_for(self.client.connect(
            url, namespaces=names, auth=self.auth if auth is None else auth,
            headers=headers or {}, wait_timeout=self.wait if wait_timeout is None else
            wait_timeout, **options), self.wait + 1)
        return self

    @property
    def sid(self) -> str:
        return self.sid_of(self.ns)

    def sid_of(self, ns: str) -> str:
        """The socket id in ``ns`` (the latest: after a disconnect, until a reconnect)."""
        assert ns in self.sids, f"{self.name} never connected to {ns}"
        return self.sids[ns]

    async def wait_disconnected(self, ns: str | None = None, *,
                                timeout: float | None = None) -> None:
        ns = ns or self.ns
        timeout = self.wait if timeout is None else timeout
        try:
            await asyncio.wait_for(self.disconnects[ns].wait(), timeout)
        except TimeoutError:
            message = f"{self.name}: still connected to {ns} after {timeout}s"
            raise AssertionError(message) from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), self.wait)

    # -- sending ---------------------------------------------------------------------------
    async def call(self, event: str, *args: Any, ns: str | None = None,
                   timeout: float | None = None) -> Any:
        """Emit ``args`` with an ack callback; the ack's (single) argument."""
        return await self.client.call(event, _data(args), namespace=ns or self.ns,
                                      timeout=self.wait if timeout is None else timeout)

    async def emit(self, event: str, *args: Any, ns: str | None = None) -> None:
        """Emit ``args`` without an ack callback."""
        await self.client.emit(event, _data(args), namespace=ns or self.ns)

    # -- receiving -------------------------------------------------------------------------
    async def receive(self, event: str, *, ns: str | None = None,
                      timeout: float | None = None) -> Received:
        """The next unread ``event`` of ``ns``."""
        ns = ns or self.ns
        timeout = self.wait if timeout is None else timeout
        try:
            return await asyncio.wait_for(self._queues[(ns, event)].get(), timeout)
        except TimeoutError:
            got = Counter(f"{r.ns} {r.event}" for r in self.log)
            raise AssertionError(
                f"{self.name}: no {event!r} on {ns} within {timeout}s; got {dict(got)}"
            ) from None

    async def next(self, event: str, *, ns: str | None = None,
                   timeout: float | None = None) -> Any:
        """The payload of the next unread ``event`` of ``ns``."""
        return (await self.receive(event, ns=ns, timeout=timeout)).data

    async def wait_for(self, event: str, predicate: Callable[[Any], bool], *,
                       ns: str | None = None, timeout: float | None = None) -> Any:
        """The payload of the next unread ``event`` that matches; earlier ones are dropped."""
        ns = ns or self.ns
        timeout = self.wait if timeout is None else timeout
        deadline = time.monotonic() + timeout
        skipped: list[Any] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no matching {event!r} on {ns} within "
                                     f"{timeout}s; skipped {reprlib.repr(skipped)}")
            try:
                item = await asyncio.wait_for(self._queues[(ns, event)].get(), left)
            except TimeoutError:
                continue
            if predicate(item.data):
                return item.data
            skipped.append(item.data)

    def seen(self, event: str, *, ns: str | None = None,
             predicate: Callable[[Any], bool] = lambda _: True) -> list[Any]:
        """Every payload of ``event`` received so far (read or not) that matches."""
        ns = ns or self.ns
        return [r.data for r in self.log if r.ns == ns and r.event == event
                and predicate(r.data)]

    def unread(self, event: str, *, ns: str | None = None) -> int:
        return self._queues[(ns or self.ns, event)].qsize()

    def drain(self, event: str, *, ns: str | None = None) -> list[Received]:
        """Every unread ``event`` of ``ns``, read now."""
        queue = self._queues[(ns or self.ns, event)]
        return [queue.get_nowait() for _ in range(queue.qsize())]


class UserPeer(QueuedPeer):
    """User ``user_id`` (named so too) on ``/``: it connects with a token for it and returns
    once its ``welcome`` came."""

    def __init__(self, user_id: str, transports: list[str] | None = None,
                 reconnection: bool = False) -> None:
        super().__init__(user_id, socketio.AsyncClient(reconnection=reconnection),
                         auth=user_auth(user_id), transports=transports)

    async def connect(self, url: str, namespaces: Iterable[str] | None = None, *,
                      auth: Any = None, headers: dict[str, str] | None = None,
                      wait_timeout: float | None = None) -> Self:
        await super().connect(url, namespaces, auth=auth, headers=headers,
                              wait_timeout=wait_timeout)
        await self.next("welcome")
        return self
