"""GameService handlers called directly, with a MemoryPublisher and an injected clock."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from switchboard.services.game import Config, GameService, create
from switchboard.shared import topics
from switchboard.shared.envelope import (
    PubKind,
    Publication,
    Reply,
    Request,
    RequestKind,
    Route,
    Session,
    SocketState,
)
from switchboard.shared.publisher import MemoryPublisher
from switchboard.shared.testing import ServiceHarness

NS = "/game"
ROOM = topics.room(NS, "game:g1")
_ids = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sess(n: int, gateway: str = "gw1", user_id: str | None = None) -> Session:
    return Session(sid=f"{gateway}.s{n}", ns=NS, gateway=gateway, user_id=user_id)


def request(kind: RequestKind, session: Session, event: str = "", *args: Any) -> Request:
    return Request(kind, next(_ids), gateway=session.gateway, session=session, event=event,
                   args=list(args))


class Harness(ServiceHarness[GameService]):
    """The game service through the real dispatch, with this file's conveniences."""

    def __init__(self, **config: Any) -> None:
        self.pub = MemoryPublisher()
        self.clock = Clock()
        self.game = GameService(self.pub, Config(**config), clock=self.clock)
        super().__init__(self.game)

    async def send(self, session: Session, event: str, *args: Any) -> Reply:
        return await self.event(session, event, *args)

    async def join(self, session: Session, game_id: Any = "g1") -> Reply:
        return await self.send(session, "join game", game_id)

    async def act(self, session: Session, **payload: Any) -> Reply:
        return await self.send(session, "game action", {"gameId": "g1", **payload})


    def take(self) -> list[tuple[bytes, Publication]]:
        out, self.pub.published = self.pub.published, []
        return out


def ack(reply: Reply) -> dict[str, Any]:
    assert reply.ok, reply.error
    assert reply.ack is not None and len(reply.ack) == 1
    result: dict[str, Any] = reply.ack[0]
    assert result["success"] is True
    return result


async def seated(h: Harness) -> tuple[Session, Session]:
    a, b = sess(1), sess(2)
    await h.join(a)
    await h.join(b)
    h.take()
    return a, b


# -- connect and routes ------------------------------------------------------------------
async def test_declares_the_namespace_and_accepts_anonymous_sockets() -> None:
    h = Harness()
    routes = set(h.game.info().routes)
    assert routes >= {
        Route(RequestKind.CONNECT, NS, "", 40),
        Route(RequestKind.EVENT, NS, "join game"),
        Route(RequestKind.EVENT, NS, "game action"),
        Route(RequestKind.DISCONNECT, NS),
    }
    assert h.game.info().name == "game"
    connect = request(RequestKind.CONNECT, sess(1))
    assert await h.game.connect(connect) is None  # accepted, nothing to add
    assert h.take() == []


def test_create_builds_the_service_from_its_config() -> None:
    service = create(Config(max_games=3), MemoryPublisher())
    assert isinstance(service, GameService) and service.config.max_games == 3


# -- join game ---------------------------------------------------------------------------
async def test_join_seats_x_then_o_then_spectators_and_publishes() -> None:
    h = Harness()
    a, b, c = sess(1), sess(2), sess(3)
    roles = []
    for s in (a, b, c):
        reply = await h.join(s)
        result = ack(reply)
        assert reply.joins == ("game:g1",)
        assert result["gameId"] == "g1"
        roles.append(result["role"])
        published = h.take()
        assert [topic for topic, _ in published] == [ROOM, ROOM]
        joined, update = (p for _, p in published)
        assert (joined.kind, joined.ns, joined.room, joined.event) == (
            PubKind.EMIT, NS, "game:g1", "player joined")
        assert joined.args == [{"playerId": s.sid, "gameId": "g1"}]
        assert joined.exclude == (s.sid,)
        assert (update.event, update.room, update.exclude) == ("game update", "game:g1", ())
        assert update.args == [result["state"]]
    assert roles == ["X", "O", "spectator"]
    state = ack(await h.join(c))["state"]
    assert state == {
        "gameId": "g1", "board": [None] * 9, "turn": "X",
        "players": {"X": a.sid, "O": b.sid}, "winner": None, "draw": False, "line": [],
        "moveCount": 0, "status": "playing",
    }


async def test_joining_again_keeps_the_seat_and_announces_nobody() -> None:
    h = Harness()
    a = sess(1)
    await h.join(a)
    h.take()
    assert ack(await h.join(a))["role"] == "X"
    assert [p.event for _, p in h.take()] == ["game update"]


async def test_a_signed_in_user_plays_as_its_user_id_from_every_socket() -> None:
    h = Harness()
    tab1, tab2, bob = sess(1, user_id="u-ann"), sess(2, user_id="u-ann"), sess(3)
    assert ack(await h.join(tab1))["role"] == "X"
    assert ack(await h.join(tab2))["role"] == "X"
    assert ack(await h.join(bob))["role"] == "O"
    ack(await h.act(tab2, action="move", cell=4))  # the other tab may move for the user
    await h.disconnect(tab1)
    assert h.game.tables["g1"].game.x == "u-ann"  # another socket of the user is still there
    await h.disconnect(tab2)
    assert h.game.tables["g1"].game.x is None


