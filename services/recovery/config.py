"""Settings of the recovery service (each also an option and a ``SWITCHBOARD_*`` variable)."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared import checks, ports
from switchboard.shared.config import setting


@dataclass(frozen=True)
class Config:
    recovery_namespaces: tuple[str, ...] = setting(
        (), "Namespaces with connection state recovery (the gateways' list), e.g. /,/chat.",
        check=checks.namespace,
    )
    recovery_window: float = setting(
        120.0, "maxDisconnectionDuration: seconds a dropped socket can come back (and what "
        "it missed is kept)."
    )
    recovery_max_entries: int = setting(
        100_000, "Publications kept for recovering sockets, at most (oldest forgotten first)."
    )
    recovery_max_sessions: int = setting(
        100_000, "Recoverable sessions kept, at most (oldest forgotten first)."
    )
    broker_sub: tuple[str, ...] = setting(
        (ports.local(ports.BROKER_SUBSCRIBE),),
        "Broker endpoints to subscribe to (their XPUB sides): every broker.",
        check=checks.connect_endpoint,
    )
