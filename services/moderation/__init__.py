"""The moderation service: rate limits, bans, mutes and the admin actions on them.

``create(config, publisher)`` builds the service; see :mod:`.service` for what it does and
:mod:`.schemas` for its admin events' payloads.
"""

from __future__ import annotations

from switchboard.shared.publisher import Publisher

from .config import Config
from .service import ModerationService
from .store import Ban, ModerationStore, Mute, open_store

__all__ = [
    "Ban",
    "Config",
    "ModerationService",
    "ModerationStore",
    "Mute",
    "create",
    "open_store",
]


def create(config: Config, publisher: Publisher) -> ModerationService:
    return ModerationService(publisher, config)
