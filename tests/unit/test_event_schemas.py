"""Payload rules: the schema every owner declares for its events, their error texts, and the
sanitiser."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.services.game.service import GameService
from switchboard.services.moderation.service import ModerationService
from switchboard.services.room.service import RoomService
from switchboard.shared.sanitize import Sanitizer, phrases, strip_html
from switchboard.shared.schema import Cleaner, Limits, PayloadError

#: Every owner's declarations: (namespace, event) → schema.
EVENTS = {key: schema for owner in (RoomService, GameService, ModerationService)
          for key, schema in owner.schemas().items()}
cleaner = Cleaner(sanitizer=Sanitizer(["darn", "heck no"]))


def clean(ns: str, event: str, *args: Any, by: Cleaner = cleaner) -> list[Any] | None:
    schema = EVENTS.get((ns, event))
    return None if schema is None else by.apply(schema, list(args))


def error(ns: str, event: str, *args: Any, by: Cleaner = cleaner) -> str:
    with pytest.raises(PayloadError) as info:
        clean(ns, event, *args, by=by)
    return info.value.message


# -- sanitising ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "plain"), [
    ("<img src=x onerror=alert(1)>hello", "hello"),
    ("<b>x</b>", "x"),
    ("<script>alert(1)</script>hi", "hi"),
    ("a < b & c > d", "a < b & c > d"),  # plain text survives as text
    ("tom &amp; jerry", "tom & jerry"),
    ("&lt;b&gt;x&lt;/b&gt;", "x"),  # escaped markup does not come back as markup
    ("&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;", ""),
    ("<p>one</p><p>two</p>", "onetwo"),
    ("<a href='javascript:alert(1)'>link</a>", "link"),
    ("line1\nline2", "line1\nline2"),
])
def test_strip_html(raw: str, plain: str) -> None:
    assert strip_html(raw).strip() == plain


def test_stripped_text_is_a_fixed_point() -> None:
    for raw in ("&amp;" * 20 + "lt;b&gt;", "<<b>b>x</b>", "<x<y>z>", "1 <2 >3"):
        once = strip_html(raw)
        assert strip_html(once) == once
        assert "<b>" not in once


def test_banned_words_whole_words_case_insensitive() -> None:
    s = Sanitizer(["darn", "heck no", "ass"])
    assert s.clean("Darn it, DARN!") == "*** it, ***!"
    assert s.clean("heck no, HECK NO") == "***, ***"
    assert s.clean("class assets ass") == "class assets ***"
    assert Sanitizer().clean("  darn  ") == "darn"


def test_control_characters_and_whitespace() -> None:
    assert Sanitizer().clean("  a\x00b\x07c\td \n") == "abc\td"


# -- root namespace -----------------------------------------------------------------------------

def test_chat_message() -> None:
    assert clean("/", "chat message", {"content": " <b>hi</b> darn ", "evil": 1}) == [
        {"content": "hi ***", "type": "text"}]
    assert clean("/", "chat message", {"content": "x", "roomId": "r1", "type": "image"}) == [
        {"content": "x", "roomId": "r1", "type": "image"}]
    assert clean("/", "chat message", "plain text") == [{"content": "plain text", "type": "text"}]
    assert clean("/", "chat message", {"content": "x", "roomId": None}) == [
        {"content": "x", "type": "text"}]


@pytest.mark.parametrize(("payload", "message"), [
    ({"content": ""}, "content: must be 1..1000 characters"),
    ({"content": "   "}, "content: must be 1..1000 characters"),
    ({"content": "x" * 1001}, "content: must be 1..1000 characters"),
    ({"content": "<b>" * 400 + "x" * 1001}, "content: must be 1..1000 characters"),
    ({"content": "<img src=x onerror=alert(1)>"},
     "content: must contain text (HTML and surrounding spaces removed)"),
    ({}, "content: required"),
    ({"content": None}, "content: required"),
    ({"content": 5}, "content: must be a string"),
    ({"content": "x", "type": "video"}, "type: must be text, image or file"),
    ({"content": "x", "roomId": ""}, "roomId: must be 1..50 characters"),
    ({"content": "x", "roomId": "user:bob"},
     "roomId: use letters, digits, spaces and - _ . # @ + only"),
    (42, "content: must be a string"),
])
def test_chat_message_errors(payload: Any, message: str) -> None:
    assert error("/", "chat message", payload) == message


def test_chat_message_without_args() -> None:
    assert error("/", "chat message") == "content: required"


def test_html_that_fits_only_after_cleaning_is_accepted() -> None:
    assert clean("/", "chat message", {"content": "<b>" + "x" * 1000 + "</b>"}) == [
        {"content": "x" * 1000, "type": "text"}]


def test_private_message() -> None:
    assert clean("/", "private message", {"to": "u2", "content": "hi", "x": 1}) == [
        {"to": "u2", "content": "hi"}]
    assert clean("/chat", "private message", {"to": 7, "content": "hi"}) == [
        {"to": "7", "content": "hi"}]
    assert error("/", "private message", {"content": "hi"}) == "to: required"
    assert error("/", "private message", {"to": "", "content": "hi"}) == (
        "to: must be 1..128 characters")
    assert error("/", "private message", {"to": "u2"}) == "content: required"
    assert error("/", "private message", "hi") == "payload: must be an object {to, content}"


def test_set_username() -> None:
    assert clean("/", "set username", "  <i>Alice</i> ") == ["Alice"]
    assert clean("/", "set username", {"username": "Bob"}) == ["Bob"]
    assert error("/", "set username", "x" * 51) == "username: must be 1..50 characters"
    assert error("/", "set username") == "username: required"
    assert error("/", "set username", 3) == "username: must be a string"


def test_user_info_the_seed_clients_form() -> None:
    assert clean("/", "user info", {"username": " <b>Alice</b>", "avatar": "avatar-url"}) == [
        {"username": "Alice", "avatar": "avatar-url"}]
    assert clean("/", "user info", {"username": "Bob", "extra": 1}) == [{"username": "Bob"}]
    assert clean("/", "user info", "Carol") == [{"username": "Carol"}]
    assert error("/", "user info", {"avatar": "x"}) == "username: required"
    assert error("/", "user info", {"username": "A", "avatar": "x" * 2049}) == \
        "avatar: must be 1..2048 printable characters"
    assert error("/", "user info", {"username": "A", "avatar": 5}) == "avatar: must be a string"


def test_create_room() -> None:
    # No maxUsers: the room service fills in its --room-max-users-default.
    assert clean("/", "create room", {"roomId": " lobby ", "roomName": "<b>Lobby</b>"}) == [
        {"roomId": "lobby", "roomName": "Lobby", "isPrivate": False}]
    assert clean("/", "create room", {"roomId": "r", "roomName": "R", "isPrivate": True,
                                      "password": " s3cret<b> ", "maxUsers": 5}) == [
        {"roomId": "r", "roomName": "R", "isPrivate": True, "password": " s3cret<b> ",
         "maxUsers": 5}]  # passwords are secrets: never altered
    assert clean("/", "create room", {"roomId": "r", "roomName": "R", "maxUsers": None}) == [
        {"roomId": "r", "roomName": "R", "isPrivate": False}]


@pytest.mark.parametrize(("payload", "message"), [
    ({"roomName": "R"}, "roomId: required"),
    ({"roomId": "r"}, "roomName: required"),
    ({"roomId": "x" * 51, "roomName": "R"}, "roomId: must be 1..50 characters"),
    ({"roomId": "r", "roomName": "x" * 101}, "roomName: must be 1..100 characters"),
    ({"roomId": "r", "roomName": "R", "isPrivate": True}, "password: required for a private room"),
    ({"roomId": "r", "roomName": "R", "isPrivate": "yes"}, "isPrivate: must be true or false"),
    ({"roomId": "r", "roomName": "R", "maxUsers": 0}, "maxUsers: must be 1..1000"),
    ({"roomId": "r", "roomName": "R", "maxUsers": 1001}, "maxUsers: must be 1..1000"),
    ({"roomId": "r", "roomName": "R", "maxUsers": "5"}, "maxUsers: must be an integer 1..1000"),
    ({"roomId": "r", "roomName": "R", "maxUsers": True}, "maxUsers: must be an integer 1..1000"),
    ({"roomId": "r", "roomName": "R", "password": ""}, "password: must be 1..100 characters"),
    ({"roomId": "r", "roomName": "R", "password": 1234}, "password: must be a string"),
    ({"roomId": "a\x00b", "roomName": "R"},
     "roomId: use letters, digits, spaces and - _ . # @ + only"),
    ({}, "roomId: required; roomName: required"),
])
def test_create_room_errors(payload: Any, message: str) -> None:
    assert error("/", "create room", payload) == message


def test_room_id_events() -> None:
    assert clean("/", "join room", {"roomId": "r1", "password": "pw", "x": 1}) == [
        {"roomId": "r1", "password": "pw"}]
    assert clean("/", "join room", "r1") == [{"roomId": "r1"}]
    assert error("/", "join room", {}) == "roomId: required"
    for event in ("leave room", "get room info"):
        assert clean("/", event, "r1") == ["r1"]
        assert clean("/", event, {"roomId": "r1"}) == ["r1"]
        assert error("/", event) == "roomId: required"
        assert error("/", event, 5) == "roomId: must be a string"


def test_room_message() -> None:
    assert clean("/", "room message", {"roomId": "r1", "message": "<u>yo</u>"}) == [
        {"roomId": "r1", "message": "yo"}]
    assert error("/", "room message", {"roomId": "r1"}) == "message: required"
    assert error("/", "room message", {"message": "m"}) == "roomId: required"


def test_get_history() -> None:
    assert clean("/", "get history", {"roomId": "r1"}) == [{"roomId": "r1"}]
    assert clean("/", "get history", {"roomId": "r1", "before": "2024-01-01T00:00:00Z",
                                      "limit": 100}) == [
        {"roomId": "r1", "before": "2024-01-01T00:00:00Z", "limit": 100}]
    assert error("/", "get history", {"roomId": "r1", "limit": 101}) == "limit: must be 1..100"
    befores: tuple[Any, ...] = ([], float("inf"), True, "")
    for before in befores:
        assert error("/", "get history", {"roomId": "r1", "before": before}) == (
            "before: must be a timestamp or message id")


@pytest.mark.parametrize(("ns", "event"), [
    ("/", "get rooms"), ("/", "get online users"), ("/admin", "get stats")])
def test_events_without_payload(ns: str, event: str) -> None:
    assert clean(ns, event) == []
    assert clean(ns, event, {"ignored": True}) == []


# -- other namespaces ---------------------------------------------------------------------------

def test_chat_namespace() -> None:
    assert clean("/chat", "chat message", {"content": "<i>x</i>"}) == [
        {"content": "x", "type": "text"}]
    assert error("/chat", "chat message", {"content": ""}) == "content: must be 1..1000 characters"


def test_game_namespace() -> None:
    assert clean("/game", "join game", "g1") == ["g1"]
    assert clean("/game", "join game", {"gameId": "g1"}) == ["g1"]
    assert error("/game", "join game") == "gameId: required"
    move = {"gameId": "g1", "cell": 4, "extra": {"nested": [1, None]}, "flag": None}
    assert clean("/game", "game action", move) == [move]  # moves are the game's to judge
    assert error("/game", "game action", {"cell": 4}) == "gameId: required"


def test_admin_namespace() -> None:
    assert clean("/admin", "broadcast message", {"message": "<b>hi</b>"}) == [{"message": "hi"}]
    assert error("/admin", "broadcast message", {}) == "message: required"
    assert clean("/admin", "kick user", "gw1.abc") == [{"socketId": "gw1.abc"}]
    assert clean("/admin", "kick user", {"socketId": "gw1.abc", "reason": "<i>spam</i>"}) == [
        {"socketId": "gw1.abc", "reason": "spam"}]
    assert error("/admin", "kick user", "nodots") == "socketId: not a socket id"
    assert error("/admin", "kick user", {}) == "socketId: required"
    assert clean("/admin", "ban user", {"userId": "u2", "reason": "spam"}) == [
        {"userId": "u2", "reason": "spam"}]
    assert clean("/admin", "ban user", {"userId": 2, "reason": "spam", "seconds": 60}) == [
        {"userId": "2", "reason": "spam", "seconds": 60}]
    assert error("/admin", "ban user", {"userId": "u2"}) == "reason: required"
    assert error("/admin", "ban user", {"userId": "u2", "reason": "r", "seconds": 0}) == (
        "seconds: must be 1..315360000")
    assert clean("/admin", "mute user", {"userId": "u2", "seconds": 30}) == [
        {"userId": "u2", "seconds": 30}]
    assert error("/admin", "mute user", {"userId": "u2"}) == "seconds: required"
    assert error("/admin", "mute user", {"seconds": 5}) == "userId: required"


def test_every_contract_event_has_a_schema() -> None:
    contract = {
        "/": {"set username", "user info", "chat message", "private message", "create room",
              "join room", "leave room", "room message", "get rooms", "get room info",
              "get online users", "get history"},
        "/chat": {"chat message", "private message"},
        "/game": {"join game", "game action"},
        "/admin": {"get stats", "get sockets", "broadcast message", "kick user", "ban user",
                   "mute user"},
    }
    assert {(ns, e) for ns, events in contract.items() for e in events} == set(EVENTS)


def test_no_two_owners_declare_one_event() -> None:
    owners = [RoomService.schemas(), GameService.schemas(), ModerationService.schemas()]
    assert sum(len(o) for o in owners) == len(EVENTS)


def test_banned_words_setting_keeps_phrases_whole() -> None:
    assert phrases(" darn, heck no ,,") == ("darn", "heck no")


def test_limits_are_configurable() -> None:
    small = Cleaner(Limits(content=5, max_users=10))
    assert clean("/", "chat message", "12345", by=small) == [{"content": "12345", "type": "text"}]
    assert error("/", "chat message", "123456", by=small) == "content: must be 1..5 characters"
    assert error("/", "create room", {"roomId": "r", "roomName": "R", "maxUsers": 11},
                 by=small) == "maxUsers: must be 1..10"
