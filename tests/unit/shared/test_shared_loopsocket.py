"""LoopSocket through real ZeroMQ sockets: no message is stranded by the edge-triggered FD."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import cast

import pytest
import zmq

from switchboard.shared import process
from switchboard.shared.loopsocket import BURST, LoopSocket, plain_socket, watched_dealer
from tests.support.ports import tcp


def _pair(ctx: zmq.Context[zmq.Socket[bytes]]) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], str]:
    endpoint = tcp()
    router = plain_socket(ctx, zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    dealer = plain_socket(ctx, zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    return router, dealer, endpoint


async def _until(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_ping_pong_never_stalls() -> None:
    """Thousands of request/reply turns where every receive is followed by a send (the
    send is what can swallow the FD's wake-up for the next message)."""
    ctx = zmq.Context()
    router_sock, dealer_sock, _ = _pair(ctx)
    turns = 3000
    got: list[int] = []

    def echo(frames: list[bytes]) -> None:
        router.send_multipart(frames)

    def answer(frames: list[bytes]) -> None:
        n = int(frames[0])
        got.append(n)
        if n < turns:
            dealer.send(str(n + 1).encode())

    router = LoopSocket(router_sock, echo)
    dealer = LoopSocket(dealer_sock, answer)
    router.start()
    dealer.start()
    try:
        dealer.send(b"1")
        await _until(lambda: len(got) == turns, timeout=30.0)
        assert got == list(range(1, turns + 1))
    finally:
        router.close()
        dealer.close()
        ctx.term()


async def test_a_burst_larger_than_one_turn_is_all_delivered_in_order() -> None:
    ctx = zmq.Context()
    router_sock, dealer_sock, _ = _pair(ctx)
    received: list[bytes] = []
    router = LoopSocket(router_sock, lambda frames: received.append(frames[1]))
    router.start()
    count = BURST * 4 + 7
    try:
        for i in range(count):
            dealer_sock.send(b"%d" % i)
        await _until(lambda: len(received) == count)
        assert received == [b"%d" % i for i in range(count)]
    finally:
        router.close()
        dealer_sock.close(linger=0)
        ctx.term()


async def test_a_failing_handler_is_logged_and_the_next_message_still_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = zmq.Context()
    router_sock, dealer_sock, _ = _pair(ctx)
    received: list[bytes] = []

    def handle(frames: list[bytes]) -> None:
        if frames[1] == b"bad":
            raise ValueError("boom")
        received.append(frames[1])

    router = LoopSocket(router_sock, handle)
    router.start()
    try:
        with caplog.at_level(logging.ERROR, logger="switchboard.zmq"):
            dealer_sock.send(b"bad")
            dealer_sock.send(b"good")
            await _until(lambda: received == [b"good"])
        assert "handling a ZeroMQ message failed" in caplog.text
    finally:
        router.close()
        dealer_sock.close(linger=0)
        ctx.term()


async def test_stop_reading_keeps_sending() -> None:
    ctx = zmq.Context()
    router_sock, dealer_sock, _ = _pair(ctx)
    seen: list[list[bytes]] = []
    router = LoopSocket(router_sock, seen.append)
    router.start()
    try:
        dealer_sock.send(b"first")
        await _until(lambda: len(seen) == 1)
        identity = seen[0][0]
        router.stop_reading()
        dealer_sock.send(b"unread")
        router.send_multipart((identity, b"reply"))
        assert dealer_sock.poll(5000, zmq.POLLIN)
        assert dealer_sock.recv() == b"reply"
        # Nothing is read any more: the second request stays queued in ZeroMQ.
        await asyncio.sleep(0)
        assert len(seen) == 1
    finally:
        router.close()
        dealer_sock.close(linger=0)
        ctx.term()


def test_tune_gc_freezes_startup_objects_and_raises_the_threshold() -> None:
    before = gc.get_threshold()
    try:
        process.tune_gc()
        assert gc.get_threshold() == process.GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_messages_queued_in_one_iteration_leave_as_one_batch() -> None:
    """send_soon: what is queued for a peer in one loop iteration is one multipart message,
    in order; a message queued in a later iteration is a batch of its own."""
    ctx = zmq.Context()
    router_sock, dealer_sock, _ = _pair(ctx)
    at_router: list[list[bytes]] = []
    at_dealer: list[list[bytes]] = []
    router = LoopSocket(router_sock, at_router.append)
    dealer = LoopSocket(dealer_sock, at_dealer.append)
    router.start()
    dealer.start()
    try:
        for n in range(5):
            dealer.send_soon(b"%d" % n)
        await _until(lambda: at_router)
        [(identity, *bodies)] = at_router
        assert bodies == [b"0", b"1", b"2", b"3", b"4"]
        dealer.send_soon(b"later")
        for n in range(3):
            router.send_soon(b"r%d" % n, identity)
        await _until(lambda: len(at_router) == 2 and at_dealer)
        assert at_router[1] == [identity, b"later"]
        assert at_dealer == [[b"r0", b"r1", b"r2"]]
    finally:
        router.close()
        dealer.close()
        ctx.term()


async def test_a_batch_that_cannot_be_sent_is_reported_by_its_tags() -> None:
    ctx = zmq.Context()
    dealer_sock = plain_socket(ctx, zmq.DEALER)
    dealer_sock.setsockopt(zmq.LINGER, 0)
    dealer_sock.setsockopt(zmq.IMMEDIATE, 1)  # no peer: a send fails at once
    dealer_sock.connect(tcp())
    failed: list[tuple[bytes, list[object]]] = []
    dealer = LoopSocket(dealer_sock, lambda frames: None,
                        send_failed=lambda peer, tags, exc: failed.append((peer, tags)))
    dealer.start()
    try:
        dealer.send_soon(b"a", tag=1)
        dealer.send_soon(b"b", tag=2)
        await _until(lambda: failed)
        assert failed == [(b"", [1, 2])]
    finally:
        dealer.close()
        ctx.term()


async def test_closing_sends_what_is_queued_first() -> None:
    ctx = zmq.Context()
    router_sock, dealer_sock, _ = _pair(ctx)
    got: list[list[bytes]] = []
    router = LoopSocket(router_sock, got.append)
    router.start()
    dealer = LoopSocket(dealer_sock, lambda frames: None)
    dealer.start()
    await _until(lambda: cast(int, dealer_sock.getsockopt(zmq.EVENTS)) & zmq.POLLOUT)
    dealer.send_soon(b"last words")
    dealer.close(linger=2000)  # libzmq may take a moment to pass it on
    try:
        await _until(lambda: got)
        assert got[0][1:] == [b"last words"]
    finally:
        router.close()
        ctx.term()


async def test_a_watched_dealer_reports_its_first_handshake_even_if_watched_late() -> None:
    ctx = zmq.Context()
    endpoint = tcp()
    router = plain_socket(ctx, zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    events: list[int] = []
    dealer, monitor = watched_dealer(ctx, [endpoint], 10, zmq.EVENT_HANDSHAKE_SUCCEEDED,
                                     events.append)
    try:
        dealer.send(b"hello")
        # The connection is up before the monitor is read at all...
        await _until(lambda: router.poll(0))
        assert router.recv_multipart()[1] == b"hello"
        monitor.start()
        # ...and its handshake is still reported: the monitor was attached before connect.
        await _until(lambda: events == [zmq.EVENT_HANDSHAKE_SUCCEEDED])
        assert dealer.getsockopt(zmq.LINGER) == 0 and dealer.getsockopt(zmq.IMMEDIATE) == 1
    finally:
        monitor.close()
        dealer.close(0)
        router.close(0)
        ctx.term()
