"""The web app's HTTP side: what each gateway serves, with which headers, and what it refuses.

Raw requests go through http.client, which sends a path exactly as given (a browser or urllib
would normalise ``..`` away before the server ever saw it).
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import pytest

from switchboard.gateway.config import GatewayConfig
from switchboard.gateway.http import HttpRequest
from switchboard.gateway.web import WebRoutes, guest_name
from switchboard.shared.tokens import verify_token
from switchboard.supervisor import UpConfig, plan
from tests.support.cluster import JWT_SECRET, ROOT, Cluster

PINNED = json.loads((ROOT / "web" / "package.json").read_text())["dependencies"][
    "socket.io-client"]
SECURITY = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options",
            "Referrer-Policy")


def raw(cluster: Cluster, path: str, method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection(cluster.host, cluster.gateway_ports[0], timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(("path", "content_type", "marker"), [
    ("/", "text/html; charset=utf-8", b"<title>switchboard chat</title>"),
    ("/game", "text/html; charset=utf-8", b"tic-tac-toe"),
    ("/admin", "text/html; charset=utf-8", b"switchboard admin"),
    ("/static/app.js", "text/javascript; charset=utf-8", b"textContent"),
    ("/static/common.js", "text/javascript; charset=utf-8", b"window.SB"),
    ("/static/style.css", "text/css; charset=utf-8", b":root"),
    ("/static/favicon.svg", "image/svg+xml", b"<svg"),
    ("/socket.io/socket.io.min.js", "text/javascript; charset=utf-8",
     f"Socket.IO v{PINNED}".encode()),
])
def test_pages_and_files_are_served_with_type_security_and_cache_headers(
    web_cluster: Cluster, path: str, content_type: str, marker: bytes
) -> None:
    status, headers, body = raw(web_cluster, path)
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert marker in body
    assert int(headers["Content-Length"]) == len(body)
    for name in SECURITY:
        assert headers[name], name
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers.get_all("Cache-Control") == ["no-cache"]
    etag = headers["ETag"]
    assert etag.startswith('"')

    # Revalidation: the same ETag gets 304 and no body; a stale one gets the file.
    status, headers, body = raw(web_cluster, path, headers={"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert headers["ETag"] == etag
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, _, body = raw(web_cluster, path, headers={"If-None-Match": '"stale"'})
    assert status == 200 and marker in body


def test_pages_load_nothing_from_elsewhere() -> None:
    """Every script, style and icon of every page is on the gateway itself."""
    for page in ("index.html", "game.html", "admin.html"):
        text = (ROOT / "web" / "static" / page).read_text()
        assert "http://" not in text and "https://" not in text, page
        assert "<script>" not in text and "style=" not in text and " on" + "click=" not in text


@pytest.mark.parametrize("path", [
    "/static/../pyproject.toml",
    "/static/../../etc/passwd",
    "/static/%2e%2e/pyproject.toml",
    "/static/%2e%2e%2fpyproject.toml",
    "/static/..%2f..%2fpyproject.toml",
    "/static/..%5cpyproject.toml",
    "/static/..\\pyproject.toml",
    "/static/.%2e/gateway/config.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/./app.js",
    "/static/sub/../app.js",
    "/static/.gitignore",
    "/static/app.js%00.css",
    "/static/package.json",
    "/static/",
    "/../pyproject.toml",
    "/web/package.json",
    "/node_modules/socket.io-client/package.json",
    "/socket.io/../pyproject.toml",
    "/socket.io/socket.io.js",
])
def test_no_path_reaches_a_file_outside_the_served_ones(web_cluster: Cluster, path: str) -> None:
    status, headers, body = raw(web_cluster, path)
    assert status in (400, 404), (path, status)
    assert b"[project]" not in body and b"root:" not in body and b"setting(" not in body
    if status == 404:
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_demo_sign_in_issues_a_token_the_auth_service_accepts(web_cluster: Cluster) -> None:
    status, headers, body = raw(web_cluster, "/api/config")
    assert (status, json.loads(body)) == (200, {"demo": True})

    status, headers, body = raw(web_cluster, "/api/token", "POST",
                                {"Content-Type": "application/json"},
                                json.dumps({"name": " Ada  Lovelace "}).encode())
    assert status == 200
    assert headers.get_all("Cache-Control") == ["no-store"]
    doc = json.loads(body)
    assert doc["username"] == "Ada Lovelace"
    assert doc["userId"].startswith("guest-")
    identity = verify_token(doc["token"], JWT_SECRET)
    assert (identity.user_id, identity.username, identity.role) == (
        doc["userId"], "Ada Lovelace", "user")

    status, _, body = raw(web_cluster, "/api/token", "POST",
                          {"Content-Type": "application/x-www-form-urlencoded"},
                          b"name=tab%09name")
    assert json.loads(body)["username"] == "tab name"  # whitespace is normalised
    status, _, body = raw(web_cluster, "/api/token?name=Grace", "POST")  # older pages
    assert json.loads(body)["username"] == "Grace"
    status, _, body = raw(web_cluster, "/api/token", "POST", {}, b"{not json")
    assert status == 400
    for name in ("", "%20%20", "x" * 51, "bell%07", "del%7f", "%e2%80%8b"):
        status, _, body = raw(web_cluster, f"/api/token?name={name}", "POST")
        assert status == 400, name
        assert json.loads(body)["error"] == "name: must be 1..50 printable characters"
    status, headers, _ = raw(web_cluster, "/api/token?name=Ada", "GET")
    assert (status, headers["Allow"]) == (405, "POST")
    status, headers, _ = raw(web_cluster, "/", "DELETE")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")


# -- WebRoutes without a gateway -----------------------------------------------------------------
def get(routes: WebRoutes, path: str, method: str = "GET", **headers: str) -> tuple[int, bytes]:
    request = HttpRequest.build(method, path, list(headers.items()))
    response = routes.handle(request.path, request)
    return (404, b"") if response is None else (response.status, bytes(response.body))


def test_without_demo_mode_there_is_no_token_route() -> None:
    routes = WebRoutes(GatewayConfig(demo=False))
    assert get(routes, "/api/token?name=Ada", "POST")[0] == 404
    assert get(routes, "/api/token", "GET")[0] == 404
    assert json.loads(get(routes, "/api/config")[1]) == {"demo": False}


def test_web_root_option_and_symlinks_out_of_it(tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<p>custom</p>")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", static / "leak.txt")
    routes = WebRoutes(GatewayConfig(web_root=str(tmp_path)))
    assert get(routes, "/") == (200, b"<p>custom</p>")
    assert get(routes, "/static/leak.txt")[0] == 404  # resolves outside static/
    assert get(routes, "/socket.io/socket.io.min.js")[0] == 404  # no bundle installed there
    assert get(routes, "/game")[0] == 404

    # Edited files are served at once (the cache is keyed by mtime and size).
    (static / "index.html").write_text("<p>edited, longer</p>")
    assert get(routes, "/") == (200, b"<p>edited, longer</p>")


def test_default_web_root_is_the_repository_web_dir() -> None:
    routes = WebRoutes(GatewayConfig())
    assert routes.root == ROOT / "web"
    assert get(routes, "/socket.io/socket.io.min.js")[0] == 200


def test_guest_names() -> None:
    assert guest_name("  Ada   Lovelace ") == "Ada Lovelace"
    assert guest_name("<b>x</b>") == "<b>x</b>"  # pages render names as text
    assert guest_name("") is None
    assert guest_name("a\u0000b") is None
    assert guest_name("x" * 51) is None


def test_up_runs_gateways_in_demo_mode_with_the_shared_secret() -> None:
    gateways = [c for c in plan(UpConfig(jwt_secret="s" * 32)) if c.name.startswith("gateway")]
    assert gateways and all("--demo" in c.argv for c in gateways)
    assert all(c.env["SWITCHBOARD_JWT_SECRET"] == "s" * 32 for c in gateways)
    off = [c for c in plan(UpConfig(demo=False)) if c.name.startswith("gateway")]
    assert all("--no-demo" in c.argv for c in off)
