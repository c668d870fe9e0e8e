"""Settings of the game service (each also an option and a ``SWITCHBOARD_*`` variable)."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared.config import setting


@dataclass(frozen=True)
class Config:
    max_games: int = setting(
        10_000, "Most games held in memory at once; creating more is refused until some end"
    )
    max_games_per_socket: int = setting(
        20, "Most games one socket may have joined at once"
    )
    max_game_id: int = setting(50, "Longest game id, characters.")
    game_idle_ttl: float = setting(
        3600.0, "Seconds after the last join or action before a game is forgotten"
    )
