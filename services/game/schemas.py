"""Payload schemas of the events the game service owns (see :mod:`shared.schema`).

=========================  ===========================================================
``/game`` ``join game``    ``[gameId]``  (``{gameId}`` accepted too)
``game action``            ``[{gameId, ...}]``  (other fields untouched: the game judges them)
=========================  ===========================================================
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict

from switchboard.shared.schema import EventSchema, Payload, identifier

#: Game ids follow the rules of room ids (their room is ``game:<id>``); their length limit is
#: the game service's ``--max-game-id`` (it fills ``Limits.room_id``).
GameId = Annotated[str, identifier("room_id")]


class JoinGame(Payload):
    gameId: GameId


class GameAction(Payload):
    # The move itself is the game's to judge: pass every other field through.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    gameId: GameId


JOIN_GAME = EventSchema(JoinGame, "a gameId", "gameId", flatten=True)
GAME_ACTION = EventSchema(GameAction, "{gameId, ...}", keep_none=True)
