"""Connection state recovery in a browser: the official bundle (served by the gateways) on its
default options, through HAProxy to one of three gateways; kill -9 of that gateway; the page
comes back through the balancer to another one, recovered, with the same socket id, still in
its room, and with every room message sent while it was away, in order, none twice."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import socketio
from playwright.sync_api import Page

from tests.browser.helpers import WAIT_MS, OpenPage, page_server, screenshot
from tests.support.balancer import balancer
from tests.support.cluster import Cluster, gateway_part, start_chat_cluster, token

HOST = "127.0.0.1"
ROOM = "web-recovery"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>recovery</title>
<script src="{server}/socket.io/socket.io.min.js"></script></head>
<body><ul id="log"></ul>
<script>
window.connects = [];
window.seen = [];
window.welcome = null;
const socket = io('{server}', {{ auth: {{ token: '{token}' }} }});
socket.on('connect', () => window.connects.push({{ id: socket.id,
                                                   recovered: socket.recovered }}));
socket.on('welcome', (data) => {{ window.welcome = data; }});
socket.on('chat message', (data) => {{
  window.seen.push(data.content);
  const item = document.createElement('li');
  item.textContent = data.content;
  document.getElementById('log').appendChild(item);
}});
window.sock = socket;
</script></body></html>
"""


@dataclass
class Setup:
    cluster: Cluster
    pages: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = Path(tmp_path_factory.mktemp("web-recovery"))
    site = workdir / "site"
    site.mkdir()
    # The page server holds its port before the gateways start: they are told its origin.
    with page_server(site, HOST) as pages:
        cluster = start_chat_cluster(
            workdir, gateways=3, recovery=("/",), gateway_args=("--allowed-origins", pages),
            moderation_args=("--event-limit", "0", "--user-event-limit", "0"))
        try:
            with balancer(workdir, cluster.gateway_ports) as lb:
                (site / "recover.html").write_text(
                    PAGE.format(server=lb, token=token("web1", "Web")), encoding="utf-8")
                yield Setup(cluster, pages)
        finally:
            cluster.stop()


def wait_for(page: Page, condition: str) -> None:
    page.wait_for_function(condition, timeout=WAIT_MS)


def test_the_browser_bundle_recovers_after_its_gateway_is_killed(
        setup: Setup, open_page: OpenPage) -> None:
    cluster = setup.cluster
    page = open_page(f"{setup.pages}/recover.html").page
    wait_for(page, "window.welcome !== null && window.connects.length === 1")
    gateway = page.evaluate("window.welcome.serverId")
    ports = [p for p in cluster.gateway_ports if f"gw{p}" != gateway]
    sender = socketio.Client()  # python-socketio on its defaults, on a surviving gateway
    sender.connect(f"http://{HOST}:{ports[0]}", auth={"token": token("web2", "Sender")},
                   wait_timeout=10)
    try:
        def call(event: str, payload: object) -> dict[str, object]:
            reply = sender.call(event, payload, timeout=10)
            # With recovery on, python-socketio sees no offset in acks (acks carry none).
            assert isinstance(reply, dict), reply
            return reply

        assert call("create room", {"roomId": ROOM, "roomName": "Recovery"})["success"]
        assert call("join room", {"roomId": ROOM})["success"]
        joined = page.evaluate(
            f"window.sock.timeout(5000).emitWithAck('join room', {{roomId: '{ROOM}'}})")
        assert joined["success"] is True
        sent: list[Any] = []

        def send(n: int) -> None:
            for _ in range(n):
                content = f"m{len(sent)}"
                assert call("chat message", {"content": content, "roomId": ROOM})["success"]
                sent.append(content)

        send(5)
        wait_for(page, "window.seen.length === 5")
        gateway_part(cluster, cluster.gateway_ports.index(int(gateway[2:]))).kill()
        send(10)  # while the page is away
        wait_for(page, "window.connects.length === 2")
        send(5)
        wait_for(page, f"window.seen.length >= {len(sent)}")
        screenshot(page, "recovery-after-kill")
        first, again = page.evaluate("window.connects")
        assert first["recovered"] is False and again["recovered"] is True
        assert again["id"] == first["id"]
        seen = page.evaluate("window.seen")
        assert len(seen) == len(sent) == 20
        assert seen == sent
    finally:
        sender.disconnect()
