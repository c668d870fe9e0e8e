"""Payload schemas of every client → server event in ``EVENTS.md``, as pydantic v2 models.

:meth:`Cleaner.clean` turns an event's raw args into the one canonical shape its owner
receives (unknown fields dropped, user text sanitised, defaults filled in), or raises
:class:`PayloadError` with a message that says what to fix (``content: must be 1..1000
characters``). Events not in :data:`EVENTS` are not moderation's business: the caller passes
them through unchanged.

Canonical shapes (what the owner gets as ``args``):

=========================  ===========================================================
``/`` ``set username``     ``[username]``  (a plain string; ``{username}`` accepted too)
``chat message``           ``[{content, type, roomId?}]``  (a plain string = content)
``private message``        ``[{to, content}]``
``create room``            ``[{roomId, roomName, isPrivate, maxUsers, password?}]``
``join room``              ``[{roomId, password?}]``  (a plain string = roomId)
``leave room``             ``[roomId]``  (``{roomId}`` accepted too)
``room message``           ``[{roomId, message}]``
``get room info``          ``[roomId]``  (``{roomId}`` accepted too)
``get history``            ``[{roomId, before?, limit?}]``
``get rooms`` etc.         ``[]``  (events that take nothing: an argument is ignored)
``/game`` ``join game``    ``[gameId]``  (``{gameId}`` accepted too)
``game action``            ``[{gameId, ...}]``  (other fields untouched: the game validates)
``/admin`` ``kick user``   ``[{socketId, reason?}]``  (a plain string = socketId)
``ban user``               ``[{userId, reason, seconds?}]``  (no seconds: permanent)
``mute user``              ``[{userId, seconds}]``
``broadcast message``      ``[{message}]``
=========================  ===========================================================

Identifiers are not sanitised but must be well-formed: room and game ids use letters, digits,
spaces and ``- _ . # @ +`` only. That keeps ids printable in every client and reserves ``:``
for the server's own rooms (``user:<id>``, ``game:<id>``), which no client can name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from switchboard.shared.errors import ClientError

from .sanitize import Sanitizer

#: Longest user id accepted anywhere (auth accepts no longer ones either).
MAX_USER_ID = 128
MAX_SOCKET_ID = 128
MAX_REASON = 200
MAX_PASSWORD = 100
MAX_BEFORE = 100
MAX_AVATAR = 2048
#: Longest ban or mute: ten years (a permanent ban simply omits ``seconds``).
MAX_SECONDS = 10 * 365 * 24 * 3600
#: Raw text longer than this many times its limit is refused before the (costlier) sanitiser.
RAW_FACTOR = 10

_ID_CHARS = re.compile(r"[\w\-. #@+]+")
ID_CHARS_HELP = 'use letters, digits, spaces and - _ . # @ + only'


class PayloadError(ClientError):
    """A payload failed validation; the message is for the client."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of payload fields (EVENTS.md defaults)."""

    content: int = 1000
    username: int = 50
    room_id: int = 50
    room_name: int = 100
    max_users: int = 1000
    history: int = 100
    reason: int = MAX_REASON
    password: int = MAX_PASSWORD


# -- field validators -----------------------------------------------------------------------
# Each works on the raw value (before pydantic's own checks) so that the messages are ours.
# ``None`` means "absent": optional fields return it, required ones call it missing.


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _cleaner(info: Any) -> Cleaner:
    cleaner = info.context.get("cleaner") if info.context else None
    if cleaner is None:
        raise RuntimeError("schemas must be validated through Cleaner.clean")
    return cleaner


def _absent(value: Any, optional: bool) -> bool:
    if value is None:
        if optional:
            return True
        raise _error("missing", "required")
    return False


def _text(limit_name: str, optional: bool = False) -> BeforeValidator:
    """User text: sanitised, then 1..limit characters."""

    def check(value: Any, info: Any) -> str | None:
        if _absent(value, optional):
            return None
        if not isinstance(value, str):
            raise _error("sb_text_type", "must be a string")
        cleaner = _cleaner(info)
        limit = getattr(cleaner.limits, limit_name)
        size = f"must be 1..{limit} characters"
        if len(value) > limit * RAW_FACTOR:
            raise _error("sb_text_length", size)
        cleaned = cleaner.sanitizer.clean(value)
        if not cleaned:
            raise _error("sb_text_empty", "must contain text (HTML and surrounding spaces removed)"
                         if value.strip() else size)
        if len(cleaned) > limit:
            raise _error("sb_text_length", size)
        return cleaned

    return BeforeValidator(check)


