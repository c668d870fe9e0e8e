"""The recovery service: connection state recovery (Socket.IO 4.6) outside the gateways, so
a client whose gateway crashed recovers on another (docs/recovery.md). Only :mod:`.config` is
imported with the package (``switchboard up`` declares its options from it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import Config

if TYPE_CHECKING:
    from switchboard.shared.publisher import Publisher

    from .service import RecoveryService

__all__ = ["Config", "RecoveryService", "create"]


def __getattr__(name: str) -> Any:
    if name == "RecoveryService":
        from .service import RecoveryService

        return RecoveryService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def create(config: Config, publisher: Publisher) -> RecoveryService:
    from .service import RecoveryService

    return RecoveryService(publisher, config)
