"""bench.quotas on the real cgroup v1 ``cpu`` controller: a process tree held to a quota,
each process in a group of its own, and every group gone afterwards."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import quotas
from bench.quotas import PERIOD_US, CpuQuotas

pytestmark = pytest.mark.skipif(not quotas.available(),
                                reason="needs a writable cgroup v1 cpu controller")

#: A parent that starts one child and both wait (a tree of two, like a small supervisor).
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree() -> Iterator[tuple[subprocess.Popen[str], int]]:
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        yield parent, child
    finally:
        parent.kill()
        parent.wait(10)
        subprocess.run(["kill", "-9", str(child)], check=False)


def groups_of(pid: int) -> str:
    return next(line.split(":", 2)[2] for line in
                Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if line.split(":")[1].split(",").count("cpu"))


def test_each_process_of_a_tree_gets_its_own_group_and_quota(
        tree: tuple[subprocess.Popen[str], int]) -> None:
    parent, child = tree
    held = CpuQuotas(name=f"switchboard-bench-test-{parent.pid}")
    try:
        groups = held.hold_tree(parent.pid, lambda label: 0.25)
        assert len(groups) == 2 and len({group for _, group in groups}) == 2
        for pid in (parent.pid, child):
            group = held.groups[pid]
            assert (group / "cpu.cfs_quota_us").read_text().strip() == str(PERIOD_US // 4)
            assert held.members(group) == [pid]
            assert groups_of(pid) == "/" + str(group.relative_to(quotas.ROOT))
    finally:
        held.close()
    assert not held.base.exists()
    assert groups_of(parent.pid) == groups_of(child) == "/"  # back in the root


def test_a_part_may_have_its_own_quota_or_none(
        tree: tuple[subprocess.Popen[str], int]) -> None:
    from bench.servers import Quota

    quota = Quota()
    quota.cores, quota.parts = 0.5, {"room": 0.1, "gateway": 0.3}
    assert (quota.of("room"), quota.of("gateway:3000"), quota.of("broker")) == (0.1, 0.3, 0.5)
    parent, child = tree
    held = CpuQuotas(name=f"switchboard-bench-test-{parent.pid}")
    try:
        groups = held.hold_tree(parent.pid, lambda label: 0.2 if held.groups == {} else 0.0)
        assert len(groups) == 1 and set(held.groups) <= {parent.pid, child}
    finally:
        held.close()
    assert not held.base.exists()


def test_closing_after_the_processes_exited_removes_the_groups(
        tree: tuple[subprocess.Popen[str], int]) -> None:
    parent, _child = tree
    held = CpuQuotas(name=f"switchboard-bench-test-{parent.pid}")
    try:
        held.hold(parent.pid, 0.5, "parent")
        parent.kill()
        parent.wait(10)
    finally:
        held.close()
    assert not held.base.exists()


def test_a_quota_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CpuQuotas(name="switchboard-bench-test-never").hold(1, 0.0)


def test_a_shorter_period_holds_the_same_share(
        tree: tuple[subprocess.Popen[str], int]) -> None:
    parent, _ = tree
    held = CpuQuotas(name=f"switchboard-bench-test-{parent.pid}", period_us=20_000)
    try:
        group = held.hold(parent.pid, 0.05)
        assert (group / "cpu.cfs_period_us").read_text().strip() == "20000"
        assert (group / "cpu.cfs_quota_us").read_text().strip() == "1000"
        with pytest.raises(ValueError, match="below the kernel's 1000 µs minimum"):
            held.hold(parent.pid, 0.04)  # 800 µs per period
    finally:
        held.close()


def test_the_bench_refuses_a_quota_it_cannot_apply(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--quota", "-1", "--no-install",
                           "--servers", "ours", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "--quota must be positive" in done.stderr
    done = subprocess.run([sys.executable, "-m", "bench", "--quota-of", "room=x", "--no-install",
                           "--servers", "ours", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "--quota-of 'room=x'" in done.stderr
    done = subprocess.run([sys.executable, "-m", "bench", "--quota-of", "broker=0.04",
                           "--quota-period-ms", "20", "--no-install", "--servers", "ours",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "below the kernel's 1 ms minimum" in done.stderr


def test_a_server_name_says_gateways_room_instances_and_brokers(tmp_path: Path) -> None:
    from bench.servers import Ours, make

    for name, (gateways, rooms, brokers) in {
            "ours": (1, 1, 1), "ours2": (2, 1, 1), "ours2r4": (2, 4, 1),
            "ours2b2": (2, 1, 2), "ours2r4b2": (2, 4, 2)}.items():
        server = make(name, tmp_path)
        assert isinstance(server, Ours) and server.name == name
        assert (server.n_gateways, server.n_rooms, server.n_brokers) == (gateways, rooms, brokers)
        server.ports = [3000]  # as start() picks them
        argv = server.argv()
        assert ("--brokers" in argv) == (brokers != 1)
        if brokers != 1:
            assert argv[argv.index("--brokers") + 1] == str(brokers)
