"""The moderation service: every event's first filter, a CONNECT gate, and the admin actions.

- FILTER ``*`` (priority 10): per-socket and per-user rate limits, bans, mutes (message events
  of ``/`` and ``/chat``), then payload validation and sanitising (:mod:`.schemas`); the
  cleaned args replace the client's for the owner. Events without a schema pass unchanged.
- CONNECT ``*`` (priority 20, after auth so the session carries the user): new connections
  per client IP are rate-limited, and banned users are refused.
- EVENT ``/admin``: ``ban user``, ``mute user``, ``kick user``.

Bans and mutes are persisted in SQLite (:mod:`.store`) and held in memory for the hot path;
rate-limit state is in memory only (:mod:`.ratelimit`). Both are cluster-wide as long as one
moderation instance runs — which is the supported deployment: a second instance would keep its
own counters and not see the first one's bans until restarted on the same database.

Every rejection is counted in ``switchboard_moderation_rejections_total{reason}``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import Counter

from switchboard.shared import topics
from switchboard.shared.envelope import Recovery, Reply, Request, fail, reply_to
from switchboard.shared.errors import ClientError
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_connect, on_disconnect, on_event, on_filter

from .config import Config, split_list
from .ratelimit import SlidingWindow
from .sanitize import Sanitizer
from .schemas import EVENTS, Cleaner, Limits, PayloadError
from .store import Ban, ModerationStore, Mute

log = logging.getLogger("switchboard.moderation")

REJECTIONS = Counter(
    "switchboard_moderation_rejections_total",
    "Events and connections refused by moderation, by reason",
    ["reason"],
)
REASONS = ("validation", "rate_limit", "muted", "banned")
for _reason in REASONS:  # export every series from the start, at zero
    REJECTIONS.labels(_reason)

RATE_LIMITED = "rate limit exceeded"
CONNECT_RATE_LIMITED = "Rate limit exceeded"
BANNED = "Banned"
BANNED_EVENT = "you are banned"
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


def muted_text(seconds_left: float) -> str:
    n = max(math.ceil(seconds_left), 1)
    return f"you are muted for {n} more second{'s' if n != 1 else ''}"


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
        self.cleaner = Cleaner(
            Limits(
                content=cfg.max_content,
                username=cfg.max_username,
                room_id=cfg.max_room_id,
                room_name=cfg.max_room_name,
                max_users=cfg.max_room_users,
                history=cfg.max_history,
            ),
            Sanitizer(split_list(cfg.banned_words)),
        )
        self.ban_namespaces = split_list(cfg.ban_namespaces)
        self.per_socket = SlidingWindow(cfg.event_limit, cfg.event_window, clock)
        self.per_user = SlidingWindow(cfg.user_event_limit, cfg.event_window, clock)
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
        if key and request.recovery != Recovery.SKIP and not self.per_connector.hit(key):
            REJECTIONS.labels("rate_limit").inc()
            log.info("connect rate limit for %s (%s)", key, session.ns)
            return fail(request, CONNECT_RATE_LIMITED)
        if self.ban_of(session.user_id) is not None:
            REJECTIONS.labels("banned").inc()
            return fail(request, BANNED)
        return None

    @on_filter("*", priority=10)
    async def filter(self, request: Request) -> Reply | None:
        session = request.session
        if session is None:
            return None
        user_id = session.user_id
        # Check both limits before recording either, so a refused event costs nothing.
        if not self.per_socket.allowed(session.sid) or (
            user_id is not None and not self.per_user.allowed(user_id)
        ):
            REJECTIONS.labels("rate_limit").inc()
            return fail(request, RATE_LIMITED)
        self.per_socket.add(session.sid)
        if user_id is not None:
            self.per_user.add(user_id)
        if self.ban_of(user_id) is not None:
            # Normally the ban's disconnect got there first; this covers events in flight.
            REJECTIONS.labels("banned").inc()
            return fail(request, BANNED_EVENT)
        if (session.ns, request.event) in MESSAGE_EVENTS:
            mute = self.mute_of(user_id)
            if mute is not None:
                REJECTIONS.labels("muted").inc()
                return fail(request, muted_text(mute.until - self.clock()))
        try:
            cleaned = self.cleaner.clean(session.ns, request.event, request.args)
        except PayloadError as exc:
            REJECTIONS.labels("validation").inc()
            return fail(request, exc.message)
        if cleaned is None:  # not in the schema table: the owner's business
            return None
        return reply_to(request, args=cleaned)

    @on_disconnect("*")
    async def disconnect(self, request: Request) -> None:
        if request.session is not None:
            self.per_socket.forget(request.session.sid)

    # -- admin actions -------------------------------------------------------------------------
    def _admin_payload(self, request: Request) -> dict[str, Any]:
        """The cleaned payload of an admin event from an admin, or :class:`ClientError`.

        Cleaned again although the filter already did it: handlers may be reached directly
        (tests, a future caller), and cleaning is idempotent. The role is checked again too:
        auth only lets admins into ``/admin``, but a policy mistake must not become a hole.
        """
        if request.session is None or request.session.role != "admin":
            raise ClientError(ADMIN_ONLY)
        args = self.cleaner.apply(EVENTS[("/admin", request.event)], request.args)
        payload = args[0]
        assert isinstance(payload, dict)
        return payload

    @on_event("/admin", "ban user")
    async def ban_user(self, request: Request) -> Reply:
        payload = self._admin_payload(request)  # ClientError: the runner fails the request
        assert request.session is not None
        user_id = str(payload["userId"])
        reason = str(payload["reason"])
        if user_id == request.session.user_id:
            return fail(request, "userId: you cannot ban yourself")
        seconds = payload.get("seconds")
        now = self.clock()
        until = now + float(seconds) if isinstance(seconds, int) else None
        ban = Ban(user_id, reason, until, now, request.session.user_id)
        self.store.put_ban(ban)
        self.bans[user_id] = ban
        room = topics.user_room(user_id)
        for ns in self.ban_namespaces:
            self.publisher.disconnect_room(ns, room, "banned", [{"reason": reason}])
        log.warning("user %s banned by %s for %s: %s", user_id, request.session.user_id,
                    f"{seconds}s" if seconds else "ever", reason)
        return reply_to(request, ack=[{"success": True}])

    @on_event("/admin", "mute user")
    async def mute_user(self, request: Request) -> Reply:
        payload = self._admin_payload(request)  # ClientError: the runner fails the request
        assert request.session is not None
        user_id = str(payload["userId"])
        seconds = payload["seconds"]
        assert isinstance(seconds, int)
        now = self.clock()
        mute = Mute(user_id, now + seconds, now, request.session.user_id)
        self.store.put_mute(mute)
        self.mutes[user_id] = mute
        log.info("user %s muted by %s for %ss", user_id, request.session.user_id, seconds)
        return reply_to(request, ack=[{"success": True}])

    @on_event("/admin", "kick user")
    async def kick_user(self, request: Request) -> Reply:
        payload = self._admin_payload(request)  # ClientError: the runner fails the request
        assert request.session is not None
        sid = str(payload["socketId"])
        reason = str(payload.get("reason") or KICK_REASON)
        self.publisher.disconnect_socket(sid, KICK_NAMESPACE, "kicked", [{"reason": reason}])
        log.info("socket %s kicked by %s", sid, request.session.user_id)
        return reply_to(request, ack=[{"success": True}])
