"""CPU time and memory of process trees, read from /proc (Linux only).

CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (every thread of the process, in clock
ticks: 10 ms resolution per process and sample). RSS is ``VmRSS``; PSS (``smaps_rollup``)
shares pages among the processes that map them, so a sum of PSS over a tree of Python
processes does not count the interpreter's shared pages once per process as RSS does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2:].split()


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    kids = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if (PROC / str(pid)).exists():
            out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def label(pid: int) -> str:
    """A short name for a process of a server tree (``room``, ``gateway:3000``, ``node``)."""
    argv = cmdline(pid)
    if "switchboard" in argv:
        rest = argv[argv.index("switchboard") + 1:]
        if not rest:
            return "switchboard"
        if rest[0] == "up":
            return "supervisor"
        if rest[0] == "service" and len(rest) > 1:
            return rest[1].rpartition(".")[2]
        if rest[0] == "gateway" and "--port" in rest:
            return f"gateway:{rest[rest.index('--port') + 1]}"
        return rest[0]
    if any(a.endswith("server.mjs") for a in argv):
        return "node"
    if any(a.endswith("loadgen.mjs") for a in argv):
        return "loadgen"
    if any(a.endswith("pysio/server.py") for a in argv):
        return "python-socketio"
    return Path(argv[0]).name if argv else str(pid)


def cpu_seconds(pid: int) -> float | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of ``pid`` so far: each is a
    wake-up or a preemption, which a multi-process server pays per hop."""
    total = 0
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


#: CPUs the server tree and the load generators are confined to (``--confine``); None: free.
AFFINITY: dict[str, set[int]] = {}


def confine(role: str) -> Any:
    """A ``preexec_fn`` pinning a child (and all it starts) to ``AFFINITY[role]``."""
    cpus = AFFINITY.get(role)
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (tells a reused pid apart)."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def rss_bytes(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pss_bytes(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds) of all CPUs since boot, from /proc/stat."""
    parts = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in parts[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / CLK_TCK, sum(ticks) / CLK_TCK


@dataclass
class Proc:
    pid: int
    name: str
    cpu: float
    rss: int
    pss: int = 0
    switches: int = 0


@dataclass
class Snapshot:
    """CPU counters and memory of a set of process trees at one moment."""

    procs: dict[int, Proc] = field(default_factory=dict)
    machine_busy: float = 0.0
    machine_total: float = 0.0

    @property
    def rss(self) -> int:
        return sum(p.rss for p in self.procs.values())

    @property
    def pss(self) -> int:
        return sum(p.pss for p in self.procs.values())


def snapshot(roots: list[int], with_pss: bool = False) -> Snapshot:
    snap = Snapshot()
    for root in roots:
        for pid in tree(root):
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            snap.procs[pid] = Proc(pid, label(pid), cpu, rss_bytes(pid),
                                   pss_bytes(pid) if with_pss else 0, switches(pid))
    snap.machine_busy, snap.machine_total = machine_cpu()
    return snap


@dataclass
class Usage:
    """CPU used between two snapshots, per process and in all."""

    seconds: float  # wall time between the snapshots
    per_proc: dict[str, float]  # name -> CPU seconds (names of one tree are unique)
    rss: dict[str, int]  # name -> RSS at the second snapshot
    machine_busy: float  # CPU seconds of the whole machine (all cores)
    switches: dict[str, int] = field(default_factory=dict)  # name -> context switches

    @property
    def cpu(self) -> float:
        return sum(self.per_proc.values())

    @property
    def rss_total(self) -> int:
        return sum(self.rss.values())


def usage(before: Snapshot, after: Snapshot, wall: float) -> Usage:
    per: dict[str, float] = {}
    rss: dict[str, int] = {}
    sw: dict[str, int] = {}
    for pid, proc in after.procs.items():
        start = before.procs.get(pid)
        used = proc.cpu - (start.cpu if start is not None else 0.0)
        name = proc.name if proc.name not in per else f"{proc.name}#{pid}"
        per[name] = max(used, 0.0)
        rss[name] = proc.rss
        sw[name] = max(proc.switches - (start.switches if start is not None else 0), 0)
    return Usage(wall, per, rss, after.machine_busy - before.machine_busy, sw)
