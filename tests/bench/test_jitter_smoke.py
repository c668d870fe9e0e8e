"""The jitter bench's target in small (``python -m bench.jitter`` with few clients): official
clients whose connections are cut every few seconds while their rooms carry traffic, through
HAProxy in front of three gateways one of which is killed every few seconds — every acked
message reaches every member, in order, none twice, all by recovery. The full run (1,000
clients, against Node with and without recovery) is ``make jitter``; its table is in
docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.balancer import haproxy_binary
from tests.support.node import find_node

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench, pytest.mark.timeout(300)]


def test_cut_connections_and_killed_gateways_lose_nothing(tmp_path: Path) -> None:
    haproxy_binary()  # skips (fails in CI) without HAProxy
    find_node("the jitter bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.jitter", "--systems", "ours-kills", "--clients", "60",
         "--rooms", "3", "--rate", "4", "--duration", "12", "--cut", "3", "--kill-every", "4",
         "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    [results] = tmp_path.glob("*/results.json")
    result = json.loads(results.read_text())["ours-kills"]
    # Not vacuous: messages were owed, connections were cut and gateways killed.
    assert result["acked"] > 100 and result["expected"] > 2000
    assert result["reconnects"] > 60 and len(result["kills"]) >= 2
    assert result["delivered"] == result["expected"]
    assert result["duplicates"] == 0 and result["outOfOrder"] == 0
    assert result["recovered"] == result["reconnects"]
    assert result["replay"]["count"] > 0
