"""A gateway's stop is bounded, whatever stops around it.

A whole cluster stopped at once (``up`` on SIGTERM, a rolling deploy, ``docker compose
down``) drops every ZeroMQ link while each process closes its own. libzmq hands socket
monitor events over with a blocking send, so a monitor closed in the wrong order hung its
process for good when a peer dropped in that moment: one gateway in 1 of 5 such stops under
load waited out ``up``'s grace and was SIGKILLed (shared.loopsocket.SocketMonitor says
why). Here two gateways, their service and the broker are stopped together, many times,
and each gateway must exit cleanly within its grace, every time.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, get_json

ROUNDS = 12
GRACE = 2.0
#: A gateway's stop is bounded by its grace (``Gateway.stop``); a little for the exit.
EXIT_BOUND = GRACE + 2.0
ROOT = Path(__file__).resolve().parents[2]


def _wait_peered(cluster: Cluster, deadline: float) -> None:
    """Each gateway's link to the other is up (so that both links drop during the stop)."""
    while time.monotonic() < deadline:
        if all(cluster.stats(i)["peersConnected"] == 1 for i in range(2)):
            return
        time.sleep(0.05)
    pytest.fail("the gateways did not connect to each other")


def test_gateways_stopped_together_exit_within_their_grace(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        cluster = Cluster(tmp_path / f"round-{round_}")
        try:
            cluster.start_broker()
            cluster.start_service("tests.support.miniapp")
            for _ in range(2):
                cluster.start_gateway("--shutdown-grace", str(GRACE))
            _wait_peered(cluster, time.monotonic() + 15)
            gateways = [p for name, p in cluster.parts.items() if name.startswith("gateway")]
            for part in cluster.parts.values():  # all at once, as a cluster-wide stop does
                part.signal(signal.SIGTERM)
            started = time.monotonic()
            for part in gateways:
                assert part.process is not None
                try:
                    code = part.process.wait(max(EXIT_BOUND - (time.monotonic() - started),
                                                 0.1))
                except subprocess.TimeoutExpired:
                    pytest.fail(f"round {round_}: {part.name} still running "
                                f"{EXIT_BOUND}s after SIGTERM:\n{part.output()[-3000:]}")
                assert code == 0, part.output()[-3000:]
                assert " stopped" in part.output(), part.output()[-3000:]
        finally:
            cluster.stop()
            for name, part in cluster.parts.items():
                assert part.process is None or part.process.poll() is not None, name


def test_only_the_socket_monitor_helper_touches_zeromq_monitors() -> None:
    """Every watched socket closes its monitor through :class:`SocketMonitor`, in its one safe
    order: nowhere else may a product module open or disable a ZeroMQ monitor."""
    offenders = []
    for folder in ("gateway", "services", "broker", "shared", "switchboard"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "loopsocket.py":
                continue
            text = path.read_text()
            if "get_monitor_socket" in text or "disable_monitor" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


_HANG = """
import sys, time, zmq
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER); router.linger = 0
port = router.bind_to_random_port("tcp://127.0.0.1")
dealer = ctx.socket(zmq.DEALER); dealer.linger = 0
monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
dealer.connect(f"tcp://127.0.0.1:{port}")
monitor.recv_multipart()  # connected
if sys.argv[1] == "reader-first":
    monitor.close(0)
    time.sleep(0.2)        # the reader's close has been processed
    router.close(0)        # the peer drops: libzmq's I/O thread reports it
    time.sleep(0.3)
    dealer.disable_monitor()
else:
    router.close(0)
    time.sleep(0.3)
    dealer.disable_monitor()
    monitor.close(0)
dealer.close(0)
ctx.term()
"""


@pytest.mark.parametrize("order, hangs", [("reader-first", True), ("disable-first", False)])
def test_libzmq_hangs_when_a_monitor_reader_closes_first(order: str, hangs: bool) -> None:
    """Why :class:`SocketMonitor` disables before it closes: the other order hangs libzmq
    (a characterisation of the library; should a release fix it, this test says so)."""
    import sys

    process = subprocess.Popen([sys.executable, "-c", _HANG, order])
    try:
        process.wait(3.0)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert finished is not hangs
    if finished:
        assert process.returncode == 0


def test_a_gateway_with_nothing_in_flight_stops_at_once(tmp_path: Path) -> None:
    """No connections, nothing pending: a stop takes well under its grace (it waits for
    nothing that no client needs)."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start_broker()
        cluster.start_service("tests.support.miniapp")
        part = cluster.start_gateway("--shutdown-grace", "30")
        assert get_json(cluster.url(0) + "/stats")["gateway"]
        started = time.monotonic()
        part.signal(signal.SIGTERM)
        assert part.process is not None
        assert part.process.wait(10) == 0
        assert time.monotonic() - started < 5.0
    finally:
        cluster.stop()
