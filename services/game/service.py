"""The game service: namespace ``/game``, tic-tac-toe tables in rooms ``game:<gameId>``.

The example of an application service: the rules live in :mod:`services.game.tictactoe` (a
pure value); this class only parses requests, keeps the tables, and publishes.

Events (see EVENTS.md, namespace ``/game``):
- ``join game`` gameId → the socket joins room ``game:<gameId>`` (reply ``joins``) and gets a
  seat (X, then O) or watches; ack ``{success, gameId, role, state}``; ``player joined``
  ``{playerId, gameId}`` to the others in the room and ``game update`` state to all.
- ``game action`` ``{gameId, action: "move", cell}`` or ``{gameId, action: "rematch"}`` →
  ``game update`` state to all in the room; ack ``{success, state}``; illegal → failed ack.
- disconnect → ``player disconnected`` socketId to the namespace.

Choices:
- A player is ``session.user_id`` (signed-in) or else the socket id (anonymous), so a
  signed-in user keeps their seat across tabs and reconnections.
- When a player's last socket leaves (disconnect, or its gateway is lost), its seat opens and
  the board stays: the game waits (``status: "waiting"``) and the next joiner takes the seat
  and plays on. A table with no sockets left is deleted.
- Games are ephemeral, held in memory only, bounded by ``max_games`` and expired after
  ``game_idle_ttl`` without joins or actions (members are told to leave the room). Expiry is
  lazy, on each join/action: memory only grows through requests, so no timer is needed.
- The joiner's own ``game update`` may or may not reach it (its room join is applied when the
  reply arrives, after the publication); the ack carries the state, so it never needs to.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switchboard.shared import topics
from switchboard.shared.envelope import Reply, Request, Session, fail, reply_to
from switchboard.shared.publisher import Publisher
from switchboard.shared.schema import Cleaner, Limits
from switchboard.shared.service import Service, on_connect, on_disconnect, on_event

from . import schemas
from .config import Config
from .tictactoe import IllegalAction, TicTacToe

NS = "/game"


def room_of(game_id: str) -> str:
    return f"game:{game_id}"


def player_of(session: Session) -> str:
    """Signed-in users play as their user id, anonymous sockets as their socket id."""
    return session.user_id or session.sid


@dataclass(slots=True)
class Table:
    """A game and the sockets in its room (socket id → player id)."""

    game: TicTacToe = field(default_factory=TicTacToe)
    members: dict[str, str] = field(default_factory=dict)
    touched: float = 0.0


class GameService(Service):
    """Tic-tac-toe for ``/game``; state in memory (see the module docstring for the rules)."""

    name = "game"

    def __init__(
        self,
        publisher: Publisher,
        config: Config | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(publisher)
        self.config = config or Config()
        # Game ids follow the rules of room ids, with their own length limit.
        self.cleaner = Cleaner(Limits(room_id=self.config.max_game_id))
        self.clock = clock
        #: Game id → table, least recently active first (so expiry looks only at the front).
        self.tables: OrderedDict[str, Table] = OrderedDict()
        #: Socket id → ids of the games it joined.
        self.sockets: dict[str, set[str]] = {}

    # -- handlers -------------------------------------------------------------------------
    @on_connect(NS, priority=40)
    async def connect(self, request: Request) -> Reply | None:
        """Everyone may enter ``/game``, signed in or not (auth's policy allows anonymous)."""
        return None

    @on_event(NS, "join game", schemas.JOIN_GAME)
    async def join_game(self, request: Request) -> Reply:
        session = _session(request)
        game_id = str(request.args[0])
        self.expire()
        joined = self.sockets.get(session.sid, set())
        table = self.tables.get(game_id)
        if game_id not in joined and len(joined) >= self.config.max_games_per_socket:
            return fail(request, f"too many games: at most {self.config.max_games_per_socket}")
        if table is None:
            if len(self.tables) >= self.config.max_games:
                return fail(request, "too many games in progress, try again later")
            table = self.tables[game_id] = Table()
        player = player_of(session)
        table.game, role = table.game.join(player)
        if session.sid not in table.members:
            table.members[session.sid] = player
            self.sockets.setdefault(session.sid, set()).add(game_id)
            self.publisher.emit_room(NS, room_of(game_id), "player joined",
                                     [{"playerId": player, "gameId": game_id}],
                                     exclude=[session.sid])
        self._touch(game_id, table)
        state = self._publish(game_id, table)
        ack = {"success": True, "gameId": game_id, "role": role, "state": state}
        return reply_to(request, ack=[ack], joins=(room_of(game_id),))

    @on_event(NS, "game action", schemas.GAME_ACTION)
    async def game_action(self, request: Request) -> Reply:
        session = _session(request)
        payload = request.args[0]
        game_id = str(payload["gameId"])
        try:
            self.expire()
            table = self.tables.get(game_id)
            if table is None:
                raise IllegalAction("game not found")
            player = player_of(session)
            action = payload.get("action")
            if action == "move":
                table.game = table.game.move(player, payload.get("cell"))
            elif action == "rematch":
                table.game = table.game.rematch(player)
            else:
                raise IllegalAction('action: must be "move" or "rematch"')
        except IllegalAction as exc:
            return fail(request, str(exc))
        self._touch(game_id, table)
        return reply_to(request, ack=[{"success": True, "state": self._publish(game_id, table)}])

    @on_disconnect(NS)
    async def disconnect(self, request: Request) -> None:
        self._drop_socket(_session(request).sid)

    # No SYNC route: games live only in this process's memory, so after a restart they are
    # gone and a gateway's list of room members cannot bring them back. Players get
    # ``game not found`` and join again (which starts a fresh game).

    async def gateway_lost(self, gateway_id: str) -> None:
        """Its sockets will never send DISCONNECT: treat each as disconnected now."""
        for sid in [s for s in self.sockets if topics.gateway_of(s) == gateway_id]:
            self._drop_socket(sid)

    # -- bookkeeping ----------------------------------------------------------------------
    def expire(self) -> None:
        """Forget games idle for ``game_idle_ttl``; their members leave the room."""
        cutoff = self.clock() - self.config.game_idle_ttl
        while self.tables:
            game_id, table = next(iter(self.tables.items()))
            if table.touched > cutoff:
                break
            del self.tables[game_id]
            for sid in table.members:
                self._forget_membership(sid, game_id)
                self.publisher.leave(sid, NS, room_of(game_id))

    def _touch(self, game_id: str, table: Table) -> None:
        """A join or an action: the table is active now (and moves to the back of the line)."""
        table.touched = self.clock()
        self.tables.move_to_end(game_id)

    def _publish(self, game_id: str, table: Table) -> dict[str, Any]:
        """Send the table's state to everyone in its room (``game update``); returns it."""
        state = {"gameId": game_id, **table.game.as_dict()}
        self.publisher.emit_room(NS, room_of(game_id), "game update", [state])
        return state

    def _drop_socket(self, sid: str) -> None:
        """A socket left ``/game``: tell the namespace, free its seats, drop empty tables."""
        self.publisher.emit_namespace(NS, "player disconnected", [sid])
        for game_id in self.sockets.pop(sid, set()):
            table = self.tables.get(game_id)
            if table is None:
                continue
            player = table.members.pop(sid)
            if not table.members:
                del self.tables[game_id]
            elif player not in table.members.values():  # its last socket in this game
                game = table.game.leave(player)
                if game != table.game:
                    table.game = game
                    self._publish(game_id, table)

    def _forget_membership(self, sid: str, game_id: str) -> None:
        games = self.sockets.get(sid)
        if games is not None:
            games.discard(game_id)
            if not games:
                del self.sockets[sid]


def _session(request: Request) -> Session:
    if request.session is None:  # gateways always send one with EVENT and DISCONNECT
        raise ValueError(f"{request.kind.name} request without a session")
    return request.session
