"""Payload schemas of the events the room service owns (the one declaration of each; the
service framework applies it before the handler runs, see :mod:`shared.schema`).

Canonical shapes (what the handler gets as ``args``):

=========================  ===========================================================
``/`` ``set username``     ``[username]``  (a plain string; ``{username}`` accepted too)
``user info``              ``[{username, avatar?}]``  (a plain string = username)
``chat message``           ``[{content, type, roomId?}]``  (a plain string = content)
``private message``        ``[{to, content}]``
``create room``            ``[{roomId, roomName, isPrivate, maxUsers?, password?}]``
``join room``              ``[{roomId, password?}]``  (a plain string = roomId)
``leave room``             ``[roomId]``  (``{roomId}`` accepted too)
``room message``           ``[{roomId, message}]``
``get room info``          ``[roomId]``  (``{roomId}`` accepted too)
``get history``            ``[{roomId, before?, limit?}]``
``get rooms`` etc.         ``[]``  (events that take nothing: an argument is ignored)
``/chat``                  ``chat message`` and ``private message`` as in ``/``
``/admin``                 ``broadcast message`` ``[{message}]``; ``get stats``,
                           ``get sockets`` ``[]``
=========================  ===========================================================
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, model_validator

from switchboard.shared.schema import (
    NONE,
    Avatar,
    Before,
    Content,
    EventSchema,
    Flag,
    OptRoomId,
    Payload,
    RoomId,
    UserId,
    error,
    integer,
    secret,
    text,
)

from .model import MESSAGE_TYPES


def _message_type(value: Any, info: Any) -> str:
    if value is None:
        return "text"
    if value not in MESSAGE_TYPES:
        raise error("sb_type_value", "must be text, image or file")
    return str(value)


class SetUsername(Payload):
    username: Annotated[str, text("username")]


class UserInfo(Payload):
    username: Annotated[str, text("username")]
    avatar: Avatar = None


class ChatMessage(Payload):
    content: Content
    roomId: OptRoomId = None
    type: Annotated[str, BeforeValidator(_message_type)] = "text"


class PrivateMessage(Payload):
    to: UserId
    content: Content


class CreateRoom(Payload):
    roomId: RoomId
    roomName: Annotated[str, text("room_name")]
    isPrivate: Flag = False
    password: Annotated[str | None, secret()] = None
    #: None: the room service's default (``--room-max-users-default``).
    maxUsers: Annotated[int | None, integer("max_users", optional=True)] = None

    @model_validator(mode="after")
    def _private_needs_password(self) -> CreateRoom:
        if self.isPrivate and self.password is None:
            raise error("sb_password_missing", "password: required for a private room")
        return self


class JoinRoom(Payload):
    roomId: RoomId
    password: Annotated[str | None, secret()] = None


class RoomRef(Payload):
    roomId: RoomId


class RoomMessage(Payload):
    roomId: RoomId
    message: Content


class GetHistory(Payload):
    roomId: RoomId
    before: Before = None
    limit: Annotated[int | None, integer("history", optional=True)] = None


class BroadcastMessage(Payload):
    message: Content


SET_USERNAME = EventSchema(SetUsername, "a string", "username", flatten=True)
USER_INFO = EventSchema(UserInfo, "{username, avatar?}", scalar="username")
CHAT_MESSAGE = EventSchema(ChatMessage, "{content, roomId?, type?}", scalar="content")
PRIVATE_MESSAGE = EventSchema(PrivateMessage, "{to, content}")
CREATE_ROOM = EventSchema(CreateRoom, "{roomId, roomName, isPrivate?, password?, maxUsers?}")
JOIN_ROOM = EventSchema(JoinRoom, "{roomId, password?}", scalar="roomId")
ROOM_REF = EventSchema(RoomRef, "a roomId", "roomId", flatten=True)
ROOM_MESSAGE = EventSchema(RoomMessage, "{roomId, message}")
GET_HISTORY = EventSchema(GetHistory, "{roomId, before?, limit?}")
BROADCAST_MESSAGE = EventSchema(BroadcastMessage, "{message}")
TAKES_NOTHING = NONE
