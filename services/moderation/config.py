"""Settings of the moderation service (each also an option and a ``SWITCHBOARD_*`` variable).

A limit of 0 turns that rate limit off.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared import checks
from switchboard.shared.config import setting, setting_of
from switchboard.shared.store import StoreConfig


@dataclass(frozen=True)
class Config:
    store: str = setting_of(StoreConfig, "store")
    store_pool_size: int = setting_of(StoreConfig, "store_pool_size")
    store_timeout: float = setting_of(StoreConfig, "store_timeout")
    moderation_db: str = setting(
        "var/moderation.sqlite3",
        "With --store sqlite: the SQLite file (WAL) holding bans and mutes across restarts.",
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

    def __post_init__(self) -> None:
        StoreConfig.of(self)  # store settings out of range are refused at start
