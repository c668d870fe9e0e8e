"""Connection state recovery (docs/recovery.md) end to end: official clients on their default
options, through HAProxy (no stickiness) in front of three gateways, the recovery service,
and kill -9 of the gateway a client was on."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.balancer import balancer
from tests.support.cluster import Cluster, gateway_part, start_chat_cluster, token
from tests.support.node import NODE_DIR, find_node

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
    try:
        with balancer(workdir, cluster.gateway_ports) as url:
            cluster.balancer_url, cluster.balanced = url, 3
            yield cluster
    finally:
        cluster.stop()


def gateway_ids(cluster: Cluster) -> dict[str, str]:
    return {f"gw{port}": f"http://{cluster.host}:{port}" for port in cluster.gateway_ports}


def run_killing_flow(node: str, cluster: Cluster, flow: dict[str, Any]) -> dict[str, Any]:
    """Run recover.mjs; when it names the receiver's gateway, kill -9 that gateway (then
    start it again, a new process under the same id, for the next test)."""
    env = {**os.environ, "RECOVER_FLOW": json.dumps(flow)}
    process = subprocess.Popen([node, str(SCRIPT)], cwd=NODE_DIR, env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stdin is not None
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
                gateway_part(cluster, cluster.gateway_ports.index(port)).kill()
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
            cluster.start_gateway(*GATEWAY_ARGS, port=int(killed.removeprefix("gw")))


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


def test_polling_client_recovers_on_another_gateway_after_kill_9(node: str,
                                                                 cluster: Cluster) -> None:
    result = run_killing_flow(node, cluster, flow_for(cluster, "recover-poll", "rec2",
                                                      transports=["polling"]))
    check_recovered(result, "rec2")
    assert result["connects"][1]["transport"] == "polling"
