"""Domain objects of the room service and the two conversions at the payload boundary.

Everything inside the service is a frozen dataclass; dictionaries exist only where a payload
leaves (``*_payload`` methods) or enters (:mod:`.payloads`). Times are integer milliseconds
since the epoch internally (exact comparisons, no float drift in SQLite) and ISO-8601 UTC
strings with milliseconds and ``Z`` on the wire.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from switchboard.shared.errors import ClientError

MESSAGE_TYPES = ("text", "image", "file")
PRIVATE = "private"


def new_id() -> str:
    """An opaque, unguessable id (rooms are named by clients; messages get these)."""
    return uuid.uuid4().hex


def to_ms(seconds: float) -> int:
    return round(seconds * 1000)


_last_second: list[Any] = [None, ""]  # [seconds, "YYYY-MM-DDTHH:MM:SS."] of the last call


def iso(ms: int) -> str:
    """``2024-05-01T12:00:00.123Z``: ISO-8601 UTC with milliseconds, as EVENTS.md asks."""
    seconds, millis = divmod(ms, 1000)
    if _last_second[0] != seconds:  # messages come many per second: format that part once
        _last_second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))]
    return f"{_last_second[1]}{millis:03d}Z"


def parse_iso(text: str) -> int:
    """Milliseconds of an ISO-8601 timestamp; a naive one is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ClientError("before: must be a message id or an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_ms(moment.timestamp())


@dataclass(frozen=True, slots=True)
class Room:
    """A managed room of namespace ``/``; persisted, membership lives elsewhere (memory)."""

    id: str
    name: str
    private: bool
    password_hash: str | None
    max_users: int
    created_ms: int
    creator: str

    def summary(self, user_count: int) -> dict[str, Any]:
        """The ``get rooms`` entry."""
        return {
            "id": self.id,
            "name": self.name,
            "userCount": user_count,
            "maxUsers": self.max_users,
            "createdAt": iso(self.created_ms),
        }

    def info(self, members: list[Member], show_users: bool = True) -> dict[str, Any]:
        """``room info`` (and the stats entry, without ``users``)."""
        out = self.summary(len(members))
        out["isPrivate"] = self.private
        if show_users:
            out["users"] = [m.payload() for m in members]
        return out


@dataclass(frozen=True, slots=True)
class Member:
    """One socket in a managed room, with what others are shown about it."""

    sid: str
    user_id: str | None
    username: str
    #: Where it is connected now, and whether it may come back elsewhere: an instance that
    #: holds the socket only as a member of its rooms (not in its registry) goes by these.
    gateway: str = ""
    recoverable: bool = False

    @property
    def identity(self) -> str:
        return self.user_id if self.user_id is not None else self.sid

    def payload(self) -> dict[str, Any]:
        """A ``users`` entry, shaped like ``get online users``' entries."""
        return {"id": self.identity, "username": self.username, "socketId": self.sid}


@dataclass(frozen=True, slots=True)
class SocketEntry:
    """One connected namespace socket, anywhere in the cluster (the registry's row)."""

    sid: str
    ns: str
    gateway: str
    user_id: str | None
    username: str
    connected_at: float
    transport: str = ""
    #: Its namespace has connection state recovery: when its gateway is lost, it departs
    #: only after ``recovery_grace`` (it may be back elsewhere by then).
    recoverable: bool = False

    @property
    def identity(self) -> str:
        """Who presence is about: the user, or the socket itself when anonymous."""
        return self.user_id if self.user_id is not None else self.sid

    def member(self) -> Member:
        return Member(self.sid, self.user_id, self.username, self.gateway, self.recoverable)


@dataclass(frozen=True, slots=True)
class Message:
    """A saved message: a chat line (to a room or a namespace) or a private message."""

    id: str
    namespace: str
    room: str | None
    sender: str
    recipient: str | None
    username: str
    content: str
    type: str
    ts_ms: int
    #: Its number in its room (1, 2, 3...: :mod:`.numbering`); None for a message to a
    #: whole namespace or a private one, which no single owner orders.
    seq: int | None = None

    def payload(self) -> dict[str, Any]:
        """``chat message`` / ``private message`` as EVENTS.md shapes them, and ``seq``."""
        if self.type == PRIVATE:
            return {
                "id": self.id,
                "from": self.sender,
                "to": self.recipient,
                "content": self.content,
                "type": PRIVATE,
                "timestamp": iso(self.ts_ms),
            }
        return {
            "id": self.id,
            "from": self.sender,
            "username": self.username,
            "content": self.content,
            "type": self.type,
            "roomId": self.room,
            "timestamp": iso(self.ts_ms),
            "seq": self.seq,
        }
