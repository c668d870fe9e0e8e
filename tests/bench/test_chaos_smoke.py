"""The chaos run's short mode (``python -m bench.chaos --quick``), as CI runs it: one kill -9
of every kind of process and one freeze, under steady acked traffic through HAProxy, and
nothing acknowledged lost or duplicated, every fault healed, no restart loops. The full run
(70 faults) is ``make chaos``; its table is in docs/delivery.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.balancer import haproxy_binary

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]


def test_quick_chaos_run_loses_nothing(tmp_path: Path) -> None:
    haproxy_binary()  # skips (fails in CI) without HAProxy
    proc = subprocess.run([sys.executable, "-m", "bench.chaos", "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=560)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "results.json").read_text())
    rows = result["rows"]
    faults = {kind: row["faults"] for kind, row in rows.items() if row["faults"]}
    kinds = {"gateway:0", "gateway:1", "broker", "auth", "moderation", "room", "game"}
    assert kinds <= set(faults) and sum(faults.values()) == 8, faults
    assert any(kind.startswith("freeze:") for kind in faults), faults
    # Not vacuous: messages were acked after every fault, and owed to members.
    assert all(row["acked"] > 0 for row in rows.values() if row["faults"]), rows
    assert result["owed"] > 1000
    assert sum(row["lost"] for row in rows.values()) == 0
    assert sum(row["duplicated"] for row in rows.values()) == 0
    assert sum(row["not_healed"] for row in rows.values()) == 0
    assert result["not_in_history"] == []
    assert result["restarts"] == result["kills"]
    assert "| **all** | 8 |" in proc.stdout


def test_partitioned_chaos_adds_removes_and_kills_room_instances_losing_nothing(
        tmp_path: Path) -> None:
    """The room service partitioned over two instances and a spare, on PostgreSQL: the
    spare added under load (it takes the chaos room live) and removed (it hands it back),
    an instance killed and one stopped gracefully; nothing acked lost, duplicated or out of
    its room's order."""
    haproxy_binary()
    kinds = "add:room-2,remove:room-2,room-0,term:room-1"
    proc = subprocess.run([sys.executable, "-m", "bench.chaos", "--postgres",
                           "--room-shards", "2", "--room-spares", "1", "--kinds", kinds,
                           "--faults", "6", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "results.json").read_text())
    order = [fault["kind"] for fault in result["faults"]]
    moves = [kind for kind in order if kind.endswith("room-2")]
    assert moves and moves == [("add:room-2", "remove:room-2")[i % 2]
                               for i in range(len(moves))], order
    rows = result["rows"]
    assert all(rows[kind]["acked"] > 0 for kind in set(order)), rows
    assert sum(row["lost"] for row in rows.values()) == 0
    assert sum(row["duplicated"] for row in rows.values()) == 0
    assert sum(row["not_healed"] for row in rows.values()) == 0
    assert result["seq"]["received"] > 1000 and result["seq"]["reordered"] == 0
    assert result["restarts"] == result["kills"]  # a removed spare is not restarted


def test_chaos_schedules_a_spares_additions_and_removals_in_turn() -> None:
    from bench.chaos import alternating, chaos_room
    from switchboard.shared.partitions import Membership

    add, remove = "add:room-2", "remove:room-2"
    assert alternating([remove, "room-0", add, add, remove, remove]) == [
        add, "room-0", remove, add, remove]
    assert alternating([remove]) == []
    room = chaos_room(("room-0", "room-1"), "room-2")
    assert Membership.of(("room-0", "room-1", "room-2")).owner(room) == "room-2"
    assert chaos_room(("room",), None) == "chaos"
