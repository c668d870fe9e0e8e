"""Browsers on the client's default options, behind HAProxy with no stickiness: the seed's own
client code from a page on another origin (so CORS is real), through a balancer that lets
WebSockets through and one that refuses them (as corporate proxies do), and our chat page
behind the one that refuses them.

Three gateways (demo mode, an origin allow-list naming the page's origin and the balancers')
behind two HAProxy frontends, both ``balance roundrobin``. The seed's basic client sends no
token, so this cluster lets ``/`` connect anonymously (its auth policy); everything else is
the usual application.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.helpers import (
    GATEWAY_ARGS,
    WAIT_MS,
    OpenPage,
    create_room,
    join_listed_room,
    last_body,
    page_server,
    screenshot,
    send,
    sign_in,
)
from tests.support.balancer import balancer
from tests.support.cluster import Cluster, start_chat_cluster

HOST = "127.0.0.1"

#: The seed document's client code (section "基本客户端连接"), unchanged but for the server
#: URL, which the test fills in. After it, hooks that only record what arrived.
SEED_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>seed client</title>
<script src="{server}/socket.io/socket.io.min.js"></script></head>
<body><div id="messages"></div>
<script>
// client.js (浏览器端)
const socket = io('{server}', {{
  autoConnect: true,
  reconnection: true,
  reconnectionAttempts: 5,
  reconnectionDelay: 1000,
  timeout: 20000
}});

// 连接成功
socket.on('connect', () => {{
  console.log('连接成功, Socket ID:', socket.id);

  // 加入用户信息
  socket.emit('user info', {{
    username: 'Alice',
    avatar: 'avatar-url'
  }});
}});

// 接收欢迎消息
socket.on('welcome', (data) => {{
  console.log('欢迎消息:', data);
}});

// 接收聊天消息
socket.on('chat message', (data) => {{
  console.log('收到消息:', data);
  displayMessage(data);
}});

// 接收私聊消息
socket.on('private message', (data) => {{
  console.log('收到私聊:', data);
  displayPrivateMessage(data);
}});

// 连接断开
socket.on('disconnect', (reason) => {{
  console.log('连接断开:', reason);
}});

// 重连成功
socket.on('reconnect', (attemptNumber) => {{
  console.log('重连成功, 尝试次数:', attemptNumber);
}});

// 重连失败
socket.on('reconnect_failed', () => {{
  console.log('重连失败');
  alert('无法连接到服务器,请刷新页面重试');
}});

// 发送消息函数
function sendMessage(message) {{
  if (socket.connected) {{
    socket.emit('chat message', message);
  }} else {{
    console.warn('Socket未连接,无法发送消息');
  }}
}}

// 发送私聊消息
function sendPrivateMessage(targetSocketId, message) {{
  socket.emit('private message', {{
    targetSocketId: targetSocketId,
    message: message
  }});
}}

// 显示消息
function displayMessage(data) {{
  const messageDiv = document.createElement('div');
  messageDiv.innerHTML = `
    <strong>${{data.id}}:</strong> ${{data.message}}
    <small>(${{new Date(data.timestamp).toLocaleTimeString()}})</small>
  `;
  document.getElementById('messages').appendChild(messageDiv);
}}
</script>
<script>
// The test's hooks: what arrived, and the socket to look at.
window.seen = [];
window.welcomes = [];
socket.on('chat message', (data) => window.seen.push(data));
socket.on('welcome', (data) => window.welcomes.push(data));
window.seedSocket = socket;
</script>
</body></html>
"""


@dataclass
class Setup:
    cluster: Cluster
    lb: str
    lb_no_websocket: str
    pages: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = Path(tmp_path_factory.mktemp("web-polling"))
    site = workdir / "site"
    site.mkdir()
    # The page server holds its port before the gateways start: they are told its origin.
    # The chat page served through a balancer is same-origin there, which needs no naming.
    with page_server(site, HOST) as pages:
        cluster = start_chat_cluster(
            workdir, gateways=3, gateway_args=(*GATEWAY_ARGS, "--allowed-origins", pages),
            auth_args=("--auth-policy", "/=anonymous,/chat=token,/game=anonymous,/admin=admin"))
        try:
            with balancer(workdir, cluster.gateway_ports) as lb, \
                    balancer(workdir, cluster.gateway_ports, refuse_websocket=True) as nows:
                for name, server in (("seed-lb.html", lb), ("seed-nows.html", nows)):
                    (site / name).write_text(SEED_PAGE.format(server=server), encoding="utf-8")
                yield Setup(cluster, lb, nows, pages)
        finally:
            cluster.stop()


def transport(page: Page) -> str:
    return str(page.evaluate("window.seedSocket.io.engine.transport.name"))


def transports(cluster: Cluster) -> dict[str, int]:
    total = {"websocket": 0, "polling": 0}
    for i in range(len(cluster.gateway_ports)):
        for name, count in cluster.stats(i)["transports"].items():
            total[name] += count
    return total


@pytest.mark.parametrize(("page_name", "expected"), [
    ("seed-lb.html", "websocket"), ("seed-nows.html", "polling")])
def test_the_seed_client_as_written_chats_from_another_origin(
    setup: Setup, open_page: OpenPage, page_name: str, expected: str
) -> None:
    a = open_page(f"{setup.pages}/{page_name}").page
    b = open_page(f"{setup.pages}/{page_name}").page
    for page in (a, b):
        page.wait_for_function("window.seedSocket && window.seedSocket.connected",
                               timeout=WAIT_MS)
        page.wait_for_function("window.welcomes.length > 0", timeout=WAIT_MS)
    if expected == "websocket":
        for page in (a, b):
            page.wait_for_function(
                "window.seedSocket.io.engine.transport.name === 'websocket'", timeout=WAIT_MS)
    text = f"hello from the seed ({expected})"
    a.evaluate("text => sendMessage(text)", text)
    b.wait_for_function("text => window.seen.some(d => d.content === text)", arg=text,
                        timeout=WAIT_MS)
    line = b.evaluate("text => window.seen.find(d => d.content === text)", text)
    # `user info` named the sender; a bare string is a whole chat message.
    assert (line["username"], line["type"], line["roomId"]) == ("Alice", "text", None)
    assert transport(a) == expected and transport(b) == expected
    # The seed's own rendering ran (it reads fields the contract does not have: shown as-is).
    expect(b.locator("#messages div")).to_have_count(1)
    screenshot(b, f"seed-client-{expected}")


def test_the_chat_page_works_over_polling_behind_a_proxy_that_refuses_websocket(
    setup: Setup, open_page: OpenPage
) -> None:
    before = transports(setup.cluster)
    alice = open_page(f"{setup.lb_no_websocket}/").page
    sign_in(alice, "Alice Polling")
    create_room(alice, "polled", "Polled Room")
    bob = open_page(f"{setup.lb_no_websocket}/").page
    sign_in(bob, "Bob Polling")
    join_listed_room(bob, "Polled Room")
    send(alice, "over plain HTTP")
    expect(last_body(bob)).to_have_text("over plain HTTP", timeout=WAIT_MS)
    send(bob, "and back")
    expect(last_body(alice)).to_have_text("and back", timeout=WAIT_MS)
    after = transports(setup.cluster)
    assert after["websocket"] == before["websocket"]  # no WebSocket got through
    assert after["polling"] >= before["polling"] + 2
    screenshot(bob, "chat-over-polling")
