"""Where the stateful services keep what they persist, as one setting they share.

``sqlite`` (the default): each instance its own file on its own disk (``--room-db``,
``--moderation-db``), right for one host. A PostgreSQL URL: one database every instance and
service shares, for several hosts (``docs/storage.md``). The room and moderation services
declare these settings again with :func:`~switchboard.shared.config.setting_of`, so one
``SWITCHBOARD_STORE`` sets both.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared import checks
from switchboard.shared.config import setting
from switchboard.shared.errors import ConfigError

SQLITE = "sqlite"


@dataclass(frozen=True)
class StoreConfig:
    store: str = setting(
        SQLITE,
        "Where rooms, history, bans and mutes are kept: 'sqlite' (each instance its own "
        "file: --room-db, --moderation-db) or a PostgreSQL URL that every instance shares, "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (query parameters such as "
        "?sslmode=require or ?search_path=chat are passed on).",
        check=checks.store,
    )
    store_pool_size: int = setting(
        4, "PostgreSQL connections of one instance at most: one commits the writes, the "
        "others read history."
    )
    store_timeout: float = setting(
        5.0, "Seconds connecting to PostgreSQL, or one statement, may take before it fails "
        "(at start: exit 2; later: the sender gets 'internal error')."
    )

    def __post_init__(self) -> None:
        if self.store_pool_size < 2:
            raise ConfigError("--store-pool-size must be at least 2 (one connection "
                              "writes, the others read)")
        if self.store_timeout <= 0:
            raise ConfigError("--store-timeout must be more than 0 seconds")

    @property
    def postgresql(self) -> bool:
        return self.store != SQLITE

    @classmethod
    def of(cls, config: object) -> StoreConfig:
        """The store settings of a service's config, which declares them again."""
        return cls(config.store, config.store_pool_size,  # type: ignore[attr-defined]
                   config.store_timeout)  # type: ignore[attr-defined]
