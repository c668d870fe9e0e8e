"""The moderation service: the owner of bans, mutes and event limits, a CONNECT gate, and
the admin actions.

- Events never come here: what judging one needs is published to every gateway
  (:mod:`shared.policy`; the gateways apply it, :mod:`gateway.policing`): a snapshot on
  request (``RequestKind.POLICY``), then each change as a numbered update on
  :data:`shared.topics.POLICY` — a ban or mute, and on how many gateways a user's sockets
  are (their per-user limit is shared out between them).
- CONNECT ``*`` (priority 20, after auth so the session carries the user): new connections
  are rate-limited per user (per address for anonymous sockets), and banned users are
  refused. The accepted sockets are counted per user and gateway (SYNC after a restart).
- EVENT ``/admin``: ``ban user``, ``mute user``, ``kick user``.

Bans and mutes are persisted in SQLite (:mod:`.store`) and held in memory; the connect limit
is in memory only. One instance per cluster: a second would keep its own counters and bans.

Every refused connection is counted in ``switchboard_moderation_rejections_total{reason}``
(refused events in ``switchboard_gateway_policy_refusals_total``, at the gateways).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Counter

from switchboard.shared import topics
from switchboard.shared.envelope import (
    PubKind,
    Publication,
    Recovery,
    Reply,
    Request,
    RequestKind,
    Session,
    fail,
    reply_to,
)
from switchboard.shared.errors import ClientError
from switchboard.shared.policy import Change, PolicySnapshot, PolicyUpdate, Rules
from switchboard.shared.publisher import Publisher
from switchboard.shared.ratewindow import SlidingWindow
from switchboard.shared.schema import parsed
from switchboard.shared.service import (
    Service,
    on_connect,
    on_disconnect,
    on_event,
    on_request,
    on_sync,
)

from . import schemas
from .config import Config
from .spread import Spread
from .store import Ban, ModerationStore, Mute

log = logging.getLogger("switchboard.moderation")

REJECTIONS = Counter(
    "switchboard_moderation_rejections_total",
    "Connections refused by moderation, by reason",
    ["reason"],
)
REASONS = ("rate_limit", "banned")
for _reason in REASONS:  # export every series from the start, at zero
    REJECTIONS.labels(_reason)

CONNECT_RATE_LIMITED = "Rate limit exceeded"
BANNED = "Banned"
ADMIN_ONLY = "Access denied: admin role required"
KICK_REASON = "kicked by an administrator"
#: A socket id names one namespace socket, whichever it is: kick it wherever it is.
KICK_NAMESPACE = "*"

#: Events that carry a user's message: refused while the user is muted.
MESSAGE_EVENTS = frozenset({
    ("/", "chat message"),
    ("/", "private message"),
    ("/", "room message"),
    ("/chat", "chat message"),
    ("/chat", "private message"),
})


def client_key(address: str) -> str:
    """The rate-limit key of a client address: its IP, an IPv6 client by its /64.

    The gateway should pass the bare IP; a ``host:port`` form is tolerated so that a port
    never makes every connection look like a new client. IPv6 users commonly own a whole /64,
    so limiting single addresses would not limit them at all.
    """
    text = address.strip()
    host, sep, port = text.rpartition(":")
    candidates = [text]
    if sep and port.isdigit():
        candidates.append(host.strip("[]"))
    for candidate in candidates:
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)
    return text


_Sanction = TypeVar("_Sanction", Ban, Mute)


def _in_force(
    table: dict[str, _Sanction], user_id: str | None, now: float,
    delete: Callable[[str], None],
) -> _Sanction | None:
    if user_id is None:
        return None
    sanction = table.get(user_id)
    if sanction is not None and not sanction.active(now):
        del table[user_id]
        delete(user_id)
        return None
    return sanction


class ModerationService(Service):
    name = "moderation"

    def __init__(
        self,
        publisher: Publisher,
        config: Config | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(publisher)
        self.config = config or Config()
        #: Wall-clock seconds: bans and mutes outlive the process, so they need epoch times.
        self.clock = clock
        cfg = self.config
        self.ban_namespaces = cfg.ban_namespaces
        self.rules = Rules(cfg.event_limit, cfg.user_event_limit, cfg.event_window,
                           tuple(sorted(f"{ns} {event}" for ns, event in MESSAGE_EVENTS)))
        #: The policy's version: every update published raises it (shared.policy).
        self.version = 0
        self.spread = Spread()
        self.per_connector = SlidingWindow(cfg.connect_limit, cfg.connect_window, clock)
        self.store = ModerationStore(cfg.moderation_db)
        now = clock()
        self.bans: dict[str, Ban] = self.store.active_bans(now)
        self.mutes: dict[str, Mute] = self.store.active_mutes(now)
        if self.bans or self.mutes:
            log.info("loaded %d bans and %d mutes", len(self.bans), len(self.mutes))

    async def stop(self) -> None:
        self.store.close()

    # -- state lookups -----------------------------------------------------------------------
    def ban_of(self, user_id: str | None) -> Ban | None:
        """The ban in force for ``user_id`` (an ended one is forgotten on the way)."""
        return _in_force(self.bans, user_id, self.clock(), self.store.delete_ban)

    def mute_of(self, user_id: str | None) -> Mute | None:
        """The mute in force for ``user_id`` (an ended one is forgotten on the way)."""
        return _in_force(self.mutes, user_id, self.clock(), self.store.delete_mute)

    # -- pipeline stages ---------------------------------------------------------------------
    @on_connect("*", priority=20)
    async def connect(self, request: Request) -> Reply | None:
        session = request.session
        if session is None:
            return None
        # Per user when auth verified one (thousands of users share an office's or a
        # carrier's address: a user with a valid token is no flood), per address when the
        # socket is anonymous. A recovered socket is not a new connection (a crashed
        # gateway's clients all come back at once): only its ban is checked.
        key = (f"user:{session.user_id}" if session.user_id is not None
               else client_key(session.address))
        # A CONNECT sent again (a later stage asked the gateway to resync first) is counted
        # once.
        again = self.spread.counted(session.sid)
        if key and request.recovery != Recovery.SKIP and not again \
                and not self.per_connector.hit(key):
            REJECTIONS.labels("rate_limit").inc()
            log.info("connect rate limit for %s (%s)", key, session.ns)
            return self._refuse(request, CONNECT_RATE_LIMITED)
        if self.ban_of(session.user_id) is not None:
            REJECTIONS.labels("banned").inc()
            return self._refuse(request, BANNED)
        # Counted now; a later stage that refuses it has us told (DISCONNECT).
        self._spread_changed(self.spread.add(session))
        return None

    def _refuse(self, request: Request, message: str) -> Reply:
        """Refuse a CONNECT; a socket counted by an earlier try of it is no longer."""
        if request.session is not None:
            self._spread_changed(self.spread.remove(request.session.sid,
                                                    request.session.gateway))
        return fail(request, message)

    @on_disconnect("*")
    async def disconnect(self, request: Request) -> None:
        if request.session is not None:
            session = request.session
            self._spread_changed(self.spread.remove(session.sid, session.gateway))

    @on_sync()
    async def sync(self, request: Request) -> None:
        """A gateway's sockets after this service (re)started (or it was thought lost)."""
        self._spread_changed(self.spread.replace_gateway(
            request.gateway, (state.session for state in request.sockets)))

    async def gateway_lost(self, gateway_id: str) -> None:
        self._spread_changed(self.spread.drop_gateway(gateway_id))

    # -- the policy the gateways enforce --------------------------------------------------------
    @on_request(RequestKind.POLICY)
    async def policy(self, request: Request) -> Reply:
        """The snapshot a gateway starts from (then it follows the updates)."""
        now = self.clock()
        bans = [[user, ban.until] for user, ban in self.bans.items() if ban.active(now)]
        mutes = [[user, mute.until] for user, mute in self.mutes.items() if mute.active(now)]
        snapshot = PolicySnapshot(self.instance, self.version, self.rules, tuple(bans),
                                  tuple(mutes), tuple(self.spread.spread_users()))
        return reply_to(request, args=[snapshot.to_list()])

    def _publish(self, change: Change, user: str, until: float | None = None,
                 count: int = 1) -> None:
        self.version += 1
        update = PolicyUpdate(self.instance, self.version, change, user, until, count)
        self.publisher.publish(topics.POLICY, Publication(
            PubKind.POLICY, "", args=[update.to_list()], source=self.name))

    def _spread_changed(self, changes: list[tuple[str, int]]) -> None:
        for user, count in changes:
            self._publish(Change.SPREAD, user, count=count)

    # -- admin actions -------------------------------------------------------------------------
    def _admin(self, request: Request) -> Session:
        """The session of an admin, or :class:`ClientError`: auth only lets admins into
        ``/admin``, but a policy mistake must not become a hole."""
        if request.session is None or request.session.role != "admin":
            raise ClientError(ADMIN_ONLY)
        return request.session

    @on_event("/admin", "ban user", schemas.BAN_USER)
    async def ban_user(self, request: Request) -> Reply:
        session = self._admin(request)
        payload = parsed(schemas.BanUser, request)
        user_id, reason, seconds = payload.userId, payload.reason, payload.seconds
        if user_id == session.user_id:
            return fail(request, "userId: you cannot ban yourself")
        now = self.clock()
        until = now + float(seconds) if seconds is not None else None
        ban = Ban(user_id, reason, until, now, session.user_id)
        self.store.put_ban(ban)
        self.bans[user_id] = ban
        self._publish(Change.BAN, user_id, until)
        room = topics.user_room(user_id)
        for ns in self.ban_namespaces:
            self.publisher.disconnect_room(ns, room, "banned", [{"reason": reason}])
        log.warning("user %s banned by %s for %s: %s", user_id, session.user_id,
                    f"{seconds}s" if seconds else "ever", reason)
        return reply_to(request, ack=[{"success": True}])

    @on_event("/admin", "mute user", schemas.MUTE_USER)
    async def mute_user(self, request: Request) -> Reply:
        session = self._admin(request)
        payload = parsed(schemas.MuteUser, request)
        user_id, seconds = payload.userId, payload.seconds
        now = self.clock()
        mute = Mute(user_id, now + seconds, now, session.user_id)
        self.store.put_mute(mute)
        self.mutes[user_id] = mute
        self._publish(Change.MUTE, user_id, mute.until)
        log.info("user %s muted by %s for %ss", user_id, session.user_id, seconds)
        return reply_to(request, ack=[{"success": True}])

    @on_event("/admin", "kick user", schemas.KICK_USER)
    async def kick_user(self, request: Request) -> Reply:
        session = self._admin(request)
        payload = parsed(schemas.KickUser, request)
        sid, reason = payload.socketId, payload.reason or KICK_REASON
        self.publisher.disconnect_socket(sid, KICK_NAMESPACE, "kicked", [{"reason": reason}])
        log.info("socket %s kicked by %s", sid, session.user_id)
        return reply_to(request, ack=[{"success": True}])
