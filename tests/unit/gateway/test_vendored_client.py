"""The vendored socket.io-client bundle is the version web/package.json pins, byte for byte
what npm installs for that pin (web/vendor/README.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[3] / "web"
VENDORED = WEB / "vendor" / "socket.io-client"
INSTALLED = WEB / "node_modules" / "socket.io-client"
FILES = {"socket.io.min.js": "dist", "socket.io.min.js.map": "dist", "LICENSE": ""}


def pinned() -> str:
    return str(json.loads((WEB / "package.json").read_text())["dependencies"]["socket.io-client"])


def test_the_vendored_bundle_is_the_pinned_version() -> None:
    version = (VENDORED / "VERSION").read_text().strip()
    assert version == pinned()
    header = (VENDORED / "socket.io.min.js").read_text()[:200]
    assert f"Socket.IO v{version}" in header
    assert "MIT License" in (VENDORED / "LICENSE").read_text()


def test_the_vendored_files_are_what_npm_installs() -> None:
    if not (INSTALLED / "package.json").is_file():
        if os.environ.get("CI"):
            pytest.fail("web/node_modules is missing under CI: `make setup` installs it")
        pytest.skip("web/node_modules not installed (make setup)")
    assert json.loads((INSTALLED / "package.json").read_text())["version"] == pinned()
    for name, folder in FILES.items():
        assert (VENDORED / name).read_bytes() == (INSTALLED / folder / name).read_bytes(), name
