"""The recovery service: connection state recovery (Socket.IO 4.6) outside the gateways, so
a client whose gateway crashed recovers on another (docs/recovery.md)."""

from __future__ import annotations

from switchboard.shared.publisher import Publisher

from .config import Config
from .service import RecoveryService

__all__ = ["Config", "RecoveryService", "create"]


def create(config: Config, publisher: Publisher) -> RecoveryService:
    return RecoveryService(publisher, config)
