"""Messages and who sends them: chat, room and private messages (saved before anyone is told),
usernames, online users and history of ``/``, and namespace ``/chat``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from switchboard.shared.envelope import Emit, Reply, Request, Session, reply_to
from switchboard.shared.errors import ClientError, ServiceUnavailable
from switchboard.shared.partitions import ALL, IDENTITY
from switchboard.shared.schema import parsed
from switchboard.shared.service import on_event

from . import schemas
from .core import CHAT, MAIN, RECIPIENT, ROOM, RoomCore, display_name, ok
from .model import PRIVATE, Message, iso, new_id, parse_iso


class MessageEvents(RoomCore):
    """The message, identity and history events."""

    async def _save(
        self,
        session: Session,
        content: str,
        kind: str,
        room: str | None = None,
        recipient: str | None = None,
    ) -> Message:
        # Numbered right before it is queued (no await between): numbers follow the order
        # messages are stored and published in.
        seq = None
        if room is not None:
            counted = self.numbering.counts(session.ns, room)
            seq = await self.numbering.next(session.ns, room)
            if not counted:
                # Its count was read meanwhile: the members may have changed (the room is
                # another's now), or its sender left the room and it was deleted.
                if not (self._owns(room) and self.accepting(room)):
                    raise ClientError(ServiceUnavailable.client_message)
                if session.ns == MAIN:
                    self._require_member(room, session.sid)
        message = Message(
            id=new_id(),
            namespace=session.ns,
            room=room,
            sender=self._entry(session).identity,
            recipient=recipient,
            username=display_name(session),
            content=content,
            type=kind,
            ts_ms=self._now_ms(),
            seq=seq,
        )
        self.store.insert_message(message)
        await self.store.committed()  # before anyone is told about it
        return message

    # -- messages (namespace /) -----------------------------------------------------------
    @on_event(MAIN, "chat message", schemas.CHAT_MESSAGE, key=ROOM)
    async def chat_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = parsed(schemas.ChatMessage, request)
        if line.roomId is not None:
            self._require_member(line.roomId, session.sid)
        message = await self._save(session, line.content, line.type, room=line.roomId)
        if line.roomId is not None:
            self.publisher.emit_room(
                MAIN, line.roomId, "chat message", [message.payload()], exclude=[session.sid]
            )
        else:
            self.publisher.emit_namespace(
                MAIN, "chat message", [message.payload()], exclude=[session.sid]
            )
        return reply_to(request, ack=ok(messageId=message.id))

    @on_event(MAIN, "room message", schemas.ROOM_MESSAGE, key=ROOM)
    async def room_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = parsed(schemas.RoomMessage, request)
        self._require_member(line.roomId, session.sid)
        relay = {
            "from": self._entry(session).identity,
            "username": display_name(session),
            "message": line.message,
            "roomId": line.roomId,
            "timestamp": iso(self._now_ms()),
        }
        self.publisher.emit_room(MAIN, line.roomId, "room message", [relay], exclude=[session.sid])
        return reply_to(request, ack=ok())

    @on_event(MAIN, "private message", schemas.PRIVATE_MESSAGE, key=RECIPIENT)
    async def private_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = parsed(schemas.PrivateMessage, request)
        if not self.registry.is_online(MAIN, line.to):
            raise ClientError("user not online")
        message = await self._save(session, line.content, PRIVATE, recipient=line.to)
        self.publisher.emit_user(MAIN, line.to, "private message", [message.payload()])
        return reply_to(request, ack=ok(messageId=message.id))

    @on_event(MAIN, "set username", schemas.SET_USERNAME, key=IDENTITY)
    async def set_username(self, request: Request) -> Reply:
        session = self._begin(request)
        username = str(request.args[0])
        self.registry.rename(session.sid, username)
        self.membership.rename(session.sid, username)
        return reply_to(
            request,
            session=session.with_user(session.user_id, username, session.role),
            ack=ok(username=username),
        )

    @on_event(MAIN, "user info", schemas.USER_INFO, key=IDENTITY)
    async def user_info(self, request: Request) -> Reply:
        """The seed client's ``set username``, with an avatar kept in the session."""
        session = self._begin(request)
        info = parsed(schemas.UserInfo, request)
        username, avatar = info.username, info.avatar
        self.registry.rename(session.sid, username)
        self.membership.rename(session.sid, username)
        updated = replace(session.with_user(session.user_id, username, session.role), avatar=avatar)
        fields: dict[str, Any] = {"username": username}
        if avatar is not None:
            fields["avatar"] = avatar
        return reply_to(request, session=updated, ack=ok(**fields))

    @on_event(MAIN, "get online users", schemas.TAKES_NOTHING, key=ALL)
    async def get_online_users(self, request: Request) -> Reply:
        self._begin(request)
        entries = sorted(self.registry.in_namespace(MAIN), key=lambda e: (e.connected_at, e.sid))
        users = [self._ordered(e.member().payload(), e.connected_at, e.sid) for e in entries]
        return reply_to(request, ack=ok(users=users))

    @on_event(MAIN, "get history", schemas.GET_HISTORY, key=ROOM)
    async def get_history(self, request: Request) -> Reply:
        session = self._begin(request)
        query = parsed(schemas.GetHistory, request)
        limit = query.limit or self.config.history_default_limit
        self._require_member(query.roomId, session.sid)
        before_seq = before_ms = None
        if isinstance(query.before, (int, float)):
            if query.before < 0:
                raise ClientError("before: must be a timestamp or message id")
            before_ms = int(query.before)  # epoch milliseconds (JavaScript's Date.now())
        elif query.before is not None:
            # A message id is the exact cursor (ties within a millisecond); a timestamp is
            # accepted too, for clients that page by time.
            before_seq = await self.store.message_seq(MAIN, query.roomId, query.before)
            if before_seq is None:
                before_ms = parse_iso(query.before)
        messages = await self.store.history(MAIN, query.roomId, limit, before_seq, before_ms)
        return reply_to(request, ack=ok(messages=[m.payload() for m in messages]))

    # -- namespace /chat ------------------------------------------------------------------
    @on_event(CHAT, "chat message", schemas.CHAT_MESSAGE, key=ROOM)
    async def chat_chat_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = parsed(schemas.ChatMessage, request)
        message = await self._save(session, line.content, line.type, room=line.roomId)
        if line.roomId is not None:
            self.publisher.emit_room(
                CHAT, line.roomId, "chat message", [message.payload()], exclude=[session.sid]
            )
        else:
            # EVENTS.md: "to all of /chat" (conventions: "to all" includes the sender).
            self.publisher.emit_namespace(CHAT, "chat message", [message.payload()])
        return reply_to(request, ack=ok(messageId=message.id))

    @on_event(CHAT, "private message", schemas.PRIVATE_MESSAGE, key=RECIPIENT)
    async def chat_private_message(self, request: Request) -> Reply:
        session = self._begin(request)
        line = parsed(schemas.PrivateMessage, request)
        message = await self._save(session, line.content, PRIVATE, recipient=line.to)
        self.publisher.emit_user(CHAT, line.to, "private message", [message.payload()])
        return reply_to(
            request,
            ack=ok(messageId=message.id),
            emits=(Emit("message sent", [{"messageId": message.id}]),),
        )
