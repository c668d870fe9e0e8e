"""gateway.client: one session's output over either transport, its ordered work lane, and the
switch from polling to WebSocket. A recording stand-in for the asyncio transport; everything
else is real (websockets' framing included)."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.gateway import wsframe
from switchboard.gateway.client import Client
from switchboard.gateway.output import CloseMode, Corker
from switchboard.gateway.protocol import Connection, ConnectionConfig
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.transport import WsTransport


class Transport:
    """What a WsTransport and a Client need of an asyncio transport."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str) -> Any:
        return None


class Owner:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.ended: list[str] = []

    def on_message(self, client: Client, message: str | bytes) -> None:
        self.messages.append(message)

    def client_lost(self, client: Client, reason: str) -> None:
        self.ended.append(reason)

    def bad_input(self, client: Client, reason: str, code: int) -> None:
        self.ended.append(reason)


def ws_client(write_limit: int = 1000) -> tuple[Client, Transport, list[Client]]:
    slow: list[Client] = []
    client = Client(Connection("s", ConnectionConfig(), 0.0), "", {}, write_limit,
                    slow.append, Corker())
    link = WsTransport(1_000_000)
    transport = Transport()
    link.connection_made(transport)  # type: ignore[arg-type]
    client.attach(link, Owner())
    return client, transport, slow


async def next_iteration() -> None:
    """The corker writes in the next loop iteration: let exactly one pass."""
    await asyncio.sleep(0)


async def test_everything_written_in_one_iteration_leaves_in_one_write() -> None:
    client, transport, _ = ws_client()
    client.flush()  # the OPEN packet
    client.write(wsframe.encode("42[1]"))
    client.write(wsframe.encode("42[2]"))
    assert transport.writes == []
    await next_iteration()
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(wsframe.encode("42[1]") + wsframe.encode("42[2]"))


async def test_a_client_too_slow_to_read_is_reported_once() -> None:
    client, transport, slow = ws_client(write_limit=10)
    transport.buffered = 11
    client.write(b"x")
    client.write(b"y")
    assert slow == [client] and transport.writes == []


async def test_polling_output_waits_for_a_get_and_is_answered_when_one_waits() -> None:
    answers: list[str] = []

    class Responder:
        def respond(self, body: str) -> None:
            answers.append(body)

    client = Client(Connection("s", ConnectionConfig(), 0.0, ("websocket",)), "", {}, 1000,
                    lambda c: None, Corker(), polling=Polling())
    client.flush()
    assert client.polling is not None
    assert client.polling.get() is not None  # the OPEN packet
    client.queue(["42[1]"])  # nobody waits: it stays queued
    assert client.polling.get() == "42[1]"
    assert client.polling.get() is None
    client.wait_poll(Responder())
    client.queue(["42[2]"])
    await next_iteration()
    assert answers == ["42[2]"] and client.responder is None


async def test_closing_a_polling_session_tells_the_waiting_poll_by_mode() -> None:
    finished: list[Client] = []
    for mode, expected in ((CloseMode.ABORT, ["1"]), (CloseMode.CLIENT, ["6"]),
                           (CloseMode.GRACEFUL, ["1"])):
        answers: list[str] = []

        class Responder:
            def respond(self, body: str, answers: list[str] = answers) -> None:
                answers.append(body)

        client = Client(Connection("s", ConnectionConfig(), 0.0), "", {}, 1000,
                        lambda c: None, Corker(), polling=Polling())
        client.owned_by(finished.append)
        assert client.polling is not None
        client.polling.get()
        client.wait_poll(Responder())
        client.close(1000, "bye", mode)
        assert answers == expected, mode
    assert len(finished) == 3


async def test_work_runs_concurrently_but_sends_and_applies_in_order() -> None:
    client, _, _ = ws_client()
    order: list[str] = []
    release = asyncio.Event()

    async def first(turn: Any) -> None:
        await turn.may_send()
        order.append("send 1")
        turn.sent.set_result(None)
        await release.wait()
        await turn.may_apply()
        order.append("apply 1")

    async def second(turn: Any) -> None:
        await turn.may_send()
        order.append("send 2")
        await turn.may_apply()
        order.append("apply 2")

    client.lane.submit(first)
    client.lane.submit(second)
    async with asyncio.timeout(5):
        while order != ["send 1", "send 2"]:
            await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(5):
        while len(order) < 4:
            await asyncio.sleep(0)
    assert order == ["send 1", "send 2", "apply 1", "apply 2"]
    assert not client.busy
