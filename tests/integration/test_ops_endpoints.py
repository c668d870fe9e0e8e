"""Operations endpoints over plain HTTP: the gateway's ``/stats``, ``/metrics`` and ``/health``
checked against what the test itself did (connections per namespace, events, deliveries,
refusals by reason, request latency), security headers on every HTTP answer, JSON 404s,
``/health`` going 503 while a service is down and back to healthy after its restart, and the
broker's and services' own ``--metrics-port``.

One cluster (broker, auth, moderation, room, game, one gateway) for the module, as real
processes; figures are compared as differences between two readings around an action, so
the tests do not depend on one another's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from switchboard.gateway.http import SECURITY_HEADERS
from tests.support.cluster import JWT_SECRET, Cluster, Part, http_get, token
from tests.support.peer import QueuedPeer, user_auth
from tests.support.polling import poll_until
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(90)

METRICS = "switchboard_gateway_"


class Ops(Cluster):
    """A chat cluster whose broker and services also serve Prometheus metrics."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.metrics_ports: dict[str, int] = {}
        self.service_args: dict[str, tuple[str, ...]] = {}

    def _metrics(self, name: str) -> list[str]:
        port = self.metrics_ports.setdefault(name, free_port(self.host))
        return ["--metrics-port", str(port), "--metrics-host", self.host]

    def start_broker(self, k: int = 0, *args: str) -> Part:
        return super().start_broker(k, *args, *self._metrics(self.broker_name(k)))

    def start_chat_service(self, name: str, *args: str) -> Part:
        self.service_args[name] = args
        return self.start_service(name, *args, *self._metrics(name),
                                  env={"SWITCHBOARD_JWT_SECRET": JWT_SECRET})

    def metrics_url(self, name: str) -> str:
        return f"http://{self.host}:{self.metrics_ports[name]}/metrics"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    workdir = Path(tmp_path_factory.mktemp("ops"))
    cluster = Ops(workdir)
    try:
        cluster.start_broker()
        cluster.start_chat_service("auth")
        cluster.start_chat_service("moderation", "--moderation-db",
                                   str(workdir / "moderation.sqlite3"),
                                   "--connect-limit", "100000")
        cluster.start_chat_service("room", "--room-db", str(workdir / "room.sqlite3"),
                                   "--password-time-cost", "1", "--password-memory-kib", "8192")
        cluster.start_chat_service("game")
        cluster.start_gateway()
        yield cluster
    finally:
        cluster.stop()


# -- reading the endpoints ------------------------------------------------------------------------
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    status, headers, body = http_get(url)
    assert status == 200, (url, status, body[:200])
    assert headers["Content-Type"].startswith("text/plain"), headers
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def get_json(url: str) -> tuple[int, Any]:
    status, headers, body = http_get(url)
    assert headers["Content-Type"] == "application/json", headers
    return status, json.loads(body)


def websocket_peer(name: str) -> QueuedPeer:
    """A client of this module's tests: WebSocket only."""
    return QueuedPeer(name, transports=["websocket"])


async def refused(url: str, ns: str, tok: str | None) -> Any:
    peer = websocket_peer("refused")
    try:
        with contextlib.suppress(socketio.exceptions.ConnectionError):
            await peer.connect(url, [ns], auth=None if tok is None else {"token": tok})
            raise AssertionError(f"CONNECT to {ns} succeeded")
        return await peer.next("connect_error", ns=ns)
    finally:
        await peer.close()


#: Between two polls of the gateway's HTTP endpoints the pause doubles up to this: well under
#: its per-IP HTTP rate limit.
MAX_POLL_INTERVAL = 0.5


