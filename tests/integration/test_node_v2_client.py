"""Socket.IO v2 clients (``socket.io-client@2.5.0``: Engine.IO v3, Socket.IO protocol 4) on a
gateway started with ``--allow-eio3``: connected to ``/`` and ``/chat`` over one connection
with their token in the query, they join a room and chat with a v4 client, over long-polling
only, over WebSocket only, and on v2's defaults (polling, then the upgrade).
``tests/node/v2chat.mjs`` drives both clients; the assertions are here. Without the flag a v2
client is refused (``Unsupported protocol version``)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, start_chat_cluster, start_mini_cluster, token
from tests.support.node import NODE_DIR, find_node, run_flow, run_script

V2_SCRIPT = NODE_DIR / "v2chat.mjs"


@pytest.fixture(scope="module")
def node() -> str:
    return find_node("Node v2 client test")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_chat_cluster(Path(tmp_path_factory.mktemp("eio3")), gateways=1,
                                 gateway_args=("--allow-eio3",))
    try:
        yield cluster
    finally:
        cluster.stop()


def run_v2_flow(node: str, flow: dict[str, Any]) -> Any:
    return run_flow(node, flow, V2_SCRIPT, "V2_FLOW", timeout=40)


@pytest.mark.parametrize(("transports", "ends_on"), [
    (["polling"], "polling"), (["websocket"], "websocket"), (None, "websocket")])
def test_a_v2_client_chats_with_a_v4_client(node: str, cluster: Cluster,
                                            transports: list[str] | None, ends_on: str) -> None:
    tag = ends_on if transports else "default"
    a, b = f"v2-a-{tag}", f"v4-b-{tag}"
    room = f"v2-room-{tag}"
    r = run_v2_flow(node, {
        "url": cluster.url(0), "roomId": room, "transports": transports,
        "a": {"token": token(a, "Ada v2"), "userId": a},
        "b": {"token": token(b, "Bob v4"), "userId": b},
    })
    assert r["aWelcome"]["message"] and r["aWelcome"]["socketId"]
    assert r["multiplexed"] is True
    assert r["create"] == {"success": True, "roomId": room}
    assert r["joinA"] == {"success": True, "roomId": room}
    assert r["joinB"] == {"success": True, "roomId": room}
    assert r["userJoined"]["username"] == "Bob v4" and r["userJoined"]["userCount"] == 2
    assert r["fromA"]["ack"]["success"] is True
    assert r["fromA"]["received"]["content"] == "from v2 ✓"
    assert r["fromA"]["received"]["from"] == a
    assert r["fromB"]["received"]["content"] == "from v4 😀"
    assert r["fromB"]["received"]["username"] == "Bob v4"
    assert r["privateToA"]["ack"]["success"] is True
    assert r["privateToA"]["received"]["content"] == "psst"
    assert r["transport"] == ends_on
    assert r["offline"] == {"userId": a, "username": "Ada v2"}


@pytest.mark.parametrize("transports", [["polling"], None], ids=["polling", "defaults"])
def test_through_a_balancer_without_stickiness(node: str,
                                               tmp_path_factory: pytest.TempPathFactory,
                                               transports: list[str] | None) -> None:
    """Two gateways behind HAProxy (round robin): the v2 client's polling requests land on
    both; a v3 session is never handed over, so it is served by relaying to its owner. On
    v2's defaults it also tries the upgrade: a probe that reaches the owner upgrades the
    session there, one that reaches the other gateway is refused at its handshake and the
    client keeps polling (docs/eio3.md); either way it chats."""
    from tests.support.balancer import balancer

    workdir = Path(tmp_path_factory.mktemp("eio3-lb"))
    two = start_chat_cluster(workdir, gateways=2, gateway_args=("--allow-eio3",))
    try:
        with balancer(workdir, two.gateway_ports) as url:
            r = run_v2_flow(node, {
                "url": url, "roomId": "v2-lb-room", "transports": transports,
                "a": {"token": token("v2-a-lb", "Ada v2"), "userId": "v2-a-lb"},
                "b": {"token": token("v4-b-lb", "Bob v4"), "userId": "v4-b-lb"},
            })
            assert r["fromA"]["received"]["content"] == "from v2 ✓"
            assert r["fromB"]["received"]["content"] == "from v4 😀"
            assert r["privateToA"]["received"]["content"] == "psst"
            if transports == ["polling"]:
                assert r["transport"] == "polling"
            else:
                assert r["transport"] in ("polling", "websocket")
            forwarded = [two.stats(i)["pollsForwarded"] for i in range(2)]
            assert sum(forwarded) > 0, forwarded  # requests did cross gateways
    finally:
        two.stop()


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The miniapp (echo, rooms) behind a gateway that allows EIO3."""
    cluster = start_mini_cluster(Path(tmp_path_factory.mktemp("eio3-mini")), "--allow-eio3")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_binary_both_ways_and_through_fan_out(node: str, mini: Cluster, transport: str) -> None:
    """v3 framing of bytes: client to server, an ack and an event back to it, and a room
    message fanned out to another v2 client."""
    done = run_script(node, NODE_DIR / "v2binary.mjs", mini.url(0), transport, timeout=30,
                      what="node v2 binary flow")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ok"] is True, (out, done.stderr)
    r = out["result"]
    assert r["ack"] == {"n": 1, "blob": "010203"}
    assert r["echoed"] == {"n": 1, "blob": "010203"}
    assert r["said"] == ["héllo".encode().hex(), "text"]
    assert r["transport"] == transport


def test_a_v2_client_without_a_token_is_refused_with_a_plain_string(node: str,
                                                                     cluster: Cluster) -> None:
    """v2's CONNECT_ERROR is a string: the client reports it as its ``error`` event."""
    done = run_script(node, NODE_DIR / "v2refused.mjs", cluster.url(0), timeout=20,
                      what="node v2 refusal")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "error": "Authentication error: No token provided"}


def test_without_the_flag_eio3_is_refused(cluster: Cluster) -> None:
    # The cluster's gateway allows it; a second one without the flag does not.
    port = cluster.start_gateway().name.rpartition("-")[2]
    url = f"http://127.0.0.1:{port}/socket.io/?EIO=3&transport=polling"
    try:
        urllib.request.urlopen(url, timeout=5)
        raise AssertionError("EIO=3 accepted without --allow-eio3")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
        assert json.loads(exc.read()) == {"code": 5, "message": "Unsupported protocol version"}
