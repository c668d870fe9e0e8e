"""Three gateways (separate processes) on one broker with the miniapp service.

Checks that room fan-out crosses gateways, and that the broker's topic filtering keeps a
room's traffic away from gateways with no member in it (``publicationsReceived`` in each
gateway's ``/stats``), including after the last local member leaves (unsubscribe), and that
namespaces stay apart on one gateway.

Nothing sleeps to let things settle. "Did not arrive" is proved with markers: a later message
on the same path (same publisher socket, same broker pipe, same gateway connection) that does
arrive, so anything sent before it would have arrived first.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.peer import QueuedPeer
from tests.support.polling import poll_until

WAIT = 10.0
BURST = 50


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Broker + miniapp + three gateways; every process is stopped at the end, also when
    starting one of them fails."""
    cluster = Cluster(Path(tmp_path_factory.mktemp("multi")))
    try:
        cluster.start_broker()
        cluster.start_service("tests.support.miniapp")
        for _ in range(3):
            cluster.start_gateway("--ping-interval", "1", "--ping-timeout", "1")
        ids = {cluster.stats(i)["gateway"] for i in range(3)}
        assert len(ids) == 3, ids
        yield cluster
    finally:
        cluster.stop()


class Peer(QueuedPeer):
    """A client of the miniapp (WebSocket only) on one gateway: it joins, leaves and says."""

    def __init__(self, name: str) -> None:
        super().__init__(name, transports=["websocket"], wait=WAIT)

    async def join(self, room: str, ns: str = "/") -> None:
        assert await self.call("join", room, ns=ns) == {"success": True, "room": room}

    async def leave(self, room: str, ns: str = "/") -> None:
        assert await self.call("leave", room, ns=ns) == {"success": True, "room": room}

    async def say(self, room: str, *args: Any, ns: str = "/") -> None:
        assert await self.call("say", room, *args, ns=ns) == {"success": True}

    async def next_said(self, ns: str = "/") -> tuple[Any, ...]:
        """The arguments of the next ``said`` of ``ns``."""
        return (await self.receive("said", ns=ns)).args

    def assert_quiet(self, ns: str = "/") -> None:
        pending = [item.args for item in self.drain("said", ns=ns)]
        assert not pending, f"{self.name} got unexpected `said` on {ns}: {pending}"


class Peers:
    """Clients opened by one test, all disconnected at its end."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.peers: list[Peer] = []

    async def open(self, name: str, gateway: int, namespaces: list[str] | None = None) -> Peer:
        peer = Peer(name)
        self.peers.append(peer)
        # wait_timeout: python-socketio's default, the wait for the namespaces' CONNECT
        # answers these tests have always had.
        return await peer.connect(self.cluster.url(gateway), namespaces or ["/"], wait_timeout=1)

    async def spread(self, room: str, elsewhere: str | None = None) -> list[Peer]:
        """a and b on gateway 0 and c on gateway 1, all three joined to ``room``; with
        ``elsewhere`` also d on gateway 2, joined to that room."""
        a = await self.open("a@gw0", 0)
        b = await self.open("b@gw0", 0)
        c = await self.open("c@gw1", 1)
        d = None if elsewhere is None else await self.open("d@gw2", 2)
        for member in (a, b, c):
            await member.join(room)
        if d is None or elsewhere is None:
            return [a, b, c]
        await d.join(elsewhere)
        return [a, b, c, d]

    async def close(self) -> None:
        for peer in self.peers:
            await asyncio.wait_for(peer.client.disconnect(), WAIT)


@pytest.fixture
async def peers(cluster: Cluster) -> Any:
    """Each test starts on idle gateways: the previous test's connections are gone, so their
    unsubscribes cannot land in the middle of this test's counts."""
    await all_idle(cluster)
    opened = Peers(cluster)
    try:
        yield opened
    finally:
        await opened.close()
        await all_idle(cluster)


async def stats(cluster: Cluster, gateway: int) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.to_thread(cluster.stats, gateway)
    return result


