"""What a gateway reports about itself (:class:`Figures`): the ``/stats`` document and the
``/health`` verdict, read from its parts and never written to them."""

from __future__ import annotations

import time
from typing import Any, Protocol

from switchboard.gateway.admission import Admission
from switchboard.gateway.backbone import Backbone
from switchboard.gateway.config import GatewayConfig
from switchboard.gateway.engine import Engine
from switchboard.gateway.fanout import Fanout
from switchboard.gateway.gatekeeper import Gatekeeper, KeysFeed
from switchboard.gateway.health import HealthFigures, HealthLimits, evaluate, rss_mb
from switchboard.gateway.index import LocalIndex
from switchboard.gateway.peers import Peers
from switchboard.gateway.policing import PolicyFeed
from switchboard.gateway.sessions import Sessions
from switchboard.gateway.subscriptions import Subscriptions
from switchboard.shared.policy import PolicyReplica


class Parts(Protocol):
    """The gateway's parts the figures are read from (:class:`~.server.Gateway`)."""

    id: str
    started_at: float
    config: GatewayConfig
    sessions: Sessions
    engine: Engine
    echo: Engine | None
    fanout: Fanout
    peers: Peers
    admission: Admission
    index: LocalIndex
    subs: Subscriptions
    backbone: Backbone
    policy_replica: PolicyReplica
    policy_feed: PolicyFeed
    keys_feed: KeysFeed
    gate: Gatekeeper
    health_limits: HealthLimits

    @property
    def stopping(self) -> bool: ...


class Figures:
    def __init__(self, gateway: Parts) -> None:
        self.gateway = gateway

    def stats(self) -> dict[str, Any]:
        gw = self.gateway
        engine, fanout = gw.engine, gw.fanout
        return {
            "gateway": gw.id,
            "uptime": round(time.time() - gw.started_at, 3),
            **gw.sessions.stats(),
            "upgrades": engine.counters["upgrades"],
            "pollsForwarded": engine.counters["forwarded"],
            "pollsRelayed": engine.counters["relayed"],
            "handovers": engine.counters["handovers"],
            "peerPollsHeld": engine.relay.remote.waiting,
            "peersConnected": gw.peers.connected if gw.peers is not None else 0,
            "handshakes": dict(gw.admission.counters),
            "pollsWaiting": engine.waiting() + (gw.echo.waiting() if gw.echo else 0),
            "peers": sorted(gw.peers.peers),
            "namespaces": gw.index.counts(),
            "rooms": gw.index.room_count(),
            "subscriptions": len(gw.subs.counts),
            "publicationsReceived": fanout.counters["publications"],
            "deliveries": fanout.counters["deliveries"],
            "eventsReceived": gw.sessions.counters["events"],
            "closedForBadInput": gw.sessions.counters["closed_bad_input"],
            "services": {
                name: gw.backbone.is_up(name) for name in gw.backbone.endpoints
            },
            #: Each partitioned service's live instances and their epoch, as heard last.
            "groups": {name: {"epoch": group.epoch, "members": list(group.members)}
                       for name, group in gw.backbone.routing.groups().items()},
            "broker": fanout.broker_up,
            #: Each broker, in the order of --broker-sub.
            "brokers": [{"instance": b.instance, "up": b.missed < fanout.liveness,
                         "publications": b.publications} for b in fanout.brokers],
            #: The moderation policy events are judged by (gateway.policing).
            "policy": {"source": gw.policy_feed.source, "state": gw.policy_replica.state.value,
                       "instance": gw.policy_replica.instance,
                       "version": gw.policy_replica.version,
                       **gw.policy_replica.held()},
            #: The keys CONNECTs' tokens are checked with (gateway.gatekeeper).
            "keys": {"source": gw.keys_feed.source, "instance": gw.gate.instance},
            #: Delivery across broker crashes (docs/delivery.md).
            "continuity": {**fanout.continuity.counters,
                           "replaying": fanout.continuity.replaying()},
        }

    def health(self) -> dict[str, Any]:
        gw = self.gateway
        failures, total = gw.backbone.recent_outcomes()
        figures = HealthFigures(
            broker_up=gw.fanout.broker_up,
            brokers=len(gw.fanout.brokers),
            brokers_down=tuple(gw.fanout.brokers_down()),
            services_up={name: gw.backbone.is_up(name) for name in gw.backbone.endpoints},
            connections=len(gw.sessions.clients),
            rss_mb=rss_mb(),
            recent_requests=total,
            recent_failures=failures,
            optional=frozenset({"recovery", gw.backbone.routing.recovery or "recovery",
                                *(name for name in gw.backbone.endpoints
                                  if gw.backbone.routing.spare(name))}),
            policy_service=gw.policy_feed.source,
            policy_loaded=gw.policy_replica.ready,
            policy_age=(None if gw.policy_feed.loaded_at is None
                        else time.monotonic() - gw.policy_feed.loaded_at),
            keys_service=gw.keys_feed.source,
            keys_loaded=gw.gate.access is not None,
        )
        health = evaluate(figures, gw.health_limits)
        if gw.stopping:
            health.add("unhealthy", "shutting down")
        return {
            "status": health.status,
            "reasons": health.reasons,
            "gateway": gw.id,
            "connections": figures.connections,
            "memoryMb": round(figures.rss_mb, 1),
            "broker": figures.broker_up,
            "services": figures.services_up,
            "httpStatus": health.http_status,
        }
