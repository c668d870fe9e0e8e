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
    waiting (a GET) are kept so that the forwarder's ABORT finds them — or, when the
    forwarding gateway itself dies, :meth:`abort_from` (its client's request died with it).

    A waiting request is known by its forwarder's gateway id, process instance and request
    id, not by the connection it came on: an ABORT sent after the forwarder reconnected
    (a new ZeroMQ identity) still finds it."""

    def __init__(self, peers: PeerReplies | None) -> None:
        self.peers = peers
        #: (forwarding gateway, its instance, request id) → on abort.
        self._waiting: dict[tuple[str, str, int], Callable[[], None]] = {}

    def answer(self, identity: bytes, request_id: int, gateway: str = "",
               instance: str = "") -> RemoteAnswer:
        return RemoteAnswer(self, identity, request_id, gateway, instance)

    def send(self, identity: bytes, reply: PeerReply, gateway: str = "",
             instance: str = "") -> None:
        self._waiting.pop((gateway, instance, reply.id), None)
        if self.peers is not None:
            self.peers.reply(identity, reply)

    def wait(self, answer: RemoteAnswer, on_abort: Callable[[], None]) -> None:
        self._waiting[(answer.gateway, answer.instance, answer.request_id)] = on_abort

    def abort(self, gateway: str, instance: str, request_id: int) -> None:
        """The forwarder's client went away: the waiting request hears it."""
        on_abort = self._waiting.pop((gateway, instance, request_id), None)
        if on_abort is not None:
            on_abort()

    def abort_from(self, gateway: str, instance: str) -> int:
        """Gateway ``gateway`` (its process ``instance``) died or was replaced: the clients
        whose polls it was holding saw them fail, and official clients end their session
        on a failed poll, so every request it was waiting on here is abandoned (and each
        session then ends at once rather than at its ping timeout). How many."""
        gone = [key for key in self._waiting if key[0] == gateway and key[1] == instance]
        for key in gone:
            self._waiting.pop(key)()
        return len(gone)

    @property
    def waiting(self) -> int:
        return len(self._waiting)


class RemoteAnswer:
    """Answers to a request another gateway forwarded."""

    __slots__ = ("gateway", "identity", "instance", "request_id", "waits")

    def __init__(self, waits: RemoteWaits, identity: bytes, request_id: int,
                 gateway: str = "", instance: str = "") -> None:
        self.waits = waits
        self.identity = identity
        self.request_id = request_id
        self.gateway = gateway
        self.instance = instance

    def respond(self, body: str) -> None:
        self.waits.send(self.identity, PeerReply(self.request_id, 200, body.encode(),
                                                 POLL_TYPE), self.gateway, self.instance)

    def reply(self, response: HttpResponse) -> None:
        self.waits.send(self.identity, PeerReply(
            self.request_id, response.status, response.body,
            response.header("Content-Type") or ""), self.gateway, self.instance)

    def on_abort(self, callback: Callable[[], None]) -> None:
        self.waits.wait(self, callback)


Answer = LocalAnswer | RemoteAnswer
