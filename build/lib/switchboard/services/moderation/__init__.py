"""The moderation service: validation, sanitising, rate limits, bans and mutes.

``create(config, publisher)`` builds the service; see :mod:`.service` for what it does and
:mod:`.schemas` for every event's payload rules and canonical shape.
"""

from __future__ import annotations

from switchboard.shared.publisher import Publisher

from .config import Config
from .ratelimit import SlidingWindow
from .sanitize import Sanitizer
from .schemas import EVENTS, Cleaner, Limits, PayloadError
from .service import ModerationService
from .store import Ban, ModerationStore, Mute

__all__ = [
    "EVENTS",
    "Ban",
    "Cleaner",
    "Config",
    "Limits",
    "ModerationService",
    "ModerationStore",
    "Mute",
    "PayloadError",
    "Sanitizer",
    "SlidingWindow",
    "create",
]


def create(config: Config, publisher: Publisher) -> ModerationService:
    return ModerationService(publisher, config)
