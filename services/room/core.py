"""The room service's state and what every handler shares: the socket registry, room
membership, the lazy sweep of unjoined rooms, and the requests that keep the registry true
(CONNECT, DISCONNECT, UPDATE, SYNC, a lost gateway).

The event handlers are in :mod:`.rooms`, :mod:`.messages` and :mod:`.admin`, each a subclass
of :class:`RoomCore`; :class:`~.service.RoomService` combines them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from switchboard.shared import topics
from switchboard.shared.envelope import (
    Emit,
    Recovery,
    Reply,
    Request,
    Session,
    SocketState,
    reply_to,
)
from switchboard.shared.errors import ClientError
from switchboard.shared.partitions import IDENTITY
from switchboard.shared.partitions import Membership as PartitionMembers
from switchboard.shared.publisher import Publisher
from switchboard.shared.sanitize import Sanitizer, phrases
from switchboard.shared.schema import Cleaner, Limits
from switchboard.shared.service import (
    Service,
    on_connect,
    on_connected,
    on_disconnect,
    on_sync,
    on_update,
)
from switchboard.shared.store import StoreConfig

from .config import Config
from .leases import Leases
from .model import Member, Room, SocketEntry, iso, to_ms
from .numbering import Numbering
from .passwords import Passwords
from .registry import Membership, Registry
from .store import PostgresStore, open_store

log = logging.getLogger("switchboard.room")

#: After auth (10): the socket's user is known when it is registered.
CONNECT_PRIORITY = 30
MAIN = "/"
CHAT = "/chat"
GAME = "/game"
ADMIN = "/admin"
ANONYMOUS = "Anonymous"
LOST_SIDS_KEPT = 100_000
#: The sort key of a gathered list's entries (see gateway.gather).
ORDER = "_order"
#: Route keys (:func:`~switchboard.shared.partitions.key_of`): a room's events go to the
#: instance its id hashes to; a private message to the recipient's presence instance.
ROOM = "arg.roomId"
#: Events that also take the room id itself as their argument (``join room "lobby"``).
ROOM_OR_ID = "arg.roomId|arg"
RECIPIENT = "arg.to"

Clock = Callable[[], float]


def gateway_of(sid: str) -> str | None:
    try:
        return topics.gateway_of(sid)
    except ValueError:
        return None


def display_name(session: Session) -> str:
    return session.username or session.user_id or ANONYMOUS


def ok(**fields: Any) -> list[Any]:
    """The ack arguments ``[{success: true, ...}]``."""
    return [{"success": True, **fields}]


class RoomCore(Service):
    """State and shared steps; no event handlers (see the module docstring)."""

    def __init__(
        self, publisher: Publisher, config: Config | None = None, clock: Clock = time.time
    ) -> None:
        super().__init__(publisher)
        self.config = config or Config()
        # Rooms by room id and presence by user id, over the instances of the group: this
        # one is the only writer of what hashes to it (the gateways route it here).
        self.name = self.config.room_instance
        self.group = "room"
        self.shards = self.config.partition()
        self.partition = self.shards
        self.configured = self.shards.members
        self.clock = clock
        self.store = open_store(StoreConfig.of(self.config), self.config.room_db)
        self.passwords = Passwords(
            self.config.password_time_cost,
            self.config.password_memory_kib,
            self.config.password_parallelism,
            self.config.password_workers,
        )
        cfg = self.config
        self.cleaner = Cleaner(
            Limits(content=cfg.max_content, username=cfg.max_username, room_id=cfg.max_room_id,
                   room_name=cfg.max_room_name, max_users=cfg.room_max_users_limit,
                   history=cfg.history_max_limit),
            Sanitizer(phrases(cfg.banned_words)),
        )
        self._departing: dict[str, asyncio.TimerHandle] = {}
        self.numbering = Numbering(self.store)
        self._forget_all()
        #: With the PostgreSQL store: this instance's lease, and the live members it
        #: implies (fail-over, fencing: :mod:`.leases`). None with SQLite: the members
        #: are the configured instances, always.
        self.leases: Leases | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._started = False

    def _forget_all(self) -> None:
        """Start from nothing, as a new process does: what this instance owns is then
        loaded (rooms) and re-sent by the gateways (sockets, members)."""
        for timer in self._departing.values():
            timer.cancel()
        self.registry = Registry()
        self.membership = Membership()
        #: The rooms this instance owns, loaded by :meth:`open`.
        self.rooms: dict[str, Room] = {}
        #: Rooms without members → when (ms) they are deleted if still empty.
        self._empty: dict[str, int] = {}
        #: Sockets dropped with a gateway declared lost, in case it turns out to be alive.
        self._lost_sids: dict[str, bool] = {}
        #: Recoverable sockets of lost gateways, departing after the grace unless they came
        #: back (re-registered by another gateway) first.
        self._departing = {}
        # Not the message numbers: what was queued is still to commit, and the store does
        # not have it yet. They are counted again from the store at every change of
        # members, once the queued writes are drained (_release).

    # -- lifecycle ------------------------------------------------------------------------
    async def open(self) -> None:
        await self.store.open()
        if isinstance(self.store, PostgresStore):
            self.leases = Leases(self.store, self.name, self.instance,
                                 self.config.partition().members, self.config.room_lease,
                                 self._members_changed, on_release=self._release)
            self.leased = True
            self.store.fence(self.leases)
            # Its first renewal applies the members, which loads the rooms. Renewing goes
            # on from here: the runner may wait for the brokers before it starts us.
            await self.leases.acquire(timeout=3 * self.config.room_lease)
            self._renewing = asyncio.create_task(self.leases.run(self._stopping))
        else:
            await self._load_rooms()

    async def _release(self) -> None:
        """The members changed: let go of what was queued under the old ones (committed if
        it was on its way, refused if not), and number messages from what was kept."""
        self.numbering.pause()
        try:
            await self.store.committed()
        finally:
            self.numbering.resume()

    async def _load_rooms(self) -> None:
        self._take_rooms(await self.store.load_rooms())

    def _take_rooms(self, rooms: list[Room]) -> None:
        # Only the rooms this instance owns: a shared store holds the others' too, and a
        # file may keep rooms of an earlier member list. Loaded rooms count their time
        # without members from now: their members come back with the gateways' SYNC,
        # which must not race a deletion.
        self.rooms = {room.id: room for room in rooms if self._owns(room.id)}
        for room_id in self.rooms:
            self._mark_empty(room_id, self.config.room_unjoined_ttl)

    async def _members_changed(self, members: PartitionMembers) -> None:
        """The live instances changed (one joined, or one's lease lapsed), or this one's
        own lease had lapsed, and every live instance let go of what moved: reload what
        this one owns now, as a restarted process would. (Letting go is the lease's
        ``on_release``: the queued writes are drained before this instance says it
        applied the change.)"""
        rooms = await self.store.load_rooms()
        # From here on no await: no request sees the state half replaced. (Meanwhile the
        # lease already judged requests by the new members: what moved was refused.)
        self.partition = self.shards = members
        self._forget_all()
        self._take_rooms(rooms)
        self.generation += 1  # every gateway's SYNC is asked for again
        if self._started:
            self.publisher.resync()
        log.warning("%s now owns %d rooms (epoch %d)", self.name, len(self.rooms),
                    members.epoch)

    async def start(self) -> None:
        self._started = True
        # Membership was lost with the previous process: ask every gateway for its sockets
        # now rather than when each notices our new instance id on its next heartbeat.
        self.publisher.resync()

    async def hand_over(self) -> None:
        """Asked to stop: hand this instance's rooms and users over (``--room-handover``)
        while the gateways' requests are still answered (refused, until they learn the
        new members)."""
        if self.leases is None or not self.config.room_handover:
            return  # the lease lapses: a restart in place takes it over first, if it comes
        await self._stop_renewing()
        await self.leases.leave()

    async def _stop_renewing(self) -> None:
        self._stopping.set()
        if self._renewing is not None:
            # Shielded: a hand-over cut short by its timeout must not cancel the renewal
            # task itself, which stop() then waits for again.
            await asyncio.shield(self._renewing)

    async def stop(self) -> None:
        await self._stop_renewing()
        self.passwords.close()
        await self.store.close()

    def accepting(self, key: str) -> bool:
        return self.leases is None or self.leases.accepts(key)

    # -- helpers --------------------------------------------------------------------------
    def _now_ms(self) -> int:
        return to_ms(self.clock())

    def _begin(self, request: Request) -> Session:
        """The request's session. (A lost gateway that comes back is made to SYNC before
        any of its requests reach a handler: see ``Runner.synced``.)"""
        if request.session is None:
            raise ClientError("no session")
        return request.session

    def _entry(self, session: Session) -> SocketEntry:
        return SocketEntry(
            sid=session.sid,
            ns=session.ns,
            gateway=session.gateway or gateway_of(session.sid) or "",
            user_id=session.user_id,
            username=display_name(session),
            connected_at=session.connected_at or self.clock(),
            transport=session.transport,
            recoverable=session.recoverable,
        )

    def _owns(self, key: str) -> bool:
        """Whether this instance owns ``key``: a room id, or a user's presence (its sockets,
        online/offline)."""
        members = self.shards.members
        if self.leases is None and len(members) <= 1:
            return True
        return bool(members) and self.shards.owner(key) == self.name

    def _ordered(self, entry: dict[str, Any], *order: Any) -> dict[str, Any]:
        """A list entry of a cluster-wide read, with the sort key the gateway merges the
        instances' lists by (``_order``, removed there), when there are several."""
        if len(self.shards.members) <= 1:
            return entry
        return {**entry, ORDER: list(order)}

    def _require_member(self, room_id: str, sid: str) -> None:
        if not self.membership.is_member(room_id, sid):
            raise ClientError(f"not a member of room {room_id}")

    def _mark_empty(self, room_id: str, keep: float, since_ms: int | None = None) -> None:
        """The room has no members: delete it ``keep`` seconds from ``since_ms`` (now)
        unless somebody joins first; ``keep`` 0 keeps it forever."""
        if keep > 0:
            start = self._now_ms() if since_ms is None else since_ms
            self._empty[room_id] = start + to_ms(keep)

    def _occupied(self, room_id: str) -> None:
        self._empty.pop(room_id, None)

    def _expire_empty(self) -> None:
        """Delete the rooms whose time without members is up (lazily: see the module
        docstring)."""
        if not self._empty:
            return
        now = self._now_ms()
        for room_id, deadline in list(self._empty.items()):
            if deadline <= now and self.membership.count(room_id) == 0:
                log.info("room %s deleted: no members for its grace period", room_id)
                self._delete_room(room_id)

    def _delete_room(self, room_id: str) -> None:
        self.store.delete_room(room_id)
        self.numbering.restart(MAIN, room_id)
        self.rooms.pop(room_id, None)
        self._empty.pop(room_id, None)

    def _leave_room(self, room_id: str, sid: str) -> Member | None:
        """Take a socket out of a room; tell the others; an emptied room waits out its grace
        (``room_empty_grace``: members coming back after a crash find it), or goes at once."""
        member = self.membership.remove(room_id, sid)
        if member is None:
            return None
        count = self.membership.count(room_id)
        if count == 0:
            if self.config.room_empty_grace > 0:
                self._mark_empty(room_id, self.config.room_empty_grace)
            else:
                self._delete_room(room_id)
        else:
            notice = {
                "socketId": sid,
                "username": member.username,
                "roomId": room_id,
                "userCount": count,
            }
            self.publisher.emit_room(MAIN, room_id, "user left", [notice], exclude=[sid])
        return member

    def _depart(self, sid: str, session: Session | None = None) -> None:
        """A socket is gone (disconnect, lost gateway, missing from a SYNC): forget it."""
        entry = self.registry.remove(sid)
        member: Member | None = None
        for room_id in self.membership.rooms_of(sid):
            member = self._leave_room(room_id, sid) or member
        # Who it was: the registry knows best; the request's session or a room membership
        # stand in for a socket that was never registered (e.g. joined before a SYNC).
        if entry is not None:
            ns, identity, username = entry.ns, entry.identity, entry.username
        elif session is not None:
            stand_in = self._entry(session)
            ns, identity, username = stand_in.ns, stand_in.identity, stand_in.username
        elif member is not None:
            ns, identity, username = MAIN, member.identity, member.username
        else:
            return
        if ns == MAIN and self._owns(identity) and not self.registry.is_online(MAIN,
                                                                                     identity):
            self._presence("user offline", sid, identity, username)

    def _presence(self, event: str, sid: str, identity: str, username: str) -> None:
        """``user online`` / ``user offline`` to the rest of ``/``."""
        self.publisher.emit_namespace(MAIN, event, [{"userId": identity, "username": username}],
                                      exclude=[sid])

    def _sids_of_gateway(self, gateway_id: str) -> set[str]:
        """Its registered sockets, and unregistered members its socket ids name (a socket
        recovered elsewhere keeps its id but is registered where it is now)."""
        sids = {entry.sid for entry in self.registry.of_gateway(gateway_id)}
        sids.update(sid for sid in self.membership.on_gateway(gateway_id)
                    if sid not in self.registry)
        return sids

    def _lose(self, sid: str, gateway_id: str) -> bool:
        """A socket of a gateway that lost it (crashed, or no longer reports it): it departs
        now, or after the recovery grace if it may come back; True if it departed now."""
        entry = self.registry.get(sid)
        grace = self.config.recovery_grace
        held = entry or self.membership.member(sid)  # only in our rooms: presence is elsewhere
        if held is None or not held.recoverable or grace <= 0:
            self._depart(sid)
            return True
        if sid not in self._departing:
            loop = asyncio.get_running_loop()
            self._departing[sid] = loop.call_later(grace, self._lose_late, sid, gateway_id)
        return False

    def _lose_late(self, sid: str, gateway_id: str) -> None:
        self._departing.pop(sid, None)
        held = self.registry.get(sid) or self.membership.member(sid)
        if held is not None and held.gateway == gateway_id:
            self._depart(sid)
            self._lost_sids[sid] = True

    def _came_back(self, sid: str) -> None:
        handle = self._departing.pop(sid, None)
        if handle is not None:
            handle.cancel()

    # -- CONNECT / DISCONNECT / SYNC / lost gateways --------------------------------------
    @on_connected(MAIN)
    async def connected_main(self, request: Request) -> None:
        """A socket of ``/`` whose presence another instance keeps (it was the CONNECT
        stage): only a restored one matters here, back in the rooms of ours it is in."""
        if request.recovery == Recovery.NONE or not request.sockets or request.session is None:
            return
        session = request.session
        self._came_back(session.sid)
        self._lost_sids.pop(session.sid, None)
        # A room of ours it is not in any more was told it left (a lost gateway, a
        # DISCONNECT of its old connection that came first): it is told it is back.
        self._adopt(SocketState(session, request.sockets[0].rooms), returning=True)

    @on_connect(MAIN, CONNECT_PRIORITY, key=IDENTITY)
    async def connect_main(self, request: Request) -> Reply | None:
        session = self._begin(request)
        if request.recovery != Recovery.NONE:
            self._restore(request, session)
            return None  # a recovered socket continues: no welcome, no notices
        entry = self._entry(session)
        first = session.sid not in self.registry and not self.registry.is_online(
            MAIN, entry.identity
        )
        self.registry.add(entry)
        if first:
            self._presence("user online", entry.sid, entry.identity, entry.username)
        welcome = {
            "message": self.config.welcome_message,
            "socketId": session.sid,
            "serverId": entry.gateway,
            "timestamp": iso(self._now_ms()),
        }
        return reply_to(request, emits=(Emit("welcome", [welcome]),))

    @on_connect(CHAT, CONNECT_PRIORITY, key=IDENTITY)
    @on_connect(ADMIN, CONNECT_PRIORITY, key=IDENTITY)
    @on_connect("*", CONNECT_PRIORITY, key=IDENTITY)
    async def connect_other(self, request: Request) -> None:
        """Registers sockets of every other namespace (``/game`` too), for stats."""
        session = self._begin(request)
        self._came_back(session.sid)
        self.registry.add(self._entry(session))

    def _restore(self, request: Request, session: Session) -> None:
        """A socket recovered on the requesting gateway (connection state recovery): still
        registered, it only moves (nobody saw it leave); dropped meanwhile, it comes back
        with ``user online`` / ``user joined`` as a returning socket does."""
        self._came_back(session.sid)
        rooms = request.sockets[0].rooms if request.sockets else ()
        returning = session.sid not in self.registry
        self._lost_sids.pop(session.sid, None)
        self._adopt(SocketState(session, rooms), returning)

    @on_disconnect("*")
    async def disconnect(self, request: Request) -> None:
        session = self._begin(request)
        held = self.registry.get(session.sid) or self.membership.member(session.sid)
        if held is not None and session.gateway and held.gateway and \
                held.gateway != session.gateway:
            return  # it was recovered on another gateway since: the old one's news is old
        self._came_back(session.sid)
        self._depart(session.sid, session)

    @on_update("*")
    async def update(self, request: Request) -> None:
        """A socket's connection upgraded (polling → WebSocket): its entry says so."""
        session = self._begin(request)
        self.registry.set_transport(session.sid, session.transport)
        if request.event:
            # The session as another instance's answer to that event left it (a new name):
            # the socket's rooms here say so too. A transport UPDATE may carry an older one.
            self.membership.rename(session.sid, display_name(session))

    @on_sync()
    async def sync(self, request: Request) -> None:
        """A gateway's full socket list: make the registry and membership agree with it.

        Sockets it no longer reports left while we were not told: they depart with the
        usual notices. Reported sockets are (re)registered silently (after a restart of
        this service, clients already know them), and their managed rooms restored; rooms
        the gateway reports that no longer exist are ignored. Sockets this instance had
        dropped with their gateway (declared lost, then alive after all) come back with
        ``user online`` / ``user joined``, since others were told they had left.
        """
        gateway_id = request.gateway
        reported = {state.session.sid for state in request.sockets}
        gone = self._sids_of_gateway(gateway_id) - reported if gateway_id else set()
        departed = sum(self._lose(sid, gateway_id) for sid in sorted(gone))
        for state in request.sockets:
            self._came_back(state.session.sid)
            self._adopt(state, self._lost_sids.pop(state.session.sid, False))
        log.info("sync from %s: %d sockets, %d departed", gateway_id, len(reported), departed)

    def _adopt(self, state: SocketState, returning: bool) -> None:
        """Register a socket a gateway reports, with its managed rooms; ``returning``: others
        were told it had left, so they hear it is back."""
        entry = self._entry(state.session)
        if self._owns(entry.identity):
            announce = (
                returning
                and entry.ns == MAIN
                and entry.sid not in self.registry
                and not self.registry.is_online(MAIN, entry.identity)
            )
            self.registry.add(entry)
            if announce:
                self._presence("user online", entry.sid, entry.identity, entry.username)
        if entry.ns != MAIN:
            return
        current = set(self.membership.rooms_of(entry.sid))
        if current:
            self.membership.refresh(entry.member())  # where it is now (recovered elsewhere)
        wanted = {room_id for room_id in state.rooms if room_id in self.rooms}
        for room_id in sorted(wanted - current):
            self.membership.add(room_id, entry.member())
            self._occupied(room_id)
            if returning:
                notice = {
                    "socketId": entry.sid,
                    "username": entry.username,
                    "roomId": room_id,
                    "userCount": self.membership.count(room_id),
                }
                self.publisher.emit_room(
                    MAIN, room_id, "user joined", [notice], exclude=[entry.sid]
                )
        for room_id in sorted(current - wanted):
            self._leave_room(room_id, entry.sid)

    async def gateway_lost(self, gateway_id: str) -> None:
        if self.leases is not None and not self.leases.valid():
            # This instance was frozen or cut off (its lease lapsed, so the gateways looked
            # lost to it too): what it holds is reloaded at its next renewal, and telling
            # clients that those users left would be false.
            log.warning("gateway %s looked lost while this instance's lease had lapsed: "
                        "nothing told", gateway_id)
            return
        sids = self._sids_of_gateway(gateway_id)
        for sid in sorted(sids):
            if self._lose(sid, gateway_id):
                self._lost_sids[sid] = True
        while len(self._lost_sids) > LOST_SIDS_KEPT:  # bounded: oldest forgotten first
            del self._lost_sids[next(iter(self._lost_sids))]
        log.warning("gateway %s lost: dropped %d sockets", gateway_id, len(sids))
