"""The game service (namespace ``/game``): tic-tac-toe in rooms ``game:<gameId>``.

How an application adds its own service: a pure model (:mod:`.tictactoe`), a ``Config``
(:mod:`.config`), a :class:`~shared.service.Service` subclass (:mod:`.service`), and
``create`` for ``switchboard service game``.
"""

from __future__ import annotations

from switchboard.shared.publisher import Publisher

from .config import Config
from .service import GameService

__all__ = ["Config", "GameService", "create"]


def create(config: Config, publisher: Publisher) -> GameService:
    return GameService(publisher, config)