def _identifier(limit: int | str, optional: bool = False, charset: bool = True,
                numbers: bool = False) -> BeforeValidator:
    """An id: trimmed, 1..limit characters, printable (room/game ids: a safe charset)."""

    def check(value: Any, info: Any) -> str | None:
        if _absent(value, optional):
            return None
        if numbers and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _error("sb_id_type", "must be a string")
        top = getattr(_cleaner(info).limits, limit) if isinstance(limit, str) else limit
        value = value.strip()
        if not 1 <= len(value) <= top:
            raise _error("sb_id_length", f"must be 1..{top} characters")
        if charset and not _ID_CHARS.fullmatch(value):
            raise _error("sb_id_chars", ID_CHARS_HELP)
        if not value.isprintable():
            raise _error("sb_id_chars", "must be printable characters")
        return value

    return BeforeValidator(check)


def _integer(limit: int | str, optional: bool = False, default: int | None = None
             ) -> BeforeValidator:
    def check(value: Any, info: Any) -> int | None:
        if _absent(value, optional):
            return default
        top = getattr(_cleaner(info).limits, limit) if isinstance(limit, str) else limit
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # some clients send 10.0 for 10
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error("sb_int_type", f"must be an integer 1..{top}")
        if not 1 <= value <= top:
            raise _error("sb_int_range", f"must be 1..{top}")
        return value

    return BeforeValidator(check)


def _password(optional: bool = True) -> BeforeValidator:
    """Secrets are never sanitised or trimmed: that would change them."""

    def check(value: Any, info: Any) -> str | None:
        if _absent(value, optional):
            return None
        if not isinstance(value, str):
            raise _error("sb_password_type", "must be a string")
        top = _cleaner(info).limits.password
        if not 1 <= len(value) <= top:
            raise _error("sb_password_length", f"must be 1..{top} characters")
        return value

    return BeforeValidator(check)


def _before(value: Any, info: Any) -> str | int | float | None:
    if value is None:
        return None
    if isinstance(value, str) and 1 <= len(value.strip()) <= MAX_BEFORE:
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    raise _error("sb_before_type", "must be a timestamp or message id")


def _message_type(value: Any, info: Any) -> str:
    if value is None:
        return "text"
    if value not in ("text", "image", "file"):
        raise _error("sb_type_value", "must be text, image or file")
    return str(value)


