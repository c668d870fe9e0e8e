"""Settings of the moderation service (each also an option and a ``SWITCHBOARD_*`` variable).

A limit of 0 turns that rate limit off. Payload size limits mirror ``EVENTS.md``'s defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared import checks
from switchboard.shared.config import setting


def split_list(items: str | tuple[str, ...]) -> tuple[str, ...]:
    """Entries of a comma-separated setting (or of a repeatable one, each maybe comma-separated).

    A single string rather than click's ``multiple``: click splits an env variable of a
    multiple option on whitespace, which would break phrases such as ``heck no``.
    """
    parts = (items,) if isinstance(items, str) else items
    return tuple(p.strip() for item in parts for p in item.split(",") if p.strip())


@dataclass(frozen=True)
class Config:
    moderation_db: str = setting(
        "var/moderation.sqlite3", "SQLite file (WAL) holding bans and mutes across restarts."
    )
    banned_words: str = setting(
        "", "Comma-separated words or phrases replaced by *** in user text, "
        "case-insensitively, whole words only (e.g. 'darn,heck no')."
    )
    event_limit: int = setting(20, "Events one socket may send per event window (0: off).")
    user_event_limit: int = setting(
        20, "Events one user may send per event window across all its sockets (0: off)."
    )
    event_window: float = setting(10.0, "Seconds of the sliding event rate-limit window.")
    connect_limit: int = setting(
        50, "New connections (namespace CONNECTs) per connect window per user with a valid "
        "token, or per client address for anonymous ones (0: off)."
    )
    connect_window: float = setting(60.0, "Seconds of the sliding connect rate-limit window.")
    ban_namespaces: tuple[str, ...] = setting(
        ("/", "/chat", "/game", "/admin"),
        "Namespaces whose sockets of a banned user are disconnected.", check=checks.namespace,
    )
    max_content: int = setting(1000, "Longest chat/room/private/broadcast message, characters.")
    max_username: int = setting(50, "Longest display name, characters.")
    max_room_id: int = setting(50, "Longest room id (and game id), characters.")
    max_room_name: int = setting(100, "Longest room name, characters.")
    max_room_users: int = setting(1000, "Largest maxUsers a room may be created with.")
    max_history: int = setting(100, "Most messages one get history request may ask for.")
