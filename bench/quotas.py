"""CPU quotas per process, so that each one stands in for a host of its own (Linux cgroup v1
``cpu`` controller: ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``).

Two cores cannot hold four hosts. A process held to a quota gets at most that share of a
core however busy the machine is, so what a part sustains at its quota is what it would
sustain alone on a host of that size. Each process gets a group of its own under one group
per bench run. :meth:`CpuQuotas.close` moves whatever is still inside back to the root and
removes every group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

from bench import procs

ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
#: The kernel's smallest quota per period.
MIN_QUOTA_US = 1000


def available(root: Path = ROOT) -> bool:
    """Whether this process may create CPU-quota groups here."""
    return (root / "cpu.cfs_quota_us").exists() and os.access(root, os.W_OK)


class CpuQuotas:
    """The groups of one bench run: ``hold(pid, cores)`` puts a process in a group of its own
    with that quota."""

    def __init__(self, root: Path = ROOT, name: str | None = None,
                 period_us: int = PERIOD_US) -> None:
        self.root = root
        #: A shorter period bounds how long a throttled process stalls (a quota of 5 % over
        #: 100 ms can stall it 95 ms, over 20 ms only 19 ms), at the kernel's minimum quota.
        self.period_us = period_us
        self.base = root / (name or f"switchboard-bench-{os.getpid()}")
        self.groups: dict[int, Path] = {}

    def hold(self, pid: int, cores: float, label: str = "") -> Path:
        """Hold ``pid`` (every thread of it) to ``cores`` of CPU; returns its group."""
        if cores <= 0:
            raise ValueError(f"a CPU quota must be positive, not {cores}")
        group = self.base / f"{label or 'pid'}-{pid}".replace("/", "_").replace(":", "_")
        group.mkdir(parents=True, exist_ok=True)
        quota = round(cores * self.period_us)
        if quota < MIN_QUOTA_US:
            raise ValueError(f"{cores} of a core over a {self.period_us} µs period is below "
                             f"the kernel's {MIN_QUOTA_US} µs minimum: use a longer period")
        (group / "cpu.cfs_period_us").write_text(str(self.period_us))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))
        self.groups[pid] = group
        return group

    def hold_tree(self, root_pid: int, cores: Callable[[str], float]
                  ) -> list[tuple[str, Path]]:
        """Each live process of ``root_pid``'s tree in a group of its own, held to
        ``cores(label)`` (the supervisor of ``switchboard up`` too: it only waits; 0: left
        alone); (label, group) of each held."""
        held = []
        for pid in procs.tree(root_pid):
            label = procs.label(pid)
            share = cores(label)
            if share > 0:
                held.append((label, self.hold(pid, share, label)))
        return held

    def members(self, group: Path) -> list[int]:
        try:
            return [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def close(self, timeout: float = 5.0) -> None:
        """Every group removed (what is still in one goes back to the root first)."""
        deadline = time.monotonic() + timeout
        for group in self.groups.values():
            for pid in self.members(group):
                with contextlib.suppress(OSError):  # it may have exited meanwhile
                    (self.root / "cgroup.procs").write_text(str(pid))
            while True:
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY: a process is still leaving
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.groups.clear()
        with contextlib.suppress(FileNotFoundError):
            self.base.rmdir()
