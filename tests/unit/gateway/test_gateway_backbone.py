"""gateway.backbone against a real service behind its real ROUTER socket (a broker thread,
the runner): request/reply by id, the readiness handshake, heartbeats that notice a
restart, and failures that come back as ServiceUnavailable rather than hangs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import zmq.asyncio

from switchboard.gateway import routing
from switchboard.gateway.backbone import Backbone
from switchboard.shared.envelope import (
    GatewayStatus,
    Reply,
    Request,
    RequestKind,
    Session,
    reply_to,
)
from switchboard.shared.errors import ServiceUnavailable
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_connect, on_event, on_filter, on_sync
from tests.support.backbone import running_broker, running_service
from tests.support.ports import tcp


class Echo(Service):
    name = "echo"

    @on_connect("/")
    async def connect(self, request: Request) -> None:
        return None

    @on_event("/", "echo")
    async def echo(self, request: Request) -> Reply:
        return reply_to(request, ack=request.args)


def make(publisher: Publisher) -> Echo:
    return Echo(publisher)


SESSION = Session("gw1.s", "/", "gw1")


async def _no_restart(service: str) -> None:
    return None


@contextlib.asynccontextmanager
async def started(endpoints: dict[str, list[str]], timeout: float,
                  on_restart: Callable[[str], Coroutine[Any, Any, None]] = _no_restart,
                  ) -> AsyncIterator[Backbone]:
    """A started backbone of gateway ``gw1`` to ``endpoints``; closed on the way out."""
    ctx = zmq.asyncio.Context()
    backbone = Backbone("gw1", endpoints, ctx, timeout, GatewayStatus, on_restart,
                        instance="i1")
    backbone.start()
    try:
        yield backbone
    finally:
        await backbone.close()
        ctx.term()


async def test_requests_heartbeats_and_a_restart() -> None:
    restarts: list[str] = []

    async def on_restart(service: str) -> None:
        restarts.append(service)

    with running_broker() as broker:
        async with running_service(make, broker) as (service, cfg), \
                started({"echo": [cfg.bind]}, 2.0, on_restart) as backbone:
            assert await backbone.wait_described(5.0)
            assert backbone.is_up("echo")
            assert backbone.routing.owner("/", "echo") == routing.Owner("echo")
            reply = await backbone.request("echo", RequestKind.EVENT, session=SESSION,
                                           event="echo", args=[1, b"\x00"])
            assert reply.ack == [1, b"\x00"]
            many = await asyncio.gather(*(backbone.request(
                "echo", RequestKind.EVENT, session=SESSION, event="echo", args=[n])
                for n in range(50)))
            assert [r.ack for r in many] == [[n] for n in range(50)]  # matched by id
            # The same service, restarted: its new instance id shows in a heartbeat.
            service.instance = "restarted"
            assert await backbone.heartbeat("echo", 2.0)
            async with asyncio.timeout(5):
                while not restarts:
                    await asyncio.sleep(0.01)
            assert restarts == ["echo"]


async def test_a_service_that_is_not_there_fails_fast() -> None:
    async def on_restart(service: str) -> None:
        pass

    ctx = zmq.asyncio.Context()
    backbone = Backbone("gw1", {"nobody": [tcp()]}, ctx, 0.5, GatewayStatus, on_restart)
    backbone.start()
    try:
        with pytest.raises(ServiceUnavailable):
            await backbone.request("nobody", RequestKind.EVENT, session=SESSION, event="x")
        with pytest.raises(ServiceUnavailable):
            await backbone.request("unconfigured", RequestKind.EVENT, session=SESSION)
        assert not await backbone.heartbeat("nobody", 0.2)
        assert not backbone.is_up("nobody")
    finally:
        await backbone.close()
        ctx.term()


class Guard(Service):
    name = "guard"

    @on_filter("*")
    async def filter(self, request: Request) -> Reply:
        return reply_to(request, args=[*request.args, "cleaned"])


class Owner(Echo):
    """Stateful: answers ``resync`` until this gateway sent its SYNC."""

    name = "owner"

    @on_sync()
    async def sync(self, request: Request) -> None:
        return None


async def test_a_routed_event_is_answered_by_its_owner_which_may_ask_for_a_resync() -> None:
    synced: list[str] = []
    owner_bind = tcp()

    with running_broker() as broker:
        async with running_service(Owner, broker, bind=owner_bind) as (_, owner), \
                running_service(Guard, broker, services={"owner": [owner_bind]}) as (_, guard):
            ctx = zmq.asyncio.Context()
            backbone: Backbone | None = None

            async def on_restart(service: str) -> None:
                # The first resync (the readiness heartbeat's) sends nothing: the owner
                # stays unsynced, so the routed event's reply asks for it again.
                assert backbone is not None
                synced.append(service)
                if len(synced) > 1:
                    await backbone.request(service, RequestKind.SYNC, sockets=())

            backbone = Backbone("gw1", {"guard": [guard.bind], "owner": [owner.bind]}, ctx,
                                2.0, GatewayStatus, on_restart, instance="i1")
            backbone.start()
            try:
                assert await backbone.wait_described(5.0)
                deadline = asyncio.get_running_loop().time() + 10
                while True:  # until guard's own DEALER to the owner is connected
                    reply = await backbone.request(
                        "guard", RequestKind.FILTER, session=SESSION, event="echo", args=[1],
                        route=("owner",))
                    if reply.ok or asyncio.get_running_loop().time() > deadline:
                        break
                    assert reply.error == "service unavailable"
                # The owner answered (over the gateway's DEALER to it); its resync was for
                # the owner, not for the service the request was sent to.
                assert (reply.ok, reply.ack, reply.service) == (True, [1, "cleaned"], "owner")
                assert synced.count("owner") >= 2 and "guard" not in synced
            finally:
                await backbone.close()
                ctx.term()


async def answered_once(backbone: Backbone, name: str, fake: zmq.asyncio.Socket) -> None:
    """One request to ``name`` that its fake ROUTER answers, retried (bounded) while the
    backbone's DEALER (``IMMEDIATE``) is not connected yet."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        asked = asyncio.create_task(backbone.request(name, RequestKind.HEARTBEAT))
        try:
            identity, body = await asyncio.wait_for(fake.recv_multipart(), 0.2)
        except TimeoutError:
            with pytest.raises(ServiceUnavailable, match="not connected"):
                await asked
            assert asyncio.get_running_loop().time() < deadline, f"{name} never connected"
            continue
        await fake.send_multipart([identity, reply_to(Request.decode(body)).encode()])
        assert (await asyncio.wait_for(asked, 5.0)).ok
        return


