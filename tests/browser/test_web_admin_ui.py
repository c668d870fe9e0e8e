"""The official Socket.IO Admin UI's own page (``ui/dist`` of ``@socket.io/admin-ui``, pinned
in tests/node/package.json, served from loopback) in Chromium, pointed at a two-gateway
cluster: it signs in, lists both gateways as servers and every socket, and a disconnect
issued from it disconnects a socket held by the other gateway. Screenshots in
test-output/screenshots/admin-ui-*.png."""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import socketio
from argon2 import PasswordHasher
from playwright.sync_api import Page, expect

from tests.browser.helpers import page_server, screenshot
from tests.support.balancer import balanced
from tests.support.cluster import Cluster, http_get, start_chat_cluster, token
from tests.support.node import NODE_DIR
from tests.support.ports import free_port

UI_DIST = NODE_DIR / "node_modules" / "@socket.io" / "admin-ui" / "ui" / "dist"
PASSWORD = "admin-ui-test-password"
NS = "/admin-ui"
WAIT = 10.0


@pytest.fixture(scope="module")
def ui_port() -> int:
    """Where the UI's page is served from: another origin than the gateways', as
    admin.socket.io is, so the gateways name it in ``--allowed-origins`` (docs/admin-ui.md)."""
    return free_port()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ui_port: int) -> Iterator[Cluster]:
    """Two gateways; the users reach them through HAProxy (no stickiness) on their default
    options; the UI is pointed at gateway 0."""
    workdir = Path(tmp_path_factory.mktemp("adminui-web"))
    cluster = start_chat_cluster(workdir, gateways=2,
                                 gateway_args=("--admin-ui-password-hash",
                                               PasswordHasher().hash(PASSWORD),
                                               "--allowed-origins",
                                               f"http://127.0.0.1:{ui_port}"))
    with balanced(cluster, workdir):
        yield cluster


@pytest.fixture(scope="module")
def ui_url(ui_port: int) -> Iterator[str]:
    if not (UI_DIST / "index.html").is_file():
        pytest.fail(f"{UI_DIST} is missing: `npm ci --prefix tests/node` installs it")
    with page_server(UI_DIST, port=ui_port) as url:
        yield url + "/"


@contextlib.contextmanager
def user_on(cluster: Cluster, gateway: str, user_id: str
            ) -> Iterator[tuple[socketio.Client, list[str]]]:
    """A default-options client of ``user_id`` that the balancer placed on ``gateway``
    (misplaced tries stay open while plain requests shift the rotation; see
    chat_helpers.Clients.user_on). python-socketio's own count of requests per connect
    depends on when its upgrade lands, and may be even: so the shift alternates between one
    request and two, and a try cannot keep landing where the one before it did."""
    assert cluster.balancer_url is not None
    tries: list[socketio.Client] = []
    try:
        for attempt in range(12):
            client = socketio.Client(reconnection=False)
            disconnects: list[str] = []
            client.on("disconnect", lambda *a, d=disconnects: d.append("/"))
            client.connect(cluster.balancer_url, auth={"token": token(user_id, user_id)},
                           wait_timeout=WAIT)
            tries.append(client)
            if (client.get_sid("/") or "").startswith(f"{gateway}."):
                break
            for _ in range(1 + attempt % 2):
                http_get(cluster.balancer_url + "/health")
        else:
            raise AssertionError(f"{user_id}: the balancer never placed it on {gateway}")
        for extra in tries[:-1]:
            extra.disconnect()
        yield client, disconnects
    finally:
        for each in tries:
            each.disconnect()


def sign_in(page: Page, server: str) -> None:
    dialog = page.locator(".v-dialog--active")  # the connection form, open at start
    expect(dialog).to_be_visible()
    dialog.get_by_label("Server URL").fill(server)
    dialog.get_by_label("Username").fill("admin")
    dialog.get_by_label("Password").fill(PASSWORD)
    dialog.get_by_text("Advanced options").click()
    dialog.get_by_label("Admin namespace").fill(NS)
    dialog.get_by_role("button", name="Connect").click()
    expect(dialog).to_be_hidden()
    expect(page.locator(".v-overlay--active")).to_have_count(0)  # its fade-out done
    expect(page.get_by_text("connected", exact=True).first).to_be_visible()


def test_the_admin_ui_lists_the_cluster_and_disconnects_across_gateways(
        cluster: Cluster, ui_url: str, open_page) -> None:
    ids = [cluster.stats(i)["gateway"] for i in range(2)]
    with user_on(cluster, ids[0], "ui-alice") as (alice, _), \
            user_on(cluster, ids[1], "ui-bob") as (bob, bob_gone):
        bob_sid = bob.get_sid("/")
        assert bob_sid and bob_sid.startswith(ids[1])
        watched = open_page(ui_url)
        page = watched.page
        page.route("https://**", lambda route: route.abort())  # fonts and icons: offline
        sign_in(page, cluster.url(0))

        page.goto(ui_url + "#/servers/")
        for gateway in ids:
            expect(page.get_by_text(gateway, exact=True)).to_be_visible()
        screenshot(page, "admin-ui-servers")

        page.goto(ui_url + "#/sockets/")
        expect(page.get_by_text(bob_sid)).to_be_visible()
        expect(page.get_by_text(alice.get_sid("/") or "?")).to_be_visible()
        screenshot(page, "admin-ui-sockets")

        page.goto(ui_url + f"#/n/{urllib.parse.quote('/', safe='')}/sockets/{bob_sid}")
        expect(page.get_by_text(bob_sid).first).to_be_visible()
        screenshot(page, "admin-ui-socket")
        # The client's row: "Disconnect this client (and all attached Socket instances)" (an
        # icon button; the icon font is not loaded offline).
        page.locator("tr", has_text="Status").first.get_by_role("button").click()
        deadline = time.monotonic() + WAIT
        while not bob_gone and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bob_gone, "bob, on the other gateway, was not disconnected by the UI"
        screenshot(page, "admin-ui-after-disconnect")
