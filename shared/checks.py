"""Checks of setting values: each takes one item as typed and returns it (normalised) or
raises ``ValueError`` saying what is wrong, so that a value naming nothing real stops the
command at start (exit 2, through :mod:`shared.config`) instead of being accepted and
ignored."""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def namespace(item: str) -> str:
    """A Socket.IO namespace: ``/`` or ``/name``."""
    if not item.startswith("/"):
        raise ValueError(f"{item!r} is not a namespace (a namespace starts with '/', "
                         "e.g. /chat)")
    if any(c.isspace() or c in ",?#" for c in item):
        raise ValueError(f"{item!r} is not a namespace (no spaces, ',', '?' or '#')")
    return item


def origin(item: str) -> str:
    """An exact browser origin, ``scheme://host[:port]`` as a browser sends it, or ``*``."""
    if item == "*":
        return item
    parts = urlsplit(item)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (not _SCHEME.match(parts.scheme) or not parts.hostname or parts.username is not None
            or parts.path or parts.query or parts.fragment or item.endswith(("/", ":"))
            or port == -1 or item != item.lower()):
        raise ValueError(f"{item!r} is not an origin (scheme://host[:port], lower case, with "
                         "no path or trailing '/', e.g. https://chat.example.com; or *)")
    return item


def network(item: str) -> str:
    """An IP address or a CIDR network (``10.0.0.0/8``)."""
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address or network (e.g. 10.0.0.5 or "
                         "10.0.0.0/8)") from None
    return item


def _endpoint(item: str, bind: bool) -> str:
    transport, sep, address = item.partition("://")
    example = "tcp://127.0.0.1:5560"
    if not sep or not address:
        raise ValueError(f"{item!r} is not a ZeroMQ endpoint (e.g. {example})")
    if transport in ("ipc", "inproc"):
        return item
    if transport != "tcp":
        raise ValueError(f"{item!r}: transport {transport!r} is not tcp, ipc or inproc")
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{item!r} has no host:port (e.g. {example})")
    if port == "*" and bind:
        return item
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r}: port {port!r} is not 1-65535"
                         + (" or *" if bind else ""))
    return item


def connect_endpoint(item: str) -> str:
    """A ZeroMQ endpoint to connect to: ``tcp://host:port``, ``ipc://…`` or ``inproc://…``."""
    return _endpoint(item, bind=False)


def bind_endpoint(item: str) -> str:
    """A ZeroMQ endpoint to bind: as :func:`connect_endpoint`, a ``*`` port picks one."""
    return _endpoint(item, bind=True)


def service_name(item: str) -> str:
    """A service's name as ``--services`` gives it (``room-1``)."""
    if not _NAME.match(item):
        raise ValueError(f"{item!r} is not a service name (letters, digits, '.', '_', '-'; "
                         "e.g. room-1)")
    return item


def service_endpoint(item: str) -> str:
    """``NAME=ENDPOINT``: where the service NAME takes requests."""
    name, sep, endpoint = item.partition("=")
    if not sep or not name or not endpoint:
        raise ValueError(f"{item!r} is not NAME=ENDPOINT (e.g. room=tcp://127.0.0.1:5562)")
    if not _NAME.match(name):
        raise ValueError(f"{item!r}: {name!r} is not a service name")
    try:
        connect_endpoint(endpoint)
    except ValueError as exc:
        raise ValueError(f"{item!r}: {exc}") from None
    return item


def readable_file(item: str) -> str:
    """A file this process can read (a key file named at start, read when the part starts)."""
    if not os.path.isfile(item) or not os.access(item, os.R_OK):
        raise ValueError(f"{item!r} is not a readable file")
    return item


def store(item: str) -> str:
    """``sqlite``, or a PostgreSQL URL with a host (``postgresql://user@host:5432/db``)."""
    if item == "sqlite":
        return item
    parts = urlsplit(item)
    example = "sqlite, or postgresql://user:password@db.example.com:5432/switchboard"
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"{redacted(item)!r} is not a store (e.g. {example})")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"{redacted(item)!r}: the port is not a number") from None
    if not parts.hostname or not parts.path.strip("/"):
        raise ValueError(f"{redacted(item)!r} names no host or no database (e.g. {example})")
    return item


def redacted(url: str) -> str:
    """A URL fit for a message or a log line: its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()