async def test_a_request_a_service_took_with_it_fails_soon_after_the_connection_drops() -> None:
    """kill -9 of a service that had the request: no reply will ever come, so it fails
    (LOST_GRACE after the drop) instead of at its timeout — which would also hold up every
    later reply of its socket, applied in order."""
    ctx = zmq.asyncio.Context()
    address = tcp()
    fake = ctx.socket(zmq.ROUTER)  # a service that reads requests and answers only the first
    fake.setsockopt(zmq.LINGER, 0)
    fake.bind(address)

    async def on_restart(service: str) -> None:
        return None

    backbone = Backbone("gw1", {"mute": [address]}, ctx, 30.0, GatewayStatus, on_restart,
                        instance="i1")
    backbone.start()
    try:
        await answered_once(backbone, "mute", fake)
        taken = asyncio.create_task(backbone.request("mute", RequestKind.EVENT, event="y"))
        await asyncio.wait_for(fake.recv_multipart(), 5.0)  # it has the request ...
        fake.close(linger=0)  # ... and dies
        started = asyncio.get_running_loop().time()
        with pytest.raises(ServiceUnavailable, match="went away"):
            await asyncio.wait_for(taken, 10.0)  # not the 30 s timeout
        assert asyncio.get_running_loop().time() - started >= 0.5  # after the grace
    finally:
        await backbone.close()
        ctx.destroy(linger=0)


