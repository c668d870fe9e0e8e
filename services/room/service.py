"""The room service: managed rooms, the cluster-wide socket registry, presence and history.

It owns namespace ``/`` (the chat application, except what moderation owns), ``/chat``, and
``/admin``'s ``get stats`` / ``broadcast message``. What it keeps, and where:

- **Rooms and messages** are persisted (:class:`~.store.Store`, SQLite WAL) and survive a
  restart. Room passwords are argon2id hashes.
- **Registry and membership** live in memory (:mod:`.registry`): they die with connections
  anyway, and after a restart the gateways send them back (SYNC), so they are never stale on
  disk. Hence one room-service instance per cluster: it is the one place that knows
  every socket, which is what makes ``maxUsers`` and ``get online users`` cluster-wide.

Choices the contract leaves open (all documented here, tested in tests/unit/services):

- Room lifecycle: ``create room`` only creates (the creator is not joined). A room is
  deleted, with its history, the moment its last member leaves (leave, disconnect, lost
  gateway). A room nobody has joined yet (just created, or loaded at start and not
  reported by any gateway) is deleted after ``room_unjoined_ttl`` seconds; the sweep is lazy
  (run by every handler that can observe rooms), which is observably the same as a timer.
- ``userCount`` / ``maxUsers`` count member *sockets* (Socket.IO rooms are sets of sockets):
  a user in two tabs takes two places.
- Presence is per user: ``user online`` when a user's first ``/`` socket connects,
  ``user offline`` when its last one leaves (a second tab is not news to anyone).
- A refused join answers with a failed ack *and* a ``room error`` event, both in the one
  failed reply (the gateway applies a reply's ``emits`` after its failure too): they reach
  the client together and in that order, with no detour through the broker.
- The service cannot tell whether the client asked for an ack, so ``get rooms`` and
  ``get room info`` always ack *and* emit (``room list`` with the ack's object, ``room info``),
  and ``get stats`` acks ``{success, ...stats}`` and emits ``stats``.
- ``room message`` is relayed, not saved (the contract saves only ``chat message`` and
  ``private message``); ``get history`` returns the room's saved ``chat message`` lines.
- ``/chat`` ``chat message`` without a roomId goes "to all of /chat", the sender included
  (EVENTS.md conventions); with a roomId, to the others in that room. ``/chat`` has no
  managed rooms, so its roomId names a plain gateway room (``user:*`` refused).
- ``stats`` adds ``mainConnections`` (namespace ``/``), ``namespaces`` (every count) and
  ``timestamp`` to the contract's fields; gateway ``connections`` come from heartbeats.
- Room ids starting with ``user:`` are refused: such a room would receive that user's
  private messages.
- Atomicity: every check-then-change runs without an ``await`` in between (storage calls are
  synchronous), so concurrent requests from any number of gateways see a consistent state.
  The only awaits are argon2 hashing/verification (in a worker thread), after which the room
  is looked up again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from switchboard.shared import topics
from switchboard.shared.envelope import Emit, Reply, Request, Session, reply_to
from switchboard.shared.errors import ClientError
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import (
    Service,
    on_connect,
    on_disconnect,
    on_event,
    on_sync,
    on_update,
)

from . import payloads
from .config import Config
from .model import (
    PRIVATE,
    RESERVED_ROOM_PREFIX,
    Member,
    Message,
    Room,
    SocketEntry,
    iso,
    new_id,
    parse_iso,
    to_ms,
)
from .passwords import Passwords
from .registry import Membership, Registry
from .store import Store

log = logging.getLogger("switchboard.room")

#: After auth (10): the socket's user is known when it is registered.
CONNECT_PRIORITY = 30
MAIN = "/"
CHAT = "/chat"
GAME = "/game"
ADMIN = "/admin"
ANONYMOUS = "Anonymous"
LOST_SIDS_KEPT = 100_000

Clock = Callable[[], float]


def _gateway_of(sid: str) -> str | None:
    try:
        return topics.gateway_of(sid)
    except ValueError:
        return None


def _display_name(session: Session) -> str:
    return session.username or session.user_id or ANONYMOUS


def _ok(**fields: Any) -> list[Any]:
    """The ack arguments ``[{success: true, ...}]``."""
    return [{"success": True, **fields}]


class RoomService(Service):
    name = "room"

    def __init__(
        self, publisher: Publisher, config: Config | None = None, clock: Clock = time.time
    ) -> None:
        super().__init__(publisher)
        self.config = config or Config()
        self.clock = clock
        self.store = Store(self.config.room_db)
        self.passwords = Passwords(
            self.config.password_time_cost,
            self.config.password_memory_kib,
            self.config.password_parallelism,
            self.config.password_workers,
        )
        self.registry = Registry()
        self.membership = Membership()
        self.rooms: dict[str, Room] = {room.id: room for room in self.store.load_rooms()}
        # Rooms without members since when (ms). Loaded rooms count from now: their members
        # come back with the gateways' SYNC, which must not race a deletion.
        now = self._now_ms()
        self._unjoined: dict[str, int] = {room_id: now for room_id in self.rooms}
        #: Sockets dropped with a gateway declared lost, in case it turns out to be alive.
        self._lost_sids: dict[str, bool] = {}

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        # Membership was lost with the previous process: ask every gateway for its sockets
        # now rather than when each notices our new instance id on its next heartbeat.
        self.publisher.resync()

    async def stop(self) -> None:
        self.passwords.close()
        self.store.close()

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
            gateway=session.gateway or _gateway_of(session.sid) or "",
            user_id=session.user_id,
            username=_display_name(session),
            connected_at=session.connected_at or self.clock(),
            transport=session.transport,
        )

    def _require_member(self, room_id: str, sid: str) -> None:
        if not self.membership.is_member(room_id, sid):
            raise ClientError(f"not a member of room {room_id}")

    def _expire_unjoined(self) -> None:
        """Delete rooms nobody joined within the TTL (lazily; see the module docstring)."""
        ttl = self.config.room_unjoined_ttl
        if ttl <= 0 or not self._unjoined:
            return
        deadline = self._now_ms() - to_ms(ttl)
        for room_id, since in list(self._unjoined.items()):
            if since <= deadline and self.membership.count(room_id) == 0:
                log.info("room %s expired: nobody joined it", room_id)
                self._delete_room(room_id)

    def _delete_room(self, room_id: str) -> None:
        self.store.delete_room(room_id)
        self.rooms.pop(room_id, None)
        self._unjoined.pop(room_id, None)

    def _leave_room(self, room_id: str, sid: str) -> Member | None:
        """Take a socket out of a room; tell the others; delete the room when it empties."""
        member = self.membership.remove(room_id, sid)
        if member is None:
            return None
        count = self.membership.count(room_id)
        if count == 0:
            self._delete_room(room_id)
        else:
            notice = {"socketId": sid, "username": member.username, "roomId": room_id,
                      "userCount": count}
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
        if ns == MAIN and not self.registry.is_online(MAIN, identity):
            self.publisher.emit_namespace(
                MAIN, "user offline", [{"userId": identity, "username": username}],
                exclude=[sid],
            )

    def _sids_of_gateway(self, gateway_id: str) -> set[str]:
        sids = {entry.sid for entry in self.registry.of_gateway(gateway_id)}
        sids.update(sid for sid in self.membership.sids() if _gateway_of(sid) == gateway_id)
        return sids

    async def _password_ok(self, room: Room, password: str | None) -> bool:
        # A missing password is "wrong password" too: the contract's refusals are a closed set.
        if password is None or room.password_hash is None:
            return False
        return await self.passwords.verify_async(room.password_hash, password)

    def _refuse_join(self, request: Request, message: str) -> Reply:
        return Reply(request.id, ok=False, error=message,
                     emits=(Emit("room error", [{"message": message}]),))

    async def _save(
        self,
        session: Session,
        content: str,
        kind: str,
        room: str | None = None,
        recipient: str | None = None,
    ) -> Message:
        message = Message(
            id=new_id(),
            namespace=session.ns,
            room=room,
            sender=self._entry(session).identity,
            recipient=recipient,
            username=_display_name(session),
            content=content,
            type=kind,
            ts_ms=self._now_ms(),
        )
        self.store.insert_message(message)
        await self.store.committed()  # before anyone is told about it
        return message

    # -- CONNECT / DISCONNECT / SYNC / lost gateways --------------------------------------
    @on_connect(MAIN, CONNECT_PRIORITY)
    async def connect_main(self, request: Request) -> Reply:
        session = self._begin(request)
        entry = self._entry(session)
        first = session.sid not in self.registry and not self.registry.is_online(
            MAIN, entry.identity
        )
        self.registry.add(entry)
        if first:
            self.publisher.emit_namespace(
                MAIN, "user online", [{"userId": entry.identity, "username": entry.username}],
                exclude=[session.sid],
            )
        welcome = {
            "message": self.config.welcome_message,
            "socketId": session.sid,
            "serverId": entry.gateway,
            "timestamp": iso(self._now_ms()),
        }
        return reply_to(request, emits=(Emit("welcome", [welcome]),))

    @on_connect(CHAT, CONNECT_PRIORITY)
    @on_connect(ADMIN, CONNECT_PRIORITY)
    @on_connect("*", CONNECT_PRIORITY)
    async def connect_other(self, request: Request) -> None:
        """Registers sockets of every other namespace (``/game`` too), for stats."""
        self.registry.add(self._entry(self._begin(request)))

    @on_disconnect("*")
    async def disconnect(self, request: Request) -> None:
        session = self._begin(request)
        self._depart(session.sid, session)

    @on_update("*")
    async def update(self, request: Request) -> None:
        """A socket's connection upgraded (polling → WebSocket): its entry says so."""
        session = self._begin(request)
        self.registry.set_transport(session.sid, session.transport)

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
        for sid in sorted(gone):
            self._depart(sid)
        for state in request.sockets:
            entry = self._entry(state.session)
            returning = self._lost_sids.pop(entry.sid, False)
            announce = (
                returning and entry.ns == MAIN and entry.sid not in self.registry
                and not self.registry.is_online(MAIN, entry.identity)
            )
            self.registry.add(entry)
            if announce:
                self.publisher.emit_namespace(
                    MAIN, "user online",
                    [{"userId": entry.identity, "username": entry.username}],
                    exclude=[entry.sid],
                )
            if entry.ns != MAIN:
                continue
            current = set(self.membership.rooms_of(entry.sid))
            wanted = {room_id for room_id in state.rooms if room_id in self.rooms}
            for room_id in sorted(wanted - current):
                self.membership.add(room_id, entry.member())
                self._unjoined.pop(room_id, None)
                if returning:
                    notice = {"socketId": entry.sid, "username": entry.username,
                              "roomId": room_id, "userCount": self.membership.count(room_id)}
                    self.publisher.emit_room(MAIN, room_id, "user joined", [notice],
                                             exclude=[entry.sid])
            for room_id in sorted(current - wanted):
                self._leave_room(room_id, entry.sid)
        log.info("sync from %s: %d sockets, %d departed", gateway_id, len(reported), len(gone))

    async def gateway_lost(self, gateway_id: str) -> None:
        sids = self._sids_of_gateway(gateway_id)
        for sid in sorted(sids):
            self._depart(sid)
            self._lost_sids[sid] = True
        while len(self._lost_sids) > LOST_SIDS_KEPT:  # bounded: oldest forgotten first
            del self._lost_sids[next(iter(self._lost_sids))]
        log.warning("gateway %s lost: dropped %d sockets", gateway_id, len(sids))

    # -- managed rooms (namespace /) ------------------------------------------------------
    @on_event(MAIN, "create room")
    async def create_room(self, request: Request) -> Reply:
        session = self._begin(request)
        spec = payloads.create_room(
            request.args, self.config.room_max_users_default, self.config.room_max_users_limit
        )
        self._expire_unjoined()
        if spec.room_id in self.rooms:
            raise ClientError("room already exists")
        password_hash = None
        if spec.password is not None:
            password_hash = await self.passwords.hash_async(spec.password)
            # Another create of the same id may have finished while we hashed.
            if spec.room_id in self.rooms:
                raise ClientError("room already exists")
        room = Room(
            id=spec.room_id,
            name=spec.name,
            private=spec.private,
            password_hash=password_hash,
            max_users=spec.max_users,
            created_ms=self._now_ms(),
            creator=self._entry(session).identity,
        )
        self.store.insert_room(room)
        self.rooms[room.id] = room
        self._unjoined[room.id] = room.created_ms
        return reply_to(request, ack=_ok(roomId=room.id))

    @on_event(MAIN, "join room")
    async def join_room(self, request: Request) -> Reply:
        session = self._begin(request)
        spec = payloads.join_room(request.args)
        self._expire_unjoined()
        room = self.rooms.get(spec.room_id)
        if room is None:
            return self._refuse_join(request, "room not found")
        needs_password = room.private and not self.membership.is_member(room.id, session.sid)
        if needs_password and not await self._password_ok(room, spec.password):
            return self._refuse_join(request, "wrong password")
        # From here to the insert there is no await: the capacity check and the insert are
        # one step for the event loop, however many gateways send joins at once. The room
        # may have been deleted (or deleted and re-created) during the password check.
        if self.rooms.get(room.id) is not room:
            return self._refuse_join(request, "room not found")
        already = self.membership.is_member(room.id, session.sid)
        if not already:
            if self.membership.count(room.id) >= room.max_users:
                return self._refuse_join(request, "room is full")
            self.membership.add(room.id, self._entry(session).member())
            self._unjoined.pop(room.id, None)
        members = self.membership.members(room.id)
        if not already:
            notice = {"socketId": session.sid, "username": _display_name(session),
                      "roomId": room.id, "userCount": len(members)}
            self.publisher.emit_room(MAIN, room.id, "user joined", [notice],
                                     exclude=[session.sid])
        joined = {"roomId": room.id, "roomName": room.name, "userCount": len(members),
                  "users": [m.payload() for m in members]}
        return reply_to(
            request,
            ack=_ok(roomId=room.id),
            joins=(room.id,),
            emits=(Emit("room joined", [joined]),),
        )

    @on_event(MAIN, "leave room")
    async def leave_room(self, request: Request) -> Reply:
        session = self._begin(request)
        room_id = payloads.room_id_arg(request.args)
        if room_id not in self.rooms:
            raise ClientError("room not found")
        self._require_member(room_id, session.sid)
        self._leave_room(room_id, session.sid)
        return reply_to(request, ack=_ok(roomId=room_id), leaves=(room_id,))

    @on_event(MAIN, "get rooms")
    async def get_rooms(self, request: Request) -> Reply:
        self._begin(request)
        self._expire_unjoined()
        rooms = [
            room.summary(self.membership.count(room.id))
            for room in sorted(self.rooms.values(), key=lambda r: (r.created_ms, r.id))
            if not room.private
        ]
        listing = {"success": True, "rooms": rooms}
        return reply_to(request, ack=[listing], emits=(Emit("room list", [listing]),))

    @on_event(MAIN, "get room info")
    async def get_room_info(self, request: Request) -> Reply:
        session = self._begin(request)
        room_id = payloads.room_id_arg(request.args)
        self._expire_unjoined()
        room = self.rooms.get(room_id)
        info: dict[str, Any] | None = None
        if room is not None:
            members = self.membership.members(room.id)
            # Who is in a private room is for its members only; that it exists is not
            # secret (creating it again says so).
            show = not room.private or self.membership.is_member(room.id, session.sid)
            info = room.info(members) if show else {**room.info(members), "users": []}
        return reply_to(request, ack=[info], emits=(Emit("room info", [info]),))

    # -- messages (namespace /) -----------------------------------------------------------
    @on_event(MAIN, "chat message")
    async def chat_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = payloads.chat_line(request.args)
        if line.room_id is not None:
            self._require_member(line.room_id, session.sid)
        message = await self._save(session, line.content, line.type, room=line.room_id)
        if line.room_id is not None:
            self.publisher.emit_room(MAIN, line.room_id, "chat message", [message.payload()],
                                     exclude=[session.sid])
        else:
            self.publisher.emit_namespace(MAIN, "chat message", [message.payload()],
                                          exclude=[session.sid])
        return reply_to(request, ack=_ok(messageId=message.id))

    @on_event(MAIN, "room message")
    async def room_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = payloads.room_line(request.args)
        self._require_member(line.room_id, session.sid)
        relay = {
            "from": self._entry(session).identity,
            "username": _display_name(session),
            "message": line.message,
            "roomId": line.room_id,
            "timestamp": iso(self._now_ms()),
        }
        self.publisher.emit_room(MAIN, line.room_id, "room message", [relay],
                                 exclude=[session.sid])
        return reply_to(request, ack=_ok())

    @on_event(MAIN, "private message")
    async def private_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = payloads.private_line(request.args)
        if not self.registry.is_online(MAIN, line.to):
            raise ClientError("user not online")
        message = await self._save(session, line.content, PRIVATE, recipient=line.to)
        self.publisher.emit_user(MAIN, line.to, "private message", [message.payload()])
        return reply_to(request, ack=_ok(messageId=message.id))

    @on_event(MAIN, "set username")
    async def set_username(self, request: Request) -> Reply:
        session = self._begin(request)
        username = payloads.username_arg(request.args)
        self.registry.rename(session.sid, username)
        self.membership.rename(session.sid, username)
        return reply_to(
            request,
            session=session.with_user(session.user_id, username, session.role),
            ack=_ok(username=username),
        )

    @on_event(MAIN, "user info")
    async def user_info(self, request: Request) -> Reply:
        """The seed client's ``set username``, with an avatar kept in the session."""
        session = self._begin(request)
        username, avatar = payloads.user_info(request.args)
        self.registry.rename(session.sid, username)
        self.membership.rename(session.sid, username)
        updated = replace(session.with_user(session.user_id, username, session.role),
                          avatar=avatar)
        fields: dict[str, Any] = {"username": username}
        if avatar is not None:
            fields["avatar"] = avatar
        return reply_to(request, session=updated, ack=_ok(**fields))

    @on_event(MAIN, "get online users")
    async def get_online_users(self, request: Request) -> Reply:
        self._begin(request)
        entries = sorted(self.registry.in_namespace(MAIN), key=lambda e: (e.connected_at, e.sid))
        users = [e.member().payload() for e in entries]
        return reply_to(request, ack=_ok(users=users))

    @on_event(MAIN, "get history")
    async def get_history(self, request: Request) -> Reply:
        session = self._begin(request)
        query = payloads.history_query(
            request.args, self.config.history_default_limit, self.config.history_max_limit
        )
        self._require_member(query.room_id, session.sid)
        before_seq = before_ms = None
        if isinstance(query.before, float):
            before_ms = int(query.before)  # epoch milliseconds (JavaScript's Date.now())
        elif query.before is not None:
            # A message id is the exact cursor (ties within a millisecond); a timestamp is
            # accepted too, for clients that page by time.
            before_seq = self.store.message_seq(MAIN, query.room_id, query.before)
            if before_seq is None:
                before_ms = parse_iso(query.before)
        messages = self.store.history(MAIN, query.room_id, query.limit, before_seq, before_ms)
        return reply_to(request, ack=_ok(messages=[m.payload() for m in messages]))

    # -- namespace /chat ------------------------------------------------------------------
    @on_event(CHAT, "chat message")
    async def chat_chat_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = payloads.chat_line(request.args)
        if line.room_id is not None and line.room_id.startswith(RESERVED_ROOM_PREFIX):
            raise ClientError("roomId: user rooms are reserved; use private message")
        message = await self._save(session, line.content, line.type, room=line.room_id)
        if line.room_id is not None:
            self.publisher.emit_room(CHAT, line.room_id, "chat message", [message.payload()],
                                     exclude=[session.sid])
        else:
            # EVENTS.md: "to all of /chat" (conventions: "to all" includes the sender).
            self.publisher.emit_namespace(CHAT, "chat message", [message.payload()])
        return reply_to(request, ack=_ok(messageId=message.id))

    @on_event(CHAT, "private message")
    async def chat_private_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = payloads.private_line(request.args)
        message = await self._save(session, line.content, PRIVATE, recipient=line.to)
        self.publisher.emit_user(CHAT, line.to, "private message", [message.payload()])
        return reply_to(
            request,
            ack=_ok(messageId=message.id),
            emits=(Emit("message sent", [{"messageId": message.id}]),),
        )

    # -- namespace /admin -----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Connection and room counts of the whole cluster (registry + heartbeats)."""
        self._expire_unjoined()
        counts = self.registry.count_by_namespace()
        now = self.clock()
        rooms = [
            room.info(self.membership.members(room.id), show_users=False)
            for room in sorted(self.rooms.values(), key=lambda r: (r.created_ms, r.id))
        ]
        gateways = [
            {
                "id": gateway_id,
                "connections": sum(status.connections.values()),
                "uptime": round(max(0.0, now - status.started_at), 3),
            }
            for gateway_id, status in sorted(self.gateways.items())
        ]
        return {
            "totalConnections": len(self.registry),
            "mainConnections": counts[MAIN],
            "chatConnections": counts[CHAT],
            "gameConnections": counts[GAME],
            "adminConnections": counts[ADMIN],
            "namespaces": dict(sorted(counts.items())),
            "rooms": rooms,
            "gateways": gateways,
            "timestamp": iso(to_ms(now)),
        }

    @on_event(ADMIN, "get stats")
    async def get_stats(self, request: Request) -> Reply:
        self._begin(request)
        stats = self.stats()
        return reply_to(request, ack=_ok(**stats), emits=(Emit("stats", [stats]),))

    @on_event(ADMIN, "get sockets")
    async def get_sockets(self, request: Request) -> Reply:
        """Every socket of the cluster, for operators: where it is, who, and over what."""
        self._begin(request)
        entries = sorted(self.registry.all(), key=lambda e: (e.connected_at, e.sid))
        sockets = [{"socketId": e.sid, "ns": e.ns, "gateway": e.gateway, "userId": e.user_id,
                    "username": e.username, "transport": e.transport or None,
                    "connectedAt": iso(to_ms(e.connected_at))} for e in entries]
        return reply_to(request, ack=_ok(sockets=sockets))

    @on_event(ADMIN, "broadcast message")
    async def broadcast_message(self, request: Request) -> Reply:
        self._begin(request)
        text = payloads.broadcast_text(request.args)
        announcement = {"type": "announcement", "content": text, "from": "system",
                        "timestamp": iso(self._now_ms())}
        self.publisher.emit_namespace(MAIN, "system message", [announcement])
        return reply_to(request, ack=_ok())
