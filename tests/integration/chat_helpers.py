"""Helpers of the end-to-end chat tests: real python-socketio clients against a real cluster.

- :class:`ChatClient` is a :class:`~tests.support.peer.QueuedPeer` (the client's default
  transports — polling, then the upgrade — unless the cluster names others; no
  reconnection): it records every event it receives, per namespace, in arrival order. Tests
  read events with :meth:`~QueuedPeer.next` / :meth:`~QueuedPeer.wait_for` (bounded waits) and
  check that something did *not* arrive with :meth:`~QueuedPeer.seen` after a later "barrier"
  event arrived (the room service publishes in request order and one gateway delivers one
  subscription's messages in order, so once the barrier is in, anything sent before it is too).
  That holds for events of one topic from one publisher; across topics that live on two
  brokers, or events from two room instances, a barrier only makes a "did not arrive" check
  likely, never wrong: such a check cannot fail because of the order.
- :class:`Clients` creates clients for a test and disconnects all of them at the end
  (``async with Clients(cluster) as clients``), whatever happens.
- :func:`refusal` connects expecting a CONNECT_ERROR and returns its data.
- :data:`POLL_TIMEOUT` and :data:`POLL_MAX_INTERVAL`: the deadline and the backoff of these
  tests' polls (:func:`tests.support.polling.poll_until`), which keeps a polling user well
  under the event rate limit.

Every wait is bounded by :data:`WAIT` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import socketio

from switchboard.shared.topics import gateway_of
from tests.support.cluster import Cluster, http_get, token
from tests.support.peer import QueuedPeer
from tests.support.polling import poll_until

#: Generous: the suite must hold on a loaded two-core machine running other clusters too.
WAIT = 15.0
#: A poll's deadline, and the longest pause of its backoff: the pause doubles from 50 ms up
#: to 800 ms, so a poll sends at most about a dozen requests within the (default, 10 s)
#: rate-limit window.
#: The room service's --room-empty-grace in the chat clusters: short, so the tests can see
#: an emptied room kept and then deleted (the default is 60 s).
ROOM_GRACE = 3.0
POLL_TIMEOUT = 12.0
POLL_MAX_INTERVAL = 0.8
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


class ChatClient(QueuedPeer):
    """A client of the chat tests: ``label`` names it; ``user_id`` and ``username`` are who
    it signs in as, if anyone."""

    def __init__(self, label: str = "", user_id: str | None = None,
                 username: str | None = None, transports: list[str] | None = None) -> None:
        super().__init__(label or user_id or "", transports=transports, wait=WAIT)
        self.label = label
        self.user_id = user_id
        self.username = username

    @property
    def gateway(self) -> str:
        """The id of the gateway serving this client (socket ids embed it)."""
        return gateway_of(self.sid_of(next(iter(self.connected_namespaces), "/")))

    @property
    def connected_namespaces(self) -> set[str]:
        return set(self.client.namespaces)


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

    async def user_on(self, gateway: int, user_id: str, username: str | None = None,
                      namespaces: Iterable[str] = ("/",), tries: int = 12) -> ChatClient:
        """A signed-in client of ``user_id`` that ended up on gateway ``gateway``: through
        the balancer (when the cluster has one) it goes where the balancer sends it — with
        round robin, where its WebSocket lands, which a client's fixed sequence of requests
        makes the same gateway every time. So a client that lands elsewhere is kept open,
        plain requests shift the rotation — one, then two, in turn, so that a client's own
        count of requests per connect cannot keep every try on one gateway — and the next
        one tries; the misplaced ones are closed once one is placed."""
        wanted = await self.gateway_id(gateway)
        elsewhere: list[ChatClient] = []
        try:
            for attempt in range(tries):
                client = await self.user(gateway, user_id, username, namespaces=namespaces)
                if client.gateway == wanted:
                    return client
                elsewhere.append(client)
                if self.cluster.balancer_url is not None:
                    for _ in range(1 + attempt % 2):
                        await asyncio.to_thread(http_get, self.cluster.balancer_url + "/health")
        finally:
            for extra in elsewhere:
                await extra.close()
                self.all.remove(extra)
        raise AssertionError(f"{user_id}: the balancer never placed it on {wanted}")

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
        return await client.next("connect_error", ns=namespace)
    finally:
        await client.close()


# -- the moderation policy the gateways hold (gateway.policing) ----------------------------------
def policy_figures(cluster: Cluster, name: str = "version") -> list[int]:
    """Each gateway's ``version`` of moderation's policy, or how many ``bans`` or ``mutes`` it
    holds (/stats)."""
    return [int(cluster.stats(i)["policy"][name]) for i in range(len(cluster.gateway_ports))]


async def policy_agreed(cluster: Cluster, name: str = "version") -> int:
    """Wait until every gateway has the same policy figure ``name``, twice in a row (so an
    update in flight has had a moment to show); that figure. Bounded."""
    def agreed(pair: tuple[list[int], list[int]]) -> bool:
        first, second = pair
        return len(set(first)) == 1 and first == second

    async def sample() -> tuple[list[int], list[int]]:
        first = await asyncio.to_thread(policy_figures, cluster, name)
        await asyncio.sleep(0.05)
        return first, await asyncio.to_thread(policy_figures, cluster, name)

    first, _ = await poll_until(sample, agreed, f"the gateways to agree on the policy's {name}",
                                POLL_TIMEOUT)
    return first[0]


async def policy_applied(cluster: Cluster, after: int, name: str = "version",
                         within: float = POLL_TIMEOUT, since: float | None = None
                         ) -> list[float]:
    """Wait until every gateway's policy figure ``name`` is above ``after``; the seconds each
    took (from ``since``, a ``time.monotonic()``, or the call). Bounded by ``within``.
    ``bans`` and ``mutes`` only grow with a ban or a mute: exact whatever else goes on;
    ``version`` grows with every change."""
    start = time.monotonic() if since is None else since
    took: dict[int, float] = {}
    while len(took) < len(cluster.gateway_ports):
        for i, figure in enumerate(await asyncio.to_thread(policy_figures, cluster, name)):
            if figure > after and i not in took:
                took[i] = time.monotonic() - start
        elapsed = time.monotonic() - start
        assert elapsed < within, f"policy {name} > {after} not on every gateway in {within}s"
        await asyncio.sleep(0.01)
    return [took[i] for i in sorted(took)]
