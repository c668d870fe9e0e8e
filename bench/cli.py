"""``python -m bench`` (or ``bench/run``): install the peers, run every server in turn, print
the tables. ``--help`` lists the options; ``--quick`` is a small run for smoke testing."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import procs, quotas, report
from bench.loadgen import LoadGen
from bench.scenarios import NCPU, IdleResult, Plan, Runner, ServerResult
from bench.servers import BENCH, QUOTA, ROOT, SERVERS, make

SCENARIOS = ("fanout", "chatter", "broadcast", "polling", "polling-spread", "idle")

QUICK = Plan(clients=200, rooms=4, broadcast_members=200, fixed_rates=(5_000, 10_000),
             warm=0.5, measure=1.5, drain=2.0, search_steps=1, search_budget=6.0, idle=1000,
             idle_settle=0.5, idle_hold=1.0, polling_clients=100, polling_rooms=4,
             polling_rates=(2_000,), chatter_rates=(300,))


class Log:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- install
def _npm_ci(folder: Path, log: Log) -> None:
    stamp = folder / "node_modules" / ".installed"
    lock = folder / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    log(f"npm ci in {folder.relative_to(ROOT)} ...")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                   check=True, stdout=sys.stderr)
    stamp.touch()


def _bench_extra() -> list[str]:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as fh:
        return list(tomllib.load(fh)["project"]["optional-dependencies"]["bench"])


def install(servers: list[str], log: Log) -> None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed (Node.js 18+ runs the load generator)")
    _npm_ci(BENCH / "loadgen", log)
    if "node" in servers:
        _npm_ci(BENCH / "peers" / "node", log)
    if "pysio" in servers:
        probe = subprocess.run([sys.executable, "-c", "import socketio, uvicorn"],
                               capture_output=True)
        if probe.returncode != 0:
            specs = _bench_extra()
            log(f"pip install {' '.join(specs)} ...")
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *specs],
                           check=True, stdout=sys.stderr)


def raise_nofile(need: int, log: Log) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        cap = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        cap = need
    want = min(need, cap)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log(f"warning: open files limited to {hard} per process (wanted {need}): a server "
            "process cannot hold more connections than that (raising the hard limit needs "
            "CAP_SYS_RESOURCE)")


# ---------------------------------------------------------------------- header
def _version(folder: Path, package: str) -> str:
    try:
        meta = json.loads((folder / "node_modules" / package / "package.json").read_text())
        return str(meta["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    node = subprocess.run(["node", "-v"], capture_output=True, text=True).stdout.strip()
    probe = "import importlib.metadata as m; print(m.version('python-socketio'))"
    pysio = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                           text=True).stdout.strip() or "?"
    return {
        "machine": f"{cpu}, {NCPU} cores, {mem:.0f} GiB, Linux {platform.release()}",
        "software": f"Python {platform.python_version()}, Node {node}, socket.io "
                    f"{_version(BENCH / 'peers' / 'node', 'socket.io')}, python-socketio "
                    f"{pysio}, ws {_version(BENCH / 'loadgen', 'ws')} (load generator)",
    }


def wait_quiet(limit: float, log: Log) -> float:
    """Wait (at most ``limit`` s) until the machine's busy time is < 25 % of a core over 3 s;
    returns the last reading (% of one core)."""
    deadline = time.monotonic() + limit
    while True:
        b0, _ = procs.machine_cpu()
        time.sleep(3.0)
        b1, _ = procs.machine_cpu()
        busy = (b1 - b0) / 3.0 * 100
        if busy < 25 or time.monotonic() > deadline:
            return busy
        log(f"machine busy ({busy:.0f}% of a core used by other processes); waiting")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------------- run
def run_server(name: str, plan: Plan, workdir: Path, log: Log) -> ServerResult:
    server = make(name, workdir)
    result = ServerResult(name, server.title)
    load = [s for s in ("fanout", "chatter", "broadcast", "polling", "polling-spread")
            if s in plan.scenarios
            and (s != "polling-spread" or server.gateways() > 1)]  # spread: 2+ gateways
    try:
        # A fresh server for every scenario: an overload in one does not carry into the next.
        for scenario in load:
            log(f"{server.title}: starting ({scenario})")
            server.start()
            lg = LoadGen(workdir / f"loadgen-{server.name}-{scenario}.log")
            try:
                result.scenarios[scenario] = Runner(server, lg, plan, log).load(scenario)
            finally:
                lg.close()
                server.stop()
        if "idle" in plan.scenarios and plan.idle > 0:
            if time.monotonic() > plan.deadline:
                result.error = "idle scenario skipped: time budget used up"
                return result
            log(f"{server.title}: starting (idle)")
            server.start()
            count = plan.idle_procs or max(1, math.ceil(plan.idle / 15_000))
            lgs = [LoadGen(workdir / f"loadgen-{server.name}-idle{j}.log") for j in range(count)]
            try:
                result.idle = Runner(server, lgs[0], plan, log).idle(lgs[1:])
                if result.idle.failed:
                    result.error = (f"idle: {result.idle.failed} of {plan.idle} connections "
                                    f"failed {result.idle.errors}"
                                    + ("" if server.alive() else "; the server had stopped"))
                elif plan.idle_load:
                    lgs.append(LoadGen(workdir / f"loadgen-{server.name}-idle-load.log"))
                    result.idle.load_step = Runner(server, lgs[-1], plan, log).load_under_idle(
                        plan.idle_load)
            finally:
                for lg in lgs:
                    lg.close()
                server.stop()
    except Exception as exc:  # one server failing does not lose the others' results
        result.error = f"{type(exc).__name__}: {exc}"
        log(f"{server.title}: FAILED: {result.error}\n--- server log tail ---\n"
            f"{server.log_tail()}")
        server.stop()
    return result


def to_json(results: list[ServerResult], plan: Plan, header: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"header": header, "plan": {
        k: v for k, v in vars(plan).items() if k != "deadline"}, "servers": []}
    for r in results:
        idle: IdleResult | None = r.idle
        out["servers"].append({
            "name": r.name, "title": r.title, "error": r.error,
            "idle": idle.to_json() if idle else None,
            "scenarios": {k: {"setup": s.setup, "note": s.note,
                              "max_sustained": s.max_sustained.rate if s.max_sustained else None,
                              "steps": [st.to_json() for st in s.steps]}
                          for k, s in r.scenarios.items()},
        })
    return out


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Start each server in turn (ours, Node socket.io, python-socketio), run "
        "the fan-out, broadcast, polling and idle scenarios with one load generator, print "
        "tables.")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help="comma-separated, run in this order: node, ours, ours2 (two "
                   "gateways), ours3, ours2r4 (two gateways, four room instances), ours@DIR "
                   "(another checkout, for a before/after run), pysio (default: %(default)s; "
                   "put node first so the others are also measured at half of its max)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="default: %(default)s")
    p.add_argument("--quick", action="store_true",
                   help="small numbers and short steps, for smoke testing (< 2 minutes)")
    p.add_argument("--clients", type=int, help="connections for fan-out/broadcast (1000)")
    p.add_argument("--rooms", type=int, help="fan-out rooms, one sender each (10)")
    p.add_argument("--broadcast-members", type=int, help="members of the broadcast room (1000)")
    p.add_argument("--rates", help="fixed loads, deliveries/s, comma-separated (20000,50000)")
    p.add_argument("--chatter-rates", help="fixed loads of chatter, deliveries/s (room size "
                   "- 1 per message), comma-separated (900,1500: 300 and 500 messages/s)")
    p.add_argument("--chatter-size", type=int, help="members of each chatter room, the "
                   "first sending; --clients of them (4)")
    p.add_argument("--polling-clients", type=int,
                   help="connections of the polling scenarios, long-polling only (300)")
    p.add_argument("--polling-rooms", type=int, help="rooms of the polling scenarios (10)")
    p.add_argument("--polling-rates", help="fixed loads of the polling scenarios, "
                   "deliveries/s, comma-separated (5000,10000)")
    p.add_argument("--half", help="loads for the latency comparison as FANOUT,BROADCAST "
                   "deliveries/s (default: half of Node's max, measured in the same run)")
    p.add_argument("--warm", type=float, help="seconds of each step before measuring (2)")
    p.add_argument("--measure", type=float, help="seconds measured per step (4)")
    p.add_argument("--drain", type=float, help="max seconds to wait for late deliveries (3)")
    p.add_argument("--search-steps", type=int, help="max steps of the max-load search (6)")
    p.add_argument("--search-budget", type=float, help="max seconds of search per scenario")
    p.add_argument("--idle", type=int, help="idle connections (10000; 0 skips)")
    p.add_argument("--idle-ns", help="namespace of the idle connections (/chat: no "
                   "broadcast on connect, so the cost is that of holding them)")
    p.add_argument("--idle-addrs", type=int, help="loopback source addresses 127.0.0.x per "
                   "load generator process for the idle connections (default: one per 20,000)")
    p.add_argument("--idle-procs", type=int, help="load generator processes for the idle "
                   "connections (default: one per 15,000; a process holds at most its "
                   "open-files limit)")
    p.add_argument("--idle-load", type=float, help="deliveries/s of a fan-out step run "
                   "while the idle connections are held, with --clients more connections "
                   "(0: none; shows the system still delivers at that size)")
    p.add_argument("--budget", type=float, default=900.0,
                   help="seconds after which no new search step or idle run starts "
                   "(default: %(default)s)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to this long for the machine to be quiet (other "
                   "processes using < 25%% of a core over 3 s); for shared machines")
    p.add_argument("--out", type=Path, help="folder for logs, report.md and results.json "
                   "(default: test-output/bench/<time>)")
    p.add_argument("--confine", action="store_true",
                   help="pin the server's whole process tree to CPU 0 and the load generators "
                   "to CPU 1 (as Node's one process gets one core; default: all free)")
    p.add_argument("--quota", type=float, default=0.0, metavar="CORES",
                   help="hold each process of a server tree to CORES of CPU in a cgroup of "
                   "its own (cpu.cfs_quota_us), as a host of its own; the groups are removed "
                   "afterwards (default: no quota)")
    p.add_argument("--quota-of", action="append", default=[], metavar="PART=CORES",
                   help="hold each process of one part (room, gateway, broker, auth, ...) to "
                   "CORES instead; repeatable, e.g. --quota-of room=0.1")
    p.add_argument("--quota-period-ms", type=float, default=100.0, metavar="MS",
                   help="the quotas' period: a throttled process stalls up to it, which a "
                   "small quota pays in p99 (default: %(default)s; the quota per period is "
                   "at least 1 ms)")
    p.add_argument("--no-install", action="store_true", help="skip npm ci / pip")
    return p.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    changes: dict[str, Any] = {}
    for name in ("clients", "rooms", "broadcast_members", "warm", "measure", "drain",
                 "search_steps", "search_budget", "idle", "idle_ns", "idle_addrs", "idle_procs",
                 "idle_load", "polling_clients", "polling_rooms", "chatter_size"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.rates:
        changes["fixed_rates"] = tuple(int(float(r)) for r in _csv(args.rates))
    if args.polling_rates:
        changes["polling_rates"] = tuple(int(float(r)) for r in _csv(args.polling_rates))
    if args.chatter_rates:
        changes["chatter_rates"] = tuple(int(float(r)) for r in _csv(args.chatter_rates))
    changes["scenarios"] = tuple(_csv(args.scenarios))
    unknown = set(changes["scenarios"]) - set(SCENARIOS)
    if unknown:
        sys.exit(f"bench: unknown scenario(s) {', '.join(sorted(unknown))}")
    half: dict[str, float] = {}
    if args.half:
        parts = [float(x) for x in _csv(args.half)]
        half = dict(zip(("fanout", "broadcast"), parts, strict=False))
    changes["half_loads"] = half
    changes["deadline"] = time.monotonic() + args.budget
    return replace(plan, **changes)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    log = Log()
    servers = _csv(args.servers)
    for name in servers:
        make(name, Path("/tmp"))  # validates the name
    plan = build_plan(args)
    parts: dict[str, float] = {}
    for item in args.quota_of:
        part, _, cores = item.partition("=")
        try:
            parts[part] = float(cores)
        except ValueError:
            parts[part] = -1.0
        if not part or parts[part] <= 0:
            print(f"bench: --quota-of {item!r}: must be PART=CORES with CORES > 0",
                  file=sys.stderr)
            return 2
    if args.quota or parts:
        if args.quota < 0:
            print("bench: --quota must be positive", file=sys.stderr)
            return 2
        period_us = round(args.quota_period_ms * 1000)
        smallest = min([args.quota or 1.0, *parts.values()])
        if smallest * period_us < quotas.MIN_QUOTA_US:
            print(f"bench: a quota of {smallest} over {args.quota_period_ms} ms is below the "
                  "kernel's 1 ms minimum: use a longer --quota-period-ms", file=sys.stderr)
            return 2
        if not quotas.available():
            print(f"bench: --quota needs a writable cgroup v1 cpu controller at "
                  f"{quotas.ROOT}", file=sys.stderr)
            return 2
        QUOTA.cores = args.quota
        QUOTA.parts = parts
        QUOTA.period_us = period_us
    if args.confine:
        if len(os.sched_getaffinity(0)) < 2:
            sys.exit("bench: --confine needs 2 CPUs")
        first, second = sorted(os.sched_getaffinity(0))[:2]
        procs.AFFINITY.update(server={first}, loadgen={second})
    if plan.clients % plan.rooms:
        sys.exit("bench: --clients must be a multiple of --rooms")
    if plan.polling_clients % plan.polling_rooms:
        sys.exit("bench: --polling-clients must be a multiple of --polling-rooms")
    out = args.out or ROOT / "test-output" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_install:
        install(servers, log)
    # a server process may hold every connection (one gateway, Node, python-socketio)
    raise_nofile(max(plan.idle, plan.clients) + 2_000, log)
    if args.wait_quiet > 0:
        busy = wait_quiet(args.wait_quiet, log)
        log(f"machine busy before start: {busy:.0f}% of a core")
        plan.deadline = time.monotonic() + args.budget
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        **machine(),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load average at start": loadavg(),
        "setup": (f"fan-out {plan.clients} clients in {plan.rooms} rooms "
                  f"({plan.rooms} senders); broadcast 1 room of "
                  f"{min(plan.broadcast_members, plan.clients)} (1 sender); steps "
                  f"{plan.warm:g}s warm + {plan.measure:g}s measured; content "
                  f"{plan.content_bytes} chars; all on loopback, "
                  + ("server tree confined to one core, load generators to another"
                     if args.confine else
                     f"load generator and servers share the {NCPU} cores")
                  + (f"; each server process held to {args.quota:g} of a core (cgroup)"
                     if args.quota else "")
                  + "".join(f"; each {part} process to {cores:g}"
                            for part, cores in parts.items())),
    }
    log(f"plan: {header['setup']}; servers {', '.join(servers)}; logs in {out}")
    results = []
    for name in servers:
        results.append(run_server(name, plan, out, log))
    header["load average at end"] = loadavg()
    header["elapsed"] = f"{time.monotonic() - log.t0:.0f}s"
    text = report.render(results, plan, header)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps(to_json(results, plan, header), indent=1,
                                                 default=str))
    print(text, end="")
    log(f"report: {out / 'report.md'}, data: {out / 'results.json'}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
