"""Where the parts listen by default, on loopback: the one table every default comes from.

``switchboard up`` lays its parts out in a block of its own (``--internal-port``); a
multi-host deployment names every endpoint by option or environment variable.
"""

from __future__ import annotations

BROKER_PUBLISH = 5550  #: the broker's XSUB side (publishers connect)
BROKER_SUBSCRIBE = 5551  #: the broker's XPUB side (gateways subscribe)
#: Request ports of the built-in services.
SERVICES: dict[str, int] = {
    "auth": 5560,
    "moderation": 5561,
    "room": 5562,
    "game": 5563,
    "recovery": 5564,
    "conformance": 5569,
}
GATEWAY_HTTP = 3000


def local(port: int) -> str:
    """A loopback ZeroMQ endpoint."""
    return f"tcp://127.0.0.1:{port}"


#: The services a gateway asks (and a filter passes events on to) by default.
DEFAULT_SERVICES = tuple(f"{name}={local(SERVICES[name])}"
                         for name in ("auth", "moderation", "room", "game"))