@pytest.mark.parametrize(("args", "error"), [
    ([], "gameId: required"), ([None], "gameId: required"),
    ([""], "gameId: must be 1..50 characters"), (["x" * 51], "gameId: must be 1..50 characters"),
    ([5], "gameId: must be a string"), ([["g1"]], "gameId: must be a string"),
    (["a\x00b"], "gameId: use letters, digits, spaces and - _ . # @ + only"),
    (["a\nb"], "gameId: use letters, digits, spaces and - _ . # @ + only"),
    ([{"id": "g1"}], "gameId: required"),
])
async def test_join_refuses_a_bad_game_id(args: list[Any], error: str) -> None:
    h = Harness()
    reply = await h.send(sess(1), "join game", *args)
    assert (reply.ok, reply.error) == (False, error)
    assert h.take() == [] and h.game.tables == {}


async def test_join_accepts_an_object_and_fifty_characters() -> None:
    h = Harness()
    assert ack(await h.join(sess(1), {"gameId": "g1"}))["gameId"] == "g1"
    assert ack(await h.join(sess(1), "y" * 50))["gameId"] == "y" * 50


async def test_game_count_is_bounded() -> None:
    h = Harness(max_games=2, max_games_per_socket=2)
    s = sess(1)
    ack(await h.join(s, "a"))
    ack(await h.join(s, "b"))
    reply = await h.join(s, "c")
    assert (reply.ok, reply.error) == (False, "too many games: at most 2")
    ack(await h.join(s, "b"))  # a game it already joined is fine
    reply = await h.join(sess(2), "c")
    assert (reply.ok, reply.error) == (False, "too many games in progress, try again later")
    ack(await h.join(sess(2), "a"))  # joining an existing game is fine
    assert set(h.game.tables) == {"a", "b"}


# -- game action -------------------------------------------------------------------------
async def test_moves_update_everyone_in_the_room_until_a_win() -> None:
    h = Harness()
    a, b = await seated(h)
    for player, cell in [(a, 0), (b, 3), (a, 1), (b, 4), (a, 2)]:
        state = ack(await h.act(player, action="move", cell=cell))["state"]
        ((topic, update),) = h.take()
        assert topic == ROOM
        assert (update.event, update.args, update.exclude) == ("game update", [state], ())
    assert state == {
        "gameId": "g1", "board": ["X", "X", "X", "O", "O", None, None, None, None],
        "turn": None, "players": {"X": a.sid, "O": b.sid}, "winner": "X", "draw": False,
        "line": [0, 1, 2], "moveCount": 5, "status": "won",
    }


async def test_rematch_swaps_seats_and_clears_the_board() -> None:
    h = Harness()
    a, b = await seated(h)
    for player, cell in [(a, 0), (b, 3), (a, 1), (b, 4), (a, 2)]:
        ack(await h.act(player, action="move", cell=cell))
    h.take()
    state = ack(await h.act(b, action="rematch"))["state"]
    assert (state["board"], state["players"], state["turn"]) == (
        [None] * 9, {"X": b.sid, "O": a.sid}, "X")
    assert [p.args for _, p in h.take()] == [[state]]
    ack(await h.act(b, action="move", cell=8))


@pytest.mark.parametrize(
    ("payload", "who", "error"),
    [
        ({"action": "move", "cell": 0}, 2, "not your turn"),
        ({"action": "move", "cell": 0}, 3, "you are not a player in this game"),
        ({"action": "move", "cell": 9}, 1, "cell must be 0..8"),
        ({"action": "move"}, 1, "cell must be 0..8"),
        ({"action": "rematch"}, 1, "game is not over yet"),
        ({"action": "resign"}, 1, 'action: must be "move" or "rematch"'),
        ({}, 1, 'action: must be "move" or "rematch"'),
        ({"gameId": "nope", "action": "move", "cell": 0}, 1, "game not found"),
        ({"gameId": "", "action": "move", "cell": 0}, 1, "gameId: must be 1..50 characters"),
    ],
)
async def test_illegal_actions_fail_and_publish_nothing(
    payload: dict[str, Any], who: int, error: str
) -> None:
    h = Harness()
    await seated(h)
    await h.join(sess(3))
    h.take()
    reply = await h.act(sess(who), **payload)
    assert (reply.ok, reply.error, reply.ack) == (False, error, None)
    assert h.take() == []


async def test_taken_cells_and_finished_games_are_refused() -> None:
    h = Harness()
    a, b = await seated(h)
    ack(await h.act(a, action="move", cell=4))
    assert (await h.act(b, action="move", cell=4)).error == "cell already taken"
    for player, cell in [(b, 0), (a, 3), (b, 1), (a, 5)]:
        ack(await h.act(player, action="move", cell=cell))
    assert (await h.act(b, action="move", cell=8)).error == "game is over"


@pytest.mark.parametrize(("args", "error"), [
    ([], "gameId: required"), (["g1"], "payload: must be an object {gameId, ...}"),
    ([["g1", "move", 0]], "payload: must be an object {gameId, ...}")])
