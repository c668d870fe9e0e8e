"""ZeroMQ topic scheme for the broker's PUB/SUB fan-out.

A topic is the first frame of every published message; ZeroMQ matches subscriptions by byte
prefix, so each variable part is terminated by NUL: room ``a`` must not match room ``ab``, and
namespace ``/a`` must not match ``/ab``.

===========  =========================================  ====================================
kind         layout                                     delivered to
===========  =========================================  ====================================
room         ``r`` ns ``\\0`` room ``\\0``               gateways holding a member of the room
namespace    ``n`` ns ``\\0``                            gateways holding a socket of the ns
gateway      ``g`` gateway-id ``\\0``                    one gateway (a sid names its gateway)
socket       ``g`` gateway-id ``\\0`` sid ``\\0``          that gateway (by prefix), and the one
                                                        a recovery moved the socket to
control      ``c`` name ``\\0``                          every gateway (heartbeat, asks)
===========  =========================================  ====================================

With several brokers, every topic lives on one of them (:func:`broker_of`): publishers send
it there and subscribers subscribe it there. A socket's topic lives with its gateway's, so a
gateway's one subscription covers its sockets by prefix as with one broker. Control topics
are subscribed on every broker (:func:`everywhere`): each broker's heartbeat, and each
publisher's beats on each of its paths, arrive on them.
"""

from __future__ import annotations

import zlib

ROOM = b"r"
NAMESPACE = b"n"
GATEWAY = b"g"
CONTROL = b"c"

#: Published by the broker every heartbeat interval; gateways count it for liveness.
BROKER_HEARTBEAT = b"chb\x00"
#: Sent by the broker on XPUB right after it sees a subscription, on that very topic, so the
#: subscriber knows the subscription is in force (no slow-joiner loss after a room join).
SUBSCRIBED_MARKER = b"\x00subscribed"
#: Cluster-wide control messages every gateway acts on (e.g. "everybody resync").
ALL_GATEWAYS = b"call\x00"
#: Changes of the moderation policy every gateway enforces (shared.policy).
POLICY = b"cpolicy\x00"


def broker_of(topic: bytes, brokers: int) -> int:
    """The position (0-based) of the broker ``topic`` lives on, of ``brokers`` in all: the
    same in every part that lists the brokers in the same order."""
    if brokers == 1:
        return 0
    if topic[:1] == GATEWAY:  # a socket's topic goes with its gateway's
        end = topic.find(b"\x00")
        if end >= 0:
            topic = topic[:end + 1]
    return zlib.crc32(topic) % brokers


def everywhere(topic: bytes) -> bool:
    """Whether a subscription to ``topic`` goes to every broker (control topics)."""
    return topic[:1] == CONTROL


def _part(value: str) -> bytes:
    raw = value.encode()
    if b"\x00" in raw:
        raise ValueError("topic parts may not contain NUL")
    return raw + b"\x00"


def room(namespace: str, name: str) -> bytes:
    return ROOM + _part(namespace) + _part(name)


def rooms_of(namespace: str) -> bytes:
    """The prefix of every room topic of ``namespace`` (a subscription to all of them)."""
    return ROOM + _part(namespace)


def namespace(name: str) -> bytes:
    return NAMESPACE + _part(name)


def gateway(gateway_id: str) -> bytes:
    return GATEWAY + _part(gateway_id)


def socket(sid: str) -> bytes:
    """Messages for one socket: under its gateway's topic, so that gateway needs no
    per-socket subscription, yet a socket recovered on another gateway can be followed
    there by subscribing this topic alone."""
    return GATEWAY + _part(gateway_of(sid)) + _part(sid)


def control(name: str) -> bytes:
    return CONTROL + _part(name)


def user_room(user_id: str) -> str:
    """The room every socket of an authenticated user joins, in each of its namespaces."""
    return f"user:{user_id}"


def gateway_of(sid: str) -> str:
    """The gateway id encoded in a socket id (``<gateway>.<counter>``, see gateway.ids)."""
    gw, sep, _ = sid.rpartition(".")
    if not sep or not gw:
        raise ValueError(f"not a switchboard socket id: {sid!r}")
    return gw
