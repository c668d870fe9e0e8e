"""Tic-tac-toe as a pure value: no I/O, no clock, no framework.

A :class:`TicTacToe` is a board plus two seats (X and O, held by player ids). Every action
returns a new value or raises :class:`IllegalAction` whose text is shown to the player as is.
Everything else (whose turn, winner, winning line, draw) is derived from the board: X always
moves first, so the turn is X after an even number of moves.

Rules beyond the board:
- Seats are taken in join order: the first player is X, the second O, later ones spectate.
  Joining again returns the seat already held. A freed seat goes to the next joiner.
- Moves need both seats filled (``waiting for an opponent``).
- Rematch: once a game is over, either player may ask; seats swap (so the other player
  starts) and the board is cleared.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

Mark = Literal["X", "O"]
Role = Literal["X", "O", "spectator"]
Cell = Mark | None

SIZE = 9
EMPTY: tuple[Cell, ...] = (None,) * SIZE
LINES: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2), (3, 4, 5), (6, 7, 8),  # rows
    (0, 3, 6), (1, 4, 7), (2, 5, 8),  # columns
    (0, 4, 8), (2, 4, 6),  # diagonals
)


class IllegalAction(ValueError):
    """An action the rules refuse; ``str(exc)`` is a short text for the player."""


@dataclass(frozen=True, slots=True)
class TicTacToe:
    """One game: cells 0..8 row by row, and the player ids seated as X and O."""

    board: tuple[Cell, ...] = EMPTY
    x: str | None = None
    o: str | None = None

    def __post_init__(self) -> None:
        if len(self.board) != SIZE or any(c not in ("X", "O", None) for c in self.board):
            raise ValueError("board must be 9 cells of 'X', 'O' or None")

    # -- derived state --------------------------------------------------------------------
    @property
    def move_count(self) -> int:
        return sum(cell is not None for cell in self.board)

    @property
    def line(self) -> tuple[int, ...]:
        """The winning cells, or () while nobody has three in a row."""
        for a, b, c in LINES:
            if self.board[a] is not None and self.board[a] == self.board[b] == self.board[c]:
                return (a, b, c)
        return ()

    @property
    def winner(self) -> Mark | None:
        line = self.line
        return self.board[line[0]] if line else None

    @property
    def draw(self) -> bool:
        return self.move_count == SIZE and self.winner is None

    @property
    def over(self) -> bool:
        return self.winner is not None or self.draw

    @property
    def turn(self) -> Mark | None:
        """Who moves next; None once the game is over."""
        if self.over:
            return None
        return "X" if self.move_count % 2 == 0 else "O"

    @property
    def status(self) -> Literal["waiting", "playing", "won", "draw"]:
        if self.winner is not None:
            return "won"
        if self.draw:
            return "draw"
        return "playing" if self.x is not None and self.o is not None else "waiting"

    def role_of(self, player: str) -> Role:
        if player == self.x:
            return "X"
        if player == self.o:
            return "O"
        return "spectator"

    # -- actions --------------------------------------------------------------------------
    def join(self, player: str) -> tuple[TicTacToe, Role]:
        """Seat ``player`` in the first free seat (X, then O), or make it a spectator."""
        role = self.role_of(player)
        if role != "spectator":
            return self, role
        if self.x is None:
            return replace(self, x=player), "X"
        if self.o is None:
            return replace(self, o=player), "O"
        return self, "spectator"

    def leave(self, player: str) -> TicTacToe:
        """Free ``player``'s seat (the board stays; the next joiner takes the seat)."""
        role = self.role_of(player)
        if role == "X":
            return replace(self, x=None)
        if role == "O":
            return replace(self, o=None)
        return self

    def move(self, player: str, cell: Any) -> TicTacToe:
        """``player`` marks ``cell``; raises :class:`IllegalAction` with the reason if not."""
        role = self.role_of(player)
        if role == "spectator":
            raise IllegalAction("you are not a player in this game")
        if self.over:
            raise IllegalAction("game is over")
        if self.x is None or self.o is None:
            raise IllegalAction("waiting for an opponent")
        if role != self.turn:
            raise IllegalAction("not your turn")
        if isinstance(cell, bool) or not isinstance(cell, int) or not 0 <= cell < SIZE:
            raise IllegalAction("cell must be 0..8")
        if self.board[cell] is not None:
            raise IllegalAction("cell already taken")
        board = list(self.board)
        board[cell] = role
        return replace(self, board=tuple(board))

    def rematch(self, player: str) -> TicTacToe:
        """A new round once this one is over: seats swap, the board is cleared."""
        if self.role_of(player) == "spectator":
            raise IllegalAction("you are not a player in this game")
        if not self.over:
            raise IllegalAction("game is not over yet")
        return TicTacToe(EMPTY, x=self.o, o=self.x)

    # -- wire form ------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """Plain data (msgpack/JSON-ready), the body of a ``game update``."""
        return {
            "board": list(self.board),
            "turn": self.turn,
            "players": {"X": self.x, "O": self.o},
            "winner": self.winner,
            "draw": self.draw,
            "line": list(self.line),
            "moveCount": self.move_count,
            "status": self.status,
        }
