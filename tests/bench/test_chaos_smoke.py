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
