"""Managed rooms of namespace ``/``: create, join (password, capacity), leave, list, info."""

from __future__ import annotations

from typing import Any

from switchboard.shared.envelope import Emit, Reply, Request, reply_to
from switchboard.shared.errors import ClientError, ServiceUnavailable
from switchboard.shared.partitions import ALL
from switchboard.shared.schema import parsed
from switchboard.shared.service import on_event

from . import schemas
from .core import MAIN, ROOM, ROOM_OR_ID, RoomCore, display_name, ok
from .model import Room


class RoomEvents(RoomCore):
    """The managed-room events."""

    async def _password_ok(self, room: Room, password: str | None) -> bool:
        # A missing password is "wrong password" too: the contract's refusals are a closed set.
        if password is None or room.password_hash is None:
            return False
        return await self.passwords.verify_async(room.password_hash, password)

    def _refuse_join(self, request: Request, message: str) -> Reply:
        return Reply(
            request.id, ok=False, error=message, emits=(Emit("room error", [{"message": message}]),)
        )

    # -- managed rooms (namespace /) ------------------------------------------------------
    @on_event(MAIN, "create room", schemas.CREATE_ROOM, key=ROOM)
    async def create_room(self, request: Request) -> Reply:
        session = self._begin(request)
        spec = parsed(schemas.CreateRoom, request)
        self._expire_empty()
        if spec.roomId in self.rooms:
            raise ClientError("room already exists")
        password_hash = None
        if spec.isPrivate and spec.password is not None:  # a public room has no password
            password_hash = await self.passwords.hash_async(spec.password)
            # Another create of the same id may have finished while we hashed; or the
            # members changed, and the room is another instance's now.
            if not self._owns(spec.roomId) or not self.accepting(spec.roomId):
                raise ClientError(ServiceUnavailable.client_message)
            if spec.roomId in self.rooms:
                raise ClientError("room already exists")
        room = Room(
            id=spec.roomId,
            name=spec.roomName,
            private=spec.isPrivate,
            password_hash=password_hash,
            max_users=spec.maxUsers or self.config.room_max_users_default,
            created_ms=self._now_ms(),
            creator=self._entry(session).identity,
        )
        self.store.insert_room(room)
        self.rooms[room.id] = room
        self._mark_empty(room.id, self.config.room_unjoined_ttl, room.created_ms)
        try:
            await self.store.committed()  # before the creator is told
        except Exception:
            if self.rooms.get(room.id) is room:  # a room the store does not have is none
                self.rooms.pop(room.id)
                self._empty.pop(room.id, None)
            raise
        return reply_to(request, ack=ok(roomId=room.id))

    @on_event(MAIN, "join room", schemas.JOIN_ROOM, key=ROOM_OR_ID)
    async def join_room(self, request: Request) -> Reply:
        session = self._begin(request)
        spec = parsed(schemas.JoinRoom, request)
        self._expire_empty()
        room = self.rooms.get(spec.roomId)
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
            self._occupied(room.id)
        members = self.membership.members(room.id)
        if not already:
            notice = {
                "socketId": session.sid,
                "username": display_name(session),
                "roomId": room.id,
                "userCount": len(members),
            }
            self.publisher.emit_room(MAIN, room.id, "user joined", [notice], exclude=[session.sid])
        joined = {
            "roomId": room.id,
            "roomName": room.name,
            "userCount": len(members),
            "users": [m.payload() for m in members],
        }
        return reply_to(
            request,
            ack=ok(roomId=room.id),
            joins=(room.id,),
            emits=(Emit("room joined", [joined]),),
        )

    @on_event(MAIN, "leave room", schemas.ROOM_REF, key=ROOM_OR_ID)
    async def leave_room(self, request: Request) -> Reply:
        session = self._begin(request)
        room_id = str(request.args[0])
        if room_id not in self.rooms:
            raise ClientError("room not found")
        self._require_member(room_id, session.sid)
        self._leave_room(room_id, session.sid)
        return reply_to(request, ack=ok(roomId=room_id), leaves=(room_id,))

    @on_event(MAIN, "get rooms", schemas.TAKES_NOTHING, key=ALL)
    async def get_rooms(self, request: Request) -> Reply:
        self._begin(request)
        self._expire_empty()
        rooms = [
            self._ordered(room.summary(self.membership.count(room.id)), room.created_ms, room.id)
            for room in sorted(self.rooms.values(), key=lambda r: (r.created_ms, r.id))
            if not room.private
        ]
        listing = {"success": True, "rooms": rooms}
        return reply_to(request, ack=[listing],
                        emits=(Emit("room list", [listing], unless_acked=True),))

    @on_event(MAIN, "get room info", schemas.ROOM_REF, key=ROOM_OR_ID)
    async def get_room_info(self, request: Request) -> Reply:
        session = self._begin(request)
        room_id = str(request.args[0])
        self._expire_empty()
        room = self.rooms.get(room_id)
        info: dict[str, Any] | None = None
        if room is not None:
            members = self.membership.members(room.id)
            # Who is in a private room is for its members only; that it exists is not
            # secret (creating it again says so).
            show = not room.private or self.membership.is_member(room.id, session.sid)
            info = room.info(members) if show else {**room.info(members), "users": []}
        return reply_to(request, ack=[info],
                        emits=(Emit("room info", [info], unless_acked=True),))
