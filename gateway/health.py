"""Health evaluation, pure: figures in, ``healthy`` / ``warning`` / ``unhealthy`` + reasons out."""

from __future__ import annotations

from dataclasses import dataclass, field

HEALTHY, WARNING, UNHEALTHY = "healthy", "warning", "unhealthy"
_RANK = {HEALTHY: 0, WARNING: 1, UNHEALTHY: 2}


@dataclass(frozen=True)
class HealthLimits:
    max_connections: int  #: warning above this many connections (0: no limit)
    max_memory_mb: int  #: warning above 80 %, unhealthy above 100 % (0: no limit)
    max_error_rate: float  #: warning when this share of recent requests failed


@dataclass(frozen=True)
class HealthFigures:
    broker_up: bool
    services_up: dict[str, bool]
    connections: int
    rss_mb: float
    recent_requests: int
    recent_failures: int
    #: Services whose loss degrades rather than stops (connection state recovery: without
    #: it, clients come back as new sockets, and everything else works).
    optional: frozenset[str] = frozenset()
    #: The policy service, if any (gateway.policing): while it is unreachable the gateway
    #: enforces the last policy it holds, so chat goes on.
    policy_service: str | None = None
    #: Whether its policy was ever loaded (events are refused until then).
    policy_loaded: bool = True
    #: Seconds since the policy held was last loaded whole (None: never).
    policy_age: float | None = None
    #: The service handing out the keys CONNECTs are checked with, if any
    #: (gateway.gatekeeper), and whether they were ever loaded (connections are refused
    #: until then; once loaded, they go on while it is away).
    keys_service: str | None = None
    keys_loaded: bool = True
    #: How many brokers the gateway subscribes at, and which of them (0-based) are silent.
    brokers: int = 1
    brokers_down: tuple[int, ...] = ()


@dataclass
class Health:
    status: str = HEALTHY
    reasons: list[str] = field(default_factory=list)

    def add(self, status: str, reason: str) -> None:
        self.reasons.append(reason)
        if _RANK[status] > _RANK[self.status]:
            self.status = status

    @property
    def http_status(self) -> int:
        return 503 if self.status == UNHEALTHY else 200


def evaluate(figures: HealthFigures, limits: HealthLimits) -> Health:
    health = Health()
    if not figures.broker_up:
        if figures.brokers == 1 or not figures.brokers_down:
            health.add(UNHEALTHY, "broker unreachable")
        else:
            down = ", ".join(str(k) for k in figures.brokers_down)
            health.add(UNHEALTHY, f"broker {down} of {figures.brokers} unreachable: "
                                  "publications to its topics are not arriving")
    for name, up in sorted(figures.services_up.items()):
        if not up and name == figures.policy_service and figures.policy_loaded:
            age = "" if figures.policy_age is None else f" (loaded {figures.policy_age:.0f} s ago)"
            health.add(WARNING, f"service {name} unreachable: enforcing the last policy it "
                                f"published{age}")
        elif not up and name == figures.keys_service and figures.keys_loaded:
            health.add(WARNING, f"service {name} unreachable: checking tokens with the keys "
                                "it last handed out")
        elif not up:
            health.add(WARNING if name in figures.optional else UNHEALTHY,
                       f"service {name} unreachable")
    if figures.policy_service is not None and not figures.policy_loaded:
        health.add(UNHEALTHY, f"no policy from {figures.policy_service} yet: events and "
                              "connections refused")
    if figures.keys_service is not None and not figures.keys_loaded:
        health.add(UNHEALTHY, f"no keys from {figures.keys_service} yet: connections refused")
    if limits.max_memory_mb:
        if figures.rss_mb > limits.max_memory_mb:
            health.add(UNHEALTHY, f"memory {figures.rss_mb:.0f} MB over {limits.max_memory_mb} MB")
        elif figures.rss_mb > 0.8 * limits.max_memory_mb:
            health.add(WARNING, f"memory {figures.rss_mb:.0f} MB near {limits.max_memory_mb} MB")
    if limits.max_connections and figures.connections > limits.max_connections:
        health.add(WARNING, f"{figures.connections} connections over {limits.max_connections}")
    if figures.recent_requests >= 20:
        rate = figures.recent_failures / figures.recent_requests
        if rate > limits.max_error_rate:
            health.add(WARNING, f"{rate:.0%} of recent requests failed")
    return health


def rss_mb() -> float:
    """Resident memory of this process, from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
