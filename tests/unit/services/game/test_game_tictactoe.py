"""The pure tic-tac-toe model: whole games, every illegal action, rematch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from switchboard.services.game.tictactoe import EMPTY, IllegalAction, TicTacToe


@contextlib.contextmanager
def refused(error: str) -> Iterator[None]:
    """Expect IllegalAction with exactly ``error`` as its text."""
    with pytest.raises(IllegalAction) as info:
        yield
    assert str(info.value) == error


def seated() -> TicTacToe:
    game, role_a = TicTacToe().join("alice")
    game, role_b = game.join("bob")
    assert (role_a, role_b) == ("X", "O")
    return game


def play(game: TicTacToe, *cells: int) -> TicTacToe:
    """Alternate moves, X first, by whoever holds the seat whose turn it is."""
    for cell in cells:
        player = game.x if game.turn == "X" else game.o
        assert player is not None
        game = game.move(player, cell)
    return game


def test_seats_in_join_order_then_spectators() -> None:
    game = seated()
    game, role = game.join("carol")
    assert role == "spectator" and (game.x, game.o) == ("alice", "bob")
    again, role = game.join("bob")
    assert role == "O" and again is game  # joining again keeps the seat


def test_x_wins_on_a_row() -> None:
    game = play(seated(), 0, 3, 1, 4, 2)
    assert (game.winner, game.line, game.turn, game.status) == ("X", (0, 1, 2), None, "won")
    assert game.over and not game.draw and game.move_count == 5


def test_o_wins_on_a_diagonal() -> None:
    game = play(seated(), 0, 2, 1, 4, 8, 6)
    assert (game.winner, game.line, game.status) == ("O", (2, 4, 6), "won")


def test_draw_when_the_board_fills_without_a_line() -> None:
    # X O X / X O O / O X X
    game = play(seated(), 0, 1, 2, 4, 3, 5, 7, 6, 8)
    assert game.board == ("X", "O", "X", "X", "O", "O", "O", "X", "X")
    assert (game.draw, game.winner, game.line, game.turn, game.status) == (
        True, None, (), None, "draw")


def test_a_win_on_the_last_cell_is_a_win_not_a_draw() -> None:
    # X O X / O X O / O X X: X's ninth move (8) completes the diagonal 0-4-8
    game = play(seated(), 0, 1, 2, 3, 4, 6, 7, 5, 8)
    assert game.move_count == 9
    assert (game.winner, game.line, game.draw) == ("X", (0, 4, 8), False)


def test_the_turn_alternates() -> None:
    game = seated()
    assert game.turn == "X"
    game = game.move("alice", 4)
    assert game.turn == "O"
    assert game.move("bob", 0).turn == "X"


@pytest.mark.parametrize(
    ("game", "player", "cell", "error"),
    [
        (seated(), "carol", 0, "you are not a player in this game"),
        (seated(), "bob", 0, "not your turn"),
        (seated().move("alice", 4), "bob", 4, "cell already taken"),
        (seated(), "alice", 9, "cell must be 0..8"),
        (seated(), "alice", -1, "cell must be 0..8"),
        (seated(), "alice", "4", "cell must be 0..8"),
        (seated(), "alice", None, "cell must be 0..8"),
        (seated(), "alice", True, "cell must be 0..8"),
        (seated(), "alice", 1.0, "cell must be 0..8"),
        (play(seated(), 0, 3, 1, 4, 2), "bob", 5, "game is over"),
        (TicTacToe().join("alice")[0], "alice", 0, "waiting for an opponent"),
    ],
)
def test_illegal_moves(game: TicTacToe, player: str, cell: object, error: str) -> None:
    with refused(error):
        game.move(player, cell)


def test_rematch_swaps_seats_and_clears_the_board() -> None:
    won = play(seated(), 0, 3, 1, 4, 2)
    for asker in ("alice", "bob"):
        game = won.rematch(asker)
        assert (game.board, game.x, game.o, game.turn, game.status) == (
            EMPTY, "bob", "alice", "X", "playing")
    assert won.rematch("alice").move("bob", 4).board[4] == "X"  # the former O now starts


def test_illegal_rematches() -> None:
    with refused("game is not over yet"):
        seated().move("alice", 0).rematch("bob")
    with refused("you are not a player in this game"):
        play(seated(), 0, 3, 1, 4, 2).rematch("carol")


def test_leaving_opens_the_seat_and_keeps_the_board() -> None:
    game = seated().move("alice", 4)
    left = game.leave("bob")
    assert (left.x, left.o, left.board, left.status) == ("alice", None, game.board, "waiting")
    with refused("waiting for an opponent"):
        left.move("alice", 0)
    taken, role = left.join("carol")
    assert role == "O" and taken.move("carol", 0).board[0] == "O"
    assert game.leave("dave") is game


def test_wire_form() -> None:
    game = play(seated(), 0, 3, 1, 4, 2)
    assert game.as_dict() == {
        "board": ["X", "X", "X", "O", "O", None, None, None, None],
        "turn": None,
        "players": {"X": "alice", "O": "bob"},
        "winner": "X",
        "draw": False,
        "line": [0, 1, 2],
        "moveCount": 5,
        "status": "won",
    }


def test_a_board_must_be_nine_marks() -> None:
    with pytest.raises(ValueError):
        TicTacToe(board=(None,) * 8)
    with pytest.raises(ValueError):
        TicTacToe(board=("Z",) + (None,) * 8)  # type: ignore[arg-type]