async def poll_stats(
    cluster: Cluster, gateway: int, ready: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Read gateway's /stats until ``ready`` holds, or fail after WAIT seconds."""
    return await poll_until(lambda: stats(cluster, gateway), ready, f"gateway {gateway}: {what}",
                            WAIT, 0.02)


async def all_idle(cluster: Cluster) -> None:
    for gateway in range(3):
        await poll_stats(cluster, gateway, lambda s: s["connections"] == 0 and not s["rooms"],
                         "no connections")


async def burst(sender: Peer, room: str, count: int = BURST) -> None:
    """``count`` messages to ``room``, each acknowledged (the service has published it)."""
    await asyncio.wait_for(
        asyncio.gather(*(sender.say(room, "burst", i) for i in range(count))), WAIT
    )


async def receive_burst(peer: Peer, count: int = BURST) -> None:
    got = [await peer.next_said() for _ in range(count)]
    # One socket's events are handled in order, and one publisher's messages stay in order.
    assert got == [("burst", i) for i in range(count)]


async def test_room_message_crosses_gateways_to_members_only(
    cluster: Cluster, peers: Peers
) -> None:
    a, b, c, d = await peers.spread("r", elsewhere="s")

    await a.say("r", "hello", b"\x00\x01", {"n": 1})
    assert await b.next_said() == ("hello", b"\x00\x01", {"n": 1})
    assert await c.next_said() == ("hello", b"\x00\x01", {"n": 1})

    # Markers: b → r reaches a, so a's own message would have come first; a → s reaches d,
    # so r's message would have come first had gateway 2 forwarded it.
    await b.say("r", "from b")
    assert await a.next_said() == ("from b",)
    assert await c.next_said() == ("from b",)
    await a.say("s", "to d")
    assert await d.next_said() == ("to d",)
    for peer in (a, b, c, d):
        peer.assert_quiet()


async def test_gateway_without_members_receives_none_of_the_room(
    cluster: Cluster, peers: Peers
) -> None:
    a, b, c, d = await peers.spread("burst-room", elsewhere="elsewhere")
    before = [await stats(cluster, i) for i in range(3)]

    await burst(a, "burst-room")
    await receive_burst(b)
    await receive_burst(c)
    # Marker through gateway 2's broker pipe: after it, nothing of the burst is in flight.
    await a.say("elsewhere", "end")
    assert await d.next_said() == ("end",)

    def burst_in(i: int) -> Callable[[dict[str, Any]], bool]:
        return lambda s: bool(
            s["publicationsReceived"] >= before[i]["publicationsReceived"] + BURST)

    after = [await poll_stats(cluster, i, burst_in(i), f"publicationsReceived +{BURST}")
             for i in (0, 1)]
    after.append(await stats(cluster, 2))
    grew = [after[i]["publicationsReceived"] - before[i]["publicationsReceived"] for i in range(3)]
    delivered = [after[i]["deliveries"] - before[i]["deliveries"] for i in range(3)]
    assert grew == [BURST, BURST, 1], "gateway 2 got room traffic it has no member for"
    # gateway 0 writes to b only (a is the sender), gateway 1 to c, gateway 2 the marker to d.
    assert delivered == [BURST, BURST, 1]
    for peer in (a, b, c, d):
        peer.assert_quiet()


async def test_last_member_leaving_unsubscribes_the_gateway(
    cluster: Cluster, peers: Peers
) -> None:
    a, b, c = await peers.spread("leaving-room")
    await burst(a, "leaving-room", 5)
    await receive_burst(b, 5)
    await receive_burst(c, 5)

    subscribed = (await stats(cluster, 1))["subscriptions"]
    await c.leave("leaving-room")  # c was gateway 1's only member of the room
    assert (await stats(cluster, 1))["subscriptions"] == subscribed - 1
    # Barrier: a join's ack waits for the broker to confirm the new subscription, and the
    # broker reads gateway 1's (un)subscriptions in order, so the unsubscribe is in force.
    await c.join("after-leaving")
    before = [await stats(cluster, i) for i in range(2)]

    await burst(a, "leaving-room")
    await receive_burst(b)
    await a.say("after-leaving", "end")  # marker through gateway 1's broker pipe
    assert await c.next_said() == ("end",)

    after_0 = await poll_stats(
        cluster, 0,
        lambda s: s["publicationsReceived"] >= before[0]["publicationsReceived"] + BURST,
        f"publicationsReceived +{BURST}",
    )
    after_1 = await stats(cluster, 1)
    assert after_0["publicationsReceived"] - before[0]["publicationsReceived"] == BURST
    assert after_1["publicationsReceived"] - before[1]["publicationsReceived"] == 1
    assert after_1["deliveries"] - before[1]["deliveries"] == 1
    for peer in (a, b, c):
        peer.assert_quiet()


async def test_namespaces_stay_apart_on_one_gateway(cluster: Cluster, peers: Peers) -> None:
    a = await peers.open("a@gw0", 0)  # "/"
    o = await peers.open("o@gw0", 0, ["/other"])
    c = await peers.open("c@gw1", 1)  # "/"
    e = await peers.open("e@gw1", 1, ["/other"])
    # The same room name in both namespaces, with members of both on gateway 1.
    for member in (a, c):
        await member.join("ns-room")
    for member in (o, e):
        await member.join("ns-room", ns="/other")
    before = await poll_stats(cluster, 1, lambda s: s["namespaces"] == {"/": 1, "/other": 1},
                              "one socket in each namespace")

    await a.say("ns-room", "main")
    assert await c.next_said() == ("main",)
    # Marker in "/other" to the same gateway: e's first message is it, not "/"'s.
    await o.say("ns-room", "other", ns="/other")
    assert await e.next_said("/other") == ("other",)
    # And the other way round: c never hears "/other".
    await a.say("ns-room", "main again")
    assert await c.next_said() == ("main again",)
    await burst(a, "ns-room", 5)
    await receive_burst(c, 5)
    await o.say("ns-room", "other again", ns="/other")
    assert await e.next_said("/other") == ("other again",)

    after = await stats(cluster, 1)
    assert after["publicationsReceived"] - before["publicationsReceived"] == 9
    assert after["deliveries"] - before["deliveries"] == 9
    for peer, ns in ((a, "/"), (c, "/"), (o, "/other"), (e, "/other")):
        peer.assert_quiet(ns)


async def test_unsubscribe_still_works_after_a_broker_silence(
    cluster: Cluster, peers: Peers
) -> None:
    """A gateway that re-issued its subscriptions during a broker silence must still stop
    receiving a room when its last member leaves. (Last in the module: it pauses the broker.)
    """
    a, b, c = await peers.spread("silence-room")

    broker = cluster.parts["broker"]
    broker.signal(signal.SIGSTOP)
    try:
        # "broker": false means the gateway counted the silence and re-issued its subscriptions.
        await poll_stats(cluster, 1, lambda s: s["broker"] is False, "broker seen as silent")
    finally:
        broker.signal(signal.SIGCONT)
    for gateway in range(3):
        await poll_stats(cluster, gateway, lambda s: s["broker"] is True, "broker back")

    await a.say("silence-room", "still there")
    assert await b.next_said() == ("still there",)
    assert await c.next_said() == ("still there",)

    await c.leave("silence-room")
    await c.join("after-silence")  # barrier, as in the test above
    before = await stats(cluster, 1)
    await burst(a, "silence-room")
    await receive_burst(b)
    await a.say("after-silence", "end")
    assert await c.next_said() == ("end",)
    after = await stats(cluster, 1)
    assert after["publicationsReceived"] - before["publicationsReceived"] == 1, (
        "gateway 1 still receives a room it has no member in: its unsubscribe did not reach "
        "the broker after the subscriptions were re-issued"
    )
    for peer in (a, b, c):
        peer.assert_quiet()
