"""python-socketio's AsyncClient against a real gateway, backbone and service."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from tests.support.cluster import Cluster

WAIT = 10.0


async def connect(url: str, namespaces: list[str] | None = None, **kw: Any) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await asyncio.wait_for(
        client.connect(url, transports=["websocket"], namespaces=namespaces or ["/"], **kw), WAIT
    )
    return client


async def test_connect_emit_ack_and_binary(mini_cluster: Cluster) -> None:
    hello: asyncio.Queue[Any] = asyncio.Queue()
    echoed: asyncio.Queue[Any] = asyncio.Queue()
    client = socketio.AsyncClient(reconnection=False)
    client.on("hello", hello.put_nowait)
    client.on("echoed", lambda *args: echoed.put_nowait(args))
    await asyncio.wait_for(client.connect(mini_cluster.url(), transports=["websocket"]), WAIT)
    try:
        assert await asyncio.wait_for(hello.get(), WAIT) == {"ns": "/"}
        ack = await client.call("echo", {"a": [1, "two", None]}, timeout=WAIT)
        assert ack == {"a": [1, "two", None]}
        await client.emit("echo", "no ack wanted")
        assert await asyncio.wait_for(echoed.get(), WAIT) == ({"a": [1, "two", None]},)
        assert await asyncio.wait_for(echoed.get(), WAIT) == ("no ack wanted",)
        blob = bytes(range(256))
        ack = await client.call("echo", {"blob": blob, "nested": [b"\x00", "x"]}, timeout=WAIT)
        assert ack == {"blob": blob, "nested": [b"\x00", "x"]}
    finally:
        await client.disconnect()


async def test_two_namespaces_on_one_connection(mini_cluster: Cluster) -> None:
    client = await connect(mini_cluster.url(), namespaces=["/", "/other"])
    try:
        main = await client.call("whoami", timeout=WAIT)
        other = await client.call("whoami", namespace="/other", timeout=WAIT)
        assert main["ns"] == "/" and other["ns"] == "/other"
        assert main["sid"] != other["sid"]
        assert client.get_sid("/") == main["sid"]
        assert client.get_sid("/other") == other["sid"]
        assert mini_cluster.stats()["connections"] >= 1
    finally:
        await client.disconnect()


async def refusal(url: str, namespace: str, auth: Any = None) -> Any:
    """Connect expecting a CONNECT_ERROR; return its data as python-socketio hands it over."""
    client = socketio.AsyncClient(reconnection=False)
    errors: asyncio.Queue[Any] = asyncio.Queue()
    client.on("connect_error", errors.put_nowait, namespace=namespace)
    try:
        await asyncio.wait_for(
            client.connect(url, transports=["websocket"], namespaces=[namespace], auth=auth),
            WAIT,
        )
    except socketio.exceptions.ConnectionError:
        pass
    else:
        raise AssertionError(f"CONNECT to {namespace} succeeded")
    finally:
        await client.disconnect()
    return await asyncio.wait_for(errors.get(), WAIT)


async def test_unknown_namespace_and_refusal(mini_cluster: Cluster) -> None:
    assert await refusal(mini_cluster.url(), "/nope") == {"message": "Invalid namespace"}
    assert await refusal(mini_cluster.url(), "/", auth={"refuse": True}) == {
        "message": "refused by test"}


async def test_failed_ack_and_error_event(mini_cluster: Cluster) -> None:
    client = await connect(mini_cluster.url())
    errors: asyncio.Queue[Any] = asyncio.Queue()
    client.on("error", errors.put_nowait)
    try:
        assert await client.call("join", timeout=WAIT) == {"success": False,
                                                           "error": "room: required"}
        assert await client.call("no such event", timeout=WAIT) == {
            "success": False, "error": "unknown event: no such event"}
        await client.emit("join", 42)
        assert await asyncio.wait_for(errors.get(), WAIT) == {"event": "join",
                                                             "message": "room: required"}
    finally:
        await client.disconnect()


async def test_room_fanout_reaches_members_only(mini_cluster: Cluster) -> None:
    a, b, c = [await connect(mini_cluster.url()) for _ in range(3)]
    got: dict[str, asyncio.Queue[Any]] = {}
    for name, client in (("a", a), ("b", b), ("c", c)):
        queue: asyncio.Queue[Any] = asyncio.Queue()
        got[name] = queue
        client.on("said", lambda *args, q=queue: q.put_nowait(args))
    try:
        assert (await a.call("join", "r1", timeout=WAIT))["success"]
        assert (await b.call("join", "r1", timeout=WAIT))["success"]
        await a.call("say", ("r1", "hi", b"\x01"), timeout=WAIT)
        assert await asyncio.wait_for(got["b"].get(), WAIT) == ("hi", b"\x01")
        # c is in no room, a is the sender: neither gets it. A marker proves delivery order.
        assert (await c.call("join", "r1", timeout=WAIT))["success"]
        await b.call("say", ("r1", "second"), timeout=WAIT)
        assert await asyncio.wait_for(got["c"].get(), WAIT) == ("second",)
        assert await asyncio.wait_for(got["a"].get(), WAIT) == ("second",)
        assert got["a"].empty() and got["c"].empty()
        assert (await a.call("leave", "r1", timeout=WAIT))["success"]
        await b.call("say", ("r1", "third"), timeout=WAIT)
        assert await asyncio.wait_for(got["c"].get(), WAIT) == ("third",)
        assert got["a"].empty()
    finally:
        for client in (a, b, c):
            await client.disconnect()


async def test_server_to_client_ack_returns_to_the_service(mini_cluster: Cluster) -> None:
    client = await connect(mini_cluster.url())
    answered: asyncio.Queue[Any] = asyncio.Queue()
    client.on("question", lambda q: {"answer": q["q"] * 2, "bin": b"\x07"})
    client.on("answered", answered.put_nowait)
    try:
        await client.emit("ask", {"q": 21})
        assert await asyncio.wait_for(answered.get(), WAIT) == {"answer": 42, "bin": b"\x07"}
    finally:
        await client.disconnect()
