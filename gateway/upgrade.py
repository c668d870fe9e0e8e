"""The upgrade from long-polling to WebSocket, on the gateway that owns the session.

A WebSocket opened with the session's sid is a *probe* until the client completes the
sequence (``2probe`` → ``3probe``, then ``5``; the state machine is
:class:`~switchboard.gateway.protocol.polling.Polling`'s). Meanwhile the session keeps
polling, and a poll that waits is released with a NOOP so that the client can finish. On
``5`` the WebSocket becomes the session's transport in place, and what was queued for the
client goes out on it, in order. A probe that breaks the sequence, closes, or takes longer
than the upgrade timeout is closed; the session goes on polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from switchboard.gateway import metrics as m
from switchboard.gateway.client import Client, SessionOwner
from switchboard.gateway.exchange import Upgrade
from switchboard.gateway.http import EngineError, engine_error
from switchboard.gateway.protocol.errors import UpgradeRefused
from switchboard.gateway.protocol.polling import Polling, UpgradeState
from switchboard.gateway.transport import WsTransport

log = logging.getLogger("switchboard.gateway.upgrade")


def refuse_after_handshake(upgrade: Upgrade, handshake: bytes, max_payload: int) -> None:
    """A WebSocket for a session that is a WebSocket session already: as the reference
    server does (and the official suite expects), complete the handshake, then close."""
    link = WsTransport(max_payload)
    upgrade.accept(link, handshake)
    link.close(1008, "upgrade refused")


def refuse_probe(upgrade: Upgrade) -> None:
    """A probe for a polling session that cannot upgrade now (a probe under way already,
    or the session cannot move from the gateway that owns it): the WebSocket handshake is
    refused, 400 ``Bad request``, and the client goes on polling.

    Not accepted and closed, as the reference server would: python-engineio's client
    decodes the close code of a closed probe as a packet, its reconnection task dies of the
    ``TypeError``, and it never comes back (seen in the chaos run, where a probe often
    reaches another gateway than its session's). Every client takes a refused handshake
    as a failed probe."""
    upgrade.refuse(engine_error(EngineError.BAD_REQUEST))


def probe(client: Client, upgrade: Upgrade, handshake: bytes, owner: SessionOwner,
          max_payload: int, timeout: float, release: Callable[[Client], None],
          upgraded: Callable[[Client], None]) -> bool:
    """Accept ``upgrade`` as the probe of ``client``'s session; False when the session
    cannot upgrade (see :func:`refuse_after_handshake`, :func:`refuse_probe`). ``release``
    hands a held session's packets on: the session stays here whatever the probe does.
    Once upgraded, the WebSocket's messages go to ``owner`` and ``upgraded(client)`` is
    called."""
    polling = client.polling
    if polling is None:
        refuse_after_handshake(upgrade, handshake, max_payload)
        return False
    try:
        polling.probe_opened()
    except UpgradeRefused:
        refuse_probe(upgrade)
        return False
    if polling.holding:
        release(client)
    link = WsTransport(max_payload)
    timer = asyncio.get_running_loop().call_later(timeout, _failed, client, polling, link,
                                                  "upgrade timeout")

    def on_message(message: str | bytes) -> None:
        try:
            reply = polling.probe_received(message)
        except UpgradeRefused as exc:
            timer.cancel()
            _failed(client, polling, link, exc.reason)
            return
        if reply is not None:
            link.send_text(reply)
            client.answer_poll()  # the paused poll gets a NOOP
            return
        timer.cancel()
        _switch(client, polling, link, owner)
        upgraded(client)

    def on_end(reason: str) -> None:
        timer.cancel()
        _failed(client, polling, link, reason)

    def ready() -> None:
        link.on_message = on_message
        link.on_end = on_end
        link.on_bad = lambda reason, code: on_end(reason)

    upgrade.accept(link, handshake, ready)
    return True


def _failed(client: Client, polling: Polling, link: WsTransport, reason: str) -> None:
    if polling.state is UpgradeState.PROBING and link.is_open:
        # The client may be waiting for its "3probe": a NOOP instead makes every client give
        # the probe up as failed and go on polling, where a bare close would crash
        # python-engineio's (see refuse_probe).
        link.send_text("6")
    if polling.state in (UpgradeState.PROBING, UpgradeState.PROBED):
        log.info("upgrade of %s failed: %s; it stays on polling", client.conn.sid, reason)
        polling.probe_failed()
        m.UPGRADES.labels("failed").inc()
    link.on_message = lambda _m: None
    link.on_end = lambda _r: None
    link.close(1008 if reason != "transport close" else 1000, "upgrade failed")


def _switch(client: Client, polling: Polling, link: WsTransport, owner: SessionOwner) -> None:
    packets = polling.take_all()
    client.answer_poll()  # a poll still waiting is released with a NOOP
    client.switch_to_websocket(link, owner)
    if packets:
        client.send_frames(packets)
    client.flush()
    m.UPGRADES.labels("completed").inc()
    m.TRANSPORT_CONNECTIONS.labels("polling").dec()
    m.TRANSPORT_CONNECTIONS.labels("websocket").inc()
