"""The official Socket.IO Admin UI (``@socket.io/admin-ui``) on a namespace of its own,
across the whole cluster (docs/admin-ui.md).

Each gateway instruments its own sockets, as each Node server does with ``instrument()``:
it tells every Admin UI socket — on whichever gateway — of its sockets coming and going,
their rooms and transports, and its ``server_stats`` every two seconds, by publishing on
the Admin UI namespace's topic (so the broker fans them out like any namespace emit). A new
UI socket gets ``config`` and this gateway's ``all_sockets`` at once, and every other
gateway's sockets as ``socket_connected`` after a REPORT publication asks them. The UI's
commands (``emit``, ``join``, ``leave``, ``_disconnect``, each for one socket id or room)
become publications too, so they reach the socket on its gateway.

Access: the UI's username and password (``auth: {username, password}``) against
``--admin-ui-username`` and an argon2 hash (``--admin-ui-password-hash``; ``switchboard
hash-password`` makes one). Without a hash the namespace does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket as sockets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from switchboard.gateway.client import NsSocket
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication
from switchboard.shared.publisher import Publisher

log = logging.getLogger("switchboard.gateway.adminui")

#: Without MJOIN/MLEAVE/MDISCONNECT the UI sends one socket id per command. ALL_EVENTS
#: shows its socket, room, client and event views (fed by our notices; the payloads of
#: clients' events are not forwarded to it).
FEATURES = ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"]
STATS_INTERVAL = 2.0
INVALID = "invalid credentials"
#: Failed sign-ins one address may make per minute before it is refused unheard.
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
LOCKED = "too many failed sign-ins; try again later"
#: Headers the UI is not shown: users' credentials are not the operator's to read.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True)
class AdminUiConfig:
    namespace: str = "/admin-ui"
    username: str = "admin"
    password_hash: str = ""


class LocalSockets(Protocol):
    """What the Admin UI reads of the gateway's sockets (:class:`~.index.LocalIndex`)."""

    def sockets(self) -> list[NsSocket]: ...

    def counts(self) -> dict[str, int]: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AdminUi:
    def __init__(self, config: AdminUiConfig, gateway_id: str, publisher: Publisher,
                 index: LocalSockets, counts: Callable[[], tuple[int, int]]) -> None:
        """``counts()``: this gateway's (connections, polling connections)."""
        self.config = config
        self.namespace = config.namespace
        self.gateway_id = gateway_id
        self.publisher = publisher
        self.index = index
        self.counts = counts
        self.started = time.monotonic()
        self.hostname = sockets.gethostname()
        self._hasher = PasswordHasher()
        self._events: dict[tuple[int, str], int] = {}
        # A hash check costs ~0.1 s of CPU: one at a time, off the event loop, and an
        # address that keeps failing is refused without one.
        self._checking = asyncio.Semaphore(1)
        self._failures: dict[str, list[float]] = {}

    # -- access --------------------------------------------------------------------------
    async def sign_in(self, auth: Any, address: str) -> str | None:
        """None when ``auth`` carries the configured credentials, else the refusal."""
        now = time.monotonic()
        recent = [t for t in self._failures.get(address, ()) if now - t < FAILURE_WINDOW]
        if len(recent) >= MAX_FAILURES:
            self._failures[address] = recent
            return LOCKED
        async with self._checking:
            refusal = await asyncio.to_thread(self.check, auth)
        if refusal is None:
            self._failures.pop(address, None)
        else:
            self._failures[address] = [*recent, now]
            if len(self._failures) > 10_000:  # bounded: forget the oldest addresses
                for key in list(self._failures)[:1000]:
                    del self._failures[key]
        return refusal

    def check(self, auth: Any) -> str | None:
        """None when ``auth`` carries the configured credentials, else the refusal."""
        if not isinstance(auth, dict) or auth.get("username") != self.config.username:
            return INVALID
        password = auth.get("password")
        if not isinstance(password, str):
            return INVALID
        try:
            self._hasher.verify(self.config.password_hash, password)
        except (VerificationError, InvalidHashError):
            return INVALID
        return None

    # -- what the UI is told -------------------------------------------------------------
    def serialize(self, sock: NsSocket) -> dict[str, Any]:
        session, client = sock.session, sock.client
        headers = {k: ("[redacted]" if k.lower() in SECRET_HEADERS else v)
                   for k, v in client.headers.items()}
        return {
            "id": sock.sid,
            "clientId": client.conn.sid,
            "transport": client.transport_name,
            "nsp": sock.ns,
            "data": {k: v for k, v in (("userId", session.user_id),
                                       ("username", session.username),
                                       ("role", session.role)) if v},
            "handshake": {
                "address": session.address,
                "headers": headers,
                "query": {},
                "issued": int(session.connected_at * 1000),
                "secure": False,
                "time": datetime.fromtimestamp(session.connected_at, UTC).strftime(
                    "%a %b %d %Y %H:%M:%S GMT+0000"),
                "url": "/socket.io/",
                "xdomain": "origin" in {k.lower() for k in headers},
            },
            "rooms": [sock.sid, *sorted(sock.rooms)],
        }

    def _tell(self, event: str, *args: Any) -> None:
        self.publisher.emit_namespace(self.namespace, event, list(args))

    def socket_connected(self, sock: NsSocket) -> None:
        if sock.ns != self.namespace:
            self._tell("socket_connected", self.serialize(sock), _now())

    def socket_disconnected(self, sock: NsSocket, reason: str) -> None:
        if sock.ns != self.namespace:
            self._tell("socket_disconnected", sock.ns, sock.sid, reason, _now())

    def room_joined(self, sock: NsSocket, room: str) -> None:
        if sock.ns != self.namespace:
            self._tell("room_joined", sock.ns, room, sock.sid, _now())

    def room_left(self, sock: NsSocket, room: str) -> None:
        if sock.ns != self.namespace:
            self._tell("room_left", sock.ns, room, sock.sid, _now())

    def transport_changed(self, sock: NsSocket) -> None:
        if sock.ns != self.namespace:
            self._tell("socket_updated", {"id": sock.sid, "nsp": sock.ns,
                                          "transport": sock.client.transport_name})

    def event_received(self, ns: str) -> None:
        self.count("packetsIn")

    def count(self, kind: str, sub: str | None = None) -> None:
        """One more of ``kind`` (the UI's dashboard: rawConnection, rawDisconnection with
        its reason, packetsIn) in this second's bucket."""
        key = (int(time.time()) * 1000, kind if sub is None else f"{kind}\x00{sub}")
        self._events[key] = self._events.get(key, 0) + 1

    def stats(self, take_events: bool = False) -> dict[str, Any]:
        """This gateway's ``server_stats``; the event counts are emptied only when
        ``take_events`` (the timer's publication), so a UI connecting takes none from the
        others' dashboards."""
        clients, polling = self.counts()
        events = [{"timestamp": ts, "type": kind.partition("\x00")[0],
                   **({"subType": kind.partition("\x00")[2]} if "\x00" in kind else {}),
                   "count": count} for (ts, kind), count in self._events.items()]
        if take_events:
            self._events.clear()
        return {
            "serverId": self.gateway_id,
            "hostname": self.hostname,
            "pid": os.getpid(),
            "uptime": time.monotonic() - self.started,
            "clientsCount": clients,
            "pollingClientsCount": polling,
            "aggregatedEvents": events,
            "namespaces": [{"name": ns, "socketsCount": count}
                           for ns, count in sorted(self.index.counts().items())],
        }

    def publish_stats(self) -> None:
        self._tell("server_stats", self.stats(take_events=True))

    # -- a UI socket ---------------------------------------------------------------------
    def ui_connected(self, ui: NsSocket) -> list[tuple[str, list[Any]]]:
        """A UI socket connected here: what to emit to it now (the others are asked)."""
        mine = [self.serialize(s) for s in self.index.sockets()
                if s.ns != self.namespace and s.live]
        self.publisher.publish(topics.ALL_GATEWAYS, Publication(
            PubKind.REPORT, self.namespace, sids=(ui.sid,), source=self.gateway_id))
        return [("config", [{"supportedFeatures": FEATURES}]), ("all_sockets", [mine]),
                ("server_stats", [self.stats()])]

    def report(self, pub: Publication) -> None:
        """Another gateway's UI socket asks for our sockets."""
        if pub.source == self.gateway_id or not pub.sids:
            return
        ui = pub.sids[0]
        for sock in self.index.sockets():
            if sock.ns != self.namespace and sock.live:
                self.publisher.emit_socket(ui, self.namespace, "socket_connected",
                                           [self.serialize(sock), _now()])
        self.publisher.emit_socket(ui, self.namespace, "server_stats", [self.stats()])

    def command(self, event: str, args: list[Any]) -> str | None:
        """A UI command; None when done, else what was wrong with it."""
        pub = self.publisher
        if event == "emit" and len(args) >= 3 and _names(args[0], args[2]):
            nsp, target, name, rest = args[0], args[1], args[2], list(args[3:])
            if not target:
                pub.emit_namespace(nsp, name, rest)
            elif isinstance(target, str):
                # The UI names a socket by its private room, its id: no room of ours is
                # named so, so a room emit there reaches nobody twice.
                pub.emit_room(nsp, target, name, rest)
                if _is_sid(target):
                    pub.emit_socket(target, nsp, name, rest)
            else:
                return "bad target"
            return None
        if event in ("join", "leave") and len(args) >= 3 and _names(args[0], args[1]) \
                and isinstance(args[2], str) and _is_sid(args[2]):
            (pub.join if event == "join" else pub.leave)(args[2], args[0], args[1])
            return None
        if event == "_disconnect" and len(args) >= 3 and isinstance(args[0], str) \
                and isinstance(args[2], str) and _is_sid(args[2]):
            if args[1] is True:
                pub.publish(topics.socket(args[2]), Publication(
                    PubKind.CLOSE, args[0], sids=(args[2],), source=self.gateway_id))
            else:
                pub.disconnect_socket(args[2], args[0])
            return None
        return f"unknown or malformed command: {event}"


def _names(*values: Any) -> bool:
    return all(isinstance(v, str) and v for v in values)


def _is_sid(value: str) -> bool:
    try:
        topics.gateway_of(value)
    except ValueError:
        return False
    return True