def _flag(value: Any, info: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _error("sb_bool_type", "must be true or false")
    return value


Content = Annotated[str, _text("content")]
RoomId = Annotated[str, _identifier("room_id")]
OptRoomId = Annotated[str | None, _identifier("room_id", optional=True)]
GameId = Annotated[str, _identifier("room_id")]
UserId = Annotated[str, _identifier(MAX_USER_ID, charset=False, numbers=True)]


# -- models ------------------------------------------------------------------------------------


class Payload(BaseModel):
    # Unknown fields are dropped; strict so that pydantic never coerces behind our back.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class SetUsername(Payload):
    username: Annotated[str, _text("username")]


def _avatar(value: Any, info: Any) -> str | None:
    # Not checked as a URL: the seed's own client sends placeholder text ("avatar-url").
    # It is kept as opaque text; whoever displays it must treat it as untrusted.
    if value is None:
        return None
    if not isinstance(value, str):
        raise _error("sb_avatar_type", "must be a string")
    value = value.strip()
    if not 1 <= len(value) <= MAX_AVATAR or not value.isprintable():
        raise _error("sb_avatar_length", f"must be 1..{MAX_AVATAR} printable characters")
    return value


class UserInfo(Payload):
    username: Annotated[str, _text("username")]
    avatar: Annotated[str | None, BeforeValidator(_avatar)] = None


class ChatMessage(Payload):
    content: Content
    roomId: OptRoomId = None
    type: Annotated[str, BeforeValidator(_message_type)] = "text"


class PrivateMessage(Payload):
    to: UserId
    content: Content


class CreateRoom(Payload):
    roomId: RoomId
    roomName: Annotated[str, _text("room_name")]
    isPrivate: Annotated[bool, BeforeValidator(_flag)] = False
    password: Annotated[str | None, _password()] = None
    maxUsers: Annotated[int, _integer("max_users", optional=True, default=100)] = 100

    @model_validator(mode="after")
    def _private_needs_password(self) -> CreateRoom:
        if self.isPrivate and self.password is None:
            raise _error("sb_password_missing", "password: required for a private room")
        return self


class JoinRoom(Payload):
    roomId: RoomId
    password: Annotated[str | None, _password()] = None


class RoomRef(Payload):
    roomId: RoomId


class RoomMessage(Payload):
    roomId: RoomId
    message: Content


class GetHistory(Payload):
    roomId: RoomId
    before: Annotated[str | int | float | None, BeforeValidator(_before)] = None
    limit: Annotated[int | None, _integer("history", optional=True)] = None


class JoinGame(Payload):
    gameId: GameId


class GameAction(Payload):
    # The move itself is the game service's to judge: pass every other field through.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    gameId: GameId


class BroadcastMessage(Payload):
    message: Content


class KickUser(Payload):
    socketId: Annotated[str, _identifier(MAX_SOCKET_ID, charset=False)]
    reason: Annotated[str | None, _text("reason", optional=True)] = None

    @model_validator(mode="after")
    def _socket_id_names_a_gateway(self) -> KickUser:
        gateway, dot, rest = self.socketId.rpartition(".")
        if not (gateway and dot and rest) or "\x00" in self.socketId:
            raise _error("sb_socket_id", "socketId: not a socket id")
        return self


class BanUser(Payload):
    userId: UserId
    reason: Annotated[str, _text("reason")]
    seconds: Annotated[int | None, _integer(MAX_SECONDS, optional=True)] = None


class MuteUser(Payload):
    userId: UserId
    seconds: Annotated[int, _integer(MAX_SECONDS)]


@dataclass(frozen=True, slots=True)
class EventSchema:
    """How to read one event's args.

    ``model`` None: the event takes nothing (args become ``[]``). ``scalar``: the field that a
    plain (non-object) first argument fills. ``flatten``: the owner receives that field's value
    itself, not an object. ``hint`` names the expected object in error messages.
    """

    model: type[Payload] | None
    hint: str = ""
    scalar: str | None = None
    flatten: bool = False
    keep_none: bool = False


NONE = EventSchema(None)
_CHAT = EventSchema(ChatMessage, "{content, roomId?, type?}", scalar="content")
_PRIVATE = EventSchema(PrivateMessage, "{to, content}")

#: (namespace, event) → schema, for every client → server event of EVENTS.md.
EVENTS: dict[tuple[str, str], EventSchema] = {
    ("/", "set username"): EventSchema(SetUsername, "a string", "username", flatten=True),
    ("/", "user info"): EventSchema(UserInfo, "{username, avatar?}", scalar="username"),
    ("/", "chat message"): _CHAT,
    ("/", "private message"): _PRIVATE,
    ("/", "create room"): EventSchema(
        CreateRoom, "{roomId, roomName, isPrivate?, password?, maxUsers?}"
    ),
    ("/", "join room"): EventSchema(JoinRoom, "{roomId, password?}", scalar="roomId"),
    ("/", "leave room"): EventSchema(RoomRef, "a roomId", "roomId", flatten=True),
    ("/", "room message"): EventSchema(RoomMessage, "{roomId, message}"),
    ("/", "get rooms"): NONE,
    ("/", "get room info"): EventSchema(RoomRef, "a roomId", "roomId", flatten=True),
    ("/", "get online users"): NONE,
    ("/", "get history"): EventSchema(GetHistory, "{roomId, before?, limit?}"),
    ("/chat", "chat message"): _CHAT,
    ("/chat", "private message"): _PRIVATE,
    ("/game", "join game"): EventSchema(JoinGame, "a gameId", "gameId", flatten=True),
    ("/game", "game action"): EventSchema(GameAction, "{gameId, ...}", keep_none=True),
    ("/admin", "get stats"): NONE,
    ("/admin", "get sockets"): NONE,
    ("/admin", "broadcast message"): EventSchema(BroadcastMessage, "{message}"),
    ("/admin", "kick user"): EventSchema(KickUser, "{socketId, reason?}", scalar="socketId"),
    ("/admin", "ban user"): EventSchema(BanUser, "{userId, reason, seconds?}"),
    ("/admin", "mute user"): EventSchema(MuteUser, "{userId, seconds}"),
}

#: Messages of pydantic's own error types, in the same "what to fix" style as ours.
_STANDARD = {
    "missing": "required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "dict_type": "must be an object",
    "model_type": "must be an object",
}


def describe(exc: ValidationError) -> str:
    """One line naming each bad field and what it must be, in field order."""
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = _STANDARD.get(err["type"], err["msg"])
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(dict.fromkeys(parts))


class Cleaner:
    """Validates and cleans event args with the configured limits and sanitiser."""

    def __init__(self, limits: Limits | None = None, sanitizer: Sanitizer | None = None) -> None:
        self.limits = limits or Limits()
        self.sanitizer = sanitizer or Sanitizer()

    def knows(self, ns: str, event: str) -> bool:
        return (ns, event) in EVENTS

    def clean(self, ns: str, event: str, args: list[Any]) -> list[Any] | None:
        """The canonical args of ``event`` in ``ns``; None when the event has no schema."""
        schema = EVENTS.get((ns, event))
        if schema is None:
            return None
        return self.apply(schema, args)

    def apply(self, schema: EventSchema, args: list[Any]) -> list[Any]:
        if schema.model is None:
            return []
        payload = args[0] if args else None
        if payload is None:
            data: Any = {}
        elif isinstance(payload, dict):
            data = payload
        elif schema.scalar is not None:
            data = {schema.scalar: payload}
        else:
            raise PayloadError(f"payload: must be an object {schema.hint}")
        try:
            model = schema.model.model_validate(data, context={"cleaner": self})
        except ValidationError as exc:
            raise PayloadError(describe(exc)) from None
        cleaned = model.model_dump(exclude_none=not schema.keep_none)
        if schema.flatten and schema.scalar is not None:
            return [cleaned[schema.scalar]]
        return [cleaned]

