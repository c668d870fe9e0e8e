"""The admin dashboard (/admin): live figures, an announcement, and a kick that the kicked
person's page shows."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import (
    GATEWAY_ARGS,
    WAIT_MS,
    OpenPage,
    create_room,
    join_listed_room,
    screenshot,
    send,
    sign_in,
)
from tests.support.cluster import Cluster, start_chat_cluster, token


def test_admin_sees_the_cluster_announces_and_kicks_a_user(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    kim = open_page(web_cluster.url(0) + "/").page
    sign_in(kim, "Kim")
    create_room(kim, "ops-room", "Operations")

    admin_token = token("admin-1", "Root", role="admin")
    admin = open_page(f"{web_cluster.url(1)}/admin?token={admin_token}").page
    expect(admin.locator("#status")).to_have_text("connected")
    assert "token=" not in admin.url  # taken out of the address bar at once
    expect(admin.locator("#me")).to_have_text("Root (admin)")

    # Live figures from `get stats` (polled) and this gateway's /metrics.
    expect(admin.locator("#gateways tr")).to_have_count(2)
    for port in web_cluster.gateway_ports:
        expect(admin.locator("#gateways")).to_contain_text(f"gw{port}")
    expect(admin.locator("#rooms tr", has_text="Operations")).to_contain_text("1/100")
    expect(admin.locator("#f-total")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(admin.locator("#f-admin")).to_have_text("1")
    expect(admin.locator("#f-events")).to_have_text(re.compile(r"^\d+\.\d$"))
    expect(admin.locator("#chart")).to_have_attribute(
        "aria-label", re.compile(r"connections now"))

    # An announcement reaches the chat page.
    admin.fill("#broadcast-text", "Maintenance at noon")
    admin.click("#broadcast-form button[type=submit]")
    expect(admin.locator("#admin-log li.ok", has_text="Announcement sent.")).to_be_visible()
    expect(kim.locator("#messages .notice.announcement")).to_contain_text(
        "Announcement: Maintenance at noon")

    # Messages through the admin's own gateway show in its messages/s (from /metrics).
    lee = open_page(web_cluster.url(1) + "/").page
    sign_in(lee, "Lee")
    join_listed_room(lee, "Operations")
    for n in range(3):
        send(lee, f"status update {n}")
    expect(admin.locator("#f-messages")).to_have_text(re.compile(r"^(?!0\.0$)\d+\.\d$"))
    expect(admin.locator("#rooms tr", has_text="Operations")).to_contain_text("2/100")

    # Mute: the form is filled from the user's row; the muted person is told why.
    admin.locator("#users tr", has_text="Lee").get_by_role("button", name="Mute Lee").click()
    expect(admin.locator("#mute-user")).to_have_value(re.compile("^guest-"))
    admin.click("#mute-form button[type=submit]")
    expect(admin.locator("#admin-log li.ok", has_text=re.compile(r"Muted guest-\w+ for 60 s"))
           ).to_be_visible()
    lee.fill("#message-input", "can anyone hear me?")
    lee.press("#message-input", "Enter")
    expect(lee.locator("#error .error-text")).to_have_text(re.compile(
        r"^You are muted for (59|60) more seconds; your messages are not sent\.$"))
    expect(lee.locator("#message-input")).to_have_value("can anyone hear me?")  # kept
    screenshot(lee, "chat-muted")

    row = admin.locator("#users tr", has_text="Kim")
    expect(row).to_be_visible()
    # Kim's page connected on the client's defaults: polling first, then the upgrade (which
    # the room service hears of a moment later; the table is refreshed until it shows).
    deadline = time.monotonic() + WAIT_MS / 1000
    while row.locator("td.transport").inner_text() != "websocket":
        assert time.monotonic() < deadline, row.locator("td.transport").inner_text()
        admin.click("#refresh-users")
        admin.wait_for_timeout(200)
    screenshot(admin, "admin-dashboard", full_page=True)
    row.get_by_role("button", name=re.compile("^Kick Kim")).click()
    expect(admin.locator("#admin-log li.ok", has_text="Kicked Kim.")).to_be_visible()

    expect(kim.locator("#status")).to_have_text("disconnected")
    expect(kim.locator("#error .error-text")).to_have_text(
        "You were removed from the chat: kicked by an administrator")
    expect(kim.locator("#reconnect")).to_be_visible()
    expect(admin.locator("#users tr", has_text="Kim")).to_have_count(0)
    screenshot(kim, "chat-kicked")


def test_admin_page_refuses_a_user_token(web_cluster: Cluster, open_page: OpenPage) -> None:
    page = open_page(f"{web_cluster.url(0)}/admin?token={token('u-9', 'Nine')}").page
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#error .error-text")).to_have_text(
        "This token's role is “user”; the dashboard needs role admin.")
    screenshot(page, "admin-signin")


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of its own: its room-1 is frozen below (one gateway, two room instances)."""
    cluster = start_chat_cluster(Path(tmp_path_factory.mktemp("partial")), gateways=1,
                                 gateway_args=(*GATEWAY_ARGS, "--request-timeout", "2"),
                                 room_instances=2)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_dashboard_says_when_a_room_instance_is_missing_from_its_figures(
    partitioned: Cluster, open_page: OpenPage
) -> None:
    admin_token = token("admin-2", "Root", role="admin")
    admin = open_page(f"{partitioned.url(0)}/admin?token={admin_token}").page
    expect(admin.locator("#f-admin")).to_have_text("1")
    expect(admin.locator("#partial")).to_be_hidden()
    frozen = partitioned.parts["room-1"]
    frozen.signal(signal.SIGSTOP)
    try:
        expect(admin.locator("#partial")).to_have_text(
            "Partial figures: no answer from room-1.")
        screenshot(admin, "admin-partial")
    finally:
        frozen.signal(signal.SIGCONT)
    expect(admin.locator("#partial")).to_be_hidden()