# -- tests ----------------------------------------------------------------------------------------
async def test_stats_and_metrics_count_what_clients_did(ops: Ops) -> None:
    url = ops.url()
    stats0 = get_json(url + "/stats")[1]
    metrics0 = scrape(url + "/metrics")
    peers: list[QueuedPeer] = []
    try:
        # Four WebSocket connections: three on "/" (two of them also on "/chat"), one
        # anonymous on "/game".
        for i, namespaces in enumerate((["/", "/chat"], ["/", "/chat"], ["/"])):
            peers.append(await websocket_peer(f"ops{i}").connect(
                url, namespaces, auth=user_auth(f"ops{i}", f"o{i}")))
        peers.append(await websocket_peer("gamer").connect(url, ["/game"]))
        for peer in peers[:3]:
            await peer.next("welcome")
        stats1 = get_json(url + "/stats")[1]
        assert stats1["connections"] == stats0["connections"] + 4
        for ns, added in (("/", 3), ("/chat", 2), ("/game", 1)):
            assert stats1["namespaces"].get(ns, 0) == stats0["namespaces"].get(ns, 0) + added
        metrics1 = scrape(url + "/metrics")
        assert value(metrics1, METRICS + "connections_active") == stats1["connections"]
        assert (value(metrics1, METRICS + "connections_total")
                - value(metrics0, METRICS + "connections_total")) == 4
        for ns in ("/", "/chat", "/game"):
            assert value(metrics1, METRICS + "sockets_active", ns=ns) == stats1["namespaces"][ns]

        # Events: what the clients sent, by name; failures by name too.
        a, b, c = peers[:3]
        assert (await a.call("create room", {"roomId": "ops", "roomName": "Ops"}))["success"]
        for peer in (a, b, c):
            assert (await peer.call("join room", {"roomId": "ops"}))["success"] is True
        for peer in (b, c):
            await peer.next("room joined")
        await a.next("user joined")
        await a.next("user joined")
        await b.next("user joined")
        assert (await a.call("join room", {"roomId": "nowhere"}))["success"] is False
        await a.next("room error")

        # Deliveries: two chat messages to a room of three are four packets to sockets.
        quiet = scrape(url + "/metrics")
        stats2 = get_json(url + "/stats")[1]
        for sender, content in ((a, "one"), (b, "two")):
            assert (await sender.call("chat message", {"roomId": "ops", "content": content}))[
                "success"]
        for peer, expected in ((b, "one"), (c, "one"), (a, "two"), (c, "two")):
            assert (await peer.next("chat message"))["content"] == expected
        stats3 = get_json(url + "/stats")[1]
        metrics3 = scrape(url + "/metrics")
        assert stats3["deliveries"] - stats2["deliveries"] == 4
        assert stats3["publicationsReceived"] - stats2["publicationsReceived"] == 2
        assert (value(metrics3, METRICS + "deliveries_total")
                - value(quiet, METRICS + "deliveries_total")) == 4
        assert (value(metrics3, METRICS + "events_sent_total", ns="/", event="chat message")
                - value(quiet, METRICS + "events_sent_total", ns="/", event="chat message")) == 2

        sent = {"create room": 1, "join room": 4, "chat message": 2}
        for event, n in sent.items():
            grew = (value(metrics3, METRICS + "events_received_total", ns="/", event=event)
                    - value(metrics0, METRICS + "events_received_total", ns="/", event=event))
            assert grew == n, event
        assert stats3["eventsReceived"] - stats0["eventsReceived"] == sum(sent.values())
        assert (value(metrics3, METRICS + "events_failed_total", ns="/", event="join room")
                - value(metrics0, METRICS + "events_failed_total", ns="/", event="join room")
                ) == 1
        # Latency: one observation per event, under its owner (room): the gateway applies
        # moderation's policy itself. One per CONNECT (six sockets), under the one stage
        # still asked (room); the token is checked at the gateway, so auth sees none.
        for service, kind, n in (("room", "event", sum(sent.values())),
                                 ("moderation", "filter", 0), ("auth", "connect", 0),
                                 ("room", "connect", 6)):
            count = METRICS + "request_seconds_count"
            grew = (value(metrics3, count, service=service, kind=kind)
                    - value(metrics0, count, service=service, kind=kind))
            assert grew == n, (service, kind)
            if not n:
                continue
            assert value(metrics3, METRICS + "request_seconds_bucket", service=service,
                         kind=kind, le="+Inf") == value(metrics3, count, service=service,
                                                        kind=kind)
            assert value(metrics3, METRICS + "request_seconds_sum", service=service,
                         kind=kind) > 0

        # Refused CONNECTs, by namespace and reason.
        before = scrape(url + "/metrics")
        refusals = [
            ("/", None, "Authentication error: No token provided"),
            ("/", "not-a-token", "Authentication error: Invalid token"),
            ("/admin", token("ops9", "o9"), "Access denied: admin role required"),
            ("/nowhere", token("ops9", "o9"), "Invalid namespace"),
        ]
        for ns, tok, reason in refusals:
            assert await refused(url, ns, tok) == {"message": reason}
        after = scrape(url + "/metrics")
        for ns, _, reason in refusals:
            label = "other" if reason == "Invalid namespace" else ns
            name = METRICS + "connect_refusals_total"
            assert value(after, name, ns=label, reason=reason) - value(
                before, name, ns=label, reason=reason) == 1, reason
    finally:
        await asyncio.gather(*(p.close() for p in peers))
    # Disconnects are counted down again.
    stats4 = await poll_until(lambda: asyncio.to_thread(lambda: get_json(url + "/stats")[1]),
                              lambda s: s["connections"] == stats0["connections"],
                              "connections back to where they were",
                              max_interval=MAX_POLL_INTERVAL)
    assert stats4["namespaces"].get("/chat", 0) == stats0["namespaces"].get("/chat", 0)


