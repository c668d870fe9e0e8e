"""The gateway's HTTP values: Engine.IO request checks, CORS, headers, serialization."""

from __future__ import annotations

import pytest

from switchboard.gateway.http import (
    CorsPolicy,
    EngineError,
    EngineQuery,
    HeaderMap,
    HttpRequest,
    HttpResponse,
    check_engine_request,
    engine_error,
    parse_query,
    prepared,
)


@pytest.mark.parametrize(("query", "method", "upgrade", "error"), [
    ("EIO=4&transport=polling", "GET", False, None),
    ("EIO=4&transport=polling", "POST", False, EngineError.BAD_HANDSHAKE_METHOD),
    ("EIO=4&transport=polling&sid=x", "POST", False, None),
    ("EIO=3&transport=polling", "GET", False, EngineError.UNSUPPORTED_PROTOCOL_VERSION),
    ("transport=polling", "GET", False, EngineError.UNSUPPORTED_PROTOCOL_VERSION),
    ("EIO=4", "GET", False, EngineError.UNKNOWN_TRANSPORT),
    ("EIO=4&transport=flash", "GET", False, EngineError.UNKNOWN_TRANSPORT),
    ("EIO=4&transport=websocket", "GET", False, EngineError.BAD_REQUEST),
    ("EIO=4&transport=websocket", "GET", True, None),
    ("EIO=4&transport=websocket&sid=x", "GET", True, None),
])
def test_engine_request_checks_in_the_reference_servers_order(
    query: str, method: str, upgrade: bool, error: EngineError | None
) -> None:
    assert check_engine_request(EngineQuery.of(parse_query(query)), method, upgrade) == error


def test_engine_errors_are_the_reference_servers() -> None:
    bad = engine_error(EngineError.UNKNOWN_SID)
    assert (bad.status, bad.body) == (400, b'{"code":1,"message":"Session ID unknown"}')
    assert engine_error(EngineError.FORBIDDEN).status == 403


def test_query_parsing() -> None:
    assert parse_query("a=1&b=%2F+x&a=2&&c") == {"a": "1", "b": "/ x", "c": ""}


def test_header_map_is_case_insensitive_and_joins_repeats() -> None:
    headers = HeaderMap.of([("Origin", "http://a"), ("X-Forwarded-For", "1.1.1.1"),
                            ("x-forwarded-for", "2.2.2.2")])
    assert headers.get("origin") == headers["ORIGIN"] == "http://a"
    assert headers.get("X-Forwarded-For") == "1.1.1.1, 2.2.2.2"
    assert "oRiGiN" in headers and headers.get("missing") is None


def _from(origin: str | None, host: str = "chat.example:3000") -> HttpRequest:
    headers = [("Host", host)] + ([("Origin", origin)] if origin is not None else [])
    return HttpRequest.build("GET", "/socket.io/?EIO=4&transport=polling", headers)


def test_cors_echoes_an_allowed_origin_with_credentials_never_a_wildcard() -> None:
    cors = CorsPolicy(frozenset({"http://app.example"}))
    assert cors.headers(_from("http://app.example")) == (
        ("Access-Control-Allow-Origin", "http://app.example"), ("Vary", "Origin"),
        ("Access-Control-Allow-Credentials", "true"))
    assert cors.headers(_from(None)) == ()
    assert not cors.allows(_from("http://evil.example")) and cors.allows(_from(None))
    assert cors.headers(_from("http://evil.example")) == ()
    anyone = CorsPolicy(frozenset({"*"}))
    assert anyone.allows(_from("http://anything"))
    assert dict(anyone.headers(_from("http://anything")))["Access-Control-Allow-Origin"] == \
        "http://anything"


def test_cors_with_no_origins_named_serves_same_origin_pages_and_non_browsers_only() -> None:
    """As Node's socket.io with no ``cors`` option: a page of another origin gets nothing."""
    cors = CorsPolicy()
    assert cors.allows(_from(None))  # python-socketio, Node's client, curl: no Origin
    assert cors.allows(_from("http://chat.example:3000"))
    assert cors.allows(_from("https://chat.example:3000"))  # TLS ended by a balancer
    assert cors.allows(_from("http://Chat.Example", host="chat.example"))
    assert cors.allows(_from("http://chat.example", host="chat.example:80"))
    assert cors.allows(_from("https://chat.example", host="chat.example:443"))
    for other in ("http://evil.example", "http://chat.example:3001", "http://chat.example",
                  "null", "http://chat.example:3000.evil.example"):
        assert not cors.allows(_from(other)), other
        assert cors.headers(_from(other)) == ()
    assert not cors.allows(_from("http://chat.example:3000", host=""))
    demo = CorsPolicy(any_when_unset=True)
    assert demo.allows(_from("http://evil.example"))
    named = CorsPolicy(frozenset({"http://app.example"}), any_when_unset=True)
    assert not named.allows(_from("http://evil.example"))  # names given: only those


def test_cors_serves_same_origin_pages_whatever_origins_are_named() -> None:
    """A page the gateway (or the balancer in front of it) serves is not cross-origin: naming
    another origin for it does not lock the gateway's own page out."""
    named = CorsPolicy(frozenset({"http://app.example"}))
    assert named.allows(_from("http://chat.example:3000"))
    assert named.allows(_from("https://chat.example:3000"))
    assert not named.allows(_from("http://chat.example:3001"))
    assert not named.allows(_from("http://evil.example"))
    assert dict(named.headers(_from("http://chat.example:3000")))[
        "Access-Control-Allow-Origin"] == "http://chat.example:3000"


def test_cors_preflight() -> None:
    cors = CorsPolicy(frozenset({"http://app.example"}))
    ok = cors.preflight(HttpRequest.build("OPTIONS", "/socket.io/?EIO=4", [
        ("Origin", "http://app.example"),
        ("Access-Control-Request-Headers", "content-type, x-bad\r\nInjected: 1")]))
    headers = dict(ok.headers)
    assert ok.status == 204
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert headers["Access-Control-Allow-Headers"] == "content-type"  # junk is not echoed
    assert headers["Vary"] == "Origin, Access-Control-Request-Headers"
    refused = cors.preflight(HttpRequest.build("OPTIONS", "/", [("Origin", "http://x")]))
    assert refused.status == 403


def test_responses_serialize_with_their_connection_fate() -> None:
    response = HttpResponse(200, (("Content-Type", "text/plain"),), b"ok")
    assert response.serialize(True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
        b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok")
    assert response.serialize(False).endswith(b"Connection: close\r\n\r\nok")
    assert response.serialize(True, head=True).endswith(b"\r\n\r\n")
    fast = HttpResponse(200, body=b"ok", head=prepared(200, (("Content-Type", "text/plain"),)))
    assert fast.serialize(True) == response.serialize(True)
    assert fast.serialize(False) == response.serialize(False)