async def test_a_routed_request_fails_soon_when_a_service_further_along_dies() -> None:
    """The request went to the filter, which passed it on to the owner; the owner dies
    with it: the gateway's connection to the owner drops, and the request fails soon too."""
    ctx = zmq.asyncio.Context()
    filter_address, owner_address = tcp(), tcp()
    fakes = {}
    for name, address in (("filter", filter_address), ("owner", owner_address)):
        fakes[name] = ctx.socket(zmq.ROUTER)
        fakes[name].setsockopt(zmq.LINGER, 0)
        fakes[name].bind(address)

    async def on_restart(service: str) -> None:
        return None

    backbone = Backbone("gw1", {"filter": [filter_address], "owner": [owner_address]}, ctx,
                        30.0, GatewayStatus, on_restart, instance="i1")
    backbone.start()
    try:
        for name in fakes:  # both connected, as after the readiness handshake
            await answered_once(backbone, name, fakes[name])
        routed = asyncio.create_task(backbone.request(
            "filter", RequestKind.FILTER, event="say", route=("owner",)))
        await asyncio.wait_for(fakes["filter"].recv_multipart(), 5.0)  # passed on, say
        fakes["owner"].close(linger=0)  # and the owner dies with it
        with pytest.raises(ServiceUnavailable, match="service owner went away"):
            await asyncio.wait_for(routed, 10.0)  # not the 30 s timeout
    finally:
        fakes["filter"].close(linger=0)
        await backbone.close()
        ctx.destroy(linger=0)


async def test_a_group_naming_instances_the_gateway_cannot_reach_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    from switchboard.shared.partitions import Membership

    def partitioned(publisher: Publisher) -> Echo:
        echo = Echo(publisher)
        echo.group, echo.partition = "echoes", Membership.of(["echo", "echo-2"])
        return echo

    with running_broker() as broker:
        async with running_service(partitioned, broker) as (_, cfg), \
                started({"echo": [cfg.bind]}, 2.0) as backbone:
            assert await backbone.wait_described(5.0)
            assert backbone.routing.group("echoes") == Membership.of(["echo", "echo-2"])
    assert any("names instances of echoes that --services lacks: echo-2" in r.getMessage()
               for r in caplog.records)


async def test_the_readiness_handshake_does_not_wait_for_a_spare_instance() -> None:
    """A configured instance that its group's live member says is not a member (never
    started, or its lease lapsed) is not waited for: a gateway started meanwhile listens at
    once instead of after its whole ready timeout."""
    from switchboard.shared.partitions import Membership

    def leased(publisher: Publisher) -> Echo:
        echo = Echo(publisher)
        echo.group, echo.partition = "echoes", Membership.of(["echo"], 3)
        echo.configured = ("echo", "echo-2")
        return echo

    with running_broker() as broker:
        async with running_service(leased, broker) as (_, cfg), \
                started({"echo": [cfg.bind], "echo-2": [tcp()]}, 2.0) as backbone:
            loop = asyncio.get_running_loop()
            begun = loop.time()
            assert await backbone.wait_described(30.0)
            assert loop.time() - begun < 10.0  # the bound is 30 s; nothing answers echo-2
            assert backbone.routing.spare("echo-2") and "echo-2" not in backbone.instances


async def test_a_resync_describes_the_instance_before_it_sends_the_sync() -> None:
    """An instance that rejoined its group (its lease had lapsed) asks for the sockets
    again: by the time the SYNC is sent, the gateway routes to it as a member, so every
    departure after the snapshot reaches it."""
    from switchboard.shared.partitions import Membership

    def leased(publisher: Publisher) -> Echo:
        echo = Echo(publisher)
        echo.group, echo.partition = "echoes", Membership.of(["echo-2"], 3)
        echo.configured = ("echo", "echo-2")
        return echo

    seen: list[tuple[str, ...]] = []
    table: list[Backbone] = []

    async def on_restart(service: str) -> None:
        group = table[0].routing.group("echoes")
        seen.append(group.members if group is not None else ())

    with running_broker() as broker:
        async with running_service(leased, broker) as (echo, cfg), \
                started({"echo": [cfg.bind]}, 2.0, on_restart) as backbone:
            table.append(backbone)
            assert await backbone.wait_described(5.0)
            assert backbone.routing.group("echoes") == Membership.of(["echo-2"], 3)
            seen.clear()
            echo.partition = Membership.of(["echo", "echo-2"], 4)  # it rejoined
            await asyncio.wait_for(backbone.resync("echo"), 5.0)
            assert seen == [("echo", "echo-2")]
