"""Helpers of the end-to-end chat tests: real python-socketio clients against a real cluster.

- :class:`ChatClient` wraps one ``socketio.AsyncClient`` (the client's default transports —
  polling, then the upgrade — unless the cluster names others; no reconnection) and records
  every event it receives, per namespace, in arrival order. Tests
  read events with :meth:`ChatClient.next` / :meth:`ChatClient.wait_for` (bounded waits) and
  check that something did *not* arrive with :meth:`ChatClient.seen` after a later "barrier"
  event arrived (the room service publishes in request order and one gateway delivers one
  subscription's messages in order, so once the barrier is in, anything sent before it is too).
- :class:`Clients` creates clients for a test and disconnects all of them at the end
  (``async with Clients(cluster) as clients``), whatever happens.
- :func:`refusal` connects expecting a CONNECT_ERROR and returns its data.
- :func:`poll` retries a coroutine until a predicate holds, with a deadline and a backoff
  that keeps a polling user well under the event rate limit.

Every wait is bounded by :data:`WAIT` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import socketio

from switchboard.shared.topics import gateway_of
from tests.support.cluster import Cluster, token

#: Generous: the suite must hold on a loaded two-core machine running other clusters too.
WAIT = 15.0
#: The contract's timestamps: ISO-8601 UTC (``Z`` or ``+00:00``), optional fraction.
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)$")

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    """A user/room/game id no other test (or earlier run against the same cluster) uses."""
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


def assert_iso_utc(value: Any, within: float = 120.0) -> None:
    """``value`` is an ISO-8601 UTC timestamp close to now."""
    assert isinstance(value, str) and ISO_UTC.match(value), f"not ISO-8601 UTC: {value!r}"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.tzinfo is not None and moment.utcoffset() == UTC.utcoffset(None)
    assert abs(moment.timestamp() - time.time()) < within, f"timestamp far from now: {value}"


def assert_keys(payload: Any, keys: Iterable[str], extra: Iterable[str] = ()) -> None:
    """``payload`` is a dict with every key of ``keys`` and nothing beyond ``extra``."""
    assert isinstance(payload, dict), f"not an object: {payload!r}"
    required = set(keys)
    missing = required - payload.keys()
    unexpected = payload.keys() - required - set(extra)
    assert not missing and not unexpected, (
        f"payload {payload!r}: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
    )


def failed(error: str) -> dict[str, Any]:
    """A failed ack as the contract shapes it."""
    return {"success": False, "error": error}


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


class ChatClient:
    """One Socket.IO client that records every event of the namespaces it listens to."""

    def __init__(self, label: str = "", user_id: str | None = None,
                 username: str | None = None, transports: list[str] | None = None) -> None:
        self.label = label
        self.transports = transports
        self.user_id = user_id
        self.username = username
        self.sio = socketio.AsyncClient(reconnection=False)
        self.log: list[Received] = []
        self._queues: dict[tuple[str, str], asyncio.Queue[Received]] = defaultdict(asyncio.Queue)
        self.disconnects: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.connect_errors: dict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self._listening: set[str] = set()

    def __repr__(self) -> str:
        return f"<ChatClient {self.label or self.user_id}>"

    # -- connecting ----------------------------------------------------------------------------
    def listen(self, ns: str) -> None:
        """Record events of ``ns`` (done before connecting so that nothing is missed)."""
        if ns in self._listening:
            return
        self._listening.add(ns)

        def record(event: str, *args: Any) -> None:
            item = Received(ns, event, args)
            self.log.append(item)
            self._queues[(ns, event)].put_nowait(item)

        def disconnected(*_: Any) -> None:
            self.disconnects[ns].set()

        def connect_error(data: Any = None) -> None:
            self.connect_errors[ns].put_nowait(data)

        self.sio.on("*", record, namespace=ns)
        self.sio.on("disconnect", disconnected, namespace=ns)
        self.sio.on("connect_error", connect_error, namespace=ns)

    async def connect(self, url: str, namespaces: Iterable[str] = ("/",), auth: Any = None,
                      headers: dict[str, str] | None = None) -> ChatClient:
        names = list(namespaces)
        for ns in names:
            self.listen(ns)
        options: dict[str, Any] = {} if self.transports is None else {
            "transports": self.transports}
        await asyncio.wait_for(
            self.sio.connect(url, namespaces=names, auth=auth, headers=headers or {},
                             wait_timeout=WAIT, **options),
            WAIT + 1,
        )
        return self

    @property
    def gateway(self) -> str:
        """The id of the gateway serving this client (socket ids embed it)."""
        return gateway_of(self.sid(next(iter(self.connected_namespaces), "/")))

    def sid(self, ns: str = "/") -> str:
        sid = self.sio.get_sid(ns)
        assert isinstance(sid, str), f"{self} is not connected to {ns}"
        return sid

    @property
    def connected_namespaces(self) -> set[str]:
        return set(self.sio.namespaces)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), WAIT)

    # -- sending -------------------------------------------------------------------------------
    async def call(self, event: str, data: Any = None, ns: str = "/") -> Any:
        """Emit with an ack callback; the ack's (single) argument."""
        return await self.sio.call(event, data, namespace=ns, timeout=WAIT)

    async def emit(self, event: str, data: Any = None, ns: str = "/") -> None:
        """Emit without an ack callback."""
        await self.sio.emit(event, data, namespace=ns)

    # -- receiving -----------------------------------------------------------------------------
    async def next(self, event: str, ns: str = "/", timeout: float = WAIT) -> Any:
        """The payload of the next unread ``event`` of ``ns``."""
        try:
            item = await asyncio.wait_for(self._queues[(ns, event)].get(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self}: no {event!r} on {ns} within {timeout}s; got "
                f"{[(r.ns, r.event) for r in self.log]}"
            ) from None
        return item.data

    async def wait_for(self, event: str, predicate: Callable[[Any], bool], ns: str = "/",
                       timeout: float = WAIT) -> Any:
        """The payload of the next unread ``event`` that matches; earlier ones are dropped."""
        deadline = time.monotonic() + timeout
        skipped: list[Any] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self}: no matching {event!r} on {ns}; saw {skipped}")
            try:
                item = await asyncio.wait_for(self._queues[(ns, event)].get(), left)
            except TimeoutError:
                continue
            if predicate(item.data):
                return item.data
            skipped.append(item.data)

    def seen(self, event: str, ns: str = "/",
             predicate: Callable[[Any], bool] = lambda _: True) -> list[Any]:
        """Every payload of ``event`` received so far (read or not) that matches."""
        return [r.data for r in self.log if r.ns == ns and r.event == event
                and predicate(r.data)]

    def unread(self, event: str, ns: str = "/") -> int:
        return self._queues[(ns, event)].qsize()

    async def wait_disconnected(self, ns: str = "/", timeout: float = WAIT) -> None:
        try:
            await asyncio.wait_for(self.disconnects[ns].wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self}: still connected to {ns} after {timeout}s") from None


