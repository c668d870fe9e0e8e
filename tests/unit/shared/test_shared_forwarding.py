"""One request per event, through real ZeroMQ sockets: a filter service passes an event it
lets through on to the owner (its ``route``), and the owner answers the gateway straight;
a CONNECT goes through its stages the same way."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import REGISTRY

from switchboard.shared.envelope import Emit, Reply, Request, RequestKind, fail, reply_to
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_connect, on_event, on_filter, on_sync
from tests.support.backbone import FakeGateway, running_broker, running_service
from tests.support.polling import poll_until
from tests.support.ports import tcp

K = RequestKind


class Guard(Service):
    """Refuses ``bad``, cleans the rest; owns ``guarded`` itself."""

    name = "guard"

    @on_filter("*")
    async def filter(self, request: Request) -> Reply | None:
        if request.args == ["bad"]:
            return fail(request, "not allowed")
        return reply_to(request, args=[*request.args, "cleaned"])

    @on_event("/", "guarded")
    async def guarded(self, request: Request) -> Reply:
        return reply_to(request, ack=["guard owns it", *request.args])


class StatelessOwner(Service):
    """Owns ``say`` and keeps no state about sockets (no SYNC: no resync first)."""

    name = "owner"

    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher)
        self.seen: list[tuple[Any, bool]] = []

    @on_event("/", "say")
    async def say(self, request: Request) -> Reply:
        self.seen.append((request.args, request.forwarded))
        return reply_to(request, ack=["owner", *request.args])


class Owner(StatelessOwner):
    """Owns ``say``; stateful (a SYNC route), so it asks unknown gateways to resync."""

    @on_sync()
    async def sync(self, request: Request) -> None:
        return None


async def until_passed_on(gw: FakeGateway, first: str, owner: str, s: Any) -> None:
    """Wait (bounded) until the filter's DEALER to the owner is connected: until then it
    answers "service unavailable" itself (to the other DEALER, unread here)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            await gw.request(first, answered_at=owner, timeout=0.2, kind=K.FILTER, session=s,
                             event="say", args=["warm"], route=("owner",))
            return
        except TimeoutError:
            assert time.monotonic() < deadline, "the filter never reached the owner"


def forwards(service: str, to: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "switchboard_service_forwards_total", {"service": service, "to": to, "outcome": outcome})
    return value or 0.0


async def test_a_filtered_event_goes_on_to_its_owner_which_answers_the_gateway() -> None:
    owner_bind = tcp()
    with running_broker() as broker:
        async with running_service(Owner, broker, bind=owner_bind) as (owner, _), \
                running_service(Guard, broker, services={"owner": [owner_bind]}) as (_, guard):
            gw = FakeGateway(instance="i1")
            try:
                # Connected to both, as a gateway is before it sends events.
                await gw.request(owner_bind, kind=K.HEARTBEAT)
                await gw.request(guard.bind, kind=K.HEARTBEAT)
                s = gw.session()
                await until_passed_on(gw, guard.bind, owner_bind, s)
                owner.seen.clear()
                before = forwards("guard", "owner", "sent")
                reply = await gw.request(guard.bind, answered_at=owner_bind, kind=K.FILTER,
                                         session=s, event="say", args=["hi"], route=("owner",))
                # The owner saw the cleaned args, passed on; its reply came to the gateway
                # over the gateway's own DEALER to the owner.
                assert (reply.ok, reply.ack, reply.service) == (
                    True, ["owner", "hi", "cleaned"], "owner")
                assert owner.seen == [(["hi", "cleaned"], True)]
                assert forwards("guard", "owner", "sent") - before == 1
                refused = await gw.request(guard.bind, kind=K.FILTER, session=s, event="say",
                                           args=["bad"], route=("owner",))
                assert (refused.ok, refused.error, refused.service) == (
                    False, "not allowed", "guard")
                assert len(owner.seen) == 1  # a refused event never reaches the owner
                # Filtered and owned by the same service: handled there, no extra hop.
                own = await gw.request(guard.bind, kind=K.FILTER, session=s, event="guarded",
                                       args=["x"], route=("guard",))
                assert (own.ok, own.ack) == (True, ["guard owns it", "x", "cleaned"])
            finally:
                gw.close()


async def test_a_request_waits_for_the_first_connection_to_a_service_starting_later() -> None:
    """Services start in any order: an event for an owner this filter has never been
    connected to waits for that first connection (bounded) instead of failing."""
    owner_bind = tcp()
    with running_broker() as broker:
        async with running_service(Guard, broker,
                                   services={"owner": [owner_bind]}) as (_, guard):
            gw = FakeGateway(instance="i1")
            try:
                s = gw.session()
                served = await gw.request(guard.bind, kind=K.FILTER, session=s,
                                          event="guarded", args=["x"], route=("guard",))
                assert served.ok  # the guard serves; the owner does not exist yet
                waited = forwards("guard", "owner", "waited")
                pending = asyncio.create_task(gw.request(
                    guard.bind, answered_at=owner_bind, kind=K.FILTER, session=s,
                    event="say", args=["early"], route=("owner",)))
                await poll_until(lambda: asyncio.sleep(0, forwards("guard", "owner", "waited")),
                                 lambda n: n == waited + 1, "the event held for the owner", 5.0)
                assert not pending.done()
                async with running_service(StatelessOwner, broker,
                                           bind=owner_bind) as (owner, _):
                    # The owner gets it (its reply may beat this fake gateway's own DEALER
                    # to the new owner, which a real gateway has connected before it asks).
                    await poll_until(lambda: asyncio.sleep(0, list(owner.seen)), bool,
                                     "the held event reaching the owner", 10.0)
                    assert owner.seen == [(["early", "cleaned"], True)]
                    assert not pending.done() or pending.result().ok
                    pending.cancel()
            finally:
                gw.close()


