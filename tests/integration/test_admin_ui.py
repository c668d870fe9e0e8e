"""The Socket.IO Admin UI protocol over two gateways, spoken by python-socketio as the UI's
own client speaks it (the UI's page in Chromium: tests/browser/test_web_admin_ui.py):
sign-in, config, every socket of the cluster, per-gateway server stats, live notices, and
commands that reach a socket on the other gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from argon2 import PasswordHasher

from tests.integration.chat_helpers import Clients, unique
from tests.support.balancer import balanced
from tests.support.cluster import Cluster, start_chat_cluster
from tests.support.peer import QueuedPeer

PASSWORD = "correct horse battery staple"
NS = "/admin-ui"
WAIT = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two gateways; the users reach them through HAProxy (no stickiness) on their default
    options, the UI connects to gateway 0 as an operator points it at one."""
    hashed = PasswordHasher().hash(PASSWORD)
    workdir = Path(tmp_path_factory.mktemp("adminui"))
    cluster = start_chat_cluster(workdir, gateways=2,
                                 gateway_args=("--admin-ui-password-hash", hashed))
    with balanced(cluster, workdir):
        yield cluster


class Ui(QueuedPeer):
    def __init__(self) -> None:
        super().__init__("admin-ui", socketio.AsyncClient(reconnection=False), ns=NS,
                         auth={"username": "admin", "password": PASSWORD}, wait=WAIT)

    async def stats_of_every_gateway(self, count: int) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        while len(seen) < count:
            stats = await self.next("server_stats")
            seen[stats["serverId"]] = stats
        return seen


async def test_the_ui_sees_and_commands_the_whole_cluster(cluster: Cluster) -> None:
    async with Clients(cluster) as clients:
        early = await clients.user_on(1, unique("early"))  # there before the UI
        ui = Ui()
        try:
            await ui.connect(cluster.url(0), [NS])
            config = await ui.next("config")
            assert {"EMIT", "JOIN", "LEAVE", "DISCONNECT"} <= set(config["supportedFeatures"])
            mine = await ui.next("all_sockets")
            assert isinstance(mine, list)
            # The other gateway reports its sockets one by one.
            reported, _when = await ui.wait_for("socket_connected",
                                                lambda a: a[0]["id"] == early.sid_of("/"))
            assert reported["nsp"] == "/" and reported["data"]["userId"] == early.user_id
            assert early.sid_of("/") in reported["rooms"]
            assert f"user:{early.user_id}" in reported["rooms"]
            stats = await ui.stats_of_every_gateway(2)
            assert set(stats) == {cluster.stats(0)["gateway"], cluster.stats(1)["gateway"]}
            assert all(s["clientsCount"] >= 0 and s["namespaces"] for s in stats.values())

            # Live: a socket connects on the other gateway and joins a room.
            late = await clients.user_on(1, unique("late"))
            sid = late.sid_of("/")
            got, _when = await ui.wait_for("socket_connected", lambda a: a[0]["id"] == sid)
            assert got["transport"] in ("polling", "websocket")
            room = unique("ui-room")
            assert (await late.call("create room", {"roomId": room, "roomName": room}))[
                "success"]
            assert (await late.call("join room", {"roomId": room}))["success"]
            joined = await ui.wait_for("room_joined", lambda a: a[1] == room)
            assert joined[0] == "/" and joined[2] == sid

            # Commands reach the socket on its gateway.
            await ui.client.emit("emit", ("/", sid, "from the admin", {"hello": 1}),
                                 namespace=NS)
            assert await late.next("from the admin") == {"hello": 1}
            await ui.client.emit("_disconnect", ("/", False, sid), namespace=NS)
            await late.wait_disconnected("/")
            gone = await ui.wait_for("socket_disconnected", lambda a: a[1] == sid)
            assert gone[0] == "/"
        finally:
            await ui.close()


@pytest.mark.parametrize("auth", [
    {"username": "admin", "password": "wrong"},
    {"username": "root", "password": PASSWORD},
    {},
    None,
])
async def test_wrong_credentials_are_refused(cluster: Cluster, auth: Any) -> None:
    client = socketio.AsyncClient(reconnection=False)
    errors: asyncio.Queue[Any] = asyncio.Queue()
    client.on("connect_error", errors.put_nowait, namespace=NS)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(cluster.url(0), namespaces=[NS], auth=auth, wait_timeout=WAIT)
        assert await asyncio.wait_for(errors.get(), WAIT) == {"message": "invalid credentials"}
    finally:
        await client.disconnect()
