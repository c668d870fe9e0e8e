"""Connection state recovery (docs/recovery.md) end to end: official clients on their default
options, through HAProxy (no stickiness) in front of three gateways, the recovery service,
and kill -9 of the gateway a client was on."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio

from switchboard.shared.journal import parse_offset
from tests.support.balancer import balanced
from tests.support.cluster import Cluster, gateway_part, start_chat_cluster, token
from tests.support.node import NODE_DIR, find_node, run_flow

SCRIPT = NODE_DIR / "recover.mjs"
FLOW_TIMEOUT = 60.0
RECOVERY = ("/",)
GATEWAY_ARGS = tuple(f"--recovery-namespaces={ns}" for ns in RECOVERY)


@pytest.fixture(scope="module")
def node() -> str:
    return find_node("recovery tests")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("recovery")
    cluster = start_chat_cluster(workdir, gateways=3, recovery=RECOVERY,
                                 moderation_args=("--event-limit", "0", "--user-event-limit", "0"))
    with balanced(cluster, workdir):
        yield cluster


def gateway_ids(cluster: Cluster) -> dict[str, str]:
    return {f"gw{port}": f"http://{cluster.host}:{port}" for port in cluster.gateway_ports}


def run_killing_flow(node: str, cluster: Cluster, flow: dict[str, Any],
                     graceful: bool = False) -> dict[str, Any]:
    """Run recover.mjs; when it names the receiver's gateway, kill -9 that gateway (or stop it
    with SIGTERM: ``graceful``), then start it again, a new process under the same id, for
    the next test."""
    env = {**os.environ, "RECOVER_FLOW": json.dumps(flow)}
    process = subprocess.Popen([node, str(SCRIPT)], cwd=NODE_DIR, env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stdin is not None
    assert process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + FLOW_TIMEOUT
    killed: str | None = None
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "recover.mjs did not finish in time"
            if not selector.select(left):
                continue
            line = process.stdout.readline()
            assert line, f"recover.mjs ended without a result:\n{process.stderr.read()}"
            message = json.loads(line)
            if "kill" in message:
                killed = message["kill"]
                port = int(killed.removeprefix("gw"))
                part = gateway_part(cluster, cluster.gateway_ports.index(port))
                if graceful:
                    part.signal(signal.SIGTERM)  # it drains; the client leaves meanwhile
                else:
                    part.kill()
                process.stdin.write("killed\n")
                process.stdin.flush()
                continue
            assert message["ok"], (message, process.stderr.read())
            result: dict[str, Any] = message["result"]
            result["killed"] = killed
            return result
    finally:
        process.kill()
        process.wait(5)
        if killed is not None:
            port = int(killed.removeprefix("gw"))
            gateway_part(cluster, cluster.gateway_ports.index(port)).stop()
            cluster.start_gateway(*GATEWAY_ARGS, port=port)


def flow_for(cluster: Cluster, room: str, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "balancer": cluster.balancer_url,
        "gateways": gateway_ids(cluster),
        "receiver": {"token": token(user, user.title())},
        "sender": {"token": token(f"{user}-sender", "Sender")},
        "roomId": room,
        "before": 10,
        "after": 10,
        **extra,
    }


def check_recovered(result: dict[str, Any], user: str) -> None:
    connects = result["connects"]
    assert len(connects) == 2, connects
    first, again = connects
    assert first["recovered"] is False
    assert again["recovered"] is True, connects
    assert again["id"] == first["id"] == result["finalId"]
    assert result["killed"] == result["gateway"]
    acked, received = result["acked"], result["received"]
    assert not result["failed"]
    assert len(acked) >= 20, acked
    # Every acked room message, in order, none twice (the count is checked first).
    assert len(received) == len(acked)
    assert received == acked
    # Still in its room, and nobody saw it leave.
    assert first["id"] in result["roomUsers"]
    assert [who for who in result["offline"] if who.get("userId") == user] == []
    assert [who for who in result["left"] if who.get("socketId") == first["id"]] == []


def test_node_client_recovers_on_another_gateway_after_kill_9(node: str,
                                                               cluster: Cluster) -> None:
    result = run_killing_flow(node, cluster, flow_for(cluster, "recover-ws", "rec1"))
    check_recovered(result, "rec1")
    assert result["connects"][1]["transport"] == "websocket"


def test_a_gateway_stopped_gracefully_hands_its_clients_over_by_recovery(
        node: str, cluster: Cluster) -> None:
    """SIGTERM (a rolling restart): its clients recover elsewhere, nothing lost or doubled,
    nobody shown offline."""
    result = run_killing_flow(node, cluster, flow_for(cluster, "recover-term", "rec3"),
                              graceful=True)
    check_recovered(result, "rec3")


def test_polling_client_recovers_on_another_gateway_after_kill_9(node: str,
                                                                 cluster: Cluster) -> None:
    result = run_killing_flow(node, cluster, flow_for(cluster, "recover-poll", "rec2",
                                                      transports=["polling"]))
    check_recovered(result, "rec2")
    assert result["connects"][1]["transport"] == "polling"


# -- the edges (docs/recovery.md), on a cluster with a short window ----------------------------
EDGE_SCRIPT = NODE_DIR / "recover_edges.mjs"
EDGE_WINDOW = 2.0


@pytest.fixture(scope="module")
def edge_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("recovery-edges")
    cluster = start_chat_cluster(workdir, gateways=2, recovery=RECOVERY,
                                 recovery_args=("--recovery-window", str(EDGE_WINDOW)),
                                 moderation_args=("--event-limit", "0"))
    with balanced(cluster, workdir):
        yield cluster


def edge(node: str, cluster: Cluster, scenario: str, user: str, **extra: Any) -> Any:
    flow = {"scenario": scenario, "url": cluster.balancer_url, "roomId": "lobby",
            "token": token(user, user.title()), "senderToken": token(f"{user}-s", "S"),
            "userId": user, **extra}
    return run_flow(node, flow, EDGE_SCRIPT, "RECOVER_EDGE", timeout=40.0)


@pytest.fixture(scope="module")
def lobby(node: str, edge_cluster: Cluster) -> str:
    """The managed room the edge scenarios join (created once, kept: a long grace)."""
    admin = token("creator", "Creator")
    run_flow(node, {"url": edge_cluster.balancer_url, "token": admin, "roomId": "lobby"},
             NODE_DIR / "create_room.mjs", "ROOM_FLOW", timeout=20.0)
    return "lobby"


def test_a_dropped_transport_recovers_with_what_was_sent_meanwhile(
        node: str, edge_cluster: Cluster, lobby: str) -> None:
    result = edge(node, edge_cluster, "drop", "edge1")
    assert result["first"]["recovered"] is False
    assert result["again"]["recovered"] is True
    assert result["again"]["id"] == result["first"]["id"]
    assert result["again"]["pid"] == result["first"]["pid"]
    # Each once, in order; the offset (a string) is the handler's last argument.
    assert result["got"] == [["before", "string"], ["meanwhile", "string"],
                             ["after", "string"]]


def test_after_the_window_it_is_a_new_connection(node: str, edge_cluster: Cluster,
                                                 lobby: str) -> None:
    result = edge(node, edge_cluster, "expired", "edge2", waitMs=int(EDGE_WINDOW * 1000 + 1500))
    assert result["again"]["recovered"] is False
    assert result["again"]["id"] != result["first"]["id"]
    assert result["again"]["pid"] != result["first"]["pid"]


def test_an_unknown_pid_is_a_new_connection(node: str, edge_cluster: Cluster) -> None:
    result = edge(node, edge_cluster, "unknown", "edge3")
    assert result["again"]["recovered"] is False
    assert result["again"]["pid"] not in (None, "not-a-pid")


def test_the_pid_of_a_connected_socket_is_not_recovered_twice(
        node: str, edge_cluster: Cluster, lobby: str) -> None:
    result = edge(node, edge_cluster, "already", "edge4")
    assert result["copy"]["recovered"] is False
    assert result["copy"]["id"] != result["first"]["id"]
    assert result["firstStill"] == {"connected": True, "id": result["first"]["id"]}
    assert result["firstInRoom"] is True


def test_a_socket_that_left_on_purpose_is_not_recovered(node: str, edge_cluster: Cluster,
                                                        lobby: str) -> None:
    result = edge(node, edge_cluster, "ended", "edge5")
    assert result["again"]["recovered"] is False
    assert result["again"]["id"] != result["first"]["id"]


def test_a_banned_users_session_is_not_recovered(node: str, edge_cluster: Cluster,
                                                 lobby: str) -> None:
    result = edge(node, edge_cluster, "banned", "edge6",
                  adminToken=token("boss", "Boss", role="admin"))
    assert result["refused"] == {"message": "Banned", "connected": False}


def test_the_recovery_service_killed_loses_only_recovery(node: str, edge_cluster: Cluster,
                                                         lobby: str) -> None:
    recovery = edge_cluster.parts["recovery"]
    recovery.kill()
    try:
        # The live system goes on (the sender's acks, "before" delivered); a drop now comes
        # back as a new socket, which is not in the room: nothing more reaches it.
        result = edge(node, edge_cluster, "drop", "edge7", expect=1)
        assert result["again"]["recovered"] is False
        assert result["again"]["id"] != result["first"]["id"]
        assert result["got"] == [["before", "string"]]
    finally:
        edge_cluster.start_service("recovery", *GATEWAY_ARGS, "--broker-sub",
                                   edge_cluster.broker_sub,
                                   "--recovery-window", str(EDGE_WINDOW))
    # Back (the gateways SYNC it): recovery works again, within a bounded wait.
    deadline = time.monotonic() + 30
    while True:
        result = edge(node, edge_cluster, "drop", "edge8")
        if result["again"]["recovered"] or time.monotonic() > deadline:
            break
    assert result["again"]["recovered"] is True
    assert [content for content, _ in result["got"]] == ["before", "meanwhile", "after"]


async def test_python_socketio_gets_the_offset_as_one_more_argument(
        edge_cluster: Cluster, lobby: str) -> None:
    """What README says of clients without recovery: python-socketio (AsyncClient on its
    defaults) works in a namespace with recovery, and its handlers see the offset last."""
    got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    a, b = socketio.AsyncClient(), socketio.AsyncClient()
    b.on("chat message", lambda *args: got.put_nowait(args))
    url = edge_cluster.balancer_url
    assert url is not None
    try:
        for client, user in ((a, "py1"), (b, "py2")):
            await asyncio.wait_for(client.connect(url, auth={"token": token(user, user)}), 10)
            ack = await client.call("join room", {"roomId": lobby}, timeout=10)
            assert ack["success"] is True
        ack = await a.call("chat message", {"content": "hi", "roomId": lobby}, timeout=10)
        assert ack["success"] is True
        message, offset = await asyncio.wait_for(got.get(), 10)
        assert message["content"] == "hi"
        assert parse_offset(offset) is not None
    finally:
        await a.disconnect()
        await b.disconnect()
