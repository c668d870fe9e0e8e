"""Client arguments → typed requests, refusing wrong types with text that says what to fix.

Moderation validates and sanitises every payload before the room service sees it, so these
checks are the second line: they keep a wrong type (a misconfigured filter, a future client)
from ever reaching storage or topic names, and they only check what the room service itself
depends on (types, presence, its own limits), not moderation's length policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from switchboard.shared.errors import ClientError

from .model import MESSAGE_TYPES, RESERVED_ROOM_PREFIX


@dataclass(frozen=True, slots=True)
class CreateRoom:
    room_id: str
    name: str
    private: bool
    password: str | None
    max_users: int


@dataclass(frozen=True, slots=True)
class JoinRoom:
    room_id: str
    password: str | None


@dataclass(frozen=True, slots=True)
class ChatLine:
    content: str
    room_id: str | None
    type: str


@dataclass(frozen=True, slots=True)
class RoomLine:
    room_id: str
    message: str


@dataclass(frozen=True, slots=True)
class PrivateLine:
    to: str
    content: str


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    room_id: str
    before: str | float | None  #: a message id, an ISO-8601 time, or epoch milliseconds
    limit: int


def _first(args: list[Any]) -> Any:
    return args[0] if args else None


def _object(args: list[Any], shape: str) -> dict[str, Any]:
    value = _first(args)
    if not isinstance(value, dict):
        raise ClientError(f"expected an object {shape}")
    return value


def _text(obj: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ClientError(f"{key}: must be a non-empty string")
    return value


def _required_text(obj: dict[str, Any], key: str) -> str:
    value = _text(obj, key)
    assert value is not None
    return value


def _room_name(value: str, key: str = "roomId") -> str:
    # NUL terminates topic parts (shared.topics): it could never be published to.
    if "\x00" in value:
        raise ClientError(f"{key}: must not contain NUL characters")
    return value


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type; 10.0 is a fine 10
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ClientError(f"{key}: must be an integer {low}..{high}")
    return value


def room_id_arg(args: list[Any]) -> str:
    """A bare room id (``leave room``, ``get room info``); ``{roomId}`` is accepted too."""
    value = _first(args)
    if isinstance(value, dict):
        value = value.get("roomId")
    if not isinstance(value, str) or not value.strip():
        raise ClientError("roomId: must be a non-empty string")
    return _room_name(value)


def create_room(args: list[Any], default_max: int, max_limit: int) -> CreateRoom:
    obj = _object(args, "{roomId, roomName, isPrivate?, password?, maxUsers?}")
    room_id = _room_name(_required_text(obj, "roomId"))
    if room_id.startswith(RESERVED_ROOM_PREFIX):
        raise ClientError(f"roomId: must not start with {RESERVED_ROOM_PREFIX!r}")
    name = _required_text(obj, "roomName")
    private = obj.get("isPrivate", False)
    if private is None:
        private = False
    if not isinstance(private, bool):
        raise ClientError("isPrivate: must be true or false")
    password = obj.get("password")
    if private:
        if not isinstance(password, str) or not password:
            raise ClientError("password: required for a private room")
    else:
        password = None  # a public room has no password; ignore a stray one
    max_users = obj.get("maxUsers")
    max_users = default_max if max_users is None else _int(max_users, "maxUsers", 1, max_limit)
    return CreateRoom(room_id, name, private, password, max_users)


def join_room(args: list[Any]) -> JoinRoom:
    value = _first(args)
    if isinstance(value, str):  # tolerate a bare id for public rooms
        return JoinRoom(_room_name(value), None)
    obj = _object(args, "{roomId, password?}")
    room_id = _room_name(_required_text(obj, "roomId"))
    password = obj.get("password")
    if password is not None and not isinstance(password, str):
        raise ClientError("password: must be a string")
    return JoinRoom(room_id, password)


def chat_line(args: list[Any]) -> ChatLine:
    obj = _object(args, "{content, roomId?, type?}")
    content = _required_text(obj, "content")
    room_id = _text(obj, "roomId", required=False)
    if room_id is not None:
        _room_name(room_id)
    kind = obj.get("type")
    if kind is None:
        kind = "text"
    if kind not in MESSAGE_TYPES:
        raise ClientError("type: must be text, image or file")
    return ChatLine(content, room_id, kind)


def room_line(args: list[Any]) -> RoomLine:
    obj = _object(args, "{roomId, message}")
    return RoomLine(_room_name(_required_text(obj, "roomId")), _required_text(obj, "message"))


def private_line(args: list[Any]) -> PrivateLine:
    obj = _object(args, "{to, content}")
    return PrivateLine(_required_text(obj, "to"), _required_text(obj, "content"))


def username_arg(args: list[Any]) -> str:
    value = _first(args)
    if isinstance(value, dict):
        value = value.get("username")
    if not isinstance(value, str) or not value.strip():
        raise ClientError("username: must be a non-empty string")
    return value


def user_info(args: list[Any]) -> tuple[str, str | None]:
    """``user info``: ``{username, avatar?}`` (moderation has validated and cleaned it)."""
    obj = _first(args)
    if isinstance(obj, str):
        obj = {"username": obj}
    if not isinstance(obj, dict):
        raise ClientError("payload: must be an object {username, avatar?}")
    username = username_arg([obj])
    avatar = obj.get("avatar")
    return username, avatar if isinstance(avatar, str) and avatar else None


def history_query(args: list[Any], default_limit: int, max_limit: int) -> HistoryQuery:
    obj = _object(args, "{roomId, before?, limit?}")
    room_id = _room_name(_required_text(obj, "roomId"))
    raw_before = obj.get("before")
    before: str | float | None
    if isinstance(raw_before, (int, float)) and not isinstance(raw_before, bool):
        if not math.isfinite(raw_before) or raw_before < 0:
            raise ClientError("before: must be a timestamp or message id")
        before = float(raw_before)  # epoch milliseconds, as JavaScript's Date.now()
    else:
        before = _text(obj, "before", required=False)
    limit = obj.get("limit")
    limit = default_limit if limit is None else _int(limit, "limit", 1, max_limit)
    return HistoryQuery(room_id, before, limit)


def broadcast_text(args: list[Any]) -> str:
    value = _first(args)
    if isinstance(value, dict):
        value = value.get("message")
    if not isinstance(value, str) or not value.strip():
        raise ClientError("message: must be a non-empty string")
    return value
