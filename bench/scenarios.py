"""The scenarios: fan-out, broadcast (fixed loads and a search for the max sustained load) and
idle connections, run against one server with the load generator, measured from /proc.

A *step* offers a fixed rate of deliveries per second for ``warm`` + ``measure`` seconds,
then waits (at most ``drain`` seconds) for the deliveries of the messages sent in the measure
window. It *passes* when none of those is lost, no ack failed, no client was disconnected, p99
latency is within the limit and the load generator really offered the rate. The server's and
the load generator's CPU are read at the edges of the measure window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import procs
from bench.loadgen import LoadGen
from bench.servers import JWT_SECRET, Server

NCPU = len(__import__("os").sched_getaffinity(0))


@dataclass
class Plan:
    clients: int = 1000  # connections for fan-out and broadcast (namespace /)
    rooms: int = 10  # fan-out rooms; clients are split evenly, the first of each sends
    broadcast_members: int = 1000  # members of the broadcast room (the first sends)
    fixed_rates: tuple[int, ...] = (20_000, 50_000)  # deliveries/s for CPU per delivery
    warm: float = 2.0
    measure: float = 4.0
    drain: float = 3.0
    search_steps: int = 6
    search_budget: float = 60.0  # seconds of searching per scenario at most
    search_factor: float = 1.3
    search_resolution: float = 1.15  # stop when the failing rate / passing rate is below
    min_rate: int = 1_000
    p99_limit_ms: float = 100.0
    content_bytes: int = 64
    idle: int = 10_000  # idle connections (0: skip)
    idle_ns: str = "/chat"
    idle_addrs: int = 0  # source addresses per load generator (0: one per 20,000 connections)
    idle_procs: int = 0  # load generator processes for idle (0: one per 15,000 connections)
    idle_settle: float = 2.0  # seconds after connecting before memory is read
    idle_hold: float = 3.0  # seconds over which the CPU of holding them is read
    #: deliveries/s of a fan-out step run while the idle connections are held, by another
    #: load generator with its own ``clients`` connections (0: skip)
    idle_load: float = 0.0
    #: polling scenarios: clients that stay on HTTP long-polling, in rooms
    polling_clients: int = 300
    polling_rooms: int = 10
    polling_rates: tuple[int, ...] = (5_000, 10_000)
    #: chatter: ``clients`` in rooms of this size (what most chat is: direct messages and
    #: small groups), the first of each room sending; its fixed loads in deliveries/s
    #: (``chatter_size - 1`` per message: 900/s is 300 messages/s in rooms of 4)
    chatter_size: int = 4
    chatter_rates: tuple[int, ...] = (900, 1500)
    scenarios: tuple[str, ...] = ("fanout", "chatter", "broadcast", "polling", "polling-spread",
                                  "idle")
    half_loads: dict[str, float] = field(default_factory=dict)  # scenario -> rate
    deadline: float = math.inf  # time.monotonic() after which no search step starts

    def rates_for(self, scenario: str) -> tuple[int, ...]:
        """The fixed loads of ``scenario``, deliveries/s."""
        if scenario.startswith("polling"):
            return self.polling_rates
        return self.chatter_rates if scenario == "chatter" else self.fixed_rates


@dataclass
class Step:
    scenario: str
    rate: float  # offered deliveries/s
    kind: str  # fixed | half | search
    delivered_rate: float = 0.0
    expected: int = 0
    received: int = 0
    lost: int = 0
    ack_fail: int = 0
    disconnects: int = 0
    late: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    ack_p99: float | None = None
    rx_window: int = 0
    measure_s: float = 0.0
    offered_ok: bool = True
    server_cpu: float = 0.0  # CPU seconds in the measure window, whole server tree
    loadgen_cpu: float = 0.0
    machine_busy: float = 0.0  # CPU seconds of the whole machine in the window
    per_proc: dict[str, float] = field(default_factory=dict)  # name -> CPU seconds
    rss: dict[str, int] = field(default_factory=dict)  # name -> bytes at the window's end
    switches: dict[str, int] = field(default_factory=dict)  # name -> context switches
    passed: bool = False
    why: str = ""

    @property
    def us_per_delivery(self) -> float | None:
        return self.server_cpu / self.rx_window * 1e6 if self.rx_window else None

    @property
    def loadgen_us_per_delivery(self) -> float | None:
        return self.loadgen_cpu / self.rx_window * 1e6 if self.rx_window else None

    def pct(self, cpu: float) -> float:
        """CPU seconds in the window as % of one core."""
        return cpu / self.measure_s * 100 if self.measure_s else 0.0

    @property
    def other_cpu(self) -> float:
        """CPU seconds used by everything else on the machine in the window."""
        return max(self.machine_busy - self.server_cpu - self.loadgen_cpu, 0.0)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["us_per_delivery"] = self.us_per_delivery
        out["loadgen_us_per_delivery"] = self.loadgen_us_per_delivery
        return out


@dataclass
class ScenarioResult:
    scenario: str
    steps: list[Step] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def max_sustained(self) -> Step | None:
        passed = [s for s in self.steps if s.passed]
        return max(passed, key=lambda s: s.rate) if passed else None

    def at(self, rate: float) -> Step | None:
        for s in self.steps:
            if math.isclose(s.rate, rate, rel_tol=1e-6):
                return s
        return None

    def first_failure_above(self, rate: float) -> Step | None:
        failed = [s for s in self.steps if not s.passed and s.rate > rate]
        return min(failed, key=lambda s: s.rate) if failed else None


@dataclass
class IdleResult:
    connections: int = 0
    connected: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    addrs: int = 1
    connect_s: float = 0.0
    connect_p50: float | None = None
    connect_p99: float | None = None
    rss_before: int = 0
    rss_after: int = 0
    pss_before: int = 0
    pss_after: int = 0
    rss_procs: dict[str, int] = field(default_factory=dict)
    connect_cpu: float = 0.0  # server CPU seconds while connecting
    connect_per_proc: dict[str, float] = field(default_factory=dict)  # name -> CPU seconds
    loadgen_connect_cpu: float = 0.0
    idle_cpu_pct: float = 0.0  # server CPU % of one core while holding them
    #: the fan-out step run on top of the idle connections (``Plan.idle_load``)
    load_step: Step | None = None

    @property
    def rss_per_conn(self) -> float | None:
        return (self.rss_after - self.rss_before) / self.connected if self.connected else None

    @property
    def pss_per_conn(self) -> float | None:
        return (self.pss_after - self.pss_before) / self.connected if self.connected else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["load_step"] = self.load_step.to_json() if self.load_step else None
        out["rss_per_conn"] = self.rss_per_conn
        out["pss_per_conn"] = self.pss_per_conn
        return out


@dataclass
class ServerResult:
    name: str
    title: str
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    idle: IdleResult | None = None
    error: str = ""


Log = Callable[[str], None]


def _round(rate: float) -> float:
    """Three significant digits: steps read as 65,000 rather than 65,013."""
    if rate <= 0:
        return rate
    digits = 3 - math.floor(math.log10(rate)) - 1
    return float(round(rate, digits))


class Runner:
    def __init__(self, server: Server, lg: LoadGen, plan: Plan, log: Log) -> None:
        self.server = server
        self.lg = lg
        self.plan = plan
        self.log = log
        self.room_sizes: dict[str, int] = {}

    # ------------------------------------------------------------------ setup
    def connect(self, n: int, ns: str, addrs: int = 1, concurrency: int = 100,
                timeout: float = 120.0, transport: str = "websocket",
                spread: bool = False) -> dict[str, Any]:
        """Connect ``n`` clients; each may take ``timeout`` s (connecting to ``/`` makes the
        server tell every connected client: slow servers take long at the end)."""
        def progress(ev: dict[str, Any]) -> None:
            if ev.get("event") == "progress":
                self.log(f"    connecting {ev['done']}/{ev['of']} (failed {ev['failed']})")

        reply = self.lg.call(
            {"cmd": "connect", "urls": self.server.urls, "n": n, "ns": ns,
             "secret": JWT_SECRET, "addrs": addrs, "concurrency": concurrency,
             "timeoutMs": timeout * 1000, "progress": True, "transport": transport,
             "spread": spread},
            timeout=timeout + 180 + n / 20, on_event=progress)
        self.log(f"    {reply['connected']}/{n} connected in {reply['elapsedMs'] / 1000:.1f}s"
                 + (f", failed {reply['failed']}: {reply['errors']}" if reply["failed"] else ""))
        return reply

    def quiesce(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.lg.call({"cmd": "quiesce", "quietMs": 400, "timeoutMs": timeout * 1000},
                            timeout=timeout + 10)

    def rooms(self, rooms: list[dict[str, Any]]) -> dict[str, Any]:
        reply = self.lg.call({"cmd": "rooms", "rooms": rooms, "maxUsers": 1000,
                              "concurrency": 100, "ackTimeoutMs": 30_000}, timeout=400)
        for room in rooms:
            self.room_sizes[room["id"]] = room["count"]
        if reply["createFailed"] or reply["joinFailed"]:
            raise RuntimeError(f"room setup failed: {reply}")
        return reply

    # ------------------------------------------------------------------ one step
    def step(self, scenario: str, rooms: list[str], rate: float, kind: str) -> Step:
        plan = self.plan
        marks: dict[str, tuple[float, procs.Snapshot, float]] = {}

        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("event") in ("measure_start", "measure_end"):
                snap = procs.snapshot([self.server.pid])
                marks[ev["event"]] = (time.monotonic(), snap,
                                      procs.cpu_seconds(self.lg.pid) or 0.0)

        reply = self.lg.call(
            {"cmd": "step", "rooms": rooms, "rate": rate, "warmMs": plan.warm * 1000,
             "measureMs": plan.measure * 1000, "drainMs": plan.drain * 1000,
             "contentBytes": plan.content_bytes},
            timeout=plan.warm + plan.measure + plan.drain + 60, on_event=on_event)
        st = Step(scenario, rate, kind)
        lat = reply["latency"]
        st.delivered_rate = reply["deliveredRate"]
        st.expected, st.received, st.lost = reply["expected"], reply["received"], reply["lost"]
        st.ack_fail, st.disconnects, st.late = (reply["ackFail"], reply["disconnects"],
                                                reply["late"])
        st.p50, st.p90, st.p99, st.max = lat["p50"], lat["p90"], lat["p99"], lat["max"]
        st.ack_p99 = reply["ackLatency"]["p99"]
        st.rx_window = reply["rxWindow"]
        st.offered_ok = reply["offeredMsgRate"] >= 0.97 * reply["msgRate"]
        if "measure_start" in marks and "measure_end" in marks:
            t0, s0, l0 = marks["measure_start"]
            t1, s1, l1 = marks["measure_end"]
            use = procs.usage(s0, s1, t1 - t0)
            st.measure_s = t1 - t0
            st.server_cpu = use.cpu
            st.per_proc = use.per_proc
            st.rss = use.rss
            st.switches = use.switches
            st.loadgen_cpu = l1 - l0
            st.machine_busy = use.machine_busy
        reasons = []
        if st.lost:
            reasons.append(f"lost {st.lost}")
        if st.ack_fail:
            reasons.append(f"{st.ack_fail} failed acks {reply['ackErrors'][:2]}")
        if st.disconnects:
            reasons.append(f"{st.disconnects} disconnects")
        if st.p99 is None or st.p99 > plan.p99_limit_ms:
            reasons.append(f"p99 {st.p99} ms")
        if not st.offered_ok:
            reasons.append("load generator could not offer the rate")
        st.passed = not reasons
        st.why = "; ".join(reasons)
        self.log(f"    {scenario:9} {kind:6} {rate:>9,.0f}/s -> {st.delivered_rate:>9,.0f}/s "
                 f"p50 {_ms(st.p50)} p99 {_ms(st.p99)} loss {st.lost} "
                 f"server {st.pct(st.server_cpu):.0f}% loadgen {st.pct(st.loadgen_cpu):.0f}% "
                 f"{_us(st.us_per_delivery)} µs/delivery "
                 f"{'ok' if st.passed else 'FAIL: ' + st.why}")
        # let a backlog of an overloaded step go before the next one
        self.quiesce(timeout=15 if st.passed else 60)
        return st

    def rates(self, scenario: str, rooms: list[str]) -> ScenarioResult:
        plan = self.plan
        res = ScenarioResult(scenario)
        half = plan.half_loads.get(scenario)

        def run(rate: float, kind: str) -> bool:
            st = self.step(scenario, rooms, rate, kind)
            res.steps.append(st)
            if st.disconnects or not self.server.alive():
                res.note = ("clients were disconnected; scenario stopped" if st.disconnects
                            else "server died; scenario stopped")
                return False
            return True

        fixed_rates = plan.rates_for(scenario)
        for fixed in fixed_rates:
            if not run(fixed, "fixed"):
                return res
            last = res.steps[-1]
            if last.lost and last.delivered_rate < 0.5 * fixed:
                # Far past its capacity: a higher fixed load tells nothing more and its backlog
                # would spoil the steps after it.
                skipped = [r for r in fixed_rates if r > fixed]
                if skipped:
                    res.note = (f"fixed load(s) {', '.join(f'{r:,}' for r in skipped)}/s not "
                                f"run: {fixed:,}/s already delivered only "
                                f"{last.delivered_rate:,.0f}/s")
                break
        if (half and not any(math.isclose(half, r) for r in fixed_rates)
                and not run(half, "half")):
            return res
        deadline = min(time.monotonic() + plan.search_budget, plan.deadline)
        rate: float
        for _ in range(plan.search_steps):
            if time.monotonic() > deadline:
                res.note = res.note or "search stopped by its time budget"
                break
            passes: list[float] = [s.rate for s in res.steps if s.passed]
            lo = max(passes, default=None)
            fails: list[float] = [s.rate for s in res.steps
                                  if not s.passed and (lo is None or s.rate > lo)]
            hi = min(fails, default=None)
            if lo is None:
                assert hi is not None
                rate = hi / 2
                if rate < plan.min_rate:
                    res.note = f"no load from {plan.min_rate}/s up passed"
                    break
            elif hi is None:
                rate = lo * plan.search_factor
            elif hi / lo <= plan.search_resolution:
                break
            else:
                rate = math.sqrt(lo * hi)
            if not run(_round(rate), "search"):
                return res
        else:
            passes = [s.rate for s in res.steps if s.passed]
            if passes and not any(not s.passed and s.rate > max(passes) for s in res.steps):
                res.note = res.note or "search steps ran out before a failing load"
        best = res.max_sustained
        if self.server.name == "node" and scenario not in plan.half_loads and best:
            # the reference: every later server is measured at half of Node's max too
            half = _round(best.rate / 2)
            plan.half_loads[scenario] = half
            run(half, "half")
        return res

    # ------------------------------------------------------------------ scenarios
    def load(self, scenario: str) -> ScenarioResult:
        """One load scenario on a fresh server: connect, join the rooms, run the steps."""
        rooms, setup = self.setup(scenario)
        res = self.rates(scenario, rooms)
        res.setup = setup
        return res

    def setup(self, scenario: str) -> tuple[list[str], dict[str, int]]:
        """Connect the scenario's clients and join them to its rooms."""
        plan = self.plan
        polling = scenario.startswith("polling")
        clients, room_count = ((plan.polling_clients, plan.polling_rooms) if polling
                               else (plan.clients, plan.rooms))
        self.log(f"  connecting {clients} clients to / ...")
        connected = self.connect(clients, "/", transport="polling" if polling else "websocket",
                                 spread=scenario == "polling-spread")
        if connected["failed"]:
            raise RuntimeError(f"{connected['failed']} connections failed: {connected['errors']}")
        q = self.quiesce(timeout=120)
        self.log(f"    settled after {q['elapsedMs'] / 1000:.1f}s ({q['frames']} frames)")
        if scenario == "chatter":
            size = plan.chatter_size
            room_count = clients // size
            rooms: list[dict[str, Any]] = [{"id": f"ch{i}", "first": i * size, "count": size}
                                           for i in range(room_count)]
            setup = {"rooms": room_count, "members": size, "senders": room_count}
        elif scenario == "fanout" or polling:
            size = clients // room_count
            rooms = [{"id": f"fo{i}", "first": i * size, "count": size}
                     for i in range(room_count)]
            setup = {"rooms": room_count, "members": size, "senders": room_count}
        else:
            size = min(plan.broadcast_members, plan.clients)
            rooms = [{"id": "bc", "first": 0, "count": size}]
            setup = {"rooms": 1, "members": size, "senders": 1}
        t0 = time.monotonic()
        self.rooms(rooms)
        q = self.quiesce(timeout=180)
        self.log(f"  {scenario}: {len(rooms)} room(s) of {size} joined in "
                 f"{time.monotonic() - t0:.1f}s (settled: {q['quiet']})")
        return [r["id"] for r in rooms], setup

    def load_under_idle(self, rate: float) -> Step:
        """A fan-out step at ``rate`` while other load generators hold the idle connections:
        the system still delivers (no loss, p99 within the limit) at that size."""
        self.log(f"  fan-out at {rate:,.0f} deliveries/s on top of the idle connections")
        rooms, _ = self.setup("fanout")
        return self.step("fanout", rooms, rate, "idle+")

    def idle(self, extra: list[LoadGen] | None = None) -> IdleResult:
        """Hold ``plan.idle`` connections, split over this load generator and ``extra`` ones
        (one process may hold fewer connections than its open-files limit allows)."""
        plan = self.plan
        n = plan.idle
        lgs = [self.lg, *(extra or [])]
        shares = [n // len(lgs) + (1 if j < n % len(lgs) else 0) for j in range(len(lgs))]
        per_addr = [plan.idle_addrs or max(1, math.ceil(k / 20_000)) for k in shares]
        res = IdleResult(connections=n, addrs=sum(per_addr))
        time.sleep(plan.idle_settle / 2)
        before = procs.snapshot([self.server.pid], with_pss=True)
        l0 = sum(procs.cpu_seconds(lg.pid) or 0.0 for lg in lgs)
        self.log(f"  idle: connecting {n:,} clients to {plan.idle_ns} from {res.addrs} source "
                 f"address(es), {len(lgs)} load generator process(es) ...")
        cmds = []
        offset = 0
        for j, (lg, share, addrs) in enumerate(zip(lgs, shares, per_addr, strict=True)):
            cmd = {"cmd": "connect", "urls": self.server.urls, "n": share, "ns": plan.idle_ns,
                   "secret": JWT_SECRET, "addrs": addrs, "addrOffset": offset,
                   "userPrefix": f"i{j}_", "concurrency": 200, "timeoutMs": 30000,
                   "progress": j == 0}
            offset += addrs
            lg.send(cmd)
            cmds.append(cmd)

        def progress(ev: dict[str, Any]) -> None:
            if ev.get("event") == "progress":
                self.log(f"    connecting {ev['done']}/{ev['of']} (failed {ev['failed']})"
                         + (" in the first process" if len(lgs) > 1 else ""))

        replies = [lg.reply(cmd, 120 + n / 50, progress) for lg, cmd in zip(lgs, cmds,
                                                                            strict=True)]
        connected = procs.snapshot([self.server.pid])
        l1 = sum(procs.cpu_seconds(lg.pid) or 0.0 for lg in lgs)
        res.connected = sum(r["connected"] for r in replies)
        res.failed = sum(r["failed"] for r in replies)
        for r in replies:
            for text, count in r["errors"].items():
                res.errors[text] = res.errors.get(text, 0) + count
        res.connect_s = max(r["elapsedMs"] for r in replies) / 1000
        p50s = sorted(r["latency"]["p50"] for r in replies if r["latency"]["p50"] is not None)
        p99s = [r["latency"]["p99"] for r in replies if r["latency"]["p99"] is not None]
        res.connect_p50 = p50s[len(p50s) // 2] if p50s else None  # median of the processes'
        res.connect_p99 = max(p99s) if p99s else None  # the worst process'
        use = procs.usage(before, connected, 0)
        res.connect_cpu, res.connect_per_proc = use.cpu, use.per_proc
        res.loadgen_connect_cpu = l1 - l0
        self.log(f"    {res.connected:,}/{n:,} connected in {res.connect_s:.1f}s"
                 + (f", failed {res.failed}: {res.errors}" if res.failed else ""))
        for lg in lgs:
            lg.call({"cmd": "quiesce", "quietMs": 400, "timeoutMs": 30000}, timeout=40)
        time.sleep(plan.idle_settle)
        s1 = procs.snapshot([self.server.pid], with_pss=True)
        t1 = time.monotonic()
        time.sleep(plan.idle_hold)
        s2 = procs.snapshot([self.server.pid])
        res.idle_cpu_pct = procs.usage(s1, s2, 0).cpu / (time.monotonic() - t1) * 100
        res.rss_before, res.rss_after = before.rss, s1.rss
        res.pss_before, res.pss_after = before.pss, s1.pss
        res.rss_procs = {p.name: p.rss for p in s1.procs.values()}
        per = res.rss_per_conn
        self.log(f"    RSS {before.rss / 2**20:.0f} -> {s1.rss / 2**20:.0f} MB "
                 f"({(per or 0) / 1024:.1f} KB per connection), "
                 f"idle CPU {res.idle_cpu_pct:.1f}%")
        return res


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}ms"


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"
