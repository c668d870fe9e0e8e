"""The room service: managed rooms, presence, the socket registry and message history.

See :mod:`.service` for what it owns and the choices it makes where the contract is open.
"""

from __future__ import annotations

from switchboard.shared.publisher import Publisher

from .config import Config
from .service import RoomService

__all__ = ["Config", "RoomService", "create"]


def create(config: Config, publisher: Publisher) -> RoomService:
    return RoomService(publisher, config)