def test_security_headers_on_every_http_response(ops: Ops) -> None:
    url = ops.url()
    answers = {
        "/health": 200, "/stats": 200, "/metrics": 200, "/no/such/page": 404,
        "/socket.io/?EIO=4&transport=polling": 200, "/socket.io/?EIO=3&transport=websocket": 400,
        "/socket.io/?EIO=4&transport=polling&sid=nope": 400,
        "/": 200, "/static/app.js": 200, "/static/../../etc/passwd": 404,
    }
    for path, status in answers.items():
        got, headers, _ = http_get(url + path)
        assert got == status, path
        for name, expected in SECURITY_HEADERS:
            assert headers.get(name) == expected, f"{path}: {name} is {headers.get(name)!r}"


def test_unknown_paths_get_a_json_404(ops: Ops) -> None:
    for path in ("/nope", "/health/extra", "/metrics.json", "/api/nothing"):
        status, body = get_json(ops.url() + path)
        assert (status, body) == (404, {"error": "not found"}), path


async def test_health_is_503_while_a_service_is_down_then_healthy_again(ops: Ops) -> None:
    url = ops.url() + "/health"

    async def health() -> tuple[int, Any]:
        return await asyncio.to_thread(get_json, url)

    _, body = await poll_until(health, lambda r: r[0] == 200, "healthy at first",
                               max_interval=MAX_POLL_INTERVAL)
    assert body["status"] == "healthy" and body["reasons"] == []
    assert body["broker"] is True and all(body["services"].values())

    ops.parts["game"].kill()
    _, body = await poll_until(health, lambda r: r[0] == 503, "503 with game down",
                               max_interval=MAX_POLL_INTERVAL)
    assert body["status"] == "unhealthy"
    assert body["reasons"] == ["service game unreachable"]
    assert body["services"] == {"auth": True, "moderation": True, "room": True, "game": False}
    assert get_json(ops.url() + "/stats")[1]["services"]["game"] is False

    ops.start_chat_service("game", *ops.service_args["game"])  # same endpoint, same ports
    _, body = await poll_until(health, lambda r: r[0] == 200, "healthy after the restart",
                               timeout=30, max_interval=MAX_POLL_INTERVAL)
    assert body["status"] == "healthy" and body["reasons"] == []
    assert all(body["services"].values())


async def test_broker_and_services_serve_their_own_metrics(ops: Ops) -> None:
    url = ops.url()
    peer = await websocket_peer("metered").connect(url, ["/"], auth=user_auth("metered", "m"))
    try:
        await peer.next("welcome")
        rooms0 = scrape(ops.metrics_url("room"))
        broker0 = scrape(ops.metrics_url("broker"))
        assert (await peer.call("get rooms"))["success"] is True
        rooms1 = await poll_until(lambda: asyncio.to_thread(scrape, ops.metrics_url("room")),
                                  lambda s: s != rooms0, "room metrics moved",
                                  max_interval=MAX_POLL_INTERVAL)
        ok = {"service": "room", "kind": "event", "event": "get rooms", "outcome": "ok"}
        assert (value(rooms1, "switchboard_service_requests_total", **ok)
                - value(rooms0, "switchboard_service_requests_total", **ok)) == 1
        timing = {k: v for k, v in ok.items() if k != "outcome"}
        assert value(rooms1, "switchboard_service_request_seconds_count", **timing) >= 1
        # A chat message goes through the broker.
        assert (await peer.call("create room", {"roomId": "metered", "roomName": "M"}))[
            "success"]
        assert (await peer.call("join room", {"roomId": "metered"}))["success"] is True
        broker1 = scrape(ops.metrics_url("broker"))
        assert (value(broker1, "switchboard_broker_messages_total")
                > value(broker0, "switchboard_broker_messages_total"))
        assert total(broker1, "switchboard_broker_subscriptions_total", change="subscribe") > 0
        assert value(broker1, "switchboard_broker_topics") > 0
        for name in ("auth", "moderation", "game"):
            samples = scrape(ops.metrics_url(name))
            assert total(samples, "switchboard_service_requests_total", service=name) > 0, name
    finally:
        await peer.close()
