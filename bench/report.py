"""The markdown tables of a benchmark run."""

from __future__ import annotations

from typing import Any

from bench.scenarios import NCPU, Plan, ScenarioResult, ServerResult, Step

SCENARIO_TITLES = {"fanout": "fan-out", "chatter": "chatter (rooms of 4)",
                   "broadcast": "broadcast", "polling": "polling fan-out",
                   "polling-spread": "polling, requests spread over the gateways"}
PEERS = ("node", "pysio")
PEER_TITLES = {"node": "Node", "pysio": "py-sio"}


def _n(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def _mark(step: Step | None) -> str:
    """A star on figures of a step that did not sustain its load."""
    return "" if step is None or step.passed else "*"


def _limit(res: ScenarioResult) -> str:
    """What stopped the search: the first failing load above the max, and who was busy."""
    best = res.max_sustained
    fail = res.first_failure_above(best.rate if best else 0)
    if fail is None:
        return res.note or "no failing load found"
    busy = []
    if fail.pct(fail.loadgen_cpu) >= 90:
        busy.append(f"load generator {fail.pct(fail.loadgen_cpu):.0f}% of a core")
    if fail.per_proc:
        name, cpu = max(fail.per_proc.items(), key=lambda kv: kv[1])
        if fail.pct(cpu) >= 85:
            busy.append(f"{name} {fail.pct(cpu):.0f}%")
    if fail.measure_s and fail.machine_busy / fail.measure_s >= 0.95 * NCPU:
        busy.append(f"machine {fail.machine_busy / fail.measure_s * 100 / NCPU:.0f}% busy")
    return f"{_n(fail.rate)}/s: {fail.why}" + (f" ({', '.join(busy)})" if busy else "")


def _scenario(servers: list[ServerResult], name: str) -> list[tuple[ServerResult,
                                                                     ScenarioResult]]:
    return [(s, s.scenarios[name]) for s in servers if name in s.scenarios]


def throughput(servers: list[ServerResult]) -> list[str]:
    lines = ["| scenario | server | max sustained deliveries/s | p50 / p99 ms at max | "
             "server CPU at max | load gen CPU at max | whole machine | "
             "first failing load | x Node | x py-sio |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for scenario in SCENARIO_TITLES:
        rows = _scenario(servers, scenario)
        peers = {s.name: r.max_sustained for s, r in rows}
        for server, res in rows:
            best = res.max_sustained
            rate = best.delivered_rate if best else None
            ratios = []
            for peer in PEERS:
                ref = peers.get(peer)
                ratios.append("-" if server.name == peer
                              else _ratio(rate, ref.delivered_rate if ref else None))
            if best is None:
                lines.append(f"| {SCENARIO_TITLES[scenario]} | {server.title} | none passed | "
                             f"- | - | - | - | {_limit(res)} | {' | '.join(ratios)} |")
                continue
            lines.append(
                f"| {SCENARIO_TITLES[scenario]} | {server.title} | **{_n(rate)}** "
                f"(offered {_n(best.rate)}) | {_n(best.p50, 1)} / {_n(best.p99, 1)} | "
                f"{best.pct(best.server_cpu):.0f}% | {best.pct(best.loadgen_cpu):.0f}% | "
                f"{best.machine_busy / best.measure_s * 100 / NCPU:.0f}% of {NCPU} cores "
                f"(others {best.pct(best.other_cpu):.0f}% of a core) | "
                f"{_limit(res)} | {' | '.join(ratios)} |")
    return lines


POLLING = ("polling", "polling-spread")


def rates_of(plan: Plan, scenario: str) -> tuple[int, ...]:
    return plan.rates_for(scenario)


def efficiency(servers: list[ServerResult], plan: Plan, polling: bool = False) -> list[str]:
    """CPU per delivery at the fixed loads: the WebSocket scenarios, or the polling ones."""
    rates = plan.polling_rates if polling else plan.fixed_rates
    head = " | ".join(f"µs/delivery @ {_n(r)}/s" for r in rates)
    ratio_head = " | ".join(f"x {PEER_TITLES[p]} @ {_n(r / 1000)}k" for r in rates for p in PEERS)
    lines = [f"| scenario | server | {head} | load gen µs/delivery @ {_n(rates[-1])}/s | "
             f"{ratio_head} |",
             "|---|---|" + "---:|" * (len(rates) + 1 + 2 * len(rates))]
    for scenario in SCENARIO_TITLES:
        if (scenario in POLLING) != polling or scenario == "chatter":
            continue
        rows = _scenario(servers, scenario)
        ref = {s.name: r for s, r in rows}
        for server, res in rows:
            cells = []
            for rate in rates:
                st = res.at(rate)
                cells.append(f"{_n(st.us_per_delivery if st else None, 2)}{_mark(st)}")
            last = res.at(rates[-1])
            cells.append(_n(last.loadgen_us_per_delivery if last else None, 2))
            for rate in rates:
                st = res.at(rate)
                for peer in PEERS:
                    other = ref[peer].at(rate) if peer in ref else None
                    cells.append("-" if server.name == peer else _ratio(
                        st.us_per_delivery if st else None,
                        other.us_per_delivery if other else None))
            lines.append(f"| {SCENARIO_TITLES[scenario]} | {server.title} | "
                         f"{' | '.join(cells)} |")
    return lines


def latency(servers: list[ServerResult], plan: Plan) -> list[str]:
    lines = ["| scenario | server | load (deliveries/s) | p50 ms | p90 ms | p99 ms | max ms | "
             "loss | p50 x Node | p99 x Node |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scenario in SCENARIO_TITLES:
        rows = _scenario(servers, scenario)
        half = plan.half_loads.get(scenario)
        if not half:
            continue
        steps = {s.name: r.at(half) for s, r in rows}
        node = steps.get("node")
        for server, _ in rows:
            st = steps[server.name]
            if st is None:
                continue
            lines.append(
                f"| {SCENARIO_TITLES[scenario]} | {server.title} | {_n(half)} | "
                f"{_n(st.p50, 1)} | {_n(st.p90, 1)} | {_n(st.p99, 1)} | {_n(st.max, 1)} | "
                f"{st.lost} | "
                f"{'-' if server.name == 'node' else _ratio(st.p50, node.p50 if node else None)}"
                f" | "
                f"{'-' if server.name == 'node' else _ratio(st.p99, node.p99 if node else None)}"
                f" |")
    return lines


def fixed_latency(servers: list[ServerResult], plan: Plan) -> list[str]:
    lines = ["| scenario | server | load | delivered/s | p50 ms | p90 ms | p99 ms | loss | "
             "server CPU | load gen CPU | other processes CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scenario in SCENARIO_TITLES:
        for server, res in _scenario(servers, scenario):
            for rate in rates_of(plan, scenario):
                st = res.at(rate)
                if st is None:
                    continue
                lines.append(
                    f"| {SCENARIO_TITLES[scenario]} | {server.title} | {_n(rate)} | "
                    f"{_n(st.delivered_rate)} | {_n(st.p50, 1)} | {_n(st.p90, 1)} | "
                    f"{_n(st.p99, 1)}{_mark(st)} | {st.lost} | {st.pct(st.server_cpu):.0f}% | "
                    f"{st.pct(st.loadgen_cpu):.0f}% | {st.pct(st.other_cpu):.0f}% |")
    return lines


def per_process(servers: list[ServerResult], plan: Plan) -> list[str]:
    lines = ["| scenario | server | process | load /s | CPU (% of a core) | µs/delivery | "
             "context switches / message | RSS MB |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for scenario in SCENARIO_TITLES:
        rate = rates_of(plan, scenario)[-1]
        for server, res in _scenario(servers, scenario):
            st = res.at(rate)
            if st is None or not st.per_proc:
                continue
            # messages sent in the window: deliveries / receivers per message (the rest of
            # the room)
            receivers = res.setup.get("members", 0) - 1
            messages = st.rx_window / receivers if st.rx_window and receivers > 0 else 0
            for name, cpu in sorted(st.per_proc.items(), key=lambda kv: -kv[1]):
                per = cpu / st.rx_window * 1e6 if st.rx_window else None
                sw = st.switches.get(name, 0) / messages if messages else None
                lines.append(f"| {SCENARIO_TITLES[scenario]} | {server.title} | {name} | "
                             f"{_n(rate)} | {st.pct(cpu):.1f}% | {_n(per, 2)} | {_n(sw, 1)} | "
                             f"{st.rss.get(name, 0) / 2**20:.0f} |")
            total_sw = sum(st.switches.values()) / messages if messages else None
            lines.append(f"| {SCENARIO_TITLES[scenario]} | {server.title} | **all** | "
                         f"{_n(rate)} | **{st.pct(st.server_cpu):.1f}%** | "
                         f"**{_n(st.us_per_delivery, 2)}** | **{_n(total_sw, 1)}** | "
                         f"**{sum(st.rss.values()) / 2**20:.0f}** |")
    return lines


def chatter(servers: list[ServerResult], plan: Plan) -> list[str]:
    """Chatter in messages: max sustained messages/s, and CPU µs per message at each fixed
    load, whole tree and per process (where the message's cost goes)."""
    rows = _scenario(servers, "chatter")
    per_message = plan.chatter_size - 1  # deliveries per message
    node = {s.name: r for s, r in rows}.get("node")
    lines = ["| server | max messages/s | load msg/s | µs/message (tree) | x Node | "
             "per process µs/message |", "|---|---:|---:|---:|---:|---|"]
    for server, res in rows:
        best = res.max_sustained
        top = _n(best.delivered_rate / per_message) if best else "none passed"
        for rate in plan.chatter_rates:
            st = res.at(rate)
            if st is None or not st.rx_window:
                continue
            messages = st.rx_window / per_message
            us = st.server_cpu / messages * 1e6
            ref = node.at(rate) if node is not None else None
            ref_us = (ref.server_cpu / (ref.rx_window / per_message) * 1e6
                      if ref is not None and ref.rx_window else None)
            parts = ", ".join(f"{name} {cpu / messages * 1e6:,.0f}"
                              for name, cpu in sorted(st.per_proc.items(), key=lambda kv: -kv[1])
                              if cpu / messages * 1e6 >= 1)
            lines.append(f"| {server.title} | {top} | {_n(rate / per_message)} | "
                         f"{_n(us)}{_mark(st)} | "
                         f"{'-' if server.name == 'node' else _ratio(us, ref_us)} | {parts} |")
    return lines


def idle(servers: list[ServerResult]) -> list[str]:
    rows = [s for s in servers if s.idle is not None]
    if not rows:
        return []
    ok = [s for s in rows if s.idle is not None and not s.idle.failed and s.idle.rss_after]
    node = next((s.idle for s in ok if s.name == "node"), None)
    pysio = next((s.idle for s in ok if s.name == "pysio"), None)
    lines = ["| server | connected | connect time s | conn/s | connect p50 / p99 ms | "
             "RSS before → after MB | RSS per conn KB | PSS per conn KB | "
             "server CPU µs per connect | idle CPU | RSS/conn x Node | connect time x Node | "
             "RSS/conn x py-sio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rows:
        r = s.idle
        assert r is not None
        if r.failed or r.rss_after == 0:
            lines.append(f"| {s.title} | {r.connected:,}/{r.connections:,} | failed: "
                         f"{r.failed:,} connections {dict(list(r.errors.items())[:3])}"
                         + " | -" * 11 + " |")
            continue
        rate = r.connected / r.connect_s if r.connect_s else None
        lines.append(
            f"| {s.title} | {r.connected:,}/{r.connections:,} | {r.connect_s:.1f} | {_n(rate)} | "
            f"{_n(r.connect_p50, 1)} / {_n(r.connect_p99, 1)} | "
            f"{r.rss_before / 2**20:.0f} → {r.rss_after / 2**20:.0f} | "
            f"{_n((r.rss_per_conn or 0) / 1024, 1)} | {_n((r.pss_per_conn or 0) / 1024, 1)} | "
            f"{_n(r.connect_cpu / r.connected * 1e6 if r.connected else None)} | "
            f"{r.idle_cpu_pct:.1f}% | "
            f"{'-' if s.name == 'node' else _ratio(r.rss_per_conn, node.rss_per_conn if node else None)} | "  # noqa: E501
            f"{'-' if s.name == 'node' else _ratio(r.connect_s, node.connect_s if node else None)} | "  # noqa: E501
            f"{'-' if s.name == 'pysio' else _ratio(r.rss_per_conn, pysio.rss_per_conn if pysio else None)} |")  # noqa: E501
    for s in rows:
        r = s.idle
        if r is None or not r.connected or len(r.connect_per_proc) < 2:
            continue
        parts = ", ".join(f"{name} {_n(cpu / r.connected * 1e6)}" for name, cpu in
                          sorted(r.connect_per_proc.items(), key=lambda kv: -kv[1]) if cpu)
        lines.append(f"\nCPU µs per connect by process, {s.title}: {parts}.")
    for s in rows:
        r = s.idle
        st = r.load_step if r is not None else None
        if r is None or st is None:
            continue
        lines.append(
            f"\nWith {r.connected:,} idle connections held, {s.title} ran a fan-out step "
            f"beside them (its own clients and rooms): offered {_n(st.rate)}/s, delivered "
            f"{_n(st.delivered_rate)}/s, p50 {_n(st.p50, 1)} ms, p99 {_n(st.p99, 1)} ms, "
            f"loss {st.lost}, server CPU {st.pct(st.server_cpu):.0f}% of a core — "
            f"{'passed' if st.passed else 'FAILED: ' + st.why}.")
    return lines


def _section(out: list[str], title: str, table: list[str]) -> None:
    """A heading and its table, or nothing when the table has no rows."""
    if len(table) > 2:
        out += ["", f"## {title}", "", *table]


def render(servers: list[ServerResult], plan: Plan, header: dict[str, Any]) -> str:
    out = ["# Benchmark: switchboard vs Node socket.io vs python-socketio", ""]
    for key, value in header.items():
        out.append(f"- **{key}**: {value}")
    _section(out, f"Max sustained load (p99 ≤ {plan.p99_limit_ms:.0f} ms, no loss, no failed "
             "ack)", throughput(servers))
    _section(out, "CPU per delivery at fixed offered loads (whole server process tree; "
             "* = load not sustained)", efficiency(servers, plan))
    _section(out, "Long-polling clients: CPU per delivery at fixed offered loads",
             efficiency(servers, plan, polling=True))
    _section(out, f"Chatter: rooms of {plan.chatter_size}, every message to "
             f"{plan.chatter_size - 1} others", chatter(servers, plan))
    _section(out, "Latency at fixed loads", fixed_latency(servers, plan))
    _section(out, "Latency at half of Node's max sustained load", latency(servers, plan))
    _section(out, f"Idle connections (namespace {plan.idle_ns})", idle(servers))
    _section(out, "Per process at the highest fixed load", per_process(servers, plan))
    errors = [f"- {s.title}: {s.error}" for s in servers if s.error]
    notes = [f"- {s.title} {SCENARIO_TITLES.get(k, k)}: {r.note}"
             for s in servers for k, r in s.scenarios.items() if r.note]
    if errors or notes:
        out += ["", "## Notes", "", *errors, *notes]
    return "\n".join(out) + "\n"
