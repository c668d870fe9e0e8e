"""The language event payloads are declared in: pydantic v2 models with our field types, an
:class:`EventSchema` per event, and the :class:`Cleaner` that applies one.

Each service declares the schemas of the events it owns, next to their handlers (``schema=``
of :func:`shared.service.on_event`); the service framework applies that declaration once,
in the owner, before the handler runs. :meth:`Cleaner.apply` turns an event's raw args into
the one canonical shape the handler receives (unknown fields dropped, user text sanitised,
defaults filled in), or raises :class:`PayloadError` with a message that says what to fix
(``content: must be 1..1000 characters``).

Identifiers are not sanitised but must be well-formed: room and game ids use letters, digits,
spaces and ``- _ . # @ +`` only. That keeps ids printable in every client and reserves ``:``
for the server's own rooms (``user:<id>``, ``game:<id>``), which no client can name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from switchboard.shared.envelope import Request
from switchboard.shared.errors import ClientError
from switchboard.shared.sanitize import Sanitizer

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
    """Size limits of payload fields (EVENTS.md defaults); each service sets the ones of its
    own events from its settings."""

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


def error(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose message reaches the client as written."""
    return PydanticCustomError(kind, message)


def _cleaner(info: Any) -> Cleaner:
    cleaner = info.context.get("cleaner") if info.context else None
    if cleaner is None:
        raise RuntimeError("schemas must be validated through Cleaner.apply")
    return cleaner


def _absent(value: Any, optional: bool) -> bool:
    if value is None:
        if optional:
            return True
        raise error("missing", "required")
    return False


def text(limit_name: str, optional: bool = False) -> BeforeValidator:
    """User text: sanitised, then 1..limit characters."""

    def check(value: Any, info: Any) -> str | None:
        if _absent(value, optional):
            return None
        if not isinstance(value, str):
            raise error("sb_text_type", "must be a string")
        cleaner = _cleaner(info)
        limit = getattr(cleaner.limits, limit_name)
        size = f"must be 1..{limit} characters"
        if len(value) > limit * RAW_FACTOR:
            raise error("sb_text_length", size)
        cleaned = cleaner.sanitizer.clean(value)
        if not cleaned:
            raise error("sb_text_empty", "must contain text (HTML and surrounding spaces removed)"
                        if value.strip() else size)
        if len(cleaned) > limit:
            raise error("sb_text_length", size)
        return cleaned

    return BeforeValidator(check)


def identifier(limit: int | str, optional: bool = False, charset: bool = True,
               numbers: bool = False) -> BeforeValidator:
    """An id: trimmed, 1..limit characters, printable (room/game ids: a safe charset)."""

    def check(value: Any, info: Any) -> str | None:
        if _absent(value, optional):
            return None
        if numbers and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise error("sb_id_type", "must be a string")
        top = getattr(_cleaner(info).limits, limit) if isinstance(limit, str) else limit
        value = value.strip()
        if not 1 <= len(value) <= top:
            raise error("sb_id_length", f"must be 1..{top} characters")
        if charset and not _ID_CHARS.fullmatch(value):
            raise error("sb_id_chars", ID_CHARS_HELP)
        if not value.isprintable():
            raise error("sb_id_chars", "must be printable characters")
        return value

    return BeforeValidator(check)


def integer(limit: int | str, optional: bool = False, default: int | None = None
            ) -> BeforeValidator:
    def check(value: Any, info: Any) -> int | None:
        if _absent(value, optional):
            return default
        top = getattr(_cleaner(info).limits, limit) if isinstance(limit, str) else limit
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # some clients send 10.0 for 10
        if isinstance(value, bool) or not isinstance(value, int):
            raise error("sb_int_type", f"must be an integer 1..{top}")
        if not 1 <= value <= top:
            raise error("sb_int_range", f"must be 1..{top}")
        return value

    return BeforeValidator(check)


def secret(optional: bool = True) -> BeforeValidator:
    """Secrets are never sanitised or trimmed: that would change them."""

    def check(value: Any, info: Any) -> str | None:
        if _absent(value, optional):
            return None
        if not isinstance(value, str):
            raise error("sb_password_type", "must be a string")
        top = _cleaner(info).limits.password
        if not 1 <= len(value) <= top:
            raise error("sb_password_length", f"must be 1..{top} characters")
        return value

    return BeforeValidator(check)


def _before(value: Any, info: Any) -> str | int | float | None:
    if value is None:
        return None
    if isinstance(value, str) and 1 <= len(value.strip()) <= MAX_BEFORE:
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    raise error("sb_before_type", "must be a timestamp or message id")


def _flag(value: Any, info: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise error("sb_bool_type", "must be true or false")
    return value


def _avatar(value: Any, info: Any) -> str | None:
    # Not checked as a URL: the seed's own client sends placeholder text ("avatar-url").
    # It is kept as opaque text; whoever displays it must treat it as untrusted.
    if value is None:
        return None
    if not isinstance(value, str):
        raise error("sb_avatar_type", "must be a string")
    value = value.strip()
    if not 1 <= len(value) <= MAX_AVATAR or not value.isprintable():
        raise error("sb_avatar_length", f"must be 1..{MAX_AVATAR} printable characters")
    return value


Content = Annotated[str, text("content")]
RoomId = Annotated[str, identifier("room_id")]
OptRoomId = Annotated[str | None, identifier("room_id", optional=True)]
UserId = Annotated[str, identifier(MAX_USER_ID, charset=False, numbers=True)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Before = Annotated[str | int | float | None, BeforeValidator(_before)]
Avatar = Annotated[str | None, BeforeValidator(_avatar)]


class Payload(BaseModel):
    # Unknown fields are dropped; strict so that pydantic never coerces behind our back.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


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


#: An event that takes nothing: an argument is ignored.
NONE = EventSchema(None)

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
    """Validates and cleans event args with one service's limits and sanitiser."""

    def __init__(self, limits: Limits | None = None, sanitizer: Sanitizer | None = None) -> None:
        self.limits = limits or Limits()
        self.sanitizer = sanitizer or Sanitizer()

    def apply(self, schema: EventSchema, args: list[Any]) -> list[Any]:
        """The canonical args of an event declared by ``schema``, or :class:`PayloadError`."""
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


P = TypeVar("P", bound=Payload)


def parsed(model: type[P], request: Request) -> P:
    """A handler's typed view of args the framework already cleaned with ``model``'s schema
    (built without validating again)."""
    return model.model_construct(**request.args[0])