async def test_an_owner_that_cannot_be_reached_fails_the_event() -> None:
    with running_broker() as broker:
        nowhere = tcp()  # nothing listens there
        async with running_service(Guard, broker,
                                   services={"owner": [nowhere]}) as (_, guard):
            gw = FakeGateway(instance="i1")
            try:
                s = gw.session()
                for route in (("owner",), ("unconfigured",)):
                    # Never connected: held until the gateway's deadline at most, then failed.
                    reply = await gw.request(guard.bind, kind=K.FILTER, session=s, event="say",
                                             args=["hi"], route=route,
                                             deadline=time.time() + 0.5)
                    assert (reply.ok, reply.error) == (False, "service unavailable")
                assert forwards("guard", "unconfigured", "unavailable") >= 1
            finally:
                gw.close()


class Gate(Service):
    """The first CONNECT stage (as auth is): names the user from ``auth``."""

    name = "gate"

    @on_connect("*", priority=10)
    async def connect(self, request: Request) -> Reply:
        assert request.session is not None and request.auth is not None
        session = request.session.with_user(request.auth["user"], request.auth["user"], "user")
        return reply_to(request, session=session, joins=(f"user:{session.user_id}",),
                        emits=(Emit("welcome", [session.user_id]),))


class Check(Service):
    """The middle stage (as moderation is): refuses a banned user by the session it got."""

    name = "check"

    @on_connect("*", priority=20)
    async def connect(self, request: Request) -> Reply:
        assert request.session is not None
        if request.session.user_id == "banned":
            return fail(request, "You are banned")
        return reply_to(request, emits=(Emit("checked"),))


class Last(Service):
    """The last stage (as room is): sees everything the stages before it set."""

    name = "last"

    def __init__(self, publisher: Publisher) -> None:
        super().__init__(publisher)
        self.seen: list[tuple[str | None, tuple[str, ...], bool]] = []

    @on_connect("*", priority=30)
    async def connect(self, request: Request) -> Reply:
        assert request.session is not None
        self.seen.append((request.session.user_id, request.joins, request.forwarded))
        return reply_to(request, joins=("lobby",))


async def test_a_connect_goes_through_every_stage_in_one_request() -> None:
    """auth → moderation → room as one request: each stage passes on the session it set
    and what it asked for; the last answers the gateway with all of it, in stage order; a
    refusal says who refused, with the session as far as it got."""
    check_bind, last_bind = tcp(), tcp()
    with running_broker() as broker:
        async with running_service(Last, broker, bind=last_bind) as (last, _), \
                running_service(Check, broker, bind=check_bind,
                                services={"last": [last_bind]}) as (_, _check), \
                running_service(Gate, broker, services={"check": [check_bind],
                                                        "last": [last_bind]}) as (_, gate):
            gw = FakeGateway(instance="i1")
            try:
                for endpoint in (gate.bind, check_bind, last_bind):
                    await gw.request(endpoint, kind=K.HEARTBEAT)
                route = ("check", "last")
                deadline = time.monotonic() + 10
                while True:  # until both forwarding DEALERs are connected
                    try:
                        warm = await gw.request(gate.bind, answered_at=last_bind, timeout=0.2,
                                                kind=K.CONNECT, session=gw.session(9),
                                                auth={"user": "warm"}, route=route)
                        if warm.ok:
                            break
                    except TimeoutError:
                        pass
                    assert time.monotonic() < deadline, "the stages never reached each other"
                last.seen.clear()
                reply = await gw.request(gate.bind, answered_at=last_bind, kind=K.CONNECT,
                                         session=gw.session(1), auth={"user": "ann"},
                                         route=route)
                assert reply.ok and reply.service == "last"
                assert reply.session is not None and reply.session.user_id == "ann"
                assert reply.joins == ("user:ann", "lobby")
                assert [e.event for e in reply.emits] == ["welcome", "checked"]
                assert last.seen == [("ann", ("user:ann",), True)]
                refused = await gw.request(gate.bind, answered_at=check_bind, kind=K.CONNECT,
                                           session=gw.session(2), auth={"user": "banned"},
                                           route=route)
                assert (refused.ok, refused.error, refused.service) == (
                    False, "You are banned", "check")
                assert refused.session is not None and refused.session.user_id == "banned"
                assert refused.joins == () and len(last.seen) == 1  # never reached the last
            finally:
                gw.close()
