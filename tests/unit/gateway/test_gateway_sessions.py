"""gateway.sessions through its interfaces: a fake of the request pipelines (SocketWork) and
of the endpoint that owns the sessions (told when one is over), real sessions on the polling
transport (no sockets needed)."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.gateway import metrics as m
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.lane import Turn
from switchboard.gateway.protocol import (
    AckReceived,
    ConnectionConfig,
    ConnectRequested,
    EventReceived,
)
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.sessions import Sessions, bounded_reason
from switchboard.shared.envelope import Session

BOUND = 5.0


class Work:
    """Records what sessions hand over; each call sets an event the test can await."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.called = asyncio.Event()
        #: Sessions opened and closed (the Admin UI's raw counts).
        self.sessions: list[str] = []

    def _note(self, what: str, value: Any) -> None:
        self.calls.append((what, value))
        self.called.set()

    async def connect(self, client: Client, request: ConnectRequested) -> None:
        self._note("connect", request)

    async def event(self, client: Client, request: EventReceived, turn: Turn) -> None:
        self._note("event", request)

    async def client_ack(self, client: Client, ack: AckReceived, turn: Turn) -> None:
        self._note("ack", ack)

    def drop_socket(self, sock: NsSocket, reason: str = "") -> None:
        self._note("drop", sock.ns)
        sock.client.remove_socket(sock)

    def drop_all(self, client: Client, recoverable: bool = False) -> None:
        for sock in list(client.sockets.values()):
            self.drop_socket(sock)
        self._note("drop_all", client.conn.sid)

    def transport_changed(self, sock: NsSocket) -> None:
        self._note("transport", sock.ns)

    def session_opened(self) -> None:
        self.sessions.append("opened")

    def session_closed(self, client: Client, reason: str) -> None:
        self.sessions.append(f"closed: {reason}")

    async def next(self, what: str) -> Any:
        async with asyncio.timeout(BOUND):
            while True:
                for i, (name, value) in enumerate(self.calls):
                    if name == what:
                        del self.calls[i]
                        return value
                self.called.clear()
                await self.called.wait()


class Endpoint:
    """Owns the sessions as :class:`~switchboard.gateway.engine.Engine` does: hears once when
    each is over (``Client.finish``)."""

    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def finished(self, client: Client) -> None:
        self.forgotten.append(client.conn.sid)


def sessions(write_limit: int = 1_000_000) -> tuple[Sessions, Work, Endpoint]:
    work = Work()
    host = Sessions(ConnectionConfig(ping_interval=30, ping_timeout=30), write_limit, work,
                    m.EventMeters())
    return host, work, Endpoint()


def polling_session(host: Sessions, sid: str = "gw1.x", owner: Endpoint | None = None) -> Client:
    client = host.new_session(sid, "10.0.0.1", {"origin": "o"}, polling=Polling())
    if owner is not None:
        client.owned_by(owner.finished)
    assert client.polling is not None
    body = client.polling.get()
    assert body is not None and body.startswith(f'0{{"sid":"{sid}","upgrades":["websocket"]')
    return client


def with_socket(client: Client, ns: str = "/") -> NsSocket:
    sock = NsSocket(Session(f"gw1.{ns}", ns, "gw1"), client, live=True)
    client.add_socket(sock)
    return sock


async def test_a_new_session_queues_its_open_packet_and_is_counted() -> None:
    host, _, _ = sessions()
    polling_session(host)
    assert host.stats() == {"connections": 1, "transports": {"websocket": 0, "polling": 1}}


async def test_packets_go_to_the_pipelines_in_order() -> None:
    host, work, _ = sessions()
    client = polling_session(host)
    host.on_message(client, "40")
    assert await work.next("connect") == ConnectRequested("/", {})
    client.conn.accept("/", "gw1.s")
    host.on_message(client, '42["hi",1]')
    assert await work.next("event") == EventReceived("/", "hi", [1], None)
    assert host.counters["events"] == 1


async def test_a_client_close_drops_its_sockets_and_ends_the_session() -> None:
    host, work, _endpoint = sessions()
    client = polling_session(host)
    with_socket(client)
    host.on_message(client, "1")
    assert await work.next("drop") == "/"
    assert client.polling is not None and client.polling.finished


async def test_bad_input_closes_only_that_session() -> None:
    host, work, endpoint = sessions()
    bad = polling_session(host, "gw1.bad", endpoint)
    good = polling_session(host, "gw1.good", endpoint)
    with_socket(bad)
    host.on_message(bad, "9 nonsense")
    assert await work.next("drop") == "/"
    assert bad.conn.closed and not good.conn.closed
    assert host.counters["closed_bad_input"] == 1
    assert bad.polling is not None and bad.polling.finished
    assert endpoint.forgotten == ["gw1.bad"]  # its endpoint forgets it
    host.bad_input(good, "invalid UTF-8 in a text frame", 1007)
    assert good.lost and endpoint.forgotten == ["gw1.bad", "gw1.good"]
    assert host.stats()["connections"] == 1


async def test_a_client_that_stops_polling_is_cut_off_at_the_write_limit() -> None:
    host, work, endpoint = sessions(write_limit=150)  # the OPEN packet fits
    client = polling_session(host, owner=endpoint)
    with_socket(client)
    client.queue(["42" + "x" * 200])
    assert await work.next("drop") == "/"
    assert client.lost and "gw1.x" in endpoint.forgotten


async def test_shutdown_tells_every_live_socket_then_closes() -> None:
    host, work, _ = sessions()
    client = polling_session(host)
    host.on_message(client, "40")
    await work.next("connect")
    client.conn.accept("/", "gw1.s")
    with_socket(client)
    host.announce_shutdown()
    assert client.polling is not None
    body = client.polling.get()
    assert body is not None and '"server shutdown"' in body
    host.close_all("server shutdown")
    assert await work.next("drop") == "/"
    # No CLOSE for the next poll (python-engineio would not reconnect after one): the
    # session is over, so that poll fails and the client reconnects elsewhere.
    assert client.polling.finished


def test_close_reasons_are_a_bounded_label_set() -> None:
    assert bounded_reason("ping timeout") == "ping timeout"
    assert bounded_reason("anything a client made up") == "bad input"
