"""The chat page (/) in a real browser, two people on two gateways."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.helpers import (
    GATEWAY_ARGS,
    WAIT_MS,
    OpenPage,
    create_room,
    join_listed_room,
    join_private_room,
    last_body,
    messages,
    screenshot,
    send,
    sign_in,
)
from tests.support.cluster import Cluster


def test_two_people_chat_in_a_room_across_two_gateways(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    ada = open_page(web_cluster.url(0) + "/").page
    screenshot(ada, "chat-signin")
    sign_in(ada, "Ada")
    grace = open_page(web_cluster.url(1) + "/").page
    sign_in(grace, "Grace")

    create_room(ada, "lobby", "The lobby")
    join_listed_room(grace, "The lobby")
    expect(ada.locator("#messages .notice", has_text="Grace joined the room.")).to_be_visible()
    expect(ada.locator("#rooms li", has_text="The lobby")).to_contain_text("2/100")
    expect(ada.locator("#room-count")).to_have_text("2 people")

    send(ada, "Hello Grace, this is Ada on the first gateway")
    expect(last_body(grace)).to_have_text("Hello Grace, this is Ada on the first gateway")
    latest = messages(grace).last
    expect(latest.locator(".author")).to_have_text("Ada")
    expect(latest.locator("time")).to_have_text(re.compile(r"\d{1,2}:\d{2}"))
    send(grace, "Hi Ada! Grace here, on the second one")
    expect(last_body(ada)).to_have_text("Hi Ada! Grace here, on the second one")
    expect(messages(ada).last.locator(".author")).to_have_text("Grace")

    # Both are listed online; a private message reaches only its recipient.
    expect(ada.locator("#users li", has_text="Grace")).to_be_visible()
    expect(grace.locator("#users li", has_text="Grace (you)")).to_be_visible()
    expect(grace.locator("#users li", has_text="Ada")).to_be_visible()
    ada.get_by_role("button", name="Send a private message to Grace").click()
    ada.fill("#pm-input", "psst, a private word")
    ada.press("#pm-input", "Enter")
    expect(grace.locator("#pms li")).to_contain_text("Ada → you")
    expect(grace.locator("#pms li .body")).to_have_text("psst, a private word")
    expect(ada.locator("#pms li")).to_contain_text("you → Grace")

    # History: a third person joining later sees what was said before.
    lin = open_page(web_cluster.url(0) + "/").page
    sign_in(lin, "Lin")
    join_listed_room(lin, "The lobby")
    expect(messages(lin)).to_have_count(2)
    expect(messages(lin).first.locator(".body")).to_have_text(
        "Hello Grace, this is Ada on the first gateway")
    expect(ada.locator("#messages .notice", has_text="Lin joined the room.")).to_be_visible()
    lin.click("#leave-room")
    expect(ada.locator("#messages .notice", has_text="Lin left the room.")).to_be_visible()
    screenshot(ada, "chat-room")


def test_private_room_refuses_a_wrong_password(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    owner = open_page(web_cluster.url(0) + "/").page
    sign_in(owner, "Owner")
    create_room(owner, "vault", "The vault", password="open sesame", max_users=2)
    guest = open_page(web_cluster.url(1) + "/").page
    sign_in(guest, "Guest")
    expect(guest.locator("#rooms")).not_to_contain_text("The vault")  # private: not listed

    join_private_room(guest, "vault", "guess")
    expect(guest.locator("#error")).to_be_visible()
    expect(guest.locator("#error .error-text")).to_have_text("Wrong password for room “vault”.")
    expect(guest.locator("#room-title")).to_have_text("No room")
    screenshot(guest, "chat-wrong-password")

    join_private_room(guest, "vault", "open sesame")
    expect(guest.locator("#room-title")).to_have_text("The vault")
    expect(guest.locator("#error")).to_be_hidden()

    # maxUsers 2: a third person is told the room is full.
    third = open_page(web_cluster.url(0) + "/").page
    sign_in(third, "Third")
    join_private_room(third, "vault", "open sesame")
    expect(third.locator("#error .error-text")).to_have_text("Room “vault” is full.")


def test_html_in_a_message_is_shown_as_text_and_runs_nothing(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    # The name is markup too: it travels in the token, not through the sanitiser.
    sender = open_page(web_cluster.url(0) + "/")
    sign_in(sender.page, "<img src=x onerror=alert(1)>")
    reader = open_page(web_cluster.url(1) + "/")
    sign_in(reader.page, "Reader")
    create_room(sender.page, "xss", "XSS test")
    join_listed_room(reader.page, "XSS test")

    payload = ("look <img src=x onerror=alert(2)> here <script>alert(3)</script>"
               " &lt;img src=x onerror=alert(4)&gt;")
    send(sender.page, payload)
    # The sender sees what it typed, literally; the others get the sanitiser's plain text.
    expect(last_body(sender.page)).to_have_text(payload)
    received = last_body(reader.page)
    expect(received).to_contain_text("look")
    expect(received).to_contain_text("here")
    expect(received).not_to_contain_text("onerror")
    expect(messages(reader.page).last.locator(".author")).to_have_text(
        "<img src=x onerror=alert(1)>")
    expect(reader.page.locator("#users li", has_text="<img src=x onerror=alert(1)>")
           ).to_be_visible()

    for watched in (sender, reader):
        page = watched.page
        assert page.locator("#messages img, #messages script").count() == 0
        assert page.locator("#users img, #rooms img, header img").count() == 0
        assert page.evaluate("document.images.length") == 0
        assert watched.dialogs == []
    screenshot(reader.page, "chat-html-as-text")
    screenshot(sender.page, "chat-html-as-text-sender")


def test_page_reconnects_after_its_gateway_restarts(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    port = web_cluster.gateway_ports[0]
    mover = open_page(web_cluster.url(0) + "/").page
    sign_in(mover, "Mover")
    stayer = open_page(web_cluster.url(1) + "/").page
    sign_in(stayer, "Stayer")
    create_room(mover, "phoenix", "Phoenix")
    join_listed_room(stayer, "Phoenix")
    send(mover, "before the restart")
    expect(last_body(stayer)).to_have_text("before the restart")

    web_cluster.parts[f"gateway-{port}"].kill()
    expect(mover.locator("#status")).to_have_text(re.compile("reconnecting"), timeout=WAIT_MS)
    expect(mover.locator("#status")).to_have_attribute("data-state", "reconnecting")
    expect(mover.locator("#message-input")).to_be_disabled()
    screenshot(mover, "chat-reconnecting")

    web_cluster.start_gateway(*GATEWAY_ARGS, port=port)
    expect(mover.locator("#status")).to_have_text("reconnected", timeout=30_000)
    expect(mover.locator("#messages .notice", has_text="Reconnected to the server.")
           ).to_be_visible()
    expect(mover.locator("#messages .notice", has_text="Rejoined Phoenix.")).to_be_visible()
    expect(mover.locator("#message-input")).to_be_enabled()

    send(mover, "after the restart")
    expect(last_body(stayer)).to_have_text("after the restart")
    send(stayer, "welcome back")
    expect(last_body(mover)).to_have_text("welcome back")
    # History was reloaded on rejoin: the message from before is still there, once.
    expect(mover.locator("#messages .body", has_text="before the restart")).to_have_count(1)
    screenshot(mover, "chat-reconnected")


def test_sending_too_fast_is_explained(web_cluster: Cluster, open_page: OpenPage) -> None:
    page = open_page(web_cluster.url(1) + "/").page
    sign_in(page, "Speedy")
    create_room(page, "fast-lane", "Fast lane")
    page.locator("#error").evaluate("box => box.hidden = true")
    # Moderation allows 20 events per 10 s per socket: within 30 sends one is refused.
    for n in range(30):
        page.fill("#message-input", f"message {n}")
        page.press("#message-input", "Enter")
        page.wait_for_function(
            "() => document.querySelector('#message-input').value === ''"
            " || !document.querySelector('#error').hidden", timeout=WAIT_MS)
        if page.locator("#error").is_visible():
            break
    expect(page.locator("#error .error-text")).to_have_text(
        "You are sending too fast; wait a few seconds.")
    expect(page.locator("#message-input")).not_to_have_value("")  # the text is kept
    screenshot(page, "chat-rate-limited")
