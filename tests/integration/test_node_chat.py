"""The main chat flow of namespace ``/`` with the official Node ``socket.io-client`` (pinned in
tests/node/package.json): two users on two gateways (separate processes) of the whole
application, on the client's default options (they upgrade to WebSocket); and again with
polling-only clients through HAProxy in front of three gateways (see ``chat_cluster``).
``tests/node/chat.mjs`` drives the clients and prints what they saw as one JSON line; every
assertion is here.

Without ``tests/node/node_modules`` (``npm ci --prefix tests/node``) the test skips, unless
``CI`` is set: then a missing Node client is a failure, not a silent skip.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.support.cluster import Cluster, token
from tests.support.node import find_node, run_flow


@pytest.fixture(scope="module")
def node() -> str:
    return find_node("Node chat test")


def iso_utc(value: Any) -> bool:
    """An ISO-8601 UTC timestamp (EVENTS.md conventions)."""
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    offset = parsed.utcoffset()
    return offset is not None and offset.total_seconds() == 0


def test_main_chat_flow_across_gateways(node: str, chat_cluster: Cluster) -> None:
    room = "node-lobby"
    flow = {
        "a": {"url": chat_cluster.client_url(0), "token": token("n-alice", "alice"),
              "userId": "n-alice"},
        "b": {"url": chat_cluster.client_url(1), "token": token("n-bob", "bob"),
              "userId": "n-bob"},
        "transports": chat_cluster.transports,
        "roomId": room,
        "roomName": "Node lobby",
        "chat": "héllo from node, wörld 👋",
        "private": "just between us",
    }
    r = run_flow(node, flow)
    a_id, b_id = r["a"]["id"], r["b"]["id"]
    gateways = [a_id.partition(".")[0], b_id.partition(".")[0]]
    if chat_cluster.balancer_url is None:
        # Socket ids embed their gateway: the two clients really are on different gateways.
        assert gateways == [f"gw{port}" for port in chat_cluster.gateway_ports[:2]]
        assert r["transports"] == {"a": "websocket", "b": "websocket"}  # upgraded
    else:
        assert r["transports"] == {"a": "polling", "b": "polling"}
    alice = {"id": "n-alice", "username": "alice", "socketId": a_id}
    bob = {"id": "n-bob", "username": "bob", "socketId": b_id}

    for who, sid, gateway in (("a", a_id, gateways[0]), ("b", b_id, gateways[1])):
        welcome = r[who]["welcome"]
        assert welcome == {"message": "Welcome to switchboard!", "socketId": sid,
                           "serverId": gateway, "timestamp": welcome["timestamp"]}
        assert iso_utc(welcome["timestamp"])
    assert r["userOnline"] == {"userId": "n-bob", "username": "bob"}

    assert r["create"] == {"success": True, "roomId": room}
    assert r["joinA"] == {
        "ack": {"success": True, "roomId": room},
        "roomJoined": {"roomId": room, "roomName": "Node lobby", "userCount": 1,
                       "users": [alice]},
    }
    assert r["joinB"] == {
        "ack": {"success": True, "roomId": room},
        "roomJoined": {"roomId": room, "roomName": "Node lobby", "userCount": 2,
                       "users": [alice, bob]},
    }
    assert r["userJoined"] == {"socketId": b_id, "username": "bob", "roomId": room,
                               "userCount": 2}

    chat = r["chat"]
    assert chat["ack"] == {"success": True, "messageId": chat["ack"]["messageId"]}
    message = {"id": chat["ack"]["messageId"], "from": "n-alice", "username": "alice",
               "content": flow["chat"], "type": "text", "roomId": room,
               "timestamp": chat["received"]["timestamp"], "seq": 1}
    assert chat["received"] == message
    assert iso_utc(message["timestamp"])

    private = r["private"]
    assert private["ack"] == {"success": True, "messageId": private["ack"]["messageId"]}
    assert private["ack"]["messageId"] != message["id"]
    assert private["received"] == {
        "id": private["ack"]["messageId"], "from": "n-bob", "to": "n-alice",
        "content": flow["private"], "type": "private",
        "timestamp": private["received"]["timestamp"]}
    assert iso_utc(private["received"]["timestamp"])

    # The room's saved chat lines only (private messages are not room history).
    assert r["history"] == {"success": True, "messages": [message]}
    assert r["online"] == {"success": True, "users": [alice, bob]}

    assert r["leave"] == {
        "ack": {"success": True, "roomId": room},
        "userLeft": {"socketId": b_id, "username": "bob", "roomId": room, "userCount": 1},
    }
    assert r["offline"] == {"userId": "n-bob", "username": "bob"}
    assert r["roomsAfter"]["success"] is True
    assert [(x["id"], x["userCount"]) for x in r["roomsAfter"]["rooms"]] == [(room, 1)]

    # Exactly these events, once each: no echo of one's own chat message, no errors.
    assert r["received"] == {
        "a": {"welcome": 1, "user online": 1, "room joined": 1, "user joined": 1,
              "private message": 1, "user left": 1, "user offline": 1},
        "b": {"welcome": 1, "room joined": 1, "chat message": 1},
    }
    assert r["disconnected"] == {"a": True, "b": True}
