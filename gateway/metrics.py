"""The gateway's Prometheus metrics, in one place. Updated at the seams of
:mod:`gateway.server` (connection handler, pipelines, fan-out), never inside protocol code."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from switchboard.shared.metrics import BoundedLabels

CONNECTIONS = Gauge(
    "switchboard_gateway_connections_active", "Open Engine.IO sessions (every transport)"
)
CONNECTIONS_TOTAL = Counter(
    "switchboard_gateway_connections_total", "Engine.IO sessions opened"
)
CONNECTIONS_PEAK = Gauge(
    "switchboard_gateway_connections_peak", "Most Engine.IO sessions open at once"
)
TRANSPORT_CONNECTIONS = Gauge(
    "switchboard_gateway_transport_connections_active",
    "Open Engine.IO sessions by current transport (polling, websocket)", ["transport"],
)
TRANSPORT_OPENED = Counter(
    "switchboard_gateway_transport_connections_total",
    "Engine.IO sessions opened, by the transport they opened with", ["transport"],
)
UPGRADES = Counter(
    "switchboard_gateway_upgrades_total",
    "Upgrades from long-polling to WebSocket, by outcome (completed, failed)", ["outcome"],
)
POLL_FORWARDED = Counter(
    "switchboard_gateway_poll_forwarded_total",
    "Long-polling requests forwarded to the gateway owning their session, by method",
    ["method"],
)
HANDOVERS = Counter(
    "switchboard_gateway_session_handovers_total",
    "Unconnected sessions moved to the gateway with their WebSocket, by direction (in, out)",
    ["direction"],
)
SOCKETS = Gauge("switchboard_gateway_sockets_active", "Connected namespace sockets", ["ns"])
SOCKETS_TOTAL = Counter(
    "switchboard_gateway_sockets_total", "Namespace CONNECTs accepted", ["ns"]
)
SOCKETS_PEAK = Gauge("switchboard_gateway_sockets_peak", "Most sockets at once", ["ns"])
CONNECT_REFUSALS = Counter(
    "switchboard_gateway_connect_refusals_total",
    "Namespace CONNECTs refused, by namespace and reason (auth failures among them)",
    ["ns", "reason"],
)
EVENTS_RECEIVED = Counter(
    "switchboard_gateway_events_received_total", "Client events received", ["ns", "event"]
)
EVENTS_FAILED = Counter(
    "switchboard_gateway_events_failed_total",
    "Client events answered with a failure, by namespace and event",
    ["ns", "event"],
)
EVENTS_SENT = Counter(
    "switchboard_gateway_events_sent_total", "Fan-out events received for local sockets",
    ["ns", "event"],
)
DELIVERIES = Counter(
    "switchboard_gateway_deliveries_total", "Fan-out packets written to local sockets"
)
PUBLICATIONS = Counter(
    "switchboard_gateway_publications_total", "Publications received from the broker", ["kind"]
)
REQUEST_SECONDS = Histogram(
    "switchboard_gateway_request_seconds",
    "Round trip of one request to a service, by service and kind (an event routed through "
    "filters to its owner: as the owner's event)",
    ["service", "kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
REQUEST_FAILURES = Counter(
    "switchboard_gateway_request_failures_total",
    "Requests that got no reply (service not connected, queue full, timeout, or lost: the "
    "service went away after it got the request)",
    ["service", "reason"],
)
CLOSES = Counter(
    "switchboard_gateway_closes_total", "Connections closed, by reason", ["reason"]
)
HTTP_REQUESTS = Counter(
    "switchboard_gateway_http_requests_total", "Plain HTTP requests, by route and status",
    ["route", "status"],
)

REPLAYS = Counter(
    "switchboard_gateway_replays_total",
    "Replays of missed publications (a broker crash): asked, answered, failed",
    ["outcome"],
)
REPLAYED = Counter(
    "switchboard_gateway_replayed_publications_total",
    "Publications delivered from replays or held while one was under way",
)


class EventMeters:
    """Counters per (namespace, event), their children cached: a label lookup per message
    costs more than the increment. Event names come from clients and services, so their
    label values are bounded (:class:`~switchboard.shared.metrics.BoundedLabels`) and so is
    this cache."""

    def __init__(self, limit: int = 200) -> None:
        self._received_labels = BoundedLabels(limit=limit)
        self._sent_labels = BoundedLabels(limit=limit)
        self._cache: dict[tuple[int, str, str], Any] = {}

    def received(self, ns: str, event: str) -> Any:
        return self._get(0, ns, event)

    def sent(self, ns: str, event: str) -> Any:
        return self._get(1, ns, event)

    def failed(self, ns: str, event: str) -> Any:
        return self._get(2, ns, event)

    def _get(self, which: int, ns: str, event: str) -> Any:
        key = (which, ns, event)
        meter = self._cache.get(key)
        if meter is None:
            if which == 0:
                meter = EVENTS_RECEIVED.labels(ns, self._received_labels(event))
            elif which == 1:
                meter = EVENTS_SENT.labels(ns, self._sent_labels(event))
            else:
                meter = EVENTS_FAILED.labels(ns, self._received_labels(event))
            if len(self._cache) < 10_000:
                self._cache[key] = meter
        return meter

POLICY_REFUSALS = Counter(
    "switchboard_gateway_policy_refusals_total",
    "Events refused by the moderation policy this gateway enforces, by reason",
    ["reason"],
)
for _reason in ("banned", "rate_limit", "muted", "not_loaded"):  # every series from the start
    POLICY_REFUSALS.labels(_reason)
