"""The package is complete: a wheel built from the repository, installed into a fresh venv
and run from a directory that is not the repository, serves the chat page and the
socket.io-client bundle from inside the package (no npm, no checkout), and the page works
in Chromium."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.helpers import create_room, last_body, screenshot, send, sign_in
from tests.support.cluster import http_get
from tests.support.upserver import ROOT, Up, running_up

VENDORED = ROOT / "web" / "vendor" / "socket.io-client"
#: Files the wheel must carry beyond the Python modules.
PACKAGE_DATA = (
    "switchboard/web/static/index.html",
    "switchboard/web/static/app.js",
    "switchboard/web/static/style.css",
    "switchboard/web/vendor/socket.io-client/socket.io.min.js",
    "switchboard/web/vendor/socket.io-client/socket.io.min.js.map",
    "switchboard/web/vendor/socket.io-client/LICENSE",
    "switchboard/web/vendor/socket.io-client/VERSION",
)
INSTALL_TIMEOUT = 600


def run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT, check=False)
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Up, Path]]:
    """``switchboard up`` of a fresh venv holding only the wheel (and its dependencies),
    started in an empty directory; with the venv's site-packages."""
    work = Path(tmp_path_factory.mktemp("wheel"))
    dist = work / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist),
         str(ROOT)], work)
    wheels = list(dist.glob("switchboard-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    missing = [name for name in PACKAGE_DATA if name not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert not [n for n in names if "node_modules" in n], "node_modules leaked into the wheel"
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)], work)
    run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheels[0])], work)
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "switchboard" / "web" / "vendor").is_dir()
    assert not (site / "switchboard" / "web").is_symlink()
    here = work / "elsewhere"  # not the repository: nothing can come from the checkout
    here.mkdir()
    with running_up(here, python=str(venv / "bin" / "python"), cwd=here) as up:
        yield up, site


def test_the_installed_package_serves_the_page_and_the_bundle(
        installed: tuple[Up, Path]) -> None:
    up, site = installed
    status, headers, body = http_get(up.url + "/socket.io/socket.io.min.js")
    assert status == 200
    assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/javascript")
    assert body == (VENDORED / "socket.io.min.js").read_bytes()
    assert body == (site / "switchboard/web/vendor/socket.io-client/socket.io.min.js"
                    ).read_bytes()
    status, _, body = http_get(up.url + "/")
    assert status == 200 and b"<title>switchboard chat</title>" in body


def test_the_installed_chat_page_works_in_chromium(installed: tuple[Up, Path],
                                                   open_page) -> None:
    up, _ = installed
    ada = open_page(up.url + "/").page
    sign_in(ada, "Ada")
    create_room(ada, "wheel", "Installed from the wheel")
    send(ada, "hello from a pip-installed switchboard")
    expect(last_body(ada)).to_have_text("hello from a pip-installed switchboard")
    screenshot(ada, "chat-from-the-wheel")
