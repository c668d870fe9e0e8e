"""Browser tests of the web pages: Playwright (Python) driving Debian's chromium, against the
whole application behind two gateways started in demo mode.

Each page gets its own browser context (its own storage: a separate person). Every page is
watched: a JavaScript dialog (alert/confirm/prompt) is recorded and dismissed, uncaught
exceptions and Content-Security-Policy violations fail the test that opened the page.
Screenshots go to test-output/screenshots/ (the CI artifact).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Playwright,
    expect,
    sync_playwright,
)

from tests.browser.helpers import (
    CHROMIUM,
    GATEWAY_ARGS,
    LAUNCH_ARGS,
    SCREENSHOTS,
    WAIT_MS,
    OpenPage,
    Watched,
)
from tests.support.cluster import Cluster, start_chat_cluster


@pytest.fixture(scope="package")
def web_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Rooms and presence partitioned over two room instances, publications over two brokers:
    # every page's flows cross them.
    cluster = start_chat_cluster(Path(tmp_path_factory.mktemp("web")), gateways=2,
                                 gateway_args=GATEWAY_ARGS, room_instances=2, brokers=2)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} missing: run `make setup` (scripts/ensure-system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS,
                                         timeout=30_000)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="package", autouse=True)
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """``open_page(url)``: a new person (browser context) on ``url``, watched."""
    contexts = []
    watched: list[Watched] = []

    def open_(url: str, width: int = 1280, height: int = 800) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        w = Watched(page)

        def on_dialog(dialog: Dialog) -> None:
            w.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                w.errors.append(f"CSP: {message.text}")

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: w.errors.append(f"uncaught: {exc}"))
        page.goto(url)
        watched.append(w)
        return w

    yield open_
    for context in contexts:
        context.close()
    problems = [e for w in watched for e in w.errors]
    assert not problems, problems

