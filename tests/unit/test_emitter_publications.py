"""switchboard.emitter against a real XSUB socket standing in for the broker's publish side:
what each view publishes, on which topic, and the errors of local misuse."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from switchboard.emitter import AsyncEmitter, Emitter, EmitterError
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication
from tests.support.backbone import running_broker

TIMEOUT_MS = 5000


@pytest.fixture
def broker() -> Iterator[tuple[zmq.Socket[bytes], str]]:
    """The real broker (in a thread) and a SUB socket on its subscriber side taking
    everything, in force (a broker heartbeat came through); the publishers' endpoint."""
    context = zmq.Context()
    with running_broker() as config:
        socket = context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(config.subscribe_bind)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        assert socket.poll(TIMEOUT_MS), "no broker heartbeat"
        try:
            yield socket, config.publish_bind
        finally:
            socket.close()
            context.term()


def received(socket: zmq.Socket[bytes]) -> tuple[bytes, Publication]:
    """The next publication, past the broker's own heartbeats and markers."""
    while True:
        assert socket.poll(TIMEOUT_MS), "nothing published"
        topic, *rest = socket.recv_multipart()
        if topic.startswith(topics.CONTROL) or rest in ([], [topics.SUBSCRIBED_MARKER]):
            continue
        return topic, Publication.decode(rest[0])


def test_each_target_publishes_on_its_topic(broker: tuple[zmq.Socket[bytes], str]) -> None:
    socket, endpoint = broker
    with Emitter(endpoint) as io:
        chat = io.of("/chat")
        io.to("r1").except_("gw1.7").emit("notice", {"a": 1}, b"\x00")
        chat.to_user("u9").emit("notice", 2)
        chat.to_socket("gw2.3").emit("notice", 3)
        chat.emit("notice", 4)
    topic, pub = received(socket)
    assert topic == topics.room("/", "r1")
    assert (pub.kind, pub.ns, pub.event, pub.args, pub.room, pub.exclude) == (
        PubKind.EMIT, "/", "notice", [{"a": 1}, b"\x00"], "r1", ("gw1.7",))
    assert pub.seq == 0 and pub.source == "emitter"  # not numbered: at-most-once
    topic, pub = received(socket)
    assert topic == topics.room("/chat", "user:u9") and pub.args == [2]
    topic, pub = received(socket)
    assert topic == topics.socket("gw2.3") and pub.sids == ("gw2.3",) and pub.args == [3]
    topic, pub = received(socket)
    assert topic == topics.namespace("/chat") and pub.room is None and pub.args == [4]


def test_views_leave_the_emitter_as_it_was(broker: tuple[zmq.Socket[bytes], str]) -> None:
    socket, endpoint = broker
    with Emitter(endpoint) as io:
        io.to("r1").except_("gw1.1")
        io.of("/chat")
        io.emit("plain")
    topic, pub = received(socket)
    assert topic == topics.namespace("/") and pub.exclude == ()


def test_the_async_emitter(broker: tuple[zmq.Socket[bytes], str]) -> None:
    import asyncio

    socket, endpoint = broker

    async def main() -> None:
        async with AsyncEmitter(endpoint) as io:
            await io.to("r2").emit("notice", "x")

    asyncio.run(main())
    topic, pub = received(socket)
    assert topic == topics.room("/", "r2") and pub.args == ["x"]


@pytest.mark.parametrize(("act", "message"), [
    (lambda io: io.emit("connect"), "'connect' is reserved by Socket.IO clients"),
    (lambda io: io.emit(""), "an event name is a non-empty string"),
    (lambda io: io.of("chat"), "a namespace starts with '/'"),
    (lambda io: io.to(""), "a room is a non-empty string"),
    (lambda io: io.to("a\x00b"), "a room is a non-empty string without NUL"),
    (lambda io: io.to_socket("nodot").emit("e"), "not a switchboard socket id"),
    (lambda io: io.to_socket("gw.1").except_("gw.2").emit("e"), "does not apply to one"),
])
def test_misuse_is_told_plainly(act, message, broker) -> None:
    _, endpoint = broker
    with Emitter(endpoint) as io, pytest.raises(EmitterError, match=message):
        act(io)


def test_no_broker_is_an_error_in_bounded_time() -> None:
    context = zmq.Context()
    holder = context.socket(zmq.PULL)  # holds a port nobody answers as a broker
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    try:
        with Emitter(f"tcp://127.0.0.1:{port}", ready_timeout=0.3) as io, pytest.raises(
                EmitterError, match=r"no broker at tcp://127\.0\.0\.1:\d+ within 0\.3 s"):
            io.emit("notice")
    finally:
        holder.close(linger=0)
        context.term()
