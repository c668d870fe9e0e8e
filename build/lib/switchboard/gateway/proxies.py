"""The client's address behind trusted load balancers (pure).

Behind a balancer every TCP peer is the balancer; per-IP limits would then treat all
clients as one. Only when the peer is a configured trusted proxy is ``X-Forwarded-For``
believed, and then its right-most address that is not itself a trusted proxy is the client
(left-most entries are whatever the client chose to send).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if part:
                networks.append(ipaddress.ip_network(part, strict=False))
    return tuple(networks)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    if not trusted or not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: fall back to the balancer itself
    return peer