async def test_an_action_must_be_an_object(args: list[Any], error: str) -> None:
    h = Harness()
    reply = await h.send(sess(1), "game action", *args)
    assert (reply.ok, reply.error) == (False, error)


# -- leaving -----------------------------------------------------------------------------
async def test_disconnect_announces_it_and_opens_the_seat_for_the_next_joiner() -> None:
    h = Harness()
    a, b = await seated(h)
    watcher = sess(3)
    await h.join(watcher)
    ack(await h.act(a, action="move", cell=4))
    h.take()
    await h.disconnect(b)
    (t1, gone), (t2, update) = h.take()
    assert (t1, gone.event, gone.args, gone.room) == (
        topics.namespace(NS), "player disconnected", [b.sid], None)
    assert (t2, update.event) == (ROOM, "game update")
    assert update.args[0]["players"] == {"X": a.sid, "O": None}
    assert update.args[0]["status"] == "waiting"
    assert update.args[0]["board"][4] == "X"  # the board stays
    assert (await h.act(a, action="move", cell=0)).error == "waiting for an opponent"
    assert ack(await h.join(watcher))["role"] == "O"  # a spectator may take the open seat
    ack(await h.act(watcher, action="move", cell=0))
    assert b.sid not in h.game.sockets


async def test_a_spectator_leaving_changes_no_seat() -> None:
    h = Harness()
    await seated(h)
    await h.join(sess(3))
    h.take()
    await h.disconnect(sess(3))
    assert [p.event for _, p in h.take()] == ["player disconnected"]


async def test_the_last_socket_leaving_deletes_the_game() -> None:
    h = Harness()
    a, b = await seated(h)
    await h.disconnect(a)
    await h.disconnect(b)
    assert h.game.tables == {} and h.game.sockets == {}
    await h.disconnect(sess(9))  # never joined anything: still announced
    assert h.take()[-1][1].args == [sess(9).sid]


async def test_a_lost_gateway_drops_its_sockets_only() -> None:
    h = Harness()
    a, far = sess(1, gateway="gw1"), sess(2, gateway="gw2")
    await h.join(a)
    await h.join(far)
    await h.join(far, "other")
    h.take()
    await h.game.gateway_lost("gw2")
    published = [(t, p.event, p.args) for t, p in h.take()]
    assert published[0] == (topics.namespace(NS), "player disconnected", [far.sid])
    assert published[1][:2] == (ROOM, "game update")
    assert published[1][2][0]["players"] == {"X": a.sid, "O": None}
    assert set(h.game.tables) == {"g1"} and set(h.game.sockets) == {a.sid}
    await h.game.gateway_lost("gw2")  # nothing left of it
    assert h.take() == []


async def test_no_sync_route_so_requests_are_never_held_for_a_resync() -> None:
    """Games cannot be rebuilt from gateways' member lists, so the service declares no
    SYNC route: its runner then never holds a gateway's requests back for a resync."""
    h = Harness()
    sync = Request(RequestKind.SYNC, next(_ids), gateway="gw1",
                   sockets=(SocketState(sess(1), ("game:g1",)),))
    assert h.game.handler_for(sync) is None
    assert all(route.kind != RequestKind.SYNC for route in h.game.info().routes)


# -- expiry ------------------------------------------------------------------------------
async def test_idle_games_expire_and_their_members_leave_the_room() -> None:
    h = Harness(game_idle_ttl=60.0)
    a, b = await seated(h)
    await h.join(b, "busy")
    h.clock.now += 59.0
    ack(await h.act(a, action="move", cell=4))  # activity keeps g1 alive
    h.clock.now += 59.0
    ack(await h.join(sess(3), "new"))  # "busy" has been idle for 118 s
    assert list(h.game.tables) == ["g1", "new"]
    leaves = [(t, p.kind, p.sids, p.room) for t, p in h.take() if p.kind == PubKind.LEAVE]
    assert leaves == [(topics.socket(b.sid), PubKind.LEAVE, (b.sid,), "game:busy")]
    assert h.game.sockets[b.sid] == {"g1"}
    h.clock.now += 60.0
    assert (await h.act(a, action="move", cell=0)).error == "game not found"
    assert list(h.game.tables) == []
    assert h.game.sockets == {}
    await h.disconnect(a)  # its games are gone already: only the announcement
    assert [p.event for _, p in h.take()][-1] == "player disconnected"


async def test_expired_games_free_capacity() -> None:
    h = Harness(max_games=1, game_idle_ttl=10.0)
    ack(await h.join(sess(1), "a"))
    assert (await h.join(sess(2), "b")).error == "too many games in progress, try again later"
    h.clock.now += 10.0
    ack(await h.join(sess(2), "b"))
    assert list(h.game.tables) == ["b"]


async def test_the_game_id_limit_is_the_game_services_setting() -> None:
    harness = ServiceHarness(GameService(MemoryPublisher(), Config(max_game_id=3)))
    reply = await harness.event(sess(1), "join game", "abcd")
    assert (reply.ok, reply.error) == (False, "gameId: must be 1..3 characters")
    assert (await harness.event(sess(1), "join game", "abc")).ok
