"""Gateway parts for unit tests: subscriptions that only count, and live sockets in a
local index (each a polling session whose handshake and CONNECT ack were taken)."""

from __future__ import annotations

import asyncio

from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.index import LocalIndex
from switchboard.gateway.output import Corker
from switchboard.gateway.protocol import Connection, ConnectionConfig
from switchboard.gateway.protocol.polling import Polling
from switchboard.shared.envelope import Session


class Subs:
    def __init__(self) -> None:
        self.topics: dict[bytes, int] = {}
        self.confirmations: list[bytes] = []

    def add(self, topic: bytes) -> asyncio.Future[None] | None:
        self.topics[topic] = self.topics.get(topic, 0) + 1
        return None

    def remove(self, topic: bytes) -> None:
        self.topics[topic] -= 1
        if not self.topics[topic]:
            del self.topics[topic]

    def confirmed(self, topic: bytes, broker: int = 0) -> None:
        self.confirmations.append(topic)

    async def settled(self, since: float, timeout: float, broker: int = 0) -> bool:
        return True  # nothing waits for the broker here


def member(index: LocalIndex, n: int, rooms: tuple[str, ...] = (),
           headers: dict[str, str] | None = None) -> NsSocket:
    conn = Connection(f"gw1.e{n}", ConnectionConfig(), 0.0, ("websocket",))
    client = Client(conn, "", headers or {}, 1_000_000, lambda c: None, Corker(),
                    polling=Polling())
    client.flush()
    assert client.polling is not None
    client.polling.get()  # OPEN
    conn.receive_frame("40", 0.0)
    conn.accept("/", f"gw1.s{n}")
    client.flush()
    client.polling.get()  # CONNECT ack
    sock = NsSocket(Session(f"gw1.s{n}", "/", "gw1"), client, live=True)
    client.add_socket(sock)
    index.add(sock)
    for room in rooms:
        index.join(sock, room)
    return sock
