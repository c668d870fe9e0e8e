"""What the browser tests share: launch settings, the watched page, and page actions."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.support.cluster import JWT_SECRET, ROOT

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Every gateway of the web cluster: demo sign-in, with a token limit that fits a test run
#: (all pages come from 127.0.0.1).
GATEWAY_ARGS = ("--demo", "--jwt-secret", JWT_SECRET, "--token-rate", "200")
SCREENSHOTS = ROOT / "test-output" / "screenshots"
#: Bound of every Playwright wait (actions and expect()); longer ones pass their own.
WAIT_MS = 10_000


@dataclass
class Watched:
    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


OpenPage = Callable[..., Watched]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def page_server(site: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Static pages from ``site`` on their own origin (so that CORS is real; port 0: any
    free one); its URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    pages = http.server.ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=pages.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{pages.server_address[1]}"
    finally:
        pages.shutdown()
        pages.server_close()


def screenshot(page: Page, name: str, full_page: bool = False) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    # Transitions run to their end first: a page caught mid-fade says little.
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path


# -- the chat page -------------------------------------------------------------------------------
def sign_in(page: Page, name: str) -> None:
    """Demo sign-in with just a name; waits until the socket is connected."""
    page.fill("#guest-name", name)
    page.click("#guest-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("connected", timeout=WAIT_MS)
    expect(page.locator("#me")).to_have_text(name)


def create_room(page: Page, room_id: str, name: str = "", password: str = "",
                max_users: int | None = None) -> None:
    page.fill("#create-id", room_id)
    page.fill("#create-name", name)
    if max_users is not None:
        page.fill("#create-max", str(max_users))
    if password:
        page.check("#create-private")
        page.fill("#create-password", password)
    page.click("#create-form button[type=submit]")
    expect(page.locator("#room-title")).to_have_text(name or room_id, timeout=WAIT_MS)


def join_listed_room(page: Page, name: str) -> None:
    page.click("#refresh-rooms")
    page.locator("#rooms button", has_text=name).click()
    expect(page.locator("#room-title")).to_have_text(name, timeout=WAIT_MS)


def join_private_room(page: Page, room_id: str, password: str) -> None:
    fold = page.locator("details", has=page.locator("#private-form"))
    if fold.get_attribute("open") is None:
        fold.locator("summary").click()
    page.fill("#private-id", room_id)
    page.fill("#private-password", password)
    page.click("#private-form button[type=submit]")


def send(page: Page, text: str) -> None:
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")
    expect(page.locator("#message-input")).to_have_value("", timeout=WAIT_MS)


def messages(page: Page) -> Locator:
    return page.locator("#messages li.msg")


def last_body(page: Page) -> Locator:
    return page.locator("#messages li.msg .body").last