class Clients:
    """Creates a test's clients on the cluster's gateways; disconnects them all on exit."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.all: list[ChatClient] = []
        self._gateway_ids: dict[int, str] = {}

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close_all()

    async def close_all(self) -> None:
        clients, self.all = self.all, []
        await asyncio.gather(*(c.close() for c in clients))

    def url(self, gateway: int) -> str:
        return self.cluster.client_url(gateway)

    async def gateway_id(self, gateway: int) -> str:
        """The id gateway ``gateway`` gives itself (its ``/stats``; socket ids embed it)."""
        if gateway not in self._gateway_ids:
            stats = await asyncio.to_thread(self.cluster.stats, gateway)
            self._gateway_ids[gateway] = stats["gateway"]
        return self._gateway_ids[gateway]

    def new(self, label: str = "", user_id: str | None = None,
            username: str | None = None) -> ChatClient:
        client = ChatClient(label, user_id, username, self.cluster.transports)
        self.all.append(client)
        return client

    async def user(self, gateway: int, user_id: str, username: str | None = None,
                   role: str = "user", namespaces: Iterable[str] = ("/",),
                   via_header: bool = False) -> ChatClient:
        """A signed-in client of ``user_id`` connected to gateway ``gateway``."""
        username = username or user_id
        client = self.new(f"{user_id}@{gateway}", user_id, username)
        jwt = token(user_id, username, role)
        if via_header:
            await client.connect(self.url(gateway), namespaces,
                                 headers={"Authorization": f"Bearer {jwt}"})
        else:
            await client.connect(self.url(gateway), namespaces, auth={"token": jwt})
        return client

    async def anonymous(self, gateway: int, namespaces: Iterable[str] = ("/game",)
                        ) -> ChatClient:
        client = self.new(f"anonymous@{gateway}")
        await client.connect(self.url(gateway), namespaces)
        return client

    async def admin(self, gateway: int, user_id: str | None = None) -> ChatClient:
        user_id = user_id or unique("admin")
        return await self.user(gateway, user_id, "Admin", role="admin", namespaces=("/admin",))


async def refusal(url: str, namespace: str = "/", auth: Any = None,
                  headers: dict[str, str] | None = None) -> Any:
    """Connect expecting a CONNECT_ERROR on ``namespace``; its data (``{message}``)."""
    client = ChatClient(f"refused@{namespace}")
    client.listen(namespace)
    try:
        with contextlib.suppress(socketio.exceptions.ConnectionError):
            await client.connect(url, [namespace], auth=auth, headers=headers)
            raise AssertionError(f"CONNECT to {namespace} of {url} succeeded")
        try:
            return await asyncio.wait_for(client.connect_errors[namespace].get(), WAIT)
        except TimeoutError:
            raise AssertionError(f"no connect_error for {namespace}") from None
    finally:
        await client.close()


async def poll(fetch: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool],
               timeout: float = 12.0, what: str = "condition") -> Any:
    """``await fetch()`` until ``predicate`` holds for its result; that result.

    The pause between tries doubles from 50 ms up to 800 ms, so a poll sends at most about
    a dozen requests within the (default, 10 s) rate-limit window.
    """
    deadline = time.monotonic() + timeout
    pause = 0.05
    last: Any = None
    while True:
        last = await fetch()
        if predicate(last):
            return last
        if time.monotonic() + pause > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last: {last!r}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.8)
