"""The official Node ``socket.io-client`` (pinned in tests/node/package.json) against a real
gateway, broker and the miniapp service.

Each test runs one scenario of ``tests/node/scenarios.mjs`` in a subprocess; the script only
records what the client saw (one JSON line) and the assertions are here. Without
``tests/node/node_modules`` (``npm ci --prefix tests/node``) the tests skip, unless ``CI`` is
set: then a missing Node client is a failure, not a silent skip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support import node as node_support
from tests.support.cluster import Cluster
from tests.support.node import CLIENT_PACKAGE, NODE_DIR, find_node, run_script

SCRIPT = NODE_DIR / "scenarios.mjs"
#: The script ends itself within ~9 s; this only guards against a wedged Node process.
RUN_TIMEOUT = 20.0


def _node() -> str:
    return find_node("Node client tests")


@pytest.fixture(scope="module")
def node() -> str:
    return _node()


def test_client_version_is_the_pinned_one(node: str) -> None:
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    installed = json.loads(CLIENT_PACKAGE.read_text())["version"]
    assert pinned["socket.io-client"] == installed
    assert installed.startswith("4.")


def from_json(value: Any) -> Any:
    """Undo the script's binary encoding: ``{"$bin": hex, "$type": cls}`` → (cls, bytes)."""
    if isinstance(value, dict):
        if set(value) == {"$bin", "$type"}:
            return (value["$type"], bytes.fromhex(value["$bin"]))
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def run(node: str, cluster: Cluster, scenario: str) -> Any:
    done = run_script(node, SCRIPT, cluster.url(), scenario, timeout=RUN_TIMEOUT,
                      what=f"node scenario {scenario}")
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output from {scenario} (rc {done.returncode}):\n{done.stderr}"
    report = json.loads(lines[-1])
    assert report["scenario"] == scenario
    assert report["ok"] and done.returncode == 0, (
        f"{scenario} failed (rc {done.returncode}): {report.get('error')}\n{done.stderr}"
    )
    return from_json(report["result"])


def refusal(message: str) -> dict[str, Any]:
    """What the client reports of a refused CONNECT: the error, and a socket left inactive."""
    return {"message": message, "data": None, "connected": False, "active": False}


def buf(data: bytes) -> tuple[str, bytes]:
    """A binary value as the Node client hands it over: always a Buffer."""
    return ("Buffer", data)


def test_connect_hello_and_acks(node: str, mini_cluster: Cluster) -> None:
    result = run(node, mini_cluster, "basic")
    assert result["hello"] == {"ns": "/"}
    assert result["id"].startswith(mini_cluster.stats()["gateway"] + ".")
    # emitWithAck resolves with the first ack argument.
    assert result["withAck"] == {"a": [1, "two", None]}
    # Callback acks get every argument, and none for an empty ack.
    assert result["callbackMany"] == ["x", 2, {"y": True}]
    assert result["callbackNone"] == []
    assert result["marker"] == "marker"
    # `echoed` for every echo, acked or not, in order, with the same arguments.
    assert result["echoed"] == [
        [{"a": [1, "two", None]}],
        ["x", 2, {"y": True}],
        [],
        ["no ack wanted"],
        ["marker"],
    ]


def test_binary_both_ways(node: str, mini_cluster: Cluster) -> None:
    result = run(node, mini_cluster, "binary")
    payload = {
        "blob": buf(bytes(range(256))),
        "nested": [buf(b"\x00"), "x", {"deep": buf(b"\x01\x02\x03")}],
        "empty": buf(b""),
    }
    # Sent as Buffer / Uint8Array nested in objects; acked and emitted back as Buffers.
    assert result["withAck"] == payload
    assert result["event"] == [payload, buf(b"second")]
    assert result["viaCallback"] == [buf(b"\xff\xfe")]


def test_two_namespaces_share_one_connection(node: str, mini_cluster: Cluster) -> None:
    result = run(node, mini_cluster, "namespaces")
    assert result["helloMain"] == {"ns": "/"}
    assert result["helloOther"] == {"ns": "/other"}
    assert result["sameManager"] is True
    assert len(result["engineIds"]) == 1
    ids = result["ids"]
    assert ids["main"] != ids["other"]
    assert result["whoami"] == {
        "main": {"sid": ids["main"], "ns": "/"},
        "other": {"sid": ids["other"], "ns": "/other"},
    }
    assert result["afterLeaving"] == {
        "otherConnected": False,
        "mainConnected": True,
        "sameEngine": True,
        "echo": "still here",
    }


def test_unknown_namespace(node: str, mini_cluster: Cluster) -> None:
    result = run(node, mini_cluster, "invalidNamespace")
    assert result["refusal"] == refusal("Invalid namespace")
    assert result["helloAfter"] == {"ns": "/"}


def test_refused_connect(node: str, mini_cluster: Cluster) -> None:
    result = run(node, mini_cluster, "refused")
    assert result["refusal"] == refusal("refused by test")
    assert result["helloAfter"] == {"ns": "/"}


def test_failed_ack_and_error_event(node: str, mini_cluster: Cluster) -> None:
    result = run(node, mini_cluster, "failedAck")
    assert result["missingRoom"] == {"success": False, "error": "room: required"}
    assert result["unknown"] == [{"success": False, "error": "unknown event: no such event"}]
    # Without an ack the failure arrives as an `error` event, and only then.
    assert result["errorEvent"] == {"event": "join", "message": "room: required"}
    assert result["errors"] == 1


def test_room_fanout_between_node_clients(node: str, mini_cluster: Cluster) -> None:
    result = run(node, mini_cluster, "rooms")
    assert result["distinctEngines"] == 3
    assert result["joins"] == {
        "a": {"success": True, "room": "node-room"},
        "b": {"success": True, "room": "node-room"},
        "c": {"success": True, "room": "node-elsewhere"},
    }
    assert result["sayAck"] == {"success": True}
    # b hears a (binary included); a never hears itself (its first `said` is b's marker);
    # c, in another room, hears only what is sent there.
    assert result["said"] == {
        "a": [["from b"]],
        "b": [["hi", buf(b"\x01\x02"), {"n": 1}]],
        "c": [["to c"]],
    }


def test_missing_client_policy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No node_modules: a skip on a workstation, a failure under CI."""
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(node_support, "CLIENT_PACKAGE", tmp_path / "absent" / "package.json")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="npm ci --prefix tests/node"):
        _node()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run under CI"):
        _node()
