"""The moderation service: the owner of bans, mutes and rate limits, and the admin actions.

- Neither events nor CONNECTs are asked here: what judging them needs is published to every
  gateway (:mod:`shared.policy`; the gateways apply it, :mod:`gateway.policing` and
  :mod:`gateway.gatekeeper`): a snapshot on request (``RequestKind.POLICY``), then each
  change as a numbered update on :data:`shared.topics.POLICY` — a ban or mute, and on how
  many gateways a user's sockets are (their per-user event limit is shared out between them).
- CONNECTED / DISCONNECT ``*``: the gateways tell us which sockets joined and left; they are
  counted per user and gateway (SYNC after a restart), for that spread, and new connects
  per connector (user, or address for anonymous sockets) over the connect window: one that
  reaches the connect limit cluster-wide is throttled on every gateway (a published update)
  until its window frees. Each gateway also applies the limit to what it sees itself, so
  the cluster lets a connector open at most the limit plus the connects already under way
  when the throttle arrived (a few milliseconds' worth).
- EVENT ``/admin``: ``ban user``, ``mute user``, ``kick user``.

Bans and mutes are persisted in SQLite (:mod:`.store`) and held in memory. One instance per
cluster: a second would keep its own counts and bans.

Refused connections are counted at the gateways, in
``switchboard_gateway_connect_refusals_total``; refused events in
``switchboard_gateway_policy_refusals_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

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
from switchboard.shared.policy import (
    PRUNE_AT,
    Change,
    PolicySnapshot,
    PolicyUpdate,
    Rules,
    prune_ended,
)
from switchboard.shared.publisher import Publisher
from switchboard.shared.ratewindow import SlidingWindow, connector_key
from switchboard.shared.schema import parsed
from switchboard.shared.service import (
    Service,
    on_connected,
    on_disconnect,
    on_event,
    on_request,
    on_sync,
)
from switchboard.shared.store import StoreConfig

from . import schemas
from .config import Config
from .spread import Spread
from .store import Ban, Mute, open_store

log = logging.getLogger("switchboard.moderation")

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
                           tuple(sorted(f"{ns} {event}" for ns, event in MESSAGE_EVENTS)),
                           cfg.connect_limit, cfg.connect_window)
        #: The policy's version: every update published raises it (shared.policy).
        self.version = 0
        self.spread = Spread()
        #: The connects of each connector cluster-wide (what the gateways tell us), and
        #: until when those that filled their window are throttled (published).
        self.per_connector = SlidingWindow(cfg.connect_limit, cfg.connect_window, clock)
        self.throttles: dict[str, float] = {}
        self._prune_at = PRUNE_AT
        self.store = open_store(StoreConfig.of(cfg), cfg.moderation_db)
        #: Bans and mutes in force, loaded by :meth:`open`.
        self.bans: dict[str, Ban] = {}
        self.mutes: dict[str, Mute] = {}

    async def open(self) -> None:
        await self.store.open()
        now = self.clock()
        self.bans = await self.store.active_bans(now)
        self.mutes = await self.store.active_mutes(now)
        if self.bans or self.mutes:
            log.info("loaded %d bans and %d mutes", len(self.bans), len(self.mutes))

    async def stop(self) -> None:
        await self.store.close()

    # -- state lookups -----------------------------------------------------------------------
    def ban_of(self, user_id: str | None) -> Ban | None:
        """The ban in force for ``user_id`` (an ended one is forgotten on the way)."""
        return _in_force(self.bans, user_id, self.clock(), self.store.delete_ban)

    def mute_of(self, user_id: str | None) -> Mute | None:
        """The mute in force for ``user_id`` (an ended one is forgotten on the way)."""
        return _in_force(self.mutes, user_id, self.clock(), self.store.delete_mute)

    # -- which sockets are where ---------------------------------------------------------------
    @on_connected("*")
    async def connected(self, request: Request) -> None:
        session = request.session
        if session is None:
            return
        self._spread_changed(self.spread.add(session))
        if request.recovery == Recovery.SKIP:
            return  # a socket coming back by recovery is no new connection
        # Each gateway limits the connects it sees; the cluster's count is kept here, and a
        # connector that fills its window is throttled on every gateway until it frees.
        key = connector_key(session.user_id, session.address)
        window = self.per_connector
        if key and window.hit(key) and not window.allowed(key):
            until = self.clock() + window.retry_after(key)
            if len(self.throttles) > self._prune_at:  # anonymous connectors come and go
                self.throttles = prune_ended(self.throttles, self.clock())
                self._prune_at = max(PRUNE_AT, 2 * len(self.throttles))
            self.throttles[key] = until
            self._publish(Change.THROTTLE, key, until)

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
        self.throttles = prune_ended(self.throttles, now)
        snapshot = PolicySnapshot(self.instance, self.version, self.rules, tuple(bans),
                                  tuple(mutes), tuple(self.spread.spread_users()),
                                  tuple([key, until] for key, until in self.throttles.items()))
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
        await self.store.committed()  # before it is told: a ban must outlive a crash
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
        await self.store.committed()
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
