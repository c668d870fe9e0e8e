"""The benchmark harness works end to end: ``python -m bench --quick`` against our server with
tiny numbers produces the tables, and nothing is lost. A functional check, not a speed one:
no latency or throughput figure is asserted (the machine may be busy with anything)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench, pytest.mark.timeout(150)]


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="the load generator needs Node.js and npm")
def test_quick_benchmark_of_our_server(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "--quick", "--servers", "ours",
            "--clients", "20", "--rooms", "2", "--broadcast-members", "20",
            "--rates", "200,400", "--warm", "0.3", "--measure", "1", "--search-steps", "0",
            "--chatter-rates", "150",
            "--polling-clients", "20", "--polling-rooms", "2", "--polling-rates", "200",
            "--idle", "50", "--idle-load", "200", "--out", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = proc.stdout
    for heading in ("## Max sustained load", "## CPU per delivery", "## Chatter: rooms of 4",
                    "## Latency at fixed loads", "## Idle connections", "## Per process"):
        assert heading in report, report
    assert "| fan-out | switchboard (1 gateway) |" in report
    assert "| broadcast | switchboard (1 gateway) |" in report
    assert "| polling fan-out | switchboard (1 gateway) |" in report
    assert (tmp_path / "report.md").read_text() == report

    data = json.loads((tmp_path / "results.json").read_text())
    [ours] = data["servers"]
    assert ours["error"] == ""
    for scenario, members in (("fanout", 10), ("broadcast", 20)):
        steps = ours["scenarios"][scenario]["steps"]
        assert [s["rate"] for s in steps] == [200, 400]
        for step in steps:
            assert step["expected"] > 0
            assert step["received"] == step["expected"], step
            assert step["lost"] == 0 and step["ack_fail"] == 0 and step["disconnects"] == 0
            assert step["server_cpu"] > 0 and step["per_proc"]  # /proc sampling worked
        assert ours["scenarios"][scenario]["setup"]["members"] == members
    # Chatter: 20 clients in 5 rooms of 4, each message to the 3 others.
    assert ours["scenarios"]["chatter"]["setup"] == {"rooms": 5, "members": 4, "senders": 5}
    [chat] = ours["scenarios"]["chatter"]["steps"]
    assert chat["expected"] > 0 and chat["received"] == chat["expected"], chat
    assert "| switchboard (1 gateway) | " in report.split("## Chatter")[1]
    # Clients that stay on long-polling: the same checks.
    [polled] = ours["scenarios"]["polling"]["steps"]
    assert polled["expected"] > 0 and polled["received"] == polled["expected"], polled
    assert polled["lost"] == 0 and polled["ack_fail"] == 0 and polled["disconnects"] == 0
    idle = ours["idle"]
    assert idle["connected"] == 50 and idle["failed"] == 0
    assert idle["rss_after"] > 0
    beside = idle["load_step"]  # a fan-out step while the idle connections are held
    assert beside["expected"] > 0 and beside["received"] == beside["expected"], beside
    assert "idle connections held" in report
