"""Where the answer to a long-polling request goes: this gateway's HTTP exchange, or the peer
gateway that forwarded the request to the owner of its session (which adds its own headers).
Either way the owner answers the same three ways: a GET's payload, any other response, or
nothing yet (and hears if the client goes away meanwhile)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from switchboard.gateway import http
from switchboard.gateway.exchange import Exchange
from switchboard.gateway.http import HttpResponse
from switchboard.shared.envelope import PeerReply

POLL_TYPE = "text/plain; charset=UTF-8"

#: The headers of a 200 poll answer, serialized once per CORS header set (bounded).
_POLL_HEADS: dict[tuple[tuple[str, str], ...], bytes] = {}


def poll_head(cors: tuple[tuple[str, str], ...]) -> bytes:
    head = _POLL_HEADS.get(cors)
    if head is None:
        head = http.prepared(200, (("Content-Type", POLL_TYPE), ("Cache-Control", "no-store"),
                                   *http.SECURITY_HEADERS, *cors))
        if len(_POLL_HEADS) < 1000:
            _POLL_HEADS[cors] = head
    return head


class LocalAnswer:
    """Answers to one HTTP exchange of this gateway, with its CORS headers."""

    __slots__ = ("cors", "exchange")

    def __init__(self, exchange: Exchange, cors: tuple[tuple[str, str], ...]) -> None:
        self.exchange = exchange
        self.cors = cors

    def respond(self, body: str) -> None:
        self.exchange.respond(HttpResponse(200, body=body.encode(), head=poll_head(self.cors)))

    def reply(self, response: HttpResponse) -> None:
        self.exchange.respond(response.with_headers(self.cors))

    def on_abort(self, callback: Callable[[], None]) -> None:
        self.exchange.on_abort = callback


class PeerReplies(Protocol):
    def reply(self, identity: bytes, reply: PeerReply) -> None: ...


class RemoteWaits:
    """Requests other gateways forwarded here, answered through the peer sockets; the ones
    waiting (a GET) are kept so that the forwarder's ABORT finds them."""

    def __init__(self, peers: PeerReplies | None) -> None:
        self.peers = peers
        self._waiting: dict[tuple[bytes, int], Callable[[], None]] = {}

    def answer(self, identity: bytes, request_id: int) -> RemoteAnswer:
        return RemoteAnswer(self, identity, request_id)

    def send(self, identity: bytes, reply: PeerReply) -> None:
        self._waiting.pop((identity, reply.id), None)
        if self.peers is not None:
            self.peers.reply(identity, reply)

    def wait(self, identity: bytes, request_id: int, on_abort: Callable[[], None]) -> None:
        self._waiting[(identity, request_id)] = on_abort

    def abort(self, identity: bytes, request_id: int) -> None:
        """The forwarder's client went away: the waiting request hears it."""
        callback = self._waiting.pop((identity, request_id), None)
        if callback is not None:
            callback()


class RemoteAnswer:
    """Answers to a request another gateway forwarded."""

    __slots__ = ("identity", "request_id", "waits")

    def __init__(self, waits: RemoteWaits, identity: bytes, request_id: int) -> None:
        self.waits = waits
        self.identity = identity
        self.request_id = request_id

    def respond(self, body: str) -> None:
        self.waits.send(self.identity, PeerReply(self.request_id, 200, body.encode(),
                                                 POLL_TYPE))

    def reply(self, response: HttpResponse) -> None:
        self.waits.send(self.identity, PeerReply(
            self.request_id, response.status, response.body,
            response.header("Content-Type") or ""))

    def on_abort(self, callback: Callable[[], None]) -> None:
        self.waits.wait(self.identity, self.request_id, callback)


Answer = LocalAnswer | RemoteAnswer
