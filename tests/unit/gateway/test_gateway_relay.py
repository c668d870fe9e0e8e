"""gateway.relay with the peer link and the local endpoint stood in for: the order of a claim
and the polling requests that overtake it."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.gateway.http import HttpResponse
from switchboard.gateway.relay import Relay
from switchboard.shared.envelope import PeerKind, PeerReply, PeerRequest


class FakePeer:
    gateway = "gw0"
    instance = "i0"
    up = True


class FakePeers:
    """Answers a CLAIM when the test says so; POLLs at once with 200."""

    def __init__(self) -> None:
        self.peer = FakePeer()
        self.peers = {"gw0": self.peer}
        self.claim_reply: asyncio.Future[PeerReply] = asyncio.get_running_loop().create_future()
        self.sent: list[PeerRequest] = []
        self.on_lost: Any = None
        self.on_connected: Any = None
        self._ids = 0

    def new_request(self, **fields: Any) -> PeerRequest:
        self._ids += 1
        return PeerRequest(id=self._ids, gateway="gw1", instance="i1", deadline=0, **fields)

    async def request(self, peer: FakePeer, request: PeerRequest, timeout: float) -> PeerReply:
        self.sent.append(request)
        if request.kind is PeerKind.CLAIM:
            return await self.claim_reply
        return PeerReply(request.id, 200, b"6", "text/plain")

    async def find(self, gateway: str, timeout: float) -> FakePeer | None:
        return self.peers.get(gateway)

    def send(self, peer: FakePeer, request: PeerRequest) -> None:
        self.sent.append(request)


class FakeLocal:
    sessions: dict[str, Any] = {}

    def __init__(self) -> None:
        self.refused: list[Any] = []

    def refuse_probe(self, upgrade: Any) -> None:
        self.refused.append(upgrade)


class FakeUpgrade:
    open = True

    def __init__(self) -> None:
        self.refusals: list[HttpResponse] = []

    def refuse(self, response: HttpResponse) -> None:
        self.refusals.append(response)


class FakeAnswer:
    def __init__(self) -> None:
        self.done: asyncio.Future[HttpResponse] = asyncio.get_running_loop().create_future()

    def reply(self, response: HttpResponse) -> None:
        self.done.set_result(response)

    def respond(self, body: str) -> None:
        self.done.set_result(HttpResponse(200, body=body.encode()))

    def on_abort(self, callback: Any) -> None:
        pass


async def test_a_poll_that_overtook_a_refused_claim_goes_on_to_the_owner() -> None:
    """A probe and a poll of one session reach this gateway at once (a v2 client behind a
    balancer): the claim is refused (the session cannot move), and the poll, which waited
    for it, is passed on to the owner — not answered "Session ID unknown", which ended a
    live session."""
    peers, local = FakePeers(), FakeLocal()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)

    relay = Relay("gw1", peers, local, forward_timeout=5.0, poll_timeout=5.0,  # type: ignore[arg-type]
                  spawn=spawn)
    sid = "gw0.session"
    upgrade = FakeUpgrade()
    relay.claim(sid, upgrade, b"")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert sid in relay.claims
    poll = FakeAnswer()
    relay.pass_on(sid, "GET", b"", poll, forwarded=False)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert not poll.done.done()  # it waits for the claim
    peers.claim_reply.set_result(PeerReply(1, 409))  # the owner keeps the session
    response = await asyncio.wait_for(poll.done, 5)
    assert response.status == 200 and response.body == b"6"
    assert [r.kind for r in peers.sent] == [PeerKind.CLAIM, PeerKind.POLL]
    assert local.refused == [upgrade]  # the probe itself is refused, as before
    await asyncio.gather(*tasks)
